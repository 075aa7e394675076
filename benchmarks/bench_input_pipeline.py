"""Input pipeline on Flowers-102: the original study's per-sample DataLoader vs prunetune's
decode-once uint8 cache + batched augmentation, at 112 and 224 px.

* per_sample: `torchvision.datasets.Flowers102` + RandomResizedCrop / RandomHorizontalFlip /
  ToTensor / Normalize in a DataLoader (num_workers 2, batch 64, persistent workers; timed over
  the second epoch, so worker start-up is not counted);
* cached: `iterate_batches` over the decoded uint8 train split with a train `BatchAugment`
  (batch 64, drop_last), in this process with the torch threads given (default 1, a trial with
  `resources.cpu: 1`; on a shared, loaded 2-core machine two intra-op threads made the same
  augmentation 8x slower, not faster).

The pipeline's share of a training step is (cached pipeline time per batch) / (that + one
ResNet-18 (102 classes) forward+backward+SGD step on a batch at the same size), on the CPU.
Repetitions alternate the two pipelines; figures are medians.

The device figure (`device_feed`): ResNet-18 training images/s on `--device` (default cuda when
torch has a GPU) fed by the cached pipeline as a trial feeds it (`iterate_batches` onto the
device, augmentation there, the trial's default precision and memory format), over the same
training on one batch already on the device (synthetic), at 224 px; the bar (>= 90%) is the
GPU's. On the CPU the same code runs a few steps as a smoke test and the GPU figure is pending.

    python benchmarks/bench_input_pipeline.py [--quick] [--device cuda|cpu] [--data-root DIR]
"""

from __future__ import annotations

import argparse
import itertools
import time
from collections.abc import Iterator
from typing import Any

import common

BATCH = 64
#: Steps per side and repetition of the device figure, after `FEED_WARMUP` untimed ones (cuDNN
#: autotuning and lazy initialisation happen in the first steps): on CUDA, and the CPU's smoke.
FEED_STEPS = {"cuda": 50, "cpu": 2}
FEED_WARMUP = {"cuda": 10, "cpu": 1}
FEED_REPS = {"cuda": 3, "cpu": 1}


def per_sample_loader(image_size: int, workers: int, root: str) -> Any:
    import torch
    from torchvision import datasets, transforms

    from trainables.datasets import IMAGENET_MEAN, IMAGENET_STD

    transform = transforms.Compose(
        [
            transforms.RandomResizedCrop(image_size),
            transforms.RandomHorizontalFlip(),
            transforms.ToTensor(),
            transforms.Normalize(IMAGENET_MEAN, IMAGENET_STD),
        ]
    )
    dataset = datasets.Flowers102(root, split="train", transform=transform, download=False)
    return torch.utils.data.DataLoader(
        dataset,
        batch_size=BATCH,
        shuffle=True,
        num_workers=workers,
        drop_last=True,
        persistent_workers=workers > 0,
    )


def time_loader(loader: Any) -> tuple[float, int]:
    """Seconds and images of one whole epoch (a part epoch would leave the workers prefetching
    into the next measurement)."""
    images = 0
    started = time.perf_counter()
    for inputs, _ in loader:
        images += len(inputs)
    return time.perf_counter() - started, images


def time_cached(
    splits: Any, augment: Any, epoch: int, max_batches: int | None
) -> tuple[float, int]:
    import torch

    from trainables.batches import iterate_batches

    images = 0
    started = time.perf_counter()
    for inputs, _ in iterate_batches(
        splits.train_images,
        splits.train_labels,
        BATCH,
        shuffle=True,
        generator=torch.Generator().manual_seed(epoch),
        device="cpu",
        augment=augment,
        drop_last=True,
        max_batches=max_batches,
    ):
        images += len(inputs)
    return time.perf_counter() - started, images


