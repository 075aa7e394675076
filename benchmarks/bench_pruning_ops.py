"""Pruning operations on the full ResNet-18 (11.2M parameters, 102 classes), CPU.

* one global magnitude prune: `pruning.score(model, mask, "magnitude")` +
  `prune_to_sparsity(scores, mask, 0.6)`;
* one SNIP scoring batch vs one training step (fwd + bwd + SGD step) on the same batch;
* the per-step cost of keeping masks: training steps with vs without `MaskedTraining` (60%
  sparse mask, both models holding the same pruned weights), alternating, plus the mask
  operations alone (the gradient masking and the post-step weight masking) timed in isolation,
  which is the overhead without the noise of a shared machine;
* one RigL mask update (90% ERK sparse) against a training step, amortised over RigL's default
  update interval of 100 steps.

    python benchmarks/bench_pruning_ops.py [--quick]
"""

from __future__ import annotations

import argparse
import copy
import time
from typing import Any

import common


def build(image_size: int, batch: int) -> tuple[Any, Any, Any]:
    import torch

    from trainables.config import ModelConfig
    from trainables.models import build_model

    torch.manual_seed(0)
    model = build_model(ModelConfig(name="resnet18"), 102, 3)
    inputs = torch.randn(batch, 3, image_size, image_size)
    targets = torch.randint(0, 102, (batch,))
    return model, inputs, targets


def train_step(model: Any, optimizer: Any, inputs: Any, targets: Any) -> float:
    from torch.nn import functional

    started = time.perf_counter()
    loss = functional.cross_entropy(model(inputs), targets)
    optimizer.zero_grad(set_to_none=True)
    loss.backward()
    optimizer.step()
    return time.perf_counter() - started


def sgd(model: Any) -> Any:
    import torch

    return torch.optim.SGD(model.parameters(), lr=0.001, momentum=0.9, weight_decay=5e-4)


def magnitude_prune(reps: int) -> dict[str, Any]:
    import pruning

    model, _, _ = build(112, 1)
    mask = pruning.full_mask(model)
    times = []
    for _ in range(reps + 1):
        started = time.perf_counter()
        pruned = pruning.prune_to_sparsity(pruning.score(model, mask, "magnitude"), mask, 0.6)
        times.append(time.perf_counter() - started)
    kept = sum(int(keep.sum()) for keep in pruned.values())
    total = sum(keep.numel() for keep in pruned.values())
    return {
        "seconds": common.median(times[1:]),
        "samples": times[1:],
        "prunable_weights": total,
        "sparsity": 1 - kept / total,
        "params_total": sum(p.numel() for p in model.parameters()),
    }


def snip_vs_step(reps: int, image_size: int, batch: int) -> dict[str, Any]:
    import pruning

    model, inputs, targets = build(image_size, batch)
    mask = pruning.full_mask(model)
    optimizer = sgd(model)
    train_step(model, optimizer, inputs, targets)  # warm-up
    snip, step = [], []
    for _ in range(reps):
        started = time.perf_counter()
        pruning.score(model, mask, "snip", batches=[(inputs, targets)], num_batches=1)
        snip.append(time.perf_counter() - started)
        step.append(train_step(model, optimizer, inputs, targets))
    return {
        "snip_batch_s": common.median(snip),
        "train_step_s": common.median(step),
        "ratio": common.median(snip) / common.median(step),
        "batch": batch,
        "image_size": image_size,
    }


def masked_overhead(reps: int, image_size: int, batch: int) -> dict[str, Any]:
    import torch

    import pruning

    plain, inputs, targets = build(image_size, batch)
    full = pruning.full_mask(plain)
    mask = pruning.prune_to_sparsity(pruning.score(plain, full, "magnitude"), full, 0.6)
    pruning.apply_mask(plain, mask)
    masked = copy.deepcopy(plain)
    plain_opt, masked_opt = sgd(plain), sgd(masked)
    keeper = pruning.MaskedTraining(masked, mask, masked_opt)
    train_step(plain, plain_opt, inputs, targets)  # warm-up both
    train_step(masked, masked_opt, inputs, targets)
    without, with_mask = [], []
    for rep in range(reps):  # alternate which goes first, too
        pair = [(plain, plain_opt, without), (masked, masked_opt, with_mask)]
        for model, optimizer, times in pair if rep % 2 == 0 else pair[::-1]:
            times.append(train_step(model, optimizer, inputs, targets))

    # The mask operations alone: what the hooks add to every step (the same hook functions).
    for parameter in keeper._parameters:
        parameter.grad = torch.randn_like(parameter)
    maskers = [keeper._gradient_masker(float_mask) for float_mask in keeper._float_masks]
    ops = []
    for _ in range(max(reps, 5)):
        started = time.perf_counter()
        for masker, parameter in zip(maskers, keeper._parameters, strict=True):
            masker(parameter)  # the post-accumulate-grad hook
        keeper._after_step(masked_opt, (), {})  # the optimizer step post-hook
        ops.append(time.perf_counter() - started)
    keeper.detach()
    step_s = common.median(without)
    return {
        "step_s_without_mask": step_s,
        "step_s_with_mask": common.median(with_mask),
        "overhead_measured": common.median(with_mask) / step_s - 1,
        "mask_ops_s": common.median(ops),
        "overhead_mask_ops": common.median(ops) / step_s,
        "samples": {"without": without, "with": with_mask, "ops": ops},
        "batch": batch,
        "image_size": image_size,
    }


