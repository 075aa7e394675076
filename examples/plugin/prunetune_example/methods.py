"""`method: row_half`: keep the larger-magnitude half of every row of every prunable weight
(`weight.reshape(out, -1)`, rounding the kept count down), once at initialisation, then train."""

from __future__ import annotations

from typing import Any

import torch

import pruning
from trainables.config import TrialConfig
from trainables.methods import Method, register_method
from trainables.methods.context import TrialContext
from trainables.methods.rounds import RoundPlan, run_round


def row_half_mask(weights: dict[str, torch.Tensor]) -> pruning.Mask:
    """For each weight, keep the floor(n / 2) largest magnitudes of each of its rows of n."""
    mask = {}
    for name, weight in weights.items():
        rows = weight.detach().reshape(weight.shape[0], -1).abs()
        kept = torch.zeros_like(rows, dtype=torch.bool)
        keep = rows.shape[1] // 2
        if keep:
            kept.scatter_(1, rows.topk(keep, dim=1).indices, True)
        mask[name] = kept.view(weight.shape)
    return mask


@register_method
class RowHalf(Method):
    name = "row_half"
    label = "row half (example plug-in)"
    sweep_order = 20

    def name_parts(self, config: TrialConfig) -> list[str]:
        return []

    def row_tags(self, config: TrialConfig) -> dict[str, Any]:
        return {**super().row_tags(config), "scorer": "row magnitude"}

    def run(self, context: TrialContext) -> None:
        if context.completed_round() >= 1:
            return

        def setup() -> tuple[pruning.Mask, dict[str, Any]]:
            parameters = dict(context.model.named_parameters())
            mask = row_half_mask({name: parameters[name] for name in context.prunable})
            pruning.apply_mask(context.model, mask)
            return mask, {}

        epochs = context.config.train.epochs
        run_round(context, RoundPlan(1, 0.5, range(epochs), epochs, final=True), setup)
