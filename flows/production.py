"""Moves of `production`, and the invariant they keep: production honours every deletion request marked done.

Each registered version carries the requests it honours (tag `honours`: the hashes of the requests whose
samples were gone from its training data or unlearned by it). `production` moves (the pipeline's
promotion, `unlearn promote`, `unlearn rollback`) only to a version that honours every `done` request of
the ledger; anything else is refused with the requests it would violate.

One write is the commit point of every move: setting the `production` alias. What follows from it is
rolled forward by `reconcile`, which runs right after each move and at the start of every run, promote and
rollback: the history tag and `previous` alias are brought in line with `production`, and each pending or
refused request that the production version honours is marked done. A crash before the alias write
leaves nothing changed; a crash after it leaves a state `reconcile` completes. So a request can never be
done while production does not honour it, nor honoured by production and processed a second time.
"""

from __future__ import annotations

import getpass
import socket
from pathlib import Path
from typing import Any

from . import _registry as registry
from . import deletions
from .faults import crash_point
from .ledger import Ledger, valid_hashes
from .settings import is_service, registered_model_name
from .tracking import setup_mlflow


class PromotionRefused(ValueError):
    """A move of `production` that the gates or the ledger forbid; the message says why and the way out."""


def honoured(tags: dict[str, str]) -> set[str]:
    """Requests a version honours, from its tags (a version without the tag honours none)."""
    return set(valid_hashes(tags.get("honours", "")))


def violations(ledger: Ledger, params: Any, tags: dict[str, str]) -> list[str]:
    """Done requests of this dataset that a version with `tags` does not honour."""
    done = [r["hash"] for r in ledger.entries(params.data.name) if r["status"] == "done"]
    have = honoured(tags)
    return [h for h in done if h not in have]


def _refuse_violation(name: str, version: str, missing: list[str], what: str) -> None:
    if missing:
        shown = ", ".join(missing[:5]) + (f" (+{len(missing) - 5} more)" if len(missing) > 5 else "")
        raise PromotionRefused(f"{what} refused: {name} v{version} does not honour {len(missing)} deletion "
                               f"request(s) marked done ({shown}); it was trained on or before their data. "
                               "Promote a version made after them (`unlearn status` shows the ledger)")


def reconcile(ledger: Ledger, params: Any, name: str) -> list[str]:
    """Roll forward what follows a `production` move; idempotent. Returns the request hashes marked done."""
    prod = registry.alias_version(name, "production")
    if prod is None:
        return []
    tags = registry.version_tags(name, prod)
    if tags.get("rolled_back") == "true":  # a rollback stopped before it moved the alias
        registry.delete_tag(name, prod, "rolled_back")
    hist = registry.history(name)
    if not hist or hist[-1] != prod:
        cut = len(hist) - 1 - hist[::-1].index(prod) if prod in hist else None
        tail = hist[cut + 1:] if cut is not None else []
        if cut is not None and all(registry.version_tags(name, v).get("rolled_back") == "true" for v in tail):
            hist = hist[:cut + 1]  # a rollback moved the alias, then stopped
        else:
            hist.append(prod)  # a promotion moved the alias, then stopped
        registry.set_history(name, hist)
    if len(hist) >= 2:
        if registry.alias_version(name, "previous") != hist[-2]:
            registry.set_alias(name, "previous", hist[-2])
    else:
        registry.delete_alias(name, "previous")
    if not is_service(params):
        return []
    waiting = [r["hash"] for r in ledger.entries(params.data.name) if r["status"] in ("pending", "refused")]
    to_mark = [h for h in waiting if h in honoured(tags)]
    if to_mark:
        deletions.mark(ledger, to_mark, "done", registered_model=name, version=prod, method=tags.get("method"),
                       run_id=tags.get("run_id"), data_hash=tags.get("data_hash"), by=tags.get("promoted", ""))
    return to_mark


