"""Helpers every `bench_*.py` script shares: JSON output, medians, bars, machine, sweep files.

Scripts import this as `common` (their own folder is first on `sys.path` when run as
`python benchmarks/bench_x.py`).
"""

from __future__ import annotations

import argparse
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
#: The downscaled Flowers-102 shared on these machines (root for torchvision's Flowers102);
#: PRUNETUNE_FLOWERS_ROOT, or a script's --data-root (`add_data_root`), points elsewhere.
FLOWERS_ROOT = os.environ.get("PRUNETUNE_FLOWERS_ROOT", str(REPO.parent / "shared" / "data"))
#: Where the decode-once uint8 cache goes (the shared data folder is read-only).
CACHE_DIR = os.environ.get("PRUNETUNE_BENCH_CACHE", "/tmp/prunetune-bench-cache")
#: Ray's temp dir for the sweeps started here: a private one, because `ray.init()` otherwise
#: joins whatever cluster /tmp/ray/ray_current_cluster names (another user's on a shared box).
RAY_TMPDIR = os.environ.get("PRUNETUNE_BENCH_RAY_TMPDIR", "/tmp/ptb-ray")


def add_data_root(parser: argparse.ArgumentParser) -> None:
    """`--data-root DIR`: where Flowers-102 is on this machine (default FLOWERS_ROOT)."""
    parser.add_argument(
        "--data-root",
        default=FLOWERS_ROOT,
        help="folder holding flowers-102/ (torchvision's Flowers102 root, read-only is fine; "
        "the decoded cache goes to $PRUNETUNE_BENCH_CACHE); default: $PRUNETUNE_FLOWERS_ROOT, "
        "else ../shared/data beside the repository (now %(default)s)",
    )


def add_device(parser: argparse.ArgumentParser) -> None:
    """`--device {cuda,cpu}`: where the GPU figure is measured (default `default_device()`)."""
    parser.add_argument(
        "--device",
        choices=("cuda", "cpu"),
        default=None,
        help="device of the GPU figure (default: cuda when torch.cuda.is_available(), else "
        "cpu, where the same code runs as a smoke test and the GPU figure stays pending)",
    )


def default_device(asked: str | None = None) -> str:
    """`asked`, else "cuda" when torch has a usable GPU, else "cpu"."""
    if asked is not None:
        return asked
    import torch

    return "cuda" if torch.cuda.is_available() else "cpu"


def python_path(*first: Path) -> str:
    """PYTHONPATH with `first` ahead of what it already holds (packages installed with
    `pip --target`, as on a lent GPU machine, must stay importable in the subprocesses)."""
    kept = os.environ.get("PYTHONPATH", "")
    return os.pathsep.join([*map(str, first), *([kept] if kept else [])])


def sweep_env() -> dict[str, str]:
    """Environment for a `run_sweep.py` subprocess: private Ray temp dir, repo importable."""
    Path(RAY_TMPDIR).mkdir(parents=True, exist_ok=True)
    return {**os.environ, "PYTHONPATH": python_path(REPO), "RAY_TMPDIR": RAY_TMPDIR}


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


def train_step(model: Any, optimizer: Any, scaler: Any, runtime: Any, inputs: Any,
               targets: Any) -> None:
    """One training step as a trial takes it: the forward pass under the runtime's autocast,
    cross-entropy, backward through `scaler` (fp16's grad scaler; None otherwise), the
    optimizer step."""
    from torch.nn import functional

    with runtime.autocast():
        loss = functional.cross_entropy(model(inputs), targets)
    optimizer.zero_grad(set_to_none=True)
    if scaler is not None:
        scaler.scale(loss).backward()
        scaler.step(optimizer)
        scaler.update()
    else:
        loss.backward()
        optimizer.step()


def flowers_data(image_size: int, root: str | None = None) -> dict[str, Any]:
    """A DataConfig dict for Flowers-102 at `image_size` (in `root`, default the shared
    FLOWERS_ROOT), cache in CACHE_DIR."""
    return {
        "name": "flowers102",
        "root": root or FLOWERS_ROOT,
        "image_size": image_size,
        "download": False,
        "cache_dir": CACHE_DIR,
    }


def load_flowers(image_size: int, root: str | None = None) -> Any:
    from trainables.config import DataConfig
    from trainables.datasets import load_dataset

    return load_dataset(DataConfig(**flowers_data(image_size, root)))


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
