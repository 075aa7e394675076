"""Sweep efficiency on the CPU: concurrency and dense-model sharing.

1. A grid of small dense trials (digits, resnet18_cifar) run through `sweeps/run_sweep.py` with
   `max_concurrent_trials` 1 and then 2 (`resources.cpu: 1`, so torch uses one thread per
   trial): the sweep's wall time relative to the sum of its trials' own time (their round rows'
   `round_time_s`). 1.0 would be a serial sweep with no overhead; 0.5 two perfectly packed
   trials on two cores.
2. A dense + one-shot IMP grid (4 targets x 3 seeds) with `--smoke`: how many dense trainings
   it performs. Each seed's dense model should be trained once and reused: 3, not 12 (or 15).
   Counted as round-0 rows without `reused_dense: true`, and as dense_cache entries.

    python benchmarks/bench_sweep_efficiency.py [--quick]
"""

from __future__ import annotations

import argparse
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import common


def concurrency_run(args: argparse.Namespace, work: Path, concurrent: int) -> dict[str, Any]:
    spec = {
        "name": f"concurrency{concurrent}",
        "base": {
            "data": {"name": "digits"},
            "model": {"name": "resnet18_cifar", "width": args.width},
            "train": {
                "epochs": args.epochs,
                "batch_size": 64,
                "lr": 0.05,
                "device": "cpu",
                "max_batches": args.max_batches,
                "max_eval_batches": 2,
            },
        },
        "grid": {"seed": list(range(args.trials))},
        "experiments": [{"label": "dense", "config": {"method": "dense"}}],
        "resources": {"cpu": 1, "gpu": 0},
        "max_concurrent_trials": concurrent,
    }
    wall = common.run_sweep(common.write_sweep(work, spec), work / "out")
    trials = common.result_rows(work / "out" / spec["name"])
    trial_s = [
        sum(row["round_time_s"] for row in rows if row.get("row_type") == "round")
        for rows in trials.values()
    ]
    return {
        "wall_s": wall,
        "trial_s": trial_s,
        "trials": len(trial_s),
        "wall_over_trial_sum": wall / sum(trial_s),
    }


#: A fixed CPU-bound job (one torch thread): a small conv net's forward+backward, 40 times.
WORK = (
    "import time, torch; torch.set_num_threads(1); torch.manual_seed(0);"
    "m = torch.nn.Sequential(*[torch.nn.Conv2d(16, 16, 3, padding=1) for _ in range(4)]);"
    "x = torch.randn(32, 16, 32, 32); m(x).sum().backward(); s = time.perf_counter();"
    "[m(x).sum().backward() for _ in range(40)]; print(time.perf_counter() - s)"
)


def parallel_capacity() -> dict[str, float]:
    """How many cores' worth of work two 1-thread processes get here now (2.0 on an idle
    2-core machine; less when other users' jobs hold cores), to read the 2-concurrent figure
    against: Ray cannot run two trials faster than the machine runs two plain processes."""

    def jobs(count: int) -> list[float]:
        processes = [
            subprocess.Popen([sys.executable, "-c", WORK], stdout=subprocess.PIPE, text=True)
            for _ in range(count)
        ]
        return [float(p.communicate()[0]) for p in processes]

    alone, paired = [], []
    for _ in range(2):  # interleaved
        alone += jobs(1)
        paired += jobs(2)
    alone_s, paired_s = common.median(alone), common.median(paired)
    return {"one_job_s": alone_s, "two_jobs_each_s": paired_s, "cores": 2 * alone_s / paired_s}


def dense_sharing(work: Path, seeds: list[int], targets: list[float]) -> dict[str, Any]:
    spec = {
        "name": "sharing",
        "base": {
            "data": {"name": "digits"},
            "model": {"name": "resnet18_cifar", "width": 4},
            "train": {"device": "cpu"},
        },
        "grid": {"seed": seeds},
        "experiments": [
            {"label": "dense", "config": {"method": "dense"}},
            {
                "label": "imp-oneshot",
                "config": {"method": "imp", "imp": {"schedule": "oneshot"}},
                "grid": {"prune.target_sparsity": targets},
            },
        ],
        "resources": {"cpu": 1, "gpu": 0},
        "max_concurrent_trials": 2,
    }
    wall = common.run_sweep(common.write_sweep(work, spec), work / "out", ["--smoke"])
    experiment = work / "out" / "sharing-smoke"
    trials = common.result_rows(experiment)
    trained = 0
    for rows in trials.values():
        round0 = [row for row in rows if row.get("row_type") == "round" and row["round"] == 0]
        trained += sum(1 for row in round0 if not row.get("reused_dense"))
    cache = experiment / "dense_cache"
    entries = [p for p in cache.iterdir() if p.is_dir()] if cache.is_dir() else []
    return {
        "trials": len(trials),
        "dense_trainings": trained,
        "dense_cache_entries": len(entries),
        "wall_s": wall,
    }


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="seconds-long smoke run")
    parser.add_argument("--trials", type=int, default=4)
    parser.add_argument("--epochs", type=int, default=2)
    parser.add_argument("--width", type=int, default=16)
    parser.add_argument("--max-batches", type=int, default=None)
    args = parser.parse_args(argv)
    seeds, targets = [0, 1, 2], [0.2, 0.4, 0.6, 0.8]
    if args.quick:
        args.trials, args.epochs, args.width, args.max_batches = 2, 1, 4, 2
        seeds, targets = [0], [0.4, 0.8]
    started = time.perf_counter()
    capacity = parallel_capacity()
    with tempfile.TemporaryDirectory(prefix="bench-sweep-") as tmp:
        work = Path(tmp)
        runs = {str(c): concurrency_run(args, work, c) for c in (1, 2)}
        sharing = dense_sharing(work, seeds, targets)
    c1, c2 = runs["1"]["wall_over_trial_sum"], runs["2"]["wall_over_trial_sum"]
    expected = len(seeds)  # one dense training per seed
    common.emit(
        {
            "benchmark": "sweep_efficiency",
            "quick": args.quick,
            "setup": {
                "trials": args.trials,
                "epochs": args.epochs,
                "width": args.width,
                "max_batches": args.max_batches,
                "resources_cpu": 1,
                "sharing_grid": {
                    "experiments": "dense + one-shot IMP",
                    "seeds": seeds,
                    "targets": targets,
                    "smoke": True,
                },
            },
            "concurrency": runs,
            "speedup_2_vs_1": runs["1"]["wall_s"] / runs["2"]["wall_s"],
            "trial_slowdown_2_vs_1": (
                common.median(runs["2"]["trial_s"]) / common.median(runs["1"]["trial_s"])
            ),
            "machine_parallel_capacity": capacity,
            "dense_sharing": sharing,
            "bars": [
                common.bar(
                    "sweep wall / sum of trial times, 1 concurrent",
                    c1,
                    "report (1.0 = no overhead)",
                    None,
                    "x",
                ),
                common.bar(
                    "sweep wall / sum of trial times, 2 concurrent on 2 cores",
                    c2,
                    "report (0.5 = perfect packing)",
                    None,
                    "x",
                ),
                common.bar(
                    f"dense trainings, dense + one-shot IMP grid ({len(targets)} targets x "
                    f"{len(seeds)} seeds)",
                    sharing["dense_trainings"],
                    f"== {expected}",
                    sharing["dense_trainings"] == expected
                    and sharing["dense_cache_entries"] == expected,
                    "trainings",
                ),
            ],
        },
        started,
    )


if __name__ == "__main__":
    main()
