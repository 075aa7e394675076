"""ImageNet-1k (ILSVRC 2012) through torchvision.datasets.ImageNet: the standard layout, no
download.

`<root>/train/<wnid>/*.JPEG`, `<root>/val/<wnid>/*.JPEG` and the devkit
(`ILSVRC2012_devkit_t12.tar.gz`, or the `meta.bin` torchvision writes from it): torchvision's
class finds the files and the class order (sorted WordNet IDs). The official validation set is
our test split; validation is a seeded, class-stratified hold-out of `data.val_size` (default
10,000) training images. At 224 px the decoded images would need about 250 GB, so with
`data.storage: auto` ImageNet streams from disk (see `filelists.py` for where the switch is).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from trainables.datasets.common import DatasetDefaults, register_dataset, resolved
from trainables.datasets.filelists import FileLists, file_dataset
from trainables.datasets.storage import holdout_indices
from trainables.errors import DatasetUnavailableError

_DEFAULTS = DatasetDefaults(
    image_size=224, crop_scale_min=0.08, hflip=True, val_size=10_000,
    options=frozenset({"val_size", "storage", "workers", "prefetch"}),
)


def imagenet_file_lists(cfg: Any) -> FileLists:
    """Train (minus the hold-out) / val (the hold-out) / test (the official val) files."""
    from torchvision.datasets import ImageNet

    root = Path(cfg.root).resolve()
    hint = (
        f"ImageNet is not in {root} (it is never downloaded); put train/ and val/ there, one "
        "folder per WordNet ID, and ILSVRC2012_devkit_t12.tar.gz or its meta.bin"
    )
    try:
        # loader=str: the public API then yields (file path, label) without decoding.
        train = ImageNet(str(root), split="train", loader=str)
        official_val = ImageNet(str(root), split="val", loader=str)
    except (RuntimeError, FileNotFoundError, OSError) as error:
        reason = str(error).splitlines()[0] if str(error) else type(error).__name__
        raise DatasetUnavailableError(f"{hint} ({reason})") from None
    if official_val.wnids != train.wnids:
        raise DatasetUnavailableError(f"{root}: val/ and train/ have different class folders")
    paths = [path for path, _ in train.samples]
    labels = [label for _, label in train.samples]
    keep, held_out = holdout_indices(
        np.asarray(labels), resolved(cfg, "val_size"), getattr(cfg, "split_seed", 0)
    )
    files = {
        "train": ([paths[i] for i in keep], [labels[i] for i in keep]),
        "val": ([paths[i] for i in held_out], [labels[i] for i in held_out]),
        "test": ([p for p, _ in official_val.samples], [t for _, t in official_val.samples]),
    }
    return FileLists(files, num_classes=len(train.wnids))


@register_dataset("imagenet", _DEFAULTS)
def load_imagenet(cfg: Any) -> Any:
    """ImageNet-1k: streamed from disk where the decoded images do not fit in memory."""
    return file_dataset(cfg, "imagenet", imagenet_file_lists(cfg))
