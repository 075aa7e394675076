"""The one training/evaluation loop every method uses. It knows nothing about pruning beyond
keeping a mask in force and calling a method's mask updater at the steps it asks for; the methods
decide what happens between and inside phases.
"""

from __future__ import annotations

import contextlib
import copy
import math
import time
from collections.abc import Callable, Iterator, Sequence
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
from trainables.ranks import SOLO, Ranks
from trainables.runtime import Runtime
from trainables.schema import EPOCH_ROW
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
    shard: bool = False,
) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
    """(logits, labels) of `model` on each batch of `split` of `splits` in order (or its first
    `max_batches` batches), in eval mode; the model's mode is restored after. With `shard`,
    only this data-parallel rank's part of each batch (`Ranks.part`)."""
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
            **rank_part(runtime.ranks if shard else SOLO),
        ):
            with runtime.autocast():
                logits = model(inputs)
            yield logits, targets
    finally:
        model.train(was_training)


def rank_part(ranks: Ranks) -> dict[str, Any]:
    """The `part` option of a dataset's `batches` for a data-parallel rank (none for one
    process, so that a dataset object without it still serves one-process trials)."""
    return {"part": ranks.part} if ranks.parallel else {}


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
    `max_batches` batches), in eval mode.

    Data-parallel ranks each evaluate their part of every batch and their counts are summed:
    the accuracy is that of the whole split, never a mean of the ranks' accuracies."""
    ranks = runtime.ranks
    counts = torch.zeros(2, dtype=torch.long, device=runtime.device)  # correct, seen
    for logits, targets in eval_batches(model, splits, split, augment, runtime, batch_size,
                                        max_batches, shard=ranks.parallel):
        counts[0] += (logits.argmax(dim=1) == targets).sum()
        counts[1] += len(targets)
    correct, seen = ranks.sum(counts).tolist()
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


class StepHook(Protocol):
    """What a method adds to every training step of a phase: a term of the objective that is
    trained on but not reported in `train_loss` (e.g. network slimming's, methods/penalties.py)."""

    def penalty(self, model: nn.Module) -> torch.Tensor: ...


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
    hooks: Sequence[StepHook] = (),
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
    stepper = Stepper(model, config, runtime, mask_updater, hooks)
    progress = PhaseProgress.begin(stepper, mask, resume, runtime)
    schedule = lr_for_epoch or (lambda epoch: lr_at_epoch(config.train, epoch, total_epochs))
    last_good_state, diverged = clone_state(model), False
    try:
        for epoch in list(epochs)[progress.done:]:
            lr = schedule(epoch)
            epoch_run = run_epoch(stepper, data, round_index, epoch, lr, progress)
            # The weights too: a NaN gradient on the epoch's last step leaves the loss finite but
            # the weights non-finite, and they must not become the "last good" state.
            if not math.isfinite(epoch_run.train_loss) or not _all_finite(model):
                diverged = True
                model.load_state_dict(last_good_state)
                break
            val_acc = accuracy(model, data, config, runtime, "val")
            last_good_state = clone_state(model)
            progress.epoch_done(epoch, val_acc, last_good_state, select_from_epoch)
            if on_epoch_end is not None:
                row = epoch_run.row(round_index, epoch, val_acc, lr, stepper.mask)
                on_epoch_end(row, lambda: progress.snapshot(stepper))
    finally:
        final_mask = stepper.release_mask()
    return finish_phase(stepper, progress, data, config, runtime, diverged, final_mask)


class _CompiledForms:
    """A model's compiled wrappers by parameter shapes. Held by the model itself, so it lives
    and dies with it (a module-level cache would keep every model alive: a wrapper holds its
    model); a copy or a pickle of the model starts empty rather than copying compiled code."""

    def __init__(self) -> None:
        self.by_shape: dict[tuple[tuple[str, tuple[int, ...]], ...], Callable[..., Any]] = {}

    def __deepcopy__(self, memo: dict[int, Any]) -> _CompiledForms:
        return _CompiledForms()

    def __reduce__(self) -> tuple[type[_CompiledForms], tuple[()]]:
        return _CompiledForms, ()


