"""Turning scores into a round's starting point: prune, apply the sanity-check controls, reset.

Shared by the methods that prune once per round (IMP, the prune-at-initialisation family).
"""

from __future__ import annotations

from typing import Any

import torch

import pruning
from trainables import random_streams
from trainables.methods.context import TrialContext


def prune_and_reset(
    context: TrialContext,
    scores: pruning.Scores,
    mask: pruning.Mask,
    round_index: int,
    target_sparsity: float,
    start_weights: dict[str, torch.Tensor] | None = None,
) -> pruning.Mask:
    """Prune `mask` to `target_sparsity` by `scores`, apply `prune.mask_control`, load the
    round's starting weights (fresh ones with `prune.reinit`, else `start_weights` if given) and
    zero the pruned weights. Returns the round's mask."""
    config = context.config
    allocation = context.method.allocation(config)
    mask = pruning.prune_to_sparsity(scores, mask, target_sparsity, allocation)
    if config.prune.mask_control == "layerwise_shuffle":
        # Frankle et al. (2021): keep each layer's count, draw the positions at random.
        generator = random_streams.mask_control(config.seed, round_index)
        shuffled = pruning.layerwise_shuffle({k: v.cpu() for k, v in mask.items()}, generator)
        mask = {name: keep.to(context.runtime.device) for name, keep in shuffled.items()}
    if config.prune.reinit:
        context.model.load_state_dict(context.fresh_weights(round_index))
    elif start_weights is not None:
        context.model.load_state_dict(start_weights)
    pruning.apply_mask(context.model, mask)
    return mask


def full_mask(context: TrialContext) -> pruning.Mask:
    return pruning.full_mask(context.model, context.prunable)


def device_mask(context: TrialContext, mask: dict[str, Any]) -> pruning.Mask:
    return {name: keep.to(context.runtime.device) for name, keep in mask.items()}
