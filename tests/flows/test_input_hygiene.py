"""Bad input and faults: one line `error: ...` on stderr, exit 2 (input) or 1 (runtime), no traceback, and
nothing written (no MLflow store, run, data, output or request file) when the input can be checked up front.

`ROWS` is the table of bad inputs of issue #10: each row runs `flows.cli.main` in-process on a small project
(params.yaml only) whose MLflow store is a sqlite file in a folder of its own, and compares every file
under both folders before and after. The shell-injection and migration-race tests need real processes.
"""

from __future__ import annotations

import os
import sqlite3
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

import pytest
import yaml
from flowtest_utils import dvc, make_project

from flows import preflight
from flows.cli import main
from flows.settings import mask_credentials

PARAMS = "data: {name: digits}\nunlearn: {methods: [finetune]}\ntrain: {epochs: 1}\n"
BANNER = "unlearn run: loading"  # `unlearn run` says at once that it started (a progress line, not an error)


@pytest.fixture
def project(tmp_path, monkeypatch):
    """(project folder, store folder): params.yaml only; MLFLOW_TRACKING_URI points at store/mlflow.db."""
    root, store = tmp_path / "proj", tmp_path / "store"
    root.mkdir()
    store.mkdir()
    (root / "params.yaml").write_text(PARAMS)
    monkeypatch.setenv("MLFLOW_TRACKING_URI", f"sqlite:///{store / 'mlflow.db'}")
    monkeypatch.delenv("UNLEARN_DEBUG", raising=False)
    monkeypatch.chdir(root)  # --ids-file paths are relative to the current folder, as in a shell
    monkeypatch.setattr(preflight, "LOCK_WAIT_S", 0.2)
    return root, store


def _files(*folders: Path) -> dict[str, int]:
    return {str(p): p.stat().st_size for f in folders for p in f.rglob("*") if p.is_file()}


def _run(argv: list[str], capsys) -> tuple[int, str]:
    try:
        code = main(argv)
    except SystemExit as exit_:  # argparse's usage errors
        code = exit_.code
    return code, capsys.readouterr().err


# --- what a row sets up before the command runs -----------------------------------------------------------
def _write(name: str, text: str | bytes) -> Callable:
    def setup(root, store, mp):
        path = root / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(text if isinstance(text, bytes) else text.encode())
    return setup


def _env(key: str, value: str | None) -> Callable:
    def setup(root, store, mp):
        if value is None:
            mp.delenv(key, raising=False)
        else:
            mp.setenv(key, value)
    return setup


def _link(name: str, target: str) -> Callable:
    def setup(root, store, mp):
        (root / name).symlink_to(target)
    return setup


def _corrupt_store(root, store, mp):
    (store / "mlflow.db").write_bytes(bytes(range(256)) * 16)  # not an sqlite file


def _locked_store(root, store, mp):
    """Another connection holds an exclusive lock on a valid sqlite store (sqlite locks apply across
    connections of one process as across processes)."""
    db = sqlite3.connect(store / "mlflow.db", isolation_level=None)
    db.execute("CREATE TABLE t (x)")
    db.execute("BEGIN EXCLUSIVE")
    return db


def _store_in_missing_folder(root, store, mp):
    mp.setenv("MLFLOW_TRACKING_URI", f"sqlite:///{store / 'missing' / 'mlflow.db'}")


def _empty_root(root, store, mp):
    (root / "params.yaml").unlink()


def _no_cuda(root, store, mp):
    import torch

    if torch.cuda.is_available():
        pytest.skip("this machine has a CUDA GPU")


def _pending(root, ids):
    from flows.ledger import Ledger
    from flows.settings import load

    return Ledger(root, load(root)).add({"dataset": "digits", "kind": "ids", "ids": ids}, n_ids=len(ids), source="t")


def _bad_pending_request(root, store, mp):
    """A pending request in the ledger that no longer fits the data (written around `unlearn request`)."""
    _pending(root, [99999])


