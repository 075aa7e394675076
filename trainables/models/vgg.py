"""VGG-16 and VGG-19 for CIFAR as the pruning literature uses them (OpenLTH's `cifar_vgg_N`,
Frankle et al. 2020; Frankle & Carbin 2019): 3x3 convolutions (with bias) each followed by
BatchNorm and ReLU, 2x2 max-pools between the five stages (none after the last), global average
pooling and one linear layer from the last 512 channels, with no hidden fully connected layers.
That gives 14.7M parameters for VGG-16 and 20.0M for VGG-19 with 10 classes. `model.width`
scales the 64/128/256/512 filters (64 = standard).
"""

from __future__ import annotations

from typing import Any

import torch
from torch import nn

from trainables.models.common import model_entry, register_model, resolved_width

#: Filters per convolution at width 64; "M" is a 2x2 max-pool.
PLANS: dict[str, list[int | str]] = {
    "vgg16_bn": [64, 64, "M", 128, 128, "M", 256, 256, 256, "M", 512, 512, 512, "M",
                 512, 512, 512],
    "vgg19_bn": [64, 64, "M", 128, 128, "M", 256, 256, 256, 256, "M", 512, 512, 512, 512, "M",
                 512, 512, 512, 512],
}


class CifarVGG(nn.Module):
    """A VGG plan of 3x3 conv + BatchNorm + ReLU layers and max-pools, then one linear head."""

    def __init__(
        self, plan: list[int | str], num_classes: int, width: int = 64, in_channels: int = 3
    ) -> None:
        super().__init__()
        layers: list[nn.Module] = []
        channels = in_channels
        for spec in plan:
            if spec == "M":
                layers.append(nn.MaxPool2d(kernel_size=2, stride=2))
                continue
            out_channels = int(spec) * width // 64
            layers += [
                nn.Conv2d(channels, out_channels, 3, padding=1),
                nn.BatchNorm2d(out_channels),
                nn.ReLU(inplace=True),
            ]
            channels = out_channels
        self.features = nn.Sequential(*layers)
        self.avgpool = nn.AdaptiveAvgPool2d(1)
        self.fc = nn.Linear(channels, num_classes)
        for module in self.modules():  # torchvision's VGG initialisation
            if isinstance(module, nn.Conv2d):
                nn.init.kaiming_normal_(module.weight, mode="fan_out", nonlinearity="relu")
                nn.init.zeros_(module.bias)
            elif isinstance(module, nn.BatchNorm2d):
                nn.init.ones_(module.weight)
                nn.init.zeros_(module.bias)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc(torch.flatten(self.avgpool(self.features(x)), 1))


def _register(name: str) -> None:
    @register_model(name, standard_width=64)
    def build(cfg: Any, num_classes: int, in_channels: int = 3) -> nn.Module:
        width = resolved_width(cfg, model_entry(name))
        return CifarVGG(PLANS[name], num_classes, width=width, in_channels=in_channels)


for _name in PLANS:
    _register(_name)
