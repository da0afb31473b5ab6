"""Typed records the stages hand each other, written as JSON files (DVC outs) and read back once.

A stage reads its inputs' records and writes its own; nothing is resolved or validated twice. Files are
written atomically with sorted keys (stable bytes: DVC hashes them); NaN and infinities become null.
"""

from __future__ import annotations

import json
import math
from collections.abc import Mapping
from pathlib import Path
from typing import Any, TypeVar

from pydantic import BaseModel, ConfigDict, Field, field_validator

from .settings import mask_credentials

RecordT = TypeVar("RecordT", bound="Record")


def _clean(obj: Any) -> Any:
    if isinstance(obj, float) and (math.isnan(obj) or math.isinf(obj)):
        return None
    if isinstance(obj, Mapping):
        return {str(k): _clean(v) for k, v in obj.items()}
    if isinstance(obj, list | tuple):
        return [_clean(v) for v in obj]
    return obj


def write_json(path: Path, obj: Any) -> Path:
    """Write JSON atomically, keys sorted (stable bytes: DVC hashes these files); nan -> null."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(path.suffix + ".tmp")
    tmp.write_text(json.dumps(_clean(obj), indent=2, sort_keys=True) + "\n")
    tmp.replace(path)
    return path


def read_json(path: Path) -> Any:
    return json.loads(Path(path).read_text())


class Record(BaseModel):
    """Base of every stage record: immutable, unknown keys rejected, JSON on disk."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    def write(self, path: Path) -> Path:
        return write_json(path, self.model_dump(mode="json"))

    @classmethod
    def read(cls: type[RecordT], path: Path) -> RecordT:
        path = Path(path)
        if not path.exists():
            raise FileNotFoundError(f"{path}: no {cls.__name__} here; run the stage that writes it first")
        return cls.model_validate(read_json(path))


class SplitRecord(Record):
    """What `version_data` resolved, once: the data version and the exact ids of this run's split."""

    dataset: str
    data_hash: str
    source: str  # "params" | "deletion requests"
    requests: list[str]  # hashes of the pending deletion requests this run forgets
    request: dict[str, Any]  # the effective request, as given (for people and MLflow)
    request_hash: str
    scenario: str
    description: str
    forget_ids: list[int]
    removed_ids: list[int]  # deleted by earlier (done) requests: in neither forget nor retain
    removed_requests: list[str] = []  # hashes of those done requests (gone from data/)
    val_ids: list[int]
    forget_test_ids: list[int] | None
    forget_classes: list[int] | None
    summary: dict[str, Any]

    def lineage(self, forgets: bool = True) -> dict[str, str]:
        """Tags that tie a run or a model version to this data version and request.

        `honours` lists the deletion requests a model made from this split honours: those gone from the
        data and, unless it was trained on the full data (`forgets=False`: the base model), this run's own.
        """
        honours = sorted(set(self.removed_requests) | (set(self.requests) if forgets else set()))
        return {"data_hash": self.data_hash, "request_hash": self.request_hash, "requests": ",".join(self.requests),
                "honours": ",".join(honours)}


class ModelRecord(Record):
    """A base or oracle model (DVC out). Only what is stable when the model is reused, so a reused model
    leaves the file byte-identical and nothing downstream reruns."""

    role: str  # "base" | "oracle"
    skipped: bool = False
    reason: str | None = None
    model_uri: str | None = None
    model_id: str | None = None
    registered_model: str | None = None
    version: str | None = None
    key: str | None = None
    time_s: float | None = None
    checkpoint_sha256: str | None = None  # of model.pt, as saved; every fetch and local read verifies it
    from_production: bool = False
    data_hash: str | None = None
    request_hash: str | None = None
    requests: str = ""
    honours: str = ""


class StageRun(Record):
    """What one run of a stage did (not tracked by DVC: it changes every run).

    Written to `outputs/runs/<role>.json` (base, oracle) and `outputs/runs/<stage>-<method>.json`."""

    stage: str
    run_id: str | None = None
    source: str = ""  # trained | reused | production vN | skipped | unchanged
    tracking_uri: str = ""  # as shown to people: a password in it is masked (flows.settings.mask_credentials)
    reused_from: str | None = None  # the run that made the model this run reused

    @field_validator("tracking_uri")
    @classmethod
    def _no_password(cls, v: str) -> str:
        return mask_credentials(v)

    @staticmethod
    def path(root: Path, stage: str, method: str | None = None) -> Path:
        """`outputs/runs/<stage>[-<method>].json`."""
        return Path(root) / "outputs" / "runs" / (f"{stage}-{method}.json" if method else f"{stage}.json")


class MethodRecord(Record):
    """What the per-method stages share: the method, whether it was skipped, the lineage. Content only
    (DVC outs): the MLflow run of a stage is in its `StageRun`, so an identical rerun leaves these unchanged."""

    method: str
    skipped: bool = False
    reason: str | None = None
    data_hash: str = ""
    request_hash: str = ""
    requests: str = ""
    honours: str = ""


class UnlearnRecord(MethodRecord):
    """One method's unlearned model (the same bytes whether made in this run or reused by key), or why the
    method was skipped."""

    model_uri: str | None = None
    model_id: str | None = None
    registered_model: str | None = None
    version: str | None = None
    key: str | None = None  # content key: hash(base checkpoint, data, request, method, its config, seed)
    checkpoint_sha256: str | None = None
    time_s: float | None = None  # measured when the version was made (also when reused)
    touched: list[str] = []
    base_version: str | None = None
    # Always empty: the other unlearning seeds have their own stages and records (SeedRecord). Kept so that
    # records written before still read and this record's bytes (a DVC out) stay as they were.
    seed_runs: list[dict[str, Any]] = []


class SeedRecord(MethodRecord):
    """One more unlearning seed of a method (`unlearn_seed[<method>/seed-<seed>]`): its model, kept beside the
    registered one for the evaluate stage's interval over seeds, never registered (only the first seed serves)."""

    seed: int
    checkpoint_sha256: str | None = None
    time_s: float | None = None


class EvalRecord(MethodRecord):
    """The scoring of one unlearned model (its metrics are the DVC metrics file beside it)."""

    model_version: str | None = None
    checkpoint_sha256: str | None = None  # of the scored model
    metrics_file: str | None = None


class PromotionRecord(Record):
    """The decision of `register_and_promote`.

    The file (a DVC out) holds the resulting state only. What this run did (moved production or found it
    in place, its message and table, its MLflow run) is kept out of it and written to
    `outputs/runs/register_and_promote.json`: a rerun with nothing changed leaves dvc.lock as it was.
    """

    production: str | None
    previous: str | None
    promoted: bool = Field(exclude=True)
    message: str = Field(exclude=True)
    passing: list[str]
    refused: dict[str, list[str]]
    skipped: dict[str, str]
    registered_model: str
    run_id: str | None = Field(default=None, exclude=True)
    gates: dict[str, dict[str, str]]
    table: str = Field(exclude=True)  # the results and gates as Markdown
