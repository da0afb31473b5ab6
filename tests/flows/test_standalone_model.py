"""A registered model stands on its own: after a pipeline run that promotes, `models:/digits-mlp@production`
loads in a separate venv that holds only the model's requirements (mlflow, torch, numpy and what they need,
at the versions of uv.lock; not this project) and scores raw `load_digits().data` rows.

The venv is built offline from the uv cache (`uv pip install --offline --no-deps` of the requirements'
closure in uv.lock; hardlinked, so a few seconds and no extra disk). Without uv, or with the wheels not in
its cache, the test skips and says why.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import yaml
from flowtest_utils import REPO, TINY, make_project, new_store

pytestmark = pytest.mark.slow

# Runs in the fresh venv, from a folder outside the repository: which packages it can import before and
# after loading, the load time, and the predictions on the raw rows given.
CHILD = r"""
import importlib.util, json, sys, time
import numpy as np
def have(name):
    return importlib.util.find_spec(name) is not None
out = {"before": {m: have(m) for m in ("unlearning", "flows", "unlearning_models")}}
t = time.perf_counter()
import mlflow
model = mlflow.pyfunc.load_model(sys.argv[1])
out["load_s"] = time.perf_counter() - t
np.save(sys.argv[3], model.predict(np.load(sys.argv[2])))
shipped = sys.modules.get("unlearning_models")
out["after"] = {"unlearning": have("unlearning"), "unlearning_models": shipped and shipped.__file__}
print(json.dumps(out))
"""


def _closure(lock: Path, pins: dict[str, str]) -> list[str]:
    """`name==version` of `pins` and everything they need on this platform, as uv.lock resolved it."""
    import tomllib

    from packaging.markers import Marker
    from packaging.utils import canonicalize_name

    def applies(marker: str | None) -> bool:
        return marker is None or Marker(marker).evaluate({"extra": ""})

    packages: dict[str, list[dict]] = {}
    for p in tomllib.loads(lock.read_text())["package"]:
        packages.setdefault(p["name"], []).append(p)

    def pick(name: str, version: str | None) -> dict:
        found = [p for p in packages[name] if version in (None, p["version"])
                 and (not p.get("resolution-markers") or any(applies(m) for m in p["resolution-markers"]))]
        return found[0]

    chosen: dict[str, str] = {}
    done: set[tuple[str, str]] = set()
    todo = [(canonicalize_name(n), v, "") for n, v in pins.items()]
    while todo:
        name, version, extra = todo.pop()
        if (name, extra) in done:
            continue
        done.add((name, extra))
        p = pick(name, version)
        chosen[p["name"]] = p["version"]
        deps = p.get("optional-dependencies", {}).get(extra, []) if extra else p.get("dependencies", [])
        for d in deps:
            if applies(d.get("marker")):
                todo += [(d["name"], d.get("version"), e) for e in ("", *d.get("extra", []))]
    return [f"{n}=={v}" for n, v in sorted(chosen.items())]


def _fresh_venv(folder: Path, requirements: list[str]) -> Path:
    """A venv with only `requirements` (pinned) and their locked dependencies; returns its python."""
    uv = shutil.which("uv") or str(REPO / ".uvtool" / "bin" / "uv")
    if not Path(uv).exists():
        pytest.skip("uv not found (make .venv/.installed bootstraps it in .uvtool/)")
    pins = dict(line.split("==", 1) for line in requirements)
    (folder / "requirements.txt").write_text("\n".join(_closure(REPO / "uv.lock", pins)) + "\n")
    env = {**os.environ, "UV_LINK_MODE": "hardlink", "UV_PYTHON_DOWNLOADS": "never"}
    run = {"cwd": folder, "env": env, "capture_output": True, "text": True, "timeout": 300}
    base = getattr(sys, "_base_executable", sys.executable)
    subprocess.run([uv, "venv", "--python", base, str(folder / "venv")], check=True, **run)
    python = folder / "venv" / "bin" / "python"
    done = subprocess.run([uv, "pip", "install", "--python", str(python), "--offline", "--no-deps",
                           "-r", "requirements.txt"], **run)
    if done.returncode != 0:
        pytest.skip(f"the locked wheels are not all in the uv cache: {done.stderr.strip().splitlines()[-1]}")
    return python


@pytest.fixture(scope="module")
def promoted(tmp_path_factory, mlflow_template, prefect_harness):
    """A project after a run, its model in `production`: one method on a 30-epoch base (the default recipe,
    so the model is a good one), no oracle; promoted by hand (`--force`) where the gates were not met."""
    from flows import _registry as R
    from flows.pipeline import unlearning_pipeline
    from flows.production import promote_version
    from flows.settings import load

    tiny = {**TINY, ("train", "epochs"): 30, ("unlearn", "methods"): ["finetune"], ("evaluate", "oracle"): False}
    root = make_project(tmp_path_factory.mktemp("project"), tiny)
    old = os.environ.get("MLFLOW_TRACKING_URI")
    os.environ["MLFLOW_TRACKING_URI"] = uri = new_store(mlflow_template, root)
    try:
        if not unlearning_pipeline(root=str(root))["promotion"].production:
            version = R.alias_version("digits-mlp", "candidate-finetune")
            promote_version(root, load(root), version, force=True, reason="slow test: the served model")
        assert R.alias_version("digits-mlp", "production")
    finally:
        if old is None:
            os.environ.pop("MLFLOW_TRACKING_URI", None)
        else:
            os.environ["MLFLOW_TRACKING_URI"] = old
    return root, uri


def test_production_model_loads_and_scores_raw_rows_in_a_venv_without_the_project(promoted, tmp_path):
    import mlflow
    from sklearn.datasets import load_digits

    root, uri = promoted
    name = "models:/digits-mlp@production"
    local = Path(mlflow.artifacts.download_artifacts(name, dst_path=str(tmp_path / "model"), tracking_uri=uri))
    requirements = (local / "requirements.txt").read_text().split()
    t = time.perf_counter()
    python = _fresh_venv(tmp_path, requirements)
    venv_s = time.perf_counter() - t

    digits = load_digits()
    np.save(tmp_path / "raw.npy", digits.data)  # the dataset's own form: pixel values 0..16, float64
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "VIRTUAL_ENV")}
    env["MLFLOW_TRACKING_URI"] = uri
    outside = tmp_path / "elsewhere"
    outside.mkdir()
    done = subprocess.run([str(python), "-c", CHILD, name, str(tmp_path / "raw.npy"), str(tmp_path / "pred.npy")],
                          cwd=outside, env=env, capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr[-3000:]
    out = json.loads(done.stdout.strip().splitlines()[-1])
    assert out["before"] == {"unlearning": False, "flows": False, "unlearning_models": False}
    assert not out["after"]["unlearning"] and Path(out["after"]["unlearning_models"]).parts[-3] == "code"

    logits = np.load(tmp_path / "pred.npy")
    forgotten = yaml.safe_load((root / "params.yaml").read_text())["request"]["classes"]
    kept = ~np.isin(digits.target, forgotten)
    acc = float((logits.argmax(1)[kept] == digits.target[kept]).mean())
    print(f"\nfresh venv ({len(requirements)} requirements: {', '.join(requirements)}) built in {venv_s:.1f} s; "
          f"load {out['load_s']:.1f} s; accuracy on raw load_digits rows of the kept classes {acc:.4f}")
    assert acc >= 0.95
    # The same numbers as the model loaded in the project's own environment.
    np.testing.assert_allclose(logits, mlflow.pyfunc.load_model(str(local)).predict(digits.data), rtol=0, atol=1e-5)
