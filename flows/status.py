"""`unlearn status`: the deletion ledger of this dataset, the production version, whether it honours every
done request, and its lineage back to a trained model. A promotion a crash cut short is completed first.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from . import _registry as registry
from . import deletions
from .ledger import Ledger
from .production import reconcile, violations
from .settings import mask_credentials, registered_model_name, tracking_uri
from .tracking import setup_mlflow


def status(root: Path, params: Any) -> str:
    """The report of `unlearn status`: the ledger of this dataset, production, its lineage."""
    out: list[str] = []
    setup_mlflow(root, params)
    name = registered_model_name(params)
    ledger = Ledger(root, params)
    reconcile(ledger, params, name)  # a promotion a crash cut short is completed first
    reqs = deletions.load_all(ledger, params.data.name)
    pending = [r for r in reqs if r["status"] == "pending"]
    counts = {s: sum(r["status"] == s for r in reqs) for s in ("done", "refused", "cancelled")}
    out.append(f"deletion requests: {len(pending)} pending, {counts['done']} done, {counts['refused']} refused, "
               f"{counts['cancelled']} cancelled")
    for r in pending:
        what = f"{r.get('n_ids', '?')} ids" if r["kind"] == "ids" else f"classes {r.get('classes')}"
        out.append(f"  pending {r['hash']}  {r['dataset']}  {what}  since {r.get('created', '?')}")
    for r in reqs:
        if r["status"] == "refused":
            out.append(f"  refused {r['hash']}  reasons: {r.get('result', {}).get('reasons')}")
    prod = registry.alias_version(name, "production")
    if prod is None:
        out.append(f"production: none yet for {name} ({mask_credentials(tracking_uri(root, params))})")
        return "\n".join(out)
    tags = registry.version_tags(name, prod)
    out.append(f"production: {name} v{prod} (previous: v{registry.alias_version(name, 'previous') or '-'})")
    missing = violations(ledger, params, tags)
    n_done = counts["done"]
    if missing:  # only a move made outside unlearn (the MLflow UI, the API) can get here
        out.append(f"  WARNING: v{prod} does not honour {len(missing)} done deletion request(s): "
                   f"{', '.join(missing)}; it was moved outside unlearn. Promote a version that honours them "
                   "(unlearn promote VERSION)")
    elif n_done:
        out.append(f"  honours every done deletion request ({n_done})")
    for key in ("role", "method", "gates", "score", "promoted", "forced_by", "forced_reason", "data_hash",
                "request_hash", "requests", "honours", "data_touched", "run_id", "git_commit"):
        if tags.get(key):
            out.append(f"  {key:<13} {tags[key]}")
    base = tags.get("base_version")
    chain = []
    while base and registry.version_exists(name, base) and len(chain) < 20:
        bt = registry.version_tags(name, base)
        chain.append(f"v{base} ({bt.get('role')}{' ' + bt['method'] if bt.get('method') else ''}, "
                     f"data {bt.get('data_hash', '?')[:12]})")
        base = bt.get("base_version")
    if chain:
        out.append("  lineage       " + " <- ".join([f"v{prod}"] + chain))
    return "\n".join(out)
