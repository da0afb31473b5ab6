"""Unlearning methods. Every module in this package registers its method on import."""

import importlib
import pkgutil

from .base import (
    METHODS,
    DataAccessError,
    MethodConfig,
    MethodInfo,
    UnlearnInputs,
    UnlearnResult,
    list_methods,
    register_method,
    unlearn,
    unsupported_reason,
)

for _mod in pkgutil.iter_modules(__path__):
    if _mod.name != "base" and not _mod.name.startswith("_"):
        importlib.import_module(f"{__name__}.{_mod.name}")

__all__ = ["METHODS", "DataAccessError", "MethodConfig", "MethodInfo", "UnlearnInputs", "UnlearnResult",
           "list_methods", "register_method", "unlearn", "unsupported_reason"]
