"""Models registry: one module per model family, each registering its builders.

Adding a model means adding one module here that registers it with `register_model` (or a
family of names with `register_family`): every module of this package is imported here, so
nothing else names it (a model from the user's own package is a plug-in, see
`trainables/plugins.py`).
"""

from trainables.models.common import (
    MODELS,
    ModelEntry,
    build_model,
    check_model_name,
    check_weights_available,
    count_parameters,
    model_entry,
    model_families,
    register_family,
    register_model,
)
from trainables.models.resnet18 import WidthResNet
from trainables.models.weights import load_trunk_weights
from trainables.plugins import import_submodules

import_submodules(__name__, __path__)

__all__ = [
    "MODELS",
    "ModelEntry",
    "WidthResNet",
    "build_model",
    "check_model_name",
    "check_weights_available",
    "count_parameters",
    "load_trunk_weights",
    "model_entry",
    "model_families",
    "register_family",
    "register_model",
]
