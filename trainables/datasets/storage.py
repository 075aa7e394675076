"""How images are stored once decoded: the resize rule, per-channel statistics, the seeded
validation hold-out, decoding image files, and the locked on-disk cache of decoded splits.

Storage rule (datasets decoded from image files): with `store_size = round(image_size * 256 /
224)`, train images are stored square at `store_size` (shorter side resized to `store_size`,
then a center crop), so the batched random-resized-crop of `trainables.augment` has room to work;
val/test images are stored as the standard eval transform: shorter side resized to `store_size`,
center crop `image_size` (torchvision's Resize(256) + CenterCrop(224) at 224).
"""

from __future__ import annotations

import logging
import os
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
import torch
from torchvision.transforms.v2 import functional as TF

from trainables.datasets.common import ImageSplits, store_size_for
from trainables.errors import ConfigError, DatasetUnavailableError
from trainables.files import atomic_write

logger = logging.getLogger(__name__)

#: Bump when the stored arrays change meaning (resize rule, dtype, layout): old caches are ignored.
CACHE_FORMAT = 1

SPLITS = ("train", "val", "test")


def resize_shorter(image: torch.Tensor, size: int) -> torch.Tensor:
    """Shorter side -> size (bilinear, antialiased), aspect ratio kept."""
    if min(image.shape[-2:]) == size:
        return image
    return TF.resize(image, [size], antialias=True)


def store_train(image: torch.Tensor, store_size: int) -> torch.Tensor:
    """Shorter side -> store_size, center crop a store_size square."""
    return TF.center_crop(resize_shorter(image, store_size), [store_size, store_size])


def store_eval(image: torch.Tensor, store_size: int, image_size: int) -> torch.Tensor:
    """Shorter side -> store_size, center crop image_size: the standard eval transform."""
    return TF.center_crop(resize_shorter(image, store_size), [image_size, image_size])


def storage_transform(split: str, image_size: int) -> Callable[[torch.Tensor], torch.Tensor]:
    """The storage rule of `split` for one uint8 (C, H, W) image (or an (N, C, H, W) batch)."""
    store_size = store_size_for(image_size)
    if split == "train":
        return lambda image: store_train(image, store_size)
    return lambda image: store_eval(image, store_size, image_size)


def store_arrays(images: torch.Tensor, split: str, image_size: int) -> torch.Tensor:
    """Apply the storage rule to a uint8 (N, C, H, W) batch (in-memory datasets)."""
    return storage_transform(split, image_size)(images).contiguous()


def channel_stats(images: torch.Tensor) -> tuple[tuple[float, ...], tuple[float, ...]]:
    """Per-channel mean and std of uint8 images in [0, 1] units."""
    x = images.to(torch.float64).div_(255).transpose(0, 1).reshape(images.shape[1], -1)
    return tuple(x.mean(1).tolist()), tuple(x.std(1).tolist())


def make_splits(
    name: str,
    arrays: dict[str, tuple[torch.Tensor, torch.Tensor]],
    *,
    num_classes: int,
    image_size: int,
    mean: tuple[float, ...] | None = None,
    std: tuple[float, ...] | None = None,
) -> ImageSplits:
    """ImageSplits from {split: (uint8 images, int64 labels)}; mean/std default to the train
    split's own per-channel statistics."""
    if mean is None or std is None:
        mean, std = channel_stats(arrays["train"][0])
    fields = {}
    for split in SPLITS:
        images, labels = arrays[split]
        fields[f"{split}_images"] = images.contiguous()
        fields[f"{split}_labels"] = labels.to(torch.int64).contiguous()
    return ImageSplits(
        name=name, num_classes=num_classes, in_channels=int(arrays["train"][0].shape[1]),
        image_size=image_size, mean=tuple(mean), std=tuple(std), **fields,
    )


# --------------------------------------------------------------------------- validation hold-out


