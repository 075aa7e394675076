"""Real efficiency: CPU latency of ResNet-18 dense, channel-pruned and unstructured-sparse, and
what measuring latency costs a round.

Four ResNet-18s (torchvision's architecture through prunetune's registry, 102 classes, fresh
initialisation: latency does not depend on trained values), 224 px, batch 1 and 64:

* dense;
* 50% and 75% channel-pruned: Torch-Pruning via ``pruning.prune_channels``, L1 filter norm,
  uniform allocation (every channel group keeps ``c - round(ratio * c)`` of its channels);
* 90% unstructured: global magnitude mask applied as zeros. There is no sparse kernel for it on
  the CPU, so it runs as the dense network it still is; its figure is reported as measured.

Each model's latency is ``pruning.latency_ms`` (warm-up, then timed passes under a budget);
the four are measured in interleaved rounds (dense, 50%, 75%, 90%, dense, ...) so a change in
the shared machine's load hits all of them; a figure is the median of a model's round medians,
its ratio to dense the median of the within-round ratios. FLOPs (multiply-accumulates),
effective FLOPs (products by nonzero weights only) and parameters come from ``pruning.flops``
/ ``flops_effective`` and the models themselves.

Measuring cost: the wall time of one ``latency_ms`` call at the default ``LatencySettings``
(threads 1, as a 1-CPU trial), for the quickstart's model (resnet18_cifar width 16 on digits)
and ResNet-18 at 112 px, beside a training step at batch 64 on the same model; for the
quickstart, its share of one quickstart round (epochs x steps per epoch of training steps).

    python benchmarks/bench_latency.py [--quick]
"""

from __future__ import annotations

import argparse
import copy
import math
import tempfile
import time
from typing import Any

import common

CLASSES = 102


def resnet18(width: int = 64, name: str = "resnet18", classes: int = CLASSES, channels: int = 3):
    import torch

    from trainables.config import ModelConfig
    from trainables.models import build_model

    torch.manual_seed(0)
    return build_model(ModelConfig(name=name, width=width), classes, channels)


def four_models() -> dict[str, Any]:
    import torch

    import pruning

    dense = resnet18().eval()
    models = {"dense": dense}
    example = torch.randn(1, 3, 64, 64)  # traces the graph; any accepted size will do
    for ratio in (0.5, 0.75):
        pruned = copy.deepcopy(dense)
        pruning.prune_channels(pruned, example, ratio=ratio, criterion="l1", allocation="uniform")
        models[f"channels_{round(100 * ratio)}"] = pruned
    sparse = copy.deepcopy(dense)
    full = pruning.full_mask(sparse)
    mask = pruning.prune_to_sparsity(pruning.score(sparse, full, "magnitude"), full, 0.9)
    pruning.apply_mask(sparse, mask)
    models["unstructured_90"] = sparse
    return models


def costs(model: Any, image_size: int) -> dict[str, Any]:
    import pruning

    shape = (1, 3, image_size, image_size)
    return {
        "flops": pruning.flops(model, shape),
        "flops_effective": pruning.flops_effective(model, shape),
        "params_total": sum(p.numel() for p in model.parameters()),
        "params_nonzero": sum(int(p.count_nonzero()) for p in model.parameters()),
    }


def interleaved_latency(models: dict[str, Any], image_size: int, args: argparse.Namespace,
                        amp_dtype: Any = None, warmup: int = 1):
    """Per batch size, `rounds` rounds that each measure every model once, in turn (under
    autocast to `amp_dtype` when given, as a trial on a GPU measures).

    A model's figure is the median of its round medians; its ratio to dense is the median over
    rounds of the ratio within a round (paired), so a burst of load from another user of the
    machine spoils one round's pair, not one model's whole figure.
    """
    import pruning

    figures = {name: {} for name in models}
    for size in args.batches:
        settings = pruning.LatencySettings(
            batch_sizes=(size,),
            warmup=warmup,
            min_repeats=args.min_repeats,
            max_repeats=args.max_repeats,
            budget_s=args.budget,
            threads=args.threads,
        )
        rounds = {name: [] for name in models}
        for _ in range(args.rounds):
            for name, model in models.items():
                result = pruning.latency_ms(model, (3, image_size, image_size), settings,
                                            amp_dtype=amp_dtype)
                rounds[name].append(result.samples_ms[size])
        for name, per_round in rounds.items():
            medians = [common.median(times) for times in per_round]
            dense = [common.median(times) for times in rounds["dense"]]
            figures[name][f"b{size}"] = {
                "median_ms": common.median(medians),
                "vs_dense": common.median(m / d for m, d in zip(medians, dense, strict=True)),
                "round_medians_ms": medians,
                "samples_ms": per_round,
            }
    return figures


