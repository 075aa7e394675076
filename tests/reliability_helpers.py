"""Helpers shared by the tests/test_reliability_*.py files: tiny sweep files and running
`sweeps/run_sweep.py` (and `analysis/plot.py`) as real subprocesses."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import yaml

ROOT = Path(__file__).resolve().parents[1]
TINY_TRAIN = {
    "epochs": 2,
    "batch_size": 32,
    "eval_batch_size": 512,
    "max_batches": 2,
    "max_eval_batches": 2,
    "device": "cpu",
}


def tiny_base(data_root: Path, **sections: Any) -> dict[str, Any]:
    base: dict[str, Any] = {
        "data": {"name": "digits", "root": str(data_root)},
        "model": {"name": "resnet18_cifar", "width": 4},
        "train": dict(TINY_TRAIN),
    }
    for key, value in sections.items():
        base[key] = {**base.get(key, {}), **value} if isinstance(value, dict) else value
    return base


def write_sweep(path: Path, **spec: Any) -> Path:
    path.write_text(yaml.safe_dump(spec, sort_keys=False))
    return path


def subprocess_env(fault: str | None = None) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if k not in ("RAY_ADDRESS", "PRUNETUNE_FAULT")}
    env["PYTHONPATH"] = str(ROOT)
    env["RAY_DISABLE_USAGE_STATS"] = "1"
    if fault:
        env["PRUNETUNE_FAULT"] = fault
    return env


def run_sweep(
    *args: str, fault: str | None = None, timeout: float = 300
) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, str(ROOT / "sweeps" / "run_sweep.py"), *args],
        cwd=ROOT,
        env=subprocess_env(fault),
        capture_output=True,
        text=True,
        timeout=timeout,
    )


def run_plot(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, str(ROOT / "analysis" / "plot.py"), *args],
        cwd=ROOT,
        env=subprocess_env(),
        capture_output=True,
        text=True,
        timeout=180,
    )


def trial_dirs(experiment: Path) -> dict[int, Path]:
    """{seed: trial dir} of an experiment whose trials differ by seed."""
    found = {}
    for params in experiment.glob("*/params.json"):
        found[json.loads(params.read_text())["trial"]["seed"]] = params.parent
    return found


def rows(trial_dir: Path, row_type: str = "round") -> list[dict[str, Any]]:
    lines = (trial_dir / "result.json").read_text().splitlines()
    return [r for r in map(json.loads, filter(str.strip, lines)) if r.get("row_type") == row_type]


def reference_rounds(trial_dir: Path, tmp: Path) -> list[dict[str, Any]]:
    """The round rows of a sweep's trial run again uninterrupted, in-process, without Ray (and
    without the sweep's dense cache), into `tmp`."""
    from trainables.reporting import DirectoryReporter
    from trainables.resolve import parse_trial_config
    from trainables.trial import run_trial

    raw = json.loads((trial_dir / "params.json").read_text())["trial"]
    raw["dense_model"]["cache"] = None
    reporter = DirectoryReporter(tmp)
    run_trial(parse_trial_config(raw, check_ignored=False), reporter, cpus=1)
    return [row for row in reporter.rows if row["row_type"] == "round"]
