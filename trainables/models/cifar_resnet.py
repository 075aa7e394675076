"""The CIFAR ResNets of He et al. (2016), Section 4.2: ResNet-20, -32 and -56.

A 3x3 convolution with 16 filters, then three stages of n basic blocks each (n = 3, 5, 9) with
16, 32 and 64 filters, the second and third starting with a stride-2 block, then global average
pooling and one linear layer: depth 6n + 2. Shortcuts are He et al.'s option A, the one used for
their CIFAR results and parameter counts (ResNet-20 0.27M, -32 0.46M, -56 0.85M): identity,
and where the shape changes, stride-2 subsampling with the new channels zero-padded, so no
shortcut has parameters. (OpenLTH's `cifar_resnet_N` uses 1x1 projection shortcuts, option B,
which add about 2.8K prunable weights to ResNet-20.) `model.width` scales the 16/32/64 filters.
"""

from __future__ import annotations

from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from trainables.models.common import model_entry, register_model, resolved_width

DEPTHS = {"resnet20": 20, "resnet32": 32, "resnet56": 56}


class ZeroPadShortcut(nn.Module):
    """Option A: take every `stride`-th pixel and zero-pad the missing channels (no weights)."""

    def __init__(self, in_channels: int, out_channels: int, stride: int) -> None:
        super().__init__()
        self.stride = stride
        self.extra = out_channels - in_channels

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = x[:, :, :: self.stride, :: self.stride]
        return F.pad(x, (0, 0, 0, 0, self.extra // 2, self.extra - self.extra // 2))


class CifarBlock(nn.Module):
    """Two 3x3 convolutions with BatchNorm, ReLU after the first and after the sum."""

    def __init__(self, in_channels: int, out_channels: int, stride: int) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(in_channels, out_channels, 3, stride, padding=1, bias=False)
        self.bn1 = nn.BatchNorm2d(out_channels)
        self.conv2 = nn.Conv2d(out_channels, out_channels, 3, 1, padding=1, bias=False)
        self.bn2 = nn.BatchNorm2d(out_channels)
        if stride == 1 and in_channels == out_channels:
            self.shortcut: nn.Module = nn.Identity()
        else:
            self.shortcut = ZeroPadShortcut(in_channels, out_channels, stride)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        out = F.relu(self.bn1(self.conv1(x)))
        out = self.bn2(self.conv2(out))
        return F.relu(out + self.shortcut(x))


class CifarResNet(nn.Module):
    """ResNet-(6n+2) for 32x32 inputs, option-A shortcuts (module doc)."""

    def __init__(self, depth: int, num_classes: int, width: int = 16, in_channels: int = 3):
        super().__init__()
        if (depth - 2) % 6:
            raise ValueError(f"a CIFAR ResNet has depth 6n + 2, got {depth}")
        blocks = (depth - 2) // 6
        self.conv1 = nn.Conv2d(in_channels, width, 3, 1, padding=1, bias=False)
        self.bn1 = nn.BatchNorm2d(width)
        stages = []
        channels = width
        for stage, out_channels in enumerate((width, 2 * width, 4 * width)):
            layers = []
            for index in range(blocks):
                stride = 2 if stage > 0 and index == 0 else 1
                layers.append(CifarBlock(channels, out_channels, stride))
                channels = out_channels
            stages.append(nn.Sequential(*layers))
        self.layer1, self.layer2, self.layer3 = stages
        self.avgpool = nn.AdaptiveAvgPool2d(1)
        self.fc = nn.Linear(channels, num_classes)
        for module in self.modules():  # He initialisation, as torchvision's ResNet
            if isinstance(module, nn.Conv2d):
                nn.init.kaiming_normal_(module.weight, mode="fan_out", nonlinearity="relu")
            elif isinstance(module, nn.BatchNorm2d):
                nn.init.ones_(module.weight)
                nn.init.zeros_(module.bias)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = F.relu(self.bn1(self.conv1(x)))
        x = self.layer3(self.layer2(self.layer1(x)))
        return self.fc(torch.flatten(self.avgpool(x), 1))


def _register(name: str, depth: int) -> None:
    @register_model(name, standard_width=16)
    def build(cfg: Any, num_classes: int, in_channels: int = 3) -> nn.Module:
        width = resolved_width(cfg, model_entry(name))
        return CifarResNet(depth, num_classes, width=width, in_channels=in_channels)


for _name, _depth in DEPTHS.items():
    _register(_name, _depth)
