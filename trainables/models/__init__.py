"""Models registry: one module per model family, each registering its builders.

Adding a model means adding one module here that registers it with `register_model` (or a
family of names with `register_family`) and importing it below.
"""

from trainables.models import cifar_resnet, resnet18, torchvision_models, vgg
from trainables.models.common import (
    MODELS,
    ModelEntry,
    build_model,
    check_model_name,
    check_weights_available,
    count_parameters,
    model_entry,
    register_family,
    register_model,
)
from trainables.models.resnet18 import WidthResNet
from trainables.models.weights import load_trunk_weights

__all__ = [
    "MODELS",
    "ModelEntry",
    "WidthResNet",
    "build_model",
    "check_model_name",
    "check_weights_available",
    "cifar_resnet",
    "count_parameters",
    "load_trunk_weights",
    "model_entry",
    "register_family",
    "register_model",
    "resnet18",
    "torchvision_models",
    "vgg",
]
