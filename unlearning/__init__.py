"""Machine unlearning for PyTorch models: data, forget requests, models, training, methods, metrics.

This package imports only torch, numpy, scikit-learn, scipy, pydantic and yaml: it runs on a bare GPU
machine. Tracking, orchestration and data versioning live in `flows/`.
"""

from .config import Params, load_params
from .data import DATASETS, Dataset, Samples, load_dataset
from .methods import METHODS, UnlearnResult, list_methods, unlearn
from .metrics import evaluate
from .models import MODELS, create_model, load_checkpoint, save_checkpoint
from .requests import Split, resolve
from .training import fit, predict

__all__ = ["DATASETS", "METHODS", "MODELS", "Dataset", "Params", "Samples", "Split", "UnlearnResult",
           "create_model", "evaluate", "fit", "list_methods", "load_checkpoint", "load_dataset", "load_params", "predict",
           "resolve", "save_checkpoint", "unlearn"]
