"""CIFAR-10 and CIFAR-100 in torchvision's on-disk layout (the official python pickles).

`<root>/cifar-10-batches-py/{data_batch_1..5,test_batch}` or `<root>/cifar-100-python/{train,
test}`: each file a pickled dict whose "data" is a uint8 (N, 3072) array (R, G, B planes of a
32x32 image per row) and whose "labels" (CIFAR-10) or "fine_labels" (CIFAR-100) are ints.

The files are read here rather than through torchvision's CIFAR10 class because that class
refuses any file whose MD5 differs from the official release, which stops re-packed subsets;
the official sums (torchvision's own `train_list` / `test_list`) are still checked, and a
mismatch is a one-line warning naming the file. Unpickling allows numpy arrays and plain
Python values only, so a hostile file cannot run code.

Validation is a seeded, class-stratified hold-out of `data.val_size` (default 5,000) training
images: the test set is never used for model selection. Images are stored at `image_size`
(32 = as released) for every split: the standard CIFAR augmentation pads and crops rather than
zooming (`data.crop: padded`, 4 px, plus horizontal flips).
"""

from __future__ import annotations

import logging
import pickle
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torchvision.datasets import CIFAR10, CIFAR100
from torchvision.transforms.v2 import functional as TF

from trainables.datasets.common import DatasetDefaults, ImageSplits, register_dataset, resolved
from trainables.datasets.flowers102 import download_failure
from trainables.datasets.storage import holdout_indices, make_splits
from trainables.errors import DatasetUnavailableError

logger = logging.getLogger(__name__)

_DEFAULTS = DatasetDefaults(
    image_size=32, crop_scale_min=0.08, hflip=True, crop="padded", crop_padding=4,
    val_size=5000, options=frozenset({"val_size"}),
)
#: What unpickling a CIFAR file may construct: numpy arrays and their dtypes, nothing else.
_ALLOWED_GLOBALS = {
    ("numpy.core.multiarray", "_reconstruct"),
    ("numpy._core.multiarray", "_reconstruct"),
    ("numpy.core.numeric", "_frombuffer"),
    ("numpy._core.numeric", "_frombuffer"),
    ("numpy", "ndarray"),
    ("numpy", "dtype"),
    ("_codecs", "encode"),  # bytes pickled by Python 3 at protocol 2
}


class _ArrayUnpickler(pickle.Unpickler):
    def find_class(self, module: str, name: str) -> Any:
        if (module, name) not in _ALLOWED_GLOBALS:
            raise pickle.UnpicklingError(f"{module}.{name} is not allowed in a CIFAR file")
        return super().find_class(module, name)


def _read_batch(path: Path, md5: str) -> tuple[np.ndarray, list[int]]:
    """(uint8 (N, 3, 32, 32) images, labels) of one pickled batch; warns on an MD5 mismatch."""
    from torchvision.datasets.utils import calculate_md5

    actual = calculate_md5(str(path))
    if actual != md5:
        logger.warning(
            "%s differs from the official CIFAR release (MD5 %s, expected %s); using it anyway",
            path, actual, md5,
        )
    try:
        with open(path, "rb") as file:
            entry = _ArrayUnpickler(file, encoding="latin1").load()
        data = np.asarray(entry["data"], dtype=np.uint8).reshape(-1, 3, 32, 32)
        labels = entry["labels"] if "labels" in entry else entry["fine_labels"]
    except Exception as error:
        reason = str(error).splitlines()[0] if str(error) else type(error).__name__
        raise DatasetUnavailableError(
            f"{path} is not a CIFAR batch in the python pickle layout ({reason})"
        ) from None
    if len(labels) != len(data):
        raise DatasetUnavailableError(f"{path} holds {len(data)} images but {len(labels)} labels")
    return data, list(labels)


def _read_split(folder: Path, entries: list[list[str]]) -> tuple[np.ndarray, np.ndarray]:
    parts = [_read_batch(folder / name, md5) for name, md5 in entries]
    images = np.concatenate([data for data, _ in parts])
    labels = np.asarray([label for _, batch in parts for label in batch], dtype=np.int64)
    return images, labels


def _ensure_files(cls: type[CIFAR10], root: Path, download: bool) -> Path:
    """The batches folder, downloaded (torchvision's URL and archive MD5) if absent and asked."""
    folder = root / cls.base_folder
    names = [name for name, _ in cls.train_list + cls.test_list]
    if all((folder / name).is_file() for name in names):
        return folder
    hint = (
        f"{cls.__name__} is not in {root}; put the {cls.base_folder}/ folder of "
        f"{cls.filename} ({', '.join(names)}) at {folder}"
    )
    if not download:
        raise DatasetUnavailableError(
            hint + " (or set data.download: true on a machine with internet)"
        )
    from torchvision.datasets import utils as tv_utils

    try:
        tv_utils.download_and_extract_archive(
            cls.url, str(root), filename=cls.filename, md5=cls.tgz_md5
        )
    except Exception as error:  # network stack (URLError, timeouts, HTTP errors, ...)
        raise DatasetUnavailableError(f"{hint} ({download_failure(error)})") from None
    missing = [name for name in names if not (folder / name).is_file()]
    if missing:
        raise DatasetUnavailableError(f"{hint} (the download lacks {', '.join(missing)})")
    return folder


def load_cifar(cfg: Any, cls: type[CIFAR10], num_classes: int) -> ImageSplits:
    """Train (minus the hold-out) / val (the hold-out) / test of one CIFAR dataset."""
    folder = _ensure_files(cls, Path(cfg.root).resolve(), getattr(cfg, "download", True))
    train_images, train_labels = _read_split(folder, cls.train_list)
    test_images, test_labels = _read_split(folder, cls.test_list)
    for labels in (train_labels, test_labels):
        if len(labels) and not 0 <= labels.min() <= labels.max() < num_classes:
            raise DatasetUnavailableError(
                f"{folder}: labels outside 0..{num_classes - 1} for {cls.__name__}"
            )
    keep, held_out = holdout_indices(
        train_labels, resolved(cfg, "val_size"), getattr(cfg, "split_seed", 0)
    )
    image_size = resolved(cfg, "image_size")

    def stored(images: np.ndarray) -> torch.Tensor:
        tensor = torch.from_numpy(np.ascontiguousarray(images))
        if image_size != tensor.shape[-1]:
            tensor = TF.resize(tensor, [image_size, image_size], antialias=True)
        return tensor.contiguous()

    arrays = {
        "train": (stored(train_images[keep]), torch.from_numpy(train_labels[keep])),
        "val": (stored(train_images[held_out]), torch.from_numpy(train_labels[held_out])),
        "test": (stored(test_images), torch.from_numpy(test_labels)),
    }
    return make_splits(cfg.name, arrays, num_classes=num_classes, image_size=image_size)


@register_dataset("cifar10", _DEFAULTS)
def load_cifar10(cfg: Any) -> ImageSplits:
    """CIFAR-10: 50,000 training (45,000 + a 5,000 hold-out) and 10,000 test images, 10 classes."""
    return load_cifar(cfg, CIFAR10, 10)


@register_dataset("cifar100", _DEFAULTS)
def load_cifar100(cfg: Any) -> ImageSplits:
    """CIFAR-100 (fine labels): 50,000 training (45,000 + 5,000) and 10,000 test, 100 classes."""
    return load_cifar(cfg, CIFAR100, 100)
