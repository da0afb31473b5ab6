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


def test_every_weak_label_says_why_and_a_measured_one_cites_its_floor_run():
    """A measured label is a claim about numbers: it must point at the bench results that hold them."""
    import re
    from pathlib import Path

    root = Path(__file__).resolve().parents[2]
    reasons = {(row["name"], s): why for row in method_catalogue() for s, why in row["weak_on"].items()}
    assert reasons, "no method is labelled weak anywhere"
    for (name, scenario), why in reasons.items():
        assert "by design" in why or why.startswith("measured:"), f"{name} on {scenario}: say by design or measured"
        if "measured" in why:
            cited = re.findall(r"bench/results/[\w.*-]+\.json", why)
            assert cited, f"{name} on {scenario}: a measured label names its bench/results file"
            assert all(list(root.glob(c)) for c in cited), f"{name} on {scenario}: {cited} not in the repo"


def test_weak_on_must_name_a_scenario_the_method_runs_on():
    from unlearning.methods.base import MethodConfig, register_method

    with pytest.raises(ValueError, match="weak_on names scenarios it does not run on"):
        register_method("x", config=MethodConfig, needs=set(), scenarios={"class"}, weak_on={"random": "why"})


def test_sources_are_parsed_one_thread_at_a_time(monkeypatch, tmp_path):
    """CPython 3.11's ast.parse is not thread-safe (python/cpython#106905: "AST constructor recursion depth
    mismatch", seen in a pipeline run whose stage threads loaded params at once): every parse holds the lock."""
    import ast
    import shutil
    import types

    from unlearning import catalog

    held = []

    def parse(text, filename):
        held.append(catalog._parse_lock.locked())
        return ast.parse(text, filename=filename)

    monkeypatch.setattr(catalog, "ast", types.SimpleNamespace(**{**vars(ast), "parse": parse}))
    shutil.copy(catalog.METHODS_DIR / "neggrad.py", tmp_path)  # a directory not parsed before
    assert [r["name"] for r in method_catalogue(tmp_path)] == ["neggrad"]
    assert catalog.registered_names("model")
    assert held and all(held)


def test_the_catalogue_is_parsed_once_per_version_of_the_sources(monkeypatch, tmp_path):
    import os
    import shutil

    from unlearning import catalog

    parsed = []
    monkeypatch.setattr(catalog, "_parse", lambda path, name, parse=catalog._parse: parsed.append(name) or
                        parse(path, name))
    shutil.copy(catalog.METHODS_DIR / "neggrad.py", tmp_path)
    first = method_catalogue(tmp_path)
    first[0]["name"] = "changed by a caller"  # callers get copies
    assert method_catalogue(tmp_path)[0]["name"] == "neggrad" and len(parsed) == 1
    src = tmp_path / "neggrad.py"
    src.write_text(src.read_text().replace('"neggrad"', '"neggrad2"'))
    os.utime(src, ns=(src.stat().st_atime_ns, src.stat().st_mtime_ns + 10**9))  # an edit within one tick
    assert [r["name"] for r in method_catalogue(tmp_path)] == ["neggrad2"] and len(parsed) == 2
