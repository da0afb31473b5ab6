"""DVC's reads and writes of dvc.yaml and dvc.lock from inside the flow, without parsing a text twice.

Each `Repo` the flow opens (one per DVC call, `flows._dvc`) parses dvc.yaml and dvc.lock again, once per
stage it collects: a batch of 23 stages parsed dvc.lock (2,000 lines) 23 times, 1.6 s of the GIL that the
concurrent evaluate stages need (measured with py-spy on a cold run). Under `fast_yaml()`:
- a safe (validated) load of an unchanged text returns a copy of the last result for that file;
- a round-trip load for an update reuses the document this process last wrote (`_modify_yaml`).
The text is read and compared every time, so a file changed by anyone else is parsed again. Files that are
not on the local file system (a Git revision) go to DVC's own functions.
"""

from __future__ import annotations

import copy
import os
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

# The round-trip YAML document of each DVC file as this process last wrote it: (text written, document).
_written: dict[str, tuple[str, object]] = {}
# The last safe load of each (file, schema): (text, validated data).
_parsed: dict[tuple[str, int], tuple[str, Any]] = {}


def _local(fs) -> bool:
    from dvc.fs import LocalFileSystem

    return fs is None or isinstance(fs, LocalFileSystem)


@contextmanager
def _modify_yaml(path, fs=None):
    """`dvc.utils.serialize.modify_yaml` (parse dvc.lock round-trip, let DVC update it, dump it) without the
    parse when the file still holds what this process last wrote: the document is reused as it is.

    The round-trip parse was 70 % of each `dvc commit` (dvc.lock of 24 stages: 0.5-1 s, once per stage, a
    third of the run's DVC time). A document DVC left unchanged is not written again.
    """
    import io

    from dvc.utils.serialize import _yaml

    if not _local(fs):
        with _yaml.modify_yaml(path, fs=fs) as data:
            yield data
        return
    key = os.path.abspath(os.fspath(path))
    text = Path(key).read_text(encoding="utf-8") if os.path.exists(key) else None
    last = _written.pop(key, None)
    if text is None:
        data = {}
    else:
        data = last[1] if last is not None and last[0] == text else _yaml.parse_yaml_for_update(text, key)
    yield data
    stream = io.StringIO()
    _yaml._dump(data, stream)
    out = stream.getvalue()
    if out != text:
        Path(key).write_text(out, encoding="utf-8")
    _written[key] = (out, data)


def _cached_load(original):
    """`dvc.utils.strictyaml.load` that parses and validates a given text of a file once."""

    def load(path, schema=None, fs=None, encoding="utf-8", round_trip=False):
        if round_trip or not _local(fs):
            return original(path, schema, fs, encoding, round_trip)
        key = (os.path.abspath(os.fspath(path)), id(schema))
        try:
            text = Path(key[0]).read_text(encoding=encoding)
        except (OSError, UnicodeDecodeError):  # DVC raises its own error for these
            return original(path, schema, fs, encoding, round_trip)
        hit = _parsed.get(key)
        if hit is not None and hit[0] == text:
            return copy.deepcopy(hit[1]), text
        data, text = original(path, schema, fs, encoding, round_trip)
        _parsed[key] = (text, copy.deepcopy(data))
        return data, text

    return load


@contextmanager
def fast_yaml() -> Iterator[None]:
    """DVC's dvc-file loads and writes go through the caches above for the block (callers hold
    `flows._dvc`'s lock, so no other thread calls DVC meanwhile)."""
    import dvc.dvcfile
    import dvc.utils.strictyaml

    saved = dvc.dvcfile.modify_yaml, dvc.utils.strictyaml.load
    dvc.dvcfile.modify_yaml = _modify_yaml
    dvc.utils.strictyaml.load = _cached_load(saved[1])
    try:
        yield
    finally:
        dvc.dvcfile.modify_yaml, dvc.utils.strictyaml.load = saved
