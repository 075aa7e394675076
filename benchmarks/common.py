"""Helpers every `bench_*.py` script shares: JSON output, medians, bars, machine, sweep files.

Scripts import this as `common` (their own folder is first on `sys.path` when run as
`python benchmarks/bench_x.py`).
"""

from __future__ import annotations

import importlib
import json
import os
import platform
import statistics
import subprocess
import sys
import time
from collections.abc import Callable, Iterable
from pathlib import Path
from typing import Any

import yaml

REPO = Path(__file__).resolve().parents[1]
#: The downscaled Flowers-102 shared on these machines (root for torchvision's Flowers102).
FLOWERS_ROOT = os.environ.get("PRUNETUNE_FLOWERS_ROOT", str(REPO.parent / "shared" / "data"))
#: Where the decode-once uint8 cache goes (the shared data folder is read-only).
CACHE_DIR = os.environ.get("PRUNETUNE_BENCH_CACHE", "/tmp/prunetune-bench-cache")
#: Ray's temp dir for the sweeps started here: a private one, because `ray.init()` otherwise
#: joins whatever cluster /tmp/ray/ray_current_cluster names (another user's on a shared box).
RAY_TMPDIR = os.environ.get("PRUNETUNE_BENCH_RAY_TMPDIR", "/tmp/ptb-ray")


def sweep_env() -> dict[str, str]:
    """Environment for a `run_sweep.py` subprocess: private Ray temp dir, repo importable."""
    Path(RAY_TMPDIR).mkdir(parents=True, exist_ok=True)
    return {**os.environ, "PYTHONPATH": str(REPO), "RAY_TMPDIR": RAY_TMPDIR}


def import_psutil() -> Any:
    """psutil, from the environment or else the copy Ray vendors (importing ray adds it)."""
    try:
        import psutil
    except ImportError:
        importlib.import_module("ray")  # puts ray/thirdparty_files on sys.path
        import psutil
    return psutil


def machine() -> dict[str, Any]:
    """What the figures were taken on (CPU model, cores, memory, versions, load when started)."""
    import torch

    psutil = import_psutil()

    cpu = platform.processor() or platform.machine()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    return {
        "cpu": cpu,
        "cores": os.cpu_count(),
        "memory_gib": round(psutil.virtual_memory().total / 2**30, 1),
        "gpu": torch.cuda.get_device_name(0) if torch.cuda.is_available() else None,
        "torch": torch.__version__,
        "python": platform.python_version(),
        "load_avg_1m_at_start": round(os.getloadavg()[0], 2),
    }


def bar(name: str, value: float | None, target: str, met: bool | None, unit: str = "") -> dict:
    """One figure against its bar; `met` None means pending (e.g. needs a GPU)."""
    return {"name": name, "value": value, "bar": target, "met": met, "unit": unit}


def emit(result: dict[str, Any], started: float) -> None:
    """Print the benchmark's one JSON object (with its wall time and machine) on stdout."""
    result.setdefault("machine", machine())
    result["wall_s"] = time.perf_counter() - started
    json.dump(result, sys.stdout, default=float)
    sys.stdout.write("\n")
    sys.stdout.flush()


def median(values: Iterable[float]) -> float:
    return statistics.median(list(values))


def timed(fn: Callable[[], Any]) -> float:
    started = time.perf_counter()
    fn()
    return time.perf_counter() - started


def flowers_data(image_size: int) -> dict[str, Any]:
    """A DataConfig dict for the shared Flowers-102 at `image_size`, cache in CACHE_DIR."""
    return {
        "name": "flowers102",
        "root": FLOWERS_ROOT,
        "image_size": image_size,
        "download": False,
        "cache_dir": CACHE_DIR,
    }


def load_flowers(image_size: int) -> Any:
    from trainables.config import DataConfig
    from trainables.datasets import load_dataset

    return load_dataset(DataConfig(**flowers_data(image_size)))


def write_sweep(directory: Path, spec: dict[str, Any]) -> Path:
    path = Path(directory) / f"{spec['name']}.yaml"
    path.write_text(yaml.safe_dump(spec, sort_keys=False))
    return path


def run_sweep(sweep_file: Path, storage: Path, extra: list[str] | None = None) -> float:
    """Run `sweeps/run_sweep.py` as users do (a fresh process); returns its wall time."""
    command = [
        sys.executable,
        str(REPO / "sweeps" / "run_sweep.py"),
        str(sweep_file),
        "--storage",
        str(storage),
        *(extra or []),
    ]
    started = time.perf_counter()
    done = subprocess.run(command, cwd=REPO, env=sweep_env(), capture_output=True, text=True)
    wall = time.perf_counter() - started
    if done.returncode != 0:
        raise RuntimeError(f"run_sweep failed ({done.returncode}):\n{done.stdout}\n{done.stderr}")
    return wall


def result_rows(experiment_dir: Path) -> dict[str, list[dict[str, Any]]]:
    """{trial dir name: rows of its result.json} for every trial of an experiment."""
    trials = {}
    for path in sorted(Path(experiment_dir).glob("*/result.json")):
        rows = [json.loads(line) for line in path.read_text().splitlines() if line.strip()]
        trials[path.parent.name] = rows
    return trials
