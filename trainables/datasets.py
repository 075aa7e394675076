"""Datasets registry: each dataset is decoded and resized once into uint8 tensors (`ImageSplits`).

Storage rule (all datasets): with `store_size = round(image_size * 256 / 224)`,
- train images are stored square at `store_size` (shorter side resized to `store_size`, then a
  center crop), so the batched random-resized-crop of `trainables.augment` has room to work;
- val/test images are stored as the standard eval transform: shorter side resized to
  `store_size`, center crop `image_size` (torchvision's Resize(256) + CenterCrop(224) at 224).

Flowers-102 decoding is slow, so its decoded arrays are cached on disk (one `.pt` per split,
`<cache_dir>/flowers102-<image_size>px-<hash of root>-v<CACHE_FORMAT>-<split>.pt`), built under a
file lock because several trials on one node may race to build it, and written atomically.
`load_dataset` also caches per process.
"""

from __future__ import annotations

import hashlib
import logging
import os
import threading
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torchvision.transforms.v2 import functional as TF

from trainables.errors import DatasetUnavailableError
from trainables.files import atomic_write
from trainables.registry import Registry

logger = logging.getLogger(__name__)

#: Bump when the stored arrays change meaning (resize rule, dtype, layout): old caches are ignored.
CACHE_FORMAT = 1

#: ImageNet statistics: Flowers-102 runs usually start from ImageNet weights, which expect them.
IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)


@dataclass(frozen=True, eq=False)
class ImageSplits:
    """A dataset's three splits as uint8 (N, C, H, W) contiguous tensors plus int64 labels.

    Train images are `store_size` square (larger than `image_size`, for random-resized-crop);
    val/test images are already `image_size` square. `mean`/`std` are per channel in [0, 1] units.
    Only plain tensors and tuples, so `ray.put` stores it cheaply once per node.
    """

    name: str
    train_images: torch.Tensor
    train_labels: torch.Tensor
    val_images: torch.Tensor
    val_labels: torch.Tensor
    test_images: torch.Tensor
    test_labels: torch.Tensor
    num_classes: int
    in_channels: int
    image_size: int
    mean: tuple[float, ...]
    std: tuple[float, ...]

    @property
    def store_size(self) -> int:
        """Side of the stored (square) training images."""
        return int(self.train_images.shape[-1])

    def split(self, name: str) -> tuple[torch.Tensor, torch.Tensor]:
        """(images, labels) of split `name` ("train", "val" or "test")."""
        if name not in ("train", "val", "test"):
            raise ValueError(f"unknown split {name!r}; allowed: train, val, test")
        return getattr(self, f"{name}_images"), getattr(self, f"{name}_labels")


@dataclass(frozen=True)
class DatasetDefaults:
    """What a DataConfig field set to None means for one dataset."""

    image_size: int
    crop_scale_min: float
    hflip: bool


DATASETS: Registry[Callable[[Any], ImageSplits]] = Registry("dataset")
_DEFAULTS: dict[str, DatasetDefaults] = {
    "flowers102": DatasetDefaults(image_size=224, crop_scale_min=0.08, hflip=True),
    "digits": DatasetDefaults(image_size=32, crop_scale_min=0.6, hflip=False),
    "synthetic": DatasetDefaults(image_size=16, crop_scale_min=0.8, hflip=False),
}


def dataset_defaults(name: str) -> DatasetDefaults:
    """The values DataConfig's None fields (image_size, crop_scale_min, hflip) stand for."""
    DATASETS.get(name)  # ConfigError naming the allowed datasets
    return _DEFAULTS[name]


def store_size_for(image_size: int) -> int:
    """Side of the stored training images: image_size * 256 / 224, rounded (224 -> 256)."""
    return round(image_size * 256 / 224)


def resolved_image_size(cfg: Any) -> int:
    return cfg.image_size if cfg.image_size is not None else dataset_defaults(cfg.name).image_size


def resolved_cache_dir(cfg: Any) -> Path:
    cache_dir = getattr(cfg, "cache_dir", None)
    return Path(cache_dir) if cache_dir else Path(cfg.root) / ".prunetune_cache"


_PROCESS_CACHE: dict[tuple, ImageSplits] = {}
_PROCESS_CACHE_LOCK = threading.Lock()


def load_dataset(cfg: Any) -> ImageSplits:
    """The splits of dataset `cfg.name` (a DataConfig or any object with its attributes).

    Cached per process, keyed by the fields that change the data (name, root, image size,
    split seed, cache dir); augmentation fields do not. Raises ConfigError for an unknown name
    and DatasetUnavailableError when the files are absent and cannot be downloaded.
    """
    loader = DATASETS.get(cfg.name)
    key = (
        cfg.name,
        str(Path(cfg.root).resolve()),
        resolved_image_size(cfg),
        getattr(cfg, "split_seed", 0),
        str(resolved_cache_dir(cfg)),
    )
    with _PROCESS_CACHE_LOCK:  # one build per process even when threads race
        if key not in _PROCESS_CACHE:
            _PROCESS_CACHE[key] = loader(cfg)
        return _PROCESS_CACHE[key]


