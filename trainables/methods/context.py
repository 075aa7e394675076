"""What a method works with: the trial's config, device, data, model, log and where it resumes."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import torch
from torch import nn

from trainables import random_streams
from trainables.batches import steps_per_epoch
from trainables.config import TrialConfig
from trainables.datasets import DatasetSplits
from trainables.measure import LatencyReference
from trainables.methods.base import Method
from trainables.models import build_model
from trainables.reporting import TrialLog, is_progress
from trainables.runtime import Runtime
from trainables.trial_data import TrialData


def build_network(config: TrialConfig, splits: DatasetSplits) -> nn.Module:
    """The trial's architecture with freshly initialised weights (from the global RNG)."""
    return build_model(config.model, splits.num_classes, splits.in_channels)


@dataclass
class TrialContext:
    """Everything one trial's method works with."""

    config: TrialConfig
    method: Method
    runtime: Runtime
    data: TrialData
    model: nn.Module
    prunable: list[str]
    log: TrialLog
    recipe: str
    resume: dict[str, Any] | None
    """The newest checkpoint when the trial started (None for a fresh trial): a round checkpoint,
    or a progress checkpoint from inside a round."""
    dense_numel: dict[str, int]
    """Entries of each parameter of the unpruned network (the scale of every row's counts, also
    once a structured method has made `model` smaller)."""
    latency_reference: LatencyReference = field(default_factory=lambda: LatencyReference())
    """The dense network every round's latency is measured against (trainables/measure.py)."""

    def fresh_weights(self, round_index: int) -> dict[str, torch.Tensor]:
        """Newly drawn initial weights of this architecture (`prune.reinit`), on the device."""
        random_streams.seed_initialisation(
            random_streams.reinitialisation_seed(self.config.seed, round_index)
        )
        fresh = build_network(self.config, self.data.splits)
        return {name: tensor.to(self.runtime.device) for name, tensor in fresh.state_dict().items()}

    def steps_per_epoch(self) -> int:
        train = self.config.train
        examples = self.data.splits.size("train")
        return steps_per_epoch(examples, train.batch_size, train.max_batches)

    def completed_round(self) -> int:
        """The last round whose round checkpoint exists (-1 if none)."""
        if self.resume is None:
            return -1
        return self.resume["round"] - 1 if is_progress(self.resume) else self.resume["round"]

    def completed_state(self) -> dict[str, Any] | None:
        """The round checkpoint the trial resumes after (None if it resumes inside a round)."""
        return None if is_progress(self.resume) else self.resume

    def progress(self, round_index: int) -> dict[str, Any] | None:
        """The progress checkpoint to continue round `round_index` from, if there is one."""
        if is_progress(self.resume) and self.resume["round"] == round_index:
            return self.resume
        return None
