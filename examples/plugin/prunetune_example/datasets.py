"""`data: {name: rings}`: grey 16 px images of a ring whose radius is the class (4 classes),
with a jittered centre and noise; 128 / 64 / 64 images, generated from `data.split_seed`."""

from __future__ import annotations

from typing import Any

import torch

from trainables.datasets import DatasetDefaults, ImageSplits, register_dataset, resolved
from trainables.datasets.storage import make_splits

SIZES = {"train": 128, "val": 64, "test": 64}
RADII = (0.15, 0.25, 0.35, 0.45)


def ring_images(labels: torch.Tensor, size: int, generator: torch.Generator) -> torch.Tensor:
    coords = (torch.arange(size, dtype=torch.float32) + 0.5) / size
    yy, xx = torch.meshgrid(coords, coords, indexing="ij")
    centre = 0.5 + 0.05 * (torch.rand(len(labels), 2, 1, 1, generator=generator) - 0.5)
    distance = ((xx - centre[:, 0]) ** 2 + (yy - centre[:, 1]) ** 2).sqrt()
    radius = torch.tensor(RADII)[labels][:, None, None]
    image = torch.exp(-(((distance - radius) / 0.04) ** 2))
    image = image + 0.1 * torch.randn(image.shape, generator=generator)
    return (image[:, None] * 255).round_().clamp_(0, 255).to(torch.uint8)


@register_dataset("rings", DatasetDefaults(image_size=16, crop_scale_min=0.8, hflip=False))
def load_rings(cfg: Any) -> ImageSplits:
    image_size = resolved(cfg, "image_size")
    generator = torch.Generator().manual_seed(cfg.split_seed)
    arrays = {}
    for split, count in SIZES.items():
        labels = torch.arange(count) % len(RADII)
        arrays[split] = (ring_images(labels, image_size, generator), labels)
    return make_splits("rings", arrays, num_classes=len(RADII), image_size=image_size)
