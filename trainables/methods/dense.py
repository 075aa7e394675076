"""dense: train the network without pruning; the reference every sparse result is compared to."""

from __future__ import annotations

from typing import Any

from trainables.config import TrialConfig
from trainables.methods.base import Method, register_method
from trainables.methods.context import TrialContext
from trainables.methods.dense_model import dense_round


@register_method
class Dense(Method):
    name = "dense"
    label = "dense"
    sweep_order = 0  # first, so that the shared dense models are ready for the others

    def starts_from_dense(self, config: TrialConfig) -> bool:
        return True

    def name_parts(self, config: TrialConfig) -> list[str]:
        return []

    def final_target(self, config: TrialConfig) -> float | None:
        return 0.0

    def row_tags(self, config: TrialConfig) -> dict[str, Any]:
        return {**super().row_tags(config), "level_by": "dense"}

    def round_checkpoints(self, config: TrialConfig) -> int:
        return 1  # round 0 only

    def run(self, context: TrialContext) -> None:
        if context.completed_round() < 0:
            dense_round(context, final=True)
