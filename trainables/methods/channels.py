"""channels: structured pruning that removes whole channels, so the network really gets smaller.

After the shared dense round 0, each round scores the channel groups of the previous round's
network and removes the least important channels with Torch-Pruning (`pruning.prune_channels`:
a convolution's filter goes together with its BatchNorm channel, the matching input channels of
every layer that reads it, and across residual additions with the coupled filters of the other
branch). Criteria (`pruning.channel_importance`): `l1` / `l2` filter norm (Li et al. 2017),
`bn_scale` (network slimming, Liu et al. 2017; its L1 penalty on the BN scales is the dense
recipe's `train.bn_l1`), `taylor` (first-order Taylor, Molchanov et al. 2019) and `random` (the
control). Allocation: `uniform` (every group loses the same fraction) or `global` (one ranking).

The target counts parameters by default: level s leaves at most the parameters that unstructured
pruning at sparsity s leaves (all parameters: T - round(s * P), T total, P prunable), the least
pruning that does, so a sweep compares structured and unstructured pruning at matched counts.
With `target: channels` a level is the fraction of channels removed (of the original channels).
Schedules, rewinding and retraining are IMP's (`retraining.py`).

A round checkpoint holds the smaller network: `model` / `best_model` are its state dicts and
`layer_widths` its per-layer widths (`pruning.rebuild` narrows a freshly built unpruned model to
them and loads the weights); `masks` are all True over its prunable weights.
"""

from __future__ import annotations

import copy
import dataclasses
from typing import Any, Literal

import torch
from pydantic import Field, field_validator
from torch import nn

import pruning
from trainables import random_streams
from trainables.config import SectionError, TrialConfig, names_in
from trainables.errors import ConfigError
from trainables.methods.base import register_method
from trainables.methods.context import TrialContext
from trainables.methods.prune_at_init import scoring_batches
from trainables.methods.retraining import RetrainingConfig, RetrainingMethod, rewind_carry
from trainables.methods.rounds import Carry, RoundPlan, RoundStart, cpu_state, load_weights

#: How figures name the built-in criteria; a plug-in's is "channels, <its name>".
CRITERION_LABELS = {
    "l1": "channels, L1 norm",
    "l2": "channels, L2 norm",
    "bn_scale": "channels, BN scale",
    "taylor": "channels, Taylor",
    "random": "random channels",
}


class ChannelsConfig(RetrainingConfig):
    schedule: Literal["iterative", "oneshot"] = Field(
        "oneshot", description="one round to the target, or iterative rounds at `rate`"
    )
    rewind: str = Field("none", description="reset after pruning: none (fine-tune), init, epoch:K")
    criterion: str = Field(
        "l1", description="channel importance: l1 / l2 (filter norm), bn_scale, taylor, random "
        "(the control)", json_schema_extra=names_in("channel criterion"),
    )
    allocation: str = Field(
        "uniform", description="uniform (every channel group loses the same fraction) or "
        "global (one ranking)", json_schema_extra=names_in("channel allocation"),
    )
    target: Literal["params", "channels"] = Field(
        "params", description="what a level counts: parameters (prune.target_sparsity, matched "
        "to unstructured pruning) or channels removed (channels.channel_fraction)"
    )
    channel_fraction: float = Field(
        0.5, gt=0, lt=1, description="one-shot level with target: channels"
    )
    min_keep_fraction: float = Field(
        0.1, ge=0, le=1, description="every group keeps at least this fraction of its channels"
    )
    score_batches: int = Field(
        1, ge=1, description="training batches a criterion that reads them (taylor) scores over")

    @field_validator("criterion")
    @classmethod
    def _registered_criterion(cls, criterion: str) -> str:
        return pruning.CRITERIA.check(criterion)

    @field_validator("allocation")
    @classmethod
    def _registered_allocation(cls, allocation: str) -> str:
        return pruning.CHANNEL_ALLOCATIONS.check(allocation)


