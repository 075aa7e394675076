"""Pruning at initialisation: score the untrained (or pretrained) weights once, prune to the
target, train the sparse network like dense.

snip (Lee et al. 2019), grasp (Wang et al. 2020), synflow (Tanaka et al. 2020), and the controls
random and magnitude_init: one schedule, five scorers (`pruning.scorers`). Each scorer's settings
section says how it fills the scorer's context.
"""

from __future__ import annotations

from typing import Any, ClassVar, Literal

import torch
from pydantic import Field
from torch import nn

import pruning
from trainables import random_streams
from trainables.config import MethodSection, TrialConfig
from trainables.methods.base import METHODS, Method
from trainables.methods.context import TrialContext
from trainables.methods.controls import (
    full_mask,
    pattern_reads,
    pattern_sparsity,
    prune_and_reset,
    refuse_pattern_with_shuffle,
)
from trainables.methods.rounds import RoundPlan, cpu_state, run_round


class ScorerSettings(MethodSection):
    """A scorer's section: its fields, what they put into `pruning.ScoringContext`, and what
    `--smoke` shrinks."""

    smoke: ClassVar[dict[str, Any]] = {}

    def scoring_context(self, context: TrialContext) -> dict[str, Any]:
        return {}


class DataScorerConfig(ScorerSettings):
    score_batches: int = Field(1, ge=1, description="training batches the scores are summed over")
    batchnorm_mode: Literal["train", "eval"] = Field(
        "train",
        description="BatchNorm while scoring: train (batch statistics, as the GraSP code) or "
        "eval (running statistics, as the SNIP and Synaptic-Flow code)",
    )
    smoke: ClassVar[dict[str, Any]] = {"score_batches": 1}

    def scoring_context(self, context: TrialContext) -> dict[str, Any]:
        return {
            "batches": scoring_batches(context, self.score_batches),
            "loss_fn": nn.CrossEntropyLoss(),
            "num_batches": self.score_batches,
            "batchnorm_mode": self.batchnorm_mode,
        }


class GraspConfig(DataScorerConfig):
    temperature: float = Field(200.0, gt=0, description="logits are divided by this (GraSP's T)")

    def scoring_context(self, context: TrialContext) -> dict[str, Any]:
        return {**super().scoring_context(context), "grasp_temperature": self.temperature}


class SynflowConfig(ScorerSettings):
    iterations: int = Field(100, ge=1, description="pruning rounds of the iterative schedule")
    smoke: ClassVar[dict[str, Any]] = {"iterations": 5}

    def scoring_context(self, context: TrialContext) -> dict[str, Any]:
        return {"synflow_iterations": self.iterations}


class PruneAtInit(Method):
    """The family's schedule; an instance names its method, label, scorer and settings."""

    sweep_order = 40  # short trials last, so no long trial is left running alone at the end
    prune_fields = frozenset(
        {"prune.target_sparsity", "prune.allocation", "prune.mask_control", "prune.reinit"}
    )

    def __init__(
        self,
        name: str,
        label: str,
        scorer: str,
        section: type[ScorerSettings] | None = None,
        allocations: frozenset[str] = Method.allocations,
    ) -> None:
        self.name, self.label, self.scorer = name, label, scorer
        self.section, self.allocations = section, allocations

    def reads(self, config: TrialConfig) -> set[str]:
        fields = super().reads(config) | pattern_reads(config)
        if config.prune.pattern is not None:  # the pattern sets how much and where
            fields -= {"prune.target_sparsity", "prune.allocation"}
        return fields

    def validate(self, config: TrialConfig) -> None:
        super().validate(config)
        refuse_pattern_with_shuffle(config)

    def row_tags(self, config: TrialConfig) -> dict[str, Any]:
        return {**super().row_tags(config), "scorer": self.scorer}

    def smoke_overrides(self, config: TrialConfig) -> dict[str, Any]:
        smoke = self.section.smoke if self.section is not None else {}
        return {f"{self.name}.{field}": value for field, value in smoke.items()}

    def run(self, context: TrialContext) -> None:
        if context.completed_round() >= 1:
            return  # the single round is already checkpointed
        config = context.config
        target = pattern_sparsity(config)
        splits = context.data.splits
        scoring = {
            "target_sparsity": target,
            "seed": random_streams.random_scores_seed(config.seed),
            "input_shape": (splits.in_channels, splits.image_size, splits.image_size),
        }
        if config.settings is not None:
            scoring.update(config.settings.scoring_context(context))

        def setup() -> tuple[pruning.Mask, dict[str, Any]]:
            init_weights = cpu_state(context.model.state_dict())
            mask = full_mask(context)
            scores = pruning.score(context.model, mask, self.scorer, **scoring)
            mask = prune_and_reset(context, scores, mask, 1, target)
            return mask, {"init_weights": init_weights}

        epochs = config.train.epochs
        run_round(context, RoundPlan(1, target, range(epochs), epochs, final=True), setup)


def scoring_batches(context: TrialContext, count: int) -> list[tuple[torch.Tensor, torch.Tensor]]:
    """The first `count` training batches of a seeded shuffle, un-augmented."""
    return list(
        # Dataset seam: batches come from the splits object, in memory or streamed.
        context.data.splits.batches(
            "train",
            context.config.train.batch_size,
            shuffle=True,
            generator=random_streams.scoring_batches(context.config.seed),
            device=context.runtime.device,
            augment=context.data.eval_augment,
            drop_last=False,
            max_batches=count,
        )
    )


for _method in (
    PruneAtInit("snip", "SNIP", "snip", DataScorerConfig),
    PruneAtInit("grasp", "GraSP", "grasp", GraspConfig),
    PruneAtInit("synflow", "SynFlow", "synflow", SynflowConfig),
    PruneAtInit("random", "random at init", "random"),
    PruneAtInit("magnitude_init", "magnitude at init", "magnitude",
                allocations=frozenset({"global", "layerwise", "erk", "lamp"})),
):
    METHODS.register(_method.name)(_method)
