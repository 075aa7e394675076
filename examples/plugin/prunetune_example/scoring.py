"""A scorer with a setting of its own and an allocation, each chosen in a sweep file:

    method: prune_at_init
    prune_at_init: {scorer: jittered_magnitude, settings: {jitter: 0.5}}
    prune: {allocation: sqrt_budgets}

`jittered_magnitude` scores |w| * exp(jitter * z), z a seeded standard normal per weight: jitter
0 is magnitude pruning, a large jitter is random pruning, and the values between interpolate (a
control for how much of magnitude pruning's result is its ranking). `sqrt_budgets` gives each
layer a share of the kept weights proportional to the square root of its size (capped at what it
still has), between layerwise (proportional to size) and uniform counts.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
from torch import nn

import pruning


@pruning.SCORERS.register("jittered_magnitude")
@dataclass(frozen=True)
class JitteredMagnitude(pruning.Scorer):
    jitter: float = 0.5
    """Standard deviation of the log-normal factor on |w|; 0 = magnitude."""

    def __post_init__(self) -> None:
        if not self.jitter >= 0:
            raise ValueError(f"jitter must be >= 0; got {self.jitter}")

    def __call__(self, model: nn.Module, mask: pruning.Mask,
                 inputs: pruning.ScoringInputs) -> pruning.Scores:
        generator = torch.Generator().manual_seed(inputs.seed)
        magnitudes = pruning.magnitude_scores(model, mask)
        return {
            name: value * torch.exp(self.jitter * torch.randn(value.shape, generator=generator)
                                    .to(value.device))
            for name, value in magnitudes.items()
        }


def sqrt_layer_budgets(mask: pruning.Mask, kept: int) -> dict[str, int]:
    """`kept` weights shared over the layers in proportion to sqrt(layer size), no layer given
    more than it still has; largest remainders (then layer order) take the rounding."""
    alive = {name: int(keep.sum()) for name, keep in mask.items()}
    budgets: dict[str, int] = {}
    open_layers = list(mask)
    left = kept
    while open_layers:
        weights = {name: math.sqrt(mask[name].numel()) for name in open_layers}
        total = sum(weights.values())
        full = [name for name in open_layers if left * weights[name] / total >= alive[name]]
        if not full:
            shares = {name: left * weights[name] / total for name in open_layers}
            for name in open_layers:
                budgets[name] = math.floor(shares[name])
            rest = left - sum(budgets[name] for name in open_layers)
            by_remainder = sorted(open_layers, key=lambda n: -(shares[n] - math.floor(shares[n])))
            for name in by_remainder[:rest]:
                budgets[name] += 1
            break
        for name in full:
            budgets[name] = alive[name]
            left -= alive[name]
            open_layers.remove(name)
    return budgets


@pruning.ALLOCATIONS.register("sqrt_budgets")
def sqrt_budgets(scores: pruning.Scores, mask: pruning.Mask,
                 target: pruning.AllocationTarget) -> pruning.Mask:
    return pruning.keep_top_per_layer(scores, mask, sqrt_layer_budgets(mask, target.kept))
