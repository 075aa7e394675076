"""Datasets too large to decode once into memory (ImageNet): read from disk every epoch.

`StreamingSplits` offers the same `batches(split, ...)` as `ImageSplits`. DataLoader workers
decode each file and apply the same storage rule the in-memory cache applies once (train:
`store_size` square; eval: `image_size` center crop), the main process moves the uint8 batch to
the device, and the same `BatchAugment` runs there. The batch order and the augmentation draws
come from the same generator in the same order as the in-memory path (`batch_indices`,
`device_generator`), so a seed gives the same batches whichever path a dataset takes.

Memory bound: the DataLoader keeps at most `workers x prefetch` decoded uint8 batches in flight
(its `prefetch_factor` per worker), each `batch_size x 3 x S x S` bytes with S = `store_size` for
training and `image_size` for evaluation, plus the batch on its way to the device. Nothing else
grows with the dataset except the file list itself (one path string and one label per image).
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any

import torch
from torch.utils.data import DataLoader, Dataset

from trainables.batches import batch_indices, device_generator
from trainables.datasets.common import store_size_for
from trainables.datasets.storage import decode_image_file, storage_transform


class _ImageFiles(Dataset):
    """(stored uint8 image, label) for each file: decoding happens in the DataLoader workers."""

    def __init__(
        self,
        paths: tuple[str, ...],
        labels: torch.Tensor,
        transform: Callable[[torch.Tensor], torch.Tensor],
    ) -> None:
        self.paths = paths
        self.labels = labels
        self.transform = transform

    def __len__(self) -> int:
        return len(self.paths)

    def __getitem__(self, index: int) -> tuple[torch.Tensor, torch.Tensor]:
        image = self.transform(decode_image_file(self.paths[index])).contiguous()
        return image, self.labels[index]


@dataclass(frozen=True, eq=False)
class StreamingSplits:
    """A dataset's three splits as image files plus int64 labels, decoded batch by batch.

    `workers` DataLoader processes decode; each keeps at most `prefetch` batches ready. The
    metadata fields mean what they mean on `ImageSplits`.
    """

    name: str
    files: dict[str, tuple[tuple[str, ...], torch.Tensor]]
    num_classes: int
    in_channels: int
    image_size: int
    mean: tuple[float, ...]
    std: tuple[float, ...]
    workers: int = 4
    prefetch: int = 2

    @property
    def store_size(self) -> int:
        """Side of the training images as decoded (before the random crop)."""
        return store_size_for(self.image_size)

    def size(self, split: str) -> int:
        """Number of images in `split`."""
        return len(self.files[split][0])

    def batches(
        self,
        split: str,
        batch_size: int,
        *,
        shuffle: bool,
        generator: torch.Generator | None,
        device: torch.device | str,
        augment: Any,
        drop_last: bool = False,
        max_batches: int | None = None,
    ) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        """(augmented float images, int64 labels) batches of `split` on `device`, decoded from
        disk by the DataLoader workers; the same batches `ImageSplits.batches` would yield."""
        if split not in self.files:
            raise ValueError(f"unknown split {split!r}; allowed: train, val, test")
        paths, labels = self.files[split]
        device = torch.device(device)
        indices = batch_indices(len(paths), batch_size, shuffle, generator, drop_last, max_batches)
        aug_generator = device_generator(generator, device)
        loader = DataLoader(
            _ImageFiles(paths, labels, storage_transform(split, self.image_size)),
            batch_sampler=[index.tolist() for index in indices],
            num_workers=self.workers,
            prefetch_factor=self.prefetch if self.workers > 0 else None,
            pin_memory=device.type == "cuda",
        )
        for images, targets in loader:
            images = images.to(device, non_blocking=True)
            targets = targets.to(device, non_blocking=True)
            yield augment(images, aug_generator), targets
