"""budget_dense: the control reviewers ask for, dense training at a pruning method's budget.

IMP trains `epochs` for its dense round and then retrains every round, so it spends several
times the epochs dense does; part of what looks like pruning helping can be the extra training.
A `budget_dense` trial trains the unpruned network from scratch for `train.epochs` set to that
total, once. A sweep adds one per such experiment with `controls: [budget_matched_dense]`
(sweeps/spec.py); its rows are a line of their own at 0% sparsity ("dense, imp's budget (21
epochs)"), never part of the dense reference.
"""

from __future__ import annotations

from typing import Any

from pydantic import Field

from trainables.config import MethodSection, TrialConfig
from trainables.methods.base import Method, register_method
from trainables.methods.context import TrialContext
from trainables.methods.controls import full_mask
from trainables.methods.rounds import RoundPlan, cpu_state, run_round


class BudgetDenseConfig(MethodSection):
    of: str = Field("a pruning method", min_length=1,
                    description="the experiment whose training budget train.epochs matches "
                    "(for the label)")


@register_method
class BudgetDense(Method):
    name = "budget_dense"
    label = "dense at a budget"
    section = BudgetDenseConfig
    sweep_order = 12  # as long as the IMP trial it controls: early, not left running alone

    def name_parts(self, config: TrialConfig) -> list[str]:
        return [f"e{config.train.epochs}"]

    def row_tags(self, config: TrialConfig) -> dict[str, Any]:
        label = f"dense, {config.settings.of}'s budget ({config.train.epochs} epochs)"
        return {**super().row_tags(config), "label": label}

    def run(self, context: TrialContext) -> None:
        if context.completed_round() >= 1:
            return  # the single round is already checkpointed

        def setup() -> tuple[Any, dict[str, Any]]:
            return full_mask(context), {"init_weights": cpu_state(context.model.state_dict())}

        epochs = context.config.train.epochs
        # Round 1, not 0: analysis reads a round 0 of any method but dense as its dense start.
        run_round(context, RoundPlan(1, 0.0, range(epochs), epochs, final=True), setup)
