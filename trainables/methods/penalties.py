"""Terms a training phase adds to its objective, as step hooks of the shared loop.

Network slimming (Liu et al. 2017) trains with lambda * sum |gamma| over every BatchNorm scale
added to the loss (`train.bn_l1`), so that channel pruning by `bn_scale` finds scales pushed
towards zero. It is part of the training recipe, so it applies to every phase of every method
(and to the dense recipe hash), not only to the channel rounds.
"""

from __future__ import annotations

import torch
from torch import nn

import pruning
from trainables.config import TrialConfig
from trainables.loop import StepHook


class BatchNormScalePenalty:
    """lambda * sum |gamma| over every affine BatchNorm of the model."""

    def __init__(self, strength: float) -> None:
        self.strength = strength

    def penalty(self, model: nn.Module) -> torch.Tensor:
        return pruning.bn_scale_penalty(model, self.strength)


def phase_hooks(config: TrialConfig) -> list[StepHook]:
    """The step hooks every training phase of `config`'s trial runs with."""
    return [BatchNormScalePenalty(config.train.bn_l1)] if config.train.bn_l1 else []
