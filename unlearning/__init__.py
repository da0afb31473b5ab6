"""Machine unlearning for PyTorch models: data, forget requests, models, training, methods, metrics.

This package imports only torch, numpy, scikit-learn, scipy, pydantic and yaml: it runs on a bare GPU
machine. Tracking, orchestration and data versioning live in `flows/`. Names below are imported on first
use, so `python -m unlearning` and `import unlearning.config` start without loading torch.
"""

from importlib import import_module

_EXPORTS = {
    "Params": "params", "load_params": "params",
    "DATASETS": "datasets", "load_dataset": "datasets",
    "Dataset": "data", "Samples": "data",
    "METHODS": "methods", "UnlearnResult": "methods", "list_methods": "methods", "unlearn": "methods",
    "evaluate": "metrics",
    "MODELS": "models", "create_model": "models", "load_checkpoint": "models", "save_checkpoint": "models",
    "Split": "requests", "resolve": "requests",
    "fit": "training", "predict": "training",
}

__all__ = sorted(_EXPORTS)


def __getattr__(name: str) -> object:
    if name not in _EXPORTS:
        raise AttributeError(f"module 'unlearning' has no attribute {name!r}")
    return getattr(import_module(f".{_EXPORTS[name]}", __name__), name)
