"""Pipeline overhead (issue #15, item 3): `make run` on a fresh clone, cold then warm, and where the time goes.

Clones this repository's HEAD into a temporary folder, builds its venv (`make .venv/.installed`, timed on its
own), then runs the pipeline there: cold, then warm with nothing changed exactly as `make run` does (the
`unlearn run` command in its own process: the early exit of flows/fast_path.py), then warm with `--force` (the
whole flow, every stage kept unchanged). The cold and forced runs are each a fresh process that does what
`unlearn run` does (`flows.cli.main(["run", ...])`) with these parts timed:

    imports       `import flows.cli` and of the flow module (flows.pipeline), where the run imports them
    prefect       the wait for the temporary Prefect server (it boots during the run's checks)
    training      unlearning.steps.train_original / train_oracle
    unlearning    unlearning.steps.run_method
    scoring       unlearning.steps.evaluate_model
    mlflow        MLflow client calls (log_*, set_tag(s), start_run, create_run, search_runs, ...)
    dvc           flows._dvc commit / is_clean / push_if_remote
    evaluate      each evaluate[m] stage (its wall, union over the concurrent tasks, / methods: the evaluate
                  phase's wall time per method, issue #11's target 2 s on digits); plots: its PNG/CSV plots

Per part: wall (the union of its intervals; stages run in threads) and thread-seconds. Orchestration overhead
= process wall - the union of training, unlearning and scoring intervals: the time nothing of the real work
ran; its share of the run's wall time is reported too. Targets (2-core CPU): warm unchanged rerun < 10 s;
orchestration overhead < 15 s per run.

    nice -n 10 .venv/bin/python bench/overhead.py            # 6-10 min on the shared 2-core machine
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
TARGETS = {"warm_rerun_s": 10.0, "orchestration_s": 15.0, "evaluate_per_method_s": 2.0}
COMPUTE = ("training", "unlearning", "scoring")

# The run's process: wraps the parts, runs the CLI, prints one JSON line. Runs inside the clone's venv.
CHILD = r'''
import importlib.abc, importlib.util, json, sys, threading, time
T0 = time.perf_counter()
spans = {}
lock = threading.Lock()

def wrap(owner, attr, part):
    fn = owner.get(attr) if isinstance(owner, dict) else getattr(owner, attr, None)
    if fn is None or getattr(fn, "_timed", False):
        return
    def timed(*a, **k):
        s = time.perf_counter()
        try:
            return fn(*a, **k)
        finally:
            with lock:
                spans.setdefault(part, []).append((s, time.perf_counter()))
    timed._timed = True
    if isinstance(owner, dict):
        owner[attr] = timed
    else:
        setattr(owner, attr, timed)

def steps_(mod):
    for name, part in (("train_original", "training"), ("train_oracle", "training"),
                       ("run_method", "unlearning"), ("evaluate_model", "scoring")):
        wrap(mod, name, part)

def client_(mod):
    for name in dir(mod.MlflowClient):
        if name.split("_")[0] in ("log", "set", "create", "search", "get", "update", "transition", "delete"):
            wrap(mod.MlflowClient, name, "mlflow")

def mlflow_(mod):
    for name in ("log_metric", "log_metrics", "log_param", "log_params", "log_artifact", "log_artifacts",
                 "set_tag", "set_tags", "start_run", "end_run", "log_input", "log_table", "log_dict"):
        wrap(mod, name, "mlflow")

def server_(mod):  # the run waits for its early server (flows.temp_server)
    wrap(mod.TemporaryServer, "wait", "prefect")

def old_server_(mod):  # a revision without flows.temp_server: Prefect starts its server at the first call
    if "flows.temp_server" not in sys.modules:
        wrap(mod.SubprocessASGIServer, "start", "prefect")

# Each module is wrapped as it finishes loading, so the run imports what it imports when it imports it
# (importing the flow up front would delay the early Prefect server and add a wait the command has not).
PATCHES = {
    "unlearning.steps": steps_,
    "mlflow.tracking.client": client_,
    "mlflow": mlflow_,
    "flows._dvc": lambda m: [wrap(m, n, "dvc") for n in ("commit", "is_clean", "push_if_remote")],
    "flows.evaluate": lambda m: [wrap(m, n, "plots") for n in ("write_pngs", "write_per_class")],
    "flows.stages": lambda m: wrap(m.STAGES, "evaluate", "evaluate"),  # a dict: setattr would not reach it
    "flows.temp_server": server_,
    "prefect.server.api.server": old_server_,
}
TIMED_IMPORTS = ("flows.cli", "flows.pipeline")

class AfterLoad(importlib.abc.MetaPathFinder):
    def find_spec(self, name, path, target=None):
        if name not in PATCHES and name not in TIMED_IMPORTS:
            return None
        sys.meta_path.remove(self)
        try:
            spec = importlib.util.find_spec(name)
        finally:
            sys.meta_path.insert(0, self)
        if spec is None or spec.loader is None:
            return spec
        run = spec.loader.exec_module
        def exec_module(module):
            s = time.perf_counter()
            run(module)
            if name in TIMED_IMPORTS:
                with lock:
                    spans.setdefault("imports", []).append((s, time.perf_counter()))
            if name in PATCHES:
                PATCHES[name](module)
        spec.loader.exec_module = exec_module
        return spec

sys.meta_path.insert(0, AfterLoad())
import flows.cli
rc = flows.cli.main(["run", *sys.argv[1:]])
print("OVERHEAD-JSON " + json.dumps({"rc": rc, "t0": T0, "end": time.perf_counter(), "spans": spans}))
try:  # the console command's own end (no module teardown), where the revision has it
    from flows.process_exit import exit_now
except ImportError:
    sys.exit(rc)
exit_now(rc)
'''


def union(intervals: list[tuple[float, float]]) -> float:
    """Length of the union of intervals."""
    total, end = 0.0, float("-inf")
    for s, e in sorted(intervals):
        if e > end:
            total += e - max(s, end)
            end = e
    return total


def run_child(clone: Path, label: str, *args: str) -> dict:
    t0 = time.perf_counter()
    proc = subprocess.run([str(clone / ".venv/bin/python"), "-c", CHILD, *args], cwd=clone, capture_output=True,
                          text=True, env={**os.environ, "PYTHONPATH": str(clone)})
    wall = time.perf_counter() - t0
    line = next((ln for ln in proc.stdout.splitlines() if ln.startswith("OVERHEAD-JSON ")), None)
    if proc.returncode != 0 or line is None or json.loads(line.split(" ", 1)[1])["rc"] != 0:
        raise SystemExit(f"{label} run failed (rc {proc.returncode}):\n{proc.stdout[-2000:]}\n{proc.stderr[-2000:]}")
    data = json.loads(line.split(" ", 1)[1])
    spans = data["spans"]
    parts = {p: {"wall_s": union(iv), "thread_s": sum(e - s for s, e in iv), "calls": len(iv)}
             for p, iv in sorted(spans.items())}
    compute = union([iv for p in COMPUTE for iv in spans.get(p, [])])
    stages = next((ln for ln in proc.stdout.splitlines() if ln.startswith("stage times")), "")
    n_eval = len(spans.get("evaluate", []))
    return {"wall_s": wall, "process_s": data["end"] - data["t0"], "startup_s": wall - (data["end"] - data["t0"]),
            "parts": parts, "compute_wall_s": compute, "orchestration_s": wall - compute,
            "orchestration_share": (wall - compute) / wall, "stage_line": stages, "evaluate_stages": n_eval,
            "evaluate_per_method_s": parts["evaluate"]["wall_s"] / n_eval if n_eval else None}


def run_make_run(clone: Path) -> dict:
    """`unlearn run` (what `make run` runs once the venv exists) in its own process, timed from outside."""
    t0 = time.perf_counter()
    proc = subprocess.run([str(clone / ".venv/bin/unlearn"), "run"], cwd=clone, capture_output=True, text=True)
    wall = time.perf_counter() - t0
    if proc.returncode != 0:
        raise SystemExit(f"warm run failed (rc {proc.returncode}):\n{proc.stdout[-2000:]}\n{proc.stderr[-2000:]}")
    lines = proc.stdout.strip().splitlines()
    return {"wall_s": wall, "early_exit": len(lines) == 1 and "nothing changed" in lines[0], "line": lines[-1]}


def timed_cmd(cmd: list[str], cwd: Path) -> float:
    t0 = time.perf_counter()
    subprocess.run(cmd, cwd=cwd, check=True, capture_output=True)
    return time.perf_counter() - t0


def prefect_start(clone: Path) -> float:
    """An empty flow in a fresh interpreter, minus the import: the temporary server's start and the run."""
    code = ("import time; from prefect import flow\n@flow\ndef f(): return 1\n"
            "t = time.perf_counter(); f(); print(time.perf_counter() - t)")
    out = subprocess.run([str(clone / ".venv/bin/python"), "-c", code], cwd=clone, capture_output=True, text=True,
                         env={**os.environ, "PREFECT_LOGGING_LEVEL": "CRITICAL",
                              "PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS": "120"})
    return float(out.stdout.strip().splitlines()[-1]) if out.returncode == 0 else float("nan")  # a busy CPU


