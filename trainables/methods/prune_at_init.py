"""Pruning at initialisation: score the untrained (or pretrained) weights once, prune to the
target, train the sparse network like dense.

snip (Lee et al. 2019), grasp (Wang et al. 2020), synflow (Tanaka et al. 2020), and the controls
random and magnitude_init. They differ only in the scorer (`pruning.scorers`) and its settings.
"""

from __future__ import annotations

from typing import Any, ClassVar, Literal

import torch
from pydantic import Field
from torch import nn

import pruning
from trainables import random_streams
from trainables.batches import iterate_batches
from trainables.config import MethodSection, TrialConfig
from trainables.methods.base import Method, register_method
from trainables.methods.context import TrialContext
from trainables.methods.controls import full_mask, prune_and_reset
from trainables.methods.rounds import RoundPlan, cpu_state, run_round


class DataScorerConfig(MethodSection):
    score_batches: int = Field(1, ge=1, description="training batches the scores are summed over")
    batchnorm_mode: Literal["train", "eval"] = Field(
        "train",
        description="BatchNorm while scoring: train (batch statistics, as the GraSP code) or "
        "eval (running statistics, as the SNIP and Synaptic-Flow code)",
    )


class GraspConfig(DataScorerConfig):
    temperature: float = Field(200.0, gt=0, description="logits are divided by this (GraSP's T)")


class SynflowConfig(MethodSection):
    iterations: int = Field(100, ge=1, description="pruning rounds of the iterative schedule")


class PruneAtInit(Method):
    """The family's shared schedule; a subclass names its scorer."""

    scorer: ClassVar[str]
    sweep_order = 40  # short trials last, so no long trial is left running alone at the end
    prune_fields = frozenset(
        {"prune.target_sparsity", "prune.allocation", "prune.mask_control", "prune.reinit"}
    )

    def row_tags(self, config: TrialConfig) -> dict[str, Any]:
        return {**super().row_tags(config), "scorer": self.scorer}

    def scoring_context(self, context: TrialContext) -> dict[str, Any]:
        """Keyword arguments of `pruning.ScoringContext` beyond the target."""
        return {}

    def run(self, context: TrialContext) -> None:
        if context.completed_round() >= 1:
            return  # the single round is already checkpointed
        config = context.config
        target = config.prune.target_sparsity

        def setup() -> tuple[pruning.Mask, dict[str, Any]]:
            init_weights = cpu_state(context.model.state_dict())
            mask = full_mask(context)
            scores = pruning.score(
                context.model, mask, self.scorer, target_sparsity=target,
                **self.scoring_context(context),
            )
            mask = prune_and_reset(context, scores, mask, 1, target)
            return mask, {"init_weights": init_weights}

        epochs = config.train.epochs
        run_round(context, RoundPlan(1, target, range(epochs), epochs, final=True), setup)


def scoring_batches(context: TrialContext, count: int) -> list[tuple[torch.Tensor, torch.Tensor]]:
    """The first `count` training batches of a seeded shuffle, un-augmented."""
    splits = context.data.splits
    return list(
        iterate_batches(
            splits.train_images,
            splits.train_labels,
            context.config.train.batch_size,
            shuffle=True,
            generator=random_streams.scoring_batches(context.config.seed),
            device=context.runtime.device,
            augment=context.data.eval_augment,
            drop_last=False,
            max_batches=count,
        )
    )


class DataScorer(PruneAtInit):
    """Scorers that need training batches and a loss (SNIP, GraSP)."""

    section = DataScorerConfig

    def scoring_context(self, context: TrialContext) -> dict[str, Any]:
        settings = context.config.settings
        return {
            "batches": scoring_batches(context, settings.score_batches),
            "loss_fn": nn.CrossEntropyLoss(),
            "num_batches": settings.score_batches,
            "batchnorm_mode": settings.batchnorm_mode,
        }

    def smoke_overrides(self, config: TrialConfig) -> dict[str, Any]:
        return {f"{self.name}.score_batches": 1}


@register_method
class Snip(DataScorer):
    name = "snip"
    label = "SNIP"
    scorer = "snip"


@register_method
class Grasp(DataScorer):
    name = "grasp"
    label = "GraSP"
    scorer = "grasp"
    section = GraspConfig

    def scoring_context(self, context: TrialContext) -> dict[str, Any]:
        return {**super().scoring_context(context),
                "grasp_temperature": context.config.settings.temperature}


@register_method
class Synflow(PruneAtInit):
    name = "synflow"
    label = "SynFlow"
    scorer = "synflow"
    section = SynflowConfig

    def scoring_context(self, context: TrialContext) -> dict[str, Any]:
        splits = context.data.splits
        return {
            "synflow_iterations": context.config.settings.iterations,
            "input_shape": (splits.in_channels, splits.image_size, splits.image_size),
        }

    def smoke_overrides(self, config: TrialConfig) -> dict[str, Any]:
        return {"synflow.iterations": 5}


@register_method
class RandomAtInit(PruneAtInit):
    name = "random"
    label = "random at init"
    scorer = "random"

    def scoring_context(self, context: TrialContext) -> dict[str, Any]:
        return {"seed": random_streams.random_scores_seed(context.config.seed)}


@register_method
class MagnitudeAtInit(PruneAtInit):
    name = "magnitude_init"
    label = "magnitude at init"
    scorer = "magnitude"
    allocations = frozenset({"global", "layerwise", "erk", "lamp"})
