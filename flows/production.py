"""Registry moves of `production`: the pipeline's promotion, `unlearn promote VERSION`, `unlearn rollback`.

The version that held `production` keeps `previous`; the registered model's tag `production_history`
lists the versions that held it, so rollback can be repeated.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from . import _registry as registry
from . import deletions
from .settings import registered_model_name
from .tracking import setup_mlflow


def move_production(name: str, version: str, reason: str) -> str | None:
    """Point `production` at `version`; the replaced version keeps `previous`. Returns the replaced one."""
    current = registry.alias_version(name, "production")
    if current == str(version):
        return None
    registry.set_alias(name, "production", version)
    hist = registry.history(name)
    if current and (not hist or hist[-1] != current):
        hist.append(current)
    hist.append(str(version))
    registry.set_history(name, hist)
    if current:
        registry.set_alias(name, "previous", current)
    registry.set_tags(name, version, {"promoted": reason})
    return current


def promote_version(root: Path, params: Any, version: str, *, force: bool = False) -> str:
    """Move `production` to `version` by hand; refuses a gate-failed version unless `force`."""
    name = registered_model_name(params)
    setup_mlflow(root, params)
    if not registry.version_exists(name, version):
        raise ValueError(f"{name} has no version {version!r}")
    tags = registry.version_tags(name, version)
    if tags.get("gates") == "failed" and not force:
        raise ValueError(f"{name} v{version} failed its gates ({tags.get('gates.failed')}); use --force to "
                         "promote it anyway")
    replaced = move_production(name, str(version), "by hand (unlearn promote)" + (" --force" if force else ""))
    reqs = [h for h in tags.get("requests", "").split(",") if h]
    if reqs:
        deletions.mark(root, reqs, "done", registered_model=name, version=str(version), method=tags.get("method"),
                       data_hash=tags.get("data_hash"), request_hash=tags.get("request_hash"), by="unlearn promote")
    if replaced is None:
        return f"{name} v{version} is already in production"
    return f"{name} v{version} is now in production" + (f"; v{replaced} keeps 'previous'" if replaced else "")


def rollback(root: Path, params: Any) -> str:
    """Put the previous production version back; `previous` moves one step further back."""
    name = registered_model_name(params)
    setup_mlflow(root, params)
    current = registry.alias_version(name, "production")
    hist = registry.history(name)
    if current and hist and hist[-1] == current:
        hist = hist[:-1]
    prev = hist[-1] if hist else registry.alias_version(name, "previous")
    if not current or not prev:
        raise ValueError(f"{name}: nothing to roll back to (production: {current or 'none'}, previous: none)")
    registry.set_alias(name, "production", prev)
    registry.set_history(name, hist)
    registry.set_tags(name, current, {"rolled_back": "true"})
    before = hist[-2] if len(hist) >= 2 else None
    if before:
        registry.set_alias(name, "previous", before)
    else:
        registry.delete_alias(name, "previous")
    return f"{name}: production rolled back from v{current} to v{prev}" + (f"; previous is now v{before}" if before else "")
