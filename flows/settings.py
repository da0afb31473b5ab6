"""Where things are and how the pipeline is configured: environment, workspace paths, params, names.

Nothing here runs at import time: entry points call `quiet_env()` first (STYLE rule 5), and mlflow,
prefect and dvc are imported inside the functions that need them, so `python -m flows.stages` and
`unlearn --help` stay fast.
"""

from __future__ import annotations

import os
import re
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from unlearning.params import Params

# Measured on the 2-core machine (STACK.md): the temporary Prefect server needs more than its default 20 s
# to start; analytics off, or every start logs an ERROR about telemetry on an offline machine.
QUIET_ENV = {
    "PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS": "120",
    "PREFECT_SERVER_ANALYTICS_ENABLED": "false",
    "PREFECT_LOGGING_LEVEL": "WARNING",
    "DO_NOT_TRACK": "true",
    "DVC_NO_ANALYTICS": "1",
    "GIT_PYTHON_REFRESH": "quiet",
    "MLFLOW_ENABLE_ARTIFACTS_PROGRESS_BAR": "false",
    "MLFLOW_LOGGING_LEVEL": "WARNING",
    # log_model would copy uv.lock + pyproject.toml (0.5 MB) into every model: we pass pip_requirements.
    "MLFLOW_LOG_UV_FILES": "false",
    "MLFLOW_UV_AUTO_DETECT": "false",
    # MLflow prints "View run <name> at: <tracking URI>/#/..." when a run ends on a server: with the URI's
    # password, if it has one (measured with MLflow 3.17; tests/scale/test_stack.py).
    "MLFLOW_SUPPRESS_PRINTING_URL_TO_STDOUT": "true",
}

# Workspace layout (relative to the project root). DVC stage outs in dvc.yaml use the same paths.
DATA_DIR = "data"
SPLIT_FILE = "outputs/version_data/split.json"  # the SplitRecord
METRICS_DIR = "outputs/metrics"
PLOTS_DIR = "outputs/plots"
PROMOTE_FILE = "outputs/promote.json"
RECORD_FILE = "record.json"  # unlearn / evaluate outputs: the typed record of the stage
# Base and oracle outputs keep only what is stable when the model is reused (URI, version, key, training
# time): a reused model then leaves its DVC outs byte-identical and nothing downstream re-runs. What this
# pipeline run did (its run id, "reused") goes to outputs/runs/<role>.json, which DVC does not track.
MODEL_FILE = "model.json"
RUNS_DIR = "outputs/runs"
CHECKPOINT = "model.pt"
MEMBERSHIP_FILE = "membership.npz"  # outputs/oracle/: the retrains' per-sample log-odds (metrics.membership)


def quiet_env() -> None:
    """Offline-safe, quiet settings for Prefect, DVC and MLflow (kept when the user set them)."""
    for key, value in QUIET_ENV.items():
        os.environ.setdefault(key, value)
    import logging

    for name in ("alembic", "dvc", "httpx", "git"):
        logging.getLogger(name).setLevel(logging.WARNING)


def stage_dir(root: Path, stage: str, method: str | None = None) -> Path:
    """Output folder of a model-producing stage: outputs/base, outputs/oracle, outputs/unlearn/<m>, ..."""
    if stage in ("base", "oracle"):
        return root / "outputs" / stage
    if stage in ("unlearn", "evaluate"):
        return root / "outputs" / stage / str(method)
    raise ValueError(f"'stage' must be one of ['base', 'oracle', 'unlearn', 'evaluate']; got {stage!r}")


def metrics_file(root: Path, name: str) -> Path:
    """DVC metrics JSON of `name` (base, oracle or a method)."""
    return root / METRICS_DIR / f"{name}.json"


