"""The shared dense model: round 0 of every method that starts from a trained network.

Round 0 trains the dense model once and keeps its initial weights plus the weights after each
epoch in `keep_epochs` (the rewind points of the trials that share it). In a sweep, trials of the
same seed and recipe share one dense model through a content-addressed cache under a file lock:
the first trains and publishes it, the others load it and report it as their round 0
(`reused_dense: true`). `dense_model.checkpoint` starts a trial from a given dense checkpoint.
"""

from __future__ import annotations

import contextlib
import time
from pathlib import Path
from typing import Any

from filelock import FileLock
from torch import nn

from trainables.checkpoints import (
    CheckpointError,
    has_checkpoint,
    load_round_checkpoint,
    save_round_checkpoint,
)
from trainables.config import TrialConfig
from trainables.errors import ConfigError
from trainables.methods.base import Method
from trainables.methods.context import TrialContext
from trainables.methods.rounds import Carry, RoundPlan, cpu_state, report_reused_round, run_round
from trainables.recipe import recipe_hash


def kept_epochs(context: TrialContext) -> list[int]:
    """Epochs whose weights this trial's dense run keeps: the sweep's and the method's own."""
    return _kept(context.config, context.method)


def _kept(config: TrialConfig, method: Method) -> list[int]:
    return sorted(set(config.dense_model.keep_epochs) | method.dense_epochs(config))


def _entry(config: TrialConfig, method: Method) -> Path:
    name = "-".join(str(epoch) for epoch in _kept(config, method)) or "none"
    return Path(config.dense_model.cache) / f"{recipe_hash(config)}-keep{name}"


def cache_entry(config: TrialConfig) -> Path | None:
    """The shared cache entry of the dense model `config` starts from (None: it starts from
    none, from a named checkpoint, or trains its own without a cache)."""
    from trainables.methods import METHODS  # the registry imports this module

    method = METHODS.get(config.method)
    if (not method.starts_from_dense(config) or config.dense_model.checkpoint
            or config.dense_model.cache is None):
        return None
    return _entry(config, method)


def dense_round(context: TrialContext, final: bool) -> dict[str, Any]:
    """Round 0 from `dense_model.checkpoint`, from the shared cache, or trained here."""
    config = context.config
    keep = kept_epochs(context)
    if config.dense_model.checkpoint:
        return start_from_dense_checkpoint(context, config.dense_model.checkpoint, final)
    if config.dense_model.cache is None:
        return train_dense(context, final, keep)
    entry = _entry(config, context.method)
    ranks = context.runtime.ranks
    if ranks.main:
        entry.parent.mkdir(parents=True, exist_ok=True)
    # An entry already written is read without the lock (its index is written last,
    # atomically), so that the trials a sweep starts together on it do not queue for it.
    if ranks.from_main(has_checkpoint(entry) if ranks.main else None):
        try:
            return start_from_dense_checkpoint(context, str(entry), final, reference=True,
                                               dense_wait_s=0.0)
        except ConfigError:
            if ranks.parallel:
                raise  # (one process retrains it below, under the lock)
    asked = time.monotonic()
    # Data-parallel ranks train the dense model together: rank 0 alone holds the lock and
    # decides for all of them (a rank waiting on the lock would hang the others' all-reduce).
    with FileLock(str(entry) + ".lock") if ranks.main else contextlib.nullcontext():
        # Seconds this trial held its resources while another trained the model (a sweep
        # orders its trials so that this stays 0: sweeps/dense_first.py).
        waited = time.monotonic() - asked
        if ranks.from_main(has_checkpoint(entry) if ranks.main else None):
            try:
                return start_from_dense_checkpoint(context, str(entry), final, reference=True,
                                                   dense_wait_s=waited)
            except ConfigError as error:
                if ranks.parallel:
                    raise
                print(f"prunetune: retraining dense model: {error}", flush=True)
        # The entry is written before the trial's own round 0, which then references its
        # tensors instead of holding a second copy of the dense model.
        with context.log.holding_rounds() as held:
            state = train_dense(context, final, keep)
        if ranks.main:
            save_round_checkpoint(entry, state)
        ranks.from_main(None)  # the other ranks reference the entry once it is written
    # Reported once the lock is free: the round-0 row starts the trials held for this entry.
    context.log.release(held, shared=entry)
    return state


def train_dense(context: TrialContext, final: bool, keep: list[int]) -> dict[str, Any]:
    """Train the dense model as round 0, keeping the initial and the `keep` epochs' weights."""
    epochs = context.config.train.epochs

    def setup() -> tuple[None, Carry]:
        return None, {"init_weights": cpu_state(context.model.state_dict()), "epoch_weights": {}}

    def keep_weights(row: dict[str, Any], model: nn.Module, carry: Carry) -> None:
        if row["epoch"] + 1 in keep:  # weights after epoch K-1 = the start of epoch K
            carry["epoch_weights"][row["epoch"] + 1] = cpu_state(model.state_dict())

    plan = RoundPlan(0, 0.0, range(epochs), epochs, final)
    return run_round(context, plan, setup, update_carry=keep_weights)


def check_dense_checkpoint(
    config: TrialConfig, directory: str, keep: list[int] | None = None
) -> dict[str, Any]:
    """Load `directory` as the dense round-0 checkpoint of `config`'s recipe; ConfigError (one
    line naming dense_model.checkpoint and the path) if it is missing, unreadable, another
    recipe's, or lacks the weights of an epoch in `keep`. Used by trials and, before Ray starts,
    by run_sweep's preflight."""
    try:
        state = load_round_checkpoint(directory)
    except CheckpointError as error:
        raise ConfigError(f"dense_model.checkpoint: {error}") from None
    if state.get("round") != 0 or state.get("recipe_hash") != recipe_hash(config):
        raise ConfigError(
            f"dense_model.checkpoint: {directory} is not a dense checkpoint of this trial's "
            "recipe (seed, data, model and train settings must match)"
        )
    missing = sorted(set(keep or []) - set(state.get("epoch_weights") or {}))
    if missing:
        kept = sorted(state.get("epoch_weights") or {})
        raise ConfigError(
            f"dense_model.checkpoint: {directory} kept the weights of epochs {kept}, this trial "
            f"rewinds to epoch {missing[0]}"
        )
    return state


def start_from_dense_checkpoint(
    context: TrialContext, directory: str, final: bool, reference: bool = False, **extra: Any
) -> dict[str, Any]:
    """Round 0 taken from a dense checkpoint: reported again, not retrained. With `reference`
    (the experiment's own dense cache), the trial's checkpoint references its tensors; a
    checkpoint the user named is copied, since it may be moved or deleted later."""
    dense = check_dense_checkpoint(context.config, directory, kept_epochs(context))
    context.model.load_state_dict(dense["model"])
    shared = Path(directory) if reference else None
    return report_reused_round(context, dense, final, shared, reused_dense=True, **extra)


def rewind_weights(dense: dict[str, Any], epoch: int) -> dict[str, Any]:
    """The dense run's weights at the start of `epoch` (0 = the initial weights)."""
    return dense["init_weights"] if epoch == 0 else dense["epoch_weights"][epoch]
