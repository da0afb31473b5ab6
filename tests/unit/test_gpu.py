"""On CUDA: training (bf16 autocast), methods and metrics run on the device. Skips without a GPU."""

from __future__ import annotations

import math

import pytest

from unlearning.params import load_params
from unlearning.runner.experiment import run_experiment


@pytest.mark.gpu
@pytest.mark.behaviour
def test_experiment_runs_on_cuda(check) -> None:
    params = load_params(None, ["train.device=cuda", "train.epochs=5", "model.name=cnn",
                                "unlearn.methods=[finetune,scrub,ssd,salun]", "evaluate.ain_max_steps=50"])
    results = run_experiment(params)
    assert results["device"].startswith("cuda")
    check("oracle forget acc", results["oracle"]["forget/acc"], "<=", 0.05)
    for name, metrics in results["methods"].items():
        assert metrics["time/s"] > 0, name
        assert all(math.isfinite(v) for k, v in metrics.items() if k.endswith("/acc")), name
