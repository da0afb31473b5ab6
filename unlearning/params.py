"""`params.yaml`: read, overridden (`--set section.key=value`, parsed as YAML) and validated once at load.

`Params` (in `typed_params`, built on first use) types every method's section, so a bad method key or
value fails before anything trains; `CoreParams` types the rest and checks methods by name only, for
commands that never run one. This module imports neither torch nor the methods.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import TYPE_CHECKING, Any

import yaml
from pydantic import ValidationError

from .config import REQUEST_KINDS, CoreParams

if TYPE_CHECKING:
    from .typed_params import Params

# `evaluate.seeds` or `evaluate.seed` + `evaluate.more_seeds`: an override of one form drops the other.
SEED_KEYS = {"seeds": ("seed", "more_seeds"), "seed": ("seeds",), "more_seeds": ("seeds",)}

_TYPED = ("Params", "UnlearnConfig")


def __getattr__(name: str) -> Any:
    """`Params` (every method's section typed) is built on first use: it imports torch and every method."""
    if name in _TYPED:
        from . import typed_params

        return getattr(typed_params, name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


class ConfigError(ValueError):
    """A params file or override that does not validate; the message names the key."""


def _allowed_keys(model: Any, loc: tuple[Any, ...]) -> list[str]:
    """Field names of the config section at `loc` (walking `model` by field annotations)."""
    for part in loc:
        field = getattr(model, "model_fields", {}).get(part)
        if field is None:
            return []
        model = field.annotation
    return sorted(getattr(model, "model_fields", {}))


def _first_error(err: ValidationError, model: Any) -> str:
    parts = []
    for e in err.errors():
        loc = ".".join(str(p) for p in e["loc"]) or "(root)"
        msg = e["msg"].removeprefix("Value error, ")
        if e["type"] == "extra_forbidden":
            msg = f"unknown key; allowed: {_allowed_keys(model, e['loc'][:-1])}"
        given = e.get("input")
        where = "" if msg.startswith(f"{loc} ") else f"{loc}: "  # a message that already names its key
        parts.append(f"{where}{msg}" + ("" if isinstance(given, dict) else f" (given: {given!r})"))
    return "; ".join(parts)


_KEY = re.compile(r"[A-Za-z0-9_]+")


def _yaml(text: str, where: str) -> Any:
    """`yaml.safe_load`, with bad YAML as a one-line `ConfigError` naming where and the line / column."""
    try:
        return yaml.safe_load(text)
    except yaml.YAMLError as err:
        mark = getattr(err, "problem_mark", None)
        at = f" at line {mark.line + 1}, column {mark.column + 1}" if mark is not None else ""
        problem = getattr(err, "problem", None) or type(err).__name__
        raise ConfigError(f"{where}: invalid YAML{at}: {problem}") from None


def apply_overrides(raw: dict[str, Any], overrides: list[str]) -> dict[str, Any]:
    """Apply `section.key=value` overrides; values are parsed as YAML (`[a, b]`, `0.1`, `true`)."""
    out = yaml.safe_load(yaml.safe_dump(raw)) or {}
    for item in overrides:
        if "=" not in item:
            raise ConfigError(f"override must look like section.key=value; got {item!r}")
        key, value = item.split("=", 1)
        node = out
        parts = key.strip().split(".")
        if not all(_KEY.fullmatch(p) for p in parts):
            raise ConfigError(f"override key must look like section.key (letters, digits, _); got {key!r}")
        for p in parts[:-1]:
            if not isinstance(node.get(p), dict):
                node[p] = {}
            node = node[p]
        node[parts[-1]] = _yaml(value, f"--set {key.strip()}")
        if parts[0] == "request" and len(parts) == 2 and parts[1] in REQUEST_KINDS:
            # A request names one kind: setting one replaces the others (keeps seed/val_fraction).
            for other in set(REQUEST_KINDS) - {parts[1]}:
                out["request"].pop(other, None)
        if parts[:1] == ["evaluate"] and len(parts) == 2 and parts[1] in SEED_KEYS:
            # Unlearning seeds are `seeds`, or `seed` + `more_seeds`: setting one form drops the other.
            for other in SEED_KEYS[parts[1]]:
                out["evaluate"].pop(other, None)
    return out


def parse_params(raw: dict[str, Any], overrides: list[str] | None = None, *, methods: bool = True) -> Any:
    """Validate a params mapping (after overrides), raising `ConfigError` with the key.

    `Params` with every method's settings typed; `methods=False`: `CoreParams` (no torch import).
    """
    data = apply_overrides(raw, overrides or [])
    if methods:
        from .typed_params import Params as model  # imports torch and every method
    else:
        model = CoreParams
    try:
        return model.model_validate(data)
    except ValidationError as err:
        raise ConfigError(f"invalid params: {_first_error(err, model)}") from None


def read_raw(path: str | Path) -> dict[str, Any]:
    """The mapping in a params file, before validation."""
    p = Path(path)
    if not p.exists():
        raise ConfigError(f"params file not found: {p}")
    raw = _yaml(p.read_text(), str(p)) or {}
    if not isinstance(raw, dict):
        raise ConfigError(f"{p}: expected a mapping of sections, got {type(raw).__name__}")
    return raw


def load_params(path: str | Path | None = "params.yaml", overrides: list[str] | None = None) -> Params:
    """Load `params.yaml` (or defaults when `path` is None) and apply `section.key=value` overrides."""
    return parse_params(read_raw(path) if path is not None else {}, overrides)
