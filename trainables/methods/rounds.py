"""What every method shares: one round = set up, train, report a row and a checkpoint.

A round's row and checkpoint have the same fields whatever the method (the method adds its tags
and whatever it carries between rounds, such as rewind weights). A trial restarted inside a round
continues from that round's progress checkpoint instead of setting the round up again.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch import nn

import pruning
from trainables.loop import MaskUpdater, PhaseResult, train_phase
from trainables.measure import round_cost
from trainables.methods.context import TrialContext
from trainables.methods.penalties import phase_hooks
from trainables.reporting import PROGRESS
from trainables.runtime import DEVICE_FIELDS, device_fields
from trainables.schema import PROGRESS_STATE, ROUND_ROW, ROUND_STATE, SCHEMA_VERSION

Carry = dict[str, Any]
"""State a method carries from round to round inside its checkpoints (CPU tensors)."""
RoundStart = tuple[pruning.Mask | None, Carry]
"""What a round's setup returns: the mask to train with (None = dense) and the carry."""
CarryUpdate = Callable[[dict[str, Any], nn.Module, Carry], None]
"""`update_carry(row, model, carry)`: adds to the round's carry after an epoch (the dense round
keeps the weights of the epochs it is rewound to), before the progress checkpoint saves it."""


@dataclass(frozen=True)
class RoundPlan:
    """How one round trains (see `train_phase` for the meaning of each field)."""

    round_index: int
    target_sparsity: float | None
    epochs: range
    total_epochs: int
    final: bool
    lr_for_epoch: Callable[[int], float] | None = None
    mask_updater: MaskUpdater | None = None
    select_from_epoch: int | None = None
    row_fields: Callable[[Carry], dict[str, Any]] | None = None
    """Fields the method adds to the round's row, from the round's carry at its end (e.g. a
    structured round's channel counts)."""


def cpu_state(state: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """A detached CPU copy of a state dict or mask."""
    return {name: tensor.detach().to("cpu", copy=True) for name, tensor in state.items()}


def load_weights(
    context: TrialContext,
    state_dict: dict[str, torch.Tensor],
    layer_widths: pruning.LayerWidths | None = None,
) -> None:
    """Load a round's weights into `context.model`; with `layer_widths` (a structured round's
    network, see docs/results-and-checkpoints.md), narrow the model to those widths first."""
    if layer_widths is None:
        context.model.load_state_dict(state_dict)
        return
    pruning.rebuild(context.model, {"state_dict": state_dict, "layer_widths": layer_widths})
    if context.runtime.channels_last:
        context.model.to(memory_format=torch.channels_last)


def run_round(
    context: TrialContext,
    plan: RoundPlan,
    setup: Callable[[], RoundStart],
    update_carry: CarryUpdate | None = None,
) -> dict[str, Any]:
    """Run round `plan.round_index` and report it; returns its round checkpoint state.

    `setup()` prepares `context.model` (prune, rewind, ...) and returns the mask and carry; it is
    skipped when the trial resumes inside this round. `update_carry(row, model, carry)` runs
    after every epoch, before the progress checkpoint (so what it adds to the carry is saved).
    """
    started = time.perf_counter()
    progress = context.progress(plan.round_index)
    if progress is None:
        mask, carry = setup()
        resume = None
    else:
        carry, resume = progress["carry"], progress["phase"]
        # A structured round trains a smaller network: rebuild it before its weights load.
        load_weights(context, resume["model"], carry.get("layer_widths"))
        mask = resume["mask"]
        started -= progress["elapsed_s"]
        print(f"prunetune: continuing round {plan.round_index} after epoch "
              f"{resume['epochs_done']} of {len(plan.epochs)}", flush=True)
    device = context.runtime.device
    mask = {name: keep.to(device) for name, keep in mask.items()} if mask is not None else None

    def epoch_end(row: dict[str, Any], snapshot: Callable[[], dict[str, Any]]) -> None:
        if update_carry is not None:
            update_carry(row, context.model, carry)
        if row["epoch"] == plan.epochs[-1]:
            context.log.epoch(row, None)  # the round checkpoint follows at once
            return
        context.log.epoch(row, lambda: PROGRESS_STATE.row(
            kind=PROGRESS,
            config=context.config.model_dump(mode="json"),
            recipe_hash=context.recipe,
            round=plan.round_index,
            target_sparsity=plan.target_sparsity,
            elapsed_s=time.perf_counter() - started,
            phase=snapshot(),
            carry=carry,
        ))

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
        hooks=phase_hooks(context.config),
    )
    return finish_round(context, plan, result, carry, started)


def round_row(
    context: TrialContext, plan: RoundPlan, result: PhaseResult, carry: Carry, started: float
) -> tuple[dict[str, Any], dict[str, Any]]:
    """The round's row (with the method's tags) and its per-layer counts."""
    config = context.config
    counts, layer_counts = parameter_counts(context)
    extra = {
        **row_tags(context),
        **counts,
        **(plan.row_fields(carry) if plan.row_fields is not None else {}),
        **cost_fields(context),
        **device_fields(context.runtime),
    }
    row = ROUND_ROW.row(
        extra,
        row_type="round",
        schema_version=SCHEMA_VERSION,
        method=config.method,
        seed=config.seed,
        round=plan.round_index,
        target_sparsity=plan.target_sparsity,
        val_acc=result.best_val_acc,
        test_acc=result.test_acc,
        best_epoch=result.best_epoch,
        epochs=result.epochs_run,
        round_time_s=time.perf_counter() - started,
        status="diverged" if result.diverged else "ok",
        final_round=plan.final or result.diverged,
        layer_sparsity={name: layer["sparsity"] for name, layer in layer_counts.items()},
    )
    return row, layer_counts


