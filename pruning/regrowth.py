"""One drop-and-grow update of dynamic sparse training (RigL, SET), layer by layer.

Following the RigL reference code: per layer, ``k = floor(fraction * active)`` active weights
with the smallest magnitude are dropped, then ``k`` weights are grown among all positions the
drop left inactive (a weight just dropped may be grown back, and then keeps its value), chosen
by the highest grow score: the dense-gradient magnitude (RigL) or a uniform random draw (SET).
Each layer's active count is unchanged. Ties are broken by position (the earlier weight is kept
and grown first) instead of the reference's small random noise, so an update is reproducible.
"""

from __future__ import annotations

import math

import torch

from pruning.allocation import _keep_top
from pruning.masks import Mask


def drop_and_grow_layer(
    weight: torch.Tensor, keep: torch.Tensor, grow_scores: torch.Tensor, fraction: float
) -> torch.Tensor:
    """The layer's new keep-mask after dropping and growing ``floor(fraction * active)``."""
    if not 0.0 <= fraction <= 1.0:
        raise ValueError(f"drop fraction must be in [0, 1]; got {fraction}")
    flat_keep = keep.reshape(-1)
    active = int(flat_keep.count_nonzero())
    count = math.floor(fraction * active)
    if count == 0:
        return keep.clone()
    magnitude = weight.detach().reshape(-1).abs().to(keep.device)
    survivors = _keep_top(magnitude, flat_keep, active - count)
    scores = grow_scores.detach().reshape(-1).to(keep.device)
    grown = _keep_top(scores, ~survivors, count)
    return (survivors | grown).view(keep.shape)


def drop_and_grow(
    weights: dict[str, torch.Tensor],
    mask: Mask,
    grow_scores: dict[str, torch.Tensor],
    fraction: float,
) -> Mask:
    """``drop_and_grow_layer`` for every layer of ``mask``."""
    return {
        name: drop_and_grow_layer(weights[name], keep, grow_scores[name], fraction)
        for name, keep in mask.items()
    }
