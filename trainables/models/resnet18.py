"""ResNet-18 variants built from torchvision's own `ResNet` and `BasicBlock`.

Parameter names are torchvision's (`conv1.weight`, `layer1.0.bn2.running_mean`, `fc.bias`, ...),
so ImageNet weights load unchanged.
"""

from __future__ import annotations

from typing import Any

from torch import nn
from torchvision.models import ResNet18_Weights
from torchvision.models.resnet import BasicBlock, ResNet

from trainables.errors import ConfigError
from trainables.models.common import model_entry, register_model, resolved_width


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


@register_model(
    "resnet18", imagenet_weights=lambda cfg: ResNet18_Weights.IMAGENET1K_V1, standard_width=64
)
def resnet18(cfg: Any, num_classes: int, in_channels: int = 3) -> nn.Module:
    """torchvision's ResNet-18 (7x7 stride-2 stem + max-pool) with a `num_classes` head;
    `model.pretrained` loads torchvision's IMAGENET1K_V1 weights (width 64, RGB)."""
    width = resolved_width(cfg, model_entry("resnet18"))
    return WidthResNet([2, 2, 2, 2], num_classes, width=width, in_channels=in_channels)


@register_model("resnet18_cifar", standard_width=64)
def resnet18_cifar(cfg: Any, num_classes: int, in_channels: int = 3) -> nn.Module:
    """ResNet-18 for small images: 3x3 stride-1 stem, no max-pool, torchvision's block names.
    ImageNet weights do not apply; `model.weights_path` loads a state dict of this model."""
    width = resolved_width(cfg, model_entry("resnet18_cifar"))
    return WidthResNet(
        [2, 2, 2, 2], num_classes, width=width, in_channels=in_channels, small_input=True
    )
