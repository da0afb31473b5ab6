"""Stage `register_and_promote`: gates, registry aliases, deletion-request bookkeeping.

Lifecycle (MLflow 3 aliases and version tags; the old stage transitions are deprecated):
- every unlearned version holds `candidate-<method>` from its unlearn stage;
- every gate says pass, fail or inconclusive against the retrain band (`unlearning.verdicts`: the oracles of
  `evaluate.training_seeds`, in outputs/metrics/oracle_band.json); a version that passes every gate gets
  `staging-<method>`; the decisions are version tags (`gates`: passed|failed|inconclusive, `score`, and
  `gates.failed`: the reasons, when not passed), numeric metrics of this stage's run, and `gates.json` (each
  gate's verdict, e.g. "pass |MIA - retrain| 3.1 <= 7.4 ...", and the headline metrics) on the version's own run;
- the best passing version (smallest average gap to the oracle, or without an oracle the smallest mean
  gate usage) becomes `production` (`production.move_production`). A failed or inconclusive gate moves
  no alias.
"""

from __future__ import annotations

import math
from typing import TYPE_CHECKING, Any

from . import _registry as registry
from . import deletions
from .context import StageContext
from .ledger import Ledger
from .production import move_production, violations
from .records import (
    EvalRecord,
    ModelRecord,
    PromotionRecord,
    StageRun,
    UnlearnRecord,
    read_json,
    write_json,
)
from .report import markdown, pipeline_results, write_html
from .settings import (
    MODEL_FILE,
    PROMOTE_FILE,
    RECORD_FILE,
    RUNS_DIR,
    metrics_file,
    registered_model_name,
    stage_dir,
)
from .summary_metrics import VERDICT_CODE, write_summary
from .tracking import RunInfo, flatten, setup_mlflow, stage_run

if TYPE_CHECKING:
    from unlearning.verdicts import GateVerdict


GATE_STATE = {"pass": "passed", "fail": "failed", "inconclusive": "inconclusive"}
GATES_FILE = "gates.json"  # an artifact of the run that made each gated version


def _gate_version(params: Any, name: str, method: str, version: str, metrics: dict[str, float], base: dict,
                  band: list[dict] | None, split: Any, runs: list[dict],
                  record: bool = True) -> tuple[list[GateVerdict], bool, float]:
    """Decide one version's gates against the retrain band and (with `record`) keep them as its tags;
    (verdicts, passed, score). `runs`: the method's unlearning seeds, all on the one base model."""
    from unlearning.stats import rate_sizes
    from unlearning.verdicts import decide_gates, overall, score

    mia_key = f"mia/entropy_{params.evaluate.mia_classifier}"
    results = decide_gates([{**r, "training_seed": "base"} for r in runs], [{"training_seed": "base", **base}], band,
                           params.promote.gates, scenario=split.scenario, sizes=rate_sizes(split), mia_key=mia_key)
    verdict = overall(results)
    ok = verdict == "pass"
    s = score(metrics, results)
    failed = "; ".join(f"{g.name}: {g.tag}" for g in results if not g.passed)
    if not results:
        failed = "no applicable gate in promote.gates"
    tags = {"gates": GATE_STATE[verdict], "score": f"{s:.4f}", **({"gates.failed": failed} if failed else {})}
    if record:
        registry.set_tags(name, version, tags)
        if not failed:  # a version gated again: an earlier run's reasons no longer hold
            registry.delete_tag(name, version, "gates.failed")
        _log_details(name, version, {**tags, "method": method, "verdicts": {g.name: g.tag for g in results},
                                     "metrics": {k: metrics[k] for k in ("forget/acc", "retain/acc", "test/acc",
                                                                         mia_key, "oracle/avg_gap") if k in metrics}})
        if ok:
            registry.set_alias(name, f"staging-{method}", version)
    return results, ok, s


def _log_details(name: str, version: str, details: dict[str, Any]) -> None:
    """What the version's tags leave out (each gate's verdict, the headline metrics) as `gates.json` of the
    run that made the version, with the promotion run that decided it: the registry page stays short."""
    import mlflow

    c = registry.client()
    run_id = c.get_model_version(name, version).run_id
    if run_id:
        active = mlflow.active_run()
        c.log_dict(run_id, {**details, "decided_by_run": active.info.run_id if active else None}, GATES_FILE)


