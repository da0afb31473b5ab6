"""Ad-hoc stores, Dask worker plugins and the checks shared by the `scale` tests: the pipeline on a
`LocalCluster` (tests/flows/test_dask_scale.py) and on the local stack (tests/scale/test_stack_pipeline.py).

`servers` starts `mlflow server` on a sqlite file (artifacts served through it) and makes a local-path DVC
remote; `FolderAudit` is a Dask worker plugin that records, with a Python audit hook, every file the worker
opens or lists under a forbidden folder (the driver's project) outside its own folders; `WorkerFolders` also
moves each worker into an empty folder of its own first. The tests read the records back and assert there
are none. The `check_*` functions compare a distributed run with a threads run of the same project.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
import time
import urllib.request
from contextlib import contextmanager
from pathlib import Path

from distributed.diagnostics.plugin import WorkerPlugin
from flowtest_utils import TINY

from flows.stack_procs import free_port

DRIVER_STAGES = {"version_data", "register_and_promote"}
MODEL_STAGES = {"train_base", "retrain_oracle", "unlearn", "evaluate"}  # by run name: `unlearn[m/seed-1]` too
TIMED = ("time/", "speedup")  # wall times differ between runs; every other metric is deterministic
AUDITED = ("open", "os.listdir", "os.scandir", "os.chdir", "os.walk", "shutil.copyfile", "subprocess.Popen")


@contextmanager
def servers(folder: Path):
    """`mlflow server` (sqlite backend, artifacts proxied: `mlflow-artifacts:`) and a local DVC remote.

    Yields `{"tracking_uri", "dvc_remote"}`; the server is stopped on exit.
    """
    folder.mkdir(parents=True, exist_ok=True)
    port = free_port()
    exe = Path(sys.executable).with_name("mlflow")
    log = open(folder / "mlflow-server.log", "w")  # noqa: SIM115 - closed below
    proc = subprocess.Popen([str(exe), "server", "--backend-store-uri", f"sqlite:///{folder / 'mlflow.db'}",
                             "--artifacts-destination", str(folder / "artifacts"), "--host", "127.0.0.1",
                             "--port", str(port), "--workers", "1"], cwd=folder, stdout=log, stderr=log,
                            stdin=subprocess.DEVNULL)
    url = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + 120
        while True:
            try:
                with urllib.request.urlopen(f"{url}/health", timeout=2) as r:
                    if r.status == 200:
                        break
            except OSError:
                pass
            if proc.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError(f"mlflow server did not start: {(folder / 'mlflow-server.log').read_text()[-2000:]}")
            time.sleep(0.5)
        (folder / "remote").mkdir(exist_ok=True)
        yield {"tracking_uri": url, "dvc_remote": str(folder / "remote")}
    finally:
        proc.terminate()
        try:
            proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            proc.kill()
        log.close()


class FolderAudit(WorkerPlugin):
    """Records every file a worker opens or lists under `forbidden` (the driver's project) outside the worker's
    own folders: its working folder, its Dask scratch space (the parent of its local directory; Dask puts it
    on sys.path, which torch scans for CUDA libraries) and `allowed` (the local stack keeps all of these in
    the project, in `.stack/`). One line per hit in `<log_dir>/<worker name>.audit`: a file, not memory, so
    what a worker did is still there after a test has killed it."""

    name = "unlearn-folder-audit"

    def __init__(self, forbidden: str, log_dir: str, allowed: tuple[str, ...] = ()) -> None:
        self.forbidden, self.log_dir, self.allowed = forbidden, log_dir, allowed

    def setup(self, worker) -> None:
        own = [str(Path(p).resolve()) for p in (os.getcwd(), Path(worker.local_directory).parent, *self.allowed)]
        # A path inside an own folder is dropped before the check (`.stack/worker-1` does not cover `worker-10`).
        inside = re.compile("|".join(re.escape(p) + r"(?=/|\s|$)" for p in own))
        log = open(Path(self.log_dir) / f"{worker.name}.audit", "a", buffering=1)  # noqa: SIM115 - open while the worker lives
        forbidden = self.forbidden

        def hook(event: str, args: tuple) -> None:
            if event not in AUDITED:
                return
            for arg in args:
                if isinstance(arg, (str, bytes, os.PathLike)):
                    text = os.fsdecode(arg)
                elif isinstance(arg, (list, tuple)):
                    text = " ".join(str(a) for a in arg)
                else:
                    continue
                if forbidden in inside.sub("", text):
                    try:
                        log.write(f"{event} {text[:200]}\n")
                    except ValueError:  # closed at interpreter exit: nothing runs tasks then
                        pass

        sys.addaudithook(hook)


class WorkerFolders(FolderAudit):
    """Each worker in `<base>/<worker name>` (empty at start; its UNLEARN_WORKER_DIR), audited as FolderAudit
    with its records beside that folder, in `<base>/<worker name>.audit`."""

    name = "unlearn-worker-folders"

    def __init__(self, base: str, forbidden: str) -> None:
        super().__init__(forbidden, base)
        self.base = base

    def setup(self, worker) -> None:
        folder = Path(self.base) / str(worker.name)
        folder.mkdir(parents=True, exist_ok=True)
        os.chdir(folder)
        os.environ["UNLEARN_WORKER_DIR"] = str(folder)
        super().setup(worker)


def seen(log_dir: Path) -> dict[str, list[str]]:
    """Worker name -> what its audit recorded (one entry per worker the audit was set up on)."""
    return {p.stem: p.read_text().splitlines() for p in sorted(Path(log_dir).glob("*.audit"))}


def files_under(folder: Path) -> list[str]:
    """The files now under `folder` (relative paths), to show what a worker kept there."""
    folder = Path(folder)
    return sorted(str(p.relative_to(folder)) for p in folder.rglob("*") if p.is_file()) if folder.is_dir() else []


def worker_folder_listing() -> list[str]:
    """The files now in this worker's folder (relative), to show what it kept (its DVC cache)."""
    return files_under(Path(os.environ.get("UNLEARN_WORKER_DIR", ".")))


def tiny(methods: list[str], **orchestration: object) -> dict:
    """The tiny budget with `methods`, two unlearning seeds (0 and 1) and `orchestration` settings."""
    return {**TINY, ("unlearn", "methods"): methods, ("evaluate", "more_seeds"): [1],
            **{("orchestration", k): v for k, v in orchestration.items()}}


def children(uri: str, parent: str) -> list:
    """The stage runs of pipeline run `parent` (the MLflow runs nested right under it)."""
    import mlflow

    c = mlflow.MlflowClient(uri)
    exp = c.get_experiment_by_name("unlearning")
    return c.search_runs([exp.experiment_id], filter_string=f"tags.`mlflow.parentRunId` = '{parent}'")


def check_stage_workers(runs: list, workers: set[str]) -> None:
    """The `worker` tags of a pipeline's stage runs: the driver's stages ran on the driver, every model stage
    on a worker, and each of `workers` finished at least one of them (a run left unfinished does not count)."""
    where = [(r.info.run_name.split(" ")[0].split("[")[0], r.data.tags.get("worker"), r.info.status) for r in runs]
    assert {w for n, w, _ in where if n in DRIVER_STAGES} == {"driver"}, where
    assert {n for n, _, _ in where} >= MODEL_STAGES, where
    assert {w for n, w, _ in where if n in MODEL_STAGES} <= workers, where  # none on the driver
    assert {w for n, w, s in where if n in MODEL_STAGES and s == "FINISHED"} == workers, where
    for r in runs:
        assert r.data.tags["worker.host"] and r.data.tags["worker.device"] == "cpu"
        assert r.data.tags["git_commit"] != "unknown"  # the driver's commit, not the workspace's


def check_same_metrics(got: Path, want: Path, names: list[str]) -> None:
    """Every deterministic metric in `outputs/metrics/<name>.json` of project `got` equals project `want`'s
    to 3 decimals (or within 5e-4, where rounding falls either side); wall times are left out."""
    for name in names:
        mine = json.loads((got / "outputs/metrics" / f"{name}.json").read_text())
        theirs = json.loads((want / "outputs/metrics" / f"{name}.json").read_text())
        keys = {k for k, v in theirs.items() if isinstance(v, float) and not k.startswith(TIMED)}
        assert keys and keys <= set(mine), name
        diff = {k: (mine[k], theirs[k]) for k in keys if round(mine[k], 3) != round(theirs[k], 3)
                and abs(mine[k] - theirs[k]) > 5e-4}
        assert not diff, (name, diff)


def check_registry(uri: str, decision: dict, other: dict, other_uri: str, methods: list[str]) -> None:
    """The registry at `uri` after a run that decided `decision` (outputs/promote.json), against the threads
    run's `other` in its store at `other_uri`: the same gate decisions; `candidate-<method>` on an unlearned
    version of each method, `staging-<method>` on that version for each passing method; `production` on the
    decided version, of the method the threads run put there."""
    import mlflow

    assert decision["passing"] == other["passing"] and decision["refused"] == other["refused"]
    c = mlflow.MlflowClient(uri)
    model = c.get_registered_model(decision["registered_model"])
    for m in methods:
        mv = c.get_model_version_by_alias(model.name, f"candidate-{m}")
        assert mv.tags["method"] == m and mv.tags["role"] == "unlearned"
        if m in decision["passing"]:
            assert c.get_model_version_by_alias(model.name, f"staging-{m}").version == mv.version, m
    assert bool(decision["production"]) == bool(other["production"])
    if decision["production"]:
        prod = c.get_model_version_by_alias(model.name, "production")
        threads = mlflow.MlflowClient(other_uri)
        assert str(prod.version) == decision["production"]
        theirs = threads.get_model_version(other["registered_model"], other["production"])
        assert prod.tags["method"] == theirs.tags["method"]