def _edited_ledger_entry(root, store, mp):
    from flows.ledger import Ledger
    from flows.settings import load

    entry = _pending(root, [1, 2])
    Ledger(root, load(root)).client.set_tag(entry["_runs"][0], "ledger.body",
                                            '{"dataset": "digits", "kind": "ids", "ids": [1]}')


R = "--root"
CUDA = "no CUDA GPU; use --set"
# id, argv (after the command), setup, exit code, a fragment of the message
ROWS = [
    ("classes-42", ["run", "--set", "request.classes=[42]"], None, 2, "request: unknown class 42: must be in [0, 9]"),
    ("class-name", ["run", "--set", "request.classes=[dog]"], None, 2, "request: unknown class 'dog'"),
    ("every-class", ["run", "--set", f"request.classes={list(range(10))}"], None, 2, "forgets every training sample"),
    ("ids-range", ["run", "--set", "request.ids=[1,99999]"], None, 2, "sample ids out of range"),
    ("ids-dup", ["run", "--set", "request.ids=[4,4]"], None, 2, "duplicated sample ids"),
    ("range-on-digits", ["run", "--set", "request.target_range=[0,1]"], None, 2, "need a regression dataset"),
    ("subclass-on-digits", ["run", "--set", "request.subclass=rocket"], None, 2, "subclass requests need"),
    ("params-ids-file-out", ["run", "--set", "request.ids_file=/etc/passwd"], None, 2,
     "request.ids_file /etc/passwd resolves outside the project folder"),
    ("unknown-gate", ["run", "--set", "promote.gates.forget_acc=1"], None, 2, "promote.gates.forget_acc: unknown key"),
    ("bad-yaml-params", ["run"], _write("params.yaml", "train: {epochs: [1\n"), 2, "params.yaml: invalid YAML at line"),
    ("params-not-mapping", ["run"], _write("params.yaml", "- a\n- b\n"), 2, "expected a mapping of sections"),
    ("bad-yaml-set", ["run", "--set", "train.lr=[1,"], None, 2, "--set train.lr: invalid YAML at line 1"),
    ("set-without-eq", ["run", "--set", "train.lr"], None, 2, "override must look like section.key=value"),
    ("set-bad-key", ["run", "--set", "train..lr=1"], None, 2, "override key must look like section.key"),
    ("unknown-key", ["run", "--set", "train.foo=1"], None, 2, "train.foo: unknown key"),
    ("unknown-section", ["run", "--set", "foo.bar=1"], None, 2, "foo: unknown key"),
    ("bad-value", ["run", "--set", "train.epochs=0"], None, 2, "train.epochs: Input should be greater than or equal"),
    ("unknown-method", ["run", "--set", "unlearn.methods=[nope]"], None, 2, "unknown method 'nope'"),
    ("hostile-method", ["run", "--set", "unlearn.methods=['x;touch owned']"], None, 2, "unknown method 'x;touch owned'"),
    ("methods-empty", ["run", "--set", "unlearn.methods=[]"], None, 2, "unlearn.methods is empty: list at least one"),
    ("unknown-dataset", ["run", "--set", "data.name=imagenet"], None, 2, "data.name: must be one of"),
    ("unknown-model", ["run", "--set", "model.name=vit"], None, 2, "model.name: must be one of"),
    ("device-name", ["run", "--set", "train.device=gpu"], None, 2, "train.device: must be one of auto, cpu, cuda"),
    ("cuda-no-gpu", ["run", "--set", "train.device=cuda"], _no_cuda, 2, f"train.device is 'cuda' but this machine has {CUDA}"),
    ("eval-cuda-no-gpu", ["run", "--set", "evaluate.device=cuda:1"], _no_cuda, 2, "evaluate.device is 'cuda:1'"),
    ("uri-scheme", ["run", "--set", "tracking.uri=foo://x"], _env("MLFLOW_TRACKING_URI", None), 2,
     "tracking.uri 'foo://x': unsupported scheme 'foo'"),
    ("env-uri-scheme", ["run"], _env("MLFLOW_TRACKING_URI", "foo://user:secret@host"), 2,
     "MLFLOW_TRACKING_URI 'foo://user:***@host': unsupported scheme"),
    ("sqlite-folder", ["run"], _store_in_missing_folder, 2, "the folder of the sqlite store does not exist: "),
    ("corrupt-store", ["run"], _corrupt_store, 1, "is not a readable sqlite database (file is not a database)"),
    ("locked-store", ["run"], _locked_store, 1, "is locked by another process (database is locked)"),
    ("status-corrupt-store", ["status"], _corrupt_store, 1, "is not a readable sqlite database"),
    ("promote-bad-uri", ["promote", "3"], _env("MLFLOW_TRACKING_URI", "foo://u:secret@h"), 2,
     "MLFLOW_TRACKING_URI 'foo://u:***@h': unsupported scheme"),
    ("rollback-store-folder", ["rollback"], _store_in_missing_folder, 2, "the folder of the sqlite store does not"),
    ("serve-credentials", ["serve", "--cron", "0 2 * * *", "--set", "tracking.uri=http://u:secret@127.0.0.1:9"],
     None, 2, "--set tracking.uri=http://u:***@127.0.0.1:9: holds a password"),
    ("root-missing", ["status", R, "nope"], None, 2, "project folder not found: "),
    ("root-not-project", ["run"], _empty_root, 2, "is not a project folder: it has neither params.yaml nor dvc.yaml"),
    ("params-missing", ["status", "--params", "other.yaml"], None, 2, "params file not found"),
    ("bad-pending-request", ["run"], _bad_pending_request, 2, "sample ids out of range [0, 1436]: [99999]"),
    ("edited-ledger-entry", ["run"], _edited_ledger_entry, 1, "does not match its content hash"),
    ("argparse-unknown-flag", ["run", "--bogus"], None, 2, "unrecognized arguments: --bogus"),
    ("argparse-missing", ["request"], None, 2, "one of the arguments --ids --ids-file --classes --cancel is required"),
    ("ids-file-abs", ["request", "--ids-file", "/etc/passwd"], None, 2, "--ids-file /etc/passwd resolves outside"),
    ("ids-file-dotdot", ["request", "--ids-file", "../../../../../../../etc/passwd"], None, 2, "resolves outside the"),
    ("ids-file-symlink", ["request", "--ids-file", "ids.txt"], _link("ids.txt", "/etc/passwd"), 2,
     "--ids-file ids.txt resolves outside the project folder"),
    ("ids-file-token", ["request", "--ids-file", "ids.txt"], _write("ids.txt", "1\n2\nsecret-token\n"), 2,
     "ids.txt:3: not an integer sample id"),
    ("ids-file-missing", ["request", "--ids-file", "none.txt"], None, 2, "ids_file not found: none.txt"),
    ("ids-file-folder", ["request", "--ids-file", "sub"], _write("sub/a", "1"), 2, "ids_file is not a regular file"),
    ("ids-file-binary", ["request", "--ids-file", "b.bin"], _write("b.bin", b"\xff\xfe\x00secret"), 2,
     "ids_file is not a UTF-8 text file"),
    ("ids-token", ["request", "--ids", "1,x"], None, 2, "--ids: not an integer sample id: 'x'"),
    ("ids-range-request", ["request", "--ids", "99999"], None, 2, "out of range"),
]


