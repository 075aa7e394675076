"""What every dataset shares: the `ImageSplits` layout, the registry and `load_dataset`.

A dataset is one module in this package that registers a loader with `register_dataset(name,
defaults)`. The loader takes a DataConfig (or any object with its attributes) and returns
`ImageSplits` (decoded once into uint8 tensors) or, where the decoded images would not fit in
memory, a `StreamingSplits` (see `streaming.py`). Both offer `batches(split, ...)`, the one seam
the training loop draws batches through.
"""

from __future__ import annotations

import json
import threading
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from pydantic import BaseModel

from pruning.registry import Registry
from trainables.augment import BatchAugment
from trainables.batches import iterate_batches
from trainables.errors import ConfigError
from trainables.identity import BATCHES_ROLE, identity_values

#: ImageNet statistics: photo datasets usually start from ImageNet weights, which expect them.
IMAGENET_MEAN = (0.485, 0.456, 0.406)
IMAGENET_STD = (0.229, 0.224, 0.225)

#: DataConfig fields that only some datasets read; setting one elsewhere is a ConfigError.
OPTIONAL_FIELDS = ("val_size", "split_fractions", "storage", "workers", "prefetch")


@dataclass(frozen=True, eq=False)
class ImageSplits:
    """A dataset's three splits as uint8 (N, C, H, W) contiguous tensors plus int64 labels.

    Train images are `store_size` square (at least `image_size`, for random crops); val/test
    images are already `image_size` square. `mean`/`std` are per channel in [0, 1] units.
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

    def size(self, split: str) -> int:
        """Number of examples in split `split`."""
        return len(self.split(split)[1])

    def batches(
        self, split: str, batch_size: int, **options: Any
    ) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        """(augmented float images, int64 labels) batches of `split` on the device; `options`
        are `iterate_batches`'s (shuffle, generator, device, augment, drop_last, max_batches),
        which also says how the order and the randomness are drawn."""
        images, labels = self.split(split)
        return iterate_batches(images, labels, batch_size, **options)


@dataclass(frozen=True)
class DatasetDefaults:
    """What a DataConfig field set to None means for one dataset, and which optional fields
    (`OPTIONAL_FIELDS`) it reads."""

    image_size: int
    crop_scale_min: float
    hflip: bool
    crop: str = "random_resized"
    crop_padding: int = 4
    val_size: int | float | None = None
    split_fractions: tuple[float, float, float] | None = None
    options: frozenset[str] = field(default_factory=frozenset)


DATASETS: Registry[Callable[[Any], Any]] = Registry("dataset", error=ConfigError)
_DEFAULTS: dict[str, DatasetDefaults] = {}


def register_dataset(name: str, defaults: DatasetDefaults) -> Callable[[Callable], Callable]:
    """Decorator: register a loader (DataConfig -> ImageSplits | StreamingSplits) as `name`."""

    def add(loader: Callable[[Any], Any]) -> Callable[[Any], Any]:
        DATASETS.register(name)(loader)
        _DEFAULTS[name] = defaults
        return loader

    return add


def dataset_defaults(name: str) -> DatasetDefaults:
    """The values DataConfig's None fields stand for in dataset `name`."""
    DATASETS.get(name)  # ConfigError naming the allowed datasets
    return _DEFAULTS[name]


def store_size_for(image_size: int) -> int:
    """Side of the stored training images: image_size * 256 / 224, rounded (224 -> 256)."""
    return round(image_size * 256 / 224)


def resolved(cfg: Any, field_name: str) -> Any:
    """`cfg.<field_name>`, or the dataset's default where it is None (or absent)."""
    value = getattr(cfg, field_name, None)
    return value if value is not None else getattr(dataset_defaults(cfg.name), field_name)


def batch_augment(data_cfg: Any, splits: Any, train: bool, *, dtype: torch.dtype = torch.float32,
                  channels_last: bool = False) -> BatchAugment:
    """The augmentation a DataConfig asks for on `splits` (an ImageSplits), with the dataset's
    defaults where the config leaves a field None. `train=True` with `data_cfg.augment` false
    gives the eval transform (center crop)."""
    return BatchAugment(
        image_size=splits.image_size,
        mean=splits.mean,
        std=splits.std,
        train=train and data_cfg.augment,
        crop_scale=(resolved(data_cfg, "crop_scale_min"), 1.0),
        hflip=resolved(data_cfg, "hflip"),
        crop=resolved(data_cfg, "crop"),
        crop_padding=resolved(data_cfg, "crop_padding"),
        dtype=dtype,
        channels_last=channels_last,
    )


def resolved_image_size(cfg: Any) -> int:
    return resolved(cfg, "image_size")


def resolved_cache_dir(cfg: Any) -> Path:
    cache_dir = getattr(cfg, "cache_dir", None)
    return Path(cache_dir) if cache_dir else Path(cfg.root) / ".prunetune_cache"


def data_identity(cfg: Any) -> str:
    """What decides what `load_dataset` returns for a DataConfig, as one string: every field
    but the augmentation ones (role `batches`: trials that differ only there share one decoded
    copy), non-default values only, with the root, cache and image size resolved."""
    if isinstance(cfg, BaseModel):
        values = identity_values(cfg, leave_out=frozenset({BATCHES_ROLE}))
    else:  # a plain namespace (tests): all of it
        values = dict(vars(cfg))
    values.update(
        root=str(Path(cfg.root).resolve()),
        image_size=resolved_image_size(cfg),
        cache_dir=str(resolved_cache_dir(cfg)),
    )
    return json.dumps(values, sort_keys=True, default=str)


_PROCESS_CACHE: dict[str, Any] = {}
_PROCESS_CACHE_LOCK = threading.Lock()


def load_dataset(cfg: Any) -> Any:
    """The splits of dataset `cfg.name`: `ImageSplits`, or `StreamingSplits` for datasets read
    from disk every epoch.

    Cached per process, keyed by `data_identity`. Raises ConfigError for an unknown name and
    DatasetUnavailableError when the files are absent and cannot be downloaded.
    """
    loader = DATASETS.get(cfg.name)
    key = data_identity(cfg)
    with _PROCESS_CACHE_LOCK:  # one build per process even when threads race
        if key not in _PROCESS_CACHE:
            _PROCESS_CACHE[key] = loader(cfg)
        return _PROCESS_CACHE[key]


def clear_process_cache() -> None:
    """Forget the datasets `load_dataset` has kept in this process (tests, memory)."""
    with _PROCESS_CACHE_LOCK:
        _PROCESS_CACHE.clear()
