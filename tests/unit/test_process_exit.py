"""`flows.process_exit.exit_now`: the end of an `unlearn` process keeps what Python's shutdown guarantees."""

from __future__ import annotations

import subprocess
import sys
import textwrap
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]


def test_exit_now_joins_threads_runs_atexit_flushes_and_keeps_the_code(tmp_path):
    script = textwrap.dedent(f"""
        import atexit, threading, time
        from pathlib import Path
        from flows.process_exit import exit_now

        out = Path({str(tmp_path)!r})
        atexit.register(lambda: (out / "atexit").write_text("ran"))
        def late():
            time.sleep(0.3)
            (out / "thread").write_text("done")
        threading.Thread(target=late).start()
        print("x" * 200_000, end="")  # more than a pipe buffer: all of it must arrive
        exit_now(3)
    """)
    proc = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, cwd=REPO, timeout=60)
    assert proc.returncode == 3, proc.stderr
    assert len(proc.stdout) == 200_000
    assert (tmp_path / "atexit").read_text() == "ran"
    assert (tmp_path / "thread").read_text() == "done"


def test_the_console_command_exits_with_mains_code():
    proc = subprocess.run([sys.executable, "-m", "flows.cli", "methods"], capture_output=True, text=True, cwd=REPO,
                          timeout=120)
    assert proc.returncode == 0 and "finetune" in proc.stdout
    proc = subprocess.run([sys.executable, "-m", "flows.cli", "promote", "x"], capture_output=True, text=True,
                          cwd=REPO, timeout=120)
    assert proc.returncode == 2 and proc.stderr.startswith("error: VERSION must be a version number")


def test_exit_now_stops_executors_left_running_as_python_would():
    """An executor nobody shut down keeps a non-daemon thread waiting for work; Python's shutdown stops it
    first (threading's own atexit hooks), so must exit_now, or joining that thread hangs forever."""
    script = textwrap.dedent("""
        from concurrent.futures import ProcessPoolExecutor
        import multiprocessing
        from flows.process_exit import exit_now

        pool = ProcessPoolExecutor(max_workers=1, mp_context=multiprocessing.get_context("spawn"))
        assert pool.submit(abs, -4).result() == 4
        exit_now(0)
    """)
    proc = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, cwd=REPO, timeout=60)
    assert proc.returncode == 0, proc.stderr
