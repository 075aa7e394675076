"""How many CPU cores a GPU's training rate needs from prunetune's streaming input path.

Flowers-102 (the shared copy) through the path a streamed dataset takes in a trial
(`data.storage: stream`, `StreamingSplits.batches`): JPEG decode and resize in one DataLoader
worker, then the trial's batched train augmentation (random-resized crop, flip, normalisation)
in the trial process with one torch thread, at 224 px, batch 64, shuffled as a training epoch.
Timed: images/s over the epoch's batches after the first (worker start-up), the median of
`--reps` passes. Per core: that rate over 2, the two processes (the decoding worker and the
trial process) each busy on its own core.

The GPU rate it is held against is a cited one: NVIDIA's DeepLearningExamples, ResNet-50 v1.5
for PyTorch, training on 1 A100 80GB (DGX A100) with mixed precision: 2470 images/s
(pytorch-21.03 NGC container; github.com/NVIDIA/DeepLearningExamples,
PyTorch/Classification/ConvNets/resnet50v1.5/README.md, "Training performance: NVIDIA DGX A100
(8x A100 80GB)"). Cores to feed it = 2470 / images/s per core, rounded up; an 8-GPU trial needs
8 times that, spread over its workers (`resources.cpu` per worker).

The shared copy of Flowers-102 is downscaled to 128 px on its shorter side; full-size JPEGs
(Flowers' originals, ImageNet's ~400x350 on average) cost more to decode, so the cores found
here are a lower bound.

    python benchmarks/bench_data_feed.py [--quick] [--data-root DIR]
"""

from __future__ import annotations

import argparse
import math
import time
from typing import Any

import common

#: NVIDIA DeepLearningExamples, ResNet-50 v1.5 (PyTorch), 1x A100 80GB, mixed precision.
CITED_GPU_IMAGES_PER_S = 2470
CITED_GPU = "ResNet-50 v1.5 training, 1 A100 80GB, mixed precision (NVIDIA DeepLearningExamples)"
BATCH = 64
DECODE_WORKERS = 1


def one_pass(splits: Any, augment: Any, batches: int, seed: int) -> dict[str, float]:
    """Images/s of one shuffled pass of `batches` training batches, the first left out."""
    import torch

    generator = torch.Generator().manual_seed(seed)
    images, started = 0, None
    for index, (inputs, _) in enumerate(splits.batches(
            "train", BATCH, shuffle=True, generator=generator, device="cpu", augment=augment,
            drop_last=True, max_batches=batches)):
        if index == 0:
            started = time.perf_counter()  # the worker is up and the first batch is in
            continue
        images += len(inputs)
    assert started is not None
    return {"images": images, "seconds": time.perf_counter() - started}


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="a smoke run: 64 px, 3 batches")
    parser.add_argument("--reps", type=int, default=3)
    parser.add_argument("--size", type=int, default=224)
    common.add_data_root(parser)
    args = parser.parse_args(argv)
    batches = None
    if args.quick:
        args.reps, args.size, batches = 1, 64, 3
    import torch

    from trainables.resolve import parse_trial_config
    from trainables.runtime import resolve_runtime
    from trainables.trial_data import TrialData

    started = time.perf_counter()
    torch.set_num_threads(1)
    data = {**common.flowers_data(args.size, args.data_root), "storage": "stream",
            "workers": DECODE_WORKERS}
    config = parse_trial_config({"method": "dense", "data": data,
                                 "train": {"batch_size": BATCH, "device": "cpu"}},
                                check_ignored=False)
    from trainables.datasets import load_dataset

    splits = load_dataset(config.data)
    trial_data = TrialData.build(splits, config, resolve_runtime(config.train, 1))
    passes = [one_pass(splits, trial_data.train_augment, batches or 10**6, seed)
              for seed in range(args.reps)]
    rate = common.median(p["images"] / p["seconds"] for p in passes)
    per_core = rate / (DECODE_WORKERS + 1)
    cores = math.ceil(CITED_GPU_IMAGES_PER_S / per_core)
    common.emit({
        "benchmark": "data_feed",
        "quick": args.quick,
        "setup": {"dataset": "flowers102 (shared copy, 128 px shorter side)",
                  "image_size": args.size, "batch": BATCH, "decode_workers": DECODE_WORKERS,
                  "torch_threads": 1, "reps": args.reps, "storage": type(splits).__name__},
        "passes": passes,
        "images_per_s": rate,
        "images_per_s_per_core": per_core,
        "cited_gpu": {"what": CITED_GPU, "images_per_s": CITED_GPU_IMAGES_PER_S},
        "cores_per_gpu": cores,
        "bars": [
            common.bar(f"streaming pipeline images/s per CPU core, {args.size} px (decode + "
                       "augment)", per_core, "report", None),
            common.bar(f"CPU cores to feed one A100 at {CITED_GPU_IMAGES_PER_S} images/s "
                       "(ResNet-50, AMP; cited)", cores, "report", None),
            common.bar("CPU cores to feed an 8-GPU trial (8 workers)", 8 * cores, "report",
                       None),
        ],
    }, started)


if __name__ == "__main__":
    main()
