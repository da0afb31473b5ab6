"""The HTML report: renders rich, regression and bare results dicts; `model_details` shapes; a real browser."""

from __future__ import annotations

import json
import math
import re
import shutil
import struct
import subprocess
import zlib
from pathlib import Path

import pytest

from unlearning.__main__ import main
from unlearning.report import model_details, render_report, write_report
from unlearning.report.results import pareto_front

N_BINS = 24
EDGES = [0.0] + [round(1e-5 * (2.302585 / 1e-5) ** (i / (N_BINS - 1)), 6) for i in range(N_BINS)]


def _hist(centre: float, n: int) -> list[int]:
    """A bell of `n` samples around bin `centre`: stands in for a model's signal histogram."""
    weights = [math.exp(-((i - centre) ** 2) / 10) for i in range(N_BINS)]
    return [round(n * w / sum(weights)) for w in weights]


def _details(forget_centre: float, forgot: bool) -> dict:
    per_class = [0.97, 0.95, 0.99, 0.0 if forgot else 0.96, 0.93, 0.98, 1.0, 0.94, 0.88, 0.91]
    return {"signal": "entropy", "bins": EDGES, "per_class_test_acc": per_class,
            "hist": {"forget": _hist(forget_centre, 146), "test": _hist(12, 288), "retain": _hist(5, 1291)}}


def _model(acc: dict[str, float], half: float, n: int = 3, **extra: float) -> dict:
    """A scored model: means, 95 % CIs of +-`half`, and `n` runs around the means."""
    means = {**acc, **extra}
    runs = [{"training_seed": s, **{k: v + (s - 1) * half / 2 for k, v in means.items()}} for s in range(n)]
    ci = {k: [v - half, v + half] for k, v in means.items()}
    return {**means, "n_seeds": n, "ci": ci, "runs": runs, "eval/s": 0.4}


def rich_results() -> dict:
    """What the runner writes with oracle, CIs, gates and details: two methods, one skipped."""
    base = {"retain/acc": 0.99, "test/acc": 0.86, "forget_test/acc": 0.0, "mia/entropy_lr": 0.11,
            "mia/efficacy": 1.0, "zrf": 0.75}
    finetune = _model({**base, "forget/acc": 0.92, "mia/entropy_lr": 0.71, "mia/efficacy": 0.08, "test/acc": 0.95},
                      0.02, **{"oracle/avg_gap": 48.5, "speedup": 7.4, "time/s": 0.11})
    finetune["ci"]["speedup"] = [6.1, 8.8]
    neggrad = _model({**base, "forget/acc": 0.0, "mia/entropy_lr": 0.45}, 0.015,
                     **{"oracle/avg_gap": 0.9, "speedup": 41.0, "time/s": 0.02})
    salun = _model({**base, "forget/acc": 0.0, "mia/entropy_lr": 0.05}, 0.01,
                   **{"oracle/avg_gap": 0.4, "speedup": 4.1, "time/s": 0.19})
    gates = {
        "finetune": [{"name": "mia_vs_oracle", "value": 60.0, "ci": [55.0, 65.0], "limit": 5.0, "margin": -55.0,
                      "verdict": "fail", "reason": "MIA 60 points above the oracle, limit 5"},
                     {"name": "utility_drop", "value": -9.0, "ci": [-10.0, -8.0], "limit": 2.0, "margin": 11.0,
                      "verdict": "pass", "reason": "test accuracy within 2 points of the original"}],
        "neggrad": [{"name": "mia_vs_oracle", "value": 3.4, "ci": [-1.2, 8.0], "limit": 5.0, "margin": 1.6,
                     "verdict": "inconclusive", "reason": "CI [-1.2, 8.0] straddles the limit 5"},
                    {"name": "utility_drop", "value": 1.0, "ci": [0.5, 1.5], "limit": 2.0, "margin": 1.0,
                     "verdict": "pass", "reason": "test accuracy within 2 points of the original"}],
        "salun": [{"name": "mia_vs_oracle", "value": -0.6, "ci": [-2.0, 0.8], "limit": 5.0, "margin": 5.6,
                   "verdict": "pass", "reason": "MIA within 5 points of the oracle"}],
    }
    return {
        "request": {"dataset": "digits", "description": "class 3", "forget": 146, "retain": 1291, "test": 288,
                    "hash": "c40f479110af", "scenario": "class", "forget_classes": [3]},
        "device": "cpu", "complete": True, "speedup_reference": "oracle (retrain)",
        "seeds": {"training": [0, 1, 2], "unlearning": [0]},
        "original": _model({**base, "forget/acc": 1.0, "mia/entropy_lr": 0.87, "mia/efficacy": 0.0, "test/acc": 0.97},
                           0.01, **{"oracle/avg_gap": 52.6, "time/s": 1.3}),
        "oracle": {**_model({**base, "forget/acc": 0.0}, 0.012, **{"oracle/avg_gap": 0.0, "time/s": 0.8}),
                   "speedup": 1.0},
        "methods": {"finetune": {**finetune, "data": ["retain"]}, "neggrad": {**neggrad, "data": ["forget"]},
                    "salun": {**salun, "data": ["forget", "retain"]},
                    "ssd": {"skipped": "method 'ssd' needs a model with batch norm"}},
        "gates": gates,
        "verdicts": {"finetune": "fail", "neggrad": "inconclusive", "salun": "pass"},
        "details": {"original": _details(3, False), "oracle": _details(13, True), "finetune": _details(4, False),
                    "neggrad": _details(15, True), "salun": _details(12, True)},
    }


