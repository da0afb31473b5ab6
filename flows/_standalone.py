"""What a logged model carries so that it stands on its own: `mlflow.pyfunc.load_model(...)` works in an
environment that has mlflow, torch and numpy but not this project, and scores raw inputs correctly.

- **Preprocessing inside the model.** The served model (`flows/_pyfunc.py`) takes one flat row of raw values per
  example, float64, in the dataset's own form: for digits the 64 pixel values 0..16 of
  `sklearn.datasets.load_digits().data`; for MNIST, CIFAR, SVHN the pixel values 0..255 in the stored
  channel-first order. It applies what training applied (`unlearning.data.Samples.prepare`): quantise to the
  stored uint8 image, scale to [0, 1], normalise per channel with the training set's mean and std. Those
  constants are an artifact of the model (`preprocessing.json`), read from the data version (`data/meta.json`).
  Tabular data (diabetes) is taken as stored in the data version (standardised features).
- **Signature and input example**: float64 rows of the flat width in, logits (or predictions) out; the example
  is five raw test rows.
- **Model definitions as code**: `code/unlearning_models/` is a copy of `unlearning/models.py` and its one
  dependency `unlearning/registry.py`, made when the model is logged. A package name of its own, so loading a
  model in a process that also imports `unlearning` never shadows the project's package (MLflow puts a
  model's code first on `sys.path`).
- **Requirements**: only what loading needs (mlflow, torch, numpy), pinned to the versions that logged it.
"""

from __future__ import annotations

import importlib.util
import json
import math
import shutil
from importlib import metadata
from pathlib import Path
from typing import Any

import numpy as np

from .settings import DATA_DIR

SHIPPED_PACKAGE = "unlearning_models"
REQUIREMENTS = ("mlflow", "torch", "numpy")
IMAGE_MAX = 255.0
EXAMPLE_ROWS = 5
_SHIPPED_FILES = ("models.py", "registry.py")  # models.py imports only torch and .registry


def preprocessing(root: Path) -> dict[str, Any]:
    """The constants the served model applies to raw rows, from the data version under `root/data`."""
    folder = Path(root) / DATA_DIR
    meta_path = folder / "meta.json"
    if not meta_path.exists():
        raise FileNotFoundError(f"{meta_path}: no data version to read the model's preprocessing from; "
                                "run the version_data stage first")
    meta = json.loads(meta_path.read_text())
    x = np.load(folder / "x_test.npy", mmap_mode="r")  # only the header is read
    in_shape = [int(d) for d in x.shape[1:]]
    image = None
    if x.dtype == np.uint8:
        from unlearning.datasets import RAW_MAX  # the range the dataset's loader rescaled from

        image = {"raw_max": RAW_MAX.get(meta["name"], IMAGE_MAX), "mean": meta["mean"], "std": meta["std"]}
    return {"dataset": meta["name"], "task": meta["task"], "classes": meta["classes"], "in_shape": in_shape,
            "n_features": math.prod(in_shape), "image": image}


def input_example(root: Path, spec: dict[str, Any]) -> np.ndarray:
    """A few test rows in raw form (float64 [n, n_features]): the stored values mapped back to the raw range.

    Raw pixel values are integers (0..16 for digits), and the rounding undoes the stored quantisation
    exactly: these rows equal the dataset's own.
    """
    x = np.asarray(np.load(Path(root) / DATA_DIR / "x_test.npy", mmap_mode="r")[:EXAMPLE_ROWS])
    rows = x.reshape(len(x), -1).astype(np.float64)
    if spec["image"] is not None:
        rows = np.rint(rows * (spec["image"]["raw_max"] / IMAGE_MAX))
    return rows


def signature(spec: dict[str, Any]):
    """float64 rows of the flat input width in; float32 logits [n, classes] (predictions [n] for regression) out."""
    from mlflow.models import ModelSignature
    from mlflow.types import Schema, TensorSpec

    out_shape = (-1, len(spec["classes"])) if spec["task"] == "classification" else (-1,)
    return ModelSignature(Schema([TensorSpec(np.dtype("float64"), (-1, spec["n_features"]))]),
                          Schema([TensorSpec(np.dtype("float32"), out_shape)]))


def ship_code(dest: Path) -> Path:
    """Write the model definitions to `dest/unlearning_models/` (a `code_paths` entry); returns that folder."""
    library = Path(importlib.util.find_spec("unlearning").origin).parent  # wherever it is installed
    pkg = Path(dest) / SHIPPED_PACKAGE
    pkg.mkdir(parents=True, exist_ok=True)
    (pkg / "__init__.py").write_text('"""The model definitions of the `unlearning` package (models.py, registry.py) '
                                     'as they were when this model was logged."""\n')
    for name in _SHIPPED_FILES:
        shutil.copyfile(library / name, pkg / name)
    return pkg


def pip_requirements() -> list[str]:
    """What loading needs, pinned to this environment's versions (inferring them costs ~5 s a call: STACK.md)."""
    out = []
    for dist in REQUIREMENTS:
        try:
            out.append(f"{dist}=={metadata.version(dist)}")
        except metadata.PackageNotFoundError:
            out.append(dist)
    return out


def log_model_kwargs(root: Path, checkpoint: Path, workdir: Path) -> dict[str, Any]:
    """The arguments of `mlflow.pyfunc.log_model` that make a model stand on its own; files go to `workdir`."""
    spec = preprocessing(root)
    spec_path = Path(workdir) / "preprocessing.json"
    spec_path.write_text(json.dumps(spec, indent=1) + "\n")
    return {"artifacts": {"checkpoint": str(checkpoint), "preprocessing": str(spec_path)},
            "code_paths": [str(ship_code(workdir))], "signature": signature(spec),
            "input_example": input_example(root, spec), "pip_requirements": pip_requirements()}
