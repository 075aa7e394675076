"""On a busy machine: how much slower a trial trains, against a plain PyTorch loop, and whether
the speedups it reports stay true.

**Training.** The same network (the quickstart's quarter-width ResNet-18, one thread, batches of
64 digits-sized images) trains alone and then beside two busy loops (`while True: pass`, one per
core of a 2-core machine), side by side in one run:

* `bare loop`: a plain PyTorch loop, forward, backward and SGD step, in a process of its own;
* `prunetune trial`: a one-trial dense sweep through `sweeps/run_sweep.py` (Ray, `resources.cpu:
  1`), as users run it; its epoch rows give the seconds per step;
* `prunetune trial, Ray's default niceness`: the same with `RAY_worker_niceness=15`, what Ray
  starts its workers with unless told otherwise, and what run_sweep ran them at before.

The figure is each one's slowdown (seconds per step beside the loops / alone); the bar: a
trial's slowdown is at most 1.5 times the bare loop's.

**Speedups.** Trials of one quickstart-sized sweep (dense, SNIP at 90%, magnitude at init at 50%
and channels at 50% of the parameters), in-process, one thread, the busy loops running beside
the first half of them: every round's speedup over dense, as the rows now carry it (each round
timed against its trial's dense reference in the same process), and as it came out before (the
dense trial's latency / the round's, times taken by different trials at different moments). The
bar: every unstructured round's paired speedup at batch 1 lies in 0.85-1.15x.

    python benchmarks/bench_busy_machine.py [--quick]
"""

from __future__ import annotations

import argparse
import contextlib
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import common

BARE_LOOP = """
import sys, time, torch
sys.path.insert(0, {repo!r})
from trainables.config import ModelConfig
from trainables.models import build_model
torch.set_num_threads(1)
torch.manual_seed(0)
model = build_model(ModelConfig(name="resnet18_cifar", width=16), 10, 1)
optimizer = torch.optim.SGD(model.parameters(), lr=0.05, momentum=0.9)
inputs, targets = torch.randn(64, 1, 32, 32), torch.randint(10, (64,))
times = []
for step in range({steps} + 2):
    started = time.perf_counter()
    optimizer.zero_grad()
    torch.nn.functional.cross_entropy(model(inputs), targets).backward()
    optimizer.step()
    times.append(time.perf_counter() - started)
print(sorted(times[2:])[len(times[2:]) // 2])
"""


@contextlib.contextmanager
def busy_loops(count: int) -> Iterator[None]:
    """`count` processes that spin at the default niceness while the block runs."""
    loops = [subprocess.Popen([sys.executable, "-c", "while True: pass"]) for _ in range(count)]
    try:
        time.sleep(0.5)
        yield
    finally:
        for loop in loops:
            loop.kill()
            loop.wait()


def bare_step_s(steps: int) -> float:
    """Median seconds per step of the plain PyTorch loop, in a process of its own."""
    code = BARE_LOOP.format(repo=str(common.REPO), steps=steps)
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                          check=True)
    return float(done.stdout.strip().splitlines()[-1])


def trial_step_s(directory: Path, name: str, steps: int, epochs: int,
                 niceness: str | None) -> float:
    """Median seconds per step over a one-trial dense sweep's epochs after the first."""
    directory.mkdir(parents=True, exist_ok=True)
    spec = {"name": name,
            "base": {"data": {"name": "digits"}, "model": {"name": "resnet18_cifar", "width": 16},
                     "train": {"epochs": epochs, "batch_size": 64, "max_batches": steps,
                               "max_eval_batches": 1},
                     "measure": {"enabled": False}},
            "resources": {"cpu": 1}}
    sweep = common.write_sweep(directory, spec)
    env = common.sweep_env()
    if niceness is not None:
        env["RAY_worker_niceness"] = niceness
    command = [sys.executable, str(common.REPO / "sweeps" / "run_sweep.py"), str(sweep),
               "--storage", str(directory / "out")]
    done = subprocess.run(command, cwd=common.REPO, env=env, capture_output=True, text=True)
    if done.returncode != 0:
        raise RuntimeError(f"run_sweep failed:\n{done.stdout[-2000:]}\n{done.stderr[-3000:]}")
    (rows,) = common.result_rows(directory / "out" / name).values()
    epochs_s = [row["epoch_time_s"] for row in rows if row.get("row_type") == "epoch"]
    return common.median(epochs_s[1:] or epochs_s) / steps


