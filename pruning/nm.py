"""N:M semi-structured masks: in every group of M consecutive weights, keep the N best.

"Consecutive along the input dimension" means along each output row of the weight viewed as a
matrix ``[out, in * kh * kw]`` (``weight.reshape(out, -1)``): for a ``nn.Linear`` that is its
input features; for a convolution it is the order ``(in_channel, kh, kw)`` in which
``torch.nn.functional.unfold`` lays out an input patch, so a convolution computed as im2col +
matmul multiplies exactly these groups. This is the layout NVIDIA's 2:4 sparse tensor cores and
``torch.sparse.to_sparse_semi_structured`` expect of a linear layer's weight (groups of 4 along
each row of ``[out, in]``). A group may span two input channels of a 3x3 convolution.

A layer whose row length is not a multiple of M cannot be split into groups (the 7x7 RGB stem
of a ResNet has rows of 3 * 7 * 7 = 147): by default it is left as it is and reported in
``NMMask.skipped`` with the reason; ``on_indivisible="error"`` refuses instead.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Literal

import torch

from pruning.allocation import Scores
from pruning.masks import Mask

OnIndivisible = Literal["skip", "error"]

_PATTERN = re.compile(r"^\s*(\d+)\s*:\s*(\d+)\s*$")


@dataclass(frozen=True)
class NMPattern:
    """Keep ``n`` of every ``m`` consecutive weights (``1 <= n <= m``)."""

    n: int
    m: int

    def __str__(self) -> str:
        return f"{self.n}:{self.m}"

    @property
    def sparsity(self) -> float:
        """The pruned fraction of a layer this pattern covers: ``1 - n / m``."""
        return 1 - self.n / self.m


def parse_pattern(text: str) -> NMPattern:
    """``"2:4"`` -> NMPattern(2, 4); ValueError naming ``prune.pattern`` otherwise."""
    match = _PATTERN.match(text) if isinstance(text, str) else None
    if match is None:
        raise ValueError(f"prune.pattern must look like 'N:M' (e.g. '2:4'); got {text!r}")
    n, m = int(match.group(1)), int(match.group(2))
    if not 1 <= n <= m:
        raise ValueError(f"prune.pattern {text!r} needs 1 <= N <= M")
    return NMPattern(n, m)


@dataclass(frozen=True)
class NMMask:
    """The N:M mask, and the layers it left as they were (name -> why)."""

    mask: Mask
    skipped: dict[str, str]


def nm_mask(
    scores: Scores,
    mask: Mask,
    pattern: NMPattern | str,
    on_indivisible: OnIndivisible = "skip",
) -> NMMask:
    """Keep, in every group of M consecutive weights of each row, the N highest-scoring.

    Only weights ``mask`` keeps are candidates, so nothing is revived: a group with fewer than
    N kept weights keeps just those. Ties are broken by position (the earlier weight in the
    group is kept). Skipped layers keep their ``mask`` entry unchanged.
    """
    if isinstance(pattern, str):
        pattern = parse_pattern(pattern)
    if on_indivisible not in ("skip", "error"):
        raise ValueError(f"on_indivisible must be 'skip' or 'error'; got {on_indivisible!r}")
    result: Mask = {}
    skipped: dict[str, str] = {}
    for name, keep in mask.items():
        layer_scores = scores[name]
        if layer_scores.shape != keep.shape:
            raise ValueError(
                f"scores[{name!r}] has shape {tuple(layer_scores.shape)}; the mask has "
                f"{tuple(keep.shape)}"
            )
        if torch.isnan(layer_scores).any():
            raise ValueError(f"scores[{name!r}] contains NaN")
        row = keep[0].numel() if keep.dim() > 1 else keep.numel()
        if row % pattern.m:
            reason = (
                f"row length {row} (weight.reshape(out, -1)) is not a multiple of M={pattern.m}"
            )
            if on_indivisible == "error":
                raise ValueError(f"cannot apply prune.pattern {pattern} to {name}: {reason}")
            skipped[name] = reason
            result[name] = keep.clone()
            continue
        result[name] = _keep_n_per_group(layer_scores, keep, pattern).view(keep.shape)
    return NMMask(result, skipped)


def _keep_n_per_group(scores: torch.Tensor, keep: torch.Tensor, pattern: NMPattern) -> torch.Tensor:
    groups = scores.reshape(-1, pattern.m)
    alive = keep.reshape(-1, pattern.m)
    # A stable descending sort keeps equal scores in position order: the earlier one first.
    order = torch.sort(groups, dim=1, descending=True, stable=True).indices
    alive_in_order = alive.gather(1, order)
    rank_among_alive = alive_in_order.cumsum(dim=1)
    chosen_in_order = alive_in_order & (rank_among_alive <= pattern.n)
    chosen = torch.zeros_like(alive)
    chosen.scatter_(1, order, chosen_in_order)
    return chosen


def follows_pattern(mask: Mask, pattern: NMPattern | str) -> dict[str, bool]:
    """For each entry whose row length M divides: whether no group keeps more than N."""
    if isinstance(pattern, str):
        pattern = parse_pattern(pattern)
    verdicts = {}
    for name, keep in mask.items():
        row = keep[0].numel() if keep.dim() > 1 else keep.numel()
        if row % pattern.m == 0:
            kept_per_group = keep.reshape(-1, pattern.m).sum(dim=1)
            verdicts[name] = bool((kept_per_group <= pattern.n).all())
    return verdicts
