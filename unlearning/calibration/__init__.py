"""Calibration: tune each method's few key hyperparameters on proxy requests, never on the live request.

`calibrate(params, live, data_version=...)` draws proxy requests of the live request's kind inside the
data the live request keeps (minus excluded requests), trains their oracles (cached by content), searches
each method's declared space with Optuna against the proxies' oracles, scores the choice on a held-out
proxy and writes a calibration profile. Runs pick a matching profile up with `use_profile`; explicit
params always win. `score_live` reports the frozen result on the live request. optuna is imported by the
search only, so `import unlearning` works without it. Names below are imported on first use.
"""

from importlib import import_module

_EXPORTS = {
    "calibrate": "core", "CalibrationResult": "core", "plan_methods": "core",
    "score_live": "live",
    "use_profile": "apply", "apply_values": "apply", "ProfileUse": "apply",
    "data_version": "profile", "profile_key": "profile", "profile_path": "profile", "read_profile": "profile",
    "build_universe": "universe", "request_kind": "universe", "Universe": "universe",
    "draw_proxies": "proxies", "proxy_split": "proxies", "ProxyRequest": "proxies",
    "MethodSearch": "search", "OPTUNA_MISSING": "search",
}

__all__ = sorted(_EXPORTS)


def __getattr__(name: str) -> object:
    if name not in _EXPORTS:
        raise AttributeError(f"module 'unlearning.calibration' has no attribute {name!r}")
    return getattr(import_module(f".{_EXPORTS[name]}", __name__), name)
