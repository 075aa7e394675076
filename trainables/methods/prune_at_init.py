"""Pruning at initialisation: score the untrained (or pretrained) weights once, prune to the
target, train the sparse network like dense.

snip (Lee et al. 2019), grasp (Wang et al. 2020), synflow (Tanaka et al. 2020), and the controls
random and magnitude_init: one schedule, a scorer each (`pruning.scorers`), whose settings their
sections hold under the names the sweep files use. `prune_at_init` runs any registered scorer,
plug-ins included: `prune_at_init: {scorer: NAME, settings: {...the scorer's own fields...}}`.
"""

from __future__ import annotations

from typing import Any, ClassVar, Literal

import torch
from pydantic import Field, model_validator
from torch import nn

import pruning
from trainables import random_streams
from trainables.config import MethodSection, TrialConfig, names_in
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
    """A named scorer's section: its fields, the scorer settings they stand for, and what
    `--smoke` shrinks."""

    smoke: ClassVar[dict[str, Any]] = {}

    def scorer_settings(self) -> dict[str, Any]:
        """The settings of `pruning.make_scorer`, by the scorer's own field names."""
        return {}


class DataScorerConfig(ScorerSettings):
    score_batches: int = Field(1, ge=1, description="training batches the scores are summed over")
    batchnorm_mode: Literal["train", "eval"] = Field(
        "train",
        description="BatchNorm while scoring: train (batch statistics, as the GraSP code) or "
        "eval (running statistics, as the SNIP and Synaptic-Flow code)",
    )
    smoke: ClassVar[dict[str, Any]] = {"score_batches": 1}

    def scorer_settings(self) -> dict[str, Any]:
        return {"num_batches": self.score_batches, "batchnorm_mode": self.batchnorm_mode}


class GraspConfig(DataScorerConfig):
    temperature: float = Field(200.0, gt=0, description="logits are divided by this (GraSP's T)")

    def scorer_settings(self) -> dict[str, Any]:
        return {**super().scorer_settings(), "temperature": self.temperature}


class SynflowConfig(ScorerSettings):
    iterations: int = Field(100, ge=1, description="pruning rounds of the iterative schedule")
    smoke: ClassVar[dict[str, Any]] = {"iterations": 5}

    def scorer_settings(self) -> dict[str, Any]:
        return {"iterations": self.iterations}


class AnyScorerConfig(ScorerSettings):
    """`prune_at_init`'s section: any registered scorer and its own settings."""

    scorer: str = Field("magnitude", description="the scorer",
                        json_schema_extra=names_in("scorer"))
    settings: dict[str, Any] = Field(
        default_factory=dict, description="the scorer's own settings by field name (its "
        "defaults fill the rest; written out in full once validated)")

    @model_validator(mode="before")
    @classmethod
    def _settings_of_the_scorer(cls, raw: Any) -> Any:
        # Validated here, where the scorer is known, and written out in full, so that {} and
        # the defaults written by hand are one trial (one key, one recipe).
        if not isinstance(raw, dict) or not isinstance(raw.get("settings", {}), dict):
            return raw
        name = raw.get("scorer", "magnitude")
        if not isinstance(name, str):
            return raw
        pruning.SCORERS.get(name)  # ValueError naming the registered scorers
        try:
            scorer = pruning.make_scorer(name, raw.get("settings"))
        except (ValueError, TypeError) as error:
            text = str(error)
            own = text if text.startswith(f"scorer {name!r}") else f"scorer {name!r}: {text}"
            raise ValueError(own) from None
        return {**raw, "settings": scorer.settings()}

    def scorer_settings(self) -> dict[str, Any]:
        return dict(self.settings)

    @property
    def smoke_settings(self) -> dict[str, Any]:
        return pruning.SCORERS.get(self.scorer).smoke_settings


class PruneAtInit(Method):
    """The family's schedule; an instance names its method, label, scorer and settings (a
    scorer of None: the one the section names)."""

    sweep_order = 40  # short trials last, so no long trial is left running alone at the end
    prune_fields = frozenset(
        {"prune.target_sparsity", "prune.allocation", "prune.mask_control", "prune.reinit"}
    )

    def __init__(
        self,
        name: str,
        label: str,
        scorer: str | None,
        section: type[ScorerSettings] | None = None,
        excluded_allocations: frozenset[str] = Method.excluded_allocations,
    ) -> None:
        self.name, self.label, self.scorer = name, label, scorer
        self.section, self.excluded_allocations = section, excluded_allocations

    def scorer_name(self, config: TrialConfig) -> str:
        return self.scorer if self.scorer is not None else config.settings.scorer

    def make_scorer(self, config: TrialConfig) -> pruning.Scorer:
        """The trial's scorer object, with its settings."""
        settings = config.settings.scorer_settings() if config.settings is not None else {}
        return pruning.make_scorer(self.scorer_name(config), settings)

    def reads(self, config: TrialConfig) -> set[str]:
        fields = super().reads(config) | pattern_reads(config)
        if config.prune.pattern is not None:  # the pattern sets how much and where
            fields -= {"prune.target_sparsity", "prune.allocation"}
        return fields

    def validate(self, config: TrialConfig) -> None:
        super().validate(config)
        refuse_pattern_with_shuffle(config)

    def name_parts(self, config: TrialConfig) -> list[str]:
        own = [self.scorer_name(config)] if self.scorer is None else []
        return own + super().name_parts(config)

    def row_tags(self, config: TrialConfig) -> dict[str, Any]:
        scorer = self.scorer_name(config)
        label = self.label if self.scorer is not None else f"{scorer} at init"
        return {**super().row_tags(config), "label": label, "scorer": scorer}

    def smoke_overrides(self, config: TrialConfig) -> dict[str, Any]:
        if self.section is None:
            return {}
        if self.scorer is None:
            return {f"{self.name}.settings.{field}": value
                    for field, value in config.settings.smoke_settings.items()}
        return {f"{self.name}.{field}": value for field, value in self.section.smoke.items()}

    def run(self, context: TrialContext) -> None:
        if context.completed_round() >= 1:
            return  # the single round is already checkpointed
        config = context.config
        target = pattern_sparsity(config)
        splits = context.data.splits
        scorer = self.make_scorer(config)
        needed = scorer.batches_needed
        inputs = pruning.ScoringInputs(
            batches=scoring_batches(context, needed) if needed else None,
            loss_fn=nn.CrossEntropyLoss(),
            target_sparsity=target,
            seed=random_streams.random_scores_seed(config.seed),
            input_shape=(splits.in_channels, splits.image_size, splits.image_size),
        )

        def setup() -> tuple[pruning.Mask, dict[str, Any]]:
            init_weights = cpu_state(context.model.state_dict())
            mask = full_mask(context)
            scores = scorer(context.model, mask, inputs)
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
    # LAMP rescales magnitudes: it applies where the scores are magnitudes.
    PruneAtInit("magnitude_init", "magnitude at init", "magnitude",
                excluded_allocations=frozenset()),
    PruneAtInit("prune_at_init", "any scorer at init", None, AnyScorerConfig),
):
    METHODS.register(_method.name)(_method)
