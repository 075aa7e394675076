"""Resources held waiting for a dense model: dependency-aware trial order against a file lock.

A sweep with more concurrent trial slots than seeds (digits, resnet18_cifar width 8; per seed:
dense, one-shot IMP at two targets, SNIP; `resources.cpu: 0.5`, 4 trials at once, 2 seeds) runs
twice through `sweeps/run_sweep.py`, side by side:

- `order`: as shipped: trials that start from a dense model another trial is training are not
  started until it is written (`sweeps/dense_first.py`);
- `lock`: the same code with Tune's plain grid generator in place of that order, as before it:
  every trial starts when a slot is free and waits on the dense cache's file lock.

Resource-seconds held waiting = the sum, over trials that reused a dense model, of the seconds
they spent blocked on the cache's lock (`dense_wait_s` in their round-0 row; a trial that finds
the model written reads it without the lock and waits 0) times the CPUs each holds. Cross-check
from Ray's own clock: each reusing trial's seconds from its start to its first row
(`time_total_s`), which include loading the model. Also the sweeps' wall times.

    python benchmarks/bench_dense_wait.py [--quick]
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

CPU_PER_TRIAL = 0.5

#: The `lock` run: run_sweep with Tune's plain grid generator as the trial order.
LOCK_ORDER = (
    "import sys; from ray.tune.search import BasicVariantGenerator; "
    "from sweeps import run_sweep; "
    "run_sweep.trial_order = lambda n: BasicVariantGenerator(max_concurrent=n or 0); "
    "run_sweep.command(sys.argv[1:])"
)


def sweep(args: argparse.Namespace, name: str) -> dict[str, Any]:
    return {
        "name": name,
        "base": {
            "data": {"name": "digits"},
            "model": {"name": "resnet18_cifar", "width": 8},
            "train": {"epochs": args.epochs, "batch_size": 64, "lr": 0.05, "device": "cpu",
                      "max_batches": args.max_batches, "max_eval_batches": 2},
        },
        "grid": {"seed": args.seeds},
        "experiments": [
            {"label": "dense", "config": {"method": "dense"}},
            {"label": "oneshot", "config": {"method": "imp", "imp": {
                "schedule": "oneshot", "retrain_epochs": 1}},
             "grid": {"prune.target_sparsity": [0.5, 0.8]}},
            {"label": "snip", "config": {"method": "snip", "prune": {"target_sparsity": 0.8}}},
        ],
        "resources": {"cpu": CPU_PER_TRIAL, "gpu": 0},
        "max_concurrent_trials": args.slots,
    }


def run(args: argparse.Namespace, work: Path, mode: str) -> dict[str, Any]:
    spec = sweep(args, mode)
    path = common.write_sweep(work, spec)
    if mode == "order":
        wall = common.run_sweep(path, work / "out")
    else:
        command = [sys.executable, "-c", LOCK_ORDER, str(path), "--storage", str(work / "out")]
        started = time.perf_counter()
        done = subprocess.run(command, cwd=common.REPO, env=common.sweep_env(),
                              capture_output=True, text=True)
        wall = time.perf_counter() - started
        if done.returncode != 0:
            raise RuntimeError(f"lock run failed:\n{done.stdout}\n{done.stderr}")
    trials = common.result_rows(work / "out" / mode)
    waits, to_first_row, dense_s = [], [], []
    for rows in trials.values():
        round0 = [row for row in rows if row.get("row_type") == "round" and row["round"] == 0]
        if not round0:
            continue
        if round0[0].get("reused_dense"):
            waits.append(round0[0]["dense_wait_s"])
            to_first_row.append(rows[0]["time_total_s"])
        else:
            dense_s.append(round0[0]["round_time_s"])
    return {
        "wall_s": wall,
        "trials": len(trials),
        "reusing_trials": len(waits),
        "dense_trainings": len(dense_s),
        "dense_round_s": dense_s,
        "lock_wait_s": waits,
        "start_to_first_row_s": to_first_row,
        "resource_s_waiting": CPU_PER_TRIAL * sum(waits),
    }


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="seconds-long smoke run")
    args = parser.parse_args(argv)
    args.seeds, args.epochs, args.max_batches, args.slots = [0, 1], 3, None, 4
    if args.quick:
        args.seeds, args.epochs, args.max_batches, args.slots = [0], 1, 2, 3
    started = time.perf_counter()
    with tempfile.TemporaryDirectory(prefix="bench-dense-wait-") as tmp:
        runs = {mode: run(args, Path(tmp), mode) for mode in ("lock", "order")}
    order, lock = runs["order"], runs["lock"]
    common.emit({
        "benchmark": "dense_wait",
        "quick": args.quick,
        "setup": {"seeds": args.seeds, "epochs": args.epochs, "max_batches": args.max_batches,
                  "concurrent_trials": args.slots, "cpu_per_trial": CPU_PER_TRIAL,
                  "experiments": "dense, one-shot IMP at 0.5 and 0.8, SNIP 0.8"},
        "runs": runs,
        "bars": [
            common.bar("CPU-seconds held waiting for a dense model, dependency-aware order",
                       order["resource_s_waiting"], "== 0 (to the ms)",
                       round(order["resource_s_waiting"], 3) == 0, "CPU-s"),
            common.bar("CPU-seconds held waiting for a dense model, file lock alone (before)",
                       lock["resource_s_waiting"], "report", None, "CPU-s"),
            common.bar("sweep wall time, order / lock", order["wall_s"] / lock["wall_s"],
                       "report", None, "x"),
        ],
    }, started)


if __name__ == "__main__":
    main()
