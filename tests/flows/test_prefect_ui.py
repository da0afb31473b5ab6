"""What a run shows in Prefect: the gate table rows and log lines built from a decision, and run-logger
INFO lines that reach the API handler while the terminal stays at Prefect's configured level. Fast: no
server (the scheduled run on a real server is test_schedule_fires.py)."""

from __future__ import annotations

import logging
from types import SimpleNamespace

from flows.prefect_ui import RUN_LOGGERS, _TerminalLevel, gate_rows, send_run_logs

DECISION = SimpleNamespace(
    gates={"finetune": {"forget_acc_vs_oracle": "pass |forget acc - retrain| 1.20 <= 5 (95% CI -0.4 to +2.8)",
                        "retain_acc_drop": "pass retain acc drop 0.40 <= 2 (95% CI -0.1 to +0.9)"},
           "neggrad": {"forget_acc_vs_oracle": "pass |forget acc - retrain| 0.00 <= 5 (95% CI -1.2 to +1.2)",
                       "retain_acc_drop": "fail retain acc drop 73.20 > 2 across its 95% CI +71.8 to +74.6"}},
    passing=["finetune"], skipped={"unsir": "needs whole classes"}, production="4", previous=None,
    message="promoted finetune v4 to production")


def test_gate_rows_one_per_method_and_gate():
    rows = gate_rows(DECISION)
    assert len(rows) == 5
    fail = next(r for r in rows if r["method"] == "neggrad" and r["gate"] == "retain_acc_drop")
    assert fail == {"method": "neggrad", "outcome": "refused", "gate": "retain_acc_drop", "verdict": "fail",
                    "detail": "retain acc drop 73.20 > 2 across its 95% CI +71.8 to +74.6"}
    assert {r["outcome"] for r in rows if r["method"] == "finetune"} == {"passed"}
    assert [r for r in rows if r["method"] == "unsir"] == [
        {"method": "unsir", "outcome": "skipped", "gate": "-", "verdict": "-", "detail": "needs whole classes"}]


class _Keep(logging.Handler):
    def __init__(self) -> None:
        super().__init__()
        self.records: list[logging.LogRecord] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.records.append(record)


def test_run_log_info_reaches_the_api_but_not_the_terminal(monkeypatch):
    names = ("prefect", *RUN_LOGGERS)
    saved = {n: logging.getLogger(n).level for n in names}
    task_logger = logging.getLogger(RUN_LOGGERS[1])
    api, terminal = _Keep(), _Keep()
    monkeypatch.setattr(logging.getLogger(), "handlers", [terminal])
    logging.getLogger("prefect").setLevel(logging.WARNING)  # what quiet_env's PREFECT_LOGGING_LEVEL sets
    for name in RUN_LOGGERS:
        logging.getLogger(name).setLevel(logging.NOTSET)
    task_logger.addHandler(api)
    try:
        task_logger.info("dropped before: the run logger inherits WARNING")
        send_run_logs()
        send_run_logs()  # idempotent: one filter per handler
        task_logger.info("train_base: finished in 3.0 s")
        task_logger.warning("a warning still shows")
    finally:
        task_logger.removeHandler(api)
        for name, level in saved.items():  # setLevel also clears logging's level cache
            logging.getLogger(name).setLevel(level)
    assert [r.getMessage() for r in api.records] == ["train_base: finished in 3.0 s", "a warning still shows"]
    assert [r.getMessage() for r in terminal.records] == ["a warning still shows"]
    assert sum(isinstance(f, _TerminalLevel) for f in terminal.filters) == 1
