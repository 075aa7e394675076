"""Datasets too large to decode once into memory (ImageNet): read from disk every epoch.

`StreamingSplits` offers the same `batches(split, ...)` as `ImageSplits`. DataLoader workers
decode each file and apply the same storage rule the in-memory cache applies once (train:
`store_size` square; eval: `image_size` center crop), the main process moves the uint8 batch to
the device, and the same `BatchAugment` runs there. The batch order and the augmentation draws
come from the same generator in the same order as the in-memory path (`batch_indices`,
`device_generator`), so a seed gives the same batches whichever path a dataset takes.

A trial streams through `for_trial(cpus)`: its copy keeps one DataLoader per split, with
persistent workers, for all its epochs and evaluations (starting workers every epoch costs a
process start and a dataset copy per worker), and takes `default_workers(cpus)` workers when
data.workers is unset, so that the workers and the training process fit in the trial's CPUs.
Each pass hands its kept loader that pass's batches (`_PassBatches`), so the order is the one
`batch_indices` drew, as before. Elsewhere (a process-cached object, tests) every call builds a
loader of its own and lets its workers go at the end.

Memory bound: the DataLoader keeps at most `workers x prefetch` decoded uint8 batches in flight
(its `prefetch_factor` per worker), each `batch_size x 3 x S x S` bytes with S = `store_size` for
training and `image_size` for evaluation, plus the batch on its way to the device. Only the split
being read has batches in flight; a kept loader's workers sit idle between passes. Nothing else
grows with the dataset except the file list itself (one path string and one label per image).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Any

import torch
from torch.utils.data import DataLoader, Dataset

from trainables.batches import batch_indices, device_generator
from trainables.datasets.common import store_size_for
from trainables.datasets.storage import decode_image_file, storage_transform

#: Streaming workers when data.workers is unset outside a trial (a trial sizes them from its
#: CPUs: default_workers).
DEFAULT_WORKERS = 4


def default_workers(cpus: int) -> int:
    """DataLoader workers of a trial (or data-parallel worker) granted `cpus` CPUs when
    data.workers is unset: every CPU but the one the training process keeps (0: decode in the
    training process). A GPU's step rate takes many decoding cores to match
    (benchmarks/bench_data_feed.py), so what the sweep reserves is what decodes."""
    return max(0, cpus - 1)


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


class _PassBatches:
    """The batch sampler of a kept DataLoader: yields the batches set for the current pass.

    The DataLoader iterates its batch sampler afresh in the main process at every pass (also
    with persistent workers), so setting `batches` before a pass gives that pass's order."""

    def __init__(self) -> None:
        self.batches: list[list[int]] = []

    def __iter__(self) -> Iterator[list[int]]:
        return iter(self.batches)

    def __len__(self) -> int:
        return len(self.batches)


@dataclass
class _KeptLoader:
    loader: DataLoader
    sampler: _PassBatches
    busy: bool = False
    """A pass over it is open (an unfinished `batches` generator)."""


@dataclass(frozen=True, eq=False)
class StreamingSplits:
    """A dataset's three splits as image files plus int64 labels, decoded batch by batch.

    `workers` DataLoader processes decode (None: data.workers unset, `default_workers` of the
    trial's CPUs once `for_trial` resolves it); each keeps at most `prefetch` batches ready. The
    metadata fields mean what they mean on `ImageSplits`.
    """

    name: str
    files: dict[str, tuple[tuple[str, ...], torch.Tensor]]
    num_classes: int
    in_channels: int
    image_size: int
    mean: tuple[float, ...]
    std: tuple[float, ...]
    workers: int | None = None
    prefetch: int = 2
    keep_loaders: bool = False
    """True on a trial's copy (`for_trial`): one DataLoader per split, kept across passes."""
    _kept: dict[tuple[str, bool], _KeptLoader] = field(
        default_factory=dict, init=False, repr=False, compare=False
    )

    def __getstate__(self) -> dict[str, Any]:
        # Kept loaders own live worker processes: they stay in the process that started them.
        return {**self.__dict__, "_kept": {}}

    @property
    def store_size(self) -> int:
        """Side of the training images as decoded (before the random crop)."""
        return store_size_for(self.image_size)

    @property
    def resolved_workers(self) -> int:
        """The workers a pass starts: `workers`, or DEFAULT_WORKERS where no trial resolved it."""
        return DEFAULT_WORKERS if self.workers is None else self.workers

    def size(self, split: str) -> int:
        """Number of images in `split`."""
        return len(self.files[split][0])

    def for_trial(self, cpus: int) -> StreamingSplits:
        """A copy for one trial granted `cpus` CPUs: unset workers become `default_workers(cpus)`,
        and it keeps one DataLoader per split (persistent workers) for all the trial's passes."""
        workers = default_workers(cpus) if self.workers is None else self.workers
        return dataclasses.replace(self, workers=workers, keep_loaders=True)

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
        part: Callable[[int], slice] | None = None,
    ) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        """(augmented float images, int64 labels) batches of `split` on `device`, decoded from
        disk by the DataLoader workers; the same batches `ImageSplits.batches` would yield.
        `part` (a data-parallel rank's `Ranks.part`): only those rows of each batch are
        decoded, so N ranks share the decoding of a global batch instead of each doing all."""
        if split not in self.files:
            raise ValueError(f"unknown split {split!r}; allowed: train, val, test")
        device = torch.device(device)
        indices = batch_indices(self.size(split), batch_size, shuffle, generator, drop_last,
                                max_batches)
        aug_generator = device_generator(generator, device)
        totals = [len(index) for index in indices]
        rows = [part(total) if part is not None else None for total in totals]
        wanted = [(index if cut is None else index[cut]).tolist()
                  for index, cut in zip(indices, rows, strict=True)]
        # A rank's part of a short last evaluation batch may be empty: nothing to decode.
        order = [index for index in wanted if index]
        side = self.store_size if split == "train" else self.image_size
        nothing = (torch.empty((0, self.in_channels, side, side), dtype=torch.uint8),
                   torch.empty(0, dtype=torch.int64))
        pin = device.type == "cuda"
        kept = self._kept_loader(split, pin) if self.keep_loaders else None
        if kept is None or kept.busy:  # no kept loader, or its pass is still open: a one-off
            loader = self._loader(split, order, pin, persistent=False)
        else:
            kept.sampler.batches, kept.busy, loader = order, True, kept.loader
        try:
            decoded = iter(loader)
            for index, cut, total in zip(wanted, rows, totals, strict=True):
                images, targets = next(decoded) if index else nothing
                images = images.to(device, non_blocking=True)
                targets = targets.to(device, non_blocking=True)
                yield augment(images, aug_generator, cut, total), targets
        finally:
            # An abandoned pass is fine: the next pass's iter() drains what workers still hold.
            if kept is not None and loader is kept.loader:
                kept.busy = False

    def _kept_loader(self, split: str, pin: bool) -> _KeptLoader:
        key = (split, pin)
        if key not in self._kept:
            sampler = _PassBatches()
            self._kept[key] = _KeptLoader(self._loader(split, sampler, pin, persistent=True),
                                          sampler)
        return self._kept[key]

    def _loader(self, split: str, batch_sampler: Any, pin: bool, persistent: bool) -> DataLoader:
        paths, labels = self.files[split]
        workers = self.resolved_workers
        return DataLoader(
            _ImageFiles(paths, labels, storage_transform(split, self.image_size)),
            batch_sampler=batch_sampler,
            num_workers=workers,
            prefetch_factor=self.prefetch if workers > 0 else None,
            pin_memory=pin,
            persistent_workers=persistent and workers > 0,
        )
