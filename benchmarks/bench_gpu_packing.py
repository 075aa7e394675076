"""GPU packing: training images/s of 1, 2 and 4 concurrent trials sharing one GPU
(`resources.gpu` 1, 0.5, 0.25), ResNet-18 (102 classes) on Flowers-102 at 112 px.

Each case is one sweep through `sweeps/run_sweep.py` (run by `packing_probe.py`, which
time-stamps every training step of every trial) with as many seeds as concurrent trials and
`max_concurrent_trials` equal to that number. A case's throughput is the images all its trials
trained while every one of them was running, over that interval (`overlap_throughput`): trials
start and end at different times, and a sum of per-trial rates would count each one's time
alone on the GPU as if shared. The bars are each case's figure over the 1-trial case's.

The device is `--device` (default cuda when torch has a GPU). On the CPU the same sweeps run
(no GPU share, 1 and 2 trials, at --quick's size) as a smoke test and the GPU figures are
pending.

    python benchmarks/bench_gpu_packing.py [--quick] [--device cuda|cpu] [--data-root DIR]
"""

from __future__ import annotations

import argparse
import subprocess
import sys
import tempfile
import time
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import common
from packing_probe import TRACE_ENV, read_trace

HERE = Path(__file__).resolve().parent
#: (concurrent trials, resources.gpu each) on CUDA; the CPU runs the first two, with no GPU.
CASES = ((1, 1.0), (2, 0.5), (4, 0.25))
CPU_CASES = ((1, 0.0), (2, 0.0))


@dataclass(frozen=True)
class Overlap:
    """Images the trials trained while all of them were running, and that interval."""

    start: float
    end: float
    images: int
    per_trial: dict[str, int]

    @property
    def seconds(self) -> float:
        return max(0.0, self.end - self.start)

    @property
    def images_per_s(self) -> float | None:
        """None when the trials never all ran at once."""
        return self.images / self.seconds if self.seconds > 0 else None


def overlap_throughput(trials: Mapping[str, Sequence[tuple[float, float, int]]]) -> Overlap:
    """The interval in which every trial was training, from its first step's start to its last
    step's end: from the latest start to the earliest end; and the images of the steps that
    finished inside it (after the start, up to and including the end), per trial and in all.

    `trials` maps a trial to its steps' (start, end, images). A step that straddles a bound
    counts where it finished: at most one step per trial and bound, either way.
    """
    if not trials or not all(trials.values()):
        raise ValueError("every trial needs at least one step")
    start = max(min(step[0] for step in steps) for steps in trials.values())
    end = min(max(step[1] for step in steps) for steps in trials.values())
    per_trial = {
        name: sum(images for _, finished, images in steps if start < finished <= end)
        for name, steps in trials.items()
    }
    return Overlap(start, end, sum(per_trial.values()), per_trial)


def run_probed_sweep(sweep_file: Path, storage: Path, trace: Path) -> float:
    """`common.run_sweep`, through `packing_probe.py`; returns the wall time."""
    trace.mkdir(parents=True, exist_ok=True)
    env = {**common.sweep_env(), "PYTHONPATH": common.python_path(common.REPO, HERE),
           TRACE_ENV: str(trace)}
    command = [sys.executable, str(HERE / "packing_probe.py"),
               str(common.REPO / "sweeps" / "run_sweep.py"), str(sweep_file),
               "--storage", str(storage)]
    started = time.perf_counter()
    done = subprocess.run(command, cwd=common.REPO, env=env, capture_output=True, text=True)
    wall = time.perf_counter() - started
    if done.returncode != 0:
        raise RuntimeError(f"run_sweep failed ({done.returncode}):\n{done.stdout}\n{done.stderr}")
    return wall


def packing_run(args: argparse.Namespace, work: Path, trials: int, gpu: float) -> dict[str, Any]:
    spec = {
        "name": f"packing{trials}",
        "base": {
            "data": common.flowers_data(112, args.data_root),
            "model": {"name": "resnet18"},
            "train": {
                "epochs": args.epochs,
                "batch_size": 64,
                "lr": 0.001,
                "lr_schedule": "constant",
                "device": args.device,
                "max_batches": args.max_batches,
                # a smoke run's evaluation is one small batch: on the CPU it would dominate
                "eval_batch_size": 64 if args.smoke else 512,
                "max_eval_batches": 1 if args.smoke else 2,
            },
        },
        "grid": {"seed": list(range(trials))},
        "experiments": [{"label": "dense", "config": {"method": "dense"}}],
        "resources": {"cpu": 1, "gpu": gpu},
        "max_concurrent_trials": trials,
    }
    trace = work / f"steps{trials}"
    wall = run_probed_sweep(common.write_sweep(work, spec), work / "out", trace)
    steps = read_trace(trace)
    if len(steps) != trials:
        raise RuntimeError(f"{len(steps)} of {trials} trials wrote their steps to {trace}")
    overlap = overlap_throughput(steps)
    spans = {name: max(s[1] for s in st) - min(s[0] for s in st) for name, st in steps.items()}
    return {
        "gpu_per_trial": gpu,
        "trials": trials,
        "wall_s": wall,
        "trial_span_s": spans,
        "overlap_s": overlap.seconds,
        "overlap_share_of_shortest_span": overlap.seconds / min(spans.values()),
        "images_in_overlap": overlap.per_trial,
        "overlap_images_per_s": overlap.images_per_s,
    }


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="seconds-long smoke run")
    parser.add_argument("--epochs", type=int, default=30,
                        help="epochs per trial: long enough for the trials to overlap")
    parser.add_argument("--max-batches", type=int, default=None)
    common.add_device(parser)
    common.add_data_root(parser)
    args = parser.parse_args(argv)
    args.device = common.default_device(args.device)
    on_gpu = args.device == "cuda"
    args.smoke = args.quick or not on_gpu  # the CPU's run is a smoke test of the same code
    if args.smoke:
        args.epochs, args.max_batches = 1, 3
    cases_run = CASES if on_gpu else CPU_CASES
    started = time.perf_counter()
    with tempfile.TemporaryDirectory(prefix="bench-packing-") as tmp:
        cases = {str(n): packing_run(args, Path(tmp), n, gpu) for n, gpu in cases_run}
    base = cases["1"]["overlap_images_per_s"]
    gains = {
        n: case["overlap_images_per_s"] / base
        if base and case["overlap_images_per_s"] is not None else None
        for n, case in cases.items()
    }
    bars = [
        common.bar(
            f"images/s while all trials ran, {n} trials x {gpu:g} GPU vs 1 trial",
            gains.get(str(n)) if on_gpu else None,
            "report" if on_gpu else "report (GPU pending)",
            None,
            "x",
        )
        for n, gpu in CASES[1:]
    ]
    common.emit(
        {
            "benchmark": "gpu_packing",
            "quick": args.quick,
            "device": args.device,
            "setup": {"epochs": args.epochs, "max_batches": args.max_batches,
                      "smoke": args.smoke, "data_root": args.data_root},
            "cases": cases,
            "overlap_vs_one_trial": gains,
            **({} if on_gpu else {"gpu": "pending (no CUDA device: the cases ran on the CPU)"}),
            "bars": bars,
        },
        started,
    )


if __name__ == "__main__":
    main()
