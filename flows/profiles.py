"""Calibration profiles in the pipeline: the settings a method runs with, and where each one came from.

A stage that runs or reports a method calls `method_settings`: the params with a matching calibration
profile applied (`unlearning.calibration.apply.use_profile`; explicit params and `--set` always win), so
what the run logs and its content key are the settings that run. `source_tags` names each setting's
source (`settings_source.<setting>` = params / profile / default) and the profile used, for the MLflow run.

The profile folder (`calibration.profile_dir`, default `outputs/calibration`) is relative to the project
root, never to the current directory. It is the output of the frozen DVC stage `calibrate` and a
dependency of every `unlearn@<method>`: `keep_profile_dir` writes its README, so the folder exists in
every checkout (DVC never restores an empty folder, and a missing dependency fails the stage).
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from unlearning.calibration.apply import ProfileUse
    from unlearning.params import Params

PROFILE_DIR = "outputs/calibration"  # the DVC stage `calibrate`'s output and unlearn@<m>'s dependency
README = ("Calibration profiles (`unlearn calibrate`): one JSON file per data version / model / training recipe /\n"
          "request kind, named by the hash of that key. Runs whose key matches fill the method settings that\n"
          "params.yaml and --set leave unset from it. Proxy models are cached under models/ (not in git).\n"
          "This file keeps the folder, the output of the frozen DVC stage `calibrate` and a dependency of\n"
          "every unlearn@<method>, in every checkout.\n")


def rooted(params: Params, root: Path) -> Params:
    """`params` with `calibration.profile_dir` made absolute against the project root."""
    folder = Path(params.calibration.profile_dir)
    if folder.is_absolute():
        return params
    cal = params.calibration.model_copy(update={"profile_dir": str(Path(root) / folder)})
    return params.model_copy(update={"calibration": cal})


def keep_profile_dir(root: Path) -> Path:
    """Write `outputs/calibration/README` when absent (the folder is a DVC dependency of unlearn@<m>)."""
    path = Path(root) / PROFILE_DIR / "README"
    if not path.exists():
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(README)
    return path


def method_settings(params: Params, root: Path, split: Any) -> ProfileUse:
    """The params to run with (a matching profile filled in under the explicit settings) and the sources."""
    from unlearning.calibration.apply import use_profile

    return use_profile(rooted(params, root), split)


def source_tags(use: ProfileUse, method: str, root: Path) -> dict[str, str]:
    """MLflow tags of a method's run: `settings_source.<setting>` per setting, the profile used (or none)."""
    tags = {f"settings_source.{k}": v for k, v in sorted(use.sources.get(method, {}).items())}
    if use.path is None:
        tags["calibration.profile"] = "none"
    else:
        path = Path(use.path)
        tags["calibration.profile"] = str(path.relative_to(root)) if path.is_relative_to(root) else str(path)
        tags["calibration.profile_key"] = path.stem
    return tags


def record_profiles(root: Path) -> None:
    """Keep the profile folder and record it in dvc.lock (the frozen stage `calibrate`) when it changed.

    The pipeline calls this after `version_data` (the stage's dependencies exist then): without it, a
    profile folder that `unlearn calibrate --set ...` or a checkout changed, or a lock without the stage,
    would leave `dvc status` unclean after `unlearn run`. Frozen, the stage's dependencies are never compared.
    """
    import logging

    from . import _dvc

    # Its one warning, at every status of a frozen stage, says that frozen deps are not compared: known here.
    logging.getLogger("dvc.repo.status").setLevel(logging.ERROR)
    keep_profile_dir(root)
    if not _dvc.is_clean(root, "calibrate"):
        _dvc.commit(root, ["calibrate"])
