"""Validate the promotion gates against retraining: false refusals of a fresh retrain, false passes of bad models.

Each trial draws fresh seeds and does what a pipeline run does (one base model, `--oracles` retrained
models as the band, one unlearning seed), then asks the gates about three candidates: a retrain with yet
another seed (must pass), the original model itself (must fail) and finetune (which never sees the forget
set, so on a class request it keeps it: must fail). Prints each rate with its 95 % Clopper-Pearson interval
over the trials, and which gates refused or passed; `--out` keeps every verdict as JSON.

    python bench/gate_calibration.py --trials 20 --request class --out outputs/bench/gates-class.json
    python bench/gate_calibration.py --trials 20 --request random --out outputs/bench/gates-random.json

Seeds follow from the trial index: the membership gate's clip was chosen on trials 0-29 of random 10 %,
so its validation uses `--first-trial 100` (fresh seeds).
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from collections import Counter
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import torch  # noqa: E402
from scipy.stats import beta  # noqa: E402

from unlearning.metrics.membership import band_reference  # noqa: E402
from unlearning.params import load_params  # noqa: E402
from unlearning.stats import rate_sizes  # noqa: E402
from unlearning.steps import (  # noqa: E402
    evaluate_model,
    load_split,
    run_method,
    train_oracle,
    train_original,
    with_training_seed,
)
from unlearning.verdicts import decide_gates, overall  # noqa: E402

REQUESTS = {"class": ["request.classes=[3]"], "random": ["request={random: 0.1}"]}


def clopper_pearson(k: int, n: int) -> tuple[float, float]:
    lo = 0.0 if k == 0 else float(beta.ppf(0.025, k, n - k + 1))
    hi = 1.0 if k == n else float(beta.ppf(0.975, k + 1, n - k))
    return lo, hi


def trial(params, split, sizes, i: int, n_oracles: int) -> dict[str, dict]:
    """One pipeline-like draw: base, oracles and the fresh retrain all get seeds no other trial uses."""
    base_seed = 10_000 + i
    base, _ = train_original(with_training_seed(params, base_seed), split)
    oracles = [train_oracle(with_training_seed(params, 20_000 + n_oracles * i + k), split)[0] for k in range(n_oracles)]
    fresh, _ = train_oracle(with_training_seed(params, 30_000 + i), split)
    finetuned = run_method(params, "finetune", base, split, seed=i).model
    membership = band_reference(oracles, split)

    def runs(model) -> list[dict]:
        return [{"training_seed": base_seed, "seed": i,
                 **evaluate_model(params, model, split, seed=i, membership=membership)}]

    base_runs = runs(base)
    oracle_runs = [{"training_seed": 20_000 + k, **evaluate_model(params, o, split, seed=i, membership=membership,
                                                                  band_member=k)} for k, o in enumerate(oracles)]
    mia_key = f"mia/entropy_{params.evaluate.mia_classifier}"
    out = {}
    for name, model in (("retrain", fresh), ("original", base), ("finetune", finetuned)):
        verdicts = decide_gates(runs(model) if model is not base else base_runs, base_runs, oracle_runs,
                                params.promote.gates, scenario=split.scenario, sizes=sizes, mia_key=mia_key)
        out[name] = {"verdict": overall(verdicts), "gates": [v.as_dict() for v in verdicts]}
    return out


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--params", default="params.yaml")
    parser.add_argument("--set", dest="overrides", action="append", default=[])
    parser.add_argument("--request", choices=sorted(REQUESTS), default="class")
    parser.add_argument("--trials", type=int, default=20)
    parser.add_argument("--oracles", type=int, default=3, help="retrained models per trial (the band)")
    parser.add_argument("--out", type=Path, default=None)
    parser.add_argument("--first-trial", type=int, default=0,
                        help="index of the first trial: its seeds follow from it, so a later batch draws fresh ones")
    parser.add_argument("--threads", type=int, default=1, help="torch threads (tiny models: 1 is fastest)")
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)
    params = load_params(args.params if Path(args.params).exists() else None,
                         REQUESTS[args.request] + ["evaluate.ain=false"] + args.overrides)
    split = load_split(params)
    sizes = rate_sizes(split)
    t0, trials = time.perf_counter(), []
    for i in range(args.trials):
        trials.append(trial(params, split, sizes, args.first_trial + i, args.oracles))
        done = i + 1
        eta = (time.perf_counter() - t0) / done * (args.trials - done)
        print(f"trial {done}/{args.trials}: " + ", ".join(f"{k} {v['verdict']}" for k, v in trials[-1].items())
              + f"  (ETA {eta:.0f} s)", file=sys.stderr, flush=True)
    print(f"# gate calibration: {params.data.name}/{params.model.name}, {split.description} "
          f"({sizes['forget/acc']} forget samples), {args.trials} trials, {args.oracles} retrains per band, "
          f"{time.perf_counter() - t0:.0f} s")
    print(f"{'candidate':<10}{'should':>8}{'pass':>6}{'inconcl.':>10}{'fail':>6}   error rate [95 % CI]")
    for name, should in (("retrain", "pass"), ("original", "fail"), ("finetune", "fail")):
        counts = Counter(t[name]["verdict"] for t in trials)
        wrong = args.trials - counts["pass"] if should == "pass" else counts["pass"]
        lo, hi = clopper_pearson(wrong, args.trials)
        label = "false refusal" if should == "pass" else "false pass"
        print(f"{name:<10}{should:>8}{counts['pass']:>6}{counts['inconclusive']:>10}{counts['fail']:>6}   "
              f"{label} {wrong}/{args.trials} = {wrong / args.trials:.0%} [{lo:.0%}, {hi:.0%}]")
        blame = Counter(g["name"] for t in trials for g in t[name]["gates"]
                        if (g["verdict"] != "pass") == (should == "pass"))
        if blame:
            print(f"{'':<10}  {'gates that refused' if should == 'pass' else 'gates that passed'}: "
                  + ", ".join(f"{k} {v}" for k, v in blame.most_common()))
    if args.out:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        args.out.write_text(json.dumps({"request": split.summary(), "trials": trials}, indent=1) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