@pytest.mark.parametrize("argv, setup, code, fragment", [r[1:] for r in ROWS], ids=[r[0] for r in ROWS])
def test_bad_input_is_one_line_with_its_exit_code_and_writes_nothing(project, monkeypatch, capsys, argv, setup,
                                                                     code, fragment):
    root, store = project
    keep = setup(root, store, monkeypatch) if setup else None
    before = _files(root, store)
    got, err = _run([*argv[:1], *([] if R in argv else [R, str(root)]), *argv[1:]], capsys)
    if keep is not None:
        keep.close()
    lines = [line for line in err.splitlines() if not line.startswith(BANNER)]
    assert (got, len(lines)) == (code, 1), err
    assert lines[0].startswith("error: ") and fragment in lines[0], lines[0]
    assert "Traceback" not in err and "secret" not in err and "root:" not in err
    assert _files(root, store) == before  # no store, run, data, output or request file


def test_unexpected_errors_are_one_line_and_debug_shows_the_traceback(project, monkeypatch, capsys):
    import flows.cli

    def boom(args):
        raise RuntimeError("boom\nsecond line")

    root, _ = project
    monkeypatch.setattr(flows.cli, "cmd_status", boom)
    assert _run(["status", R, str(root)], capsys) == (
        1, "error: RuntimeError: boom (run with --debug for the traceback)\n")
    for argv in (["--debug", "status", R, str(root)], ["status", R, str(root), "--debug"]):
        code, err = _run(argv, capsys)
        assert code == 1 and "Traceback" in err and err.splitlines()[-1].startswith("error: RuntimeError: boom")


