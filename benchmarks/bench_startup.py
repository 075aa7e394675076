"""Start-up of a one-trial sweep, stage by stage: where the seconds before the first epoch go.

The sweep is the framework-overhead one (digits, resnet18_cifar width 16, 1 CPU, 2 epochs) run
as users run it, `sweeps/run_sweep.py` in a fresh process, through `startup_probe.py`, which
time-stamps run_sweep's stages and the trial's entry and first epoch. `--baseline COMMIT` runs
that commit's code (extracted with `git archive`) interleaved with the current tree, same
sweep, same machine, and `--write-readme` puts the medians into benchmarks/README.md (between
its `startup:start` / `startup:end` markers) and benchmarks/startup.json.

    python benchmarks/bench_startup.py [--reps 3] [--baseline 65dc588 --write-readme] [--quick]
"""

from __future__ import annotations

import argparse
import datetime
import json
import statistics
import subprocess
import sys
import tarfile
import tempfile
import time
from pathlib import Path
from typing import Any

import common

HERE = Path(__file__).resolve().parent
START, END = "<!-- startup:start -->", "<!-- startup:end -->"

# (label, start event, end event): a stage runs from its start to its end event; "cmd" is the
# moment the command was launched, "exit" the moment the process ended.
STAGES = [
    ("python starts, imports run_sweep", "cmd", "run_sweep imported"),
    ("validate the sweep (imports torch, torchvision)", "prepare start", "prepare end"),
    ("decode the dataset in the driver", "_shared_datasets start", "_shared_datasets end"),
    ("ray.init", "_start_ray start", "_start_ray end"),
    ("build the Tuner", "_tuner start", "_tuner end"),
    ("Tune starts the trial's worker process", "_tuner end", "worker process started"),
    ("the worker imports Ray, torch and the trainable", "worker process started",
     "trainable entered"),
    ("trial set-up (and the first validation pass)", "trainable entered", "first epoch starts"),
    ("first epoch's training (its epoch_time_s)", "first epoch starts", "first epoch reported"),
    ("ray.shutdown after the sweep", "ray.shutdown start", "ray.shutdown end"),
    ("... of which stopping Ray's autoscaler monitor", "stop monitor start", "stop monitor end"),
    ("interpreter exit", "main end", "exit"),
]
HEADLINE = "command to first epoch"
STORE_WAIT = "raylet waits for its object store"
OLD_METRIC = "wall - trial time"


def sweep_spec(args: argparse.Namespace, data_root: Path) -> dict[str, Any]:
    train = {"epochs": args.epochs, "batch_size": 64, "lr": 0.05, "lr_schedule": "constant",
             "device": "cpu"}
    if args.quick:
        train |= {"max_batches": 2, "max_eval_batches": 2}
    return {
        "name": "startup",
        "base": {"method": "dense", "seed": 0, "data": {"name": "digits", "root": str(data_root)},
                 "model": {"name": "resnet18_cifar", "width": 4 if args.quick else 16},
                 "train": train},
        "experiments": [{"label": "dense", "config": {"method": "dense"}}],
        "resources": {"cpu": 1, "gpu": 0},
    }


def extract(commit: str, into: Path) -> Path:
    """The tree of `commit` (git archive), for running the baseline's code side by side."""
    archive = into / "baseline.tar"
    subprocess.run(["git", "archive", "-o", str(archive), commit], cwd=common.REPO, check=True)
    tree = into / "baseline"
    with tarfile.open(archive) as tar:
        tar.extractall(tree, filter="data")
    return tree


