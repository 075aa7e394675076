"""Mini-batches from uint8 tensors: shuffle on the CPU, move uint8 to the device, augment there.

Moving uint8 (4x smaller than float32) and augmenting on the device keeps the data path cheap:
no DataLoader workers, no per-sample Python.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator

import torch

from trainables.augment import BatchAugment


def device_generator(
    generator: torch.Generator | None, device: torch.device
) -> torch.Generator | None:
    """The generator augmentation draws from on `device`.

    On the CPU it is `generator` itself; on another device a fresh generator seeded from one
    draw of `generator`, so a seed still determines every batch. None stays None (global RNG).
    """
    if generator is None or device.type == "cpu":
        return generator
    seed = int(torch.randint(0, 2**62, (1,), generator=generator))
    return torch.Generator(device=device).manual_seed(seed)


def batch_indices(
    n: int,
    batch_size: int,
    shuffle: bool,
    generator: torch.Generator | None,
    drop_last: bool = False,
    max_batches: int | None = None,
) -> list[torch.Tensor]:
    """The example indices of each batch of an epoch over `n` examples.

    With `shuffle`, one permutation drawn from the CPU `generator` (None = torch's global RNG),
    the only draw made here; otherwise 0..n-1 in order. `drop_last` drops a final short batch;
    `max_batches` caps the count. Shared by the in-memory and the streaming paths, so equal
    seeds give equal batches whichever path a dataset takes.
    """
    if batch_size < 1:
        raise ValueError(f"batch_size must be >= 1, got {batch_size}")
    order = torch.randperm(n, generator=generator) if shuffle else torch.arange(n)
    n_batches = n // batch_size if drop_last else -(-n // batch_size)
    if max_batches is not None:
        n_batches = min(n_batches, max_batches)
    return [order[b * batch_size : (b + 1) * batch_size] for b in range(n_batches)]


def iterate_batches(
    images: torch.Tensor,
    labels: torch.Tensor,
    batch_size: int,
    *,
    shuffle: bool,
    generator: torch.Generator | None,
    device: torch.device | str,
    augment: BatchAugment,
    drop_last: bool = False,
    max_batches: int | None = None,
    part: Callable[[int], slice] | None = None,
) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
    """Yield (augmented float images, int64 labels) batches on `device`.

    `images` is a uint8 (N, C, H, W) CPU tensor, `labels` int64 (N,). With `shuffle`, the order
    is a permutation drawn from the CPU `generator` (None = torch's global RNG); augmentation
    draws from `generator` too (on the CPU) or from a device generator seeded by it, so equal
    seeds give equal batches. `drop_last` drops a final short batch; `max_batches` caps the
    number of batches (smoke runs). On CUDA the uint8 batch is gathered into pinned memory and
    copied non-blocking. `part` (a data-parallel rank's `Ranks.part`): of each batch, only
    those rows are gathered, copied and augmented, as they would be in the whole batch.
    """
    if len(images) != len(labels):
        raise ValueError(f"{len(images)} images but {len(labels)} labels")
    device = torch.device(device)
    indices = batch_indices(len(images), batch_size, shuffle, generator, drop_last, max_batches)
    aug_generator = device_generator(generator, device)
    pin = device.type == "cuda"
    for index in indices:
        total = len(index)
        rows = part(total) if part is not None else None
        if rows is not None:
            index = index[rows]
        if pin:
            # The caching host allocator keeps pinned buffers safe to reuse after async copies.
            x = torch.empty((len(index), *images.shape[1:]), dtype=images.dtype, pin_memory=True)
            torch.index_select(images, 0, index, out=x)
            y = torch.empty(len(index), dtype=labels.dtype, pin_memory=True)
            torch.index_select(labels, 0, index, out=y)
        else:
            x, y = images[index], labels[index]
        x = x.to(device, non_blocking=True)
        y = y.to(device, non_blocking=True)
        yield augment(x, aug_generator, rows, total), y


def steps_per_epoch(examples: int, batch_size: int, max_batches: int | None = None) -> int:
    """Optimizer steps in one training epoch: full batches only (the loop drops the last short
    one), capped at `max_batches`."""
    steps = examples // batch_size
    return steps if max_batches is None else min(steps, max_batches)
