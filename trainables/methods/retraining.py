"""Rounds of {prune, reset, retrain} after a dense round 0, as IMP runs them; shared by the
methods that prune a trained network (imp, channels).

The schedule is one-shot (one round to the method's target) or iterative (round k at the level
1-(1-p)^k, p = `rate`). After pruning, a round resets the weights it keeps: to the initial ones
(`rewind: init`, the lottery ticket), to those at the start of dense epoch K (`epoch:K`,
rewinding: the LR schedule also restarts from epoch K, Frankle et al. 2020), or not at all
(`none`, fine-tuning; `lr_rewind` restarts the LR schedule, Renda et al. 2020, else it stays at
the LR the dense run ended with). The method says only how a round prunes (`setup_round`) and
what its one-shot target is.
"""

from __future__ import annotations

import functools
import re
from typing import Any, Literal

from pydantic import Field, field_validator

import pruning
from trainables.config import MethodSection, SectionError, TrialConfig
from trainables.lr_schedule import lr_at_epoch
from trainables.methods.base import Method
from trainables.methods.context import TrialContext
from trainables.methods.dense_model import dense_round, rewind_weights
from trainables.methods.rounds import Carry, RoundPlan, RoundStart, run_round

_REWIND_PATTERN = re.compile(r"^(init|none|epoch:\d+)$")


class RetrainingConfig(MethodSection):
    schedule: Literal["iterative", "oneshot"] = Field(
        "iterative", description="iterative rounds at `rate`, or one round to the target"
    )
    rounds: int = Field(5, ge=1, le=100, description="pruning rounds (iterative)")
    rate: float = Field(0.2, gt=0, lt=1, description="fraction of what remains pruned per round")
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


class RetrainingMethod(Method):
    """A method whose rounds 1..R prune the previous round's network, reset and retrain it.

    Subclasses set `section` (a RetrainingConfig) and implement `oneshot_target` (the level of
    the one-shot schedule), `oneshot_reads` (the fields it comes from) and `setup_round`.
    """

    def oneshot_target(self, config: TrialConfig) -> float:
        raise NotImplementedError

    def oneshot_reads(self, config: TrialConfig) -> set[str]:
        raise NotImplementedError

    def setup_round(
        self, context: TrialContext, previous: dict[str, Any], round_index: int, target: float
    ) -> RoundStart:
        """Prune `previous` (the last round's checkpoint state) to `target` and reset."""
        raise NotImplementedError

    def plan(
        self, context: TrialContext, round_index: int, target: float, final: bool
    ) -> RoundPlan:
        """How round `round_index` retrains (a subclass may add row fields)."""
        return retraining_plan(context.config, round_index, target, final)

    def starts_from_dense(self, config: TrialConfig) -> bool:
        return True

    def dense_epochs(self, config: TrialConfig) -> set[int]:
        epoch = config.settings.rewind_epoch
        return {epoch} if epoch else set()

    def reads(self, config: TrialConfig) -> set[str]:
        settings = config.settings
        fields = super().reads(config) - {f"{self.name}.*"}
        fields |= {f"{self.name}.{name}" for name in ("schedule", "rewind", "retrain_epochs")}
        if settings.schedule == "oneshot":
            fields |= self.oneshot_reads(config)
        else:
            fields |= {f"{self.name}.rounds", f"{self.name}.rate"}
        if settings.rewind == "none":
            fields.add(f"{self.name}.lr_rewind")
        return fields

    def mode_note(self, config: TrialConfig) -> str:
        settings = config.settings
        return (f" with {self.name}.schedule: {settings.schedule}, "
                f"{self.name}.rewind: {settings.rewind}")

    def validate(self, config: TrialConfig) -> None:
        super().validate(config)
        settings = config.settings
        epoch = settings.rewind_epoch
        limit = min(config.train.epochs, settings.retrain_epochs or config.train.epochs)
        if epoch is not None and epoch >= limit:
            raise SectionError(
                f"config field '{self.name}.rewind': epoch:{epoch} must be below train.epochs "
                f"and {self.name}.retrain_epochs ({limit})"
            )

    def name_parts(self, config: TrialConfig) -> list[str]:
        settings = config.settings
        if settings.schedule == "oneshot":
            return super().name_parts(config)
        return [f"p{settings.rate:g}x{settings.rounds}"]

    def smoke_overrides(self, config: TrialConfig) -> dict[str, Any]:
        return {f"{self.name}.retrain_epochs": self.smoke_epochs(config)}

    def smoke_epochs(self, config: TrialConfig) -> int:
        return (config.settings.rewind_epoch or 0) + 1

    def round_checkpoints(self, config: TrialConfig) -> int:
        return 1 + len(self.targets(config))  # the dense round 0, then one per level

    def training_epochs(self, config: TrialConfig) -> int:
        rounds = len(self.targets(config))
        return config.train.epochs + rounds * len(retraining_plan(config, 1, None, False).epochs)

    def final_target(self, config: TrialConfig) -> float | None:
        return self.targets(config)[-1]

    def targets(self, config: TrialConfig) -> list[float]:
        """The levels of rounds 1..R: 1-(1-p)^k (iterative) or the one-shot target."""
        settings = config.settings
        if settings.schedule == "oneshot":
            return [self.oneshot_target(config)]
        return [pruning.imp_target_sparsity(settings.rate, k)
                for k in range(1, settings.rounds + 1)]

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
            plan = self.plan(context, round_index, target, final=round_index == len(targets))
            setup = functools.partial(self.setup_round, context, state, round_index, target)
            state = run_round(context, plan, setup)


def retraining_plan(
    config: TrialConfig, round_index: int, target: float | None, final: bool
) -> RoundPlan:
    """The epochs and LR schedule of a retraining round under the method's `rewind`."""
    settings = config.settings
    retrain = settings.retrain_epochs or config.train.epochs
    rewind_epoch = settings.rewind_epoch
    schedule = None
    if rewind_epoch is not None:
        # Rewinding to epoch K continues the schedule from K (Frankle et al. 2020).
        positions = range(rewind_epoch, retrain)
    else:
        positions = range(retrain)
        if not settings.lr_rewind:
            # Fine-tuning (Renda et al. 2020): constant at the LR the dense run ended with.
            final_lr = lr_at_epoch(config.train, config.train.epochs - 1)
            schedule = lambda epoch: final_lr  # noqa: E731
    return RoundPlan(round_index, target, positions, retrain, final, lr_for_epoch=schedule)


def rewind_carry(context: TrialContext, previous: dict[str, Any]) -> Carry:
    """What retraining rounds carry: the initial weights and the weights they rewind to."""
    epoch = context.config.settings.rewind_epoch
    if "rewind_weights" in previous:
        weights = previous["rewind_weights"]
    else:  # round 0: the dense model kept them
        weights = None if epoch is None else rewind_weights(previous, epoch)
    return {"init_weights": previous["init_weights"], "rewind_epoch": epoch,
            "rewind_weights": weights}
