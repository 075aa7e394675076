"""`model: {name: tiny_cnn}`: two 3x3 convolutions (width w, then 2w, stride 2) with BatchNorm
and ReLU, global average pooling and a linear head; `model.width` sets w (default 8)."""

from __future__ import annotations

from typing import Any

from torch import nn

from trainables.models import register_model
from trainables.models.common import model_entry, resolved_width


@register_model("tiny_cnn", standard_width=8)
def build_tiny_cnn(cfg: Any, num_classes: int, in_channels: int) -> nn.Module:
    width = resolved_width(cfg, model_entry("tiny_cnn"))
    return nn.Sequential(
        nn.Conv2d(in_channels, width, 3, padding=1, bias=False),
        nn.BatchNorm2d(width),
        nn.ReLU(),
        nn.Conv2d(width, 2 * width, 3, stride=2, padding=1, bias=False),
        nn.BatchNorm2d(2 * width),
        nn.ReLU(),
        nn.AdaptiveAvgPool2d(1),
        nn.Flatten(),
        nn.Linear(2 * width, num_classes),
    )
