"""DVC's YAML reads under `fast_yaml()` parse a given text of a file once (flows._dvc_yaml)."""

from __future__ import annotations

from flows import _dvc_yaml


def test_a_safe_load_parses_each_text_once_and_hands_out_copies(tmp_path, monkeypatch):
    import dvc.utils.strictyaml as strictyaml
    from dvc.schema import COMPILED_LOCKFILE_SCHEMA

    lock = tmp_path / "dvc.lock"
    lock.write_text("schema: '2.0'\nstages:\n  a:\n    cmd: echo a\n")
    parses = []
    real_parse = strictyaml.parse_yaml
    monkeypatch.setattr(strictyaml, "parse_yaml", lambda *a, **k: parses.append(a[1]) or real_parse(*a, **k))
    with _dvc_yaml.fast_yaml():
        first, _ = strictyaml.load(str(lock), COMPILED_LOCKFILE_SCHEMA)
        first["stages"]["a"]["cmd"] = "changed by a caller"
        second, text = strictyaml.load(str(lock), COMPILED_LOCKFILE_SCHEMA)
        assert second["stages"]["a"]["cmd"] == "echo a" and text == lock.read_text()
        assert len(parses) == 1
        lock.write_text("schema: '2.0'\nstages:\n  b:\n    cmd: echo b\n")  # changed by anyone: parsed again
        assert list(strictyaml.load(str(lock), COMPILED_LOCKFILE_SCHEMA)[0]["stages"]) == ["b"]
        strictyaml.load(str(lock), COMPILED_LOCKFILE_SCHEMA, round_trip=True)  # round trip: never cached
        assert len(parses) == 3
    assert strictyaml.load.__module__ == "dvc.utils.strictyaml"  # DVC's own function outside the block
