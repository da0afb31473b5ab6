"""Calibration profiles: one small JSON file per data version / model / train recipe / request kind.

The file name is the content hash of that key, so a run finds its profile without an index:
`<profile_dir>/<hash>.json`. A profile holds, per method, the chosen values of its searched keys (none
when the defaults won), the objective values, trial counts, wall time, the proxies used, the held-out
proxy gap and the library version. Written atomically; calibrating more methods later adds to it.
"""

from __future__ import annotations

import json
import os
import tempfile
import time
from importlib import metadata
from pathlib import Path
from typing import Any

import torch

from ..hashing import content_hash
from ..metrics.cache import digest
from ..params import Params
from ..requests import Split
from .universe import request_kind

SCHEMA = 1


def data_version(split: Split) -> str:
    """Content hash of the data a request is resolved against: every tensor of the dataset, and the ids
    removed by earlier deletions (in neither the forget nor the retain set). Names the data; the bytes
    are hashed, never used. The pipeline may pass its DVC data hash instead."""
    ds = split.dataset
    present = torch.zeros(len(ds.y_train), dtype=torch.bool)
    present[split.forget_idx] = True
    present[split.retain_idx] = True
    removed = torch.nonzero(~present).flatten()
    return digest(ds.name, ds.task, ds.x_train, ds.y_train, ds.x_test, ds.y_test, removed)[:16]


def profile_key(params: Params, split: Split, data: str) -> dict[str, Any]:
    """What a profile is valid for: data version, model, train recipe (device / compile left out: they
    change how, not what, is trained) and request kind (`request_kind`)."""
    return {"data": data, "dataset": params.data.model_dump(), "model": params.model.model_dump(),
            "train": params.train.model_dump(exclude={"device", "compile"}), "request": request_kind(split)}


def key_hash(key: dict[str, Any]) -> str:
    return content_hash(key, 16)


def profile_path(profile_dir: str | Path, key: dict[str, Any]) -> Path:
    return Path(profile_dir) / f"{key_hash(key)}.json"


def method_fingerprint(name: str) -> str:
    """A hash of the method's defaults and search space. A profile entry made under other ones chose its
    values against settings that are gone (NegGrad's lr 0.02 step cap became a stop at lr 1e-3), so a run
    leaves such an entry out."""
    from ..methods import METHODS
    from ..methods.space import describe_space

    cls = METHODS.get(name).config
    return content_hash({"defaults": cls().model_dump(mode="json"), "space": describe_space(cls.search_space)})


def library_version() -> str:
    try:
        return metadata.version("unlearning-pipeline")
    except metadata.PackageNotFoundError:
        return "unknown"


def read_profile(path: str | Path, key: dict[str, Any] | None = None) -> dict[str, Any]:
    """A profile, checked: valid JSON of this schema and, when `key` is given, made for that key."""
    p = Path(path)
    try:
        profile = json.loads(p.read_text())
    except (OSError, json.JSONDecodeError) as err:
        raise ValueError(f"calibration profile {p} cannot be read: {err}") from None
    if not isinstance(profile, dict) or profile.get("schema") != SCHEMA:
        raise ValueError(f"calibration profile {p} is not a schema-{SCHEMA} profile")
    if key is not None and profile.get("key") != key:
        diff = sorted(k for k in key if key[k] != (profile.get("key") or {}).get(k))
        raise ValueError(f"calibration profile {p} was made for another {', '.join(diff) or 'key'}; "
                         f"this run's request kind is {key['request']}")
    return profile


def write_profile(path: str | Path, profile: dict[str, Any]) -> Path:
    """Write atomically (temporary file in the same folder, then rename): readers never see half a file."""
    p = Path(path)
    p.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=p.parent, prefix=f".{p.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "w") as f:
            json.dump(profile, f, indent=2, sort_keys=True, default=str)
            f.write("\n")
        os.replace(tmp, p)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return p


def new_profile(key: dict[str, Any], existing: dict[str, Any] | None = None) -> dict[str, Any]:
    """A profile for `key`, keeping the methods of an existing one for the same key."""
    methods = dict((existing or {}).get("methods") or {})
    skipped = dict((existing or {}).get("skipped") or {})
    return {"schema": SCHEMA, "key": key, "hash": key_hash(key), "library_version": library_version(),
            "updated": time.strftime("%Y-%m-%dT%H:%M:%S%z"), "methods": methods, "skipped": skipped}
