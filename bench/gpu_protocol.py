"""GPU protocol (issue #15, item 4): CIFAR-10 (JPEG), ResNet-18 with the CIFAR stem, an oracle recipe meant to
reach >= 93 % test accuracy, and the fast methods on class 3 and on a random 10 %, in 8 minutes on one GPU.

Run it through `bench/gpu.sh`, which checks the machine first. It imports `unlearning` and what that needs
(torch, torchvision's Pillow for the JPEGs, scikit-learn, pydantic): no MLflow, Prefect, DVC or YAML. GPU
hygiene: the whole dataset lives on the device, the library's loop trains in bf16 autocast with channels_last
weights, `--compile` turns on torch.compile (its compile time counts in each training), every time is
CUDA-synchronised, and a warm-up runs before anything is timed. After the original model's second epoch the
total is projected; past the budget the run stops (JSON written, exit 3) and says how many epochs would fit.
`--tiny` runs the same path on the CPU: a small subset, a narrow ResNet, two epochs (the test suite's check).
Details of what is timed and computed: `gpu_parts.py`.

    bash bench/gpu.sh                               # data: bench/data/cifar10-jpeg.tar.gz
    bash bench/gpu.sh --tiny --data-root DIR        # the CPU check
"""

from __future__ import annotations

import argparse
import json
import math
import os
import platform
import sys
import time
from pathlib import Path

import torch

if __package__ in (None, ""):  # run as a file: make `bench` and `unlearning` importable
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from bench.gpu_parts import (  # noqa: E402
    FAST_METHODS,
    SCENARIOS,
    TINY_METHOD_CONFIG,
    Budget,
    BudgetExceeded,
    Recipe,
    load_data,
    run_scenario,
    train,
    warm_up,
)
from unlearning.metrics import accuracy  # noqa: E402
from unlearning.training import predict  # noqa: E402

DEFAULT_ROOT = Path(__file__).resolve().parent / "data"


def parse(argv: list[str] | None) -> argparse.Namespace:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--data-root", default=str(DEFAULT_ROOT),
                    help="folder holding cifar10-jpeg.tar.gz (default: bench/data, ignored by git)")
    ap.add_argument("--dataset", default="cifar10_jpeg", help="registered dataset (cifar10 reads the pickles)")
    ap.add_argument("--out", default=None, help="JSON path (default: bench/results/gpu[-tiny].json)")
    ap.add_argument("--device", default="auto", help="auto (cuda when present) | cuda | cpu")
    ap.add_argument("--tiny", action="store_true", help="the same path on a small subset with a narrow net")
    ap.add_argument("--epochs", type=int, default=None, help="recipe epochs (default 24; tiny 2)")
    ap.add_argument("--width", type=int, default=None, help="ResNet-18 base width (default 64; tiny 4)")
    ap.add_argument("--methods", default=",".join(FAST_METHODS), help="comma-separated")
    ap.add_argument("--compile", action="store_true", help="torch.compile the training step")
    ap.add_argument("--budget-s", type=float, default=480.0, help="wall-time budget of the whole run")
    ap.add_argument("--cpu-threads", type=int, default=1,
                    help="torch threads on the CPU (1: a busy shared CPU made 2 threads ~15x slower per step)")
    ap.add_argument("--tiny-train", type=int, default=400, help="--tiny: training samples kept")
    ap.add_argument("--tiny-test", type=int, default=200, help="--tiny: test samples kept")
    args = ap.parse_args(argv)
    if args.device == "auto":
        args.device = "cuda" if torch.cuda.is_available() else "cpu"
    if args.device.startswith("cuda") and not torch.cuda.is_available():
        ap.error("--device cuda but torch sees no CUDA device (use --tiny --device cpu for the CPU check)")
    unknown = [m for m in args.methods.split(",") if m not in _method_names()]
    if unknown:
        ap.error(f"unknown method {unknown[0]!r}; available: {_method_names()}")
    return args


def _method_names() -> list[str]:
    from unlearning.methods import list_methods

    return list_methods()


def environment(device: torch.device) -> dict[str, object]:
    env: dict[str, object] = {"device": str(device), "torch": torch.__version__, "python": platform.python_version(),
                              "cpu_threads": torch.get_num_threads()}
    if device.type == "cuda":
        env["gpu"] = torch.cuda.get_device_name(device)
    return env


