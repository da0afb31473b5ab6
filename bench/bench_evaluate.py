"""Benchmark: the cost of `unlearning.metrics.evaluate` per model, by part, against the oracle's training time.

Trains the original and the oracle once (checkpoints and the oracle's training time cached under `--cache`,
keyed by the data/request/model/train params), builds the models to score (original, oracle, a finetuned
one, and a collapsed one: all weights zero, head bias pinned away from the forgotten classes, which AIN
cannot relearn within its cap), then times `evaluate(model, split, original=, oracle=)` on each. Every timed
call starts cold (the metric caches, where the code has them, are cleared first); one untimed call warms the
process up. Parts are timed by wrapping the library's functions (exclusive time: a wrapped call inside
another is charged to the inner one); "other" is the rest. Medians over `--repeats`. "warm" times a call
after another model was scored against the same oracle (what every method but the first sees in one
process): the oracle's side comes from the caches, the model's own work does not.

    python bench/bench_evaluate.py                                    # digits / mlp, params.yaml
    nice python bench/bench_evaluate.py --data mnist --root /work/shared/datasets --cache /tmp/evalbench
    python bench/bench_evaluate.py --out new.json --compare old.json  # metrics of old vs new code
"""

from __future__ import annotations

import argparse
import contextlib
import functools
import importlib
import json
import math
import statistics
import sys
import time
from collections import defaultdict
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import torch  # noqa: E402

from unlearning.models import load_checkpoint, save_checkpoint  # noqa: E402
from unlearning.params import load_params  # noqa: E402
from unlearning.steps import load_split, run_method, train_oracle, train_original  # noqa: E402
from unlearning.utils import content_hash, get_device  # noqa: E402

MNIST = ["data.name=mnist", "model.name=cnn", "model.width=16", "train.epochs=5"]
MODELS = ("original", "oracle", "finetune", "collapsed")
# (module, function, part). A part may name a role: "{role}" becomes model / oracle / original / teacher,
# by the identity of the first argument. Functions missing from a version of the code are skipped.
PARTS = [
    ("unlearning.metrics.report", "predict", "outputs: {role}"),
    ("unlearning.metrics.outputs", "predict", "outputs: {role}"),
    ("unlearning.metrics.report", "random_teacher", "zrf: build teacher"),
    ("unlearning.metrics.report", "utility", "utility"),
    ("unlearning.metrics.report", "signals", "signals"),
    ("unlearning.metrics.report", "mia_metrics", "mia: other"),
    ("unlearning.metrics.mia", "cv_attack", "mia: cv (loss, entropy)"),
    ("unlearning.metrics.mia", "threshold_attack", "mia: threshold"),
    ("unlearning.metrics.mia", "entropy_attack", "mia: entropy"),
    ("unlearning.metrics.mia", "efficacy", "mia: efficacy (SVC)"),
    ("unlearning.metrics.report", "js_divergence", "zrf: js"),
    ("unlearning.metrics.report", "_oracle_metrics", "oracle: distances"),
    ("unlearning.metrics.report", "_gap_reference", "oracle: avg_gap reference"),
    ("unlearning.metrics.report", "efficacy", "oracle: avg_gap reference"),
    ("unlearning.metrics.report", "anamnesis_index", "ain: other"),
    ("unlearning.metrics.ain", "relearn_steps", "ain: relearn {role}"),
    ("unlearning.metrics.report", "digest", "cache keys (hashing)"),
    ("unlearning.metrics.ain", "digest", "cache keys (hashing)"),
    ("unlearning.metrics.outputs", "digest", "cache keys (hashing)"),
]


class PartTimer:
    """Exclusive wall time per part, collected by wrapping module-level functions."""

    def __init__(self) -> None:
        self.seconds: dict[str, float] = defaultdict(float)
        self.roles: dict[int, str] = {}
        self.steps: dict[str, list[int]] = defaultdict(list)
        self._stack: list[list[float]] = []  # [start, time spent in wrapped children]

    def wrap(self, fn: Callable, part: str) -> Callable:
        @functools.wraps(fn)
        def timed(*args: Any, **kwargs: Any) -> Any:
            label = part.format(role=self.roles.get(id(args[0]), "teacher") if args else "?")
            self._stack.append([time.perf_counter(), 0.0])
            try:
                result = fn(*args, **kwargs)
            finally:
                start, children = self._stack.pop()
                spent = time.perf_counter() - start
                self.seconds[label] += spent - children
                if self._stack:
                    self._stack[-1][1] += spent
            if fn.__name__ == "relearn_steps":
                self.steps[label].append(int(result))
            return result
        return timed

    @contextlib.contextmanager
    def installed(self) -> Iterator[PartTimer]:
        saved = []
        for module_name, attr, part in PARTS:
            module = importlib.import_module(module_name)
            if hasattr(module, attr):
                saved.append((module, attr, getattr(module, attr)))
                setattr(module, attr, self.wrap(getattr(module, attr), part))
        try:
            yield self
        finally:
            for module, attr, fn in saved:
                setattr(module, attr, fn)

    def reset(self) -> None:
        self.seconds.clear()
        self.steps.clear()


