"""Exported networks where they will run: onnxruntime latency of `prunetune export`'s ONNX files
beside torch, for dense, 50%-channels and 90%-unstructured ResNet-18 rounds, 224 px, CPU.

The rounds are real: two trials run in-process into an experiment directory laid out as Tune
lays it out (`channels`, 50% of the channels removed by L1 norm, and one-shot IMP to 90%), on
the synthetic stripes dataset at 224 px with one training batch per epoch (latency does not
depend on the trained values), each round recording its torch latency as every sweep does.
`load_round` + `export_round` then write each network as ONNX, as the CLI does. The dense
network is the channels trial's round 0.

Measured side by side in one run: `rounds` interleaved rounds (dense, 50%, 90%, dense, ...),
each timing every network in onnxruntime and in torch (`pruning.latency_ms`), one thread, as
a 1-CPU trial runs. A figure is the median of its round medians; a ratio the median of the
within-round ratios to dense onnxruntime. The bar: the 50%-channels ONNX network at <= 0.6x
the dense ONNX network's latency, at batch 1 and at batch 64.

    python benchmarks/bench_export.py [--quick]
"""

from __future__ import annotations

import argparse
import json
import tempfile
import time
from pathlib import Path
from typing import Any

import common

BAR = 0.6
NETWORKS = {  # label -> (trial, round)
    "dense": ("channels_s0_c0.5", 0),
    "50% channels removed": ("channels_s0_c0.5", 1),
    "90% unstructured": ("imp_s0_p0.9", 1),
}


def trial_config(args: argparse.Namespace, method: str, **section: Any) -> dict[str, Any]:
    return {
        "method": method,
        "seed": 0,
        "data": {"name": "synthetic", "root": "unused", "image_size": args.image_size},
        "model": {"name": "resnet18", "width": args.width},
        "train": {"epochs": 1, "batch_size": 8, "eval_batch_size": 32, "max_batches": 1,
                  "max_eval_batches": 1, "device": "cpu"},
        "measure": {"batch_sizes": args.batches},
        **section,
    }


def run_rounds(experiment: Path, args: argparse.Namespace) -> None:
    """The two trials, in Tune's directory layout (`<name>_<id>_<index>/params.json`)."""
    from trainables.reporting import DirectoryReporter
    from trainables.resolve import parse_trial_config
    from trainables.trial import run_trial

    trials = {
        "channels_s0_c0.5": trial_config(args, "channels", channels={
            "target": "channels", "channel_fraction": 0.5}),
        "imp_s0_p0.9": trial_config(args, "imp", imp={"schedule": "oneshot"},
                                    prune={"target_sparsity": 0.9}),
    }
    for index, (name, raw) in enumerate(trials.items()):
        trial_dir = experiment / f"{name}_00000_{index:05d}"
        trial_dir.mkdir(parents=True)
        (trial_dir / "params.json").write_text(json.dumps({"trial": raw}))
        run_trial(parse_trial_config(raw), DirectoryReporter(trial_dir), cpus=1)


def exported_networks(experiment: Path, out: Path) -> dict[str, dict[str, Any]]:
    from trainables.export import export_round, onnx_session
    from trainables.tickets import load_round

    networks = {}
    for label, (trial, round_number) in NETWORKS.items():
        model, info = load_round(experiment, trial, round_number)
        exported = export_round(model, info, "onnx", out / f"{trial}_r{round_number}.onnx")
        networks[label] = {
            "model": model, "info": info, "session": onnx_session(exported.path, threads=1),
            "file_mb": exported.file_bytes / 1e6, "zipped_mb": exported.zipped_bytes / 1e6,
            "params": info.row["params_total"], "macs": info.row["flops"],
            "recorded_torch_ms": {size: info.row[f"latency_ms_b{size}"]
                                  for size in _batches(info.row)},
        }
    return networks


def _batches(row: dict[str, Any]) -> list[int]:
    return sorted(int(k.removeprefix("latency_ms_b")) for k in row if k.startswith("latency_ms_b"))


def interleaved(networks: dict[str, dict[str, Any]], args: argparse.Namespace) -> dict:
    """Per batch size and runtime, each network's round medians (ms), measured in turn."""
    import pruning
    from trainables.export import onnx_latency_ms

    per_round: dict[str, dict[str, dict[int, list[float]]]] = {
        label: {"onnx": {}, "torch": {}} for label in networks}
    for size in args.batches:
        settings = pruning.LatencySettings(batch_sizes=(size,), warmup=args.warmup,
                                           min_repeats=args.min_repeats, max_repeats=30,
                                           budget_s=args.budget, threads=1)
        for _ in range(args.rounds):
            for label, net in networks.items():
                shape = net["info"].input_shape
                onnx_ms = onnx_latency_ms(net["session"], shape, settings)[size]
                torch_ms = pruning.latency_ms(net["model"], shape, settings).median_ms[size]
                per_round[label]["onnx"].setdefault(size, []).append(onnx_ms)
                per_round[label]["torch"].setdefault(size, []).append(torch_ms)
    return per_round


