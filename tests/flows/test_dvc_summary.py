"""What DVC shows of a run: the experiment's tracking store, the small summary metrics, the image plots.

- a stage of `dvc exp run --temp` (a temporary copy under .dvc/tmp/exps/) resolves the default sqlite store
  to the workspace the experiment came from (DVC_ROOT), so its MLflow runs land in the project's mlflow.db
  (the end-to-end check is the slow `dvc exp run` test in test_pipeline.py);
- `outputs/summary.json` holds a few numbers per model, in a stable order, byte-identical when rewritten;
- dvc.yaml declares only that summary as metrics (kept in git), and images as plots (offline `dvc plots show`);
- `dvc metrics diff HEAD` reads it from git, with no DVC cache at all.
"""

from __future__ import annotations

import json
import subprocess
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest
import yaml
from flowtest_utils import REPO, dvc, git, make_project

from flows.plots import read_per_class, write_per_class
from flows.settings import tracking_uri, workspace_root
from flows.summary_metrics import COMPARISON_PLOT, SUMMARY_FILE, summarize, write_summary
from unlearning.params import parse_params
from unlearning.verdicts import GateVerdict

PNG_MAGIC = b"\x89PNG\r\n\x1a\n"


def _exp_copy(tmp_path: Path, sub: str = "") -> tuple[Path, Path]:
    """A workspace and the temporary copy `dvc exp run --temp` makes of it (both with `.dvc/`)."""
    main = tmp_path / "main"
    copy = main / ".dvc" / "tmp" / "exps" / "standalone" / "tmpabc123"
    for repo in (main, copy):
        (repo / ".dvc").mkdir(parents=True, exist_ok=True)
        (repo / sub).mkdir(parents=True, exist_ok=True)
    return main, copy


def test_exp_run_stage_uses_the_workspace_store(tmp_path, monkeypatch):
    main, copy = _exp_copy(tmp_path)
    params = parse_params({})  # tracking.uri: sqlite:///mlflow.db
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    monkeypatch.setenv("DVC_ROOT", str(main))  # what DVC sets for an experiment's stages
    monkeypatch.setenv("DVC_STAGE", "register_and_promote")
    assert workspace_root(copy) == main.resolve()
    assert tracking_uri(copy, params) == f"sqlite:///{main.resolve() / 'mlflow.db'}"
    # A relative MLFLOW_TRACKING_URI is resolved the same way; an absolute one is kept as given.
    monkeypatch.setenv("MLFLOW_TRACKING_URI", "sqlite:///stores/x.db")
    assert tracking_uri(copy, params) == f"sqlite:///{main.resolve() / 'stores' / 'x.db'}"
    monkeypatch.setenv("MLFLOW_TRACKING_URI", f"sqlite:///{tmp_path / 'elsewhere.db'}")
    assert tracking_uri(copy, params) == f"sqlite:///{tmp_path / 'elsewhere.db'}"


def test_project_in_a_subfolder_maps_to_the_same_subfolder(tmp_path, monkeypatch):
    main, copy = _exp_copy(tmp_path, sub="proj")
    monkeypatch.setenv("DVC_ROOT", str(main))
    monkeypatch.setenv("DVC_STAGE", "proj/dvc.yaml:train_base")
    assert workspace_root(copy / "proj") == (main / "proj").resolve()


def test_outside_a_dvc_stage_the_root_stays(tmp_path, monkeypatch):
    main, copy = _exp_copy(tmp_path)
    monkeypatch.setenv("DVC_ROOT", str(main))
    monkeypatch.delenv("DVC_STAGE", raising=False)  # e.g. a stale DVC_ROOT in the user's shell
    assert workspace_root(copy) == copy
    monkeypatch.setenv("DVC_STAGE", "train_base")
    monkeypatch.setenv("DVC_ROOT", str(tmp_path / "gone"))  # no such workspace: keep the copy's own folder
    assert workspace_root(copy) == copy
    monkeypatch.setenv("DVC_ROOT", str(copy))  # a plain `dvc repro`: DVC_ROOT is the repo itself
    assert workspace_root(copy) == copy.resolve()


BASE = {"forget/acc": 0.99, "retain/acc": 0.995, "test/acc": 0.96, "mia/entropy_lr": 0.8, "zrf": 0.5, "ci": {}}
ORACLE = {"forget/acc": 0.0, "retain/acc": 0.99, "test/acc": 0.86, "mia/entropy_lr": 0.1, "time/s": 3.0}
ROWS = {
    "finetune": {"forget/acc": 0.1234567, "retain/acc": 0.99, "test/acc": 0.9, "mia/entropy_lr": 0.2,
                 "oracle/avg_gap": 4.5, "speedup": 2.0, "oracle/js": 0.1, "version": "3"},
    "neggrad": {"forget/acc": 0.0, "retain/acc": 0.2, "test/acc": 0.2, "mia/entropy_lr": 0.05,
                "oracle/avg_gap": 33.0, "speedup": float("nan"), "version": "4"},
}


def _verdict(name: str, verdict: str) -> GateVerdict:
    return GateVerdict(name, 1.0, (0.5, 1.5), 2.0, 2.0, verdict, f"{verdict} ...")


def test_summary_keeps_a_few_numbers_per_model():
    summary = summarize("lr", BASE, ORACLE, ROWS, {"finetune": "pass", "neggrad": "fail"})
    assert list(summary) == ["original", "oracle", "finetune", "neggrad"]
    assert summary["original"] == {"forget/acc": 0.99, "retain/acc": 0.995, "test/acc": 0.96, "mia/entropy_lr": 0.8}
    assert summary["finetune"] == {"forget/acc": 0.1235, "retain/acc": 0.99, "test/acc": 0.9, "mia/entropy_lr": 0.2,
                                   "oracle/avg_gap": 4.5, "speedup": 2.0, "verdict": 1.0}
    assert "speedup" not in summary["neggrad"] and summary["neggrad"]["verdict"] == 0.0  # nan dropped
    assert "oracle" not in summarize("lr", BASE, None, {}, {})
    with pytest.raises(ValueError, match="collides"):
        summarize("lr", BASE, ORACLE, {"oracle": ROWS["finetune"]}, {"oracle": "pass"})


