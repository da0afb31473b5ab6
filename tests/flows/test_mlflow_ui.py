"""The MLflow UI as a user opens it after a pipeline run: `mlflow server` on loopback, pages rendered by a
headless chromium (Debian package `chromium`), the text a user reads checked on each page.

Slow: a tiny pipeline run (about a minute), the server's start (11-17 s idle, STACK.md; more when busy) and
a browser. Skipped without chromium.
"""

from __future__ import annotations

import os

import pytest
from flowtest_utils import make_project, new_store

from bench.ui_screenshots import Browser, chromium, evaluate_runs_by_method, mlflow_server, ui_urls

pytestmark = [pytest.mark.slow,
              pytest.mark.skipif(chromium() is None, reason="no chromium on PATH (Debian: apt-get install chromium)")]

METHODS = ("finetune", "neggrad")  # the tiny project's methods (flowtest_utils.TINY)
# The first gate metrics by name (the compare page lists metrics alphabetically and renders the first ones).
GATES = ("gate/forget_acc_vs_oracle/verdict", "gate/forget_acc_vs_oracle/value", "gate/mia_vs_oracle/threshold")


@pytest.fixture(scope="module")
def ui(tmp_path_factory, mlflow_template, prefect_harness):
    """A tiny pipeline run, then its tracking store served by `mlflow server`, and a browser."""
    from flows.pipeline import unlearning_pipeline

    root = make_project(tmp_path_factory.mktemp("project"))
    uri = new_store(mlflow_template, root)
    old = os.environ.get("MLFLOW_TRACKING_URI")
    os.environ["MLFLOW_TRACKING_URI"] = uri
    try:
        unlearning_pipeline(root=str(root))
        with mlflow_server(uri, log=root / "mlflow-server.log") as base:
            browser = Browser()
            try:
                yield browser, ui_urls(base, uri, "unlearning", "digits-mlp")
            finally:
                browser.close()
    finally:
        if old is None:
            os.environ.pop("MLFLOW_TRACKING_URI", None)
        else:
            os.environ["MLFLOW_TRACKING_URI"] = old


def test_experiment_page_shows_model_training_runs_and_groups_them_by_method(ui):
    browser, urls = ui
    browser.goto(urls["experiment"])
    text = browser.wait_text("pipeline · digits/mlp", "Model training", "Group by")
    assert "Evaluation runs" not in text and "Agent versions" not in text  # not the GenAI navigation
    text = evaluate_runs_by_method(browser, urls)  # the evaluate runs, grouped by the `method` param
    assert all(f"Group: {m}" in text and f"evaluate[{m}]" in text for m in METHODS)


def test_compare_view_of_the_evaluate_runs_shows_method_and_numeric_gates(ui):
    browser, urls = ui
    assert sorted(urls["methods"].split(",")) == sorted(METHODS)
    browser.goto(urls["compare"])
    text = browser.wait_text("method", *METHODS, *GATES, "forget/acc", "neggrad.lr")
    assert "evaluate.seeds" in text


def test_registered_model_page_shows_production_and_each_methods_candidate(ui):
    browser, urls = ui
    browser.goto(urls["model"])
    browser.wait_text("digits-mlp", "production", *(f"candidate-{m}" for m in METHODS))
    browser.goto(urls["production"])
    browser.wait_text("Aliases", "@\xa0production", "Source Model", "gates", "passed")  # a no-break space after @
