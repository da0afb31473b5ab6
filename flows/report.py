"""The pipeline run's results, one way for every reader: the Markdown table (MLflow note, `results.md`, the
Prefect artifact) and the self-contained HTML report (`unlearning.report`), from one results dict of the
same shape as `python -m unlearning --out` writes.

The base model and each unlearned version are single models (bootstrap intervals over their samples); the
oracle row is the retrain band (a t interval over its training seeds).
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any

from .records import ModelRecord, SplitRecord, read_json
from .settings import CHECKPOINT, MODEL_FILE, RUNS_DIR, device_name, stage_dir

if TYPE_CHECKING:
    from unlearning.requests import Split
    from unlearning.verdicts import GateVerdict

REPORT_FILE = "report.html"  # under outputs/runs/: it names this run's versions, so DVC does not track it


def pipeline_results(params: Any, info: SplitRecord, split: Split, base: dict, band: list[dict] | None,
                     rows: dict[str, dict], gate_rows: dict[str, list[GateVerdict]],
                     skipped: dict[str, str]) -> dict[str, Any]:
    """The run's results dict: means with intervals, the gates, each method's verdict."""
    from unlearning.stats import rate_sizes, summarize
    from unlearning.steps import weak_methods
    from unlearning.verdicts import overall

    sizes = rate_sizes(split)
    results: dict[str, Any] = {
        "request": info.summary, "device": device_name(params), "complete": True,
        "speedup_reference": "oracle (retrain)" if band else "original training",
        "seeds": {"training": params.evaluate.training_seeds[:len(band or [])] or [params.train.seed],
                  "unlearning": params.evaluate.seeds},
        "original": summarize([base], sizes),
        # The evaluate stage's means and intervals (over unlearning seeds); bootstrap where a row has none.
        "methods": {m: r if "ci" in r else {**summarize([{k: v for k, v in r.items() if k != "version"}], sizes),
                                            "version": r.get("version")} for m, r in rows.items()},
        "gates": {m: [g.as_dict() for g in gs] for m, gs in gate_rows.items()},
        "verdicts": {m: overall(gs) for m, gs in gate_rows.items()},
        "weak": weak_methods(list(rows) + list(skipped), split.scenario),
    }
    results["methods"].update({m: {"skipped": reason} for m, reason in skipped.items()})
    if band:
        results["oracle"] = {**summarize(band, sizes), "runs": band}
    return results


def markdown(results: dict[str, Any], message: str) -> str:
    """The results table with the gate verdicts, the reasons of every gate that did not pass, the decision."""
    from unlearning.runner.table import format_table

    lines = ["# Unlearning pipeline results", "", "```", format_table(results), "```", ""]
    reasons = [f"- **{method}** v{results['methods'][method].get('version', '?')} ({results['verdicts'][method]}): "
               f"{g['name']}: {g['verdict']} {g['reason']}"
               for method, gs in results.get("gates", {}).items() for g in gs if g["verdict"] != "pass"]
    if reasons:
        lines += ["## Gates that did not pass", "", *reasons, ""]
    skipped = {m: r["skipped"] for m, r in results["methods"].items() if r.get("skipped")}
    if skipped:
        lines += ["Skipped (not applicable to this request): " + "; ".join(f"{m}: {r}" for m, r in skipped.items()), ""]
    lines += [f"**Decision:** {message}", ""]
    return "\n".join(lines)


def write_html(root: Path, params: Any, split: Split, results: dict[str, Any]) -> Path:
    """outputs/runs/report.html, with each model's distributions and per-class accuracy (checkpoints verified)."""
    from unlearning.report import model_details, write_report
    from unlearning.utils import get_device

    from . import _registry as registry

    device = get_device(params.evaluate.device)
    details: dict[str, Any] = {}
    for name, where in (("original", ("base",)), ("oracle", ("oracle",))):
        record_file, path = stage_dir(root, *where) / MODEL_FILE, stage_dir(root, *where) / CHECKPOINT
        record = ModelRecord.read(record_file) if record_file.exists() else None
        if record is not None and not record.skipped and path.exists():
            details[name] = model_details(registry.load_verified(path, record.checkpoint_sha256,
                                                                 str(path.relative_to(root)), device), split)
    for method in results["methods"]:
        path = stage_dir(root, "evaluate", method) / "details.json"
        if path.exists():
            details[method] = read_json(path)
    return write_report({**results, "details": details}, root / RUNS_DIR / REPORT_FILE)
