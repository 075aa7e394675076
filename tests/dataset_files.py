"""Tiny datasets written in the exact on-disk formats torchvision reads.

- `write_cifar`: CIFAR-10/100's python pickles (`cifar-10-batches-py/data_batch_1..5`,
  `test_batch`, `batches.meta`; `cifar-100-python/train`, `test`, `meta`), each a dict with a
  uint8 (N, 3072) "data" array of R, G, B planes and "labels" / "fine_labels" + "coarse_labels".
- `write_image_tree`: an ImageFolder tree of PNG/JPEG files, one solid colour per class (plus a
  little noise), so a class can be recognised from the pixels alone.
- `write_imagenet`: ImageNet's layout as torchvision.datasets.ImageNet reads it: `train/<wnid>/`,
  `val/<wnid>/` and the `meta.bin` torchvision writes from the devkit (a (wnid -> class names,
  val wnids) tuple saved with torch.save).
"""

from __future__ import annotations

import pickle
from pathlib import Path

import numpy as np
import torch
from torchvision.io import write_jpeg, write_png

#: A distinct RGB colour per class (up to 8 classes).
CLASS_COLOURS = [
    (230, 25, 25), (25, 200, 25), (25, 25, 230), (230, 230, 25),
    (230, 25, 230), (25, 230, 230), (128, 64, 0), (255, 255, 255),
]


def write_cifar(
    root: Path, kind: str = "cifar10", train_per_file: int = 8, test: int = 10, seed: int = 0
) -> dict[str, np.ndarray]:
    """Write a CIFAR-format dataset under `root`; returns the arrays written, by split:
    {"train_data", "train_labels", "test_data", "test_labels"} with data (N, 3, 32, 32)."""
    from torchvision.datasets import CIFAR10, CIFAR100

    cls = CIFAR10 if kind == "cifar10" else CIFAR100
    classes = 10 if kind == "cifar10" else 100
    folder = root / cls.base_folder
    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    written: dict[str, list] = {"train_data": [], "train_labels": [], "test_data": [],
                                "test_labels": []}
    offset = 0
    for split, entries, count in (("train", cls.train_list, train_per_file),
                                  ("test", cls.test_list, test)):
        for name, _ in entries:
            data = rng.integers(0, 256, size=(count, 3 * 32 * 32), dtype=np.uint8)
            labels = [(offset + i) % classes for i in range(count)]
            offset += count
            entry = {"batch_label": f"{name} (test copy)", "data": data,
                     "filenames": [f"{name}_{i}.png" for i in range(count)]}
            if kind == "cifar10":
                entry["labels"] = labels
            else:  # a coarse label that differs from the fine one, to tell them apart
                entry["fine_labels"] = labels
                entry["coarse_labels"] = [label // 5 for label in labels]
            with open(folder / name, "wb") as file:
                pickle.dump(entry, file, protocol=2)
            written[f"{split}_data"].append(data.reshape(-1, 3, 32, 32))
            written[f"{split}_labels"] += labels
    meta_key = cls.meta["key"]
    with open(folder / cls.meta["filename"], "wb") as file:
        pickle.dump({meta_key: [f"class{k}" for k in range(classes)]}, file, protocol=2)
    return {
        "train_data": np.concatenate(written["train_data"]),
        "train_labels": np.asarray(written["train_labels"]),
        "test_data": np.concatenate(written["test_data"]),
        "test_labels": np.asarray(written["test_labels"]),
    }


def class_image(label: int, generator: torch.Generator, size: tuple[int, int]) -> torch.Tensor:
    """A uint8 (3, H, W) image of class `label`'s colour with +-10 of noise."""
    colour = torch.tensor(CLASS_COLOURS[label], dtype=torch.int16)[:, None, None]
    noise = torch.randint(-10, 11, (3, *size), generator=generator, dtype=torch.int16)
    return (colour + noise).clamp(0, 255).to(torch.uint8)


def write_image_tree(
    directory: Path,
    class_names: list[str],
    per_class: int,
    seed: int = 0,
    size: tuple[int, int] = (40, 48),
    extension: str = ".png",
) -> None:
    """`directory/<class>/<i><extension>` images (PNG or JPEG), class k in CLASS_COLOURS[k]."""
    generator = torch.Generator().manual_seed(seed)
    for label, name in enumerate(class_names):
        (directory / name).mkdir(parents=True, exist_ok=True)
        for i in range(per_class):
            image = class_image(label, generator, size)
            path = str(directory / name / f"{i}{extension}")
            if extension.lower() in (".jpg", ".jpeg"):
                write_jpeg(image, path, quality=95)
            else:
                write_png(image, path)


def write_imagenet(root: Path, wnids: list[str], train_per_class: int, val_per_class: int) -> None:
    """An ImageNet-layout tree: train/ and val/ class folders named by WordNet ID, and meta.bin."""
    write_image_tree(root / "train", wnids, train_per_class, seed=1, extension=".JPEG")
    write_image_tree(root / "val", wnids, val_per_class, seed=2, extension=".JPEG")
    wnid_to_classes = {wnid: (f"name of {wnid}", f"other name of {wnid}") for wnid in wnids}
    val_wnids = [wnid for wnid in wnids for _ in range(val_per_class)]
    torch.save((wnid_to_classes, val_wnids), root / "meta.bin")
