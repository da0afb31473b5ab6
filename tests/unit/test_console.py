"""The console layer: throttled plain lines, rich bars on a terminal, ETAs, threads, and no heavy imports."""

from __future__ import annotations

import io
import re
import subprocess
import sys
import threading
from pathlib import Path

import pytest

from unlearning.console import Console, estimate_eta, format_duration

CONSOLE_PY = Path(__file__).resolve().parents[2] / "unlearning" / "console.py"


class FakeClock:
    """A clock the test moves by hand."""

    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


class FakeTerminal(io.StringIO):
    def isatty(self) -> bool:
        return True


def plain(clock: FakeClock | None = None) -> tuple[Console, io.StringIO]:
    out = io.StringIO()
    return Console(out, live=False, clock=clock or FakeClock()), out


def lines(out: io.StringIO) -> list[str]:
    return out.getvalue().splitlines()


def epochs_printed(out: io.StringIO) -> list[int]:
    return [int(m.group(1)) for m in re.finditer(r"epoch (\d+)/", out.getvalue())]


@pytest.mark.parametrize(("seconds", "text"), [
    (None, "?"), (float("nan"), "?"), (0, "0s"), (8.4, "8s"), (59.6, "1m00s"), (70, "1m10s"),
    (3599, "59m59s"), (3720, "1h02m"), (-3, "0s"),
])
def test_format_duration(seconds: float | None, text: str) -> None:
    assert format_duration(seconds) == text


def test_eta_is_unknown_at_the_first_step_then_the_average_rate() -> None:
    assert estimate_eta(0, 29, 0.0) is None  # the first event: nothing timed yet
    assert estimate_eta(0, 29, 5.0) is None
    assert estimate_eta(2, 29, 4.0) == pytest.approx(54.0)  # 2 s per step, 27 to go
    assert estimate_eta(29, 29, 60.0) == 0.0
    assert estimate_eta(31, 29, 60.0) == 0.0


def test_epoch_line_format_and_eta_from_the_first_event() -> None:
    clock = FakeClock()
    console, out = plain(clock)
    log = console.log_fn("unlearn[salun]")
    clock.now = 10.3  # set-up time before the first epoch is not charged to the epochs
    log({"stage": "salun", "epoch": 1, "epochs": 30, "loss": 0.5})
    clock.now = 12.3
    log({"stage": "salun", "epoch": 3, "epochs": 30, "loss": 0.123449, "forget_loss": 2.31})
    assert lines(out) == [
        "[  10.3s] unlearn[salun] salun: epoch 1/30 (ETA ?) loss 0.5",
        "[  12.3s] unlearn[salun] salun: epoch 3/30 (ETA 27s) loss 0.1234 forget loss 2.31",
    ]


def test_plain_epochs_are_throttled_to_one_line_per_2s_per_stage() -> None:
    clock = FakeClock()
    console, out = plain(clock)
    log = console.log_fn()
    for epoch in range(1, 31):
        clock.now = (epoch - 1) * 0.5
        log({"stage": "original", "epoch": epoch, "epochs": 30, "loss": 1.0})
    assert epochs_printed(out) == [1, 5, 9, 13, 17, 21, 25, 29, 30]


def test_first_and_last_epoch_always_printed_and_a_rerun_starts_afresh() -> None:
    console, out = plain()  # the clock never moves: only first and last pass the throttle
    log = console.log_fn()
    for _seed in range(2):
        for epoch in range(1, 6):
            log({"stage": "neggrad", "epoch": epoch, "epochs": 5, "loss": 1.0})
    assert epochs_printed(out) == [1, 5, 1, 5]
    log({"stage": "neggrad", "epoch": 1, "epochs": 5, "loss": 1.0})
    log({"stage": "neggrad", "epoch": 1, "epochs": 5, "loss": 1.0})  # a counter going back: a new run
    assert epochs_printed(out) == [1, 5, 1, 5, 1, 1]