@register_method
class Channels(RetrainingMethod):
    name = "channels"
    label = "channels"
    section = ChannelsConfig
    sweep_order = 15
    allocations = frozenset()  # channels.allocation, not prune.allocation

    def oneshot_target(self, config: TrialConfig) -> float:
        settings = config.settings
        return settings.channel_fraction if settings.target == "channels" else (
            config.prune.target_sparsity)

    def oneshot_reads(self, config: TrialConfig) -> set[str]:
        by_channels = config.settings.target == "channels"
        return {"channels.channel_fraction"} if by_channels else {"prune.target_sparsity"}

    def reads(self, config: TrialConfig) -> set[str]:
        own = ["criterion", "allocation", "target", "min_keep_fraction"]
        if pruning.reads_batches(config.settings.criterion):
            own.append("score_batches")
        return super().reads(config) | {f"channels.{name}" for name in own}

    def validate(self, config: TrialConfig) -> None:
        if config.prune.allocation is not None:
            raise SectionError(
                "config field 'prune.allocation': method channels allocates with "
                "channels.allocation (e.g. uniform or global); remove prune.allocation"
            )
        super().validate(config)

    def name_parts(self, config: TrialConfig) -> list[str]:
        settings = config.settings
        if settings.schedule == "oneshot" and settings.target == "channels":
            level = [f"ch{settings.channel_fraction:g}"]
        else:
            level = super().name_parts(config)
        return [settings.criterion, *level]

    def row_tags(self, config: TrialConfig) -> dict[str, Any]:
        settings = config.settings
        iterative = settings.schedule == "iterative"
        by_channels = settings.target == "channels"
        label = CRITERION_LABELS.get(settings.criterion, f"channels, {settings.criterion}")
        label += " by channel fraction" if by_channels else ""
        label += " (iterative)" if iterative else ""
        level_by = "round" if iterative else (
            "target_channel_fraction" if by_channels else "target_sparsity")
        return {"label": label, "level_by": level_by, "schedule": settings.schedule,
                "scorer": settings.criterion}

    def smoke_overrides(self, config: TrialConfig) -> dict[str, Any]:
        smoke = super().smoke_overrides(config)
        if pruning.reads_batches(config.settings.criterion):
            smoke["channels.score_batches"] = 1
        return smoke

    def plan(self, context: TrialContext, round_index: int, target: float, final: bool
             ) -> RoundPlan:
        by_channels = context.config.settings.target == "channels"

        def channel_fields(carry: Carry) -> dict[str, Any]:
            original, now = carry["original_channels"], carry["channel_counts"]
            return {
                "target_channel_fraction": target if by_channels else None,
                "channels": sum(now.values()),
                "channels_dense": sum(original.values()),
                "channel_fraction_removed": 1 - sum(now.values()) / sum(original.values()),
                "channel_counts": dict(now),
            }

        plan = super().plan(context, round_index, target, final)
        return dataclasses.replace(
            plan, target_sparsity=None if by_channels else target, row_fields=channel_fields
        )

    def setup_round(
        self, context: TrialContext, previous: dict[str, Any], round_index: int, target: float
    ) -> RoundStart:
        """Remove channels from the previous round's network, then reset the rest."""
        settings = context.config.settings
        carry = rewind_carry(context, previous)
        load_weights(context, previous["model"], previous.get("layer_widths"))
        example = example_inputs(context)
        keep_outputs = protected_outputs(context)
        start = carry["rewind_weights"]
        before = copy.deepcopy(context.model) if start is not None else None
        goal = ({"ratio": target} if settings.target == "channels"
                else {"target_params": matched_params(context, target)})
        try:
            removed = pruning.prune_channels(
                context.model, example, **goal, criterion=settings.criterion,
                allocation=settings.allocation, original_channels=previous.get(
                    "original_channels"), min_keep_fraction=settings.min_keep_fraction,
                keep_outputs=keep_outputs, **scoring(context, round_index),
            )
        except ValueError as error:
            raise ConfigError(f"method channels, round {round_index}: {error}") from None
        if before is not None:  # the rewind weights lose the same channels
            before.load_state_dict(start)
            pruning.keep_channels(before, example, removed.kept, keep_outputs)
            context.model.load_state_dict(before.state_dict())
            carry["rewind_weights"] = cpu_state(before.state_dict())
        if context.runtime.channels_last:
            context.model.to(memory_format=torch.channels_last)
        carry.update(
            layer_widths=pruning.layer_widths(context.model),
            original_channels=previous.get("original_channels") or removed.channels_before,
            channel_counts=removed.channels_after,
        )
        return None, carry  # nothing masked: the smaller network trains dense


def example_inputs(context: TrialContext) -> torch.Tensor:
    """One zero image: what Torch-Pruning traces the network's channel groups with."""
    splits = context.data.splits
    shape = (1, splits.in_channels, splits.image_size, splits.image_size)
    return torch.zeros(shape, device=context.runtime.device)


def protected_outputs(context: TrialContext) -> list[str]:
    """Layers whose output channels stay: the classifier, and the first convolution with
    `prune.exclude_first_conv` (the input image's channels are never pruned anyway)."""
    modules = list(context.model.named_modules())
    kept = [name for name, module in modules if isinstance(module, nn.Linear)][-1:]
    if context.config.prune.exclude_first_conv:
        kept += [name for name, module in modules if isinstance(module, nn.Conv2d)][:1]
    return kept


def matched_params(context: TrialContext, sparsity: float) -> int:
    """The parameters unstructured pruning at `sparsity` leaves: all but round(s * prunable)."""
    dense = context.dense_numel
    return sum(dense.values()) - round(sparsity * sum(dense[name] for name in context.prunable))


def scoring(context: TrialContext, round_index: int) -> dict[str, Any]:
    """What the criterion reads besides the weights: batches (taylor) and a seed (random)."""
    settings = context.config.settings
    seed = random_streams.random_channels_seed(context.config.seed, round_index)
    if pruning.reads_batches(settings.criterion):
        return {"batches": scoring_batches(context, settings.score_batches),
                "num_batches": settings.score_batches, "seed": seed}
    return {"seed": seed}
