"""Benchmark: wall time of each unlearning method against retraining, measured in one run.

Prints a table of method time / retrain time (the speedup's inverse) with the median over repeats and
warm-up excluded (one untimed run of each method first). Absolute seconds are meaningful only on a GPU;
on a shared CPU quote the ratios.

    python bench/bench_methods.py --set data.name=mnist --set data.root=../shared/datasets --set model.name=cnn
"""

from __future__ import annotations

import argparse
import statistics
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from unlearning.params import load_params  # noqa: E402
from unlearning.steps import load_split, run_method, train_oracle, train_original  # noqa: E402
from unlearning.utils import get_device  # noqa: E402


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--params", default="params.yaml")
    parser.add_argument("--set", dest="overrides", action="append", default=[])
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--methods", default=None, help="comma-separated (default: unlearn.methods)")
    args = parser.parse_args(argv)
    params = load_params(args.params, args.overrides)
    methods = args.methods.split(",") if args.methods else params.unlearn.methods
    split = load_split(params)
    original, t_original = train_original(params, split)
    train_oracle(params, split)  # warm-up: first optimizer construction, cuDNN autotuning
    oracle_times = [train_oracle(params, split, seed=r)[1] for r in range(args.repeats)]
    t_oracle = statistics.median(oracle_times)
    print(f"# {params.data.name} / {params.model.name} / {split.description}, device {get_device(params.train.device)}, "
          f"median of {args.repeats}")
    print(f"original training {t_original:.2f} s, retrain (oracle) {t_oracle:.2f} s")
    print(f"{'method':<16}{'time s':>10}{'time/retrain':>14}{'speedup':>10}")
    for name in methods:
        run_method(params, name, original, split)  # warm-up
        times = [run_method(params, name, original, split, seed=r).time_s for r in range(args.repeats)]
        t = statistics.median(times)
        print(f"{name:<16}{t:>10.3f}{t / t_oracle:>14.4f}{t_oracle / t:>9.1f}x")
    return 0


if __name__ == "__main__":
    sys.exit(main())
