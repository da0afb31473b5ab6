"""`bench/gpu.sh`'s entry point, `--tiny` on the CPU: the GPU protocol's whole path on a small fake CIFAR archive,
on what a bare GPU machine has (every installed distribution outside torch, torchvision, scikit-learn and
pydantic, with their requirements, is made unimportable), writing JSON of the documented shape."""

from __future__ import annotations

import io
import json
import math
import os
import re
import subprocess
import sys
import tarfile
from importlib import metadata
from pathlib import Path

import numpy as np
import pytest

ROOT = Path(__file__).resolve().parents[2]
BARE = ("torch", "torchvision", "scikit-learn", "pydantic")
CLASSES = ["airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship", "truck"]


def _closure(names: tuple[str, ...]) -> set[str]:
    """The distributions `names` need, transitively (extras left out), normalised."""
    seen: set[str] = set()
    todo = [re.sub(r"[-_.]+", "-", n).lower() for n in names]
    while todo:
        name = todo.pop()
        if name in seen:
            continue
        seen.add(name)
        try:
            reqs = metadata.requires(name) or []
        except metadata.PackageNotFoundError:
            continue
        for req in reqs:
            if "extra ==" in req:
                continue
            todo.append(re.sub(r"[-_.]+", "-", re.split(r"[ ;<>=!~\[(]", req, maxsplit=1)[0]).lower())
    return seen


def absent_modules() -> list[str]:
    """Top-level modules of the installed distributions a bare GPU machine would not have."""
    keep = _closure(BARE)
    blocked = set()
    for module, dists in metadata.packages_distributions().items():
        if not any(re.sub(r"[-_.]+", "-", d).lower() in keep for d in dists) and module.isidentifier():
            blocked.add(module)
    return sorted(blocked - {"unlearning", "bench", "_distutils_hack", "pip", "setuptools", "pkg_resources"})


def fake_archive(path: Path, train: int, test: int) -> None:
    """`CIFAR10-JPEG/{train,test}/<class>/NNNN.jpg` of random 32x32 images, like the real archive's layout."""
    from PIL import Image

    rng = np.random.default_rng(0)
    with tarfile.open(path, "w:gz") as tar:
        for split, n in (("train", train), ("test", test)):
            for cls in CLASSES:
                for i in range(n):
                    buf = io.BytesIO()
                    Image.fromarray(rng.integers(0, 256, (32, 32, 3), dtype=np.uint8)).save(buf, "JPEG", quality=75)
                    info = tarfile.TarInfo(f"CIFAR10-JPEG/{split}/{cls}/{i:04d}.jpg")
                    info.size = buf.tell()
                    buf.seek(0)
                    tar.addfile(info, buf)


METHODS = "ssd,unsir,bad_teaching,neggrad"  # a part of the fast methods, for time; unsir is skipped on random
RUN = """
import importlib.machinery, runpy, sys
BLOCKED = set(sys.argv[1].split(","))
class Absent:
    # A spec whose loading fails like a missing module: `import x` raises ModuleNotFoundError (an ImportError,
    # so optional imports fall back), while a probe with importlib.util.find_spec still gets an answer.
    def find_spec(self, name, path=None, target=None):
        if name.split(".")[0] in BLOCKED:
            return importlib.machinery.ModuleSpec(name, self)
    def create_module(self, spec):
        raise ModuleNotFoundError(f"No module named {spec.name!r} (absent on a bare GPU machine)", name=spec.name)
    def exec_module(self, module):
        pass
sys.meta_path.insert(0, Absent())
sys.argv = ["gpu_protocol"] + sys.argv[2:]
runpy.run_module("bench.gpu_protocol", run_name="__main__")
"""


@pytest.fixture(scope="module")
def tiny_run(tmp_path_factory: pytest.TempPathFactory) -> tuple[subprocess.CompletedProcess, dict]:
    tmp = tmp_path_factory.mktemp("gpu")
    fake_archive(tmp / "cifar10-jpeg.tar.gz", train=20, test=10)
    blocked = absent_modules()
    assert {"mlflow", "prefect", "dvc", "yaml"} <= set(blocked)  # the check itself must block the stack
    out = tmp / "gpu.json"
    proc = subprocess.run(
        [sys.executable, "-c", RUN, ",".join(blocked), "--tiny", "--device", "cpu", "--data-root", str(tmp),
         "--out", str(out), "--tiny-train", "200", "--tiny-test", "100", "--methods", METHODS],
        cwd=ROOT, capture_output=True, text=True, timeout=300,
        env={**os.environ, "UNLEARNING_CACHE": str(tmp / "cache"), "PYTHONPATH": str(ROOT)})
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    return proc, json.loads(out.read_text())


def test_tiny_run_writes_the_documented_json(tiny_run) -> None:
    _, res = tiny_run
    assert res["complete"] and res["tiny"] and res["env"]["device"] == "cpu"
    assert (res["data"]["dataset"], res["data"]["train"], res["data"]["test"]) == ("cifar10_jpeg", 200, 100)
    assert math.isfinite(res["original"]["time_s"]) and 0.0 <= res["original"]["test/acc"] <= 1.0
    assert set(res["scenarios"]) == {"class 3", "random 10%"}
    for key, sc in res["scenarios"].items():
        assert sc["oracle"]["time_s"] > 0, key
        assert sc["oracle"]["oracle/avg_gap"] == 0.0, key  # the oracle against itself
        assert set(sc["methods"]) == set(res["methods"]), key
        for name, m in sc["methods"].items():
            if "skipped" in m:  # unsir serves class requests only
                assert (name, key) == ("unsir", "random 10%")
                continue
            for field in ("time_s", "speedup", "forget/acc", "retain/acc", "test/acc", "oracle/avg_gap"):
                assert math.isfinite(m[field]), (key, name, field)
            assert m["speedup"] == pytest.approx(sc["oracle"]["time_s"] / m["time_s"])


def test_tiny_run_prints_the_table(tiny_run) -> None:
    proc, res = tiny_run
    assert "speedup" in proc.stdout and "complete." in proc.stdout
    for name in res["methods"]:
        assert name in proc.stdout


def test_budget_stops_the_run_and_says_what_fits() -> None:
    sys.path.insert(0, str(ROOT))
    from bench.gpu_parts import METHOD_EPOCHS, Budget, BudgetExceeded

    budget = Budget(total_s=100.0, start=0.0, epochs=10, n_methods=7, evals=0, eval_s=0.0)
    budget.elapsed = lambda: 10.0  # type: ignore[method-assign]
    budget.epoch_s = 1.0
    budget.check("fits")  # 10 s + (3 trainings x 10 epochs + METHOD_EPOCHS) x 1 s = 70 s
    budget.epochs = 30
    fits = int((100 - 10 - METHOD_EPOCHS) // 3)
    with pytest.raises(BudgetExceeded, match=rf"--epochs {fits} would fit"):
        budget.check("too long")
