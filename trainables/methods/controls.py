"""Turning scores into a round's starting point: prune, apply the sanity-check controls, reset.

Shared by the methods that prune once per round (IMP, the prune-at-initialisation family).
"""

from __future__ import annotations

from typing import Any

import torch

import pruning
from trainables import random_streams
from trainables.config import SectionError, TrialConfig
from trainables.methods.context import TrialContext


def prune_and_reset(
    context: TrialContext,
    scores: pruning.Scores,
    mask: pruning.Mask,
    round_index: int,
    target_sparsity: float,
    start_weights: dict[str, torch.Tensor] | None = None,
) -> pruning.Mask:
    """Prune `mask` to `target_sparsity` by `scores` (or, with `prune.pattern`, to the N:M mask
    of the scores), apply `prune.mask_control`, load the round's starting weights (fresh ones
    with `prune.reinit`, else `start_weights` if given) and zero the pruned weights. Returns the
    round's mask."""
    config = context.config
    if config.prune.pattern is not None:
        mask = pattern_mask(scores, mask, config.prune.pattern)
    else:
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


def pattern_mask(scores: pruning.Scores, mask: pruning.Mask, pattern: str) -> pruning.Mask:
    """The exact N:M mask of `scores`; a layer whose rows M does not divide stays as it was (it
    is named on stdout, and its layer sparsity in the row shows it)."""
    found = pruning.nm_mask(scores, mask, pattern)
    for name, reason in found.skipped.items():
        print(f"prunetune: prune.pattern {pattern} leaves {name} as it was: {reason}", flush=True)
    return found.mask


def pattern_sparsity(config: TrialConfig) -> float:
    """The target of a one-step prune: `prune.target_sparsity`, or 1 - N/M of `prune.pattern`
    (the sparsity of every layer the pattern covers)."""
    pattern = config.prune.pattern
    if pattern is None:
        return config.prune.target_sparsity
    return pruning.parse_pattern(pattern).sparsity


def pattern_reads(config: TrialConfig) -> set[str]:
    """`prune.pattern`, and `prune.target_sparsity` unless a pattern replaces it."""
    return {"prune.pattern"} | ({"prune.target_sparsity"} if config.prune.pattern is None
                                else set())


def refuse_pattern_with_shuffle(config: TrialConfig) -> None:
    """`layerwise_shuffle` draws positions at random: the N:M structure would be lost."""
    if config.prune.pattern is not None and config.prune.mask_control == "layerwise_shuffle":
        raise SectionError(
            "config field 'prune.mask_control': layerwise_shuffle would break the N:M structure "
            "of prune.pattern; use none"
        )
