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