def test_stages_and_labels_are_throttled_independently() -> None:
    console, out = plain()
    for label in ("unlearn[salun]", "unlearn[scrub]"):
        console.log_fn(label)({"stage": "x", "epoch": 1, "epochs": 9, "loss": 1.0})
    console.log_fn("unlearn[salun]")({"stage": "y", "epoch": 1, "epochs": 9, "loss": 1.0})
    assert [line.split("] ", 1)[1].split(":")[0] for line in lines(out)] == [
        "unlearn[salun] x", "unlearn[scrub] x", "unlearn[salun] y"]


def test_every_loss_key_is_shown_rounded_and_missing_losses_are_not_nan() -> None:
    console, out = plain()
    log = console.log_fn()
    log({"stage": "salun", "epoch": 1, "epochs": 2, "forget_loss": 2.3100001, "retain_loss": 0.123456})
    log({"stage": "scrub", "epoch": 1, "epochs": 2, "min_loss": 12345.6, "max_loss": None, "forget_error": 0.1})
    log({"stage": "gkt", "epoch": 1, "epochs": 2})
    log({"stage": "bad", "epoch": 1, "epochs": 2, "loss": float("nan")})  # a real NaN stays visible
    assert [line.split(": ", 1)[1] for line in lines(out)] == [
        "epoch 1/2 (ETA ?) forget loss 2.31 retain loss 0.1235",
        "epoch 1/2 (ETA ?) min loss 12346",
        "epoch 1/2 (ETA ?)",
        "epoch 1/2 (ETA ?) loss nan",
    ]


def test_other_events_are_one_short_line() -> None:
    console, out = plain()
    log = console.log_fn()
    log({"stage": "split", "dataset": "cifar10", "forget": 5000, "ratio": 0.0123456, "big": 1234.5,
         "forget_classes": [3], "ids": list(range(100)), "skipped": None, "ok": True})
    log({"stage": "unlearn", "method": "scrub", "seed": 0})
    log({"stage": "evaluate"})
    log({"score": 0.5})
    assert [line.split("] ", 1)[1] for line in lines(out)] == [
        "split: dataset=cifar10, forget=5000, ratio=0.0123, big=1234, forget_classes=[3], "
        "ids=[0, 1, 2, ... +97], ok=True",
        "unlearn: method=scrub, seed=0",
        "evaluate",
        "score=0.5",
    ]
    assert "nan" not in out.getvalue()


def test_label_prefixes_events_and_say() -> None:
    clock = FakeClock()
    console, out = plain(clock)
    clock.now = 1.25
    console.log_fn("unlearn[salun]")({"stage": "unlearn", "method": "salun", "seed": 1})
    console.say("champion is v3", label="promote")
    console.say("no label")
    assert lines(out) == ["[   1.2s] unlearn[salun] unlearn: method=salun, seed=1",
                          "[   1.2s] promote: champion is v3", "[   1.2s] no label"]


def test_plan_and_advance_print_stages_done_with_eta() -> None:
    clock = FakeClock()
    console, out = plain(clock)
    console.advance()  # no plan: nothing to count
    console.plan(12, "stages")
    clock.now = 40.1
    console.advance(5)
    clock.now = 50.0
    console.advance(7)
    assert lines(out) == ["[  40.1s] 5/12 stages done, ETA 56s", "[  50.0s] 12/12 stages done, ETA 0s"]


