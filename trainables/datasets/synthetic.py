"""Unit-test data: coloured stripe patterns, built in milliseconds, no files."""

from __future__ import annotations

from typing import Any

import torch

from trainables.datasets.common import (
    DatasetDefaults,
    ImageSplits,
    register_dataset,
    resolved,
    store_size_for,
)
from trainables.datasets.storage import make_splits, store_arrays

SYNTHETIC_SIZES = {"train": 256, "val": 128, "test": 128}
SYNTHETIC_CLASSES = 10


def _synthetic_images(labels: torch.Tensor, size: int, generator: torch.Generator) -> torch.Tensor:
    """Class k: a stripe pattern at angle pi*k/10 with a class colour, plus Gaussian noise."""
    coords = (torch.arange(size, dtype=torch.float32) + 0.5) / size
    yy, xx = torch.meshgrid(coords, coords, indexing="ij")
    k = labels.to(torch.float32)[:, None, None]
    angle = torch.pi * k / SYNTHETIC_CLASSES
    # A little phase jitter: varied samples whose class means still show the stripes.
    phase = torch.rand(len(labels), 1, 1, generator=generator) * torch.pi / 2
    stripes = torch.sin(2 * torch.pi * 3 * (xx * torch.cos(angle) + yy * torch.sin(angle)) + phase)
    colour = torch.stack(
        [torch.cos(2 * torch.pi * (k + c / 3) / SYNTHETIC_CLASSES) for c in range(3)], dim=1
    )  # (N, 3, 1, 1)
    x = 0.5 + 0.25 * stripes[:, None] * (0.6 + 0.4 * colour)
    x = x + 0.08 * torch.randn(x.shape, generator=generator)
    return (x * 255).round_().clamp_(0, 255).to(torch.uint8)


@register_dataset("synthetic", DatasetDefaults(image_size=16, crop_scale_min=0.8, hflip=False))
def load_synthetic(cfg: Any) -> ImageSplits:
    """Unit-test data: 10 classes of coloured stripe patterns + noise, 256/128/128 images, RGB.

    Deterministic (seeded by `cfg.split_seed`), learnable within a few epochs, built in ms.
    """
    image_size = resolved(cfg, "image_size")
    generator = torch.Generator().manual_seed(1000 + getattr(cfg, "split_seed", 0))
    arrays = {}
    for split, n in SYNTHETIC_SIZES.items():
        labels = torch.arange(n, dtype=torch.int64) % SYNTHETIC_CLASSES
        labels = labels[torch.randperm(n, generator=generator)].contiguous()
        # Drawn square at the store size, so the storage rule only crops (no resampling).
        images = _synthetic_images(labels, store_size_for(image_size), generator)
        arrays[split] = (store_arrays(images, split, image_size), labels)
    return make_splits("synthetic", arrays, num_classes=SYNTHETIC_CLASSES, image_size=image_size)