def slowdowns(steps: int, epochs: int, loads: int, quick: bool) -> dict[str, dict[str, float]]:
    """Seconds per step alone and beside `loads` busy loops, for the three ways of training (a
    quick run leaves out Ray's default niceness, which crawls beside the loops)."""
    out: dict[str, dict[str, float]] = {}
    with tempfile.TemporaryDirectory(prefix="bench-busy-") as tmp:
        root = Path(tmp)
        ways = {
            "bare loop": lambda tag: bare_step_s(steps * epochs),
            "prunetune trial": lambda tag: trial_step_s(root / f"fair-{tag}", "fair", steps,
                                                        epochs, None),
        }
        if not quick:  # a few steps: beside the loops each takes some 35 times as long
            ways["prunetune trial, Ray's default niceness"] = lambda tag: trial_step_s(
                root / f"nice-{tag}", "nice", max(steps // 4, 2), 2, "15")
        for name, way in ways.items():
            alone = way("alone")
            with busy_loops(loads):
                loaded = way("loaded")
            out[name] = {"alone_s": alone, "loaded_s": loaded, "slowdown": loaded / alone}
    return out


def speedups(loads: int, quick: bool) -> list[dict[str, Any]]:
    """Every round of a small sweep, the loops beside its first half: the paired speedup the
    rows carry and the cross-trial ratio the analysis formed before."""
    from trainables.reporting import DirectoryReporter
    from trainables.resolve import parse_trial_config
    from trainables.trial import run_trial

    train = {"epochs": 1, "batch_size": 64, "max_batches": 2 if quick else 8,
             "max_eval_batches": 2, "device": "cpu"}
    trials = [("dense", {"method": "dense"}),
              ("SNIP 90%", {"method": "snip", "prune": {"target_sparsity": 0.9}}),
              ("magnitude at init 50%", {"method": "magnitude_init",
                                         "prune": {"target_sparsity": 0.5}}),
              ("channels 50%", {"method": "channels", "prune": {"target_sparsity": 0.5}})]
    rows = []

    def run(index: int, name: str, method: dict[str, Any], directory: Path) -> None:
        config = parse_trial_config({**method, "seed": 0, "data": {"name": "digits"},
                                     "train": train,
                                     "model": {"name": "resnet18_cifar", "width": 16}})
        reporter = DirectoryReporter(directory / str(index))
        run_trial(config, reporter, cpus=1)
        for row in reporter.rows:
            if row["row_type"] == "round":
                rows.append({"trial": name, "loaded": index < len(trials) // 2,
                             **{key: row.get(key) for key in (
                                 "round", "latency_ms_b1", "speedup_b1", "speedup_b1_low",
                                 "speedup_b1_high", "latency_disturbed_b1")}})

    half = len(trials) // 2
    with tempfile.TemporaryDirectory(prefix="bench-busy-speedups-") as tmp:
        with busy_loops(loads):
            for index, (name, method) in enumerate(trials[:half]):
                run(index, name, method, Path(tmp))
        for index, (name, method) in enumerate(trials[half:], start=half):
            run(index, name, method, Path(tmp))
    dense_ms = next(row["latency_ms_b1"] for row in rows if row["trial"] == "dense")
    for row in rows:
        row["across_trials_b1"] = dense_ms / row["latency_ms_b1"]
        row["structured"] = row["trial"].startswith("channels") and row["round"] >= 1
    return rows


def markdown(slow: dict[str, dict[str, float]], rows: list[dict[str, Any]], loads: int) -> str:
    lines = [f"Seconds per training step alone and beside {loads} busy loop(s) "
             f"(`while True: pass`), side by side in one run:", "",
             "| training | alone (s/step) | beside the loops (s/step) | slowdown |",
             "| --- | --- | --- | --- |"]
    for name, figures in slow.items():
        lines.append(f"| {name} | {figures['alone_s']:.3f} | {figures['loaded_s']:.3f} | "
                     f"{figures['slowdown']:.2f}x |")
    lines += ["", "Speedup over dense at batch 1 of every round, the loops beside the first half "
              "of the trials: as the rows carry it (paired with the trial's dense reference, its "
              "95% interval) and as the analysis formed it before (dense trial's latency / the "
              "round's, across trials):", "",
              "| trial | round | loaded | paired speedup | interval | across trials | "
              "disturbed |", "| --- | --- | --- | --- | --- | --- | --- |"]
    for row in rows:
        lines.append(
            f"| {row['trial']} | {row['round']} | {'yes' if row['loaded'] else 'no'} | "
            f"{row['speedup_b1']:.2f}x | {row['speedup_b1_low']:.2f}-{row['speedup_b1_high']:.2f} "
            f"| {row['across_trials_b1']:.2f}x | {row['latency_disturbed_b1'] or 'no'} |")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="seconds-long smoke run")
    args = parser.parse_args(argv)
    loads = 2
    steps, epochs = (3, 2) if args.quick else (20, 3)
    started = time.perf_counter()
    rows = speedups(loads, args.quick)
    slow = slowdowns(steps, epochs, loads, args.quick)
    unstructured = [row["speedup_b1"] for row in rows if not row["structured"]]
    worst = max(abs(speedup - 1) for speedup in unstructured)
    bare, trial = slow["bare loop"]["slowdown"], slow["prunetune trial"]["slowdown"]
    bars = [
        common.bar("unstructured rounds' paired speedup at batch 1, loads beside half the trials:"
                   " largest distance from 1", worst, "<= 0.15", worst <= 0.15, "x"),
        common.bar("trial slowdown beside two busy loops / bare loop's", trial / bare,
                   "<= 1.5", trial / bare <= 1.5, "x"),
    ]
    if "prunetune trial, Ray's default niceness" in slow:
        bars.append(common.bar(
            "the same with Ray's default worker niceness (15)",
            slow["prunetune trial, Ray's default niceness"]["slowdown"] / bare, "report", None,
            "x"))
    common.emit({"benchmark": "busy_machine", "quick": args.quick, "slowdowns": slow,
                 "speedups": rows, "setup": {"busy_loops": loads, "steps": steps,
                                             "epochs": epochs, "threads": 1},
                 "bars": bars, "markdown": markdown(slow, rows, loads)}, started)


if __name__ == "__main__":
    main()
