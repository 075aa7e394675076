"""Structured channel pruning: choose channels by importance and remove them for real.

The network physically shrinks (Torch-Pruning does the surgery, see ``channel_groups``), so
its parameters, FLOPs and latency fall together. ``ratio`` is the fraction of channels
removed, counted once per channel group and relative to ``original_channels`` (default: the
current counts), so an iterative schedule can ask for 20%, then 36%, ... of the original
width without rounding compounding.

Allocation:

* ``uniform``: every group keeps ``c - round(ratio * c)`` of its ``c`` original channels
  (Python's ``round``, as ``pruning.allocation.kept_count_for_sparsity``), at least its floor.
* ``global``: one ranking over all groups. Each group's floor of best channels is kept
  first; of the other channels, the lowest-scoring are removed until
  ``round(ratio * total)`` channels are gone in all (or no candidate is left).

The floor is ``max(1, ceil(min_keep_fraction * c))`` of a group's original ``c`` channels, so
no layer disappears. Ties are broken by position: the earlier channel (group order, then
index) is kept. Pruning never revives a channel; a ratio below what is already removed is an
error.
"""

from __future__ import annotations

import copy
import math
from collections.abc import Callable
from dataclasses import dataclass

import torch
from torch import nn

from pruning.allocation import kept_count_for_sparsity
from pruning.channel_groups import ChannelGraph
from pruning.channel_importance import ChannelScores, channel_scores
from pruning.registry import Registry

ChannelAllocation = str
"""The name of a registered channel allocation (`CHANNEL_ALLOCATIONS`)."""


def channels_to_keep(
    scores: ChannelScores,
    ratio: float,
    allocation: ChannelAllocation = "uniform",
    original_channels: dict[str, int] | None = None,
    min_keep_fraction: float = 0.1,
) -> dict[str, torch.Tensor]:
    """For each group, the indices (ascending) of the channels to keep."""
    if not 0.0 <= ratio < 1.0:
        raise ValueError(f"ratio (fraction of channels removed) must be in [0, 1); got {ratio}")
    if not 0.0 <= min_keep_fraction <= 1.0:
        raise ValueError(f"min_keep_fraction must be in [0, 1]; got {min_keep_fraction}")
    current = {name: len(values) for name, values in scores.items()}
    original = dict(original_channels or current)
    if set(original) != set(current) or any(current[n] > original[n] for n in current):
        raise ValueError("original_channels must name every group, none below its current count")
    for name, values in scores.items():
        if torch.isnan(values).any():
            raise ValueError(f"channel scores of group {name} contain NaN")
    floors = {
        n: min(current[n], max(1, math.ceil(min_keep_fraction * original[n]))) for n in current
    }
    ranks = {name: _best_first(values) for name, values in scores.items()}
    budget = ChannelBudget(scores, ranks, floors, original, ratio)
    counts = CHANNEL_ALLOCATIONS.get(allocation)(budget)
    return {name: ranks[name][: counts[name]].sort().values for name in scores}


@dataclass(frozen=True)
class ChannelBudget:
    """What a channel allocation divides: each group's scores, channels best first, floor and
    original count, and the fraction of all original channels to remove."""

    scores: ChannelScores
    ranks: dict[str, torch.Tensor]
    floors: dict[str, int]
    original: dict[str, int]
    ratio: float


ChannelAllocator = Callable[[ChannelBudget], dict[str, int]]
"""Channels each group keeps."""
CHANNEL_ALLOCATIONS: Registry[ChannelAllocator] = Registry("channel allocation")


@CHANNEL_ALLOCATIONS.register("uniform")
def _uniform_counts(budget: ChannelBudget) -> dict[str, int]:
    """Every group keeps the same fraction of its original channels (at least its floor)."""
    current = {name: len(values) for name, values in budget.scores.items()}
    counts = {
        name: max(budget.floors[name], kept_count_for_sparsity(budget.original[name], budget.ratio))
        for name in current
    }
    already = [name for name in current if counts[name] > current[name]]
    if already:
        raise ValueError(
            f"ratio {budget.ratio} keeps more channels than groups {already} have left; "
            "pruning never revives channels"
        )
    return counts


def _best_first(values: torch.Tensor) -> torch.Tensor:
    """Channel indices from most to least worth keeping; equal scores in index order."""
    return torch.sort(values.cpu(), descending=True, stable=True).indices


@CHANNEL_ALLOCATIONS.register("global")
def _global_counts(budget: ChannelBudget) -> dict[str, int]:
    """One ranking over all groups removes the lowest-scoring channels above the floors."""
    scores, ranks, floors, original, ratio = (
        budget.scores, budget.ranks, budget.floors, budget.original, budget.ratio)
    total = sum(original.values())
    removed_before = total - sum(len(values) for values in scores.values())
    to_remove = round(ratio * total) - removed_before
    if to_remove < 0:
        raise ValueError(
            f"ratio {ratio} is below the fraction already removed ({removed_before / total}); "
            "pruning never revives channels"
        )
    # Candidates: every channel below its group's floor, as (score, group position, index).
    candidates = []
    for position, (name, values) in enumerate(scores.items()):
        for index in ranks[name][floors[name] :].tolist():
            candidates.append((float(values[index]), position, index, name))
    # Remove the lowest scores first; among equals, the later position goes first.
    candidates.sort(key=lambda c: (c[0], -c[1], -c[2]))
    counts = {name: len(values) for name, values in scores.items()}
    for _, _, _, name in candidates[: min(to_remove, len(candidates))]:
        counts[name] -= 1
    return counts