def one_run(tree: Path, sweep_file: Path, work: Path) -> dict[str, float]:
    """Events of one run, in seconds since the command was launched."""
    trace = work / "trace.jsonl"
    trace.unlink(missing_ok=True)
    storage = work / "out"
    env = {**common.sweep_env(), "PYTHONPATH": common.python_path(tree, HERE),
           "PRUNETUNE_STARTUP_TRACE": str(trace)}
    command = [sys.executable, str(HERE / "startup_probe.py"),
               str(tree / "sweeps" / "run_sweep.py"), str(sweep_file), "--storage", str(storage)]
    launched = time.time()
    done = subprocess.run(command, cwd=work, env=env, capture_output=True, text=True)
    ended = time.time()
    if done.returncode != 0:
        raise RuntimeError(f"{tree}: run_sweep failed ({done.returncode}):\n{done.stderr[-3000:]}")
    events = {"cmd": 0.0, "exit": ended - launched}
    for line in trace.read_text().splitlines():
        event = json.loads(line)
        events.setdefault(event["event"], event["t"] - launched)
        if "worker_started" in event:  # the trial's worker process, from its creation time
            events["worker process started"] = event["worker_started"] - launched
        if event["event"] == "first epoch reported":
            events["first epoch starts"] = event["t"] - launched - event["epoch_time_s"]
    if events.get("worker process started", 0.0) < events["_tuner end"]:
        # Ray starts idle workers ahead of demand (its worker pool); a trial given one of those
        # waited for no process start: that stage took 0 s, and the import stage began then.
        events["worker process started"] = events["_tuner end"]
    (rows,) = common.result_rows(storage / "startup").values()
    (round_row,) = [row for row in rows if row.get("row_type") == "round"]
    events[HEADLINE] = events["first epoch starts"]
    events[OLD_METRIC] = events["exit"] - round_row["round_time_s"]
    subprocess.run(["rm", "-rf", str(storage)], check=True)
    _wait_for_ray_exit()
    events[STORE_WAIT] = raylet_store_wait(latest_raylet_log())
    return events


def latest_raylet_log() -> Path:
    """The raylet log of the run that just ended (each run starts its own Ray session)."""
    return Path(common.RAY_TMPDIR, "ray", "session_latest", "logs", "raylet.out")


def raylet_store_wait(log: Path) -> float:
    """Seconds the raylet spent between starting its object store's thread and its object
    manager's server: the object manager first connects to that store, and a connection that
    comes too early is retried after `raylet_client_connect_timeout_milliseconds`."""
    stamps: dict[str, datetime.datetime] = {}
    for line in log.read_text(errors="replace").splitlines():
        for key, marker in (("store", "Plasma store debug dump"),
                            ("manager", "ObjectManager server started")):
            if marker in line and key not in stamps:  # "[2026-11-24 23:56:44,068 I ..."
                stamps[key] = datetime.datetime.strptime(line[1:24], "%Y-%m-%d %H:%M:%S,%f")
    return (stamps["manager"] - stamps["store"]).total_seconds()