def clear_caches() -> bool:
    """Empty the metric caches of the code under test; False for code that has none."""
    import unlearning.metrics as metrics

    clear = getattr(metrics, "clear_cache", None)
    if clear is not None:
        clear()
    return clear is not None


def collapse(model: torch.nn.Module, forgotten: list[int]) -> torch.nn.Module:
    """All weights zero and the head's bias pinned to one kept class: constant outputs.

    Only the head's bias gets a gradient (every activation is 0), and Adam at lr 1e-3 moves it about
    1e-3 per step, so a margin of 20 keeps the forgotten classes out of reach for any AIN cap below ~10^4.
    """
    import copy

    out = copy.deepcopy(model)
    with torch.no_grad():
        for p in out.parameters():
            p.zero_()
        head = [m for m in out.modules() if isinstance(m, torch.nn.Linear)][-1]
        kept = next(c for c in range(head.out_features) if c not in forgotten)
        head.bias[kept] = 20.0
    return out.eval()


def models(params: Any, split: Any, cache: Path | None) -> tuple[dict[str, torch.nn.Module], float]:
    """The models to score and the oracle's training time (seconds), trained once per cache key."""
    device = get_device(params.train.device)
    key = content_hash({s: getattr(params, s).model_dump() for s in ("data", "request", "model", "train")})
    folder = cache / key if cache is not None else None
    if folder is not None and (folder / "meta.json").exists():
        meta = json.loads((folder / "meta.json").read_text())
        found = {name: load_checkpoint(folder / f"{name}.pt", device).eval() for name in meta["models"]}
        print(f"# cached models from {folder} (oracle trained in {meta['oracle_s']:.2f} s, "
              f"{meta.get('threads', '?')} torch threads)", flush=True)
    else:
        original, t_original = train_original(params, split)
        oracle, t_oracle = train_oracle(params, split)
        finetune = run_method(params, "finetune", original, split).model.eval()
        found = {"original": original, "oracle": oracle, "finetune": finetune}
        meta = {"models": list(found), "oracle_s": t_oracle, "original_s": t_original,
                "threads": torch.get_num_threads()}
        print(f"# trained: original {t_original:.2f} s, oracle {t_oracle:.2f} s", flush=True)
        if folder is not None:
            for name, model in found.items():
                save_checkpoint(model, folder / f"{name}.pt")
            (folder / "meta.json").write_text(json.dumps(meta, indent=1))
    forgotten = [int(c) for c in split.dataset.y_train[split.forget_idx].unique()]
    found["collapsed"] = collapse(found["original"], forgotten)
    return found, float(meta["oracle_s"])


def run(params: Any, split: Any, found: dict[str, torch.nn.Module], names: list[str],
        repeats: int) -> tuple[dict[str, dict], dict[str, dict[str, float]]]:
    """Time `evaluate` on each model; returns per-model timings and the metrics of the first timed call."""
    from unlearning.metrics import evaluate

    original, oracle = found["original"], found["oracle"]

    def score(model: torch.nn.Module) -> dict[str, float]:
        return evaluate(model, split, original=original, oracle=oracle, cfg=params.evaluate, seed=0)

    timer = PartTimer()
    results, metrics = {}, {}
    score(found["finetune"])  # warm-up: imports, first optimizer, thread pools
    with timer.installed():
        for name in names:
            model = found[name]
            timer.roles = {id(oracle): "oracle", id(original): "original", id(model): "model"}
            totals, parts, steps = [], defaultdict(list), {}
            for r in range(repeats):
                clear_caches()
                timer.reset()
                start = time.perf_counter()
                out = score(model)
                totals.append(time.perf_counter() - start)
                for part, s in timer.seconds.items():
                    parts[part].append(s)
                steps = steps or {k: v[0] for k, v in timer.steps.items()}
                if r == 0:
                    metrics[name] = out
            warm = []
            for _ in range(repeats if clear_caches() else 0):
                clear_caches()
                score(found["finetune" if name == "original" else "original"])  # fills the oracle's side
                timer.reset()
                start = time.perf_counter()
                score(model)
                warm.append(time.perf_counter() - start)
            results[name] = {"total": statistics.median(totals), "totals": totals,
                             "warm": statistics.median(warm) if warm else float("nan"),
                             "parts": {k: statistics.median(v + [0.0] * (repeats - len(v))) for k, v in parts.items()},
                             "steps": steps, "ain": metrics[name].get("ain", float("nan"))}
    return results, metrics