def table(res: dict) -> str:
    lines = [f"# make run on a fresh clone ({res['commit'][:10]}): venv build {res['venv_s']:.1f} s "
             f"(uv, from uv.lock; its package cache warm), empty Prefect flow {res['prefect_empty_flow_s']:.1f} s, "
             f"load average {res['load_before']:.1f} before / {res['load_after']:.1f} after"]
    head = f"{'part':<16}{'cold wall s':>12}{'cold thr-s':>11}{'forced wall s':>14}{'forced thr-s':>13}"
    lines += [head, "-" * len(head)]
    cold, warm = res["cold"], res["forced"]
    for part in sorted(set(cold["parts"]) | set(warm["parts"])):
        c, w = cold["parts"].get(part, {}), warm["parts"].get(part, {})
        lines.append(f"{part:<16}{c.get('wall_s', 0):>12.1f}{c.get('thread_s', 0):>11.1f}"
                     f"{w.get('wall_s', 0):>14.1f}{w.get('thread_s', 0):>13.1f}")
    for key, name in (("startup_s", "interp.+exit"), ("compute_wall_s", "compute (union)"),
                      ("orchestration_s", "orchestration"), ("wall_s", "total")):
        lines.append(f"{name:<16}{cold[key]:>12.1f}{'':>11}{warm[key]:>14.1f}")
    lines.append(f"{'orch. share':<16}{cold['orchestration_share']:>12.0%}{'':>11}{warm['orchestration_share']:>14.0%}")
    t, fast = TARGETS, res["warm"]
    per = cold["evaluate_per_method_s"]
    lines.append(f"warm rerun, nothing changed (`unlearn run`, its own process): {fast['wall_s']:.1f} s, "
                 f"{'early exit' if fast['early_exit'] else 'FULL FLOW'}: {fast['line'][:160]}")
    lines.append(f"targets: warm rerun {fast['wall_s']:.1f} s (< {t['warm_rerun_s']:.0f}: "
                 f"{'met' if fast['wall_s'] < t['warm_rerun_s'] else 'NOT met'}); orchestration cold "
                 f"{cold['orchestration_s']:.1f} s / forced warm {warm['orchestration_s']:.1f} s "
                 f"(< {t['orchestration_s']:.0f}: "
                 f"{'met' if max(cold['orchestration_s'], warm['orchestration_s']) < t['orchestration_s'] else 'NOT met'})"
                 f"; evaluate phase cold {cold['parts']['evaluate']['wall_s']:.1f} s for {cold['evaluate_stages']} "
                 f"methods = {per:.2f} s/method (< {t['evaluate_per_method_s']:.0f}: "
                 f"{'met' if per < t['evaluate_per_method_s'] else 'NOT met'})")
    lines += [f"cold {cold['stage_line']}", f"forced {warm['stage_line']}"]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--out", default=str(ROOT / "bench" / "results" / "overhead.json"))
    ap.add_argument("--keep", action="store_true", help="keep the temporary clone")
    ap.add_argument("--rev", default="HEAD", help="the commit to measure (default HEAD; an older one: 'before')")
    args = ap.parse_args(argv)
    tmp = Path(tempfile.mkdtemp(prefix="overhead-"))
    try:
        res = measure(tmp / "clone", args.rev)
    finally:
        if not args.keep:  # also after a failed run: no clone left behind
            subprocess.run(["rm", "-rf", str(tmp)], check=False)
    out = Path(args.out)
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(res, indent=2) + "\n")
    print(table(res))
    print(f"JSON: {out}" + (f"; clone kept at {tmp / 'clone'}" if args.keep else ""))
    return 0


