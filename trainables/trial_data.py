"""What a trial trains and evaluates on: the splits and the batch transforms it applies."""

from __future__ import annotations

from dataclasses import dataclass

from trainables.augment import BatchAugment
from trainables.config import TrialConfig
from trainables.datasets import DatasetSplits, StreamingSplits, batch_augment
from trainables.runtime import Runtime


@dataclass
class TrialData:
    """A dataset's splits (in memory or streamed) plus the batch transforms a trial applies."""

    splits: DatasetSplits
    train_augment: BatchAugment
    eval_augment: BatchAugment

    @classmethod
    def build(cls, splits: DatasetSplits, config: TrialConfig, runtime: Runtime) -> TrialData:
        """The trial's data; streamed splits become the trial's own copy (`for_trial`), whose
        DataLoaders and workers live as long as the trial and fit its CPU grant."""
        if isinstance(splits, StreamingSplits):
            splits = splits.for_trial(runtime.cpus)

        def augment(train: bool) -> BatchAugment:
            return batch_augment(config.data, splits, train, channels_last=runtime.channels_last)

        return cls(splits, train_augment=augment(True), eval_augment=augment(False))