_COMPILED_FORMS = "_prunetune_compiled_forms"


def compiled(model: nn.Module, runtime: Runtime) -> Callable[..., Any]:
    """`torch.compile(model)`, made once per network shape: every phase on the same network
    (IMP's rounds) reuses one wrapper instead of compiling again, and a network a channel round
    narrowed (new parameter shapes) gets its own. Inductor's compile workers are capped at the
    trial's CPUs first (`runtime.cpus`): by default it starts min(32, the node's cores) of them
    in every trial, however many trials share the node."""
    forms = model.__dict__.get(_COMPILED_FORMS)
    if forms is None:
        forms = model.__dict__[_COMPILED_FORMS] = _CompiledForms()
    shapes = tuple((name, tuple(p.shape)) for name, p in model.named_parameters())
    if shapes not in forms.by_shape:
        from torch._inductor import config as inductor_config

        # Read when compilation starts its worker pool (the first compiled forward), so it is
        # set here, before the wrapper exists.
        inductor_config.compile_threads = max(1, runtime.cpus)
        forms.by_shape[shapes] = torch.compile(model)
    return forms.by_shape[shapes]


def data_parallel(model: nn.Module, runtime: Runtime) -> nn.Module:
    """`model` wrapped in DistributedDataParallel across the trial's ranks. DDP broadcasts rank
    0's weights and buffers when it is built (every phase builds one) and its buffers before
    each forward, so the ranks start every phase from the same state."""
    from torch.nn.parallel import DistributedDataParallel

    devices = [runtime.device.index] if runtime.device.type == "cuda" else None
    return DistributedDataParallel(model, device_ids=devices)


class Stepper:
    """One optimizer step of a phase: the forward pass (autocast; compiled if asked), the loss
    and the hooks' terms, the backward pass (through the grad scaler where one is needed), a due
    mask update, gradient clipping and the optimizer step. Holds the optimizer and the mask."""

    def __init__(self, model: nn.Module, config: TrialConfig, runtime: Runtime,
                 mask_updater: MaskUpdater | None, hooks: Sequence[StepHook]) -> None:
        train = config.train
        self.model, self.config, self.runtime = model, config, runtime
        self.mask_updater, self.hooks = mask_updater, tuple(hooks)
        self.optimizer = make_optimizer(model, config)
        self.scaler = (torch.amp.GradScaler(runtime.device.type) if runtime.needs_grad_scaler
                       else None)
        self.enforcer: pruning.MaskedTraining | None = None  # keeps the mask in force
        self.loss_fn = nn.CrossEntropyLoss(label_smoothing=train.label_smoothing)
        # Only the training forward is compiled (and, with data-parallel workers, wrapped in
        # DDP, whose backward all-reduces the gradients); `model` (its parameters and state_dict
        # keys) is shared with the wrappers, so masks, checkpoints and evaluation see the same
        # weights.
        self.forward = data_parallel(model, runtime) if runtime.ranks.parallel else model
        if train.compile:
            self.forward = compiled(self.forward, runtime)

    def keep(self, mask: pruning.Mask | None) -> None:
        """Keep `mask` in force from now on (None: a dense phase)."""
        if mask is not None:
            self.enforcer = pruning.MaskedTraining(self.model, mask, self.optimizer)

    @property
    def mask(self) -> pruning.Mask | None:
        return self.enforcer.mask if self.enforcer is not None else None

    def release_mask(self) -> pruning.Mask | None:
        """The mask in force (a CPU copy), no longer enforced."""
        if self.enforcer is None:
            return None
        final = _cpu_state(self.enforcer.mask)
        self.enforcer.detach()
        return final

    def step(self, step: int, inputs: torch.Tensor, targets: torch.Tensor
             ) -> tuple[torch.Tensor, torch.Tensor]:
        """Train on one batch; its (loss, logits)."""
        updater, enforcer, optimizer, scaler = (self.mask_updater, self.enforcer,
                                                self.optimizer, self.scaler)
        update = updater is not None and updater.due(step)
        dense = update and updater.needs_dense_gradients
        with enforcer.dense_gradients() if dense else contextlib.nullcontext():
            with self.runtime.autocast():
                logits = self.forward(inputs)
                loss = self.loss_fn(logits, targets)
            objective = loss
            for hook in self.hooks:
                objective = objective + hook.penalty(self.model)
            optimizer.zero_grad(set_to_none=True)
            if scaler is not None:
                scaler.scale(objective).backward()
                scaler.unscale_(optimizer)
            else:
                objective.backward()
            if enforcer is not None and self.runtime.ranks.parallel and not dense:
                # DDP's reduction may write the averaged gradients back after the mask's
                # gradient hook ran: mask again, after the all-reduce.
                enforcer.mask_gradients()
            if update:
                enforcer.set_mask(updater.update(step, self.model, enforcer.mask))
        if update and updater.replaces_optimizer_step:
            if scaler is not None:
                scaler.update()
            return loss, logits
        if self.config.train.grad_clip is not None:
            nn.utils.clip_grad_norm_(self.model.parameters(), self.config.train.grad_clip)
        if scaler is not None:
            scaler.step(optimizer)
            scaler.update()
        else:
            optimizer.step()
        return loss, logits


