"""Round checkpoints: `state.pt` (plain tensors, loadable with weights_only=True) plus a
`metrics.json` that analysis can read without torch.

Files are written to a temporary name and renamed, so a crash while writing leaves no
half-written `state.pt` behind.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import torch

from trainables import faults
from trainables.errors import PrunetuneError
from trainables.files import atomic_write

STATE_FILE = "state.pt"
METRICS_FILE = "metrics.json"
FORMAT_VERSION = 1


class CheckpointError(PrunetuneError):
    """A checkpoint is missing, truncated, corrupt, or from a different recipe."""


def save_round_checkpoint(directory: str | Path, state: dict[str, Any]) -> Path:
    """Write `state` (and its `metrics`, if any, as JSON) into `directory`; returns the path.

    A failed write (disk full, unwritable directory) raises CheckpointError naming the file and
    leaves no partial file behind; an earlier checkpoint elsewhere is untouched.
    """
    directory = Path(directory)
    state = {"format_version": FORMAT_VERSION, **state}
    path = directory / STATE_FILE
    seed = (state.get("config") or {}).get("seed")

    def write_state(target: Path) -> None:
        faults.before_checkpoint_write(target, seed, state.get("round"))  # test-only hook
        torch.save(state, target)

    # Progress checkpoints (mid-round) carry no metrics: analysis reads round checkpoints only.
    metrics = state.get("metrics")
    if metrics is not None:
        metrics = {**metrics, "layer_sparsity": state["layer_sparsity"]}

    def write_json(target: Path) -> None:
        target.write_text(json.dumps(metrics, indent=1, default=float))

    try:
        directory.mkdir(parents=True, exist_ok=True)
        atomic_write(path, write_state)
        if metrics is not None:
            atomic_write(directory / METRICS_FILE, write_json)
    except OSError as error:
        reason = error.strerror or str(error)
        raise CheckpointError(f"{path}: could not write checkpoint: {reason}") from error
    return path


def load_round_checkpoint(directory: str | Path) -> dict[str, Any]:
    """Load a round checkpoint's state with weights_only=True; CheckpointError if unusable."""
    path = Path(directory) / STATE_FILE
    if not path.is_file():
        raise CheckpointError(f"{path}: no checkpoint state file")
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as error:  # truncated or corrupt files raise many types
        raise CheckpointError(f"{path}: unreadable checkpoint ({type(error).__name__})") from None
    if not isinstance(state, dict) or state.get("format_version") != FORMAT_VERSION:
        raise CheckpointError(f"{path}: not a prunetune round checkpoint")
    return state