def holdout_indices(
    labels: np.ndarray, val_size: int | float, seed: int
) -> tuple[np.ndarray, np.ndarray]:
    """(train, val) index arrays (sorted) of a seeded hold-out of `val_size` examples (an int
    count, or a fraction in (0, 1)) from a training set with these `labels`.

    Stratified by class (scikit-learn's train_test_split) where every class has at least two
    examples and the hold-out has room for each class; otherwise a plain seeded random split.
    """
    from sklearn.model_selection import train_test_split

    n = len(labels)
    count = round(val_size * n) if isinstance(val_size, float) else val_size
    if not 1 <= count < n:
        raise ConfigError(
            f"data.val_size {val_size!r} leaves no training or no validation images "
            f"({n} training images); use a count in 1..{n - 1} or a fraction in (0, 1)"
        )
    index = np.arange(n)
    classes, counts = np.unique(labels, return_counts=True)
    stratify = labels if counts.min() >= 2 and len(classes) <= min(count, n - count) else None
    train, val = train_test_split(index, test_size=count, random_state=seed, stratify=stratify)
    return np.sort(train), np.sort(val)


# --------------------------------------------------------------------------- decoding files


def decode_image_file(path: str) -> torch.Tensor:
    """One image file as a uint8 RGB (3, H, W) tensor.

    torchvision.io decodes JPEG, PNG, GIF and WebP (releasing the GIL); the other formats
    torchvision's ImageFolder accepts (BMP, PPM, PGM, TIFF) go through PIL as it does.
    """
    from torchvision.io import ImageReadMode, decode_image, read_file

    try:
        return decode_image(read_file(path), mode=ImageReadMode.RGB)
    except RuntimeError:
        from PIL import Image

        with Image.open(path) as image:
            return TF.pil_to_tensor(image.convert("RGB"))


def decode_files(
    paths: list[str], convert: Callable[[torch.Tensor], torch.Tensor]
) -> torch.Tensor:
    """Decode image files on a thread pool (decode and resize release the GIL) into one uint8
    tensor, `convert` applied to each image."""

    def one(path: str) -> torch.Tensor:
        return convert(decode_image_file(path))

    workers = max(1, min(8, os.cpu_count() or 1))
    # Threads, not processes: decoding and resizing release the GIL, and no pickling is needed.
    with ThreadPoolExecutor(workers) as pool:
        images = list(pool.map(one, paths))
    return torch.stack(images).contiguous()


# --------------------------------------------------------------------------- disk cache


def _load_cached(paths: dict[str, Path]) -> dict[str, dict[str, torch.Tensor]] | None:
    if not all(p.exists() for p in paths.values()):
        return None
    try:
        out = {split: torch.load(p, weights_only=True) for split, p in paths.items()}
    except Exception as error:  # a truncated or foreign file: rebuild it
        logger.warning("ignoring unreadable dataset cache (%s); rebuilding", error)
        return None
    if any(d.get("format") != CACHE_FORMAT for d in out.values()):
        return None
    return out


def disk_cached_splits(
    cache_dir: Path, stem: str, build: Callable[[], dict[str, dict[str, torch.Tensor]]]
) -> dict[str, dict[str, torch.Tensor]]:
    """{split: {"images", "labels"}} from `<cache_dir>/<stem>-<split>.pt`; built once, locked
    (several trials on one node may race to build it), written atomically."""
    from filelock import FileLock

    paths = {s: cache_dir / f"{stem}-{s}.pt" for s in SPLITS}
    cached = _load_cached(paths)
    if cached is not None:
        return cached
    try:
        cache_dir.mkdir(parents=True, exist_ok=True)
    except OSError as error:
        raise DatasetUnavailableError(
            f"cannot create the dataset cache dir {cache_dir} ({error.strerror}); "
            "set data.cache_dir to a writable directory"
        ) from None
    with FileLock(str(cache_dir / f"{stem}.lock")):
        cached = _load_cached(paths)  # another process may have built it while we waited
        if cached is not None:
            return cached
        built = build()
        for split, path in paths.items():
            payload = {**built[split], "format": CACHE_FORMAT}
            atomic_write(path, lambda target, payload=payload: torch.save(payload, target))
        return built
