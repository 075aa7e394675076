"""Per-epoch learning-rate schedules: linear warm-up, then cosine / step / constant.

A pure function of the epoch index, so a resumed round needs no scheduler state to continue.
"""

from __future__ import annotations

import math

from trainables.config import TrainConfig


def lr_at_epoch(train: TrainConfig, epoch: int, total_epochs: int | None = None) -> float:
    """The learning rate for 0-based `epoch` of a run of `total_epochs` (default train.epochs)."""
    total = total_epochs or train.epochs
    warmup = min(train.warmup_epochs, total - 1)
    if epoch < warmup:
        return train.lr * (epoch + 1) / (warmup + 1)
    if train.lr_schedule == "cosine":
        progress = (epoch - warmup) / max(1, total - warmup)
        return train.lr * 0.5 * (1.0 + math.cos(math.pi * progress))
    if train.lr_schedule == "step":
        passed = sum(1 for milestone in train.lr_milestones if epoch >= milestone)
        return train.lr * train.lr_gamma**passed
    return train.lr
