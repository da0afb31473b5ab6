"""The method catalogue that `unlearn methods` reads from the sources agrees with the registry itself."""

import pytest

from unlearning.catalog import DEFAULT_SCENARIOS, DEFAULT_TASKS, method_catalogue, summary
from unlearning.methods.base import ALL_SCENARIOS
from unlearning.steps import describe_methods


def test_catalogue_equals_the_registry():
    assert method_catalogue() == describe_methods()


def test_catalogue_defaults_are_register_methods_defaults():
    assert DEFAULT_SCENARIOS == sorted(ALL_SCENARIOS)
    assert DEFAULT_TASKS == ["classification"]


def test_summary_is_the_whole_first_paragraph():
    doc = """Perturb the weights, then move toward a retain-trained model until the forget set's
        accuracy falls to the held-out level.

        Details that are not the summary.
        """
    assert summary(doc) == ("Perturb the weights, then move toward a retain-trained model until the forget set's "
                            "accuracy falls to the held-out level.")
    assert all(row["summary"].endswith(".") for row in method_catalogue()), "a summary was cut mid-sentence"


def test_a_non_literal_registration_is_refused(tmp_path):
    (tmp_path / "m.py").write_text('NEEDS = {"forget"}\n\n@register_method("m", config=C, needs=NEEDS)\n'
                                   'def m(model, inputs, cfg):\n    """Does m."""\n')
    with pytest.raises(ValueError, match="m.py:4: register_method arguments must be literal"):
        method_catalogue(tmp_path)


def test_weak_by_design_methods_are_labelled_where_they_are_weak():
    from unlearning.runner.table import format_table
    from unlearning.steps import weak_methods

    assert set(weak_methods(["nabla_tau", "scrub"], "class")) == {"nabla_tau"}
    assert weak_methods(["nabla_tau", "scrub"], "random") == {}
    row = {"forget/acc": 0.9, "retain/acc": 1.0, "test/acc": 0.95}
    results = {"request": {"dataset": "digits", "description": "class 3", "forget": 1, "retain": 2, "hash": "h"},
               "original": row, "methods": {"nabla_tau": row, "scrub": row},
               "weak": weak_methods(["nabla_tau", "scrub"], "class")}
    lines = format_table(results).splitlines()
    assert any(line.startswith("nabla_tau (weak) ") for line in lines)
    assert any(line.startswith("scrub ") for line in lines)
    assert any(line.startswith("nabla_tau (weak): weak unlearning by design") for line in lines)


def test_weak_on_must_name_a_scenario_the_method_runs_on():
    from unlearning.methods.base import MethodConfig, register_method

    with pytest.raises(ValueError, match="weak_on names scenarios it does not run on"):
        register_method("x", config=MethodConfig, needs=set(), scenarios={"class"}, weak_on={"random": "why"})
