"""The deletion ledger: every request's body and state, kept in the tracking store every clone shares.

One MLflow run per request in the experiment `deletion-ledger` of the tracking store (beside the registry,
so a second clone or a worker with the same `MLFLOW_TRACKING_URI` sees the same requests). The run's tags
hold the state (`ledger.status`: pending, done, refused, cancelled; `ledger.result`: what the last change
did, as JSON); its body (dataset, kind, ids or classes) is a tag when it fits and always the artifact
`request.json`. A body is content-addressed: reading it back checks that it still hashes to its name, so
an edited entry is reported instead of trusted. Requests never become file paths.
"""

from __future__ import annotations

import datetime as dt
import json
import re
from collections.abc import Callable
from pathlib import Path
from typing import Any

EXPERIMENT = "deletion-ledger"
STATUSES = ("pending", "done", "refused", "cancelled")
HASH_RE = re.compile(r"^[0-9a-f]{12}$")
_BODY_TAG_LIMIT = 7000  # MLflow run tags hold 8000 characters; longer bodies live in the artifact only


class LedgerError(ValueError):
    """The ledger holds something it should not (an entry whose body does not match its hash)."""


def body_hash(body: dict[str, Any]) -> str:
    """Content hash of a request body (dataset, kind, ids or classes): its name everywhere."""
    from unlearning.hashing import content_hash

    return content_hash({k: body[k] for k in ("dataset", "kind", "ids", "classes") if k in body}, 12)


def valid_hashes(text: str | list[str] | None) -> list[str]:
    """Request hashes from a tag value or list; anything that is not a 12-hex hash is dropped (never a path)."""
    items = text.split(",") if isinstance(text, str) else list(text or [])
    return [h for h in (s.strip() for s in items) if HASH_RE.match(h)]


def _now() -> str:
    return dt.datetime.now(dt.UTC).isoformat(timespec="seconds")


def entry_from_tags(run_id: str, tags: dict[str, str], artifact_body: Callable[[], str]) -> dict[str, Any]:
    """One request from its ledger run's tags; `artifact_body()` reads a body too long for a tag.

    The body must still hash to the entry's name (else `LedgerError`): an edited entry is not trusted.
    """
    h = tags["ledger.hash"]
    raw = tags.get("ledger.body")
    body = json.loads(raw if raw is not None else artifact_body())
    if not HASH_RE.match(h) or body_hash(body) != h:
        raise LedgerError(f"deletion ledger entry {h!r} (run {run_id}) does not match its content "
                          "hash: the ledger was edited by hand; restore it or cancel that request")
    status = tags.get("ledger.status")
    if status not in STATUSES:
        raise LedgerError(f"deletion ledger entry {h}: unknown status {status!r}; expected one of {list(STATUSES)}")
    result = json.loads(tags["ledger.result"]) if tags.get("ledger.result") else None
    return {**body, "hash": h, "status": status, "created": tags.get("ledger.created", ""),
            "n_ids": int(tags["ledger.n_ids"]) if tags.get("ledger.n_ids") else None,
            "source": tags.get("ledger.source", ""), "result": result, "_runs": [run_id]}


def merge_entries(runs: list[tuple[str, dict[str, str]]], dataset: str | None,
                  entry: Callable[[str, dict[str, str]], dict[str, Any]]) -> list[dict[str, Any]]:
    """Entries of (run id, tags) pairs in start order (of `dataset`); a hash recorded twice counts once."""
    out: dict[str, dict[str, Any]] = {}
    for run_id, tags in runs:
        if dataset is not None and tags.get("ledger.dataset") != dataset:
            continue
        h = tags.get("ledger.hash", "")
        if h in out:
            out[h]["_runs"].append(run_id)
        else:
            out[h] = entry(run_id, tags)
    return sorted(out.values(), key=lambda r: (r.get("created", ""), r["hash"]))


