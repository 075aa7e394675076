"""Pruning methods as plug-ins: one module per method (or family), registered with
`@register_method`. Every module of this package is imported here, so adding a method is adding
one file; nothing else names it (see docs/extending.md)."""

from trainables.methods.base import METHODS, Method, register_method
from trainables.plugins import import_submodules

# Modules that are not methods themselves but the machinery methods share.
_SHARED = {"base", "context", "controls", "dense_model", "penalties", "retraining", "rounds"}

import_submodules(__name__, __path__, skip=_SHARED)

__all__ = ["METHODS", "Method", "register_method"]