def test_credentials_in_uris_are_masked():
    assert mask_credentials("https://user:secret@host:5000/x") == "https://user:***@host:5000/x"
    assert mask_credentials("postgresql+psycopg2://u:p%40ss@db/mlflow") == "postgresql+psycopg2://u:***@db/mlflow"
    assert mask_credentials("got unsupported URI 'https://a:b@c' for") == "got unsupported URI 'https://a:***@c' for"
    for plain in ("sqlite:////tmp/mlflow.db", "http://token@host/", "http://127.0.0.1:5000"):
        assert mask_credentials(plain) == plain


def test_a_good_ids_file_inside_the_project_is_accepted(project, capsys):
    root, _ = project
    (root / "lists").mkdir()
    (root / "lists" / "ids.txt").write_text("# request 7\n4, 5\n6\n")
    (root / "link.txt").symlink_to(root / "lists" / "ids.txt")  # a link that stays inside is fine
    assert main(["request", R, str(root), "--ids-file", "link.txt"]) == 0
    assert "recorded deletion request" in capsys.readouterr().out


# --- defect 6: method names never reach a shell ------------------------------------------------------------
@pytest.mark.parametrize("address, message", [
    ("unlearn@x;touch owned", "unknown method 'x;touch owned'"),
    ("unlearn@$(touch owned)", "unknown method"),
    ("unlearn@Finetune", "unknown method 'Finetune'"),
    ("unlearn@salun", "method 'salun' is not in unlearn.methods"),
    ("evaluate@finetune", "needs a method"),
    ("", "needs a method"),
])
def test_stage_method_comes_from_dvc_stage_and_is_validated(monkeypatch, address, message):
    from flows.stages import stage_method
    from unlearning.params import parse_params

    params = parse_params({"unlearn": {"methods": ["finetune"]}})
    monkeypatch.setenv("DVC_STAGE", address)
    with pytest.raises(ValueError, match=message.replace("(", r"\(").replace("$", r"\$")):
        stage_method("unlearn", None, params)
    monkeypatch.setenv("DVC_STAGE", "unlearn@finetune")
    assert stage_method("unlearn", None, params) == "finetune"
    monkeypatch.setenv("DVC_STAGE", "sub/dvc.yaml:evaluate@finetune")
    assert stage_method("evaluate", None, params) == "finetune"


@pytest.mark.parametrize("address, message", [
    ("unlearn_seed@finetune", "needs a seed"),
    ("unlearn_seed@finetune-2", r"seed 2 is not in evaluate.more_seeds \[1\]"),
    ("unlearn_seed@finetune-1;touch owned", "unknown method"),
    ("unlearn_seed@salun-1", "method 'salun' is not in unlearn.methods"),
])
def test_a_seed_stage_takes_method_and_seed_from_dvc_stage(monkeypatch, address, message):
    from flows.stages import stage_target
    from unlearning.params import parse_params

    params = parse_params({"unlearn": {"methods": ["finetune"]}, "evaluate": {"seed": 0, "more_seeds": [1]}})
    monkeypatch.setenv("DVC_STAGE", address)
    with pytest.raises(ValueError, match=message):
        stage_target("unlearn_seed", None, None, params)
    monkeypatch.setenv("DVC_STAGE", "unlearn_seed@finetune-1")
    assert stage_target("unlearn_seed", None, None, params) == ("finetune", 1)
    monkeypatch.setenv("DVC_STAGE", "unlearn@finetune")
    assert stage_target("unlearn", None, None, params) == ("finetune", None)