def measure(clone: Path, rev: str = "HEAD") -> dict:
    """Clone, venv, the cold, warm and forced runs, the empty flow: every figure of the table."""
    subprocess.run(["git", "clone", "--quiet", str(ROOT), str(clone)], check=True)
    subprocess.run(["git", "checkout", "--quiet", rev], cwd=clone, check=True)
    commit = subprocess.run(["git", "rev-parse", "HEAD"], cwd=clone, capture_output=True, text=True).stdout.strip()
    uv = ROOT / ".uvtool"
    if uv.exists() and not (clone / ".uvtool").exists():
        os.symlink(uv, clone / ".uvtool")  # the uv tool itself is not what is measured
    print("building the venv ...", flush=True)
    venv_s = timed_cmd(["make", "UV_LINK_MODE=hardlink", ".venv/.installed"], clone)
    print(f"venv {venv_s:.1f} s; cold run ...", flush=True)
    res: dict = {"commit": commit, "venv_s": venv_s, "load_before": os.getloadavg()[0],
                 "cold": run_child(clone, "cold")}
    print(f"cold {res['cold']['wall_s']:.1f} s; warm run ...", flush=True)
    res["warm"] = run_make_run(clone)
    print(f"warm {res['warm']['wall_s']:.1f} s; forced warm run ...", flush=True)
    res["forced"] = run_child(clone, "forced", "--force")
    res["load_after"] = os.getloadavg()[0]
    res["prefect_empty_flow_s"] = prefect_start(clone)
    res["targets"] = TARGETS
    return res

if __name__ == "__main__":
    sys.exit(main())
