"""Models registry: ResNet-18 variants built from torchvision's own `ResNet` and `BasicBlock`.

Parameter names are torchvision's (`conv1.weight`, `layer1.0.bn2.running_mean`, `fc.bias`, ...),
so ImageNet weights load unchanged. Initialisation draws from torch's global RNG: the caller
seeds it before `build_model`, which makes construction deterministic.
"""

from __future__ import annotations

import logging
import os
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch
from torch import nn
from torchvision.models import ResNet18_Weights
from torchvision.models.resnet import BasicBlock, ResNet

from trainables.errors import ConfigError, WeightsUnavailableError
from trainables.registry import Registry

logger = logging.getLogger(__name__)

MODELS: Registry[Callable[[Any, int, int], nn.Module]] = Registry("model")

#: The classifier head: replaced (not loaded) when the class count differs from the weights'.
HEAD_KEYS = ("fc.weight", "fc.bias")


class WidthResNet(ResNet):
    """torchvision's ResNet with a base width (64 = torchvision's) and a choice of stem.

    Stage widths are width * (1, 2, 4, 8). `small_input=True` is the CIFAR stem: a 3x3 stride-1
    first convolution and no max-pool, for inputs of about 32 px. Module names are unchanged (the
    max-pool becomes an Identity), so state dicts keep torchvision's keys.
    """

    def __init__(
        self,
        layers: list[int],
        num_classes: int,
        width: int = 64,
        in_channels: int = 3,
        small_input: bool = False,
    ) -> None:
        if width < 1:
            raise ConfigError(f"model.width must be >= 1, got {width}")
        self._base_width = width  # read by _make_layer during ResNet.__init__
        super().__init__(BasicBlock, layers, num_classes=num_classes)
        standard_stem = width == 64 and in_channels == 3 and not small_input
        if not standard_stem:
            # ResNet.__init__ hard-codes a 64-channel 7x7 RGB stem: rebuild it, initialised the
            # way ResNet.__init__ initialises convolutions.
            if small_input:
                self.conv1 = nn.Conv2d(in_channels, width, 3, stride=1, padding=1, bias=False)
                self.maxpool = nn.Identity()
            else:
                self.conv1 = nn.Conv2d(in_channels, width, 7, stride=2, padding=3, bias=False)
            nn.init.kaiming_normal_(self.conv1.weight, mode="fan_out", nonlinearity="relu")
            self.bn1 = self._norm_layer(width)
        if width != 64:
            self.fc = nn.Linear(8 * width * BasicBlock.expansion, num_classes)

    def _make_layer(
        self,
        block: type[BasicBlock],
        planes: int,
        blocks: int,
        stride: int = 1,
        dilate: bool = False,
    ) -> nn.Sequential:
        if planes == 64:  # the first stage: its input is the stem, `width` channels wide
            self.inplanes = self._base_width
        return super()._make_layer(block, planes * self._base_width // 64, blocks, stride, dilate)


def _check_pretrained(cfg: Any, in_channels: int) -> None:
    if cfg.width != 64:
        raise ConfigError(
            f"model.pretrained needs model.width 64 (ImageNet weights), got {cfg.width}"
        )
    if in_channels != 3:
        raise ConfigError(
            f"model.pretrained needs 3 input channels (ImageNet weights); "
            f"the dataset has {in_channels}"
        )


def _imagenet_state_dict() -> dict[str, torch.Tensor]:
    """torchvision's ResNet-18 ImageNet weights through its own mechanism (torch hub cache).

    Loads `$TORCH_HOME/hub/checkpoints/<file>` if present (no network, no hash check: torch hub
    checks the hash only when downloading), downloads it otherwise.
    """
    weights = ResNet18_Weights.IMAGENET1K_V1
    file_name = os.path.basename(weights.url)
    target = Path(torch.hub.get_dir()) / "checkpoints" / file_name
    try:
        return weights.get_state_dict(progress=False, check_hash=True)
    except Exception as error:  # network errors, HTTP errors, a bad cached file, ...
        reason = str(getattr(error, "reason", None) or error).splitlines()[0]
        raise WeightsUnavailableError(
            f"ImageNet ResNet-18 weights are not cached and could not be downloaded "
            f"({type(error).__name__}: {reason}); set model.weights_path to a local state dict "
            f"or put {file_name} at {target}"
        ) from None


def _local_state_dict(path: str) -> dict[str, torch.Tensor]:
    if not Path(path).is_file():
        raise WeightsUnavailableError(f"model.weights_path {path} is not a file")
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as error:
        reason = str(error).splitlines()[0] if str(error) else type(error).__name__
        raise WeightsUnavailableError(
            f"model.weights_path {path} is not a loadable state dict ({reason})"
        ) from None
    if isinstance(state, dict) and "state_dict" in state and isinstance(state["state_dict"], dict):
        state = state["state_dict"]
    if not isinstance(state, dict):
        raise WeightsUnavailableError(
            f"model.weights_path {path} holds a {type(state).__name__}, not a state dict"
        )
    return state


def check_weights_available(cfg: Any) -> None:
    """Raise WeightsUnavailableError now, not inside a trial, if the starting weights a model
    config asks for cannot be loaded (downloading them into the torch hub cache if needed)."""
    if cfg.weights_path:
        _local_state_dict(cfg.weights_path)
    elif cfg.pretrained:
        _imagenet_state_dict()


def load_trunk_weights(model: nn.Module, state: dict[str, torch.Tensor], source: str) -> None:
    """Load `state` into `model`, strictly, except a classifier head of a different shape.

    A head whose shape differs (another class count) is skipped with a log note and keeps its
    fresh initialisation; any other missing, unexpected or mis-shaped key is a
    WeightsUnavailableError listing them.
    """
    own = model.state_dict()
    state = dict(state)
    skipped = [k for k in HEAD_KEYS if k in state and k in own and state[k].shape != own[k].shape]
    for key in skipped:
        del state[key]
    missing = sorted(set(own) - set(state) - set(skipped))
    unexpected = sorted(set(state) - set(own))
    mis_shaped = sorted(k for k in set(state) & set(own) if state[k].shape != own[k].shape)
    if missing or unexpected or mis_shaped:
        parts = []
        for label, keys in (("missing", missing), ("unexpected", unexpected)):
            if keys:
                parts.append(f"{label} keys {_abbreviate(keys)}")
        if mis_shaped:
            shapes = [f"{k} {tuple(state[k].shape)} vs {tuple(own[k].shape)}" for k in mis_shaped]
            parts.append(f"shape mismatches {_abbreviate(shapes)}")
        raise WeightsUnavailableError(
            f"weights from {source} do not fit the model: {'; '.join(parts)}"
        )
    model.load_state_dict(state, strict=False)
    if skipped:
        logger.info(
            "weights from %s: head %s skipped (another class count), freshly initialised",
            source,
            ", ".join(skipped),
        )


def _abbreviate(items: list[str], limit: int = 8) -> str:
    shown = ", ".join(items[:limit])
    return shown + (f", ... ({len(items)} in all)" if len(items) > limit else "")


@MODELS.register("resnet18")
def resnet18(cfg: Any, num_classes: int, in_channels: int = 3) -> nn.Module:
    """torchvision's ResNet-18 (7x7 stride-2 stem + max-pool) with a `num_classes` head.

    `cfg.weights_path` loads a local state dict (every key strictly, except a head of another
    class count, which stays fresh); otherwise `cfg.pretrained` loads torchvision's IMAGENET1K_V1
    weights (torch hub cache, honouring TORCH_HOME) and replaces the head. `pretrained` needs
    width 64 and 3 input channels (ConfigError otherwise).
    """
    pretrained = getattr(cfg, "pretrained", False)
    weights_path = getattr(cfg, "weights_path", None)
    if pretrained:
        _check_pretrained(cfg, in_channels)
    model = WidthResNet([2, 2, 2, 2], num_classes, width=cfg.width, in_channels=in_channels)
    if weights_path:
        load_trunk_weights(model, _local_state_dict(weights_path), str(weights_path))
    elif pretrained:
        load_trunk_weights(model, _imagenet_state_dict(), "torchvision IMAGENET1K_V1")
    return model


@MODELS.register("resnet18_cifar")
def resnet18_cifar(cfg: Any, num_classes: int, in_channels: int = 3) -> nn.Module:
    """ResNet-18 for small images: 3x3 stride-1 stem, no max-pool, torchvision's block names.

    `cfg.weights_path` loads a local state dict of this architecture; ImageNet weights do not
    apply (ConfigError for `pretrained`).
    """
    if getattr(cfg, "pretrained", False):
        raise ConfigError(
            "model.pretrained is only available for model.name resnet18 (ImageNet weights)"
        )
    model = WidthResNet(
        [2, 2, 2, 2], num_classes, width=cfg.width, in_channels=in_channels, small_input=True
    )
    weights_path = getattr(cfg, "weights_path", None)
    if weights_path:
        load_trunk_weights(model, _local_state_dict(weights_path), str(weights_path))
    return model


def build_model(cfg: Any, num_classes: int, in_channels: int = 3) -> nn.Module:
    """The model `cfg.name` (a ModelConfig or any object with its attributes), on the CPU."""
    if num_classes < 1:
        raise ValueError(f"num_classes must be >= 1, got {num_classes}")
    return MODELS.get(cfg.name)(cfg, num_classes, in_channels)


def count_parameters(model: nn.Module) -> int:
    """All parameters (weights, biases, BatchNorm affine), trainable or not; no buffers."""
    return sum(p.numel() for p in model.parameters())
