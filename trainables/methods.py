"""The three experiments of the study (dense, IMP, SNIP) as schedules over the one training loop.

Each schedule differs only in what happens before and between training phases; every round ends
with a row and a checkpoint through the trial's Reporter, and a restarted trial continues after
its last checkpointed round.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from filelock import FileLock
from torch import nn

import pruning
from trainables.checkpoints import (
    STATE_FILE,
    CheckpointError,
    load_round_checkpoint,
    recipe_hash,
    save_round_checkpoint,
)
from trainables.config import TrialConfig
from trainables.datasets import ImageSplits, load_dataset
from trainables.errors import ConfigError
from trainables.loop import PhaseResult, TrialData, clone_state, epoch_generator, train_phase
from trainables.lr_schedule import lr_at_epoch
from trainables.models import build_model
from trainables.registry import Registry
from trainables.reporting import Reporter
from trainables.runtime import Runtime, resolve_runtime

METHOD_SCHEDULES: Registry[Callable[[TrialContext], None]] = Registry("method")


@dataclass
class TrialContext:
    """Everything one trial's schedule works with."""

    config: TrialConfig
    runtime: Runtime
    data: TrialData
    model: nn.Module
    prunable: list[str]
    reporter: Reporter
    recipe: str

    def fresh_weights(self, seed: int) -> dict[str, torch.Tensor]:
        """Initial weights of this architecture drawn from `seed` (used by `reinit`)."""
        torch.manual_seed(seed)
        fresh = _build_model(self.config, self.data.splits)
        return {name: tensor.to(self.runtime.device) for name, tensor in fresh.state_dict().items()}


def _build_model(config: TrialConfig, splits: ImageSplits) -> nn.Module:
    return build_model(config.model, splits.num_classes, splits.in_channels)


def build_context(
    config: TrialConfig,
    reporter: Reporter,
    splits: ImageSplits | None = None,
    cpus: float | None = None,
) -> TrialContext:
    """Seed, load data, build the model on the trial's device."""
    runtime = resolve_runtime(config.train, cpus)
    splits = splits if splits is not None else load_dataset(config.data)
    torch.manual_seed(config.seed)
    model = _build_model(config, splits).to(runtime.device)
    if runtime.channels_last:
        model = model.to(memory_format=torch.channels_last)
    prunable = pruning.prunable_parameter_names(
        model, config.prune.exclude_first_conv, config.prune.exclude_classifier
    )
    return TrialContext(
        config=config,
        runtime=runtime,
        data=TrialData.build(splits, config, runtime),
        model=model,
        prunable=prunable,
        reporter=reporter,
        recipe=recipe_hash(config),
    )


def run_trial(
    config: TrialConfig,
    reporter: Reporter,
    splits: ImageSplits | None = None,
    cpus: float | None = None,
) -> None:
    """Run (or continue, from the reporter's latest checkpoint) one trial of `config.method`."""
    context = build_context(config, reporter, splits, cpus)
    METHOD_SCHEDULES.get(config.method)(context)


# ---- rows and checkpoints -------------------------------------------------------------------


