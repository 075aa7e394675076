"""imp: Iterative Magnitude Pruning (Frankle & Carbin 2019; Frankle et al. 2020; Renda et al.
2020): train dense, then rounds of {prune by magnitude, reset, retrain}.

Round k of the iterative schedule prunes to exactly 1-(1-p)^k of the prunable weights; the
one-shot schedule prunes straight to `prune.target_sparsity` (or to the N:M `prune.pattern`).
One trial reports every round, so it yields its seed's whole accuracy-vs-sparsity curve. The
rounds, rewinding and retraining are `retraining.py`'s, shared with structured pruning.
"""

from __future__ import annotations

from typing import Any

import pruning
from trainables.config import SectionError, TrialConfig
from trainables.methods.base import register_method
from trainables.methods.context import TrialContext
from trainables.methods.controls import (
    device_mask,
    pattern_reads,
    pattern_sparsity,
    prune_and_reset,
    refuse_pattern_with_shuffle,
)
from trainables.methods.retraining import RetrainingConfig, RetrainingMethod, rewind_carry
from trainables.methods.rounds import RoundStart


class ImpConfig(RetrainingConfig):
    """IMP's settings: the shared retraining schedule with its defaults (iterative, rewind to
    init)."""


@register_method
class Imp(RetrainingMethod):
    name = "imp"
    label = "IMP"
    section = ImpConfig
    sweep_order = 10
    prune_fields = frozenset({"prune.allocation", "prune.mask_control", "prune.reinit"})
    excluded_allocations = frozenset()  # magnitudes: LAMP applies

    def oneshot_target(self, config: TrialConfig) -> float:
        return pattern_sparsity(config)

    def oneshot_reads(self, config: TrialConfig) -> set[str]:
        return pattern_reads(config)

    def reads(self, config: TrialConfig) -> set[str]:
        fields = super().reads(config)
        if config.prune.pattern is not None:
            fields.discard("prune.allocation")
        return fields

    def validate(self, config: TrialConfig) -> None:
        super().validate(config)
        if config.prune.pattern is not None and config.settings.schedule != "oneshot":
            raise SectionError(
                "config field 'prune.pattern': an N:M pattern is reached in one round; it needs "
                "imp.schedule: oneshot"
            )
        refuse_pattern_with_shuffle(config)

    def row_tags(self, config: TrialConfig) -> dict[str, Any]:
        oneshot = config.settings.schedule == "oneshot"
        return {
            "label": "IMP one-shot" if oneshot else "IMP iterative",
            "level_by": "target_sparsity" if oneshot else "round",
            "schedule": config.settings.schedule,
            "scorer": "magnitude",
        }

    def setup_round(
        self, context: TrialContext, previous: dict[str, Any], round_index: int, target: float
    ) -> RoundStart:
        """Prune by global magnitude from the previous round's final weights, reset."""
        carry = rewind_carry(context, previous)
        context.model.load_state_dict(previous["model"])
        mask = device_mask(context, previous["masks"])
        scores = pruning.score(context.model, mask, "magnitude")
        mask = prune_and_reset(context, scores, mask, round_index, target, carry["rewind_weights"])
        return mask, carry