@dataclass
class PhaseProgress:
    """Where a phase stands: epochs and steps done, and model selection's best epoch so far."""

    done: int = 0
    step: int = 0
    best_val: float = -1.0
    best_epoch: int = -1
    best_state: dict[str, torch.Tensor] = field(default_factory=dict)

    @classmethod
    def begin(cls, stepper: Stepper, mask: pruning.Mask | None, resume: dict[str, Any] | None,
              runtime: Runtime) -> PhaseProgress:
        """A fresh phase with `mask` in force, or (`resume`, a snapshot) the phase continued
        exactly where it was."""
        if resume is not None:
            stepper.model.load_state_dict(resume["model"])
            stepper.optimizer.load_state_dict(resume["optimizer"])
            if stepper.scaler is not None and resume.get("scaler"):
                stepper.scaler.load_state_dict(resume["scaler"])
        stepper.keep(mask)  # after the resumed weights are loaded: the mask applies to them
        if resume is None:
            return cls(best_state=clone_state(stepper.model))
        return cls(resume["epochs_done"], resume["step"], resume["best_val"],
                   resume["best_epoch"], _device_state(resume["best_state"], runtime))

    def epoch_done(self, epoch: int, val_acc: float, state: dict[str, torch.Tensor],
                   select_from_epoch: int | None) -> None:
        """Count the epoch; `state` (its weights) becomes the best if it is selectable."""
        selectable = select_from_epoch is None or epoch >= select_from_epoch
        if selectable and val_acc > self.best_val:
            self.best_val, self.best_epoch, self.best_state = val_acc, epoch, state
        self.done += 1

    def snapshot(self, stepper: Stepper) -> dict[str, Any]:
        """Everything needed to continue the phase exactly from here (CPU tensors)."""
        mask = stepper.mask
        return {
            "epochs_done": self.done,
            "step": self.step,
            "model": _cpu_state(stepper.model.state_dict()),
            "optimizer": stepper.optimizer.state_dict(),
            "scaler": stepper.scaler.state_dict() if stepper.scaler is not None else None,
            "mask": _cpu_state(mask) if mask is not None else None,
            "best_val": self.best_val,
            "best_epoch": self.best_epoch,
            "best_state": _cpu_state(self.best_state),
        }


@dataclass
class EpochRun:
    """One epoch's training statistics (on the device until read)."""

    loss_sum: torch.Tensor
    correct: torch.Tensor
    seen: int
    seconds: float

    @property
    def train_loss(self) -> float:
        return float(self.loss_sum) / max(self.seen, 1)

    def row(self, round_index: int, epoch: int, val_acc: float, lr: float,
            mask: pruning.Mask | None) -> dict[str, Any]:
        return EPOCH_ROW.row(
            row_type="epoch",
            round=round_index,
            epoch=epoch,
            train_loss=self.train_loss,
            train_acc=float(self.correct) / max(self.seen, 1),
            val_acc=val_acc,
            lr=lr,
            epoch_time_s=self.seconds,
            images_per_s=self.seen / self.seconds if self.seconds > 0 else float("nan"),
            **({} if mask is None else {"sparsity": pruning.mask_sparsity(mask)}),
        )


