"""What measuring a round's cost adds to the round: FLOPs and latency at the shipped settings.

Two trials as the shipped sweeps run them (seed 0), in this process without Ray, with one torch
thread (a 1-CPU trial, as both sweep files grant):

* `quickstart imp`: the quickstart's IMP trial (sweeps/quickstart.yaml: dense round 0, then 3
  rounds of unstructured pruning and retraining);
* `structured channels`: the structured sweep's channel-pruning trial
  (sweeps/structured_digits.yaml: dense round 0, then 3 rounds, each a smaller network).

Every round row holds `measure_time_s` (FLOPs, nonzero FLOPs and latency at each batch size, at
the file's `measure` settings, i.e. the defaults) and `round_time_s` (which includes it): their
ratio is the share of the round spent measuring, both timed in the same run. Side by side, each
trial also runs with `measure.enabled: false`, interleaved with the measured run (on, off, off,
on, ...): the wall-time difference over the unmeasured trial's wall time, a noisier second
view of the same cost (the whole trial's, dataset loading included). The bar: the largest
per-round share stays under 3%.

    python benchmarks/bench_round_cost.py [--quick]
"""

from __future__ import annotations

import argparse
import copy
import tempfile
import time
from typing import Any

import common

TRIALS = {
    "quickstart imp": ("quickstart.yaml", "imp"),
    "structured channels": ("structured_digits.yaml", "channels"),
}


def trial_config(sweep_file: str, label: str, quick: bool) -> dict[str, Any]:
    """Seed 0 of the experiment `label` of a shipped sweep file, as run_sweep plans it."""
    import yaml

    from sweeps.plan import plan_sweep

    raw = yaml.safe_load((common.REPO / "sweeps" / sweep_file).read_text())
    overrides = ["grid.seed=[0]"] + (["model.width=4"] if quick else [])
    plan = plan_sweep(raw, sweep_file, overrides=overrides, smoke=quick)
    (trial,) = [t.raw for t in plan.trials if t.label == label]
    trial = copy.deepcopy(trial)
    trial["dense_model"]["cache"] = None  # each run trains its own round 0
    trial["train"]["device"] = "cpu"
    return trial


def run_trial(trial: dict[str, Any]) -> tuple[float, list[dict[str, Any]]]:
    """Wall time and round rows of one in-process trial."""
    from trainables.reporting import DirectoryReporter
    from trainables.resolve import parse_trial_config
    from trainables.trial import run_trial as run

    with tempfile.TemporaryDirectory(prefix="bench-round-cost-") as directory:
        reporter = DirectoryReporter(directory)
        started = time.perf_counter()
        run(parse_trial_config(trial, check_ignored=False), reporter, cpus=1)
        wall = time.perf_counter() - started
    return wall, [row for row in reporter.rows if row["row_type"] == "round"]


def measure_one(trial: dict[str, Any], repeats: int) -> dict[str, Any]:
    """Measured and unmeasured runs of `trial`, interleaved; per-round shares of the first."""
    unmeasured = copy.deepcopy(trial)
    unmeasured["measure"] = {**unmeasured.get("measure", {}), "enabled": False}
    walls_on, walls_off, shares = [], [], []
    rounds: list[dict[str, Any]] = []
    for repeat in range(repeats):
        # A B B A ...: whichever runs first in a pair pays the process's warm-up.
        first_off = repeat % 2 == 1
        if first_off:
            walls_off.append(run_trial(unmeasured)[0])
        wall, rows = run_trial(trial)
        walls_on.append(wall)
        shares.append([row["measure_time_s"] / row["round_time_s"] for row in rows])
        rounds = [{key: row[key] for key in ("round", "params_total", "flops", "measure_time_s",
                                             "round_time_s")} for row in rows]
        if not first_off:
            walls_off.append(run_trial(unmeasured)[0])
    per_round = [common.median(values) for values in zip(*shares, strict=True)]
    return {
        "measure_settings": trial.get("measure", {}),
        "rounds": rounds,
        "share_per_round": per_round,
        "share_samples": shares,
        "max_share": max(per_round),
        "wall_measured_s": walls_on,
        "wall_unmeasured_s": walls_off,
        "wall_overhead": common.median(on / off - 1 for on, off in
                                       zip(walls_on, walls_off, strict=True)),
    }


def markdown(results: dict[str, Any]) -> str:
    rounds = max(len(result["share_per_round"]) for result in results.values())
    lines = [
        "Measuring at the shipped `measure` settings (FLOPs, nonzero FLOPs, latency at batch 1 "
        "and 64), 1 thread, seed 0; share = `measure_time_s` / `round_time_s` of each round "
        "(median over repeats).",
        "",
        "| trial | " + " | ".join(f"round {k}" for k in range(rounds))
        + " | measuring per round (s) | wall with / without measuring |",
        "| --- |" + " --- |" * (rounds + 2),
    ]
    for name, result in results.items():
        shares = " | ".join(f"{100 * share:.2f}%" for share in result["share_per_round"])
        shares += " | n/a" * (rounds - len(result["share_per_round"]))
        seconds = ", ".join(f"{r['measure_time_s']:.2f}" for r in result["rounds"])
        lines.append(f"| {name} | {shares} | {seconds} | "
                     f"{1 + result['wall_overhead']:.3f} |")
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="seconds-long smoke run")
    parser.add_argument("--repeats", type=int, default=2)
    args = parser.parse_args(argv)
    if args.quick:
        args.repeats = 1
    import torch

    torch.set_num_threads(1)
    started = time.perf_counter()
    results = {
        name: measure_one(trial_config(sweep, label, args.quick), args.repeats)
        for name, (sweep, label) in TRIALS.items()
    }
    worst = max(result["max_share"] for result in results.values())
    bars = [common.bar("measuring FLOPs + latency, largest share of a round (shipped settings)",
                       worst, "< 3%", worst < 0.03, "fraction")]
    for name, result in results.items():
        bars.append(common.bar(f"{name}: wall time with / without measuring - 1",
                               result["wall_overhead"], "report", None, "fraction"))
    common.emit({"benchmark": "round_cost", "quick": args.quick, "trials": results,
                 "setup": {"repeats": args.repeats, "threads": 1},
                 "bars": bars, "markdown": markdown(results)}, started)


if __name__ == "__main__":
    main()
