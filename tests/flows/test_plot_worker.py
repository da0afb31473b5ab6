"""The flow's plot worker draws figures in another process, and the caller draws them when it cannot."""

from __future__ import annotations

import os

import numpy as np

from flows import plot_worker
from flows.plots import _save_confusion, _save_hist


def _pid() -> int:
    return os.getpid()


def _die_in_worker(parent: int) -> str:
    if os.getpid() != parent:
        os._exit(1)  # the worker dies mid-figure
    return "drawn here"


def test_figures_are_drawn_in_the_worker_while_it_runs(tmp_path):
    with plot_worker.running():
        assert plot_worker.draw(_pid).result() != os.getpid()
        plot_worker.draw(_save_confusion, tmp_path / "cm.png", np.eye(3, dtype=np.int64), ["a", "b", "c"],
                         "t").result()
        plot_worker.draw(_save_hist, tmp_path / "h.png", {"forget": np.linspace(0, 1, 50)}, "entropy",
                         "t").result()
    assert plot_worker.draw(_pid).result() == os.getpid()  # no worker: drawn by the caller
    with plot_worker.running(enabled=False):  # a run whose evaluate stages are on Dask workers
        assert plot_worker.draw(_pid).result() == os.getpid()
    for png in ("cm.png", "h.png"):
        assert (tmp_path / png).read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_a_worker_that_dies_leaves_the_figure_to_the_caller():
    with plot_worker.running():
        assert plot_worker.draw(_die_in_worker, os.getpid()).result() == "drawn here"
        assert plot_worker.draw(_pid).result() == os.getpid()  # the broken pool is not used again


def test_a_killed_run_leaves_no_worker(tmp_path):
    import signal
    import subprocess
    import sys
    import time
    from pathlib import Path

    script = tmp_path / "run.py"
    script.write_text("import os, time\nfrom flows import plot_worker\n"
                      "if __name__ == '__main__':\n"
                      "    with plot_worker.running():\n"
                      "        print(plot_worker.draw(os.getpid).result(), flush=True)\n"
                      "        time.sleep(120)\n")
    proc = subprocess.Popen([sys.executable, str(script)], stdout=subprocess.PIPE, text=True,
                            cwd=Path(__file__).resolve().parents[2])
    worker = int(proc.stdout.readline())
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline and Path(f"/proc/{worker}").exists():
        time.sleep(0.05)
    assert not Path(f"/proc/{worker}").exists(), "the plot worker outlived its killed run"
