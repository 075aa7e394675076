"""GPU packing: aggregate training images/s of 1, 2 and 4 concurrent trials sharing one GPU
(`resources.gpu` 1, 0.5, 0.25), ResNet-18 (102 classes) on Flowers-102 at 112 px.

Each case is one sweep through `sweeps/run_sweep.py` with as many seeds as concurrent trials
and `max_concurrent_trials` equal to that number. A trial's throughput is the median of its
epochs' `images_per_s` after the first (warm-up) epoch; the aggregate is their sum (the trials
run side by side for the whole sweep). Without CUDA it prints `{"skipped": "no CUDA"}`.

    python benchmarks/bench_gpu_packing.py [--quick]
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path
from typing import Any

import common

CASES = ((1, 1.0), (2, 0.5), (4, 0.25))


def packing_run(args: argparse.Namespace, work: Path, trials: int, gpu: float) -> dict[str, Any]:
    spec = {
        "name": f"packing{trials}",
        "base": {
            "data": common.flowers_data(112),
            "model": {"name": "resnet18"},
            "train": {
                "epochs": args.epochs,
                "batch_size": 64,
                "lr": 0.001,
                "lr_schedule": "constant",
                "device": "cuda",
                "max_batches": args.max_batches,
                "max_eval_batches": 2,
            },
        },
        "grid": {"seed": list(range(trials))},
        "experiments": [{"label": "dense", "config": {"method": "dense"}}],
        "resources": {"cpu": 1, "gpu": gpu},
        "max_concurrent_trials": trials,
    }
    wall = common.run_sweep(common.write_sweep(work, spec), work / "out")
    per_trial = []
    for rows in common.result_rows(work / "out" / spec["name"]).values():
        rates = [row["images_per_s"] for row in rows if row.get("row_type") == "epoch"]
        per_trial.append(common.median(rates[1:] or rates))
    return {
        "gpu_per_trial": gpu,
        "trials": trials,
        "wall_s": wall,
        "images_per_s_per_trial": per_trial,
        "aggregate_images_per_s": sum(per_trial),
    }


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="seconds-long smoke run")
    parser.add_argument("--epochs", type=int, default=4)
    parser.add_argument("--max-batches", type=int, default=None)
    args = parser.parse_args(argv)
    if args.quick:
        args.epochs, args.max_batches = 2, 2
    started = time.perf_counter()
    import torch

    if not torch.cuda.is_available():
        common.emit(
            {
                "benchmark": "gpu_packing",
                "quick": args.quick,
                "skipped": "no CUDA",
                "bars": [
                    common.bar(
                        "aggregate images/s, 4 trials x 0.25 GPU vs 1 trial",
                        None,
                        "report (GPU pending)",
                        None,
                        "x",
                    )
                ],
            },
            started,
        )
        return
    with tempfile.TemporaryDirectory(prefix="bench-packing-") as tmp:
        cases = {str(n): packing_run(args, Path(tmp), n, gpu) for n, gpu in CASES}
    base = cases["1"]["aggregate_images_per_s"]
    gains = {n: case["aggregate_images_per_s"] / base for n, case in cases.items()}
    common.emit(
        {
            "benchmark": "gpu_packing",
            "quick": args.quick,
            "cases": cases,
            "aggregate_vs_one_trial": gains,
            "bars": [
                common.bar(
                    f"aggregate images/s, {n} trials x {gpu:g} GPU vs 1 trial",
                    gains[str(n)],
                    "report",
                    None,
                    "x",
                )
                for n, gpu in CASES[1:]
            ],
        },
        started,
    )


if __name__ == "__main__":
    main()
