"""What code a sweep ran, recorded in `prunetune_sweep.json` (key `source`) so that a result or
an exported network can be traced to it: the installed prunetune version and, when the package
runs from a git checkout, its commit and whether the checkout had uncommitted changes."""

from __future__ import annotations

import importlib.metadata
import json
import subprocess
from pathlib import Path
from typing import Any

CHECKOUT = Path(__file__).resolve().parents[1]
#: What run_sweep writes beside the results: the plan (name, grid, trials) and `source`.
SWEEP_SUMMARY_FILE = "prunetune_sweep.json"


def code_source() -> dict[str, Any]:
    """`{"version": ..., "commit": ..., "dirty": ...}`; commit and dirty are None outside a
    git checkout (an installed wheel) or where git is not installed."""
    try:
        version: str | None = importlib.metadata.version("prunetune")
    except importlib.metadata.PackageNotFoundError:
        version = None
    commit = _git("rev-parse", "HEAD")
    status = _git("status", "--porcelain", "--untracked-files=no") if commit else None
    return {"version": version, "commit": commit,
            "dirty": None if status is None else bool(status)}


def _git(*args: str) -> str | None:
    if not (CHECKOUT / ".git").exists():
        return None
    try:
        done = subprocess.run(["git", "-C", str(CHECKOUT), *args], capture_output=True,
                              text=True, timeout=10)
    except (OSError, subprocess.TimeoutExpired):
        return None
    return done.stdout.strip() if done.returncode == 0 else None


def recorded_source(experiment_dir: Path) -> dict[str, Any] | None:
    """What the experiment's sweep recorded of its code (None: an experiment from before it was
    recorded, or one not written by run_sweep)."""
    try:
        return json.loads((experiment_dir / SWEEP_SUMMARY_FILE).read_text()).get("source")
    except (OSError, ValueError, AttributeError):
        return None