def figures(per_round: dict, args: argparse.Namespace) -> dict[str, dict[str, Any]]:
    dense = per_round["dense"]["onnx"]
    out: dict[str, dict[str, Any]] = {}
    for label, runtimes in per_round.items():
        out[label] = {}
        for runtime, by_size in runtimes.items():
            for size, medians in by_size.items():
                out[label][f"{runtime}_b{size}"] = {
                    "median_ms": common.median(medians),
                    "vs_dense_onnx": common.median(
                        m / d for m, d in zip(medians, dense[size], strict=True)),
                    "round_medians_ms": medians,
                }
    return out


def markdown(networks: dict, table: dict, args: argparse.Namespace) -> str:
    sizes = args.batches
    head = " | ".join(f"batch {s}: onnxruntime ms (x dense) | torch ms | torch, as recorded"
                      for s in sizes)
    lines = [
        f"ResNet-18 rounds exported by `prunetune export` as ONNX, {args.image_size} px, CPU, 1 "
        "thread; onnxruntime (all graph optimisations) beside torch eager, measured in "
        f"{args.rounds} interleaved rounds. (x dense): median within-round ratio to the dense "
        "network in onnxruntime.",
        "",
        f"| network | params left | MACs | ONNX file (zipped) | {head} |",
        "| --- | --- | --- | --- |" + " --- | --- | --- |" * len(sizes),
    ]
    for label, net in networks.items():
        cells = []
        for size in sizes:
            onnx_fig, torch_fig = table[label][f"onnx_b{size}"], table[label][f"torch_b{size}"]
            cells += [f"{onnx_fig['median_ms']:.4g} ({onnx_fig['vs_dense_onnx']:.2f})",
                      f"{torch_fig['median_ms']:.4g}", f"{net['recorded_torch_ms'][size]:.4g}"]
        lines.append(f"| {label} | {net['params']:,} | {net['macs']:,} | "
                     f"{net['file_mb']:.1f} MB ({net['zipped_mb']:.1f} MB) | "
                     + " | ".join(cells) + " |")
    lines += ["", "torch, as recorded: the latency the round itself measured during its trial "
              "(the trial's shipped measuring settings). The 90% unstructured network is dense "
              "tensors with exact zeros: neither runtime has a sparse kernel for it on the CPU, "
              "so it runs as the dense network it is; only zipping shrinks its file."]
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="tiny, seconds: checks it runs")
    args = parser.parse_args()
    started = time.perf_counter()
    args.image_size, args.width = (32, 8) if args.quick else (224, 64)
    args.batches = [1, 2] if args.quick else [1, 64]
    args.rounds, args.warmup, args.min_repeats, args.budget = (
        (1, 1, 1, 0.0) if args.quick else (3, 2, 5, 1.0))
    with tempfile.TemporaryDirectory() as root:
        experiment = Path(root) / "export_bench"
        run_rounds(experiment, args)
        networks = exported_networks(experiment, Path(root) / "exports")
        table = figures(interleaved(networks, args), args)
    channels = table["50% channels removed"]
    bars = [
        common.bar(f"50% channels ONNX / dense ONNX latency, ResNet-18 {args.image_size} px, "
                   f"batch {size}", channels[f"onnx_b{size}"]["vs_dense_onnx"], f"<= {BAR} x",
                   channels[f"onnx_b{size}"]["vs_dense_onnx"] <= BAR, "x")
        for size in args.batches
    ]
    bars += [
        common.bar(f"90% unstructured ONNX / dense ONNX latency, batch {size}",
                   table["90% unstructured"][f"onnx_b{size}"]["vs_dense_onnx"], "report",
                   None, "x")
        for size in args.batches
    ]
    summary = {label: {k: v for k, v in net.items() if k not in ("model", "info", "session")}
               for label, net in networks.items()}
    common.emit({"benchmark": "export", "quick": args.quick, "bars": bars,
                 "networks": summary, "figures": table, "setup": dict(vars(args)),
                 "markdown": markdown(networks, table, args)}, started)


if __name__ == "__main__":
    main()