def clear_process_cache() -> None:
    """Forget the datasets `load_dataset` has kept in this process (tests, memory)."""
    with _PROCESS_CACHE_LOCK:
        _PROCESS_CACHE.clear()


# --------------------------------------------------------------------------- resize helpers


def _resize_shorter(image: torch.Tensor, size: int) -> torch.Tensor:
    """Shorter side -> size (bilinear, antialiased), aspect ratio kept."""
    if min(image.shape[-2:]) == size:
        return image
    return TF.resize(image, [size], antialias=True)


def _store_train(image: torch.Tensor, store_size: int) -> torch.Tensor:
    """Shorter side -> store_size, center crop a store_size square."""
    return TF.center_crop(_resize_shorter(image, store_size), [store_size, store_size])


def _store_eval(image: torch.Tensor, store_size: int, image_size: int) -> torch.Tensor:
    """Shorter side -> store_size, center crop image_size: the standard eval transform."""
    return TF.center_crop(_resize_shorter(image, store_size), [image_size, image_size])


def _store_arrays(images: torch.Tensor, split: str, image_size: int) -> torch.Tensor:
    """Apply the storage rule to a uint8 (N, C, H, W) batch (in-memory datasets)."""
    store_size = store_size_for(image_size)
    if split == "train":
        out = _store_train(images, store_size)
    else:
        out = _store_eval(images, store_size, image_size)
    return out.contiguous()


def _channel_stats(images: torch.Tensor) -> tuple[tuple[float, ...], tuple[float, ...]]:
    """Per-channel mean and std of uint8 images in [0, 1] units."""
    x = images.to(torch.float64).div_(255).transpose(0, 1).reshape(images.shape[1], -1)
    return tuple(x.mean(1).tolist()), tuple(x.std(1).tolist())


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


def _disk_cached_splits(
    cache_dir: Path, stem: str, build: Callable[[], dict[str, dict[str, torch.Tensor]]]
) -> dict[str, dict[str, torch.Tensor]]:
    """{split: {"images", "labels"}} from `<cache_dir>/<stem>-<split>.pt`; built once, locked."""
    from filelock import FileLock

    paths = {s: cache_dir / f"{stem}-{s}.pt" for s in ("train", "val", "test")}
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


# --------------------------------------------------------------------------- flowers102


def _flowers_file_lists(root: str, download: bool) -> dict[str, tuple[list[str], list[int]]]:
    """{split: (jpeg paths, labels 0..101)} from torchvision's Flowers102 (official split)."""
    from torchvision.datasets import Flowers102

    where = Path(root) / "flowers-102"
    files = "{jpg/,imagelabels.mat,setid.mat}"
    hint = f"Flowers-102 is not in {where}; put the files at {where}/{files}"
    out = {}
    for split in ("train", "val", "test"):
        try:
            # loader=str: the public API then yields (file path, label) without decoding.
            ds = Flowers102(root, split=split, download=download and split == "train", loader=str)
        except RuntimeError:  # torchvision: "Dataset not found or corrupted"
            tail = "" if download else " (or set data.download: true on a machine with internet)"
            raise DatasetUnavailableError(hint + tail) from None
        except Exception as error:  # network stack (URLError, timeouts, HTTP errors, ...)
            reason = str(getattr(error, "reason", None) or error).splitlines()[0]
            raise DatasetUnavailableError(
                f"{hint} (the download failed: {type(error).__name__}: {reason})"
            ) from None
        paths, labels = zip(*(ds[i] for i in range(len(ds))), strict=True)
        out[split] = (list(paths), list(labels))
    return out


def _decode_files(
    paths: list[str], convert: Callable[[torch.Tensor], torch.Tensor]
) -> torch.Tensor:
    """Decode JPEGs on a thread pool (decode and resize release the GIL) into one uint8 tensor."""
    from torchvision.io import ImageReadMode, decode_jpeg, read_file

    def one(path: str) -> torch.Tensor:
        return convert(decode_jpeg(read_file(path), mode=ImageReadMode.RGB))

    workers = max(1, min(8, os.cpu_count() or 1))
    # Threads, not processes: decode_jpeg and resize release the GIL, and no pickling is needed.
    with ThreadPoolExecutor(workers) as pool:
        images = list(pool.map(one, paths))
    return torch.stack(images).contiguous()


