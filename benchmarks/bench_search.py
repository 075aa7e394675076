"""Tuned recipes: what ASHA saves in the search stage of `sweeps/tuned_digits.yaml`.

The shipped example (dense, IMP and SNIP on digits; learning rate and weight decay searched by
OptunaSearch, 8 samples per unit on one search seed) runs through `sweeps/run_sweep.py` twice,
side by side in one run: as shipped (`scheduler: asha`), and with `scheduler: none`, every sample
to the end. For each search trial the benchmark counts, from its own `result.json`, the epochs it
ran (distinct epoch rows) and the epochs a sample of its unit runs to the end (the epoch rows of
the unit's trials that finished), and sums the trials' seconds (Tune's `time_total_s` of each
trial's last row). The search report's own count is checked against these.

Bars (the issue's): with ASHA the search stage runs at most 60% of the trial-epochs of the same
samples run to the end, and stops at least half of the search trials before their last epoch.

    python benchmarks/bench_search.py [--quick]     # --quick: dense only, 2 samples, 2 batches
"""

from __future__ import annotations

import argparse
import csv
import json
import tempfile
import time
from pathlib import Path
from typing import Any

import common
import yaml

EXAMPLE = common.REPO / "sweeps" / "tuned_digits.yaml"
EPOCHS_BAR, STOPPED_BAR = 0.60, 0.5


def _rows(path: Path) -> list[dict[str, Any]]:
    if not path.is_file():
        return []
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


def search_costs(experiment: Path) -> dict[str, Any]:
    """Per unit, from the search trials' rows: trials, stopped, epochs run, epochs to the end
    (each trial at its unit's full count), trial-seconds; and the report's own count."""
    units: dict[str, Any] = {}
    for unit in sorted(p for p in (experiment / "search").iterdir() if p.is_dir()):
        trials = []
        for trial in sorted(p.parent for p in unit.glob("*/params.json")):
            rows = _rows(trial / "result.json")
            epochs = len({(r["round"], r["epoch"]) for r in rows if r.get("row_type") == "epoch"})
            finished = any(r.get("final_round") for r in rows if r.get("row_type") == "round")
            seconds = rows[-1].get("time_total_s", 0.0) if rows else 0.0
            trials.append({"epochs": epochs, "finished": finished, "seconds": seconds})
        full = max(t["epochs"] for t in trials if t["finished"])
        selection = json.loads((unit / "selection.json").read_text())
        units[unit.name] = {
            "trials": len(trials),
            "stopped": sum(1 for t in trials if not t["finished"]),
            "epochs_run": sum(t["epochs"] for t in trials),
            "epochs_full": full * len(trials),
            "trial_seconds": sum(t["seconds"] for t in trials),
            "chosen": selection["values"],
            "score": selection["score"],
        }
    with (experiment / "search_report.csv").open(newline="") as handle:
        report = {row["unit"]: row for row in csv.DictReader(handle)}
    for name, unit in units.items():
        assert int(report[name]["epochs_run"]) == unit["epochs_run"], name
        assert int(report[name]["epochs_full"]) == unit["epochs_full"], name
    total = {key: sum(u[key] for u in units.values())
             for key in ("trials", "stopped", "epochs_run", "epochs_full", "trial_seconds")}
    return {"units": units, "total": total}


def run_example(directory: Path, scheduler: str, quick: bool) -> dict[str, Any]:
    spec = yaml.safe_load(EXAMPLE.read_text())
    spec["search"]["scheduler"] = scheduler
    spec["name"] = f"tuned_digits_{scheduler}"
    extra = []
    if quick:
        spec["search"]["samples"] = 2
        spec["experiments"] = spec["experiments"][:1]
        extra = ["--set", "train.max_batches=2", "--set", "train.max_eval_batches=2"]
    directory.mkdir(parents=True)
    path = common.write_sweep(directory, spec)
    wall = common.run_sweep(path, directory / "out", extra)
    return {"wall_s": wall, **search_costs(directory / "out" / spec["name"])}


def markdown(asha: dict[str, Any], none: dict[str, Any]) -> str:
    lines = [
        "`sweeps/tuned_digits.yaml` (8 samples per unit, OptunaSearch, search seed 100), run "
        "as shipped with ASHA and again with `scheduler: none`, side by side. Epochs are "
        "counted from the search trials' rows; \"to the end\" is each trial at its unit's full "
        "epoch count; trial-s sums the trials' own seconds.",
        "",
        "| unit | scheduler | trials stopped | trial-epochs run / to the end | trial-s | chosen "
        "lr, wd | val acc |",
        "| --- | --- | --- | --- | --- | --- | --- |",
    ]
    for name in asha["units"]:
        for label, run in (("asha", asha), ("none", none)):
            unit = run["units"][name]
            chosen = unit["chosen"]
            lines.append(
                f"| {name} | {label} | {unit['stopped']} of {unit['trials']} | "
                f"{unit['epochs_run']} / {unit['epochs_full']} | {unit['trial_seconds']:.0f} | "
                f"{chosen.get('train.lr', float('nan')):.3g}, "
                f"{chosen.get('train.weight_decay', float('nan')):g} | {unit['score']:.4f} |")
    a, n = asha["total"], none["total"]
    lines += ["", f"Search stage in all: with ASHA {a['epochs_run']} of {a['epochs_full']} "
              f"trial-epochs ({100 * a['epochs_run'] / a['epochs_full']:.0f}%), "
              f"{a['trial_seconds']:.0f} trial-s; without, {n['epochs_run']} trial-epochs, "
              f"{n['trial_seconds']:.0f} trial-s. Whole command (search and final stage): "
              f"{asha['wall_s']:.0f} s with ASHA, {none['wall_s']:.0f} s without."]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true",
                        help="the dense unit only, 2 samples, 2 batches a phase")
    args = parser.parse_args(argv)
    started = time.perf_counter()
    with tempfile.TemporaryDirectory(prefix="bench-search-") as tmp:
        asha = run_example(Path(tmp) / "asha", "asha", args.quick)
        none = run_example(Path(tmp) / "none", "none", args.quick)
    total = asha["total"]
    share = total["epochs_run"] / total["epochs_full"]
    stopped = total["stopped"] / total["trials"]
    common.emit(
        {
            "benchmark": "search",
            "quick": args.quick,
            "asha": asha,
            "none": none,
            "bars": [
                common.bar("tuned_digits search stage with ASHA: trial-epochs, share of the "
                           "same samples run to the end", share, f"<= {EPOCHS_BAR:.0%}",
                           share <= EPOCHS_BAR, "fraction"),
                common.bar("tuned_digits search trials ASHA stopped before their last epoch",
                           stopped, f">= {STOPPED_BAR:.0%}", stopped >= STOPPED_BAR,
                           "fraction"),
            ],
            "markdown": markdown(asha, none),
        },
        started,
    )


if __name__ == "__main__":
    main()
