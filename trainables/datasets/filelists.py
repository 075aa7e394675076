"""Datasets of image files (Flowers-102, ImageFolder trees, ImageNet): decode once into the
uint8 cache where it fits, else stream from disk.

Where the switch happens (`data.storage`): `memory` decodes every image once into the in-memory
uint8 cache (kept on disk under the cache dir and shared by the trials of a node through Ray's
object store); `stream` reads the files every epoch through DataLoader workers
(`streaming.py`); `auto` (the default) takes `memory` when the decoded splits need at most
`AUTO_MEMORY_LIMIT_BYTES` and `stream` otherwise. Decoded size: 3 bytes per pixel, train images
at `store_size` square, val/test at `image_size` square.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from typing import Any

import torch

from trainables.datasets.common import (
    IMAGENET_MEAN,
    IMAGENET_STD,
    ImageSplits,
    resolved,
    resolved_cache_dir,
    store_size_for,
)
from trainables.datasets.storage import (
    CACHE_FORMAT,
    SPLITS,
    decode_files,
    disk_cached_splits,
    make_splits,
    storage_transform,
)
from trainables.datasets.streaming import StreamingSplits
from trainables.errors import DatasetUnavailableError

#: `storage: auto` streams a dataset whose decoded splits would need more than this (8 GiB).
AUTO_MEMORY_LIMIT_BYTES = 8 * 2**30
#: Batches each streaming worker keeps ready when data.prefetch is None. data.workers None stays
#: None here: each trial resolves it from its CPUs (`streaming.default_workers`).
DEFAULT_PREFETCH = 2


@dataclass(frozen=True)
class FileLists:
    """A dataset's image files and labels (0..num_classes-1) per split."""

    files: dict[str, tuple[list[str], list[int]]]
    num_classes: int

    def fingerprint(self) -> str:
        """A short hash of every path and label: a cache built from other files never matches."""
        digest = hashlib.sha256()
        for split in SPLITS:
            paths, labels = self.files[split]
            digest.update(f"{split}:{len(paths)}\n".encode())
            for path, label in zip(paths, labels, strict=True):
                digest.update(f"{path}\t{label}\n".encode())
        return digest.hexdigest()[:12]


def decoded_bytes(lists: FileLists, image_size: int) -> int:
    """Bytes the decoded uint8 splits would take in memory (3 channels)."""
    sides = {"train": store_size_for(image_size), "val": image_size, "test": image_size}
    return sum(len(lists.files[split][0]) * 3 * sides[split] ** 2 for split in SPLITS)


def resolved_storage(cfg: Any, lists: FileLists, image_size: int) -> str:
    """`memory` or `stream`: data.storage, with `auto` decided by the decoded size."""
    storage = getattr(cfg, "storage", None) or "auto"
    if storage != "auto":
        return storage
    fits = decoded_bytes(lists, image_size) <= AUTO_MEMORY_LIMIT_BYTES
    return "memory" if fits else "stream"


def file_dataset(
    cfg: Any,
    name: str,
    lists: FileLists,
    mean: tuple[float, ...] = IMAGENET_MEAN,
    std: tuple[float, ...] = IMAGENET_STD,
) -> ImageSplits | StreamingSplits:
    """The splits of `lists` as the storage rule stores them: decoded once (and cached on disk
    under `<cache_dir>/<name>-<image_size>px-<fingerprint>-v<format>-<split>.pt`), or streamed."""
    empty = [split for split in SPLITS if not lists.files[split][0]]
    if empty:
        raise DatasetUnavailableError(
            f"{name} at {cfg.root}: no images in the {' and '.join(empty)} split"
        )
    image_size = resolved(cfg, "image_size")
    if resolved_storage(cfg, lists, image_size) == "stream":
        workers = getattr(cfg, "workers", None)
        prefetch = getattr(cfg, "prefetch", None)
        return StreamingSplits(
            name=name,
            files={
                split: (tuple(paths), torch.tensor(labels, dtype=torch.int64))
                for split, (paths, labels) in lists.files.items()
            },
            num_classes=lists.num_classes,
            in_channels=3,
            image_size=image_size,
            mean=mean,
            std=std,
            workers=workers,
            prefetch=DEFAULT_PREFETCH if prefetch is None else prefetch,
        )

    def build() -> dict[str, dict[str, torch.Tensor]]:
        return {
            split: {
                "images": decode_files(paths, storage_transform(split, image_size)),
                "labels": torch.tensor(labels, dtype=torch.int64),
            }
            for split, (paths, labels) in lists.files.items()
        }

    stem = f"{name}-{image_size}px-{lists.fingerprint()}-v{CACHE_FORMAT}"
    data = disk_cached_splits(resolved_cache_dir(cfg), stem, build)
    arrays = {split: (data[split]["images"], data[split]["labels"]) for split in SPLITS}
    return make_splits(
        name, arrays, num_classes=lists.num_classes, image_size=image_size, mean=mean, std=std
    )