def _band(root: Any, oracle: dict | None) -> list[dict] | None:
    """The retrained models' metrics (outputs/metrics/oracle_band.json); the one oracle where it is missing."""
    if oracle is None:
        return None
    path = metrics_file(root, "oracle_band")
    runs = read_json(path).get("runs") if path.exists() else None
    return runs or [{"training_seed": "oracle", **oracle}]


def _gate_metrics(method: str, results: list[GateVerdict]) -> dict[str, float]:
    """Each gate's decision as numbers: value, interval, threshold (points) and verdict (1 pass, 0.5
    inconclusive, 0 fail), so MLflow can chart and compare them as well as read the tags."""
    out: dict[str, float] = {}
    for g in results:
        key = f"gate/{method}/{g.name}"
        values = {"value": g.value, "ci_low": g.ci[0], "ci_high": g.ci[1], "threshold": g.threshold}
        out.update({f"{key}/{k}": float(v) for k, v in values.items() if math.isfinite(v)})
        out[f"{key}/verdict"] = VERDICT_CODE[g.verdict]
    return out


def _log_on_evaluate_run(root: Any, method: str, passed: bool, results: list[GateVerdict]) -> None:
    """The method's gates, as decided now, on the evaluate run that measured it (also when this run kept that
    stage unchanged): `gate/<gate>/...` and `gates/passed`, one name for every method, so a comparison of
    evaluate runs charts them side by side."""
    path = StageRun.path(root, "evaluate", method)
    last = StageRun.read(path) if path.exists() else None
    run_id = last and (last.run_id or last.reused_from)
    if run_id:
        prefix = f"gate/{method}/"
        RunInfo(run_id, "").log_metrics({"gates/passed": float(passed), **{
            "gate/" + k.removeprefix(prefix): v for k, v in _gate_metrics(method, results).items()}})