def train_step_s(model: Any, inputs: Any, targets: Any, reps: int) -> float:
    import torch
    from torch.nn import functional

    optimizer = torch.optim.SGD(model.parameters(), lr=0.01, momentum=0.9)
    model.train()
    times = []
    for _ in range(reps + 1):  # the first is warm-up
        started = time.perf_counter()
        loss = functional.cross_entropy(model(inputs), targets)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        times.append(time.perf_counter() - started)
    return common.median(times[1:])


def measuring_cost(model: Any, shape: tuple[int, ...], classes: int, reps: int) -> dict[str, Any]:
    import torch

    import pruning

    settings = pruning.LatencySettings(threads=1)
    walls, repeats = [], []
    for _ in range(reps):
        started = time.perf_counter()
        result = pruning.latency_ms(model, shape, settings)
        walls.append(time.perf_counter() - started)
        repeats.append(result.repeats)
    inputs = torch.randn(64, *shape)
    targets = torch.randint(0, classes, (64,))
    step = train_step_s(copy.deepcopy(model), inputs, targets, reps)
    return {
        "settings": {k: getattr(settings, k) for k in settings.__dataclass_fields__},
        "measure_s": common.median(walls),
        "measure_samples_s": walls,
        "repeats": repeats,
        "train_step_b64_s": step,
        "measure_in_train_steps": common.median(walls) / step,
    }


def quickstart() -> tuple[dict[str, Any], dict[str, Any]]:
    """The quickstart's model and data shape; the training steps of one of its rounds
    (epochs x ceil(train images / batch size))."""
    import yaml

    from trainables.config import DataConfig
    from trainables.datasets import load_dataset

    base = yaml.safe_load((common.REPO / "sweeps" / "quickstart.yaml").read_text())["base"]
    with tempfile.TemporaryDirectory() as root:
        splits = load_dataset(DataConfig(**{**base["data"], "root": root}))
    train = len(splits.train_labels)
    batch, epochs = base["train"]["batch_size"], base["train"]["epochs"]
    shape, classes = list(splits.test_images.shape[1:]), splits.num_classes
    return {"model": base["model"], "image_shape": shape, "classes": classes}, {
        "train_images": train, "batch_size": batch, "epochs": epochs,
        "steps": epochs * math.ceil(train / batch),
    }  # fmt: skip


LABELS = {
    "dense": "dense",
    "channels_50": "50% channels removed (L1, uniform)",
    "channels_75": "75% channels removed (L1, uniform)",
    "unstructured_90": "90% unstructured (global magnitude; runs as dense)",
}


def markdown(figures: dict[str, Any], cost: dict[str, Any], args: argparse.Namespace) -> str:
    """The per-model table and the measuring-cost table, for benchmarks/README.md."""
    keys = [f"b{size}" for size in args.batches]
    head = " | ".join(f"batch {key[1:]} ms (x dense)" for key in keys)
    lines = [
        f"ResNet-18, {args.image_size} px, CPU, {args.threads} thread(s); MACs per image.",
        "",
        f"| model | params | nonzero params | MACs | MACs by nonzero weights | {head} |",
        "| --- | --- | --- | --- | --- |" + " --- |" * len(keys),
    ]
    for name, f in figures.items():
        cells = " | ".join(
            f"{f['latency'][key]['median_ms']:.4g} ({f['latency_vs_dense'][key]:.2f})"
            for key in keys
        )
        lines.append(
            f"| {LABELS[name]} | {f['params_total']:,} | {f['params_nonzero']:,} | "
            f"{f['flops']:,} | {f['flops_effective']:,} | {cells} |"
        )
    lines += [
        "",
        f"ms: median of {args.rounds} interleaved rounds' medians; (x dense): median of the "
        "within-round ratios, so it need not equal the ratio of the two medians. The 90% "
        "unstructured model has no CPU sparse kernel: it is measured as the dense network it is.",
        "",
        "Measuring latency at the default `LatencySettings` (1 thread), per call:",
        "",
        "| model | measuring (s) | training step, batch 64 (s) | in training steps |",
        "| --- | --- | --- | --- |",
    ]
    for name, c in cost.items():
        lines.append(
            f"| {name} | {c['measure_s']:.3g} | {c['train_step_b64_s']:.3g} | "
            f"{c['measure_in_train_steps']:.2f} |"
        )
    steps = cost["quickstart"]["round_steps"]
    lines += [
        "",
        f"A quickstart round trains {steps['steps']} steps ({steps['epochs']} epochs x "
        f"ceil({steps['train_images']} / {steps['batch_size']})): measuring is "
        f"{100 * cost['quickstart']['share_of_round']:.2f}% of its training time.",
    ]
    return "\n".join(lines)