def run_epoch(stepper: Stepper, data: TrialData, round_index: int, epoch: int, lr: float,
              progress: PhaseProgress) -> EpochRun:
    """Train one epoch at learning rate `lr` over the epoch's shuffled batches."""
    config, device = stepper.config, stepper.runtime.device
    for group in stepper.optimizer.param_groups:
        group["lr"] = lr
    stepper.model.train()
    started = time.perf_counter()
    loss_sum = torch.zeros((), device=device)
    correct = torch.zeros((), device=device, dtype=torch.long)
    seen = 0
    batches = data.splits.batches(  # dataset seam: in memory or streamed
        "train",
        config.train.batch_size,
        shuffle=True,
        generator=random_streams.data_order(config.seed, round_index, epoch),
        device=device,
        augment=data.train_augment,
        drop_last=True,
        max_batches=config.train.max_batches,
        # Every rank draws the same global batch and trains on its own part of it.
        **rank_part(stepper.runtime.ranks),
    )
    # The reliability tests' faults (trainables/faults.py) strike here; inert unless set.
    ranks = stepper.runtime.ranks
    with faults.injected_into_epoch(stepper, config.seed, round_index, epoch, ranks.rank):
        for inputs, targets in batches:
            loss, logits = stepper.step(progress.step, inputs, targets)
            progress.step += 1
            # Accumulate on the device: no host sync per step.
            loss_sum += loss.detach().float() * len(targets)
            correct += (logits.detach().argmax(dim=1) == targets).sum()
            seen += len(targets)
    stepper.runtime.synchronize()  # the epoch's time includes its steps still queued on a GPU
    seconds = time.perf_counter() - started
    if ranks.parallel:  # the epoch's statistics over the global batches, not rank 0's part
        totals = ranks.sum(torch.stack([loss_sum.double(), correct.double(),
                                        torch.tensor(float(seen), device=device)]))
        loss_sum, correct, seen = totals[0], totals[1].long(), int(totals[2])
    return EpochRun(loss_sum, correct, seen, seconds)


def accuracy(model: nn.Module, data: TrialData, config: TrialConfig, runtime: Runtime,
             split: str) -> float:
    """`evaluate` with the trial's eval transform and evaluation batching."""
    return evaluate(model, data.splits, split, data.eval_augment, runtime,
                    config.train.eval_batch_size, config.train.max_eval_batches)


def finish_phase(stepper: Stepper, progress: PhaseProgress, data: TrialData,
                 config: TrialConfig, runtime: Runtime, diverged: bool,
                 final_mask: pruning.Mask | None) -> PhaseResult:
    """The phase's result: the test accuracy of its best-validation weights."""
    model = stepper.model
    final_state = clone_state(model)
    best_val, best_state = progress.best_val, progress.best_state
    if progress.best_epoch < 0:  # diverged before a selectable epoch: evaluate what we have
        best_val = accuracy(model, data, config, runtime, "val")
        best_state = final_state
    evaluation_model = copy.deepcopy(model)
    evaluation_model.load_state_dict(best_state)
    return PhaseResult(
        final_state=final_state,
        best_state=best_state,
        best_val_acc=best_val,
        best_epoch=progress.best_epoch,
        test_acc=accuracy(evaluation_model, data, config, runtime, "test"),
        epochs_run=progress.done,
        diverged=diverged,
        mask=final_mask,
        steps=progress.step,
    )


def _cpu_state(state: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    return {name: tensor.detach().to("cpu", copy=True) for name, tensor in state.items()}


def _device_state(state: dict[str, torch.Tensor], runtime: Runtime) -> dict[str, torch.Tensor]:
    return {name: tensor.to(runtime.device) for name, tensor in state.items()}