def rigl_update_cost(reps: int, image_size: int, batch: int, interval: int) -> dict[str, Any]:
    """One RigL mask update (drop by magnitude, grow by dense gradient, new mask in force with
    its optimizer state reset) on ResNet-18 at 90% ERK sparsity, against one training step; the
    update runs once every `interval` steps (RigL's default 100), so it is amortised over them.
    The update's forward/backward is an ordinary step's (RigL skips that step's optimizer step),
    so only the update itself is extra."""
    from torch.nn import functional

    import pruning
    from trainables.methods.dynamic_sparse import DropAndGrow

    model, inputs, targets = build(image_size, batch)
    full = pruning.full_mask(model)
    scores = pruning.score(model, full, "random", seed=0)
    mask = pruning.prune_to_sparsity(scores, full, 0.9, "erk")
    optimizer = sgd(model)
    keeper = pruning.MaskedTraining(model, mask, optimizer)
    schedule = pruning.DropSchedule(interval=interval, end_step=100 * interval, alpha=0.3)
    updater = DropAndGrow(schedule, seed=0, by_gradient=True)
    train_step(model, optimizer, inputs, targets)  # warm-up, and momentum buffers exist
    steps, updates = [], []
    for _ in range(reps):
        steps.append(train_step(model, optimizer, inputs, targets))
        with keeper.dense_gradients():
            optimizer.zero_grad(set_to_none=True)
            functional.cross_entropy(model(inputs), targets).backward()
            started = time.perf_counter()
            keeper.set_mask(updater.update(interval, model, keeper.mask))
            updates.append(time.perf_counter() - started)
    keeper.detach()
    step_s, update_s = common.median(steps), common.median(updates)
    return {
        "step_s": step_s,
        "update_s": update_s,
        "interval_steps": interval,
        "amortised_share": update_s / (interval * step_s),
        "samples": {"steps": steps, "updates": updates},
        "batch": batch,
        "image_size": image_size,
    }


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="seconds-long smoke run")
    parser.add_argument("--reps", type=int, default=5)
    parser.add_argument("--mask-reps", type=int, default=8)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--batch", type=int, default=32)
    parser.add_argument("--sizes", type=int, nargs="+", default=[112, 224])
    args = parser.parse_args(argv)
    if args.quick:
        args.reps, args.mask_reps, args.batch, args.sizes = 1, 1, 2, [32]
    import torch

    torch.set_num_threads(args.threads)
    started = time.perf_counter()
    magnitude = magnitude_prune(args.reps)
    snip = snip_vs_step(args.reps, args.sizes[0], args.batch)
    masks = {str(size): masked_overhead(args.mask_reps, size, args.batch) for size in args.sizes}
    rigl = rigl_update_cost(args.mask_reps, args.sizes[0], args.batch, interval=100)
    bars = [
        common.bar(
            "global magnitude prune to 60%, ResNet-18 (CPU)",
            magnitude["seconds"],
            "< 0.2 s",
            magnitude["seconds"] < 0.2,
            "s",
        )
    ]
    for size, figures in masks.items():
        cost = figures["overhead_mask_ops"]
        bars.append(
            common.bar(
                f"keeping masks, share of a step (batch {args.batch}, {size} px)",
                cost,
                "< 2%",
                cost < 0.02,
                "fraction",
            )
        )
    bars.append(
        common.bar(
            f"RigL update every 100 steps, amortised share of training (batch {args.batch}, "
            f"{args.sizes[0]} px, 90% ERK)",
            rigl["amortised_share"],
            "< 5%",
            rigl["amortised_share"] < 0.05,
            "fraction",
        )
    )
    common.emit(
        {
            "benchmark": "pruning_ops",
            "quick": args.quick,
            "setup": {
                "model": "resnet18 (102 classes)",
                "torch_threads": args.threads,
                "batch": args.batch,
                "reps": args.reps,
                "mask_reps": args.mask_reps,
            },
            "magnitude_prune": magnitude,
            "snip_vs_train_step": snip,
            "masked_training": masks,
            "rigl_update": rigl,
            "bars": bars,
        },
        started,
    )


if __name__ == "__main__":
    main()