def test_a_hostile_method_name_in_params_never_reaches_a_shell(tmp_path):
    """`dvc repro` of `unlearn@x;touch owned`: the command carries no method, the stage refuses the name."""
    hostile = "x;touch owned"
    root = make_project(tmp_path / "project")
    params = yaml.safe_load((root / "params.yaml").read_text())
    params["unlearn"]["methods"] = [hostile]
    params["unlearn"][hostile] = {}
    (root / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))
    for dep in ("data/x", "outputs/version_data/split.json", "outputs/base/model.json"):  # DVC checks deps exist
        (root / dep).parent.mkdir(parents=True, exist_ok=True)
        (root / dep).write_text("{}")
    out = dvc(root, "repro", "-s", "--force", f"unlearn@{hostile}", check=False)
    assert out.returncode != 0
    assert not (root / "owned").exists(), out.stdout + out.stderr
    assert f"error: invalid params: unlearn: unknown method section '{hostile}'" in out.stdout + out.stderr
    assert "Traceback" not in out.stdout + out.stderr


# --- defect 4: two processes create one new sqlite store at once -------------------------------------------
@pytest.mark.slow  # about 45 s on 2 busy cores: three processes import MLflow and one migrates the store
def test_processes_creating_one_new_store_at_once_all_succeed(tmp_path):
    db = tmp_path / "shared" / "mlflow.db"
    db.parent.mkdir()
    start = time.time() + 8  # after every process has imported mlflow
    code = ("import sys, time; from flows.preflight import ensure_store; t = float(sys.argv[1])\n"
            "while time.time() < t: time.sleep(0.01)\n"
            f"ensure_store('sqlite:///{db}'); print('ok')")
    env = {**os.environ, "PYTHONPATH": str(Path(__file__).resolve().parents[2]),
           "UNLEARN_MLFLOW_TEMPLATE": str(tmp_path / "none.db")}  # no template: MLflow migrates, as it races
    procs = [subprocess.Popen([sys.executable, "-c", code, str(start)], stdout=subprocess.PIPE,
                              stderr=subprocess.PIPE, text=True, env=env) for _ in range(3)]
    results = [p.communicate(timeout=180) for p in procs]
    assert [p.returncode for p in procs] == [0, 0, 0], [err[-600:] for _, err in results]
    assert all(out.strip() == "ok" for out, _ in results)


def test_unlearning_seeds_in_a_dvc_project_are_seed_and_more_seeds(tmp_path):
    """dvc.yaml makes its per-seed stages from `more_seeds`: a params.yaml giving `seeds` is refused in one line;
    `--set evaluate.seeds=[...]` replaces the two keys."""
    from flows.settings import load
    from unlearning.params import ConfigError

    (tmp_path / "dvc.yaml").write_text("stages: {}\n")
    unlearn = "unlearn: {methods: [finetune], finetune: {}}\n"
    (tmp_path / "params.yaml").write_text(unlearn + "evaluate: {seeds: [0, 1]}\n")
    with pytest.raises(ConfigError, match="more_seeds"):
        load(tmp_path)
    (tmp_path / "params.yaml").write_text(unlearn + "evaluate: {seed: 3, more_seeds: [1]}\n")
    assert load(tmp_path).evaluate.seeds == [3, 1]
    assert load(tmp_path, overrides=["evaluate.seeds=[0,2]"], methods=False).evaluate.seeds == [0, 2]
    assert load(tmp_path, overrides=["evaluate.more_seeds=[]"], methods=False).evaluate.seeds == [3]
