"""Your own images in torchvision's ImageFolder layout (`data.root` is the tree itself).

Two layouts:
- `root/train/<class>/<image>`, `root/test/<class>/<image>` and optionally `root/val/...`:
  the splits as given; without `val/`, a seeded class-stratified hold-out of `data.val_size`
  (default 10%) of `train/` is the validation split. Classes are `train/`'s folders.
- `root/<class>/<image>`: one tree, split by `data.split_seed` into train/val/test with
  `data.split_fractions` (default [0.8, 0.1, 0.1]), stratified by class.

Classes are the sorted folder names and images the files with ImageFolder's extensions, found by
torchvision's own `make_dataset`; folders whose names start with a dot are skipped (the default
cache dir `root/.prunetune_cache` lives there). Images are RGB, stored by the storage rule and
normalised with ImageNet statistics (for fine-tuning ImageNet weights), like Flowers-102.
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import numpy as np

from trainables.datasets.common import DatasetDefaults, register_dataset, resolved
from trainables.datasets.filelists import FileLists, file_dataset
from trainables.datasets.storage import holdout_indices
from trainables.errors import ConfigError, DatasetUnavailableError

_DEFAULTS = DatasetDefaults(
    image_size=224, crop_scale_min=0.08, hflip=True, val_size=0.1,
    split_fractions=(0.8, 0.1, 0.1),
    options=frozenset({"val_size", "split_fractions", "storage", "workers", "prefetch"}),
)
LAYOUTS = "root/<class>/<image> or root/{train,test[,val]}/<class>/<image>"


def class_folders(directory: Path) -> list[str]:
    """Sorted class folder names (ImageFolder's order), hidden folders skipped."""
    return sorted(
        entry.name for entry in os.scandir(directory)
        if entry.is_dir() and not entry.name.startswith(".")
    )


def _samples(
    directory: Path, class_to_idx: dict[str, int], allow_empty: bool
) -> tuple[list[str], list[int]]:
    from torchvision.datasets.folder import IMG_EXTENSIONS, make_dataset

    try:
        samples = make_dataset(
            str(directory), class_to_idx, extensions=IMG_EXTENSIONS, allow_empty=allow_empty
        )
    except FileNotFoundError as error:  # a class folder without any image
        raise DatasetUnavailableError(f"{directory}: {str(error).splitlines()[0]}") from None
    return [path for path, _ in samples], [label for _, label in samples]


def _split_layout(root: Path, cfg: Any) -> FileLists:
    if getattr(cfg, "split_fractions", None) is not None:
        raise ConfigError(
            f"data.split_fractions applies to a single tree; {root} has train/ and test/ folders"
        )
    if not (root / "test").is_dir():
        raise DatasetUnavailableError(f"{root} has train/ but no test/ folder; expected {LAYOUTS}")
    classes = class_folders(root / "train")
    if not classes:
        raise DatasetUnavailableError(f"{root / 'train'} has no class folders; expected {LAYOUTS}")
    class_to_idx = {name: index for index, name in enumerate(classes)}
    files = {"train": _samples(root / "train", class_to_idx, allow_empty=False)}
    for split in ("val", "test"):
        if (root / split).is_dir():
            unknown = sorted(set(class_folders(root / split)) - set(classes))
            if unknown:
                raise DatasetUnavailableError(
                    f"{root / split} has classes that train/ lacks: {', '.join(unknown[:5])}"
                )
            files[split] = _samples(root / split, class_to_idx, allow_empty=True)
    if "val" in files:
        if getattr(cfg, "val_size", None) is not None:
            raise ConfigError(f"data.val_size applies without a val/ folder; {root} has one")
    else:
        paths, labels = files["train"]
        keep, held_out = holdout_indices(
            np.asarray(labels), resolved(cfg, "val_size"), getattr(cfg, "split_seed", 0)
        )
        files["train"] = ([paths[i] for i in keep], [labels[i] for i in keep])
        files["val"] = ([paths[i] for i in held_out], [labels[i] for i in held_out])
    return FileLists(files, num_classes=len(classes))


def _single_tree(root: Path, cfg: Any) -> FileLists:
    if getattr(cfg, "val_size", None) is not None:
        raise ConfigError(
            f"data.val_size applies to a train/ + test/ layout; {root} is a single tree "
            "(set data.split_fractions instead)"
        )
    classes = class_folders(root)
    if not classes:
        raise DatasetUnavailableError(f"{root} has no class folders; expected {LAYOUTS}")
    paths, labels = _samples(root, {name: i for i, name in enumerate(classes)}, allow_empty=False)
    fractions = tuple(resolved(cfg, "split_fractions"))
    seed = getattr(cfg, "split_seed", 0)
    n = len(paths)
    test_count, val_count = round(fractions[2] * n), round(fractions[1] * n)
    if min(test_count, val_count) < 1 or test_count + val_count >= n:
        raise ConfigError(
            f"data.split_fractions {list(fractions)} gives {n - test_count - val_count}/"
            f"{val_count}/{test_count} train/val/test images of {n}; every split needs one"
        )
    index = np.arange(n)
    rest, test = holdout_indices(np.asarray(labels), test_count, seed)
    train, val = holdout_indices(np.asarray(labels)[rest], val_count, seed)
    chosen = {"train": index[rest][train], "val": index[rest][val], "test": index[test]}
    files = {
        split: ([paths[i] for i in idx], [labels[i] for i in idx]) for split, idx in chosen.items()
    }
    return FileLists(files, num_classes=len(classes))


def imagefolder_file_lists(cfg: Any) -> FileLists:
    """The files and labels of each split of the tree at `cfg.root` (see the module doc)."""
    root = Path(cfg.root).resolve()
    if not root.is_dir():
        raise DatasetUnavailableError(f"data.root {root} is not a directory; expected {LAYOUTS}")
    if (root / "train").is_dir():
        return _split_layout(root, cfg)
    return _single_tree(root, cfg)


@register_dataset("imagefolder", _DEFAULTS)
def load_imagefolder(cfg: Any) -> Any:
    """An ImageFolder tree: decoded once into the uint8 cache, or streamed if too large."""
    return file_dataset(cfg, "imagefolder", imagefolder_file_lists(cfg))
