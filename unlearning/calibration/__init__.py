"""Calibration: tune each method's few key hyperparameters on proxy requests, never on the live request.

`calibrate(params, live, data_version=...)` draws proxy requests of the live request's kind inside the
data the live request keeps (minus excluded requests), trains their oracles (cached by content), searches
each method's declared space with Optuna against the proxies' oracles, scores the choice on a held-out
proxy and writes a calibration profile. Runs pick a matching profile up with `use_profile`; explicit
params always win. `score_live` reports the frozen result on the live request. optuna is imported by the
search only, so `import unlearning` works without it.

Modules: `universe` (what calibration may touch), `proxies`, `proxy_models` (cached), `trials` (the
objective), `search` (Optuna), `core` (`calibrate`), `profile`, `apply` (`use_profile`), `live` (`score_live`).
"""