@DATASETS.register("flowers102")
def load_flowers102(cfg: Any) -> ImageSplits:
    """Oxford Flowers-102, official split: train 1020 / val 1020 / test 6149, 102 classes, RGB."""
    image_size = resolved_image_size(cfg)
    store_size = store_size_for(image_size)
    root = str(Path(cfg.root).resolve())
    # Listed (and downloaded if asked) before the cache is touched, so a missing dataset is
    # reported without leaving a cache directory under a root that does not exist.
    files = _flowers_file_lists(root, getattr(cfg, "download", True))

    def build() -> dict[str, dict[str, torch.Tensor]]:
        built = {}
        for split, (paths, labels) in files.items():
            if split == "train":
                images = _decode_files(paths, lambda im: _store_train(im, store_size))
            else:
                images = _decode_files(paths, lambda im: _store_eval(im, store_size, image_size))
            built[split] = {"images": images, "labels": torch.tensor(labels, dtype=torch.int64)}
        return built

    # The root's hash keeps two copies (e.g. full-resolution and downscaled) apart in one cache.
    root_hash = hashlib.sha256(root.encode()).hexdigest()[:8]
    stem = f"flowers102-{image_size}px-{root_hash}-v{CACHE_FORMAT}"
    data = _disk_cached_splits(resolved_cache_dir(cfg), stem, build)
    return ImageSplits(
        name="flowers102",
        train_images=data["train"]["images"],
        train_labels=data["train"]["labels"],
        val_images=data["val"]["images"],
        val_labels=data["val"]["labels"],
        test_images=data["test"]["images"],
        test_labels=data["test"]["labels"],
        num_classes=102,
        in_channels=3,
        image_size=image_size,
        mean=IMAGENET_MEAN,
        std=IMAGENET_STD,
    )


# --------------------------------------------------------------------------- digits


def digits_split_indices(split_seed: int) -> dict[str, np.ndarray]:
    """{split: indices into sklearn's digits}: stratified 60/20/20, deterministic per seed."""
    from sklearn.datasets import load_digits as sk_load_digits
    from sklearn.model_selection import train_test_split

    target = sk_load_digits().target
    index = np.arange(len(target))
    train_idx, rest_idx = train_test_split(
        index, test_size=0.4, random_state=split_seed, stratify=target
    )
    val_idx, test_idx = train_test_split(
        rest_idx, test_size=0.5, random_state=split_seed, stratify=target[rest_idx]
    )
    return {"train": np.sort(train_idx), "val": np.sort(val_idx), "test": np.sort(test_idx)}


@DATASETS.register("digits")
def load_digits(cfg: Any) -> ImageSplits:
    """scikit-learn's 1797 8x8 handwritten digits, 10 classes, ONE channel (in_channels=1).

    Pixel values 0..16 become uint8 0..255 and are upscaled (bilinear, antialiased) by the
    storage rule. The split is a stratified 60/20/20 train/val/test split seeded by
    `cfg.split_seed` (sklearn's train_test_split), so it is deterministic per seed.
    """
    from sklearn.datasets import load_digits as sk_load_digits

    image_size = resolved_image_size(cfg)
    digits = sk_load_digits()
    raw = torch.from_numpy(digits.images).to(torch.float32)  # (1797, 8, 8), values 0..16
    images = (raw * (255 / 16)).round_().clamp_(0, 255).to(torch.uint8).unsqueeze(1)
    labels = torch.from_numpy(digits.target).to(torch.int64)

    split_index = digits_split_indices(getattr(cfg, "split_seed", 0))
    split_images = {}
    split_labels = {}
    for split, idx in split_index.items():
        idx_t = torch.from_numpy(idx)
        split_images[split] = _store_arrays(images[idx_t], split, image_size)
        split_labels[split] = labels[idx_t].contiguous()
    mean, std = _channel_stats(split_images["train"])
    return ImageSplits(
        name="digits",
        train_images=split_images["train"],
        train_labels=split_labels["train"],
        val_images=split_images["val"],
        val_labels=split_labels["val"],
        test_images=split_images["test"],
        test_labels=split_labels["test"],
        num_classes=10,
        in_channels=1,
        image_size=image_size,
        mean=mean,
        std=std,
    )


# --------------------------------------------------------------------------- synthetic

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


@DATASETS.register("synthetic")
def load_synthetic(cfg: Any) -> ImageSplits:
    """Unit-test data: 10 classes of coloured stripe patterns + noise, 256/128/128 images, RGB.

    Deterministic (seeded by `cfg.split_seed`), learnable within a few epochs, built in ms.
    """
    image_size = resolved_image_size(cfg)
    generator = torch.Generator().manual_seed(1000 + getattr(cfg, "split_seed", 0))
    out: dict[str, tuple[torch.Tensor, torch.Tensor]] = {}
    for split, n in SYNTHETIC_SIZES.items():
        labels = torch.arange(n, dtype=torch.int64) % SYNTHETIC_CLASSES
        labels = labels[torch.randperm(n, generator=generator)].contiguous()
        # Drawn square at the store size, so the storage rule only crops (no resampling).
        images = _synthetic_images(labels, store_size_for(image_size), generator)
        out[split] = (_store_arrays(images, split, image_size), labels)
    mean, std = _channel_stats(out["train"][0])
    return ImageSplits(
        name="synthetic",
        train_images=out["train"][0],
        train_labels=out["train"][1],
        val_images=out["val"][0],
        val_labels=out["val"][1],
        test_images=out["test"][0],
        test_labels=out["test"][1],
        num_classes=SYNTHETIC_CLASSES,
        in_channels=3,
        image_size=image_size,
        mean=mean,
        std=std,
    )
