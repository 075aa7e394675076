"""scikit-learn's handwritten digits: 1797 8x8 images, no download, one channel."""

from __future__ import annotations

from typing import Any

import numpy as np
import torch

from trainables.datasets.common import DatasetDefaults, ImageSplits, register_dataset, resolved
from trainables.datasets.storage import make_splits, store_arrays


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


@register_dataset("digits", DatasetDefaults(image_size=32, crop_scale_min=0.6, hflip=False))
def load_digits(cfg: Any) -> ImageSplits:
    """scikit-learn's 1797 8x8 handwritten digits, 10 classes, ONE channel (in_channels=1).

    Pixel values 0..16 become uint8 0..255 and are upscaled (bilinear, antialiased) by the
    storage rule. The split is a stratified 60/20/20 train/val/test split seeded by
    `cfg.split_seed` (sklearn's train_test_split), so it is deterministic per seed.
    """
    from sklearn.datasets import load_digits as sk_load_digits

    image_size = resolved(cfg, "image_size")
    digits = sk_load_digits()
    raw = torch.from_numpy(digits.images).to(torch.float32)  # (1797, 8, 8), values 0..16
    images = (raw * (255 / 16)).round_().clamp_(0, 255).to(torch.uint8).unsqueeze(1)
    labels = torch.from_numpy(digits.target).to(torch.int64)

    arrays = {}
    for split, idx in digits_split_indices(getattr(cfg, "split_seed", 0)).items():
        idx_t = torch.from_numpy(idx)
        arrays[split] = (store_arrays(images[idx_t], split, image_size), labels[idx_t])
    return make_splits("digits", arrays, num_classes=10, image_size=image_size)