def main(argv: list[str] | None = None) -> int:
    args = parse(argv)
    t_start = time.perf_counter()
    device = torch.device(args.device)
    recipe = Recipe.for_run(tiny=args.tiny, epochs=args.epochs, width=args.width, compile=args.compile)
    methods = args.methods.split(",")
    configs = TINY_METHOD_CONFIG if args.tiny else {}
    out = Path(args.out or Path(__file__).resolve().parent / "results" / f"gpu{'-tiny' if args.tiny else ''}.json")
    os.environ.setdefault("UNLEARNING_CACHE", str(Path(args.data_root) / "cache"))
    if device.type == "cpu":
        torch.set_num_threads(args.cpu_threads)
    if device.type == "cuda":
        torch.backends.cuda.matmul.allow_tf32 = True
        torch.backends.cudnn.allow_tf32 = True
    results: dict[str, object] = {"protocol": "gpu", "tiny": args.tiny, "env": environment(device),
                                  "recipe": recipe.as_dict(), "methods": methods,
                                  "method_config": configs or "defaults", "budget_s": args.budget_s,
                                  "complete": False, "scenarios": {}}
    t0 = time.perf_counter()
    try:
        ds = load_data(args.dataset, args.data_root, device, tiny=(args.tiny_train, args.tiny_test) if args.tiny else None)
    except FileNotFoundError as exc:
        print(f"error: {exc}\nPut cifar10-jpeg.tar.gz in {args.data_root} (or pass --data-root DIR).", file=sys.stderr)
        return 2
    try:
        results["data"] = {"dataset": ds.name, "train": len(ds.y_train), "test": len(ds.y_test),
                           "load_s": time.perf_counter() - t0}
        print(f"data: {ds.name}, {len(ds.y_train)} train / {len(ds.y_test)} test, on {device}, "
              f"loaded in {results['data']['load_s']:.1f} s", flush=True)
        results["warmup_s"] = warm_up(ds, recipe, device)
        evals = sum(len(methods) + 1 for _ in SCENARIOS)
        budget = Budget(args.budget_s, t_start, recipe.epochs, n_methods=len(methods), evals=evals)
        original, t_orig = train(ds.train(device), recipe, ds, seed=0, budget=budget, stage="original")
        test_acc = accuracy(predict(original, ds.test(device)), ds.y_test)
        results["original"] = {"time_s": t_orig, "test/acc": test_acc}
        print(f"original: {recipe.epochs} epochs in {t_orig:.1f} s, test acc {100 * test_acc:.2f} %", flush=True)
        for key, request in SCENARIOS.items():
            results["scenarios"][key] = run_scenario(request, ds, original, recipe, methods, device, budget, configs)
        results["complete"] = True
    except BudgetExceeded as exc:
        results["aborted"] = str(exc)
        print(f"stopped: {exc}", file=sys.stderr)
    results["wall_s"] = time.perf_counter() - t_start
    results["within_budget"] = results["complete"] and results["wall_s"] <= args.budget_s
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(results, indent=2, default=_json_default) + "\n")
    print(table(results))
    print(f"JSON: {out}")
    return 0 if results["complete"] else 3


def _json_default(value: object) -> object:
    if isinstance(value, float) and not math.isfinite(value):
        return None
    return str(value)


def _pct(v: object) -> str:
    return f"{100 * v:6.1f}" if isinstance(v, float) and math.isfinite(v) else f"{'-':>6}"


def table(results: dict) -> str:
    """The run as text: oracle time and accuracies, each method's time, speedup, accuracies and gap."""
    env, rec = results["env"], results["recipe"]
    lines = [f"# {results.get('data', {}).get('dataset', '?')} / resnet18 (width {rec['width']}) / "
             f"{env.get('gpu', env['device'])}, torch {env['torch']}, {rec['epochs']} epochs, compile {rec['compile']}"]
    if "original" in results:
        o = results["original"]
        lines.append(f"original: {o['time_s']:.1f} s, test acc {100 * o['test/acc']:.2f} %")
    head = f"{'request':<14}{'model':<16}{'time s':>9}{'speedup':>9}{'forget':>8}{'retain':>8}{'test':>8}{'gap':>7}"
    lines += [head, "-" * len(head)]
    for key, sc in results["scenarios"].items():
        rows = [("oracle", sc.get("oracle"))] + list(sc.get("methods", {}).items())
        for name, m in rows:
            if m is None:
                continue
            if "skipped" in m:
                lines.append(f"{key:<14}{name:<16}  skipped: {m['skipped']}")
                continue
            speed = f"{m['speedup']:8.1f}x" if "speedup" in m else f"{'1.0x':>9}"
            gap = f"{m['oracle/avg_gap']:7.2f}" if "oracle/avg_gap" in m else f"{'-':>7}"
            lines.append(f"{key:<14}{name:<16}{m['time_s']:9.2f}{speed}{_pct(m.get('forget/acc'))}  "
                         f"{_pct(m.get('retain/acc'))}  {_pct(m.get('test/acc'))}{gap}")
    state = "complete" if results["complete"] else f"INCOMPLETE ({results.get('aborted', 'error')})"
    lines.append(f"wall {results['wall_s']:.0f} s of a {results['budget_s']:.0f} s budget; {state}. Accuracies in %, "
                 "gap = mean |method - oracle| over forget/retain/test acc and MIA efficacy (points).")
    return "\n".join(lines)


if __name__ == "__main__":
    sys.exit(main())
