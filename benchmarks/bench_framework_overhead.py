"""Framework overhead: the same dense training as a bare PyTorch loop and as a prunetune trial.

Same model (resnet18_cifar, width 16, digits), same uint8 tensors + BatchAugment, same seed,
batch size and epochs, one torch thread each, on `--device` (default the CPU; on cuda every way
runs as a trial there does: the runtime's amp dtype, channels_last, cuDNN settings, and a
synchronisation closing each epoch). Three ways, repetitions interleaved:

* bare: a minimal hand-written loop in this process (forward, loss, backward, SGD step);
* direct: prunetune's `run_trial` with a DirectoryReporter in this process (the loop, no Ray);
* sweep: a one-trial sweep through `sweeps/run_sweep.py` in a fresh process (Ray Tune),
  per-epoch `epoch_time_s` read back from the trial's result.json.

Per-epoch times exclude each run's first epoch (warm-up). The start-up of a sweep, stage by
stage, is `bench_startup.py`'s.

    python benchmarks/bench_framework_overhead.py [--quick] [--device cpu|cuda] [--width N]
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path
from typing import Any

import common


def trial_config(args: argparse.Namespace) -> dict[str, Any]:
    return {
        "method": "dense",
        "seed": 0,
        "data": {"name": "digits"},
        "model": {"name": "resnet18_cifar", "width": args.width},
        "train": {
            "epochs": args.epochs,
            "batch_size": 64,
            "lr": 0.05,
            "lr_schedule": "constant",
            "device": args.device,
            "max_batches": args.max_batches,
            "max_eval_batches": args.max_batches,
        },
    }


def bare_epochs(args: argparse.Namespace) -> list[float]:
    """A minimal PyTorch loop over the same data; returns per-epoch training times."""
    import torch

    from trainables.batches import iterate_batches
    from trainables.datasets import batch_augment, load_dataset
    from trainables.models import build_model
    from trainables.random_streams import data_order
    from trainables.resolve import parse_trial_config
    from trainables.runtime import resolve_runtime

    config = parse_trial_config(trial_config(args))
    runtime = resolve_runtime(config.train, cpus=1)  # device, amp dtype, channels_last
    splits = load_dataset(config.data)
    augment = batch_augment(config.data, splits, train=True,
                            channels_last=runtime.channels_last)
    torch.manual_seed(config.seed)
    model = build_model(config.model, splits.num_classes, splits.in_channels).to(runtime.device)
    if runtime.channels_last:
        model.to(memory_format=torch.channels_last)
    scaler = torch.amp.GradScaler("cuda") if runtime.needs_grad_scaler else None
    optimizer = torch.optim.SGD(model.parameters(), lr=0.05, momentum=0.9, weight_decay=5e-4)
    times = []
    for epoch in range(args.epochs):
        model.train()
        started = time.perf_counter()
        for inputs, targets in iterate_batches(
            splits.train_images,
            splits.train_labels,
            64,
            shuffle=True,
            generator=data_order(config.seed, 0, epoch),
            device=runtime.device,
            augment=augment,
            drop_last=True,
            max_batches=args.max_batches,
        ):
            common.train_step(model, optimizer, scaler, runtime, inputs, targets)
        runtime.synchronize()
        times.append(time.perf_counter() - started)
    return times


def direct_epochs(args: argparse.Namespace) -> list[float]:
    from trainables.reporting import DirectoryReporter
    from trainables.resolve import parse_trial_config
    from trainables.runtime import GpuGrant
    from trainables.trial import run_trial

    # Outside Ray, the GPU a trial may use is granted here (Ray would grant the sweep's).
    grant = GpuGrant(share=1.0, ids=("0",)) if args.device == "cuda" else None
    with tempfile.TemporaryDirectory(prefix="bench-direct-") as directory:
        reporter = DirectoryReporter(directory)
        run_trial(parse_trial_config(trial_config(args)), reporter, cpus=1, grant=grant)
    return [row["epoch_time_s"] for row in reporter.rows if row["row_type"] == "epoch"]


def sweep_run(args: argparse.Namespace, work: Path, rep: int) -> dict[str, Any]:
    spec = {
        "name": f"overhead{rep}",
        "base": trial_config(args),
        "experiments": [{"label": "dense", "config": {"method": "dense"}}],
        "resources": {"cpu": 1, "gpu": 1 if args.device == "cuda" else 0},
    }
    sweep_file = common.write_sweep(work, spec)
    common.run_sweep(sweep_file, work / "out")
    (rows,) = common.result_rows(work / "out" / spec["name"]).values()
    return {"epochs": [row["epoch_time_s"] for row in rows if row.get("row_type") == "epoch"]}


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="seconds-long smoke run")
    parser.add_argument("--reps", type=int, default=3)
    parser.add_argument("--epochs", type=int, default=6)
    parser.add_argument("--width", type=int, default=16)
    parser.add_argument("--max-batches", type=int, default=None)
    parser.add_argument("--device", choices=("cpu", "cuda"), default="cpu")
    args = parser.parse_args(argv)
    if args.quick:
        args.reps, args.epochs, args.width, args.max_batches = 1, 2, 4, 2
    started = time.perf_counter()

    bare, direct, sweep = [], [], []
    with tempfile.TemporaryDirectory(prefix="bench-overhead-") as tmp:
        for rep in range(args.reps):  # A/B/C interleaved, so load changes hit all three
            bare += bare_epochs(args)[1:]
            direct += direct_epochs(args)[1:]
            run = sweep_run(args, Path(tmp), rep)
            sweep += run["epochs"][1:]

    bare_s, direct_s, sweep_s = (common.median(x) for x in (bare, direct, sweep))
    ratio = sweep_s / bare_s
    common.emit(
        {
            "benchmark": "framework_overhead",
            "quick": args.quick,
            "device": args.device,
            "setup": trial_config(args) | {"reps": args.reps, "torch_threads": 1},
            "epoch_s": {"bare": bare_s, "direct": direct_s, "sweep": sweep_s},
            "epoch_ratio_sweep_vs_bare": ratio,
            "epoch_ratio_direct_vs_bare": direct_s / bare_s,
            "samples": {"bare": bare, "direct": direct, "sweep": sweep},
            "bars": [
                common.bar(
                    "per-epoch time, Ray Tune trial / bare loop"
                    + (" (cuda)" if args.device == "cuda" else ""),
                    ratio,
                    "<= 1.05",
                    ratio <= 1.05,
                    "x",
                ),
            ],
        },
        started,
    )


if __name__ == "__main__":
    main()