def regression_results() -> dict:
    """The rich results as a regression run reports them: */mae, W1 to the oracle, no classes."""
    res = rich_results()

    def to_mae(row: dict) -> dict:
        def mae(key: str, v: float) -> float:  # accuracy a -> an error that grows as a falls
            return 20 + 40 * (1 - v) if key.endswith("/acc") else v

        dropped = ("mia/entropy_lr", "mia/efficacy", "zrf", "oracle/avg_gap")
        renamed = {k.replace("/acc", "/mae"): mae(k, v) if isinstance(v, float) else v for k, v in row.items()
                   if k not in dropped}
        renamed["ci"] = {k.replace("/acc", "/mae"): sorted(mae(k, b) for b in v) for k, v in row["ci"].items()
                         if k not in dropped}
        renamed["oracle/w1"] = row["oracle/avg_gap"] / 10
        return renamed

    for name in ("original", "oracle"):
        res[name] = to_mae(res[name])
    res["methods"] = {k: v if "skipped" in v else to_mae(v) for k, v in res["methods"].items()}
    for d in res["details"].values():
        d.pop("per_class_test_acc")
        d["signal"] = "l1"
    res["request"].update(dataset="diabetes", scenario="range", description="target range [200, 350]")
    res["request"].pop("forget_classes")
    return res


def _offline(html: str) -> None:
    """No reference that would reach the network (the SVG namespace is a name, not a fetch)."""
    assert not re.findall(r"https?://(?!www\.w3\.org/2000/svg)", html)
    assert "<script" not in html and "<link" not in html


def test_rich_report_has_every_section(tmp_path) -> None:
    html = write_report(rich_results(), tmp_path / "r" / "report.html").read_text()
    _offline(html)
    for row in ("original", "oracle (retrain)", "finetune", "neggrad", "salun"):
        assert f"{row}" in html
    assert "0.920<span class=\"pm\">± 0.020</span>" in html  # mean ± half-width of the CI
    for word in ("pass", "fail", "inconclusive"):
        assert f'class="gate {word}"' in html and f'class="badge {word}"' in html
    assert 'title="MIA 60 points above the oracle, limit 5' in html  # the reason as a tooltip
    assert "ssd</b>: method &#x27;ssd&#x27; needs a model with batch norm" in html
    assert html.count("<svg") >= 1 + 6 + 5  # cost plot, metric charts, one histogram per model
    assert 'class="pareto"' in html and "Pareto front" in html
    assert 'class="band"' in html and "oracle runs, min–max (n=3)" in html
    assert "hist-forget" in html and "hist-test" in html
    assert 'class="heatmap"' in html and "3 ✕" in html
    assert "No per-model" not in html and "Not applicable" not in html


