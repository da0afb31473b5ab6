"""What every stage function receives: the project root, the params validated once, the parent run."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

from unlearning.console import LogFn

if TYPE_CHECKING:
    from unlearning.params import Params


@dataclass(frozen=True)
class StageContext:
    """Inputs common to every stage: `dvc repro` builds one per process, the Prefect flow one per run."""

    root: Path
    params: Params
    parent_run_id: str | None = None
    log: LogFn | None = None
