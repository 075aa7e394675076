"""`method: every_third`, a plug-in that is one file beside the sweep file (`plugins:
[./local_method.py]`): keep every third weight of each prunable layer (flat index 0, 3, 6, ...),
once at initialisation, then train."""

from __future__ import annotations

from typing import Any

import torch

import pruning
from trainables.config import TrialConfig
from trainables.methods import Method, register_method
from trainables.methods.context import TrialContext
from trainables.methods.rounds import RoundPlan, run_round


@register_method
class EveryThird(Method):
    name = "every_third"
    label = "every third weight (local file)"
    sweep_order = 21

    def name_parts(self, config: TrialConfig) -> list[str]:
        return []

    def run(self, context: TrialContext) -> None:
        if context.completed_round() >= 1:
            return

        def setup() -> tuple[pruning.Mask, dict[str, Any]]:
            parameters = dict(context.model.named_parameters())
            mask = {}
            for name in context.prunable:
                weight = parameters[name]
                index = torch.arange(weight.numel(), device=weight.device)
                mask[name] = (index % 3 == 0).view(weight.shape)
            pruning.apply_mask(context.model, mask)
            return mask, {}

        epochs = context.config.train.epochs
        run_round(context, RoundPlan(1, 2 / 3, range(epochs), epochs, final=True), setup)