def needs_reconcile(store: Any, params: Any, name: str) -> bool:
    """Whether `reconcile` would write anything: a move of `production` that a crash cut short.

    `store` reads the registry and ledger (`flows.store_sql.SqliteStore`, or the MLflow-backed reader of
    `flows.status`): `unlearn status` reads without MLflow when nothing needs rolling forward.
    """
    prod = store.alias_version(name, "production")
    if prod is None:
        return False
    tags = store.version_tags(name, prod)
    hist = store.history(name)
    if tags.get("rolled_back") == "true" or not hist or hist[-1] != prod:
        return True
    if store.alias_version(name, "previous") != (hist[-2] if len(hist) >= 2 else None):
        return True
    if not is_service(params):
        return False
    waiting = [r["hash"] for r in store.entries(params.data.name) if r["status"] in ("pending", "refused")]
    return any(h in honoured(tags) for h in waiting)


def move_production(ledger: Ledger, params: Any, name: str, version: str, reason: str) -> str | None:
    """Point `production` at `version` if it honours the ledger; returns the replaced version (None: no move)."""
    version = str(version)
    reconcile(ledger, params, name)
    current = registry.alias_version(name, "production")
    if current == version:
        return None
    tags = registry.version_tags(name, version)
    _refuse_violation(name, version, violations(ledger, params, tags), "promotion")
    registry.set_tags(name, version, {"promoted": reason})
    registry.set_alias(name, "production", version)  # the commit point
    crash_point("promote:alias")
    reconcile(ledger, params, name)
    return current or ""


def who() -> str:
    """`user@host` of this process: recorded with a forced promotion, a rollback, a cancel."""
    try:
        user = getpass.getuser()
    except (KeyError, OSError):
        user = "unknown"
    return f"{user}@{socket.gethostname()}"


def promote_version(root: Path, params: Any, version: str, *, force: bool = False, reason: str | None = None) -> str:
    """Move `production` to `version` by hand: only a gate-passed version, unless `force` (with a reason)."""
    name = registered_model_name(params)
    version = str(version).removeprefix("v")
    if not version.isdigit():
        raise PromotionRefused(f"VERSION must be a version number such as 7; got {version!r}")
    if force and not (reason or "").strip():
        raise PromotionRefused("--force needs --reason TEXT (recorded on the version with who forced it)")
    setup_mlflow(root, params)
    if not registry.version_exists(name, version):
        raise PromotionRefused(f"{name} has no version {version}")
    ledger = Ledger(root, params)
    reconcile(ledger, params, name)
    tags = registry.version_tags(name, version)
    _refuse_violation(name, version, violations(ledger, params, tags), "promotion")
    gates = tags.get("gates")
    if gates != "passed" and not force:
        why = (f"it failed its gates ({tags.get('gates.failed')})" if gates == "failed" else
               f"its gates were inconclusive ({tags.get('gates.failed')})" if gates == "inconclusive" else
               f"it was never gated (role {tags.get('role', '?')}; only unlearned versions of a finished run are)")
        raise PromotionRefused(f"{name} v{version}: {why}; use --force --reason TEXT to promote it anyway")
    if force:
        registry.set_tags(name, version, {"forced_by": who(), "forced_reason": reason.strip()[:500]})
    how = "by hand (unlearn promote" + (" --force" if force else "") + f") by {who()}"
    replaced = move_production(ledger, params, name, version, how)
    if replaced is None:
        earlier = tags.get("promoted") or "by the pipeline"
        return f"{name} v{version} is already in production (promoted: {earlier}); nothing moved"
    return f"{name} v{version} is now in production" + (f"; v{replaced} keeps 'previous'" if replaced else "")


def rollback(root: Path, params: Any) -> str:
    """Put the previous production version back, if it honours every done deletion request."""
    name = registered_model_name(params)
    setup_mlflow(root, params)
    ledger = Ledger(root, params)
    reconcile(ledger, params, name)
    current = registry.alias_version(name, "production")
    hist = registry.history(name)
    prev = hist[-2] if len(hist) >= 2 else None
    if not current or not prev:
        raise PromotionRefused(f"{name}: nothing to roll back to (production: "
                               f"{'v' + current if current else 'none'}, previous: none)")
    _refuse_violation(name, prev, violations(ledger, params, registry.version_tags(name, prev)), "rollback")
    registry.set_tags(name, current, {"rolled_back": "true", "rolled_back_by": who()})  # intent
    registry.set_alias(name, "production", prev)  # the commit point
    reconcile(ledger, params, name)
    before = registry.alias_version(name, "previous")
    return f"{name}: production rolled back from v{current} to v{prev}" + (f"; previous is now v{before}" if before else "")