class Ledger:
    """The requests of one tracking store. Writes that change a state are made under the registry lease."""

    def __init__(self, root: Path, params: Any):
        import mlflow

        from .settings import tracking_uri

        self.uri = tracking_uri(root, params)
        self._client: mlflow.MlflowClient | None = None
        self._exp_id: str | None = None

    @property
    def client(self):
        """The store's client, opened on first use (opening a new sqlite store creates it)."""
        if self._client is None:
            import mlflow

            from .sqlite_store import first_touch

            with first_touch(self.uri):  # a new sqlite store is created (migrated) by one process at a time
                self._client = mlflow.MlflowClient(self.uri)
                self._client.search_experiments(max_results=1)
        return self._client

    @staticmethod
    def existing(root: Path, params: Any) -> Ledger | None:
        """The ledger of a store that exists already; None for a sqlite file not created yet (no requests)."""
        from .settings import tracking_uri

        uri = tracking_uri(root, params)
        if uri.startswith("sqlite:///") and not Path(uri[len("sqlite:///"):]).exists():
            return None
        return Ledger(root, params)

    def exp_id(self, create: bool = False) -> str | None:
        """The ledger's experiment; created on the first request (reading never writes to the store)."""
        if self._exp_id is None:
            from .tracking import create_experiment

            exp = self.client.get_experiment_by_name(EXPERIMENT)
            if exp is not None:
                self._exp_id = exp.experiment_id
            elif create:
                self._exp_id = create_experiment(self.client, self.uri, EXPERIMENT)
        return self._exp_id

    # -- reading -------------------------------------------------------------------------------------
    def entries(self, dataset: str | None = None) -> list[dict[str, Any]]:
        """Every request (of `dataset`), oldest first; a hash recorded twice (two clones at once) counts once."""
        exp_id = self.exp_id()
        if exp_id is None:
            return []
        runs, token = [], None
        while True:
            page = self.client.search_runs([exp_id], filter_string="tags.`ledger.hash` != ''",
                                           max_results=1000, page_token=token,
                                           order_by=["attributes.start_time ASC"])
            runs.extend(page)
            token = page.token
            if not token:
                break
        by_id = {run.info.run_id: run for run in runs}
        return merge_entries([(run.info.run_id, run.data.tags) for run in runs], dataset,
                             lambda run_id, _tags: self._entry(by_id[run_id]))

    def _entry(self, run) -> dict[str, Any]:
        def artifact_body() -> str:
            import tempfile

            with tempfile.TemporaryDirectory() as tmp:
                return Path(self.client.download_artifacts(run.info.run_id, "request.json", tmp)).read_text()

        return entry_from_tags(run.info.run_id, run.data.tags, artifact_body)

    def get(self, request_hash: str) -> dict[str, Any] | None:
        return next((r for r in self.entries() if r["hash"] == request_hash), None)

    # -- writing -------------------------------------------------------------------------------------
    def add(self, body: dict[str, Any], *, n_ids: int, source: str) -> dict[str, Any]:
        """Record a new pending request; returns its entry."""
        h = body_hash(body)
        text = json.dumps(body, sort_keys=True)
        tags = {"ledger.hash": h, "ledger.dataset": body["dataset"], "ledger.kind": body["kind"],
                "ledger.status": "pending", "ledger.created": _now(), "ledger.n_ids": str(n_ids),
                "ledger.source": source[:500], "mlflow.runName": f"request {h}"}
        if len(text) <= _BODY_TAG_LIMIT:
            tags["ledger.body"] = text
        run = self.client.create_run(self.exp_id(create=True), run_name=f"request {h}", tags=tags)
        self.client.log_text(run.info.run_id, json.dumps(body, indent=2, sort_keys=True) + "\n", "request.json")
        self.client.set_terminated(run.info.run_id, "FINISHED")
        return {**body, "hash": h, "status": "pending", "created": tags["ledger.created"], "n_ids": n_ids,
                "source": tags["ledger.source"], "result": None, "_runs": [run.info.run_id]}

    def set_status(self, hashes: list[str], status: str, **result: Any) -> list[str]:
        """Set the state of requests and record why; returns the hashes found (unknown ones are skipped)."""
        if status not in STATUSES:
            raise ValueError(f"'status' must be one of {list(STATUSES)}; got {status!r}")
        wanted = set(valid_hashes(hashes))
        found = []
        note = json.dumps({**result, "status": status, "at": _now()}, default=str)[:7900]
        for entry in self.entries():
            if entry["hash"] not in wanted:
                continue
            for run_id in entry["_runs"]:
                self.client.set_tag(run_id, "ledger.result", note)
                self.client.set_tag(run_id, "ledger.status", status)
            found.append(entry["hash"])
        return found
