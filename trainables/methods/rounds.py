"""What every method shares: one round = set up, train, report a row and a checkpoint.

A round's row and checkpoint have the same fields whatever the method (the method adds its tags
and whatever it carries between rounds, such as rewind weights). A trial restarted inside a round
continues from that round's progress checkpoint instead of setting the round up again.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import torch
from torch import nn

import pruning
from trainables.loop import MaskUpdater, PhaseResult, train_phase
from trainables.methods.context import TrialContext
from trainables.reporting import PROGRESS

Carry = dict[str, Any]
"""State a method carries from round to round inside its checkpoints (CPU tensors)."""
RoundStart = tuple[pruning.Mask | None, Carry]
"""What a round's setup returns: the mask to train with (None = dense) and the carry."""
EpochHook = Callable[[dict[str, Any], nn.Module, Carry], None]


@dataclass(frozen=True)
class RoundPlan:
    """How one round trains (see `train_phase` for the meaning of each field)."""

    round_index: int
    target_sparsity: float
    epochs: range
    total_epochs: int
    final: bool
    lr_for_epoch: Callable[[int], float] | None = None
    mask_updater: MaskUpdater | None = None
    select_from_epoch: int | None = None


def cpu_state(state: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """A detached CPU copy of a state dict or mask."""
    return {name: tensor.detach().to("cpu", copy=True) for name, tensor in state.items()}


def run_round(
    context: TrialContext,
    plan: RoundPlan,
    setup: Callable[[], RoundStart],
    on_epoch: EpochHook | None = None,
) -> dict[str, Any]:
    """Run round `plan.round_index` and report it; returns its round checkpoint state.

    `setup()` prepares `context.model` (prune, rewind, ...) and returns the mask and carry; it is
    skipped when the trial resumes inside this round. `on_epoch(row, model, carry)` runs after
    every epoch, before the progress checkpoint (so what it adds to the carry is saved).
    """
    started = time.perf_counter()
    progress = context.progress(plan.round_index)
    if progress is None:
        mask, carry = setup()
        resume = None
    else:
        carry, resume = progress["carry"], progress["phase"]
        mask = resume["mask"]
        started -= progress["elapsed_s"]
        print(f"prunetune: continuing round {plan.round_index} after epoch "
              f"{resume['epochs_done']} of {len(plan.epochs)}", flush=True)
    device = context.runtime.device
    mask = {name: keep.to(device) for name, keep in mask.items()} if mask is not None else None

    def epoch_end(row: dict[str, Any], snapshot: Callable[[], dict[str, Any]]) -> None:
        if on_epoch is not None:
            on_epoch(row, context.model, carry)
        if row["epoch"] == plan.epochs[-1]:
            context.log.epoch(row, None)  # the round checkpoint follows at once
            return
        context.log.epoch(row, lambda: {
            "kind": PROGRESS,
            "config": context.config.model_dump(mode="json"),
            "recipe_hash": context.recipe,
            "round": plan.round_index,
            "target_sparsity": plan.target_sparsity,
            "elapsed_s": time.perf_counter() - started,
            "phase": snapshot(),
            "carry": carry,
        })

    result = train_phase(
        context.model,
        context.data,
        context.config,
        context.runtime,
        round_index=plan.round_index,
        epochs=plan.epochs,
        total_epochs=plan.total_epochs,
        mask=mask,
        lr_for_epoch=plan.lr_for_epoch,
        mask_updater=plan.mask_updater,
        select_from_epoch=plan.select_from_epoch,
        resume=resume,
        on_epoch_end=epoch_end,
    )
    return finish_round(context, plan, result, carry, started)


def round_row(
    context: TrialContext, plan: RoundPlan, result: PhaseResult, started: float
) -> tuple[dict[str, Any], dict[str, Any]]:
    """The round's row (with the method's tags) and its per-layer counts."""
    config = context.config
    counts = pruning.count_parameters(context.model, prunable_names=context.prunable)
    layer_counts = {
        name: {"numel": layer.numel, "remaining": layer.nonzero, "sparsity": layer.sparsity}
        for name, layer in counts.per_layer.items()
    }
    row = {
        "row_type": "round",
        "method": config.method,
        **context.method.row_tags(config),
        "seed": config.seed,
        "round": plan.round_index,
        "target_sparsity": plan.target_sparsity,
        "sparsity": counts.sparsity,
        # Remaining = everything not pruned: unprunable parameters always remain.
        "params_total": counts.total - counts.prunable + counts.prunable_nonzero,
        "params_prunable": counts.prunable_nonzero,
        "params_total_dense": counts.total,
        "params_prunable_dense": counts.prunable,
        "val_acc": result.best_val_acc,
        "test_acc": result.test_acc,
        "best_epoch": result.best_epoch,
        "epochs": result.epochs_run,
        "round_time_s": time.perf_counter() - started,
        "status": "diverged" if result.diverged else "ok",
        "final_round": plan.final or result.diverged,
        "layer_sparsity": {name: layer.sparsity for name, layer in counts.per_layer.items()},
    }
    return row, layer_counts


def finish_round(
    context: TrialContext, plan: RoundPlan, result: PhaseResult, carry: Carry, started: float
) -> dict[str, Any]:
    """Report the round's row with its round checkpoint; returns the checkpoint state."""
    row, layer_counts = round_row(context, plan, result, started)
    mask = result.mask
    if mask is None:
        mask = pruning.full_mask(context.model, context.prunable)
    state = {
        "kind": "round",
        "config": context.config.model_dump(mode="json"),
        "recipe_hash": context.recipe,
        "round": plan.round_index,
        "target_sparsity": plan.target_sparsity,
        "sparsity": row["sparsity"],
        "model": cpu_state(result.final_state),
        "best_model": cpu_state(result.best_state),
        "masks": cpu_state(mask),
        "optimizer": result.optimizer_state,
        "layer_sparsity": layer_counts,
        "metrics": row,
        **carry,
    }
    context.log.round(row, state)
    return state


def report_reused_round(
    context: TrialContext, state: dict[str, Any], final: bool, **extra: Any
) -> dict[str, Any]:
    """Report a round computed elsewhere (a shared dense model) as this trial's, with this
    trial's method tags and config; returns the state as reported."""
    config = context.config
    row = {
        **state["metrics"],
        "method": config.method,
        **context.method.row_tags(config),
        "final_round": final,
        **extra,
    }
    reported = {**state, "config": config.model_dump(mode="json"), "metrics": row}
    context.log.round(row, reported)
    return reported


def last_selectable_epoch(epochs: range, steps_per_epoch: int, last_change_step: int) -> int:
    """The schedule position of the epoch in which step `last_change_step` (0-based within the
    phase) falls: from that epoch on, every epoch ends with the final mask."""
    return epochs[min(last_change_step // max(steps_per_epoch, 1), len(epochs) - 1)]
