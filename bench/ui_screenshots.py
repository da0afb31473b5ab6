"""Screenshots of the MLflow UI as its users see it, after `make run`: the evaluate runs compared in charts,
grouped (coloured) by `method`, and the registered model with its `production` alias.

Starts `mlflow server` on loopback against the project's tracking store, drives the Debian `chromium` in
headless mode over the DevTools protocol (clicks like a user: chart view, group by the `method` param) and
writes PNGs:

    python bench/ui_screenshots.py                      # -> docs/mlflow-compare.png, docs/mlflow-registered-model.png
    python bench/ui_screenshots.py --out /tmp/shots --tracking-uri sqlite:///other/mlflow.db

The server and browser helpers are shared with the slow UI test (tests/flows/test_mlflow_ui.py).
"""

from __future__ import annotations

import argparse
import base64
import contextlib
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
import urllib.parse
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from flows.stack_procs import free_port  # noqa: E402  (stdlib only: no Prefect or MLflow import)

SERVER_START_S = 120  # measured 11-17 s on an idle 2-core machine (STACK.md); much more when it is busy


def chromium() -> str | None:
    """The Debian chromium (or a Chrome) on PATH, if any."""
    return next((p for p in map(shutil.which, ("chromium", "chromium-browser", "google-chrome")) if p), None)


def _get(url: str, timeout: float = 5.0) -> str:
    with urllib.request.urlopen(url, timeout=timeout) as r:  # noqa: S310 - loopback only
        return r.read().decode()


@contextlib.contextmanager
def mlflow_server(tracking_uri: str, log: Path | None = None) -> Iterator[str]:
    """`mlflow server` on 127.0.0.1 (one worker) over `tracking_uri`; yields its base URL once /health answers."""
    port = free_port()
    out = open(log, "w") if log else subprocess.DEVNULL  # noqa: SIM115 - closed below
    exe = Path(sys.executable).with_name("mlflow")
    proc = subprocess.Popen([str(exe), "server", "--backend-store-uri", tracking_uri, "--host", "127.0.0.1",
                             "--port", str(port), "--workers", "1"], stdout=out, stderr=subprocess.STDOUT,
                            start_new_session=True)  # its own process group: the job runner's workers end with it
    base = f"http://127.0.0.1:{port}"
    try:
        deadline = time.monotonic() + SERVER_START_S
        while True:
            if proc.poll() is not None:
                raise RuntimeError(f"mlflow server exited with {proc.returncode}" + (f"; see {log}" if log else ""))
            with contextlib.suppress(OSError):
                if _get(f"{base}/health").strip() == "OK":
                    break
            if time.monotonic() > deadline:
                raise TimeoutError(f"mlflow server not ready after {SERVER_START_S} s")
            time.sleep(0.5)
        yield base
    finally:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, 15)
        try:
            proc.wait(timeout=20)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, 9)
            proc.wait()
        if log:
            out.close()


def dump_dom(url: str, budget_ms: int = 20000) -> str:
    """The DOM of `url` after its scripts ran (headless chromium `--dump-dom`)."""
    with tempfile.TemporaryDirectory() as profile:
        return subprocess.run([chromium() or "chromium", "--headless", "--no-sandbox", "--disable-gpu",
                               f"--user-data-dir={profile}", f"--virtual-time-budget={budget_ms}", "--dump-dom",
                               url], capture_output=True, text=True, timeout=180).stdout


