"""The one training/evaluation loop every method uses. It knows nothing about pruning beyond
keeping a mask in force and calling a method's mask updater at the steps it asks for; the methods
decide what happens between and inside phases.
"""

from __future__ import annotations

import contextlib
import copy
import math
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Any, Protocol

import torch
from torch import nn

import pruning
from trainables import faults, random_streams
from trainables.augment import BatchAugment
from trainables.config import TrialConfig
from trainables.datasets import DatasetSplits
from trainables.lr_schedule import lr_at_epoch
from trainables.runtime import Runtime
from trainables.trial_data import TrialData


@dataclass
class PhaseResult:
    """What one training phase (dense training or one round's retraining) ended with."""

    final_state: dict[str, torch.Tensor]
    best_state: dict[str, torch.Tensor]
    best_val_acc: float
    best_epoch: int
    test_acc: float
    epochs_run: int
    optimizer_state: dict[str, Any] = field(default_factory=dict)
    diverged: bool = False
    mask: pruning.Mask | None = None
    """The mask the phase ended with (CPU), None for a dense phase."""
    steps: int = 0


def make_optimizer(model: nn.Module, config: TrialConfig) -> torch.optim.Optimizer:
    train = config.train
    if train.optimizer == "adamw":
        return torch.optim.AdamW(model.parameters(), lr=train.lr, weight_decay=train.weight_decay)
    return torch.optim.SGD(
        model.parameters(),
        lr=train.lr,
        momentum=train.momentum,
        weight_decay=train.weight_decay,
        nesterov=train.nesterov and train.momentum > 0,
    )


@torch.no_grad()
def eval_batches(
    model: nn.Module,
    splits: DatasetSplits,
    split: str,
    augment: BatchAugment,
    runtime: Runtime,
    batch_size: int,
    max_batches: int | None = None,
) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
    """(logits, labels) of `model` on each batch of `split` of `splits` in order (or its first
    `max_batches` batches), in eval mode; the model's mode is restored after."""
    was_training = model.training
    model.eval()
    try:
        # Dataset seam: batches come from the splits object, in memory or streamed from disk.
        for inputs, targets in splits.batches(
            split,
            batch_size,
            shuffle=False,
            generator=None,
            device=runtime.device,
            augment=augment,
            drop_last=False,
            max_batches=max_batches,
        ):
            with runtime.autocast():
                logits = model(inputs)
            yield logits, targets
    finally:
        model.train(was_training)


def evaluate(
    model: nn.Module,
    splits: DatasetSplits,
    split: str,
    augment: BatchAugment,
    runtime: Runtime,
    batch_size: int,
    max_batches: int | None = None,
) -> float:
    """Top-1 accuracy (a fraction) of `model` on `split` of `splits` (or its first
    `max_batches` batches), in eval mode."""
    correct = seen = 0
    for logits, targets in eval_batches(model, splits, split, augment, runtime, batch_size,
                                        max_batches):
        correct += int((logits.argmax(dim=1) == targets).sum())
        seen += len(targets)
    return correct / max(seen, 1)


def _all_finite(model: nn.Module) -> bool:
    tensors = [t for t in model.state_dict().values() if t.is_floating_point()]
    return all(bool(torch.isfinite(t).all()) for t in tensors)


def clone_state(model: nn.Module) -> dict[str, torch.Tensor]:
    return {name: tensor.detach().clone() for name, tensor in model.state_dict().items()}


class MaskUpdater(Protocol):
    """Changes a phase's mask at steps it chooses (gradual pruning, dynamic sparse training).

    Called after the backward pass and before the optimizer step of every step where `due` is
    true. Inside the call the gradients of pruned weights are dense if `needs_dense_gradients`.
    The loop applies the returned mask with `MaskedTraining.set_mask` (newly pruned weights and
    their optimizer state zeroed; regrown weights start at zero with zero optimizer state). If
    `replaces_optimizer_step`, no optimizer step is taken at an update step (RigL's reference).
    """

    needs_dense_gradients: bool
    replaces_optimizer_step: bool

    def due(self, step: int) -> bool: ...

    def update(self, step: int, model: nn.Module, mask: pruning.Mask) -> pruning.Mask: ...


