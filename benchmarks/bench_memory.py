"""Memory per extra trial: 1 vs 2 concurrent Flowers-102 trials on one node.

Each case is a sweep through `sweeps/run_sweep.py` (a fresh process: Ray's driver decodes the
dataset once and shares it through the object store). A sampler thread walks that process's
descendants and, for every Ray Tune trial process (`ray::ImplicitFunc...`), records its peak
RSS (the kernel's VmHWM), and the peak USS and PSS from psutil's `memory_full_info()`. Object
store pages are shared memory: they count in RSS (when touched) but not in USS, so if the second
trial does not hold a second copy of the dataset, two trials' summed USS is about twice one
trial's and far below "one more dataset cache".

    python benchmarks/bench_memory.py [--quick]
"""

from __future__ import annotations

import argparse
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

import common

MIB = 2**20


def peak_rss_kib(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1])
    return 0


def object_store_pages(process: Any) -> tuple[int, int]:
    """(shared, private) resident bytes of `process`'s mappings of Ray's object store."""
    shared = private = 0
    for mapping in process.memory_maps(grouped=True):
        path = mapping.path
        if "plasma" in path or path.startswith("/dev/shm"):
            shared += mapping.shared_clean + mapping.shared_dirty
            private += mapping.private_clean + mapping.private_dirty
    return shared, private


class TrialSampler(threading.Thread):
    """Peak memory of the trial processes under `root_pid`, sampled every `interval` s."""

    def __init__(self, root_pid: int, interval: float = 0.25) -> None:
        super().__init__(daemon=True)
        self.psutil = common.import_psutil()
        self.root = self.psutil.Process(root_pid)
        self.interval = interval
        self.peaks: dict[int, dict[str, float]] = {}
        self.max_concurrent = 0
        self.stop = threading.Event()

    def run(self) -> None:
        while not self.stop.is_set():
            try:
                children = self.root.children(recursive=True)
            except self.psutil.Error:
                break
            live = 0
            for child in children:
                try:
                    title = " ".join(child.cmdline())
                    if "ImplicitFunc" not in title:
                        continue
                    live += 1
                    full = child.memory_full_info()
                    peak = self.peaks.setdefault(
                        child.pid,
                        {"rss": 0, "uss": 0, "pss": 0, "store_shared": 0, "store_private": 0},
                    )
                    peak["rss"] = max(peak["rss"], peak_rss_kib(child.pid) * 1024, full.rss)
                    peak["uss"] = max(peak["uss"], full.uss)
                    peak["pss"] = max(peak["pss"], full.pss)
                    shared, private = object_store_pages(child)
                    peak["store_shared"] = max(peak["store_shared"], shared)
                    peak["store_private"] = max(peak["store_private"], private)
                except (self.psutil.Error, OSError):
                    continue
            self.max_concurrent = max(self.max_concurrent, live)
            self.stop.wait(self.interval)


def sweep_memory(args: argparse.Namespace, work: Path, concurrent: int) -> dict[str, Any]:
    spec = {
        "name": f"memory{concurrent}",
        "base": {
            "data": common.flowers_data(args.image_size),
            "model": {"name": "resnet18_cifar", "width": 4},
            "train": {
                "epochs": 1,
                "batch_size": 32,
                "eval_batch_size": 64,
                "device": "cpu",
                "max_batches": args.max_batches,
                "max_eval_batches": 2,
            },
        },
        "grid": {"seed": list(range(concurrent))},
        "experiments": [{"label": "dense", "config": {"method": "dense"}}],
        "resources": {"cpu": 1, "gpu": 0},
        "max_concurrent_trials": concurrent,
    }
    sweep_file = common.write_sweep(work, spec)
    command = [
        sys.executable,
        str(common.REPO / "sweeps" / "run_sweep.py"),
        str(sweep_file),
        "--storage",
        str(work / "out"),
    ]
    process = subprocess.Popen(
        command,
        cwd=common.REPO,
        env=common.sweep_env(),
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    sampler = TrialSampler(process.pid)
    sampler.start()
    output, _ = process.communicate()
    sampler.stop.set()
    sampler.join()
    if process.returncode != 0:
        raise RuntimeError(f"run_sweep failed ({process.returncode}):\n{output}")
    trials = list(sampler.peaks.values())
    return {
        "trial_processes": len(trials),
        "max_concurrent_seen": sampler.max_concurrent,
        "peak_rss_mib": [t["rss"] / MIB for t in trials],
        "peak_uss_mib": [t["uss"] / MIB for t in trials],
        "peak_pss_mib": [t["pss"] / MIB for t in trials],
        "sum_peak_rss_mib": sum(t["rss"] for t in trials) / MIB,
        "sum_peak_uss_mib": sum(t["uss"] for t in trials) / MIB,
        "object_store_shared_mib": [t["store_shared"] / MIB for t in trials],
        "object_store_private_mib": [t["store_private"] / MIB for t in trials],
    }


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="seconds-long smoke run")
    parser.add_argument("--image-size", type=int, default=112)
    parser.add_argument("--max-batches", type=int, default=6)
    args = parser.parse_args(argv)
    if args.quick:
        args.max_batches = 2
    started = time.perf_counter()
    splits = common.load_flowers(args.image_size)  # builds the disk cache if absent
    cache_mib = (
        sum(
            getattr(splits, f"{split}_{kind}").nbytes
            for split in ("train", "val", "test")
            for kind in ("images", "labels")
        )
        / MIB
    )
    del splits
    with tempfile.TemporaryDirectory(prefix="bench-memory-") as tmp:
        cases = {str(c): sweep_memory(args, Path(tmp), c) for c in (1, 2)}
    one, two = cases["1"], cases["2"]
    extra_uss = two["sum_peak_uss_mib"] - one["sum_peak_uss_mib"]
    extra_rss = two["sum_peak_rss_mib"] - one["sum_peak_rss_mib"]
    # The second trial adds its own runtime (torch, Ray Tune, model: one trial's USS). A second
    # copy of the dataset would add the cache's size on top of that.
    beyond_one_trial = extra_uss - one["sum_peak_uss_mib"]
    no_second_copy = beyond_one_trial < 0.5 * cache_mib
    common.emit(
        {
            "benchmark": "memory",
            "quick": args.quick,
            "setup": {
                "dataset": f"flowers102 at {args.image_size} px",
                "model": "resnet18_cifar width 4",
                "batch": 32,
                "max_batches": args.max_batches,
                "resources_cpu": 1,
            },
            "dataset_cache_mib": cache_mib,
            "cases": cases,
            "extra_trial_uss_mib": extra_uss,
            "extra_trial_rss_mib": extra_rss,
            "extra_trial_uss_beyond_one_trial_mib": beyond_one_trial,
            "bars": [
                common.bar(
                    "2nd trial's added USS minus one trial's USS (a dataset copy would "
                    f"add {cache_mib:.0f} MiB)",
                    beyond_one_trial,
                    "< half the dataset cache (no second copy)",
                    no_second_copy,
                    "MiB",
                ),
                common.bar("USS added by a 2nd concurrent trial", extra_uss, "report", None, "MiB"),
            ],
        },
        started,
    )


if __name__ == "__main__":
    main()
