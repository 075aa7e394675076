"""imp: Iterative Magnitude Pruning (Frankle & Carbin 2019; Frankle et al. 2020; Renda et al.
2020): train dense, then rounds of {prune by magnitude, reset, retrain}.

Round k of the iterative schedule prunes to exactly 1-(1-p)^k of the prunable weights; the
one-shot schedule prunes straight to `prune.target_sparsity`. One trial reports every round, so
it yields its seed's whole accuracy-vs-sparsity curve.
"""

from __future__ import annotations

import re
from typing import Any, Literal

from pydantic import Field, field_validator

import pruning
from trainables.config import MethodSection, SectionError, TrialConfig
from trainables.lr_schedule import lr_at_epoch
from trainables.methods.base import Method, register_method
from trainables.methods.context import TrialContext
from trainables.methods.controls import device_mask, prune_and_reset
from trainables.methods.dense_model import dense_round, rewind_weights
from trainables.methods.rounds import RoundPlan, run_round

_REWIND_PATTERN = re.compile(r"^(init|none|epoch:\d+)$")


class ImpConfig(MethodSection):
    schedule: Literal["iterative", "oneshot"] = Field(
        "iterative", description="iterative rounds at `rate`, or one-shot to target_sparsity"
    )
    rounds: int = Field(5, ge=1, le=100, description="pruning rounds (iterative)")
    rate: float = Field(0.2, gt=0, lt=1, description="fraction of remaining weights per round")
    rewind: str = Field("init", description="reset after pruning: init, epoch:K, or none")
    lr_rewind: bool = Field(True, description="restart the LR schedule when rewind is none")
    retrain_epochs: int | None = Field(
        None, ge=1, description="epochs per retraining round; None = train.epochs"
    )

    @field_validator("rewind")
    @classmethod
    def _rewind_spelling(cls, rewind: str) -> str:
        if not _REWIND_PATTERN.match(rewind):
            raise ValueError(f"rewind {rewind!r} is not one of: init, none, epoch:K (K >= 0)")
        return rewind

    @property
    def rewind_epoch(self) -> int | None:
        """K of `epoch:K`; 0 for `init`; None for `none`."""
        if self.rewind == "none":
            return None
        return 0 if self.rewind == "init" else int(self.rewind.split(":")[1])


@register_method
class Imp(Method):
    name = "imp"
    label = "IMP"
    section = ImpConfig
    sweep_order = 10
    prune_fields = frozenset({"prune.allocation", "prune.mask_control", "prune.reinit"})
    allocations = frozenset({"global", "layerwise", "erk", "lamp"})

    def starts_from_dense(self, config: TrialConfig) -> bool:
        return True

    def dense_epochs(self, config: TrialConfig) -> set[int]:
        epoch = config.settings.rewind_epoch
        return {epoch} if epoch else set()

    def reads(self, config: TrialConfig) -> set[str]:
        imp = config.settings
        fields = super().reads(config) - {"imp.*"}
        fields |= {"imp.schedule", "imp.rewind", "imp.retrain_epochs"}
        if imp.schedule == "oneshot":
            fields.add("prune.target_sparsity")
        else:
            fields |= {"imp.rounds", "imp.rate"}
        if imp.rewind == "none":
            fields.add("imp.lr_rewind")
        return fields

    def mode_note(self, config: TrialConfig) -> str:
        imp = config.settings
        return f" with imp.schedule: {imp.schedule}, imp.rewind: {imp.rewind}"

    def validate(self, config: TrialConfig) -> None:
        super().validate(config)
        imp = config.settings
        epoch = imp.rewind_epoch
        limit = min(config.train.epochs, imp.retrain_epochs or config.train.epochs)
        if epoch is not None and epoch >= limit:
            raise SectionError(
                f"config field 'imp.rewind': epoch:{epoch} must be below train.epochs and "
                f"imp.retrain_epochs ({limit})"
            )

    def name_parts(self, config: TrialConfig) -> list[str]:
        imp = config.settings
        if imp.schedule == "oneshot":
            return super().name_parts(config)
        return [f"p{imp.rate:g}x{imp.rounds}"]

    def row_tags(self, config: TrialConfig) -> dict[str, Any]:
        oneshot = config.settings.schedule == "oneshot"
        return {
            "label": "IMP one-shot" if oneshot else "IMP iterative",
            "level_by": "target_sparsity" if oneshot else "round",
            "schedule": config.settings.schedule,
            "scorer": "magnitude",
        }

    def smoke_overrides(self, config: TrialConfig) -> dict[str, Any]:
        return {"imp.retrain_epochs": self.smoke_epochs(config)}

    def smoke_epochs(self, config: TrialConfig) -> int:
        return (config.settings.rewind_epoch or 0) + 1

    def targets(self, config: TrialConfig) -> list[float]:
        """Target sparsity of rounds 1..R: 1-(1-p)^k (iterative) or the one-shot target."""
        imp = config.settings
        if imp.schedule == "oneshot":
            return [config.prune.target_sparsity]
        return [pruning.imp_target_sparsity(imp.rate, k) for k in range(1, imp.rounds + 1)]

    def run(self, context: TrialContext) -> None:
        targets = self.targets(context.config)
        done = context.completed_round()
        # None when the trial resumes inside a round: that round's setup is already done.
        state = dense_round(context, final=False) if done < 0 else context.completed_state()
        for round_index, target in enumerate(targets, start=1):
            if round_index <= done:
                continue
            if state is not None and state["metrics"].get("status") == "diverged":
                return
            final = round_index == len(targets)
            state = self._round(context, state, round_index, target, final)

    def _round(
        self,
        context: TrialContext,
        previous: dict[str, Any] | None,
        round_index: int,
        target: float,
        final: bool,
    ) -> dict[str, Any]:
        """Prune by global magnitude from the previous round's final weights, reset, retrain."""
        config = context.config
        imp = config.settings

        def setup() -> tuple[pruning.Mask, dict[str, Any]]:
            carry = _rewind_carry(context, previous)
            context.model.load_state_dict(previous["model"])
            mask = device_mask(context, previous["masks"])
            scores = pruning.score(context.model, mask, "magnitude")
            mask = prune_and_reset(
                context, scores, mask, round_index, target, carry["rewind_weights"]
            )
            return mask, carry

        retrain = imp.retrain_epochs or config.train.epochs
        rewind_epoch = imp.rewind_epoch
        schedule = None
        if rewind_epoch is not None:
            # Rewinding to epoch K continues the schedule from K (Frankle et al. 2020).
            positions = range(rewind_epoch, retrain)
        else:
            positions = range(retrain)
            if not imp.lr_rewind:
                # Fine-tuning (Renda et al. 2020): constant at the LR the dense run ended with.
                final_lr = lr_at_epoch(config.train, config.train.epochs - 1)
                schedule = lambda epoch: final_lr  # noqa: E731
        plan = RoundPlan(round_index, target, positions, retrain, final, lr_for_epoch=schedule)
        return run_round(context, plan, setup)


def _rewind_carry(context: TrialContext, previous: dict[str, Any]) -> dict[str, Any]:
    """What IMP rounds carry: the initial weights and the weights it rewinds to."""
    epoch = context.config.settings.rewind_epoch
    if "rewind_weights" in previous:
        weights = previous["rewind_weights"]
    else:  # round 0: the dense model kept them
        weights = None if epoch is None else rewind_weights(previous, epoch)
    return {"init_weights": previous["init_weights"], "rewind_epoch": epoch,
            "rewind_weights": weights}
