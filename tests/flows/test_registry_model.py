"""A registered version is linked to its logged model, and the logged model stands on its own: it takes raw
rows and scores them exactly as the pipeline scores its own prepared batches; its signature, input
example, code and requirements are what loading elsewhere needs. (The load in a separate venv without the
project is the slow test in test_standalone_model.py.)
"""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest


def _logged(registry_project):
    import mlflow

    from flows import _registry as R

    root, _, versions = registry_project
    mv = R.client().get_model_version("digits-mlp", versions[0])
    return root, versions, mv, mlflow.get_logged_model(R.model_id_of(mv))


def test_versions_are_listed_on_their_logged_model(registry):
    from flows import _registry as R

    _, versions, mv, model = _logged(registry)
    assert mv.source == f"models:/{model.model_id}" and model.name == "base"
    listed = json.loads(model.tags["mlflow.modelVersions"])  # what the MLflow UI shows as "Registered models"
    assert listed == [{"name": "digits-mlp", "version": v} for v in versions]
    R._link(model.model_id, "digits-mlp", versions[0])  # linking again does not list it twice
    assert len(json.loads(R.client().get_logged_model(model.model_id).tags["mlflow.modelVersions"])) == 3
    v = R.register("digits-mlp", mv.source, {"role": "base", "requests": "", "base_version": None})
    assert R.version_tags("digits-mlp", v) == {"role": "base"}  # empty values are left out


def test_the_served_model_takes_raw_rows_and_scores_like_the_pipeline(registry, tmp_path):
    import mlflow
    from mlflow.exceptions import MlflowException
    from sklearn.datasets import load_digits

    from flows.datastore import read_dataset
    from unlearning.models import load_checkpoint
    from unlearning.training import predict

    root, _, mv, model = _logged(registry)
    served = mlflow.pyfunc.load_model(mv.source)
    ds = read_dataset(root)
    # The test rows in the dataset's own form: load_digits().data, pixel values 0..16.
    raw = load_digits().data
    stored = ds.x_test.reshape(len(ds.x_test), -1).numpy().astype(np.float64)
    rows = {r.tobytes(): i for i, r in enumerate(raw)}
    test_idx = [rows[np.rint(r * 16 / 255).tobytes()] for r in stored]
    expected = predict(load_checkpoint(root / "model.pt"), ds.test()).numpy()
    got = served.predict(raw[test_idx])
    assert got.dtype == np.float32 and got.shape == (len(test_idx), 10)
    np.testing.assert_allclose(got, expected, rtol=0, atol=1e-5)
    with pytest.raises(MlflowException, match="64"):
        served.predict(np.zeros((2, 10)))  # not a digits row: refused by the signature

    local = Path(mlflow.artifacts.download_artifacts(mv.source, dst_path=str(tmp_path / "model")))
    info = mlflow.models.get_model_info(mv.source)
    (x_spec,) = info.signature.inputs.inputs
    assert x_spec.type == np.dtype("float64") and x_spec.shape == (-1, 64)
    example = np.asarray(mlflow.models.Model.load(str(local)).load_input_example(str(local)))
    assert example.shape == (5, 64)
    assert all(r.tobytes() in rows for r in example.astype(np.float64))  # rows of load_digits().data
    reqs = sorted(line.split("==")[0] for line in (local / "requirements.txt").read_text().split())
    assert reqs == ["mlflow", "numpy", "torch"]
    shipped = sorted(p.name for p in (local / "code").rglob("*.py"))
    assert shipped == ["__init__.py", "models.py", "registry.py"] and not (local / "code" / "unlearning").exists()
    spec = json.loads((local / "artifacts" / "preprocessing.json").read_text())
    assert spec["image"]["raw_max"] == 16.0 and spec["image"]["mean"] == list(ds.mean)


def test_tabular_data_is_served_as_stored(tmp_path):
    from flows._standalone import input_example, preprocessing, signature
    from flows.datastore import materialise
    from unlearning.datasets import load_dataset

    materialise(tmp_path, load_dataset("diabetes"), {"pending": [], "done": []})
    spec = preprocessing(tmp_path)
    assert spec["image"] is None and spec["n_features"] == 10 and spec["task"] == "regression"
    assert signature(spec).outputs.inputs[0].shape == (-1,)
    np.testing.assert_array_equal(input_example(tmp_path, spec), np.load(tmp_path / "data" / "x_test.npy")[:5])


def test_logging_without_a_data_version_says_so(tmp_path):
    from flows._standalone import preprocessing

    with pytest.raises(FileNotFoundError, match="no data version"):
        preprocessing(tmp_path)
