"""gmp: gradual magnitude pruning (Zhu & Gupta 2017, "To prune, or not to prune").

One training phase in which the mask tightens by magnitude on the cubic schedule of
`pruning.GradualSchedule` (start, end and frequency as fractions of the phase's steps), then the
network trains on at the final sparsity. From scratch it is round 1 of a fresh network; with
`gmp.start_from: dense` round 0 is the shared dense model and round 1 prunes while fine-tuning it.
The test accuracy is that of the best validation epoch among those at the final sparsity.
"""

from __future__ import annotations

from typing import Any, Literal

from pydantic import Field, model_validator
from torch import nn

import pruning
from trainables.config import MethodSection, TrialConfig
from trainables.methods.base import Method, register_method
from trainables.methods.context import TrialContext
from trainables.methods.controls import device_mask, full_mask
from trainables.methods.dense_model import dense_round
from trainables.methods.rounds import RoundPlan, cpu_state, last_selectable_epoch, run_round


class GmpConfig(MethodSection):
    start: float = Field(0.1, ge=0, le=1, description="first pruning step, fraction of the phase")
    end: float = Field(0.75, ge=0, le=1, description="last pruning step, fraction of the phase")
    frequency: float = Field(
        0.02, gt=0, le=1, description="steps between pruning steps, fraction of the phase"
    )
    initial_sparsity: float = Field(0.0, ge=0, lt=1, description="s_i, the first step's target")
    start_from: Literal["scratch", "dense"] = Field(
        "scratch", description="a fresh network, or the shared dense model (round 0)"
    )
    retrain_epochs: int | None = Field(
        None, ge=1, description="epochs of the pruning phase from dense; None = train.epochs"
    )

    @model_validator(mode="after")
    def _ordered(self) -> GmpConfig:
        if self.start > self.end:
            raise ValueError(f"start ({self.start}) must not be after end ({self.end})")
        return self


class GradualMagnitude:
    """The mask updater: at each pruning step, prune the smallest-magnitude kept weights to the
    schedule's sparsity with the trial's allocation."""

    needs_dense_gradients = False
    replaces_optimizer_step = False

    def __init__(self, schedule: pruning.GradualSchedule, allocation: str) -> None:
        self.schedule = schedule
        self.allocation = allocation

    def due(self, step: int) -> bool:
        return self.schedule.target_at_step(step) is not None

    def update(self, step: int, model: nn.Module, mask: pruning.Mask) -> pruning.Mask:
        target = self.schedule.target_at_step(step)
        current = pruning.mask_sparsity(mask)
        if target <= current:  # the cubic's first steps may not reach the current sparsity
            return mask
        scores = pruning.score(model, mask, "magnitude")
        return pruning.prune_to_sparsity(scores, mask, target, self.allocation)


@register_method
class Gmp(Method):
    name = "gmp"
    label = "GMP"
    section = GmpConfig
    sweep_order = 20
    prune_fields = frozenset({"prune.target_sparsity", "prune.allocation"})
    excluded_allocations = frozenset()  # magnitudes: LAMP applies

    def starts_from_dense(self, config: TrialConfig) -> bool:
        return config.settings.start_from == "dense"

    def reads(self, config: TrialConfig) -> set[str]:
        fields = super().reads(config)
        if not self.starts_from_dense(config):
            fields = (fields - {"gmp.*"}) | {f"gmp.{name}" for name in GmpConfig.model_fields
                                              if name != "retrain_epochs"}
        return fields

    def mode_note(self, config: TrialConfig) -> str:
        return f" with gmp.start_from: {config.settings.start_from}"

    def row_tags(self, config: TrialConfig) -> dict[str, Any]:
        return {**super().row_tags(config), "schedule": "gradual", "scorer": "magnitude"}

    def run(self, context: TrialContext) -> None:
        config = context.config
        settings = config.settings
        done = context.completed_round()
        if done >= 1:
            return
        from_dense = settings.start_from == "dense"
        dense = dense_round(context, final=False) if from_dense and done < 0 else None
        if dense is not None and dense["metrics"].get("status") == "diverged":
            return
        epochs = (settings.retrain_epochs if from_dense else None) or config.train.epochs
        steps = context.steps_per_epoch()
        schedule = pruning.GradualSchedule.from_fractions(
            epochs * steps,
            start=settings.start,
            end=settings.end,
            frequency=settings.frequency,
            initial=settings.initial_sparsity,
            final=config.prune.target_sparsity,
        )
        updater = GradualMagnitude(schedule, self.allocation(config))
        positions = range(epochs)

        def setup() -> tuple[pruning.Mask, dict[str, Any]]:
            if dense is not None:
                context.model.load_state_dict(dense["model"])
            carry = {"init_weights": dense["init_weights"] if dense else
                     cpu_state(context.model.state_dict())}
            mask = full_mask(context) if dense is None else device_mask(context, dense["masks"])
            return mask, carry

        plan = RoundPlan(
            1, config.prune.target_sparsity, positions, epochs, final=True,
            mask_updater=updater,
            select_from_epoch=last_selectable_epoch(positions, steps, schedule.last_step),
        )
        run_round(context, plan, setup)
