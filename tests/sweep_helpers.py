"""Helpers the end-to-end tests share: tiny sweep files, and the one way they run
`sweeps/run_sweep.py` (and `analysis/plot.py`) as real subprocesses, as a user does."""

from __future__ import annotations

import contextlib
import json
import os
import signal
import subprocess
import sys
import time
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

import yaml

ROOT = Path(__file__).resolve().parents[1]
RUN_SWEEP = ROOT / "sweeps" / "run_sweep.py"
TINY_TRAIN = {
    "epochs": 2,
    "batch_size": 32,
    "eval_batch_size": 512,
    "max_batches": 2,
    "max_eval_batches": 2,
    "device": "cpu",
}
#: Settings from outside that would send a child elsewhere than the test means: a running Ray,
#: a fault meant for another test, the trackers' servers and projects.
_FOREIGN = ("RAY_ADDRESS", "PRUNETUNE_FAULT")
_FOREIGN_PREFIXES = ("MLFLOW_", "WANDB_")


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


def subprocess_env(fault: str | None = None, **extra: str) -> dict[str, str]:
    """This process's environment without `_FOREIGN` settings, with the checkout importable,
    unbuffered output and Ray's usage stats off; `fault` (trainables/faults.py) and `extra`
    on top."""
    env = {k: v for k, v in os.environ.items()
           if k not in _FOREIGN and not k.startswith(_FOREIGN_PREFIXES)}
    env.update(PYTHONPATH=str(ROOT), RAY_DISABLE_USAGE_STATS="1", PYTHONUNBUFFERED="1")
    if fault:
        env["PRUNETUNE_FAULT"] = fault
    env.update(extra)
    return env


def run_sweep(
    *args: str, cwd: Path = ROOT, fault: str | None = None,
    environment: Mapping[str, str] | None = None, timeout: float = 300,
) -> subprocess.CompletedProcess[str]:
    """`python sweeps/run_sweep.py ARGS` in `cwd`, in `environment` (default
    `subprocess_env(fault)`), its output captured."""
    return subprocess.run(
        [sys.executable, str(RUN_SWEEP), *args],
        cwd=cwd,
        env=dict(environment) if environment is not None else subprocess_env(fault),
        capture_output=True,
        text=True,
        timeout=timeout,
    )


def _descendants(pid: int) -> list[Any]:
    import psutil

    try:
        return psutil.Process(pid).children(recursive=True)
    except psutil.NoSuchProcess:
        return []


def kill_sweep_when(until: Callable[[], bool], *args: str, cwd: Path,
                    timeout: float = 240) -> None:
    """Start `python sweeps/run_sweep.py ARGS`, SIGKILL it and every Ray process it started once
    `until()` holds (polled), as a crash of the machine would; AssertionError if the sweep ends
    first, `until` never holds within `timeout`, or a Ray process outlives the kill."""
    import psutil

    driver = subprocess.Popen([sys.executable, str(RUN_SWEEP), *args], cwd=cwd,
                              env=subprocess_env(), stdout=subprocess.DEVNULL,
                              stderr=subprocess.DEVNULL, start_new_session=True)
    ray_processes: dict[int, Any] = {}
    deadline = time.time() + timeout
    try:
        while not until():
            assert driver.poll() is None, "the sweep ended before it could be interrupted"
            assert time.time() < deadline, "the sweep never reached the point to kill it at"
            ray_processes.update({p.pid: p for p in _descendants(driver.pid)})
            time.sleep(0.2)
        ray_processes.update({p.pid: p for p in _descendants(driver.pid)})
        os.killpg(driver.pid, signal.SIGKILL)
        driver.wait(timeout=30)
    finally:
        if driver.poll() is None:
            os.killpg(driver.pid, signal.SIGKILL)
        # Ray's daemons may have left the group (or outlive the driver): stop exactly ours.
        for process in ray_processes.values():
            with contextlib.suppress(psutil.NoSuchProcess):
                process.kill()
        _, alive = psutil.wait_procs(list(ray_processes.values()), timeout=30)
    assert ray_processes, "the driver started no Ray processes"
    assert not alive, f"Ray processes left running: {alive}"


def act_during_sweep(until: Callable[[], bool], act: Callable[[], None], *args: str,
                     never: str, timeout: float = 180) -> tuple[int, str]:
    """Start `python sweeps/run_sweep.py ARGS`, call `act()` once `until()` holds (polled; the
    sweep must still run, within `timeout`, else AssertionError with `never`), then let the
    sweep finish; (exit status, output). The sweep is killed if the test fails first."""
    driver = subprocess.Popen([sys.executable, str(RUN_SWEEP), *args], cwd=ROOT,
                              env=subprocess_env(), stdout=subprocess.PIPE,
                              stderr=subprocess.STDOUT, text=True)
    try:
        deadline = time.monotonic() + timeout
        while not until():
            assert driver.poll() is None, driver.communicate()[0][-3000:]
            assert time.monotonic() < deadline, never
            time.sleep(0.5)
        act()
        output, _ = driver.communicate(timeout=300)
    finally:
        if driver.poll() is None:
            driver.kill()
    return driver.returncode, output


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
