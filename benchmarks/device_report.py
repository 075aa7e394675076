"""What each trial of a device sweep was granted and how fast it trained (benchmarks/device_run.sh):

    python benchmarks/device_report.py EXPERIMENT_DIR OUT.json

Per trial, from its rows: the GPU Ray granted (`gpu_ids`, `cuda_visible_devices`, `gpu_name`),
the peak GPU memory torch held, the mean images/s of its epochs and its epoch count. In total:
the images all trials trained on over the sweep's span (first epoch start to last epoch end),
per second: what packing trials onto a GPU buys.
"""

from __future__ import annotations

import json
import statistics
import sys
from pathlib import Path
from typing import Any

if __package__ in (None, ""):  # run as a script: make the repository importable
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from trainables.reporting import reported_rows  # noqa: E402


def rows(trial_dir: Path) -> list[dict[str, Any]]:
    return list(reported_rows(trial_dir))


def trial_record(trial_dir: Path) -> dict[str, Any]:
    reported = rows(trial_dir)
    epochs = [r for r in reported if r.get("row_type") == "epoch"]
    rounds = [r for r in reported if r.get("row_type") == "round"]
    last = rounds[-1] if rounds else {}
    return {
        "trial": trial_dir.name,
        "rounds": len(rounds),
        "epochs": len(epochs),
        "final_test_acc": last.get("test_acc"),
        "final_sparsity": last.get("sparsity"),
        "gpu_ids": last.get("gpu_ids"),
        "cuda_visible_devices": last.get("cuda_visible_devices"),
        "gpu_name": last.get("gpu_name"),
        "gpu_memory_peak_mib": max((r["gpu_memory_peak_mib"] for r in rounds
                                    if r.get("gpu_memory_peak_mib") is not None), default=None),
        "images_per_s": statistics.mean(r["images_per_s"] for r in epochs) if epochs else None,
        "images": sum(r["images_per_s"] * r["epoch_time_s"] for r in epochs),
        "first_epoch_start": min((r["timestamp"] - r["epoch_time_s"] for r in epochs),
                                 default=None),
        "last_epoch_end": max((r["timestamp"] for r in epochs), default=None),
    }


def report(experiment: Path) -> dict[str, Any]:
    trials = [trial_record(p.parent) for p in sorted(experiment.glob("*/params.json"))]
    trained = [t for t in trials if t["epochs"]]
    total: dict[str, Any] = {"trials": len(trials), "trials_that_trained": len(trained)}
    if trained:
        span = (max(t["last_epoch_end"] for t in trained)
                - min(t["first_epoch_start"] for t in trained))
        images = sum(t["images"] for t in trained)
        total.update(images=round(images), span_s=span,
                     images_per_s=images / span if span > 0 else None)
    return {"experiment": str(experiment), "total": total, "trials": trials}


def main(argv: list[str]) -> int:
    if len(argv) != 2:
        print(__doc__.splitlines()[2].strip(), file=sys.stderr)
        return 2
    experiment, out = Path(argv[0]), Path(argv[1])
    if not experiment.is_dir():
        print(f"device_report: {experiment}: no such experiment", file=sys.stderr)
        out.write_text(json.dumps({"error": f"{experiment} missing"}) + "\n")
        return 1
    result = report(experiment)
    out.write_text(json.dumps(result, indent=1) + "\n")
    print(f"{'trial':<28} {'GPU ids':<8} {'CUDA_VISIBLE':<12} {'peak MiB':>9} {'img/s':>8}")
    for t in result["trials"]:
        peak = "-" if t["gpu_memory_peak_mib"] is None else f"{t['gpu_memory_peak_mib']:.0f}"
        rate = "-" if t["images_per_s"] is None else f"{t['images_per_s']:.0f}"
        print(f"{t['trial'][:28]:<28} {str(t['gpu_ids']):<8} {str(t['cuda_visible_devices']):<12} "
              f"{peak:>9} {rate:>8}")
    total = result["total"]
    if total.get("images_per_s"):
        print(f"in total: {total['images']} images in {total['span_s']:.0f} s, "
              f"{total['images_per_s']:.0f} images/s over {total['trials_that_trained']} trials")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
