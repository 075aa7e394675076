"""Round and progress checkpoints: a state tree stored by `trainables.round_store` (a JSON
index plus safetensors, each tensor once per trial) and a `metrics.json` that analysis reads
without torch.

Every file is written to a temporary name and renamed, the index last, so a crash while writing
leaves no half-written file where a reader looks. Checkpoints of the earlier layout (one
`state.pt`, format version 1) still load.
"""

from __future__ import annotations

import json
from collections.abc import Collection, Mapping
from pathlib import Path
from typing import Any

import torch

from trainables import faults, round_store
from trainables.errors import PrunetuneError
from trainables.files import atomic_write
from trainables.round_store import INDEX_FILE, StoreFormatError

#: The earlier layout's one file (format version 1), still read.
LEGACY_STATE_FILE = "state.pt"
LEGACY_FORMAT_VERSION = 1
METRICS_FILE = "metrics.json"
FORMAT_VERSION = round_store.FORMAT_VERSION


class CheckpointError(PrunetuneError):
    """A checkpoint is missing, truncated, corrupt, or from a different recipe."""


def has_checkpoint(directory: Path) -> bool:
    """Whether `directory` holds a complete checkpoint file of either layout."""
    return (directory / INDEX_FILE).is_file() or (directory / LEGACY_STATE_FILE).is_file()


def save_round_checkpoint(directory: str | Path, state: dict[str, Any],
                          stored: Mapping[str, str] | None = None) -> Path:
    """Write `state` (and its `metrics`, if any, as JSON) into `directory`; returns the index's
    path. `stored`: the tensors other checkpoints already hold (digest -> the holder's path
    relative to the trial directory, `stored_tensors`), referenced instead of written again.

    A failed write (disk full, unwritable directory) raises CheckpointError naming the file and
    leaves no partial file behind; an earlier checkpoint elsewhere is untouched.
    """
    directory = Path(directory)
    path = directory / INDEX_FILE
    seed = (state.get("config") or {}).get("seed")
    encoded = round_store.encode(state, stored)

    # Progress checkpoints (mid-round) carry no metrics: analysis reads round checkpoints only.
    metrics = state.get("metrics")
    if metrics is not None:
        metrics = {**metrics, "layer_sparsity": state["layer_sparsity"]}

    def write_json(target: Path) -> None:
        target.write_text(json.dumps(metrics, indent=1, default=float))

    try:
        directory.mkdir(parents=True, exist_ok=True)
        round_store.write(directory, encoded, lambda target: faults.before_checkpoint_write(
            target, seed, state.get("round")))  # test-only hook
        if metrics is not None:
            atomic_write(directory / METRICS_FILE, write_json)
    except OSError as error:
        reason = error.strerror or str(error)
        raise CheckpointError(f"{path}: could not write checkpoint: {reason}") from error
    return path


def load_round_checkpoint(directory: str | Path,
                          only: Collection[str] | None = None) -> dict[str, Any]:
    """Load a checkpoint's state (either layout); CheckpointError if unusable. `only`: just
    these top-level entries (say `("masks",)`: the weights are then not read at all)."""
    directory = Path(directory)
    if (directory / INDEX_FILE).is_file():
        try:
            state = round_store.read(directory, only)
        except StoreFormatError as error:
            raise CheckpointError(f"{directory / INDEX_FILE}: unreadable checkpoint "
                                  f"({error})") from None
        return {"format_version": FORMAT_VERSION, **state}
    path = directory / LEGACY_STATE_FILE
    if not path.is_file():
        raise CheckpointError(f"{directory / INDEX_FILE}: no checkpoint state file")
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as error:  # truncated or corrupt files raise many types
        raise CheckpointError(f"{path}: unreadable checkpoint ({type(error).__name__})") from None
    if not isinstance(state, dict) or state.get("format_version") != LEGACY_FORMAT_VERSION:
        raise CheckpointError(f"{path}: not a prunetune round checkpoint")
    if only is not None:
        state = {key: value for key, value in state.items()
                 if key in only or key == "format_version"}
    return state


def stored_tensors(round_dirs: list[Path]) -> dict[str, str]:
    """The tensors the given round checkpoints of one trial hold or reference (digest -> the
    holder, relative to the trial directory), for `save_round_checkpoint(stored=...)`;
    unreadable or older-layout ones are left out."""
    held: dict[str, str] = {}
    for directory in round_dirs:
        if not (directory / METRICS_FILE).is_file():
            continue  # a progress checkpoint: deleted once replaced, so never referenced
        try:
            held.update(round_store.held_digests(directory))
        except StoreFormatError:
            continue
    return held