def register_and_promote(ctx: StageContext) -> PromotionRecord:
    """Gate every unlearned version of this run, move aliases, mark deletion requests; writes outputs/promote.json."""
    import mlflow

    from .version_data import load_split

    root, params, parent_run_id = ctx.root, ctx.params, ctx.parent_run_id
    split, info = load_split(root)
    name = registered_model_name(params)
    base = read_json(metrics_file(root, "base"))
    oracle_rec = ModelRecord.read(stage_dir(root, "oracle") / MODEL_FILE)
    oracle = None if oracle_rec.skipped else read_json(metrics_file(root, "oracle"))
    band = _band(root, oracle)
    rows: dict[str, dict[str, Any]] = {}
    gate_rows: dict[str, list[GateVerdict]] = {}
    passing: list[tuple[float, str, str]] = []
    skipped: dict[str, str] = {}
    foreign: dict[str, str] = {}  # method -> version of another registered model (see below)
    with stage_run(root, params, "register_and_promote", run_name="register_and_promote",
                   parent_run_id=parent_run_id, tags={**info.lineage(), "data_touched": "none"}) as run:
        mlflow.log_params(flatten(params.promote.model_dump(), "promote."))
        setup_mlflow(root, params)
        for method in params.unlearn.methods:
            rec = UnlearnRecord.read(stage_dir(root, "unlearn", method) / RECORD_FILE)
            if rec.skipped:
                skipped[method] = rec.reason or ""
                continue
            EvalRecord.read(stage_dir(root, "evaluate", method) / RECORD_FILE)  # evaluated in this run
            metrics = {k: v for k, v in read_json(metrics_file(root, method)).items() if v is not None}
            version, owner = str(rec.version), rec.registered_model or name
            if not registry.version_exists(owner, version):
                raise RuntimeError(f"{owner} v{version} (method {method}) is not in the tracking store "
                                   "(re-run its unlearn stage)")
            # Under `dvc exp run`, DVC may reuse an unlearn stage of a service run: that version belongs to
            # the service's registered model, which an experiment gates for its report but never tags or moves.
            ours = owner == name
            runs_path = stage_dir(root, "evaluate", method) / "runs.json"
            runs = read_json(runs_path)["runs"] if runs_path.exists() else [metrics]
            results, ok, s = _gate_version(params, name, method, version, metrics, base, band, split, runs,
                                           record=ours)
            if not ours:
                foreign[method] = f"{owner} v{version}"
            # A version a human rolled back is not put back in production by a later (scheduled) run.
            elif ok and registry.version_tags(name, version).get("rolled_back") != "true":
                passing.append((s, method, version))
            rows[method] = {**metrics, "version": version}
            gate_rows[method] = results
            mlflow.log_metrics({f"gates_passed/{method}": float(ok), **_gate_metrics(method, results)})
            _log_on_evaluate_run(root, method, ok, results)

        ledger = Ledger(root, params)
        previous = registry.alias_version(name, "production")
        # A passing version that does not honour every done deletion request (made before one was done)
        # can never hold production: the ledger wins over the gates.
        blocked = {m: violations(ledger, params, registry.version_tags(name, v)) for _, m, v in passing}
        blocked = {m: hs for m, hs in blocked.items() if hs}
        eligible = [p for p in passing if p[1] not in blocked]
        if eligible:
            s, method, version = min(eligible)
            replaced = move_production(ledger, params, name, version, f"pipeline run {parent_run_id or run.run_id}: "
                                       f"best of {len(eligible)} passing (score {s:.3f})")
            production = version
            if replaced is None:
                message = f"{method} v{version} is the best passing version and already in production"
            else:
                message = (f"promoted {method} v{version} to production"
                           + (f" (v{replaced} keeps 'previous')" if replaced else ""))
        else:
            production = previous
            message = ("no version passed the gates; aliases unchanged"
                       + (f" (production stays v{previous})" if previous else " (no production model yet)"))
        if foreign:
            message += ("; gated for this report only (registered under the service's model, reused by DVC): "
                        + ", ".join(f"{m} ({v})" for m, v in foreign.items()))
        if blocked:
            message += "; not promotable (would violate done deletion requests): " + "; ".join(
                f"{m} ({', '.join(hs)})" for m, hs in blocked.items())
        refused = {m: [f"{g.name}: {g.tag}" for g in gs if not g.passed] for m, gs in gate_rows.items()}
        refused = {m: r for m, r in refused.items() if r}
        if info.requests and not eligible:
            waiting = {r["hash"] for r in ledger.entries(params.data.name) if r["status"] == "pending"}
            deletions.mark(ledger, [h for h in info.requests if h in waiting], "refused", registered_model=name,
                           versions={m: rows[m]["version"] for m in rows}, reasons=refused,
                           run_id=parent_run_id or run.run_id, data_hash=info.data_hash)
        results = pipeline_results(params, info, split, base, band, rows, gate_rows, skipped)
        table = markdown(results, message)
        html = write_html(root, params, split, results)
        for path in write_summary(root, params, base, oracle, rows, gate_rows):  # DVC metrics, comparison plot
            mlflow.log_artifact(str(path))
        mlflow.log_artifact(str(html))
        record = PromotionRecord(production=production, previous=registry.alias_version(name, "previous"),
                                 promoted=bool(eligible) and production != previous, message=message,
                                 passing=[m for _, m, _ in sorted(eligible)], refused=refused, skipped=skipped,
                                 registered_model=name, run_id=run.run_id, table=table,
                                 gates={m: {g.name: g.tag for g in gs} for m, gs in gate_rows.items()})
        mlflow.log_text(table, "results.md")
        mlflow.log_dict({"decision": record.model_dump(exclude={"table"}), "methods": rows, "original": base,
                         "oracle": oracle}, "results.json")
        mlflow.set_tags({"production_version": str(production or ""), "mlflow.note.content": message})
        if parent_run_id:
            c = registry.client()
            c.log_text(parent_run_id, table, "results.md")
            c.log_artifact(parent_run_id, str(html))
            c.set_tag(parent_run_id, "production_version", str(production or ""))
            # MLflow keeps 8,000 characters of a tag: a long table is cut here, whole in results.md.
            c.set_tag(parent_run_id, "mlflow.note.content", table if len(table) <= 8000 else
                      table[:7900] + "\n\n... (cut: the whole table is the artifact results.md)")
    record.write(root / PROMOTE_FILE)
    write_json(root / RUNS_DIR / "register_and_promote.json",
               {"run_id": record.run_id, "promoted": record.promoted, "message": record.message, "table": table})
    return record
