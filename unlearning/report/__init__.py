"""One self-contained HTML report of an unlearning experiment (`python -m unlearning --report FILE`).

`write_report(results, path)` renders a results dict (what `--out` writes) with inline SVG charts and no
script or network access; `model_details(model, split)` computes the small per-model data behind its
histograms and heatmap. `model_details` needs torch, so it is imported on first use: rendering a results
file does not load torch.
"""

from importlib import import_module

from .html import render_report, write_report

__all__ = ["model_details", "render_report", "write_report"]


def __getattr__(name: str) -> object:
    if name == "model_details":
        return import_module(".details", __name__).model_details
    raise AttributeError(f"module 'unlearning.report' has no attribute {name!r}")
