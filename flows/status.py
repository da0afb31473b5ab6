"""`unlearn status`: the deletion ledger of this dataset, the production version, whether it honours every
done request, and its lineage back to a trained model. A promotion a crash cut short is completed first.

`status_report` gathers it as plain data (what `unlearn status --json` prints); `render` is the text.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from . import _registry as registry
from .ledger import Ledger
from .production import needs_reconcile, reconcile, violations
from .settings import mask_credentials, registered_model_name, tracking_uri
from .store_sql import NotReadable, SqliteStore
from .tracking import setup_mlflow

SHOWN_TAGS = ("role", "method", "gates", "score", "promoted", "forced_by", "forced_reason", "data_hash",
              "request_hash", "requests", "honours", "data_touched", "run_id", "git_commit")


def _lineage(store: Any, name: str, tags: dict[str, str]) -> list[dict[str, Any]]:
    chain, base = [], tags.get("base_version")
    while base and store.version_exists(name, base) and len(chain) < 20:
        bt = store.version_tags(name, base)
        chain.append({"version": base, "role": bt.get("role"), "method": bt.get("method"),
                      "data_hash": bt.get("data_hash")})
        base = bt.get("base_version")
    return chain


class _MlflowStore:
    """The reads `status_report` makes, through MLflow (any store; may create a new sqlite one)."""

    def __init__(self, ledger: Ledger):
        self.entries = ledger.entries
        self.alias_version = registry.alias_version
        self.version_exists = registry.version_exists
        self.version_tags = registry.version_tags
        self.history = registry.history


def status_report(root: Path, params: Any) -> dict[str, Any]:
    """The ledger of this dataset, production (version, tags, honoured requests) and its lineage.

    A local sqlite store is read directly (no MLflow import: about 0.3 s instead of 5 s) unless a move of
    `production` was cut short; then, or for any other store, MLflow reads it and rolls the move forward.
    """
    uri, name = tracking_uri(root, params), registered_model_name(params)
    try:
        store = SqliteStore(uri)
        try:
            if not needs_reconcile(store, params, name):
                return _report(store, params, name, uri)
        finally:
            store.close()
    except NotReadable:
        pass
    setup_mlflow(root, params)
    ledger = Ledger(root, params)
    reconcile(ledger, params, name)  # a promotion a crash cut short is completed first
    return _report(_MlflowStore(ledger), params, name, uri)


def _report(store: Any, params: Any, name: str, uri: str) -> dict[str, Any]:
    reqs = store.entries(params.data.name)
    out: dict[str, Any] = {
        "registered_model": name, "tracking_uri": mask_credentials(uri),
        "requests": {s: sum(r["status"] == s for r in reqs) for s in ("pending", "done", "refused", "cancelled")},
        "pending": [{k: r.get(k) for k in ("hash", "dataset", "kind", "n_ids", "classes", "created")}
                    for r in reqs if r["status"] == "pending"],
        "refused": [{"hash": r["hash"], "reasons": (r.get("result") or {}).get("reasons")}
                    for r in reqs if r["status"] == "refused"],
        "production": None}
    prod = store.alias_version(name, "production")
    if prod is None:
        return out
    tags = store.version_tags(name, prod)
    out["production"] = {"version": prod, "previous": store.alias_version(name, "previous"),
                         "violates": violations(store, params, tags),
                         "tags": {k: tags[k] for k in SHOWN_TAGS if tags.get(k)},
                         "lineage": _lineage(store, name, tags)}
    return out


def render(report: dict[str, Any]) -> str:
    """`status_report` as the lines `unlearn status` prints."""
    n = report["requests"]
    out = [f"deletion requests: {n['pending']} pending, {n['done']} done, {n['refused']} refused, "
           f"{n['cancelled']} cancelled"]
    for r in report["pending"]:
        what = f"{r.get('n_ids') or '?'} ids" if r["kind"] == "ids" else f"classes {r.get('classes')}"
        out.append(f"  pending {r['hash']}  {r['dataset']}  {what}  since {r.get('created') or '?'}")
    out += [f"  refused {r['hash']}  reasons: {r['reasons']}" for r in report["refused"]]
    name, prod = report["registered_model"], report["production"]
    if prod is None:
        out.append(f"production: none yet for {name} ({report['tracking_uri']})")
        return "\n".join(out)
    previous = f"v{prod['previous']}" if prod["previous"] else "none"
    out.append(f"production: {name} v{prod['version']} (previous: {previous})")
    if prod["violates"]:  # only a move made outside unlearn (the MLflow UI, the API) can get here
        out.append(f"  WARNING: v{prod['version']} does not honour {len(prod['violates'])} done deletion "
                   f"request(s): {', '.join(prod['violates'])}; it was moved outside unlearn. Promote a version "
                   "that honours them (unlearn promote VERSION)")
    elif n["done"]:
        out.append(f"  honours every done deletion request ({n['done']})")
    out += [f"  {key:<13} {value}" for key, value in prod["tags"].items()]
    if prod["lineage"]:
        chain = [f"v{b['version']} ({b['role']}{' ' + b['method'] if b['method'] else ''}, "
                 f"data {(b['data_hash'] or '?')[:12]})" for b in prod["lineage"]]
        out.append("  lineage       " + " <- ".join([f"v{prod['version']}"] + chain))
    return "\n".join(out)


def status(root: Path, params: Any) -> str:
    """The report of `unlearn status` as text."""
    return render(status_report(root, params))
