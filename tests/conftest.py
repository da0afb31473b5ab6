"""Shared fixtures: tiny real data (scikit-learn digits / diabetes), trained once per session.

Behaviour tests (a method forgets, a metric lands in a range) are marked `behaviour` and assert every
threshold through the `check` fixture, which records the measured value and its margin; the end of the run
prints them all, smallest relative margin first, so CI output shows how close each one is to flipping.
"""

from __future__ import annotations

import json
import math
import operator
import os
from dataclasses import asdict, dataclass
from pathlib import Path

import pytest
import torch

os.environ.setdefault("DVC_NO_ANALYTICS", "1")
os.environ.setdefault("DO_NOT_TRACK", "true")
# Tiny models gain nothing from intra-op threads; on a busy 2-core box extra threads made suites ~10x slower.
# TEST_TORCH_THREADS lets CI rerun the behaviour tests on another reduction order (2 threads).
torch.set_num_threads(int(os.environ.get("TEST_TORCH_THREADS", "1")))

SHARED_DATASETS = Path(__file__).resolve().parents[2] / "shared" / "datasets"


def pytest_addoption(parser: pytest.Parser) -> None:
    parser.addoption("--checks-json", metavar="PATH", help="also write every recorded behaviour check here")


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    """`gpu` tests skip themselves without CUDA; a `behaviour` test must assert through `check`."""
    unchecked = [i.nodeid for i in items if "behaviour" in i.keywords and "check" not in i.fixturenames]
    if unchecked:
        raise pytest.UsageError(f"behaviour tests that do not use the `check` fixture: {unchecked}")
    if torch.cuda.is_available():
        return
    skip = pytest.mark.skip(reason="needs CUDA")
    for item in items:
        if "gpu" in item.keywords:
            item.add_marker(skip)


# ----------------------------------------------------------------------------- behaviour checks

_OPS = {"<=": operator.le, "<": operator.lt, ">=": operator.ge, ">": operator.gt}
_RECORDS_KEY = pytest.StashKey[list]()


@dataclass(frozen=True)
class Check:
    """One threshold assertion on a measured quantity: `value op limit`."""

    test: str
    quantity: str
    value: float
    op: str
    limit: float

    @property
    def margin(self) -> float:
        """How far the value is from failing (negative: it failed)."""
        return self.limit - self.value if self.op[0] == "<" else self.value - self.limit

    @property
    def relative(self) -> float:
        """Margin as a fraction of the limit (of 1 for a limit of 0)."""
        return self.margin / (abs(self.limit) or 1.0)

    def passed(self) -> bool:
        return not math.isnan(self.value) and _OPS[self.op](self.value, self.limit)


class Checker:
    """`check(quantity, value, "<=", limit)`: records the check, then asserts it."""

    def __init__(self, test: str, records: list[Check]) -> None:
        self.test, self.records = test, records

    def __call__(self, quantity: str, value: float, op: str, limit: float) -> None:
        if op not in _OPS:
            raise ValueError(f"'op' must be one of {sorted(_OPS)}; got {op!r}")
        rec = Check(self.test, quantity, float(value), op, float(limit))
        self.records.append(rec)
        assert rec.passed(), f"{quantity} = {rec.value:.4g}, limit {op} {rec.limit:.4g}"


@pytest.fixture
def check(request: pytest.FixtureRequest) -> Checker:
    """The one way a behaviour test asserts a threshold (the test must be marked `behaviour`)."""
    if request.node.get_closest_marker("behaviour") is None:
        pytest.fail(f"{request.node.nodeid} uses `check` but is not marked `behaviour`", pytrace=False)
    return Checker(request.node.nodeid, request.config.stash.setdefault(_RECORDS_KEY, []))


def pytest_terminal_summary(terminalreporter, exitstatus: int, config: pytest.Config) -> None:
    """Every recorded check with its margin, smallest relative margin first."""
    records = sorted(config.stash.get(_RECORDS_KEY, []), key=lambda r: r.relative)
    path = config.getoption("--checks-json")
    if path:
        Path(path).write_text(json.dumps([{**asdict(r), "margin": r.margin, "relative": r.relative}
                                          for r in records], indent=1))
    if not records:
        return
    tr = terminalreporter
    tr.section(f"behaviour checks (cpu {torch.backends.cpu.get_cpu_capability()}, "
               f"{torch.get_num_threads()} torch threads)")
    tr.write_line(f"{'rel.margin':>10} {'margin':>9} {'value':>9}  {'limit':<10} quantity  [test]")
    for r in records:
        flag = "" if r.passed() else "  FAILED"
        tr.write_line(f"{r.relative:>10.1%} {r.margin:>9.4f} {r.value:>9.4f}  {r.op + ' ' + f'{r.limit:.4g}':<10} "
                      f"{r.quantity}  [{r.test}]{flag}")


# ----------------------------------------------------------------------------- data


@pytest.fixture(scope="session")
def shared_datasets() -> Path:
    """The local copy of public datasets beside the checkout; tests using it skip where it is absent."""
    if not SHARED_DATASETS.exists():
        pytest.skip(f"no local dataset copy at {SHARED_DATASETS} (only on the project's dev machines)")
    return SHARED_DATASETS


@pytest.fixture(scope="session")
def digits():
    from unlearning.datasets import load_dataset

    return load_dataset("digits")


@pytest.fixture(scope="session")
def diabetes():
    from unlearning.datasets import load_dataset

    return load_dataset("diabetes")