class Browser:
    """A headless chromium page driven over the DevTools protocol: navigate, wait for text, click, shoot."""

    def __init__(self, width: int = 1600, height: int = 1000) -> None:
        from websockets.sync.client import connect

        self._profile = tempfile.TemporaryDirectory()
        port = free_port()
        self._proc = subprocess.Popen(
            [chromium() or "chromium", "--headless", "--no-sandbox", "--disable-gpu", f"--remote-debugging-port={port}",
             f"--user-data-dir={self._profile.name}", f"--window-size={width},{height}", "about:blank"],
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        deadline = time.monotonic() + 60
        while True:
            with contextlib.suppress(OSError):
                pages = [t for t in json.loads(_get(f"http://127.0.0.1:{port}/json")) if t["type"] == "page"]
                if pages:
                    break
            if time.monotonic() > deadline:
                raise TimeoutError("chromium's DevTools endpoint did not answer within 60 s")
            time.sleep(0.3)
        self._ws = connect(pages[0]["webSocketDebuggerUrl"], max_size=64 * 2**20)
        self._id = 0
        self.call("Emulation.setDeviceMetricsOverride", width=width, height=height, deviceScaleFactor=1, mobile=False)

    def call(self, method: str, **params: Any) -> dict[str, Any]:
        self._id += 1
        self._ws.send(json.dumps({"id": self._id, "method": method, "params": params}))
        while True:
            msg = json.loads(self._ws.recv(timeout=120))
            if msg.get("id") == self._id:
                if "error" in msg:
                    raise RuntimeError(f"{method}: {msg['error']}")
                return msg.get("result", {})

    def js(self, expression: str) -> Any:
        out = self.call("Runtime.evaluate", expression=expression, returnByValue=True, awaitPromise=True)
        return out.get("result", {}).get("value")

    def goto(self, url: str) -> None:
        self.call("Page.navigate", url=url)

    def wait_text(self, *texts: str, timeout: float = 90.0) -> str:
        """The page's visible text once it holds every one of `texts` (raises after `timeout` s)."""
        deadline = time.monotonic() + timeout
        while True:
            body = self.js("document.body ? document.body.innerText : ''") or ""
            if all(t in body for t in texts):
                return body
            if time.monotonic() > deadline:
                missing = [t for t in texts if t not in body]
                raise TimeoutError(f"page never showed {missing}; it shows: {body[:500]!r}")
            time.sleep(0.5)

    def click_text(self, text: str, selector: str = "button, [role=menuitem], [role=option], [role=radio], label, a",
                   last: bool = False) -> None:
        """Click (with real mouse events: menus open on pointer-down) the first, or last, visible element
        matching `selector` whose text is `text`."""
        self._click(f"""[...document.querySelectorAll({json.dumps(selector)})].filter(e => e.offsetParent !== null
            && (e.innerText || e.getAttribute('aria-label') || '').trim() === {json.dumps(text)}).at({-1 if last else 0})""",
                    f"no clickable {text!r} on the page")

    def click_selector(self, selector: str) -> None:
        """Click the element matched by `selector` (or the label around it: radio inputs are hidden)."""
        self._click(f"(e => e && (e.closest('label') || e))(document.querySelector({json.dumps(selector)}))",
                    f"nothing matches {selector!r} on the page")

    def _click(self, element_js: str, missing: str) -> None:
        """Click the middle of the element that `element_js` evaluates to (scrolled into view)."""
        box = self.js(f"""(() => {{
            const el = {element_js};
            if (!el) return null;
            el.scrollIntoView({{block: 'center'}});
            const r = el.getBoundingClientRect();
            return [r.x + r.width / 2, r.y + r.height / 2]; }})()""")
        if not box:
            raise LookupError(missing)
        self.click_at(*box)

    def click_at(self, x: float, y: float) -> None:
        for kind in ("mouseMoved", "mousePressed", "mouseReleased"):
            self.call("Input.dispatchMouseEvent", type=kind, x=x, y=y, button="left", clickCount=1)
        time.sleep(0.5)

    def type_text(self, text: str) -> None:
        self.call("Input.insertText", text=text)
        time.sleep(0.5)

    def screenshot(self, path: Path) -> Path:
        data = self.call("Page.captureScreenshot", format="png")["data"]
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(base64.b64decode(data))
        return path

    def close(self) -> None:
        with contextlib.suppress(Exception):
            self._ws.close()
        self._proc.terminate()
        try:
            self._proc.wait(timeout=20)
        except subprocess.TimeoutExpired:
            self._proc.kill()
        self._profile.cleanup()


# MLflow 3.17's UI opens in its GenAI navigation unless the user picks "Model training" (kept in the browser's
# localStorage) or the URL says so; the experiment's `mlflow.experimentKind` tag alone does not switch it.
MODEL_TRAINING = "workflowType=machine_learning"


def ui_urls(base: str, tracking_uri: str, experiment: str, model: str) -> dict[str, str]:
    """The pages a user opens: the experiment's runs, its evaluate runs only, the compare view of the latest
    evaluate run of each method, the registered model and its production version (the model page when
    there is none)."""
    import mlflow

    client = mlflow.MlflowClient(tracking_uri)
    exp = client.get_experiment_by_name(experiment)
    if exp is None:
        raise LookupError(f"no experiment {experiment!r} in {tracking_uri}: run the pipeline first")
    evaluate = "tags.`pipeline.stage` = 'evaluate'"
    latest: dict[str, str] = {}  # method -> its newest evaluate run
    for run in client.search_runs([exp.experiment_id], evaluate, order_by=["attributes.start_time DESC"],
                                  max_results=1000):
        if "method" in run.data.params:
            latest.setdefault(run.data.params["method"], run.info.run_id)
    quote = urllib.parse.quote
    aliases = client.get_registered_model(model).aliases
    production = f"/versions/{aliases['production']}" if "production" in aliases else ""
    runs = f"{base}/#/experiments/{exp.experiment_id}/runs?{MODEL_TRAINING}"
    return {"experiment": runs, "evaluate_runs": f"{runs}&searchFilter={quote(evaluate)}",
            "compare": f"{base}/#/compare-runs?runs={quote(json.dumps(list(latest.values())))}"
                       f"&experiments={quote(json.dumps([exp.experiment_id]))}&{MODEL_TRAINING}",
            "model": f"{base}/#/models/{quote(model)}?{MODEL_TRAINING}",
            "production": f"{base}/#/models/{quote(model)}{production}?{MODEL_TRAINING}", "methods": ",".join(latest)}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--root", type=Path, default=ROOT, help="the project (params.yaml, mlflow.db)")
    parser.add_argument("--tracking-uri", default=None, help="default: the project's (params.yaml / env)")
    parser.add_argument("--out", type=Path, default=ROOT / "docs")
    args = parser.parse_args(argv)
    if chromium() is None:
        print("error: no chromium on PATH (Debian: apt-get install chromium)", file=sys.stderr)
        return 2
    from flows.settings import load, registered_model_name, tracking_uri

    params = load(args.root.resolve())
    uri = args.tracking_uri or tracking_uri(args.root.resolve(), params)
    with mlflow_server(uri, log=Path(tempfile.gettempdir()) / "ui_screenshots_mlflow.log") as base:
        urls = ui_urls(base, uri, params.tracking.experiment, registered_model_name(params))
        browser = Browser()
        try:
            for name, path in shoot(browser, urls, args.out).items():
                print(f"{name}: {path}")
        finally:
            browser.close()
    return 0


def shoot(browser: Browser, urls: dict[str, str], out: Path) -> dict[str, Path]:
    """The two screenshots: the evaluate runs' gate charts coloured by method, the registered model's page
    of its production version (aliases, lineage and gate tags)."""
    shots = {"compare": gate_charts_by_method(browser, urls, out / "mlflow-compare.png")}
    browser.goto(urls["production"])
    browser.wait_text("production", "Version")
    close_assistant(browser)
    time.sleep(2)
    shots["registered model"] = browser.screenshot(out / "mlflow-registered-model.png")
    return shots


def close_assistant(browser: Browser) -> None:
    """Close the "MLflow Assistant" side panel (open by default) if it is there."""
    with contextlib.suppress(LookupError):
        browser.click_text("Close", selector="button[aria-label='Close']")


def gate_charts_by_method(browser: Browser, urls: dict[str, str], path: Path) -> Path:
    """What a user clicks for it: the evaluate runs, "Group by" the `method` param, the chart view, charts
    searched for `gate/` (every gate's value, interval, threshold and verdict, one colour per method)."""
    evaluate_runs_by_method(browser, urls)
    browser.click_selector("input[value=CHART]")
    browser.click_selector("input[placeholder='Search metric charts']")
    browser.type_text("gate/")
    browser.wait_text("gate/forget_acc_vs_oracle")
    time.sleep(5)  # the charts draw after their section appears
    return browser.screenshot(path)


def evaluate_runs_by_method(browser: Browser, urls: dict[str, str]) -> str:
    """The experiment's evaluate runs, grouped by the `method` param (one colour per method); the page text."""
    methods = urls["methods"].split(",")
    browser.goto(urls["evaluate_runs"])
    browser.wait_text(f"{len(methods) + 1} matching runs")  # and their parent, shown for the nesting
    close_assistant(browser)
    browser.click_text("Group by")
    browser.type_text("method")
    browser.click_text("method", selector="[role=menuitemcheckbox]", last=True)  # params come after tags
    for kind in ("keyDown", "keyUp"):  # close the menu
        browser.call("Input.dispatchKeyEvent", type=kind, key="Escape", code="Escape", windowsVirtualKeyCode=27)
    return browser.wait_text(*(f"Group: {m}" for m in methods), *(f"evaluate[{m}]" for m in methods))


if __name__ == "__main__":
    sys.exit(main())