def test_regression_report_skips_the_class_sections() -> None:
    html = render_report(regression_results())
    _offline(html)
    assert "forget MAE" in html and "W1 to oracle" in html and "W1 distance to the oracle" in html
    assert 'class="pareto"' in html
    assert "hist-forget" in html and "L1 error (log-spaced bins)" in html
    assert "Not applicable to regression results." in html and 'class="heatmap"' not in html


def test_bare_results_render_with_a_note_per_missing_section() -> None:
    """An old results file: no oracle, CIs, gates, verdicts or details; NaN written as null."""
    bare = {"request": {"dataset": "digits"}, "original": {"forget/acc": 1.0, "test/acc": None},
            "methods": {"finetune": {"forget/acc": 0.9, "speedup": None}, "odd": {"skipped": "no"}}}
    html = render_report(bare)
    _offline(html)
    assert "finetune" in html and "No method with both a speedup" in html and "No per-model details" in html
    assert render_report({"request": {}, "original": {}, "methods": {}}).startswith("<!DOCTYPE html>")


def test_garbage_in_optional_keys_costs_a_cell_not_the_page() -> None:
    res = rich_results()
    res["gates"]["finetune"] = [{"name": "mia_vs_oracle", "value": None, "ci": None, "verdict": "weird"}, "x"]
    res["verdicts"] = None
    res["details"]["oracle"] = {"bins": [0, 1], "hist": {"forget": [1, 2, 3]}}
    res["methods"]["neggrad"]["ci"] = {"forget/acc": [None, 1.0], "speedup": "fast"}
    res["methods"]["salun"]["runs"] = "none"
    html = render_report(json.loads(json.dumps(res)))
    assert 'class="gate unknown"' in html and "finetune" in html


def test_pareto_front_keeps_the_undominated_methods() -> None:
    points = {"fast": (40.0, 0.9), "close": (4.0, 0.4), "dominated": (3.0, 0.5), "worse": (7.4, 48.0)}
    assert pareto_front(points) == ["close", "fast"]


def test_cli_renders_a_saved_results_file(tmp_path, capsys) -> None:
    src, out = tmp_path / "results.json", tmp_path / "report.html"
    src.write_text(json.dumps(rich_results()))
    assert main(["--report", str(out), "--from-json", str(src)]) == 0
    assert f"report written to {out}" in capsys.readouterr().out and "<svg" in out.read_text()
    assert not out.with_name("report.html.tmp").exists()
    assert main(["--from-json", str(src)]) == 2 and "--report FILE" in capsys.readouterr().err
    assert main(["--report", str(out), "--from-json", str(tmp_path / "missing.json")]) == 2


def test_model_details_of_a_tiny_digits_model(digits) -> None:
    import time

    import torch

    from unlearning.config import RequestConfig, TrainConfig
    from unlearning.models import create_model
    from unlearning.requests import resolve
    from unlearning.training import fit

    split = resolve(RequestConfig(classes=[3]), digits)
    torch.manual_seed(0)
    model = fit(create_model("mlp", 10, (1, 8, 8), width=32), split.retain(), TrainConfig(epochs=2))
    model_details(model, split)  # warm-up: the first forward pass pays for lazy initialisation
    start = time.perf_counter()
    details = model_details(model, split)
    elapsed = time.perf_counter() - start
    assert elapsed < 0.5, f"model_details took {elapsed:.3f} s"
    assert details["signal"] == "entropy" and len(details["bins"]) == 25 and details["bins"][0] == 0.0
    assert {k: sum(v) for k, v in details["hist"].items()} == {"forget": 146, "retain": 1291,
                                                              "test": len(split.test_idx)}
    acc = details["per_class_test_acc"]
    assert len(acc) == 10 and acc[3] < 0.1 and all(0 <= a <= 1 for a in acc)  # retain-only: class 3 unknown
    assert len(json.dumps(details)) < 2000


