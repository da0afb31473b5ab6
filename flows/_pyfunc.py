"""MLflow "model from code" for our checkpoints (logged by `flows._registry.log_model`, never imported).

A registered model stands on its own: `mlflow.pyfunc.load_model("models:/digits-mlp@production")` needs
mlflow, torch and numpy, not this project. Its artifacts hold `model.pt`, our own checkpoint (registry
name, kwargs, weights; loads with `weights_only=True`), and `preprocessing.json`; its `code/` holds the
model definitions (`unlearning_models`, see `flows/_standalone.py`). `predict` takes raw rows as the
dataset has them (float64 [N, features]; digits: the 64 pixel values 0..16 of
`sklearn.datasets.load_digits().data`), applies the training preprocessing (quantise to the stored uint8
image, scale to [0, 1], normalise per channel: `unlearning.data.Samples.prepare`) and returns float32
logits [N, classes] (predictions [N] for regression).
"""

import json

import mlflow
import numpy as np


class StandaloneModel(mlflow.pyfunc.PythonModel):
    def load_context(self, context):
        import torch
        from unlearning_models.models import load_checkpoint

        with open(context.artifacts["preprocessing"]) as f:
            self.spec = json.load(f)
        self.model = load_checkpoint(context.artifacts["checkpoint"]).eval()
        self.in_shape = tuple(self.spec["in_shape"])
        image = self.spec["image"]
        self.norm = None
        if image is not None:
            shape = (1, -1) + (1,) * (len(self.in_shape) - 1)  # per channel
            self.norm = (torch.tensor(image["mean"]).view(shape), torch.tensor(image["std"]).view(shape))

    # Annotated so that MLflow knows the input is an array (validated by the signature, not by the hint).
    def predict(self, context, model_input: np.ndarray, params=None) -> np.ndarray:
        import torch

        x = np.ascontiguousarray(model_input, dtype="float64")
        width = self.spec["n_features"]
        if x.ndim != 2 or x.shape[1] != width:
            raise ValueError(f"model input must be rows of {width} raw values ({self.spec['dataset']}); "
                             f"got shape {x.shape}")
        if self.norm is not None:  # the stored uint8 image, as the training data holds it
            x = np.clip(np.rint(x * (255.0 / self.spec["image"]["raw_max"])), 0, 255).astype(np.uint8)
        t = torch.from_numpy(x).view(len(x), *self.in_shape).float()
        if self.norm is not None:  # the same operations, in the same precision, as the training batches
            t = (t.div_(255.0) - self.norm[0]) / self.norm[1]
        with torch.no_grad():
            return self.model(t).float().numpy()


mlflow.models.set_model(StandaloneModel())