EpochEnd = Callable[[dict[str, Any], Callable[[], dict[str, Any]]], None]
"""`on_epoch_end(row, snapshot)`: `snapshot()` returns the phase's progress (see train_phase)."""


def train_phase(
    model: nn.Module,
    data: TrialData,
    config: TrialConfig,
    runtime: Runtime,
    *,
    round_index: int,
    epochs: range,
    total_epochs: int,
    mask: pruning.Mask | None,
    lr_for_epoch: Callable[[int], float] | None = None,
    mask_updater: MaskUpdater | None = None,
    select_from_epoch: int | None = None,
    resume: dict[str, Any] | None = None,
    on_epoch_end: EpochEnd | None = None,
) -> PhaseResult:
    """Train `model` over the schedule positions in `epochs`, selecting on validation accuracy.

    The test accuracy returned is that of the best-validation weights among the epochs from
    `select_from_epoch` on (default: all), so a method whose mask still changes early on is
    judged only at its final sparsity. Pruned weights stay exactly zero throughout. A non-finite
    loss stops the phase early with `diverged=True` and the last good weights.

    `on_epoch_end(row, snapshot)` is called after every epoch; `snapshot()` returns everything
    needed to continue the phase exactly from there (`resume=` takes it back): the epochs and
    steps done, model, optimizer (and grad scaler) state, mask and the best epoch so far.
    """
    if mask_updater is not None and mask is None:
        raise ValueError("a mask updater needs a mask to update (pass the full mask)")
    train = config.train
    splits = data.splits
    optimizer = make_optimizer(model, config)
    scaler = torch.amp.GradScaler(runtime.device.type) if runtime.needs_grad_scaler else None
    positions = list(epochs)
    done, step = 0, 0
    best_val, best_epoch = -1.0, -1
    if resume is not None:
        model.load_state_dict(resume["model"])
        optimizer.load_state_dict(resume["optimizer"])
        if scaler is not None and resume.get("scaler"):
            scaler.load_state_dict(resume["scaler"])
        done, step = resume["epochs_done"], resume["step"]
        best_val, best_epoch = resume["best_val"], resume["best_epoch"]
    keeper = pruning.MaskedTraining(model, mask, optimizer) if mask is not None else None
    best_state = _device_state(resume["best_state"], runtime) if resume else clone_state(model)
    loss_fn = nn.CrossEntropyLoss(label_smoothing=train.label_smoothing)
    schedule = lr_for_epoch or (lambda epoch: lr_at_epoch(train, epoch, total_epochs))
    # Only the training forward is compiled; `model` (its parameters and state_dict keys) is
    # shared with the compiled wrapper, so masks, checkpoints and evaluation see the same weights.
    forward = torch.compile(model) if train.compile else model

    def accuracy_on(evaluated: nn.Module, split: str) -> float:
        return evaluate(
            evaluated, splits, split, data.eval_augment, runtime, train.eval_batch_size,
            train.max_eval_batches,
        )

    def snapshot() -> dict[str, Any]:
        return {
            "epochs_done": done,
            "step": step,
            "model": _cpu_state(model.state_dict()),
            "optimizer": optimizer.state_dict(),
            "scaler": scaler.state_dict() if scaler is not None else None,
            "mask": _cpu_state(keeper.mask) if keeper is not None else None,
            "best_val": best_val,
            "best_epoch": best_epoch,
            "best_state": _cpu_state(best_state),
        }

    last_good_state = clone_state(model)
    epochs_run = done
    diverged = False
    try:
        for epoch in positions[done:]:
            faults.at_epoch_start(config.seed, round_index, epoch)  # test-only; inert if unset
            poison = faults.nan_loss(config.seed, round_index, epoch)
            lr = schedule(epoch)
            for group in optimizer.param_groups:
                group["lr"] = lr
            model.train()
            started = time.perf_counter()
            loss_sum = torch.zeros((), device=runtime.device)
            correct = torch.zeros((), device=runtime.device, dtype=torch.long)
            seen = 0
            # Dataset seam: batches come from the splits object, in memory or streamed.
            for inputs, targets in splits.batches(
                "train",
                train.batch_size,
                shuffle=True,
                generator=random_streams.data_order(config.seed, round_index, epoch),
                device=runtime.device,
                augment=data.train_augment,
                drop_last=True,
                max_batches=train.max_batches,
            ):
                update = mask_updater is not None and mask_updater.due(step)
                dense = update and mask_updater.needs_dense_gradients
                with keeper.dense_gradients() if dense else contextlib.nullcontext():
                    with runtime.autocast():
                        logits = forward(inputs)
                        loss = loss_fn(logits, targets)
                        if poison:
                            loss = loss * float("nan")
                    # Network slimming's sparsity term is trained on, not reported in train_loss.
                    penalty = pruning.bn_scale_penalty(model, train.bn_l1) if train.bn_l1 else 0
                    objective = loss + penalty
                    optimizer.zero_grad(set_to_none=True)
                    if scaler is not None:
                        scaler.scale(objective).backward()
                        scaler.unscale_(optimizer)
                    else:
                        objective.backward()
                    if update:
                        keeper.set_mask(mask_updater.update(step, model, keeper.mask))
                if update and mask_updater.replaces_optimizer_step:
                    if scaler is not None:
                        scaler.update()
                else:
                    if train.grad_clip is not None:
                        nn.utils.clip_grad_norm_(model.parameters(), train.grad_clip)
                    if scaler is not None:
                        scaler.step(optimizer)
                        scaler.update()
                    else:
                        optimizer.step()
                step += 1
                # Accumulate on the device: no host sync per step.
                loss_sum += loss.detach().float() * len(targets)
                correct += (logits.detach().argmax(dim=1) == targets).sum()
                seen += len(targets)
            train_loss = float(loss_sum) / max(seen, 1)
            # The weights too: a NaN gradient on the epoch's last step leaves the loss finite but
            # the weights non-finite, and they must not become the "last good" state.
            if not math.isfinite(train_loss) or not _all_finite(model):
                diverged = True
                model.load_state_dict(last_good_state)
                break
            epoch_time = time.perf_counter() - started
            val_acc = accuracy_on(model, "val")
            last_good_state = clone_state(model)
            selectable = select_from_epoch is None or epoch >= select_from_epoch
            if selectable and val_acc > best_val:
                best_val, best_epoch, best_state = val_acc, epoch, last_good_state
            done += 1
            epochs_run += 1
            row = {
                "row_type": "epoch",
                "round": round_index,
                "epoch": epoch,
                "train_loss": train_loss,
                "train_acc": float(correct) / max(seen, 1),
                "val_acc": val_acc,
                "lr": lr,
                "epoch_time_s": epoch_time,
                "images_per_s": seen / epoch_time if epoch_time > 0 else float("nan"),
            }
            if keeper is not None:
                row["sparsity"] = pruning.mask_sparsity(keeper.mask)
            if on_epoch_end is not None:
                on_epoch_end(row, snapshot)
    finally:
        final_mask = _cpu_state(keeper.mask) if keeper is not None else None
        if keeper is not None:
            keeper.detach()

    final_state = clone_state(model)
    if best_epoch < 0:  # diverged before a selectable epoch: evaluate what we have
        best_val = accuracy_on(model, "val")
        best_state = final_state
    evaluation_model = copy.deepcopy(model)
    evaluation_model.load_state_dict(best_state)
    test_acc = accuracy_on(evaluation_model, "test")
    return PhaseResult(
        final_state=final_state,
        best_state=best_state,
        best_val_acc=best_val,
        best_epoch=best_epoch,
        test_acc=test_acc,
        epochs_run=epochs_run,
        optimizer_state=optimizer.state_dict(),
        diverged=diverged,
        mask=final_mask,
        steps=step,
    )


def _cpu_state(state: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    return {name: tensor.detach().to("cpu", copy=True) for name, tensor in state.items()}


def _device_state(state: dict[str, torch.Tensor], runtime: Runtime) -> dict[str, torch.Tensor]:
    return {name: tensor.to(runtime.device) for name, tensor in state.items()}