def report(results: dict[str, dict], oracle_s: float, header: str) -> None:
    print(header)
    for name, res in results.items():
        total = res["total"]
        steps = ", ".join(f"{k.split()[-1]} {v}" for k, v in res["steps"].items()) or "-"
        print(f"\n## {name}: evaluate {total:.3f} s (runs {', '.join(f'{t:.2f}' for t in res['totals'])}), "
              f"{100 * total / oracle_s:.1f} % of oracle training; ain {res['ain']:.3f} (relearn steps: {steps})")
        print(f"{'part':<30}{'seconds':>10}{'share':>8}")
        parts = dict(sorted(res["parts"].items(), key=lambda kv: -kv[1]))
        parts["other"] = max(0.0, total - sum(parts.values()))
        for part, s in parts.items():
            print(f"{part:<30}{s:>10.3f}{100 * s / total:>7.1f}%")
    print(f"\n{'model':<12}{'cold s':>10}{'/ oracle training':>19}{'warm s':>10}{'/ oracle training':>19}")
    for name, res in results.items():
        print(f"{name:<12}{res['total']:>10.3f}{res['total'] / oracle_s:>18.3f}x"
              f"{res['warm']:>10.3f}{res['warm'] / oracle_s:>18.3f}x")
    print(f"oracle training {oracle_s:.2f} s")


def compare(new: dict[str, dict[str, float]], old: dict[str, dict[str, float]]) -> int:
    """Print the max |new - old| per metric over the models both hold; 1 if keys differ or any is >= 5e-4."""
    worst: dict[str, float] = defaultdict(float)
    bad = 0
    for name in sorted(set(new) & set(old)):
        if set(new[name]) != set(old[name]):
            print(f"{name}: keys differ: only new {sorted(set(new[name]) - set(old[name]))}, "
                  f"only old {sorted(set(old[name]) - set(new[name]))}")
            bad = 1
        for k in set(new[name]) & set(old[name]):
            a, b = new[name][k], old[name][k]
            d = 0.0 if (math.isnan(a) and math.isnan(b)) else abs(a - b)
            worst[k] = max(worst[k], d if math.isfinite(d) else math.inf)
    print(f"\n{'metric':<28}{'max |new - old|':>16}")
    for k in sorted(worst):
        print(f"{k:<28}{worst[k]:>16.2e}")
        bad |= worst[k] >= 5e-4
    print("definitions unchanged (all equal to 3 decimals)" if not bad else "DIFFERENCES at 3 decimals")
    return int(bad)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--params", default="params.yaml")
    parser.add_argument("--set", dest="overrides", action="append", default=[])
    parser.add_argument("--data", choices=["digits", "mnist"], default="digits",
                        help="mnist: cnn width 16, 5 epochs (before any --set)")
    parser.add_argument("--root", default=None, help="dataset root (torchvision layout)")
    parser.add_argument("--cache", type=Path, default=None, help="folder for the trained checkpoints")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--models", default=",".join(MODELS))
    parser.add_argument("--threads", type=int, default=None, help="torch.set_num_threads before anything")
    parser.add_argument("--out", type=Path, default=None, help="write the metrics (first timed call) as JSON")
    parser.add_argument("--compare", type=Path, default=None, help="metrics JSON of another version")
    args = parser.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    overrides = (MNIST if args.data == "mnist" else []) + ([f"data.root={args.root}"] if args.root else [])
    params = load_params(args.params, overrides + args.overrides)
    split = load_split(params)
    found, oracle_s = models(params, split, args.cache)
    results, metrics = run(params, split, found, args.models.split(","), args.repeats)
    report(results, oracle_s, f"# evaluate on {params.data.name} / {params.model.name} / {split.description}, "
                              f"{torch.get_num_threads()} torch threads, median of {args.repeats} (cold caches)")
    if args.out is not None:
        args.out.write_text(json.dumps({"metrics": metrics, "timings": results, "oracle_s": oracle_s}, indent=1))
    if args.compare is not None:
        return compare(metrics, json.loads(args.compare.read_text())["metrics"])
    return 0


if __name__ == "__main__":
    sys.exit(main())
