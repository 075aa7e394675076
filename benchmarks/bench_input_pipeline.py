"""Input pipeline on the shared Flowers-102: the original study's per-sample DataLoader vs
prunetune's decode-once uint8 cache + batched augmentation, at 112 and 224 px.

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

    python benchmarks/bench_input_pipeline.py [--quick]
"""

from __future__ import annotations

import argparse
import time
from typing import Any

import common

BATCH = 64


def per_sample_loader(image_size: int, workers: int) -> Any:
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
    dataset = datasets.Flowers102(
        common.FLOWERS_ROOT, split="train", transform=transform, download=False
    )
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


def measure(image_size: int, args: argparse.Namespace) -> dict[str, Any]:
    from trainables.config import DataConfig
    from trainables.datasets import batch_augment

    splits = common.load_flowers(image_size)
    augment = batch_augment(
        DataConfig(**common.flowers_data(image_size)), splits, train=True
    )
    loader = per_sample_loader(image_size, args.workers)
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
    args = parser.parse_args(argv)
    if args.quick:
        args.sizes, args.reps, args.steps, args.max_batches = [112], 1, 0, 2
    import torch

    torch.set_num_threads(args.threads)
    started = time.perf_counter()
    sizes = {str(size): measure(size, args) for size in args.sizes}
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
            "GPU: cached pipeline images/s vs synthetic-on-GPU, 224 px",
            None,
            ">= 90%",
            None,
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
                "source": "shared Flowers-102 (shorter side 128 px), train split",
            },
            "sizes": sizes,
            "gpu": "pending (no CUDA device on this machine)",
            "bars": bars,
        },
        started,
    )


if __name__ == "__main__":
    main()
