"""Runs use a matching calibration profile: unset method settings come from it, explicit ones win.

Every method setting then has a source: `params` (set in params.yaml or by --set: always wins),
`profile` (filled from the profile) or `default` (the method's own default). The runner shows them as
`methods.<m>.settings_source` and the pipeline can log them the same way.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from ..params import Params
from ..requests import Split
from .profile import data_version, method_fingerprint, profile_key, profile_path, read_profile


@dataclass(frozen=True)
class ProfileUse:
    """The params a run uses, where each method setting came from, and which profile (if any) was used.

    Attributes:
        params: the run's params with profile values filled into settings params left unset.
        sources: method -> setting -> "params" | "profile" | "default".
        path: the profile file used, or None.
        looked_for: the file a matching profile would be, or the folder when it does not exist.
        notes: one line per thing worth knowing (e.g. a method the profile has no entry for).
    """

    params: Params
    sources: dict[str, dict[str, str]]
    path: str | None
    looked_for: str
    notes: list[str] = field(default_factory=list)

    def summary(self) -> dict[str, Any]:
        return {"profile": self.path, "looked_for": self.looked_for, "notes": self.notes}


def apply_values(params: Params, values: dict[str, dict[str, Any]]) -> tuple[Params, dict[str, dict[str, str]]]:
    """`params` with `values[method]` filled into the settings params left unset; and each setting's source.

    Args:
        params: the run's params.
        values: method -> setting -> value (from a profile).

    Returns:
        The new params and, for every listed method in `unlearn.methods`, setting -> source.
    """
    updates, sources = {}, {}
    for name in params.unlearn.methods:
        cfg = params.unlearn.method_config(name)
        explicit = set(cfg.model_fields_set)
        given = {k: v for k, v in (values.get(name) or {}).items() if k not in explicit}
        if given:
            cfg = type(cfg).model_validate({**cfg.model_dump(include=explicit), **given})
            updates[name] = cfg
        sources[name] = {k: "params" if k in explicit else "profile" if k in given else "default"
                         for k in type(cfg).model_fields}
    if updates:
        params = params.model_copy(update={"unlearn": params.unlearn.model_copy(update=updates)})
    return params, sources


def use_profile(params: Params, split: Split, data: str | None = None) -> ProfileUse:
    """Look for the profile of this run's data version, model, recipe and request kind, and apply it.

    Args:
        params: the run's params (`calibration.use_profile`, `calibration.profile_dir`).
        split: the live request (for its data version and kind).
        data: the data version; None hashes the dataset (`profile.data_version`), only when the profile
            folder exists.

    Returns:
        The params to run with, the sources, and the profile used (None when there is none or
        `calibration.use_profile` is false).
    """
    cal = params.calibration
    if not cal.use_profile or not Path(cal.profile_dir).is_dir():
        new, sources = apply_values(params, {})
        why = "calibration.use_profile is false" if not cal.use_profile else f"no folder {cal.profile_dir}"
        return ProfileUse(new, sources, None, cal.profile_dir, [f"no calibration profile ({why}): method defaults"])
    key = profile_key(params, split, data if data is not None else data_version(split))
    path = profile_path(cal.profile_dir, key)
    if not path.exists():
        new, sources = apply_values(params, {})
        return ProfileUse(new, sources, None, str(path), [f"no calibration profile {path}: method defaults"])
    profile = read_profile(path, key)
    entries = profile.get("methods") or {}
    stale = [m for m in params.unlearn.methods
             if (entries.get(m) or {}).get("fingerprint") not in (None, method_fingerprint(m))]
    values = {m: (entries.get(m) or {}).get("values") or {} for m in params.unlearn.methods if m not in stale}
    notes = [f"{m}: params set {sorted(set(v) & params.unlearn.method_config(m).model_fields_set)}, "
             "which win over the profile" for m, v in values.items()
             if set(v) & params.unlearn.method_config(m).model_fields_set]
    notes += [f"{m}: not in profile {path.name} (method defaults)" for m in params.unlearn.methods
              if m not in entries and type(params.unlearn.method_config(m)).search_space]
    notes += [f"{m}: profile {path.name} was made for other defaults or search space of the method (method "
              f"defaults; `unlearn calibrate --methods {m}` renews it)" for m in stale]
    new, sources = apply_values(params, values)
    return ProfileUse(new, sources, str(path), str(path), notes)
