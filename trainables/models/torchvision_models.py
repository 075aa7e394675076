"""`torchvision:<name>`: any classifier of `torchvision.models.list_models(module=
torchvision.models)` (resnet50, mobilenet_v3_small, vit_b_16, ...).

Built by torchvision's own builder with `num_classes` set to the dataset's, so the head is
resized and initialised the way torchvision initialises it. `model.pretrained` loads the
builder's DEFAULT ImageNet weights through the torch hub cache (like resnet18), keeping the
fresh head where the class count differs. Prunable layers and parameter counts follow the same
rules as every model (every Conv2d and Linear weight; nn.MultiheadAttention's packed in-projection
in the ViTs is neither, so it is not prunable). GoogLeNet and Inception-v3 are built without
their auxiliary classifiers (whose training-time outputs the loop does not use); their ImageNet
files' auxiliary weights are left out, and with `pretrained` they normalise inputs the way those
weights expect (`transform_input`), as torchvision does.
"""

from __future__ import annotations

import functools
from typing import Any

from torch import nn

from pruning.registry import did_you_mean
from trainables.errors import ConfigError
from trainables.models.common import ModelEntry, register_family

PREFIX = "torchvision:"
_WITHOUT_AUX = {"aux_logits": False, "init_weights": True}
_BUILD_OPTIONS: dict[str, dict[str, Any]] = {
    "googlenet": _WITHOUT_AUX,
    "inception_v3": _WITHOUT_AUX,
}
_PRETRAINED_OPTIONS: dict[str, dict[str, Any]] = {
    "googlenet": {"transform_input": True},
    "inception_v3": {"transform_input": True},
}
_AUX_WEIGHTS = {"googlenet": ("aux1.", "aux2."), "inception_v3": ("AuxLogits.",)}


@functools.cache
def classifier_names() -> tuple[str, ...]:
    """torchvision's image classifiers (not detection, segmentation, video, quantized)."""
    import torchvision

    return tuple(torchvision.models.list_models(module=torchvision.models))


def _builder(name: str):
    def build(cfg: Any, num_classes: int, in_channels: int = 3) -> nn.Module:
        import torchvision

        if in_channels != 3:
            raise ConfigError(
                f"{PREFIX}{name} takes RGB images; the dataset has {in_channels} channel(s)"
            )
        options = dict(_BUILD_OPTIONS.get(name, {}))
        if getattr(cfg, "pretrained", False):
            options.update(_PRETRAINED_OPTIONS.get(name, {}))
        return torchvision.models.get_model(name, weights=None, num_classes=num_classes, **options)

    return build


def _imagenet_weights(name: str):
    def weights(cfg: Any) -> Any:
        import torchvision

        return torchvision.models.get_model_weights(name).DEFAULT

    return weights


def torchvision_entry(name: str) -> ModelEntry:
    """The entry of `torchvision:<name>`; ConfigError for a name torchvision does not have."""
    if name not in classifier_names():
        raise ConfigError(
            f"unknown torchvision classifier {name!r}{did_you_mean(name, list(classifier_names()))}"
            "; see torchvision.models.list_models(module=torchvision.models)"
        )
    return ModelEntry(
        build=_builder(name),
        imagenet_weights=_imagenet_weights(name),
        dropped_weights=_AUX_WEIGHTS.get(name, ()),
    )


register_family(PREFIX, torchvision_entry)