def _cpu(state: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    return {name: tensor.detach().to("cpu") for name, tensor in state.items()}


def _schedule_name(config: TrialConfig) -> str | None:
    return config.imp.schedule if config.method == "imp" else None


def _scorer_name(config: TrialConfig) -> str | None:
    if config.method == "dense":
        return None
    return "magnitude" if config.method == "imp" else config.prune.scorer


def finish_round(
    context: TrialContext,
    *,
    round_index: int,
    target_sparsity: float,
    result: PhaseResult,
    mask: pruning.Mask,
    final: bool,
    started: float,
    extra_state: dict[str, Any],
) -> dict[str, Any]:
    """Report the round's row with its checkpoint; returns the checkpoint state."""
    config = context.config
    counts = pruning.count_parameters(context.model, prunable_names=context.prunable)
    layer_sparsity = {name: layer.sparsity for name, layer in counts.per_layer.items()}
    layer_counts = {
        name: {"numel": layer.numel, "remaining": layer.nonzero, "sparsity": layer.sparsity}
        for name, layer in counts.per_layer.items()
    }
    row = {
        "row_type": "round",
        "method": config.method,
        "schedule": _schedule_name(config),
        "scorer": _scorer_name(config),
        "seed": config.seed,
        "round": round_index,
        "target_sparsity": target_sparsity,
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
        "final_round": final or result.diverged,
        "layer_sparsity": layer_sparsity,
    }
    state = {
        "config": config.model_dump(mode="json"),
        "recipe_hash": context.recipe,
        "round": round_index,
        "target_sparsity": target_sparsity,
        "sparsity": counts.sparsity,
        "model": _cpu(result.final_state),
        "best_model": _cpu(result.best_state),
        "masks": {name: keep.detach().to("cpu") for name, keep in mask.items()},
        "optimizer": result.optimizer_state,
        "rng": {"torch": torch.get_rng_state()},
        "layer_sparsity": layer_counts,
        "metrics": row,
        **extra_state,
    }
    context.reporter.round(row, state)
    return state


# ---- dense -------------------------------------------------------------------------------------


def train_dense(context: TrialContext, final: bool) -> dict[str, Any]:
    """Round 0: train the dense model, keeping the initial and the rewind-epoch weights."""
    config = context.config
    started = time.perf_counter()
    init_weights = clone_state(context.model)
    rewind_epoch = config.imp.rewind_epoch
    captured: dict[str, dict[str, torch.Tensor]] = {}
    if rewind_epoch == 0:
        captured["rewind"] = init_weights

    def capture_rewind(epoch: int, model: nn.Module) -> None:
        if rewind_epoch is not None and epoch + 1 == rewind_epoch:
            captured["rewind"] = clone_state(model)

    mask = pruning.full_mask(context.model, context.prunable)
    result = train_phase(
        context.model,
        context.data,
        config,
        context.runtime,
        round_index=0,
        epochs=range(config.train.epochs),
        total_epochs=config.train.epochs,
        mask=None,
        on_epoch=context.reporter.epoch,
        on_epoch_end=capture_rewind,
    )
    extra = {
        "init_weights": _cpu(init_weights),
        "rewind_epoch": rewind_epoch,
        "rewind_weights": _cpu(captured["rewind"]) if "rewind" in captured else None,
    }
    return finish_round(
        context,
        round_index=0,
        target_sparsity=0.0,
        result=result,
        mask=mask,
        final=final,
        started=started,
        extra_state=extra,
    )


def dense_round(context: TrialContext, final: bool) -> dict[str, Any]:
    """Round 0 from the shared dense cache when one is configured, else trained here.

    The cache is content-addressed by the recipe hash and rewind epoch, and guarded by a file
    lock: the first trial of a (seed, recipe) trains and publishes, later ones reuse.
    """
    config = context.config
    if config.imp.dense_checkpoint:
        return start_from_dense_checkpoint(context, config.imp.dense_checkpoint, final)
    if config.dense_cache is None:
        return train_dense(context, final)
    entry = Path(config.dense_cache) / f"{context.recipe}-rewind{config.imp.rewind_epoch}"
    entry.parent.mkdir(parents=True, exist_ok=True)
    with FileLock(str(entry) + ".lock"):
        if (entry / STATE_FILE).exists():
            try:
                return start_from_dense_checkpoint(context, str(entry), final)
            except ConfigError as error:
                print(f"prunetune: retraining dense model: {error}", flush=True)
        state = train_dense(context, final)
        save_round_checkpoint(entry, state)
        return state


@METHOD_SCHEDULES.register("dense")
def dense_schedule(context: TrialContext) -> None:
    if context.reporter.latest_state() is None:
        dense_round(context, final=True)


# ---- IMP ---------------------------------------------------------------------------------------


def imp_targets(config: TrialConfig) -> list[float]:
    """Target sparsity of rounds 1..R: 1-(1-p)^k (iterative) or the one-shot target."""
    if config.imp.schedule == "oneshot":
        return [config.prune.target_sparsity]
    return [1.0 - (1.0 - config.imp.rate) ** k for k in range(1, config.imp.rounds + 1)]


def load_dense_checkpoint(context: TrialContext, directory: str) -> dict[str, Any]:
    """A dense trial's round-0 state, after checking it was trained with this trial's recipe."""
    return check_dense_checkpoint(context.config, directory)


def check_dense_checkpoint(config: TrialConfig, directory: str) -> dict[str, Any]:
    """Load `directory` as the dense round-0 checkpoint of `config`'s recipe; ConfigError (one
    line naming imp.dense_checkpoint and the path) if it is missing, unreadable or another
    recipe's. Used by the trial and, before Ray starts, by run_sweep's preflight."""
    try:
        state = load_round_checkpoint(directory)
    except CheckpointError as error:
        raise ConfigError(f"imp.dense_checkpoint: {error}") from None
    if state.get("round") != 0 or state.get("recipe_hash") != recipe_hash(config):
        raise ConfigError(
            f"imp.dense_checkpoint: {directory} is not a dense checkpoint of this trial's recipe "
            "(seed, data, model and train settings must match)"
        )
    if state.get("rewind_epoch") != config.imp.rewind_epoch:
        raise ConfigError(
            f"imp.dense_checkpoint: {directory} kept rewind weights for "
            f"{state.get('rewind_epoch')!r}, this trial rewinds to {config.imp.rewind}"
        )
    return state


def start_from_dense_checkpoint(
    context: TrialContext, directory: str, final: bool
) -> dict[str, Any]:
    """Round 0 taken from a dense checkpoint: reported again, not retrained."""
    config = context.config
    dense = load_dense_checkpoint(context, directory)
    context.model.load_state_dict(dense["model"])
    row = {
        **dense["metrics"],
        "method": config.method,
        "schedule": _schedule_name(config),
        "scorer": _scorer_name(config),
        "final_round": final,
        "reused_dense": True,
    }
    state = {**dense, "config": context.config.model_dump(mode="json"), "metrics": row}
    context.reporter.round(row, state)
    return state


def imp_round(
    context: TrialContext, previous: dict[str, Any], round_index: int, target: float, final: bool
) -> dict[str, Any]:
    """Prune by global magnitude from the previous round's final weights, reset, retrain."""
    config = context.config
    started = time.perf_counter()
    device = context.runtime.device
    context.model.load_state_dict(previous["model"])
    mask = {name: keep.to(device) for name, keep in previous["masks"].items()}
    scores = pruning.score(context.model, mask, "magnitude")
    mask = pruning.prune_to_sparsity(scores, mask, target, config.prune.allocation)
    mask = apply_controls(context, mask, round_index)
    if config.prune.reinit:
        context.model.load_state_dict(context.fresh_weights(_reinit_seed(config, round_index)))
    elif previous.get("rewind_weights") is not None:
        context.model.load_state_dict(previous["rewind_weights"])
    pruning.apply_mask(context.model, mask)

    retrain = config.imp.retrain_epochs or config.train.epochs
    rewind_epoch = config.imp.rewind_epoch
    if rewind_epoch is not None:
        # Rewinding to epoch K continues the schedule from K (Frankle et al. 2020).
        positions = range(rewind_epoch, retrain)
        schedule = None
    elif config.imp.lr_rewind:
        positions, schedule = range(retrain), None
    else:
        # Fine-tuning (Renda et al. 2020): constant at the LR the dense run ended with.
        final_lr = lr_at_epoch(config.train, config.train.epochs - 1)
        positions, schedule = range(retrain), (lambda epoch: final_lr)
    result = train_phase(
        context.model,
        context.data,
        config,
        context.runtime,
        round_index=round_index,
        epochs=positions,
        total_epochs=retrain,
        mask=mask,
        lr_for_epoch=schedule,
        on_epoch=context.reporter.epoch,
    )
    carried = {key: previous.get(key) for key in ("init_weights", "rewind_epoch", "rewind_weights")}
    return finish_round(
        context,
        round_index=round_index,
        target_sparsity=target,
        result=result,
        mask=mask,
        final=final,
        started=started,
        extra_state=carried,
    )


@METHOD_SCHEDULES.register("imp")
def imp_schedule(context: TrialContext) -> None:
    config = context.config
    targets = imp_targets(config)
    state = context.reporter.latest_state()
    if state is None:
        state = dense_round(context, final=False)
    for round_index, target in enumerate(targets, start=1):
        if round_index <= state["round"]:
            continue
        if state["metrics"].get("status") == "diverged":
            return
        state = imp_round(context, state, round_index, target, final=round_index == len(targets))


# ---- SNIP and the other pruning-at-initialisation scorers ----------------------------------


def scoring_batches(context: TrialContext) -> list[tuple[torch.Tensor, torch.Tensor]]:
    """The first `prune.score_batches` training batches of a seeded shuffle, un-augmented."""
    return list(
        # Dataset seam: batches come from the splits object, in memory or streamed.
        context.data.splits.batches(
            "train",
            context.config.train.batch_size,
            shuffle=True,
            generator=epoch_generator(context.config.seed, 0, 999_983),
            device=context.runtime.device,
            augment=context.data.eval_augment,
            drop_last=False,
            max_batches=context.config.prune.score_batches,
        )
    )


def apply_controls(context: TrialContext, mask: pruning.Mask, round_index: int) -> pruning.Mask:
    """The sanity-check mask control of Frankle et al. (2021), when configured."""
    if context.config.prune.mask_control == "layerwise_shuffle":
        generator = torch.Generator().manual_seed(context.config.seed * 7_919 + round_index)
        device = context.runtime.device
        shuffled = pruning.layerwise_shuffle({k: v.cpu() for k, v in mask.items()}, generator)
        return {name: keep.to(device) for name, keep in shuffled.items()}
    return mask


def _reinit_seed(config: TrialConfig, round_index: int) -> int:
    return 1_000_000 + config.seed * 1_009 + round_index


@METHOD_SCHEDULES.register("snip")
def snip_schedule(context: TrialContext) -> None:
    """Score at initialisation, prune once to the target, train the sparse model like dense."""
    if context.reporter.latest_state() is not None:
        return  # the single round is already checkpointed
    config = context.config
    started = time.perf_counter()
    init_weights = clone_state(context.model)
    mask = pruning.full_mask(context.model, context.prunable)
    loss_fn = nn.CrossEntropyLoss()
    scores = pruning.score(
        context.model,
        mask,
        config.prune.scorer,
        batches=scoring_batches(context),
        loss_fn=loss_fn,
        num_batches=config.prune.score_batches,
        target_sparsity=config.prune.target_sparsity,
        seed=config.seed,
        synflow_iterations=config.prune.synflow_iterations,
    )
    mask = pruning.prune_to_sparsity(
        scores, mask, config.prune.target_sparsity, config.prune.allocation
    )
    mask = apply_controls(context, mask, 1)
    if config.prune.reinit:
        context.model.load_state_dict(context.fresh_weights(_reinit_seed(config, 1)))
    pruning.apply_mask(context.model, mask)
    result = train_phase(
        context.model,
        context.data,
        config,
        context.runtime,
        round_index=1,
        epochs=range(config.train.epochs),
        total_epochs=config.train.epochs,
        mask=mask,
        on_epoch=context.reporter.epoch,
    )
    finish_round(
        context,
        round_index=1,
        target_sparsity=config.prune.target_sparsity,
        result=result,
        mask=mask,
        final=True,
        started=started,
        extra_state={
            "init_weights": _cpu(init_weights),
            "rewind_epoch": None,
            "rewind_weights": None,
        },
    )
