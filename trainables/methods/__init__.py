"""Pruning methods as plug-ins: one module per method (or family), registered with
`@register_method`. Every module of this package is imported here, so adding a method is adding
one file; nothing else names it (see README, "Adding a method")."""

import importlib
import pkgutil

from trainables.methods.base import METHODS, Method, register_method

# Modules that are not methods themselves but the machinery methods share.
_SHARED = {"base", "context", "controls", "dense_model", "retraining", "rounds"}

for _module in pkgutil.iter_modules(__path__):
    if _module.name not in _SHARED:
        importlib.import_module(f"{__name__}.{_module.name}")

__all__ = ["METHODS", "Method", "register_method"]
