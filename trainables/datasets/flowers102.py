"""Oxford Flowers-102 through torchvision's Flowers102 (official split), decoded once and cached."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from trainables.datasets.common import DatasetDefaults, register_dataset
from trainables.datasets.filelists import FileLists, file_dataset
from trainables.datasets.storage import SPLITS
from trainables.errors import DatasetUnavailableError

_FILE_OPTIONS = frozenset({"storage", "workers", "prefetch"})


def flowers_file_lists(root: str, download: bool) -> FileLists:
    """Image paths and labels 0..101 per split from torchvision's Flowers102 (official split)."""
    from torchvision.datasets import Flowers102

    where = Path(root) / "flowers-102"
    files = "{jpg/,imagelabels.mat,setid.mat}"
    hint = f"Flowers-102 is not in {where}; put the files at {where}/{files}"
    out = {}
    for split in SPLITS:
        try:
            # loader=str: the public API then yields (file path, label) without decoding.
            ds = Flowers102(root, split=split, download=download and split == "train", loader=str)
        except RuntimeError:  # torchvision: "Dataset not found or corrupted"
            tail = "" if download else " (or set data.download: true on a machine with internet)"
            raise DatasetUnavailableError(hint + tail) from None
        except Exception as error:  # network stack (URLError, timeouts, HTTP errors, ...)
            raise DatasetUnavailableError(f"{hint} ({download_failure(error)})") from None
        paths, labels = zip(*(ds[i] for i in range(len(ds))), strict=True)
        out[split] = (list(paths), list(labels))
    return FileLists(out, num_classes=102)


def download_failure(error: BaseException) -> str:
    """'the download failed: <type>: <first line of the reason>' for a network error."""
    reason = str(getattr(error, "reason", None) or error).splitlines()[0]
    return f"the download failed: {type(error).__name__}: {reason}"


@register_dataset(
    "flowers102",
    DatasetDefaults(image_size=224, crop_scale_min=0.08, hflip=True, options=_FILE_OPTIONS),
)
def load_flowers102(cfg: Any) -> Any:
    """Oxford Flowers-102, official split: train 1020 / val 1020 / test 6149, 102 classes, RGB."""
    root = str(Path(cfg.root).resolve())
    # Listed (and downloaded if asked) before the cache is touched, so a missing dataset is
    # reported without leaving a cache directory under a root that does not exist.
    lists = flowers_file_lists(root, getattr(cfg, "download", True))
    return file_dataset(cfg, "flowers102", lists)