def test_model_details_of_a_regression_model(diabetes) -> None:
    import torch

    from unlearning.config import RequestConfig, TrainConfig
    from unlearning.models import create_model
    from unlearning.requests import resolve
    from unlearning.training import fit

    split = resolve(RequestConfig(target_range=(25.0, 90.0)), diabetes)
    torch.manual_seed(0)
    kw = {"y_mean": float(diabetes.y_train.mean()), "y_std": float(diabetes.y_train.std())}
    model = fit(create_model("regressor", 1, (10,), width=16, **kw), split.retain(), TrainConfig(epochs=1))
    details = model_details(model, split)
    assert details["signal"] == "l1" and "per_class_test_acc" not in details
    assert sum(details["hist"]["forget"]) == len(split.forget_idx)


# ----------------------------------------------------------------------------- a real browser


def png_colours(path: Path, stride: int = 7) -> int:
    """Distinct colours in a sample of an 8-bit, non-interlaced RGB(A) PNG's pixels (stdlib decoder)."""
    data = path.read_bytes()
    pos, chunks, header = 8, [], None
    while pos < len(data):
        size, kind = struct.unpack(">I4s", data[pos:pos + 8])
        body = data[pos + 8:pos + 8 + size]
        header = body if kind == b"IHDR" else header
        chunks += [body] if kind == b"IDAT" else []
        pos += 12 + size
    width, height, depth, colour, _, _, interlace = struct.unpack(">IIBBBBB", header)
    assert depth == 8 and colour in (2, 6) and interlace == 0, "decoder handles 8-bit RGB(A) only"
    bpp = 3 if colour == 2 else 4
    raw, stride_bytes = zlib.decompress(b"".join(chunks)), width * bpp
    prev, seen = bytearray(stride_bytes), set()
    for row in range(height):
        start = row * (stride_bytes + 1)
        kind, line = raw[start], bytearray(raw[start + 1:start + 1 + stride_bytes])
        for i in range(stride_bytes):  # undo the PNG row filter (none, sub, up, average, Paeth)
            a = line[i - bpp] if i >= bpp else 0
            b, c = prev[i], prev[i - bpp] if i >= bpp else 0
            if kind == 1:
                line[i] = (line[i] + a) & 255
            elif kind == 2:
                line[i] = (line[i] + b) & 255
            elif kind == 3:
                line[i] = (line[i] + (a + b) // 2) & 255
            elif kind == 4:
                p = a + b - c
                pa, pb, pc = abs(p - a), abs(p - b), abs(p - c)
                line[i] = (line[i] + (a if pa <= pb and pa <= pc else b if pb <= pc else c)) & 255
        if row % stride == 0:
            seen.update(bytes(line[i:i + 3]) for i in range(0, stride_bytes, bpp * stride))
        prev = line
    return len(seen)


@pytest.mark.slow
def test_report_draws_in_headless_chromium(tmp_path) -> None:
    browser = next((b for b in ("chromium", "chromium-browser", "google-chrome") if shutil.which(b)), None)
    if browser is None:
        pytest.skip("no chromium binary on PATH (apt-get install chromium) to screenshot the report")
    page, shot = write_report(rich_results(), tmp_path / "report.html"), tmp_path / "report.png"
    subprocess.run([browser, "--headless", "--no-sandbox", "--disable-gpu", f"--screenshot={shot}",
                    "--window-size=1280,3000", page.as_uri()], check=True, capture_output=True, timeout=120)
    assert png_colours(shot) > 50  # a blank or one-colour page has 1; a drawn report has hundreds