def step_time(image_size: int, steps: int) -> float:
    """Median seconds of one ResNet-18 (102 classes) fwd+bwd+SGD step, batch 64, CPU."""
    import torch
    from torch import nn

    from trainables.config import ModelConfig
    from trainables.models import build_model

    torch.manual_seed(0)
    model = build_model(ModelConfig(name="resnet18"), 102, 3)
    optimizer = torch.optim.SGD(model.parameters(), lr=0.001, momentum=0.9)
    inputs = torch.randn(BATCH, 3, image_size, image_size)
    targets = torch.randint(0, 102, (BATCH,))
    times = []
    for _ in range(steps + 1):  # the first is warm-up (--quick: only that one)
        started = time.perf_counter()
        loss = nn.functional.cross_entropy(model(inputs), targets)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        times.append(time.perf_counter() - started)
    return common.median(times[1:] or times)


def device_feed(image_size: int, device: str, root: str, steps: int, warmup: int,
                reps: int) -> dict[str, Any]:
    """ResNet-18 training images/s on `device` fed by the cached pipeline vs by one batch
    already there, interleaved; the pipeline, model and step are set up as a trial's."""
    import torch

    from pruning.latency import precision_name
    from trainables.batches import iterate_batches
    from trainables.config import DataConfig, ModelConfig, TrainConfig
    from trainables.datasets import batch_augment
    from trainables.models import build_model
    from trainables.runtime import resolve_runtime

    runtime = resolve_runtime(TrainConfig(device=device))  # amp, channels_last, cudnn settings
    splits = common.load_flowers(image_size, root)
    augment = batch_augment(DataConfig(**common.flowers_data(image_size, root)), splits,
                            train=True, channels_last=runtime.channels_last)
    torch.manual_seed(0)
    model = build_model(ModelConfig(name="resnet18"), 102, 3).to(runtime.device)
    if runtime.channels_last:
        model.to(memory_format=torch.channels_last)
    optimizer = torch.optim.SGD(model.parameters(), lr=0.001, momentum=0.9)
    scaler = torch.amp.GradScaler(runtime.device.type) if runtime.needs_grad_scaler else None

    def batches() -> Iterator[tuple[Any, Any]]:
        for epoch in itertools.count():  # as many epochs as the steps need
            yield from iterate_batches(
                splits.train_images, splits.train_labels, BATCH, shuffle=True,
                generator=torch.Generator().manual_seed(epoch), device=runtime.device,
                augment=augment, drop_last=True)

    def train(source: Iterator[tuple[Any, Any]], count: int) -> float:
        """Images/s of `count` training steps on batches from `source`."""
        runtime.synchronize()
        started = time.perf_counter()
        for inputs, targets in itertools.islice(source, count):
            common.train_step(model, optimizer, scaler, runtime, inputs, targets)
        runtime.synchronize()  # the host runs ahead of the GPU: the steps are done only here
        return count * BATCH / (time.perf_counter() - started)

    pipeline = batches()
    synthetic = itertools.repeat(next(pipeline))
    train(pipeline, warmup)
    train(synthetic, warmup)
    rates: dict[str, list[float]] = {"cached_pipeline": [], "synthetic_on_device": []}
    for _ in range(reps):
        rates["cached_pipeline"].append(train(pipeline, steps))
        rates["synthetic_on_device"].append(train(synthetic, steps))
    return {
        "device": str(runtime.device),
        "image_size": image_size,
        "precision": precision_name(runtime.amp_dtype) if runtime.amp_dtype else "fp32",
        "channels_last": runtime.channels_last,
        "steps": steps,
        "warmup_steps": warmup,
        "reps": reps,
        "images_per_s": rates,
        "pipeline_vs_synthetic": common.median(rates["cached_pipeline"])
        / common.median(rates["synthetic_on_device"]),
    }


