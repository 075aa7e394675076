"""GPU latency of ResNet-18 dense, channel-pruned, 90% unstructured and 2:4 sparse.

The models are `bench_latency.py`'s (torchvision's ResNet-18 through prunetune's registry, 102
classes, fresh initialisation; 50% and 75% of the channels removed by Torch-Pruning, L1,
uniform; 90% global-magnitude unstructured), on `--device` (default cuda when torch has a
GPU), timed as a trial on that GPU times them: `pruning.latency_ms` under autocast to the
trial's amp dtype (bf16 from capability 8.0, else fp16), channels_last, CUDA events, in
interleaved rounds (dense, 50%, 75%, 90%, dense, ...), figures the median of the round
medians and ratios the median of the within-round ratios.

2:4: the dense model with a 2:4 magnitude mask (`pruning.nm_mask`) in every Conv2d/Linear
whose rows allow it, timed by `pruning.nm_latency_ms` in the amp dtype: as it is (cuDNN), with
the 2:4 layers as dense im2col products, and with those layers on the semi-structured sparse
kernels (`torch.sparse.to_sparse_semi_structured`); ratios are sparse over each of the two.

On the CPU the same code runs at a tiny size as a smoke test (2:4 is dense there: no kernel)
and the GPU figures are pending.

    python benchmarks/bench_gpu_latency.py [--quick] [--device cuda|cpu]
"""

from __future__ import annotations

import argparse
import copy
import time
from typing import Any

import common
from bench_latency import LABELS, costs, four_models, interleaved_latency, resnet18

NM_LABEL = "2:4 (magnitude; semi-structured sparse kernels)"
GPU_BATCHES = (1, 64, 256)


def nm_model() -> tuple[Any, dict[str, str]]:
    """The dense model with a 2:4 magnitude mask applied, and the layers the mask skipped."""
    import pruning

    model = resnet18().eval()
    full = pruning.full_mask(model)
    masked = pruning.nm_mask(pruning.score(model, full, "magnitude"), full, "2:4")
    pruning.apply_mask(model, masked.mask)
    return model, masked.skipped


def nm_rounds(model: Any, image_size: int, args: argparse.Namespace, dtype: Any) -> dict:
    """`rounds` calls of `nm_latency_ms` per batch size: medians and within-call ratios."""
    import pruning

    figures: dict[str, Any] = {}
    for size in args.batches:
        settings = pruning.LatencySettings(
            batch_sizes=(size,), warmup=args.warmup, min_repeats=args.min_repeats,
            max_repeats=args.max_repeats, budget_s=args.budget)
        calls = [pruning.nm_latency_ms(model, (3, image_size, image_size), settings, dtype)
                 for _ in range(args.rounds)]
        last = calls[-1]
        entry: dict[str, Any] = {"measured_as": last.measured_as,
                                 "converted_layers": len(last.converted),
                                 "skipped": last.skipped}
        parts = {"dense": [c.dense for c in calls]}
        if last.sparse is not None:
            parts["dense_im2col"] = [c.dense_im2col for c in calls]
            parts["sparse"] = [c.sparse for c in calls]
        medians = {part: [r.median_ms[size] for r in results] for part, results in parts.items()}
        for part, values in medians.items():
            entry[f"{part}_ms"] = common.median(values)
        if "sparse" in medians:
            for base in ("dense", "dense_im2col"):
                entry[f"sparse_vs_{base}"] = common.median(
                    s / d for s, d in zip(medians["sparse"], medians[base], strict=True))
        entry["precision"] = last.dense.precision
        figures[f"b{size}"] = entry
    return figures


def markdown(figures: dict[str, Any], nm: dict[str, Any], args: argparse.Namespace,
             gpu: str, precision: str, on_gpu: bool) -> str:
    if not on_gpu:
        return ("Pending: no CUDA device here (the CPU ran the same code at 32 px as a smoke "
                "test). `benchmarks/device_run.sh` runs it on a lent GPU machine.")
    keys = [f"b{size}" for size in args.batches]
    head = " | ".join(f"batch {key[1:]} ms (x dense)" for key in keys)
    lines = [
        f"ResNet-18, {args.image_size} px, {gpu}, {precision} autocast, channels_last; "
        "MACs per image.",
        "",
        f"| model | params | nonzero params | MACs | {head} |",
        "| --- | --- | --- | --- |" + " --- |" * len(keys),
    ]
    for name, f in figures.items():
        cells = " | ".join(
            f"{f['latency'][key]['median_ms']:.4g} ({f['latency_vs_dense'][key]:.2f})"
            for key in keys)
        lines.append(f"| {LABELS[name]} | {f['params_total']:,} | {f['params_nonzero']:,} | "
                     f"{f['flops']:,} | {cells} |")
    lines += ["", f"{NM_LABEL}, in {nm[keys[0]]['precision']}: "
              f"{nm[keys[0]]['measured_as']}.", "",
              "| batch | as it is (ms) | 2:4 layers as dense im2col (ms) | 2:4 sparse (ms) | "
              "sparse / as it is | sparse / im2col |",
              "| --- | --- | --- | --- | --- | --- |"]
    for key in keys:
        e = nm[key]
        if "sparse_ms" not in e:
            lines.append(f"| {key[1:]} | {e['dense_ms']:.4g} | n/a | n/a | n/a | n/a |")
            continue
        lines.append(f"| {key[1:]} | {e['dense_ms']:.4g} | {e['dense_im2col_ms']:.4g} | "
                     f"{e['sparse_ms']:.4g} | {e['sparse_vs_dense']:.2f} | "
                     f"{e['sparse_vs_dense_im2col']:.2f} |")
    lines += ["", f"ms: median of {args.rounds} interleaved rounds' medians; (x dense) and the "
              "2:4 ratios: medians of the within-round ratios. The 90% unstructured model has "
              "no sparse kernel on the GPU either: it runs as the dense network it is."]
    return "\n".join(lines)


