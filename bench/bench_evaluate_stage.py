"""Benchmark: where the wall time of the pipeline's `evaluate[method]` stage goes, part by part.

Run it in a project folder after one `unlearn run` (it needs the split, the base, oracle and unlearned
checkpoints): for each method it runs the stage function and its `dvc commit` in this process, as the
Prefect task `stage_task` does, with each part timed by wrapping the functions the stage calls
(exclusive time; "other" is the rest). `--concurrent` runs all methods at once in threads, as the flow
does, and reports the span and the thread-seconds per part (their sum exceeds the span). The process/import overhead (what `dvc repro`'s one process per
stage pays on top, and the in-process pipeline once) is timed in a fresh interpreter. Medians over
`--repeats`; the stage's outputs are rewritten each time (the same files).

    cd <project> && PYTHONPATH=$PWD .venv/bin/python <this repo>/bench/bench_evaluate_stage.py --methods finetune,neggrad
"""

from __future__ import annotations

import argparse
import contextlib
import functools
import importlib
import os
import statistics
import subprocess
import sys
import threading
import time
from collections import defaultdict
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

# (module, attribute, part). Missing attributes (another version of the code) are skipped.
PARTS = [
    ("flows.version_data", "load_split", "load split"),
    ("flows._registry", "load_verified", "load checkpoints (sha256)"),
    ("unlearning.steps", "evaluate_model", "metrics (library evaluate)"),
    ("flows.evaluate", "confusions", "plots: test predictions"),
    ("flows.evaluate", "write_pngs", "PNG plots"),
    ("flows.evaluate", "write_per_class", "per-class CSV + PNG"),
    ("mlflow", "log_params", "mlflow: log params/metrics"),
    ("mlflow", "log_metrics", "mlflow: log params/metrics"),
    ("mlflow.tracking.client", "MlflowClient.log_batch", "mlflow: log params/metrics"),
    ("mlflow", "log_artifact", "mlflow: log artifacts"),
    ("mlflow", "log_artifacts", "mlflow: log artifacts"),
    ("flows._dvc", "commit", "dvc commit"),
]


class Timer:
    """Exclusive wall time per part."""

    def __init__(self) -> None:
        self.seconds: dict[str, float] = defaultdict(float)
        self._local = threading.local()  # one stack of open parts per thread
        self._lock = threading.Lock()

    @contextlib.contextmanager
    def part(self, label: str) -> Iterator[None]:
        stack = self._local.__dict__.setdefault("stack", [])
        stack.append([time.perf_counter(), 0.0])
        try:
            yield
        finally:
            start, children = stack.pop()
            spent = time.perf_counter() - start
            with self._lock:
                self.seconds[label] += spent - children
            if stack:
                stack[-1][1] += spent

    def wrap(self, fn: Callable, label: str) -> Callable:
        @functools.wraps(fn)
        def timed(*args: Any, **kwargs: Any) -> Any:
            with self.part(label):
                return fn(*args, **kwargs)
        return timed

    def wrap_cm(self, fn: Callable, label: str) -> Callable:
        """A context-manager factory whose entering and leaving are timed (the body is not)."""
        @contextlib.contextmanager
        def timed(*args: Any, **kwargs: Any) -> Iterator[Any]:
            with self.part(label):
                cm = fn(*args, **kwargs)
                value = cm.__enter__()
            try:
                yield value
            except BaseException:
                with self.part(label):
                    if not cm.__exit__(*sys.exc_info()):
                        raise
            else:
                with self.part(label):
                    cm.__exit__(None, None, None)
        return timed

    @contextlib.contextmanager
    def installed(self) -> Iterator[None]:
        saved = []
        for module_name, path, label in PARTS:
            owner = importlib.import_module(module_name)
            *parents, attr = path.split(".")  # "Class.method" patches the class
            for name in parents:
                owner = getattr(owner, name)
            if hasattr(owner, attr):
                saved.append((owner, attr, getattr(owner, attr)))
                setattr(owner, attr, self.wrap(getattr(owner, attr), label))
        evaluate_module = importlib.import_module("flows.evaluate")
        saved.append((evaluate_module, "stage_run", evaluate_module.stage_run))
        evaluate_module.stage_run = self.wrap_cm(evaluate_module.stage_run, "mlflow: run start/end")
        try:
            yield
        finally:
            for module, attr, fn in saved:
                setattr(module, attr, fn)


def import_overhead(repeats: int) -> float:
    """Seconds for a fresh interpreter to import what the stage command imports, and exit."""
    code = "import flows.stages, mlflow, unlearning.metrics"
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        subprocess.run([sys.executable, "-c", code], check=True, env={**os.environ, "PYTHONPATH": os.getcwd()})
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--root", type=Path, default=Path.cwd())
    parser.add_argument("--methods", default=None, help="comma-separated (default: unlearn.methods)")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--concurrent", action="store_true", help="all methods at once, in threads")
    args = parser.parse_args(argv)
    root = args.root.resolve()
    os.chdir(root)
    sys.path.insert(0, str(root))
    t_import = import_overhead(args.repeats)

    from flows import _dvc
    from flows.context import StageContext
    from flows.settings import load, quiet_env
    from flows.stages import address, run_stage

    quiet_env()
    params = load(root, "params.yaml", [])
    methods = args.methods.split(",") if args.methods else params.unlearn.methods
    ctx = StageContext(root, params)
    run_stage(ctx, "evaluate", methods[0])  # warm-up: first MLflow connection, matplotlib, thread pools
    timer = Timer()
    totals, cpu, parts = [], [], defaultdict(list)

    def stage(m: str) -> None:
        run_stage(ctx, "evaluate", m)
        _dvc.commit(root, [address("evaluate", m)])

    with timer.installed():
        for _ in range(args.repeats):
            for batch in ([methods] if args.concurrent else [[m] for m in methods]):
                timer.seconds.clear()
                start, cpu_start = time.perf_counter(), time.process_time()
                threads = [threading.Thread(target=stage, args=(m,)) for m in batch]
                for t in threads:
                    t.start()
                for t in threads:
                    t.join()
                totals.append(time.perf_counter() - start)
                cpu.append(time.process_time() - cpu_start)
                for label, s in timer.seconds.items():
                    parts[label].append(s)
    total = statistics.median(totals)
    n = len(totals)
    how = f"all {len(methods)} at once in threads (thread-seconds)" if args.concurrent else "one at a time"
    print(f"# evaluate stage on {params.data.name}/{params.model.name}, methods {','.join(methods)}, "
          f"in-process, {how}, median of {n}")
    print(f"{'part':<32}{'seconds':>10}{'share':>8}")
    rows = {k: statistics.median(v + [0.0] * (n - len(v))) for k, v in parts.items()}
    rows = dict(sorted(rows.items(), key=lambda kv: -kv[1]))
    if not args.concurrent:
        rows["other (records, tags, json)"] = max(0.0, total - sum(rows.values()))
    for label, s in rows.items():
        print(f"{label:<32}{s:>10.3f}{100 * s / total:>7.1f}%")
    print(f"{'span' if args.concurrent else 'stage total':<32}{total:>10.3f}"
          + (f"   ({total / len(methods):.2f} s per method)" if args.concurrent else ""))
    print(f"{'CPU seconds of this process':<32}{statistics.median(cpu):>10.3f}")
    print(f"{'fresh process + imports':<32}{t_import:>10.3f}   (per stage under `dvc repro`; once per `unlearn run`)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