def measure(image_size: int, args: argparse.Namespace) -> dict[str, Any]:
    from trainables.config import DataConfig
    from trainables.datasets import batch_augment

    splits = common.load_flowers(image_size, args.data_root)
    augment = batch_augment(
        DataConfig(**common.flowers_data(image_size, args.data_root)), splits, train=True
    )
    loader = per_sample_loader(image_size, args.workers, args.data_root)
    time_loader(loader)  # first epoch: worker start-up, page cache
    time_cached(splits, augment, -1, args.max_batches)  # warm-up
    per_sample, cached = [], []
    for rep in range(args.reps):
        seconds, images = time_loader(loader)
        per_sample.append(images / seconds)
        seconds, images = time_cached(splits, augment, rep, args.max_batches)
        cached.append(images / seconds)
    del loader
    step_s = step_time(image_size, args.steps)
    cached_batch_s = BATCH / common.median(cached)
    per_sample_batch_s = BATCH / common.median(per_sample)
    return {
        "images_per_s": {
            "per_sample_dataloader": common.median(per_sample),
            "cached_batch_augment": common.median(cached),
        },
        "speedup_cached_vs_per_sample": common.median(cached) / common.median(per_sample),
        "pipeline_s_per_batch": {
            "per_sample_dataloader": per_sample_batch_s,
            "cached_batch_augment": cached_batch_s,
        },
        "resnet18_step_s": step_s,
        "pipeline_share_of_step": cached_batch_s / (cached_batch_s + step_s),
        "per_sample_share_of_step": per_sample_batch_s / (per_sample_batch_s + step_s),
        "samples_images_per_s": {"per_sample_dataloader": per_sample, "cached": cached},
        "store_size": int(splits.train_images.shape[-1]),
    }


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="seconds-long smoke run")
    parser.add_argument("--sizes", type=int, nargs="+", default=[112, 224])
    parser.add_argument("--reps", type=int, default=3)
    parser.add_argument("--steps", type=int, default=3)
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--max-batches", type=int, default=None)
    parser.add_argument("--feed-size", type=int, default=224,
                        help="image size of the device figure (default 224; --quick: 112)")
    parser.add_argument("--feed-steps", type=int, default=None,
                        help="timed steps per side and repetition of the device figure "
                        f"(default: {FEED_STEPS['cuda']} on cuda, {FEED_STEPS['cpu']} on the cpu)")
    common.add_device(parser)
    common.add_data_root(parser)
    args = parser.parse_args(argv)
    args.device = common.default_device(args.device)
    if args.quick:
        args.sizes, args.reps, args.steps, args.max_batches = [112], 1, 0, 2
        args.feed_size = 112
    import torch

    torch.set_num_threads(args.threads)
    started = time.perf_counter()
    sizes = {str(size): measure(size, args) for size in args.sizes}
    feed = device_feed(
        args.feed_size, args.device, args.data_root,
        args.feed_steps or FEED_STEPS[args.device], FEED_WARMUP[args.device],
        FEED_REPS[args.device],
    )
    on_gpu = feed["device"].startswith("cuda")
    ratio = feed["pipeline_vs_synthetic"]
    bars = []
    for size, figures in sizes.items():
        share = figures["pipeline_share_of_step"]
        bars.append(
            common.bar(
                f"cached pipeline share of a ResNet-18 step, {size} px (CPU)",
                share,
                "< 5%",
                share < 0.05,
                "fraction",
            )
        )
    bars.append(
        common.bar(
            f"GPU: cached pipeline images/s vs synthetic-on-GPU, {args.feed_size} px",
            ratio if on_gpu else None,  # the CPU's ratio is a smoke run's, in device_feed
            ">= 90%",
            ratio >= 0.9 if on_gpu else None,
            "fraction",
        )
    )
    common.emit(
        {
            "benchmark": "input_pipeline",
            "quick": args.quick,
            "setup": {
                "batch_size": BATCH,
                "torch_threads": args.threads,
                "dataloader_workers": args.workers,
                "reps": args.reps,
                "source": "Flowers-102 (shorter side 128 px), train split",
                "data_root": args.data_root,
            },
            "sizes": sizes,
            "device_feed": feed,
            **({} if on_gpu else {"gpu": "pending (no CUDA device: device_feed ran on the CPU)"}),
            "bars": bars,
        },
        started,
    )


if __name__ == "__main__":
    main()