def load(root: Path, params_path: str | Path | None = "params.yaml", overrides: list[str] | None = None, *,
         methods: bool = True) -> Params:
    """params.yaml (relative to `root`) with `section.key=value` overrides -> typed `Params`, validated once.

    `methods=False`: `CoreParams` (method settings checked by name only), for commands that never run a
    method; it does not import torch, so `unlearn status` answers at once.

    Where dvc.yaml tracks each method's own section (`unlearn.<m>`), a listed method without a section
    in params.yaml would make DVC fail after the training; that is refused here, before anything runs.
    """
    from unlearning.params import ConfigError, parse_params, read_raw

    # A `--root` typo must not start a new project (an empty mlflow.db in a new folder): refuse it here.
    if not root.is_dir():
        raise ConfigError(f"project folder not found: {root} (check --root)")
    if str(params_path) == "params.yaml" and not any((root / f).exists() for f in ("params.yaml", "dvc.yaml")):
        raise ConfigError(f"{root} is not a project folder: it has neither params.yaml nor dvc.yaml (check --root)")
    path = Path(params_path) if params_path is not None else None
    if path is not None and not path.is_absolute():
        path = root / path
    if path is not None and not path.exists() and str(params_path) == "params.yaml":
        path = None  # built-in defaults where the project has no params.yaml
    raw = read_raw(path) if path is not None else {}
    params = parse_params(raw, overrides or [], methods=methods)
    if overrides or os.environ.get("DVC_EXP_BASELINE_REV"):  # `--set` or `dvc exp run`: not the service
        params = params.model_copy(update={"tracking": params.tracking.model_copy(update={"namespace": "experiment"})})
    if path is not None and not overrides and (root / "dvc.yaml").exists():
        missing = [m for m in params.unlearn.methods if m not in (raw.get("unlearn") or {})]
        if missing:
            raise ConfigError(f"unlearn.methods lists {missing} without a section in {path.name}; add "
                              f"`{missing[0]}: {{}}` under `unlearn:` (dvc.yaml tracks each method's own section)")
        if "seeds" in (raw.get("evaluate") or {}):  # dvc.yaml's per-seed stages come from `more_seeds`
            raise ConfigError(f"{path.name} gives evaluate.seeds; write `seed: <first>` and `more_seeds: [...]` "
                              "instead (dvc.yaml makes a stage per (method, more seed) from that list)")
    return params


def is_service(params: Params) -> bool:
    """Whether this run serves deletion requests (else it is an experiment: overrides or `dvc exp run`)."""
    return params.tracking.namespace == "service"


def registered_model_name(params: Params) -> str:
    """One registered model per dataset and architecture, e.g. `digits-mlp`; experiments use `digits-mlp-exp`."""
    return f"{params.data.name}-{params.model.name}" + ("" if is_service(params) else "-exp")


def workspace_root(root: Path) -> Path:
    """The project folder whose tracking store a run in `root` belongs to: `root` itself, except in a stage
    of `dvc exp run --temp` (or a queued experiment), which runs in a throw-away copy of the repository
    under `.dvc/tmp/exps/`: there it is the same folder of the workspace the experiment came from.

    DVC sets `DVC_STAGE` for every stage command and `DVC_ROOT` to the root of the workspace's DVC repo,
    also from inside an experiment's copy (dvc.repo.experiments.queue); the copy's own root is the
    nearest folder above `root` that holds `.dvc/`. Outside a DVC stage, or where that folder is missing
    in the workspace, `root` stays.
    """
    main = os.environ.get("DVC_ROOT")
    if not main or not os.environ.get("DVC_STAGE"):
        return root
    here = root.resolve()
    copy = next((p for p in (here, *here.parents) if (p / ".dvc").is_dir()), None)
    if copy is None:
        return root
    mapped = Path(main).resolve() / here.relative_to(copy)
    return mapped if mapped.is_dir() else root


def tracking_uri(root: Path, params: Params) -> str:
    """`MLFLOW_TRACKING_URI`, else `tracking.uri`, as an absolute URI: a relative sqlite path is taken
    relative to the project's workspace (`workspace_root`), so the runs of `dvc exp run --temp` land in
    the same mlflow.db as `unlearn run`, not in the experiment's temporary copy."""
    uri = os.environ.get("MLFLOW_TRACKING_URI") or params.tracking.uri
    prefix = "sqlite:///"
    if uri.startswith(prefix) and not uri[len(prefix):].startswith("/"):
        uri = prefix + str((workspace_root(root) / uri[len(prefix):]).resolve())
    return uri


# `scheme://user:password@host`: the password part of any URI in a text (MLflow's own errors quote the URI).
_CREDENTIALS = re.compile(r"(\b[A-Za-z][A-Za-z0-9+.-]*://[^/\s:@]*:)[^/\s@]+@")


def mask_credentials(text: str) -> str:
    """Hide passwords of URIs in `text`: `https://user:secret@host` -> `https://user:***@host`.

    Every tracking URI the CLI prints or logs goes through this (a URI without a password is unchanged).
    """
    return _CREDENTIALS.sub(r"\1***@", text)


def device_name(params: Params) -> str:
    from unlearning.utils import get_device

    return str(get_device(params.train.device))
