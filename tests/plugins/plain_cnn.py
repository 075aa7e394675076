"""A network without BatchNorm, brought in as a plug-in by the data-parallel tests.

With BatchNorm, each data-parallel worker normalises its part of the batch with that part's own
statistics, so 2 workers train a (slightly) different network than 1 (train.sync_bn fixes that on
GPUs). Without it, the two differ only in the order of float additions, which is what the tests
of the data-parallel machinery must isolate.
"""

from __future__ import annotations

from typing import Any

from torch import nn

from trainables.models import register_model


@register_model("plain_cnn", standard_width=8)
def build(cfg: Any, num_classes: int, in_channels: int = 3) -> nn.Module:
    width = cfg.width or 8
    return nn.Sequential(
        nn.Conv2d(in_channels, width, 3, padding=1), nn.ReLU(),
        nn.Conv2d(width, 2 * width, 3, padding=1, stride=2), nn.ReLU(),
        nn.Conv2d(2 * width, 2 * width, 3, padding=1, stride=2), nn.ReLU(),
        nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(2 * width, num_classes),
    )
