"""The report's last column: the frozen calibration scored on the live request, against its oracle.

This is the only calibration step that reads the live request's forget samples, and it changes nothing:
it takes a finished `CalibrationResult` (its settings are already written) and runs each method twice on
the live original, with its default setting and with the setting a run would use (the profile applied
under the params, `apply_values`), scoring both against the live oracle. It is a report of how well the
proxies generalised, never an input to the search.
"""

from __future__ import annotations

from typing import Any

from torch import nn

from ..params import Params
from ..requests import Split
from .apply import apply_values
from .core import CalibrationResult
from .proxy_models import ProxyCase
from .trials import score_on


def score_live(result: CalibrationResult, params: Params, live: Split, original: nn.Module,
               oracle: nn.Module) -> dict[str, dict[str, Any]]:
    """Method -> gap (and method time) on the live request with the default and the calibrated setting.

    Args:
        result: a finished calibration (frozen: nothing here feeds back into it).
        params: the run's params (explicit settings win over the profile, as in a run).
        live: the live request.
        original: the live original model (trained on all of D).
        oracle: the live oracle (retrained on D_r).

    Returns:
        {method: {"default_gap", "calibrated_gap", "default_time_s", "calibrated_time_s"}}.
    """
    names = list(result.searches)
    base = params.model_copy(update={"unlearn": params.unlearn.model_copy(update={"methods": names})})
    tuned, _ = apply_values(base, result.values())
    case = ProxyCase(live, original, oracle)
    seed = params.evaluate.seeds[0]
    out = {}
    for name in names:
        default = score_on(base, name, base.unlearn.method_config(name), [case], seed)
        calibrated = score_on(tuned, name, tuned.unlearn.method_config(name), [case], seed)
        out[name] = {"default_gap": default.gap, "calibrated_gap": calibrated.gap,
                     "default_time_s": default.time_s, "calibrated_time_s": calibrated.time_s}
    return out