def row_tags(context: TrialContext) -> dict[str, Any]:
    """The method's tags; an N:M pattern is named in the label and its own field."""
    tags = context.method.row_tags(context.config)
    pattern = context.config.prune.pattern
    if pattern is not None:
        tags = {**tags, "label": f"{tags['label']} {pattern}", "pattern": pattern}
    return tags


def parameter_counts(context: TrialContext) -> tuple[dict[str, Any], dict[str, Any]]:
    """The parameter fields of a row and the per-layer counts, measured by counting zeros.

    Against the unpruned network (`context.dense_numel`), so that a structured round, whose
    network is smaller, reports its sparsity and its remaining counts on the same scale as a
    masked one: remaining = nonzero entries of the network as it is now.
    """
    counts = pruning.count_parameters(context.model, prunable_names=context.prunable)
    dense = context.dense_numel
    layers = {
        name: {"numel": dense[name], "remaining": layer.nonzero,
               "sparsity": _pruned_fraction(dense[name], layer.nonzero)}
        for name, layer in counts.per_layer.items()
    }
    prunable_dense = sum(dense[name] for name in context.prunable)
    fields = {
        "sparsity": _pruned_fraction(prunable_dense, counts.prunable_nonzero),
        # Remaining = everything not pruned: unprunable parameters always remain.
        "params_total": counts.total - counts.prunable + counts.prunable_nonzero,
        "params_prunable": counts.prunable_nonzero,
        "params_total_dense": sum(dense.values()),
        "params_prunable_dense": prunable_dense,
    }
    return fields, layers


def _pruned_fraction(numel: int, nonzero: int) -> float:
    return (numel - nonzero) / numel if numel else 0.0


def cost_fields(context: TrialContext) -> dict[str, Any]:
    """FLOPs and latency of `context.model` as it is now, paired with the trial's dense
    reference (trainables/measure.py)."""
    splits = context.data.splits
    shape = (splits.in_channels, splits.image_size, splits.image_size)
    if not context.config.measure.enabled:
        return {}
    reference = context.latency_reference
    reference.for_trial(context.config, splits.num_classes, splits.in_channels, context.runtime)
    return round_cost(context.model, context.config, shape, runtime=context.runtime,
                      reference=reference)


def finish_round(
    context: TrialContext, plan: RoundPlan, result: PhaseResult, carry: Carry, started: float
) -> dict[str, Any]:
    """Report the round's row with its round checkpoint; returns the checkpoint state."""
    row, layer_counts = round_row(context, plan, result, carry, started)
    mask = result.mask
    if mask is None:
        mask = pruning.full_mask(context.model, context.prunable)
    # The weights the round ended with are what the next round starts from, and round 0's
    # are the dense model other trials start from; a trial's last pruned round has no next,
    # so it keeps only the selected (best-validation) weights.
    last_pruned = (plan.final or result.diverged) and plan.round_index > 0
    ended_with = {} if last_pruned else {"model": cpu_state(result.final_state)}
    state = ROUND_STATE.row(
        {**ended_with, **carry},
        kind="round",
        config=context.config.model_dump(mode="json"),
        recipe_hash=context.recipe,
        round=plan.round_index,
        target_sparsity=plan.target_sparsity,
        sparsity=row[ROUND_ROW.name("sparsity")],
        best_model=cpu_state(result.best_state),
        masks=cpu_state(mask),
        layer_sparsity=layer_counts,
        metrics=row,
    )
    context.log.round(row, state)
    return state


def report_reused_round(
    context: TrialContext, state: dict[str, Any], final: bool, shared: Path | None = None,
    **extra: Any,
) -> dict[str, Any]:
    """Report a round computed elsewhere (a shared dense model, loaded into `context.model`) as
    this trial's, with this trial's method tags, config and cost measured here; returns the
    state as reported. `shared`: the checkpoint it was read from, whose tensors the trial's
    checkpoint references."""
    config = context.config
    stale = {key for key in state["metrics"] if key.startswith(("latency_", "speedup_"))} | {
        "flops", "flops_effective", "measure_time_s", *DEVICE_FIELDS}
    row = {
        **{key: value for key, value in state["metrics"].items() if key not in stale},
        "method": config.method,
        **row_tags(context),
        **cost_fields(context),
        **device_fields(context.runtime),
        "final_round": final,
        **extra,
    }
    reported = {**state, "config": config.model_dump(mode="json"), "metrics": row}
    context.log.round(row, reported, shared)
    return reported


def last_selectable_epoch(epochs: range, steps_per_epoch: int, last_change_step: int) -> int:
    """The schedule position of the epoch in which step `last_change_step` (0-based within the
    phase) falls: from that epoch on, every epoch ends with the final mask."""
    return epochs[min(last_change_step // max(steps_per_epoch, 1), len(epochs) - 1)]
