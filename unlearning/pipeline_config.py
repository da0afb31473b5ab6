"""The params sections only the pipeline layer (`flows/`) reads: where runs are tracked and where tasks run.

They are typed here, with the rest of params.yaml, so the file is validated once at load; the library
itself never acts on them.
"""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator


class _Section(BaseModel):
    """Immutable, unknown keys rejected: like `unlearning.config.Section`, which imports this module."""

    model_config = ConfigDict(frozen=True, extra="forbid")


class TrackingConfig(_Section):
    uri: str = "sqlite:///mlflow.db"
    experiment: str = "unlearning"
    # "service": the model deletion requests are served from. "experiment" (--set, `dvc exp run`; set by
    # flows.settings.load): registered as `<name>-exp`, never touching production or the ledger.
    namespace: Literal["service", "experiment"] = "service"


class OrchestrationConfig(_Section):
    """Where the pipeline's tasks run; results never depend on it (no stage depends on this section).

    `threads`: Prefect's thread pool in the driver process. `dask`: prefect-dask's task runner, on the Dask
    scheduler at `address` (`UNLEARN_DASK_ADDRESS` overrides) or, without one, on a local cluster of
    `workers` processes. `resources` are asked for by every unlearn, unlearn_seed and evaluate task (for
    example `{GPU: 1}`: one method per GPU at a time; the workers must declare them). `dvc_remote` is the DVC
    remote the data version is pushed to and workers pull from (`UNLEARN_DVC_REMOTE` overrides; a local path
    stands in for s3:// or gs://).
    """

    task_runner: Literal["threads", "dask"] = "threads"
    address: str | None = None
    workers: int = Field(2, ge=1)
    resources: dict[str, float] = Field(default_factory=dict)
    dvc_remote: str | None = None

    @field_validator("address")
    @classmethod
    def _scheduler_address(cls, v: str | None) -> str | None:
        if v is not None and not v.startswith(("tcp://", "tls://", "inproc://", "ucx://")):
            raise ValueError(f"'address' must be a Dask scheduler address such as tcp://host:8786; got {v!r}")
        return v
