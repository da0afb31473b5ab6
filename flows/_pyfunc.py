"""MLflow "model from code" for our checkpoints (logged by `flows._registry.log_model`, never imported).

The registered model's artifacts hold `artifacts/model.pt`, our own checkpoint (registry name, kwargs,
weights; loads with `weights_only=True`), which is the portable thing to keep (STACK.md: the default
`pt2` format needs an input example and loads back as a GraphModule; pickle warns). This file lets
`mlflow.pyfunc.load_model("models:/digits-mlp@production")` serve it too: `predict` takes model inputs
as an array `[N, *in_shape]` (already scaled and normalised like the training batches) and returns the
outputs (logits, or predictions for regression). Needs the `unlearning` package importable.
"""

import mlflow


class CheckpointModel(mlflow.pyfunc.PythonModel):
    def load_context(self, context):
        from unlearning.models import load_checkpoint

        self.model = load_checkpoint(context.artifacts["checkpoint"])

    def predict(self, context, model_input, params=None):
        import numpy as np
        import torch

        with torch.no_grad():
            x = torch.as_tensor(np.asarray(model_input, dtype="float32"))
            return self.model(x).float().numpy()


mlflow.models.set_model(CheckpointModel())
