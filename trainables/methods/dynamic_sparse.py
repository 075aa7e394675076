"""rigl and set: dynamic sparse training from a sparse initialisation.

The network starts from a random mask at `prune.target_sparsity` (ERK allocation by default,
Evci et al. 2020). Every `update_interval` steps until `end` of training, each layer drops the
fraction alpha/2 * (1 + cos(pi t / T_end)) of its active weights with the smallest magnitude and
grows as many (`pruning.regrowth`): RigL (Evci et al. 2020) by the largest dense-gradient
magnitude, SET (Mocanu et al. 2018) uniformly at random. Grown weights start at zero with zero
optimizer state; each layer keeps its count. As in the RigL reference code, RigL's update step
replaces that step's optimizer step, and SET's does not.
"""

from __future__ import annotations

from typing import Any, ClassVar

import torch
from pydantic import Field
from torch import nn

import pruning
from trainables import random_streams
from trainables.config import MethodSection, TrialConfig
from trainables.methods.base import Method, register_method
from trainables.methods.context import TrialContext
from trainables.methods.controls import full_mask
from trainables.methods.rounds import RoundPlan, cpu_state, last_selectable_epoch, run_round


class DynamicSparseConfig(MethodSection):
    update_interval: int = Field(100, ge=1, description="steps between mask updates (Delta T)")
    end: float = Field(0.75, gt=0, le=1, description="last update, fraction of training (T_end)")
    drop_fraction: float = Field(0.3, gt=0, le=1, description="alpha, the initial drop fraction")


class DropAndGrow:
    """The mask updater shared by RigL and SET; `grow_scores` is what differs."""

    def __init__(self, schedule: pruning.DropSchedule, seed: int, by_gradient: bool) -> None:
        self.schedule = schedule
        self.seed = seed
        self.needs_dense_gradients = by_gradient
        self.replaces_optimizer_step = by_gradient

    def due(self, step: int) -> bool:
        return self.schedule.due(step)

    def grow_scores(self, step: int, parameters: dict[str, torch.Tensor],
                    mask: pruning.Mask) -> dict[str, torch.Tensor]:
        if self.needs_dense_gradients:
            return {name: parameters[name].grad.abs() for name in mask}
        return {
            name: torch.rand(keep.shape, generator=random_streams.regrowth(self.seed, step, index))
            for index, (name, keep) in enumerate(mask.items())
        }

    def update(self, step: int, model: nn.Module, mask: pruning.Mask) -> pruning.Mask:
        parameters = dict(model.named_parameters())
        weights = {name: parameters[name].detach() for name in mask}
        fraction = self.schedule.drop_fraction(step)
        return pruning.drop_and_grow(weights, mask, self.grow_scores(step, parameters, mask),
                                     fraction)


class DynamicSparse(Method):
    by_gradient: ClassVar[bool]
    section = DynamicSparseConfig
    sweep_order = 30
    prune_fields = frozenset({"prune.target_sparsity", "prune.allocation"})
    default_allocation = "erk"
    allocations = frozenset({"erk", "layerwise"})

    def row_tags(self, config: TrialConfig) -> dict[str, Any]:
        grow = "gradient" if self.by_gradient else "random"
        return {**super().row_tags(config), "schedule": "dynamic", "scorer": f"magnitude/{grow}"}

    def smoke_overrides(self, config: TrialConfig) -> dict[str, Any]:
        return {f"{self.name}.update_interval": 1}

    def run(self, context: TrialContext) -> None:
        if context.completed_round() >= 1:
            return
        config = context.config
        settings = config.settings
        target = config.prune.target_sparsity
        epochs = config.train.epochs
        steps = context.steps_per_epoch()
        schedule = pruning.DropSchedule.from_fractions(
            epochs * steps, interval=settings.update_interval, end=settings.end,
            alpha=settings.drop_fraction,
        )

        def setup() -> tuple[pruning.Mask, dict[str, Any]]:
            init_weights = cpu_state(context.model.state_dict())
            mask = full_mask(context)
            seed = random_streams.random_scores_seed(config.seed)
            scores = pruning.score(context.model, mask, "random", seed=seed)
            mask = pruning.prune_to_sparsity(scores, mask, target, self.allocation(config))
            pruning.apply_mask(context.model, mask)
            return mask, {"init_weights": init_weights}

        updates = schedule.update_steps()
        positions = range(epochs)
        plan = RoundPlan(
            1, target, positions, epochs, final=True,
            mask_updater=DropAndGrow(schedule, config.seed, self.by_gradient),
            select_from_epoch=last_selectable_epoch(positions, steps, updates[-1])
            if updates else None,
        )
        run_round(context, plan, setup)


@register_method
class RigL(DynamicSparse):
    name = "rigl"
    label = "RigL"
    by_gradient = True


@register_method
class Set(DynamicSparse):
    name = "set"
    label = "SET"
    by_gradient = False