def _write_csv(path: Path, rows: list[tuple]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("class,original,oracle,unlearned\n" + "".join(",".join(map(str, r)) + "\n" for r in rows))


def test_write_summary_is_whole_ordered_and_byte_stable(tmp_path):
    _write_csv(tmp_path / "outputs/plots/finetune.csv", [(0, 1.0, 0.9, 0.95), (1, 0.9, 0.0, 0.1)])
    _write_csv(tmp_path / "outputs/plots/neggrad.csv", [(0, 1.0, 0.9, 0.2), (1, 0.9, 0.0, "")])
    params = parse_params({})
    gates = {"finetune": [_verdict("g", "pass")], "neggrad": [_verdict("g", "pass"), _verdict("h", "inconclusive")]}
    paths = write_summary(tmp_path, params, BASE, ORACLE, ROWS, gates)
    assert paths == [tmp_path / SUMMARY_FILE, tmp_path / COMPARISON_PLOT]
    summary = json.loads(paths[0].read_text())
    assert list(summary) == ["original", "oracle", "finetune", "neggrad"]
    assert summary["neggrad"]["verdict"] == 0.5
    first = [p.read_bytes() for p in paths]
    assert first[1].startswith(PNG_MAGIC) and len(first[1]) > 10_000
    write_summary(tmp_path, params, BASE, ORACLE, ROWS, gates)
    assert [p.read_bytes() for p in paths] == first  # an unchanged rerun leaves dvc.lock as it was
    assert sorted(p.name for p in (tmp_path / "outputs").iterdir()) == ["comparison.png", "plots", "summary.json"]


def test_per_class_plot_has_original_oracle_and_unlearned(tmp_path):
    split = SimpleNamespace(dataset=SimpleNamespace(task="classification", classes=["a", "b"], num_classes=2))
    cms = {"original": np.array([[9, 1], [0, 10]]), "oracle": np.array([[0, 10], [0, 10]]),
           "unlearned": np.array([[1, 9], [1, 9]])}
    csv_path, png = write_per_class(tmp_path / "m.csv", split, {"any": None}, cms)
    assert csv_path.read_text().splitlines() == ["class,original,oracle,unlearned", "a,0.9000,0.0000,0.1000",
                                                 "b,1.0000,1.0000,0.9000"]
    assert png == tmp_path / "m.png" and png.read_bytes().startswith(PNG_MAGIC)
    classes, acc = read_per_class(tmp_path, ["m"])
    assert classes == ["a", "b"] and acc == {"original": [0.9, 1.0], "oracle": [0.0, 1.0], "m": [0.1, 0.9]}
    # A skipped method: the CSV keeps its header, the PNG says why; both DVC outs exist.
    csv_path, png = write_per_class(tmp_path / "s.csv", split, {})
    assert csv_path.read_text() == "class,original,oracle,unlearned\n" and png.read_bytes().startswith(PNG_MAGIC)
    assert read_per_class(tmp_path, ["s"]) == ([], {})


def _declared(kind: str) -> list[tuple[str, dict]]:
    """(path, options) of every `metrics:` or `plots:` entry in dvc.yaml (stage and top-level)."""
    spec = yaml.safe_load((REPO / "dvc.yaml").read_text())
    stages = [s.get("do", s) for s in spec["stages"].values()]
    entries = [e for s in stages for e in s.get(kind, [])] + list(spec.get(kind, []))
    return [next(iter(e.items())) if isinstance(e, dict) else (e, {}) for e in entries]


def test_dvc_yaml_declares_the_summary_as_the_only_metrics_and_images_as_plots():
    assert _declared("metrics") == [(SUMMARY_FILE, {"cache": False})]
    plots = [path for path, _ in _declared("plots")]
    assert COMPARISON_PLOT in plots and "outputs/plots/${item}.png" in plots
    assert all(Path(p).suffix in (".png", ".svg") for p in plots), plots  # vega plots need a CDN
    # git keeps the summary (cache: false) but not the other outputs.
    ignored = subprocess.run(["git", "check-ignore", "--no-index", SUMMARY_FILE, "outputs/metrics/base.json"],
                             cwd=REPO, capture_output=True, text=True).stdout.split()
    assert ignored == ["outputs/metrics/base.json"]


def test_metrics_diff_reads_head_from_git(tmp_path):
    root = make_project(tmp_path / "p", {})
    summary = tmp_path / "p" / SUMMARY_FILE
    summary.parent.mkdir(parents=True, exist_ok=True)
    summary.write_text(json.dumps({"original": {"test/acc": 0.9}, "finetune": {"verdict": 1.0}}))
    git(root, "add", "-A")
    git(root, "commit", "-qm", "a run")
    # git keeps the summary and the calibration profiles' folder (its README), no other output
    assert git(root, "ls-files", "outputs").split() == ["outputs/calibration/README", SUMMARY_FILE]
    summary.write_text(json.dumps({"original": {"test/acc": 0.9}, "finetune": {"verdict": 0.5}}))
    out = dvc(root, "metrics", "diff", "HEAD", "--json")
    assert "failed to load" not in out.stderr, out.stderr
    diff = json.loads(out.stdout)[SUMMARY_FILE]
    assert diff == {"finetune.verdict": {"old": 1.0, "new": 0.5, "diff": -0.5}}
