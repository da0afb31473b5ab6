"""The `unlearn` CLI surface: --help on every command, `methods`, `status`, bad params."""

from __future__ import annotations

import subprocess
import sys

import pytest

from flows.cli import build_parser, main

COMMANDS = ["run", "request", "serve", "promote", "rollback", "methods", "status"]


def test_every_command_has_help(capsys):
    for cmd in [None, *COMMANDS]:
        with pytest.raises(SystemExit) as exit_info:
            build_parser().parse_args(([cmd] if cmd else []) + ["--help"])
        assert exit_info.value.code == 0
        out = capsys.readouterr().out
        assert "usage: unlearn" in out
    assert set(COMMANDS) <= set(build_parser()._subparsers._group_actions[0].choices)


def test_help_is_fast_and_imports_nothing_heavy():
    code = ("import sys; from flows.cli import build_parser; build_parser(); "
            "print(sorted(m for m in ('torch', 'mlflow', 'prefect', 'dvc') if m in sys.modules))")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert out.strip() == "[]"


def test_methods_lists_data_touched(capsys):
    assert main(["methods"]) == 0
    lines = capsys.readouterr().out.strip().splitlines()
    by_name = {line.split()[0]: line for line in lines}
    assert "touches retain" in by_name["finetune"] and "touches forget" in by_name["neggrad"]


def test_bad_params_fail_with_the_key(tmp_path, capsys):
    (tmp_path / "params.yaml").write_text("train: {epochs: 0}\n")
    assert main(["status", "--root", str(tmp_path)]) == 2
    assert "train.epochs" in capsys.readouterr().err
    assert main(["run", "--root", str(tmp_path), "--set", "unlearn.methods=[nope]"]) == 2
    assert "unknown method 'nope'" in capsys.readouterr().err