@dataclass(frozen=True)
class ChannelPruning:
    """What one structured prune did: channel counts and parameter counts, before and after."""

    channels_before: dict[str, int]
    channels_after: dict[str, int]
    kept: dict[str, list[int]]
    params_before: int
    params_after: int
    ratio: float


def prune_channels(
    model: nn.Module,
    example_inputs: torch.Tensor,
    *,
    ratio: float | None = None,
    target_params: int | None = None,
    criterion: str = "l1",
    allocation: ChannelAllocation = "uniform",
    original_channels: dict[str, int] | None = None,
    min_keep_fraction: float = 0.1,
    keep_outputs: list[str] | None = None,
    **scoring: object,
) -> ChannelPruning:
    """Score ``model``'s channel groups with ``criterion`` and remove channels in place.

    The target is either ``ratio`` (the fraction of channels removed) or ``target_params``:
    then the least pruning that leaves at most that many parameters in all, found by bisecting
    the ratio (parameters fall monotonically as it grows) and counting each candidate exactly
    on a pruned copy; ValueError if even the floors leave more. ``scoring`` goes to
    ``channel_scores`` (``batches``, ``num_batches``, ``loss_fn``, ``seed``).
    """
    if (ratio is None) == (target_params is None):
        raise ValueError(
            "give exactly one of ratio (fraction of channels removed) or target_params"
        )
    graph = ChannelGraph(model, example_inputs, keep_outputs)
    scores = channel_scores(graph, criterion, **scoring)
    current = {group.name: group.channels for group in graph.groups}
    original = dict(original_channels or current)

    def selection(at: float) -> dict[str, torch.Tensor]:
        return channels_to_keep(scores, at, allocation, original, min_keep_fraction)

    if target_params is not None:
        counted: dict[tuple[int, ...], int] = {}

        def params_at(at: float) -> int:
            keep = selection(at)
            key = tuple(len(indices) for indices in keep.values())
            if key not in counted:
                trial = copy.deepcopy(model)
                _remove_all_but(ChannelGraph(trial, example_inputs, keep_outputs), keep, at)
                counted[key] = _count(trial)
            return counted[key]

        already = 1 - sum(current.values()) / sum(original.values())
        most = math.nextafter(1.0, 0.0)
        if params_at(most) > target_params:
            raise ValueError(
                f"target_params {target_params} is below what the per-group floors keep "
                f"({params_at(most)} parameters at min_keep_fraction {min_keep_fraction})"
            )
        ratio = _smallest_true(already, most, lambda at: params_at(at) <= target_params)
    return _remove_all_but(graph, selection(ratio), ratio)


def _smallest_true(low: float, high: float, test: Callable[[float], bool]) -> float:
    """The smallest x in [low, high] where a monotone test holds (it holds at high)."""
    if test(low):
        return low
    for _ in range(60):  # far below 1 / (channels of any network) in the end
        if high - low <= 1e-12:
            break
        middle = (low + high) / 2
        if test(middle):
            high = middle
        else:
            low = middle
    return high


def _remove_all_but(
    graph: ChannelGraph, keep: dict[str, torch.Tensor], ratio: float
) -> ChannelPruning:
    before = {group.name: group.channels for group in graph.groups}
    params_before = _count(graph.model)
    removed = {name: sorted(set(range(before[name])) - set(keep[name].tolist())) for name in before}
    graph.remove(removed)
    return ChannelPruning(
        channels_before=before,
        channels_after={group.name: group.channels for group in graph.groups},
        kept={name: keep[name].tolist() for name in before},
        params_before=params_before,
        params_after=_count(graph.model),
        ratio=ratio,
    )


def _count(model: nn.Module) -> int:
    return sum(parameter.numel() for parameter in model.parameters())


def keep_channels(
    model: nn.Module,
    example_inputs: torch.Tensor,
    kept: dict[str, list[int]],
    keep_outputs: list[str] | None = None,
) -> None:
    """Remove in place every channel of each group except ``kept[group]`` (indices in the
    current numbering): a ``ChannelPruning.kept`` applied to another copy of the network it
    was computed on (e.g. the weights an iterative schedule rewinds to)."""
    graph = ChannelGraph(model, example_inputs, keep_outputs)
    before = {group.name: group.channels for group in graph.groups}
    if set(kept) != set(before):
        raise ValueError(f"kept names groups {sorted(kept)}; the model has {sorted(before)}")
    graph.remove({name: sorted(set(range(before[name])) - set(kept[name])) for name in before})
