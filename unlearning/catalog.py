"""What is registered, read from the sources without importing torch: `unlearn methods`, params checks.

Importing the methods costs seconds (torch, then every method module); listing them should not. Each
`@register_method("name", needs=..., scenarios=..., tasks=...)` decorator and the registered function's
docstring are literals in `unlearning/methods/*.py`, so the catalogue parses them with `ast`. A contract
test holds it equal to `unlearning.steps.describe_methods()`, the registry's own answer. Dataset and
model names come the same way from `@register_dataset("...")` / `@register_model("...")`, so params can
be checked by commands that never build a model (`unlearn status`, `promote`, `rollback`).
"""

from __future__ import annotations

import ast
import copy
import threading
from pathlib import Path
from typing import Any

PACKAGE_DIR = Path(__file__).parent
METHODS_DIR = PACKAGE_DIR / "methods"
_NAMED = {"dataset": ("datasets.py", "register_dataset"), "model": ("models.py", "register_model")}
# The defaults of `register_method` (unlearning/methods/base.py); the contract test checks they agree.
DEFAULT_SCENARIOS = ["class", "ids", "random", "range", "subclass"]
DEFAULT_TASKS = ["classification"]
# CPython 3.11 keeps the AST validator's recursion depth in global state: two threads parsing at once can
# fail with "SystemError: AST constructor recursion depth mismatch" (python/cpython#106905). The flow loads
# params in several stage threads, and each load checks method names here: a pipeline run failed so.
_parse_lock = threading.Lock()
_catalogues: dict[tuple, list[dict[str, Any]]] = {}


def _parse(path: Path, filename: str) -> ast.Module:
    """`ast.parse` of one source file, one thread at a time."""
    text = path.read_text(encoding="utf-8")
    with _parse_lock:
        return ast.parse(text, filename=filename)


def summary(docstring: str | None) -> str:
    """The first paragraph of a docstring on one line (a summary may wrap over several source lines)."""
    first = (docstring or "").strip().split("\n\n")[0]
    return " ".join(line.strip() for line in first.splitlines())


def _strings(node: ast.expr, where: str) -> list[str]:
    """A set/list/tuple literal of strings, or `set()` / `frozenset()`, as a sorted list."""
    if isinstance(node, ast.Call) and not node.args and getattr(node.func, "id", "") in ("set", "frozenset"):
        return []
    if isinstance(node, ast.Set | ast.List | ast.Tuple) and all(
            isinstance(e, ast.Constant) and isinstance(e.value, str) for e in node.elts):
        return sorted(e.value for e in node.elts)  # type: ignore[attr-defined]
    raise ValueError(f"{where}: register_method arguments must be literal sets of strings")


def _reasons(node: ast.expr, where: str) -> dict[str, str]:
    """A dict literal of string keys to string values (adjacent string literals are one constant)."""
    if isinstance(node, ast.Dict) and all(isinstance(n, ast.Constant) and isinstance(n.value, str)
                                          for n in [*node.keys, *node.values]):
        return {k.value: v.value for k, v in zip(node.keys, node.values, strict=True)}  # type: ignore[union-attr]
    raise ValueError(f"{where}: register_method's weak_on must be a literal dict of strings")


def _entry(fn: ast.FunctionDef, call: ast.Call, where: str) -> dict[str, Any]:
    if not call.args or not isinstance(call.args[0], ast.Constant):
        raise ValueError(f"{where}: register_method needs the method name as a literal first argument")
    kw = {k.arg: k.value for k in call.keywords}
    return {"name": call.args[0].value, "summary": summary(ast.get_docstring(fn)),
            "needs": _strings(kw["needs"], where) or ["none"],
            "scenarios": _strings(kw["scenarios"], where) if "scenarios" in kw else list(DEFAULT_SCENARIOS),
            "tasks": _strings(kw["tasks"], where) if "tasks" in kw else list(DEFAULT_TASKS),
            "weak_on": _reasons(kw["weak_on"], where) if "weak_on" in kw else {}}


def method_catalogue(directory: Path = METHODS_DIR) -> list[dict[str, Any]]:
    """Name, summary, data touched, scenarios and tasks of every method in `directory`, sorted by name."""
    paths = sorted(directory.glob("*.py"))
    key = (str(directory), *((p.name, st.st_mtime_ns, st.st_size) for p in paths for st in [p.stat()]))
    if key not in _catalogues:  # parsed once per version of the sources (params are loaded many times a run)
        rows = []
        for path in paths:
            for node in _parse(path, str(path)).body:
                if not isinstance(node, ast.FunctionDef):
                    continue
                for deco in node.decorator_list:
                    if isinstance(deco, ast.Call) and getattr(deco.func, "id", "") == "register_method":
                        rows.append(_entry(node, deco, f"{path.name}:{node.lineno}"))
        _catalogues[key] = sorted(rows, key=lambda r: r["name"])
    return copy.deepcopy(_catalogues[key])


def registered_names(kind: str) -> list[str]:
    """Names registered with `@register_dataset("...")` or `@register_model("...")` (kind: dataset, model)."""
    if kind not in _NAMED:
        raise ValueError(f"'kind' must be one of {sorted(_NAMED)}; got {kind!r}")
    filename, decorator = _NAMED[kind]
    tree = _parse(PACKAGE_DIR / filename, filename)
    return sorted(deco.args[0].value for node in tree.body if isinstance(node, ast.FunctionDef | ast.ClassDef)
                  for deco in node.decorator_list
                  if isinstance(deco, ast.Call) and getattr(deco.func, "id", "") == decorator
                  and deco.args and isinstance(deco.args[0], ast.Constant))