def measuring_costs(args: argparse.Namespace) -> dict[str, Any]:
    """What one latency_ms call at the defaults costs: the quickstart's model, ResNet-18."""
    setup, steps = quickstart()
    shape, classes = tuple(setup["image_shape"]), setup["classes"]
    model = resnet18(setup["model"]["width"], setup["model"]["name"], classes, shape[0])
    small = 32 if args.quick else 112
    cost = {
        "quickstart": measuring_cost(model, shape, classes, args.cost_reps),
        f"resnet18_{small}px": measuring_cost(
            resnet18(), (3, small, small), CLASSES, args.cost_reps
        ),
    }
    cost["quickstart"]["round_steps"] = {**setup, **steps}
    cost["quickstart"]["share_of_round"] = cost["quickstart"]["measure_s"] / (
        steps["steps"] * cost["quickstart"]["train_step_b64_s"]
    )
    return cost


def bars(figures: dict[str, Any], share_of_round: float, args: argparse.Namespace) -> list:
    rows = []
    for name, target in (("channels_50", 0.6), ("channels_75", None), ("unstructured_90", None)):
        for size in args.batches:
            ratio = figures[name]["latency_vs_dense"][f"b{size}"]
            label = f"{LABELS[name]} / dense latency, ResNet-18 {args.image_size} px, batch {size}"
            met = None if target is None else ratio <= target
            rows.append(common.bar(label, ratio, f"<= {target}" if target else "report", met, "x"))
    rows.append(
        common.bar(
            "latency measurement at default settings, share of a quickstart round",
            share_of_round,
            "< 3%",
            share_of_round < 0.03,
            "fraction",
        )
    )
    return rows


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="seconds-long smoke run")
    parser.add_argument("--image-size", type=int, default=224)
    parser.add_argument("--batches", type=int, nargs="+", default=[1, 64])
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--min-repeats", type=int, default=2)
    parser.add_argument("--max-repeats", type=int, default=30)
    parser.add_argument("--budget", type=float, default=0.5, help="seconds per model and round")
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--cost-reps", type=int, default=3)
    args = parser.parse_args(argv)
    if args.quick:
        args.image_size, args.batches, args.rounds = 32, [1, 2], 1
        args.min_repeats, args.max_repeats, args.budget, args.cost_reps = 1, 1, 0.0, 1
    import torch

    torch.set_num_threads(args.threads)
    started = time.perf_counter()
    models = four_models()
    figures = {name: costs(model, args.image_size) for name, model in models.items()}
    latency = interleaved_latency(models, args.image_size, args)
    for name in models:
        figures[name]["latency"] = latency[name]
        figures[name]["latency_vs_dense"] = {
            key: value["vs_dense"] for key, value in latency[name].items()
        }

    cost = measuring_costs(args)
    common.emit(
        {
            "benchmark": "latency",
            "quick": args.quick,
            "setup": {
                "model": f"resnet18 ({CLASSES} classes), fresh initialisation",
                **{key: getattr(args, key) for key in ("image_size", "batches", "rounds")},
                **{key: getattr(args, key) for key in ("threads", "min_repeats", "max_repeats")},
                "budget_s": args.budget,
                "unstructured_note": "no CPU sparse kernel: the 90% model runs as dense",
            },
            "models": figures,
            "measuring_cost": cost,
            "bars": bars(figures, cost["quickstart"]["share_of_round"], args),
            "markdown": markdown(figures, cost, args),
        },
        started,
    )


if __name__ == "__main__":
    main()