def test_many_threads_logging_give_whole_lines() -> None:
    out = io.StringIO()
    console = Console(out, live=False)

    def work(i: int) -> None:
        log = console.log_fn(f"unlearn[m{i}]")
        for seed in range(50):
            log({"stage": "unlearn", "method": f"m{i}", "seed": seed})
            log({"stage": f"m{i}", "epoch": 1, "epochs": 1, "loss": 0.5})

    threads = [threading.Thread(target=work, args=(i,)) for i in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    got = lines(out)
    assert len(got) == 8 * 50 * 2
    assert all(re.fullmatch(r"\[ *\d+\.\ds\] unlearn\[m\d\] (unlearn: method=m\d, seed=\d+|m\d: epoch 1/1 \(ETA \?\) loss 0\.5)",
                            line) for line in got)


def test_close_twice_context_manager_and_late_output() -> None:
    out = io.StringIO()
    with Console(out, live=False) as console:
        log = console.log_fn("late")
    console.close()
    late = threading.Thread(target=log, args=({"stage": "unlearn", "seed": 0},))
    late.start()
    late.join()
    assert "late unlearn: seed=0" in out.getvalue()
    out.close()
    log({"stage": "unlearn", "seed": 1})  # a closed stream: dropped, no crash
    console.say("still fine")


def strip_ansi(text: str) -> str:
    return re.sub(r"\x1b\[[0-9;?]*[A-Za-z]", "", text)


def test_live_bars_show_eta_and_losses(monkeypatch: pytest.MonkeyPatch) -> None:
    pytest.importorskip("rich")
    monkeypatch.setenv("COLUMNS", "200")  # rich sizes a non-tty file by COLUMNS: room for every column
    clock = FakeClock()
    out = io.StringIO()
    console = Console(out, live=True, clock=clock)
    log = console.log_fn("unlearn[salun]")
    console.plan(3, "stages")
    for epoch in (1, 2):
        clock.now = float(epoch)
        log({"stage": "salun", "epoch": epoch, "epochs": 10, "forget_loss": 2.3100001, "retain_loss": 0.123456})
    log({"stage": "unlearn", "method": "scrub", "seed": 0})
    console.advance()
    log({"stage": "finetune", "epoch": 3, "epochs": 3, "loss": 0.25})
    console.close()
    console.close()
    text = strip_ansi(out.getvalue())
    bar = [line for line in text.splitlines() if "unlearn[salun] salun" in line][-1]
    assert "2/10" in bar and "ETA 8s" in bar and "forget loss 2.31 retain loss 0.1235" in bar
    assert "1/3" in text and "ETA 4s" in text  # the overall bar: 1 of 3 stages in 2 s
    assert "unlearn[salun] unlearn: method=scrub, seed=0" in text  # a label is text, not rich markup
    assert "unlearn[salun] finetune: epoch 3/3 (ETA ?) loss 0.25" in text  # a finished stage stays as a line
    log({"stage": "unlearn", "seed": 1})  # after close: plain
    assert out.getvalue().endswith("unlearn[salun] unlearn: seed=1\n")


def test_auto_mode_needs_a_terminal_and_no_ci(monkeypatch: pytest.MonkeyPatch) -> None:
    pytest.importorskip("rich")
    monkeypatch.delenv("CI", raising=False)
    monkeypatch.delenv("UNLEARNING_PLAIN", raising=False)
    assert Console(FakeTerminal()).live
    assert not Console(io.StringIO()).live
    monkeypatch.setenv("CI", "true")
    assert not Console(FakeTerminal()).live
    monkeypatch.delenv("CI")
    monkeypatch.setenv("UNLEARNING_PLAIN", "1")
    assert not Console(FakeTerminal()).live


def test_without_rich_the_output_is_plain(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("CI", raising=False)
    monkeypatch.delenv("UNLEARNING_PLAIN", raising=False)
    monkeypatch.setitem(sys.modules, "rich", None)  # makes `import rich` fail
    for console in (Console(FakeTerminal()), Console(FakeTerminal(), live=True)):
        assert not console.live
        console.log_fn()({"stage": "salun", "epoch": 1, "epochs": 2, "loss": 0.5})
        console.close()
        assert console.stream.getvalue() == "[   0.0s] salun: epoch 1/2 (ETA ?) loss 0.5\n"


def test_the_module_imports_neither_torch_nor_rich() -> None:
    """Loaded on its own: `unlearning/__init__` itself pulls in torch (and scikit-learn pulls in rich)."""
    code = (
        "import importlib.util, io, sys\n"
        f"spec = importlib.util.spec_from_file_location('console', {str(CONSOLE_PY)!r})\n"
        "mod = importlib.util.module_from_spec(spec); sys.modules['console'] = mod; spec.loader.exec_module(mod)\n"
        "c = mod.Console(io.StringIO())\n"
        "c.log_fn('x')({'stage': 's', 'epoch': 1, 'epochs': 2, 'loss': 1.0}); c.plan(2, 'stages'); c.advance()\n"
        "c.close()\n"
        "print(','.join(sorted(n for n in sys.modules if n.split('.')[0] in ('torch', 'rich', 'numpy'))))\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == ""