def _wait_for_ray_exit(timeout_s: float = 20.0) -> None:
    """Let the run's Ray processes (still exiting after the driver) finish before the next run
    starts, so that no run pays for the previous one's clean-up."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        busy = False
        for entry in Path("/proc").iterdir():
            try:
                if entry.name.isdigit() and common.RAY_TMPDIR.encode() in (
                        entry / "cmdline").read_bytes():
                    busy = True
                    break
            except OSError:
                continue
        if not busy:
            return
        time.sleep(0.2)


def summarise(runs: list[dict[str, float]]) -> dict[str, Any]:
    """Median start, end and length of every stage over the runs (a stage a tree lacks: None)."""
    def median(key: str) -> float | None:
        values = [run[key] for run in runs if key in run]
        return statistics.median(values) if len(values) == len(runs) else None

    stages = []
    for label, start, end in STAGES:
        begin, finish = median(start), median(end)
        lengths = [run[end] - run[start] for run in runs if start in run and end in run]
        stages.append({"stage": label, "start_s": begin, "end_s": finish,
                       "seconds": statistics.median(lengths) if len(lengths) == len(runs)
                       else None})
    waits = [run[STORE_WAIT] for run in runs]
    return {"stages": stages, HEADLINE: median(HEADLINE), OLD_METRIC: median(OLD_METRIC),
            STORE_WAIT: {"median_s": statistics.median(waits), "max_s": max(waits),
                         "runs_over_0.5_s": sum(wait > 0.5 for wait in waits)},
            "runs": runs}


def _cell(stage: dict[str, Any]) -> str:
    if stage["seconds"] is None:
        return "(no such stage)"
    return f"{stage['start_s']:.2f} → {stage['end_s']:.2f} ({stage['seconds']:.2f} s)"


def readme_block(result: dict[str, Any]) -> str:
    sides = result["sides"]
    names = list(sides)
    machine = result["machine"]
    lines = [
        START,
        f"Measured {result['date']} on {machine.get('cpu')} ({machine.get('cores')} cores, "
        f"1-min load average {machine.get('load_avg_1m_at_start')} at the start) by "
        f"`python benchmarks/bench_startup.py --baseline {result['baseline']} --write-readme`"
        f": {result['reps']} interleaved runs per side, medians; seconds since the command.",
        "",
        "| stage | " + " | ".join(names) + " |",
        "| --- |" + " --- |" * len(names),
    ]
    for index, (label, _, _) in enumerate(STAGES):
        cells = [_cell(sides[name]["stages"][index]) for name in names]
        lines.append(f"| {label} | " + " | ".join(cells) + " |")
    for key, text in ((HEADLINE, "**command → first epoch starts**"),
                      (OLD_METRIC, "wall − trial time (the older figure)")):
        lines.append(f"| {text} | " + " | ".join(
            f"**{sides[name][key]:.2f} s**" for name in names) + " |")
    lines.append(f"| {STORE_WAIT} (inside ray.init): median; runs over 0.5 s | " + " | ".join(
        f"{sides[name][STORE_WAIT]['median_s']:.2f} s; {sides[name][STORE_WAIT]['runs_over_0.5_s']}"
        f" of {result['reps']}" for name in names) + " |")
    lines.append(END)
    return "\n".join(lines)


def write_readme(block: str) -> None:
    readme = HERE / "README.md"
    text = readme.read_text()
    head, _, rest = text.partition(START)
    _, _, tail = rest.partition(END)
    if not rest:
        raise SystemExit(f"{readme} has no {START} ... {END} block")
    readme.write_text(head + block + tail)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="one tiny run (nothing judged)")
    parser.add_argument("--reps", type=int, default=3)
    parser.add_argument("--epochs", type=int, default=2)
    parser.add_argument("--baseline", default=None, metavar="COMMIT",
                        help="also run this commit's code, interleaved with the current tree")
    parser.add_argument("--write-readme", action="store_true",
                        help="write the before/after table into benchmarks/README.md")
    args = parser.parse_args(argv)
    if args.quick:
        args.reps = 1
    started = time.perf_counter()
    machine = common.machine()
    with tempfile.TemporaryDirectory(prefix="bench-startup-") as tmp:
        work = Path(tmp)
        sweep_file = common.write_sweep(work, sweep_spec(args, work / "data"))
        trees = {"current": common.REPO}
        if args.baseline:
            trees = {f"baseline {args.baseline}": extract(args.baseline, work), **trees}
        runs: dict[str, list[dict[str, float]]] = {name: [] for name in trees}
        for _ in range(args.reps):  # interleaved, so a change in load hits every side
            for name, tree in trees.items():
                runs[name].append(one_run(tree, sweep_file, work))
    sides = {name: summarise(side_runs) for name, side_runs in runs.items()}
    current = sides["current"]
    result = {
        "benchmark": "startup",
        "quick": args.quick,
        "reps": args.reps,
        "baseline": args.baseline,
        "date": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()),
        "machine": machine,
        "sides": sides,
        "bars": [
            common.bar("one-trial sweep: command to first epoch", current[HEADLINE], "< 10 s",
                       None if args.quick else current[HEADLINE] < 10, "s"),
            common.bar("one-trial sweep start-up (wall - trial time)", current[OLD_METRIC],
                       "< 10 s", None if args.quick else current[OLD_METRIC] < 10, "s"),
        ],
    }
    if args.write_readme and not args.quick:
        write_readme(readme_block(result))
        (HERE / "startup.json").write_text(json.dumps(result, indent=1, default=float) + "\n")
    common.emit(result, started)


if __name__ == "__main__":
    main()
