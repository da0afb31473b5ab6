"""What the Prefect UI shows of a pipeline run: its log lines and its artifacts.

An operator opens last night's flow run and must read what it did: which stages ran or were reused, how
long each took, which methods passed their gates and what moved to production. Prefect keeps the lines
logged through its run logger and the artifacts a run creates, and the UI shows both on the run's page.

`quiet_env` sets Prefect's log level to WARNING to keep the terminal quiet; that level would also drop the
INFO lines before they reach the API. `send_run_logs` lowers the level of the run loggers only and filters
the terminal back to what it showed before.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

RUN_LOGGERS = ("prefect.flow_runs", "prefect.task_runs")
# Keys of the artifacts of each pipeline run: Prefect keeps every version of a key (the UI links them).
RESULTS_KEY = "unlearning-results"
GATES_KEY = "gate-verdicts"


class _TerminalLevel(logging.Filter):
    """Drop run-logger records below `level` on a terminal handler; the API handler still gets them."""

    def __init__(self, level: int) -> None:
        super().__init__()
        self.level = level

    def filter(self, record: logging.LogRecord) -> bool:
        return record.levelno >= self.level or not record.name.startswith(RUN_LOGGERS)


def send_run_logs() -> None:
    """Let INFO lines of the run loggers reach Prefect's API, the terminal keeping Prefect's own level."""
    terminal = logging.getLogger("prefect").getEffectiveLevel()
    for name in RUN_LOGGERS:
        logging.getLogger(name).setLevel(min(logging.INFO, terminal))
    for handler in logging.getLogger().handlers:
        if not any(isinstance(f, _TerminalLevel) for f in handler.filters):
            handler.addFilter(_TerminalLevel(terminal))


def run_logger() -> logging.Logger | logging.LoggerAdapter:
    """Prefect's logger of the current flow or task run; a plain logger outside one (`task.fn()` in tests)."""
    from prefect import get_run_logger
    from prefect.exceptions import MissingContextError

    try:
        return get_run_logger()
    except MissingContextError:
        return logging.getLogger("flows.pipeline")


def how_it_ran(root: Path, stage: str, method: str | None) -> str:
    """`trained`, `reused (from run …)`, `unlearned`, ...: what the stage's `outputs/runs/` record says."""
    from .records import StageRun

    role = {"train_base": "base", "retrain_oracle": "oracle"}.get(stage)
    path = root / "outputs" / "runs" / f"{role}.json" if role else StageRun.path(root, stage, method)
    try:
        run = StageRun.read(path)
    except Exception:  # noqa: BLE001 - only a log line depends on it; version_data writes none
        return ""
    return run.source + (f" (from run {run.reused_from})" if run.reused_from else "")


def gate_rows(decision: Any) -> list[dict[str, str]]:
    """One row per method and gate: the method's overall outcome, the gate's verdict and its figures.

    A gate's tag reads `pass |forget acc - retrain| 9.59 <= 30 (95% CI ...)`: verdict, then the reason.
    """
    rows = []
    for method, gates in decision.gates.items():
        outcome = "passed" if method in decision.passing else "refused"
        for gate, tag in gates.items():
            verdict, _, reason = tag.partition(" ")
            rows.append({"method": method, "outcome": outcome, "gate": gate, "verdict": verdict, "detail": reason})
    for method, reason in decision.skipped.items():
        rows.append({"method": method, "outcome": "skipped", "gate": "-", "verdict": "-", "detail": reason})
    return rows


def log_decision(decision: Any) -> None:
    """The gate verdicts and the promotion as run log lines (one per method, then the outcome)."""
    log = run_logger()
    by_method: dict[str, list[dict[str, str]]] = {}
    for row in gate_rows(decision):
        by_method.setdefault(row["method"], []).append(row)
    for method, rows in by_method.items():
        gates = "; ".join(f"{r['gate']}: {r['verdict']} {r['detail']}" for r in rows if r["gate"] != "-")
        log.info("gates %s: %s (%s)", method, rows[0]["outcome"], gates or rows[0]["detail"])
    log.info("promotion: %s (production %s, previous %s)", decision.message, _version(decision.production),
             _version(decision.previous))


def _version(version: str | None) -> str:
    return f"v{version}" if version else "none"


def publish(decision: Any, parent_run_id: str) -> None:
    """The results table and the gate verdicts as artifacts of this flow run (Prefect UI: Artifacts).

    The HTML report (plots) is on the MLflow parent run and in outputs/runs/report.html.
    """
    from prefect.artifacts import create_markdown_artifact, create_table_artifact

    create_markdown_artifact(
        markdown=f"{decision.table}\n\nThe HTML report (plots) is `outputs/runs/report.html`, also logged on the "
                 f"MLflow parent run `{parent_run_id}`.", key=RESULTS_KEY,
        description=decision.message[:500])
    create_table_artifact(table=gate_rows(decision), key=GATES_KEY,
                          description=f"Gate verdicts per method and gate; production: {_version(decision.production)}")