def bars(figures: dict[str, Any], nm: dict[str, Any], args: argparse.Namespace,
         on_gpu: bool) -> list[dict[str, Any]]:
    """The GPU ratios at the GPU's batch sizes; pending (None) without a GPU."""
    sizes = args.batches if on_gpu else GPU_BATCHES
    rows = []
    for name in ("channels_50", "channels_75"):
        for size in sizes:
            ratio = figures[name]["latency_vs_dense"][f"b{size}"] if on_gpu else None
            rows.append(common.bar(f"GPU: {LABELS[name]} / dense latency, batch {size}",
                                   ratio, "report", None, "x"))
    for size in sizes:
        ratio = nm[f"b{size}"].get("sparse_vs_dense") if on_gpu else None
        rows.append(common.bar(f"GPU: 2:4 sparse / dense latency, batch {size}",
                               ratio, "report", None, "x"))
    return rows


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="seconds-long smoke run")
    parser.add_argument("--image-size", type=int, default=224)
    parser.add_argument("--batches", type=int, nargs="+", default=list(GPU_BATCHES))
    parser.add_argument("--rounds", type=int, default=5)
    parser.add_argument("--warmup", type=int, default=5)
    parser.add_argument("--min-repeats", type=int, default=10)
    parser.add_argument("--max-repeats", type=int, default=100)
    parser.add_argument("--budget", type=float, default=0.3, help="seconds per model and round")
    common.add_device(parser)
    args = parser.parse_args(argv)
    args.device = common.default_device(args.device)
    on_gpu = args.device == "cuda"
    if args.quick or not on_gpu:
        args.image_size, args.batches, args.rounds = 32, [1, 2], 1
        args.warmup, args.min_repeats, args.max_repeats, args.budget = 1, 1, 1, 0.0
    args.threads = None  # a GPU's passes do not depend on them; the CPU smoke keeps torch's
    import torch

    from pruning.latency import precision_name
    from trainables.config import TrainConfig
    from trainables.runtime import resolve_runtime

    started = time.perf_counter()
    runtime = resolve_runtime(TrainConfig(device=args.device))  # amp dtype, cuDNN settings
    amp_dtype = runtime.amp_dtype
    models = four_models()
    figures = {name: costs(model, args.image_size) for name, model in models.items()}
    on_device = {}
    for name, model in models.items():
        model = copy.deepcopy(model).to(runtime.device)
        if runtime.channels_last:
            model.to(memory_format=torch.channels_last)
        on_device[name] = model
    latency = interleaved_latency(on_device, args.image_size, args, amp_dtype, args.warmup)
    for name in models:
        figures[name]["latency"] = latency[name]
        figures[name]["latency_vs_dense"] = {
            key: value["vs_dense"] for key, value in latency[name].items()}
    sparse_24, skipped = nm_model()
    sparse_24 = sparse_24.to(runtime.device)
    if runtime.channels_last:
        sparse_24.to(memory_format=torch.channels_last)
    nm_dtype = amp_dtype if amp_dtype in (torch.float16, torch.bfloat16) else torch.float16
    try:
        nm = nm_rounds(sparse_24, args.image_size, args, nm_dtype)
    except Exception as error:  # the 2:4 kernels are the newest part: keep the other figures
        nm = {f"b{size}": {"error": repr(error), "dense_ms": float("nan"),
                           "measured_as": "failed", "precision": precision_name(nm_dtype)}
              for size in args.batches}
    gpu = torch.cuda.get_device_name(runtime.device) if on_gpu else "cpu (smoke run)"
    precision = precision_name(amp_dtype) if amp_dtype is not None else "fp32"
    common.emit(
        {
            "benchmark": "gpu_latency",
            "quick": args.quick,
            "device": args.device,
            "gpu": gpu,
            "setup": {key: getattr(args, key) for key in (
                "image_size", "batches", "rounds", "warmup", "min_repeats", "max_repeats",
                "budget")} | {"precision": precision, "channels_last": runtime.channels_last,
                              "nm_mask_skipped": skipped},
            "models": figures,
            "nm_2_4": nm,
            **({} if on_gpu else {"gpu_pending": "no CUDA device: a CPU smoke run"}),
            "bars": bars(figures, nm, args, on_gpu),
            "markdown": markdown(figures, nm, args, gpu, precision, on_gpu),
        },
        started,
    )


if __name__ == "__main__":
    main()
