"""Dense vs IMP accuracy on scikit-learn digits, over seeds; prints one JSON object.

One iterative-IMP trial per seed: its round 0 is the dense model, its last round is the IMP
model at `--sparsity` (the per-round rate is chosen so that `--rounds` rounds land on it exactly:
rate = 1 - (1 - sparsity) ** (1 / rounds)). Seeds run in parallel processes, one torch thread
each (on a small shared CPU more threads per model are slower, not faster).

    python benchmarks/digits_accuracy.py            # the measurement (minutes)
    python benchmarks/digits_accuracy.py --quick    # a seconds-long smoke run
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import tempfile
import time
from concurrent.futures import ProcessPoolExecutor
from typing import Any


def trial_config(args: argparse.Namespace, seed: int) -> dict[str, Any]:
    rate = 1.0 - (1.0 - args.sparsity) ** (1.0 / args.rounds)
    return {
        "method": "imp",
        "seed": seed,
        "data": {"name": "digits", "root": args.data_root},
        "model": {"name": "resnet18_cifar", "width": args.width},
        "train": {
            "epochs": args.epochs,
            "batch_size": args.batch_size,
            "lr": args.lr,
            "lr_schedule": "cosine",
            "max_batches": args.max_batches,
            "device": "cpu",
        },
        "imp": {
            "schedule": "iterative",
            "rounds": args.rounds,
            "rate": rate,
            "rewind": args.rewind,
        },
    }


def run_seed(args: argparse.Namespace, seed: int) -> list[dict[str, Any]]:
    import torch

    from trainables.reporting import DirectoryReporter
    from trainables.resolve import parse_trial_config
    from trainables.trial import run_trial

    torch.set_num_threads(1)
    with tempfile.TemporaryDirectory(prefix="digits-bench-") as directory:
        reporter = DirectoryReporter(directory)
        run_trial(parse_trial_config(trial_config(args, seed)), reporter)
    return [row for row in reporter.rows if row["row_type"] == "round"]


def summary(values: list[float]) -> dict[str, Any]:
    return {
        "mean": statistics.fmean(values),
        "std": statistics.stdev(values) if len(values) > 1 else 0.0,
        "per_seed": values,
    }


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="tiny smoke run (1 seed, seconds)")
    parser.add_argument("--seeds", type=int, default=3)
    parser.add_argument("--epochs", type=int, default=15)
    parser.add_argument("--width", type=int, default=16)
    parser.add_argument("--batch-size", type=int, default=64)
    parser.add_argument("--lr", type=float, default=0.1)
    parser.add_argument("--sparsity", type=float, default=0.8)
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--rewind", default="epoch:1")
    parser.add_argument("--max-batches", type=int, default=None)
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--data-root", default=tempfile.gettempdir())
    args = parser.parse_args(argv)
    if args.quick:
        args.seeds, args.epochs, args.width, args.max_batches = 1, 2, 4, 3

    started = time.perf_counter()
    seeds = list(range(args.seeds))
    with ProcessPoolExecutor(max_workers=min(args.workers, len(seeds))) as pool:
        per_seed = list(pool.map(run_seed, [args] * len(seeds), seeds))

    dense = [rows[0]["test_acc"] for rows in per_seed]
    imp = [rows[-1]["test_acc"] for rows in per_seed]
    result = {
        "dataset": "digits",
        "recipe": trial_config(args, seed=0) | {"seed": seeds},
        "quick": args.quick,
        "imp_sparsity": [rows[-1]["sparsity"] for rows in per_seed],
        "dense_test_acc": summary(dense),
        "imp_test_acc": summary(imp),
        "imp_minus_dense_points": 100 * (statistics.fmean(imp) - statistics.fmean(dense)),
        "per_round_test_acc": [[row["test_acc"] for row in rows] for rows in per_seed],
        "diverged": any(row["status"] != "ok" for rows in per_seed for row in rows),
        "wall_s": time.perf_counter() - started,
        "requirement": {
            "dense_at_least_95": statistics.fmean(dense) >= 0.95,
            "imp_within_2_points": statistics.fmean(imp) >= statistics.fmean(dense) - 0.02,
        },
    }
    json.dump(result, sys.stdout)
    sys.stdout.write("\n")


if __name__ == "__main__":
    main()
