"""A finished trial's directory, made readable: its round checkpoints, an index, nothing else.

While a sweep runs, a trial's directory also holds its progress slot and Ray's small checkpoint
naming the newest slot (see `trainables.reporting`). Once the sweep is over and the trial
finished, nothing will restore them, so they go, and `rounds.json` maps each round to its
checkpoint:

    [{"round": 0, "checkpoint": "round_000000", "sparsity": 0.0, "test_acc": 0.986,
      "val_acc": 0.989, "params_prunable": 698768, "status": "ok"}, ...]

Errored trials keep them (`--resume` continues them).
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path
from typing import Any

from trainables.checkpoints import METRICS_FILE
from trainables.round_store import StoreFormatError, read_index
from trainables.schema import row_checkpoint
from trainables.trial_store import LEGACY_PREFIX, PROGRESS_PREFIX

ROUNDS_INDEX = "rounds.json"
#: The round row's fields the index repeats, beside the round and its checkpoint.
INDEX_FIELDS = ("sparsity", "test_acc", "val_acc", "params_prunable", "status")


def round_index(result_lines: list[str]) -> list[dict[str, Any]]:
    """One entry per round, from a trial's `result.json` lines (the last row of a round wins).

    A line cut off by a crash is skipped; only round rows with a checkpoint are indexed.
    """
    rounds: dict[int, dict[str, Any]] = {}
    for line in result_lines:
        try:
            row = json.loads(line)
        except json.JSONDecodeError:
            continue
        checkpoint = row_checkpoint(row)
        if row.get("row_type") != "round" or not checkpoint:
            continue
        entry = {"round": row["round"], "checkpoint": checkpoint}
        entry.update({field: row[field] for field in INDEX_FIELDS if field in row})
        rounds[row["round"]] = entry
    return [rounds[number] for number in sorted(rounds)]


def tidy_finished_trial(trial_dir: Path) -> list[dict[str, Any]]:
    """Remove what no one will restore from a finished trial and write its `rounds.json`;
    returns the index. A round whose checkpoint directory is missing is left out of it.

    Removed: the progress slot, what a crash left half-written (hidden staging directories),
    Ray's checkpoint naming the newest slot, and, in the earlier layout, checkpoint directories
    no round row names that are a progress checkpoint or a copy of a round already indexed. A
    round checkpoint whose round has no row stays: it is evidence, not litter; so does one whose
    tensors a kept checkpoint references (`trainables.round_store`).
    """
    results = trial_dir / "result.json"
    lines = results.read_text().splitlines() if results.is_file() else []
    index = [entry for entry in round_index(lines)
             if (trial_dir / entry["checkpoint"]).is_dir()]
    indexed = {entry["checkpoint"] for entry in index}
    rounds = {entry["round"] for entry in index}
    kept = indexed | referenced_holders([trial_dir / name for name in indexed])
    for directory in trial_dir.iterdir():
        name = directory.name
        if not directory.is_dir() or name in kept:
            continue
        if name.startswith((PROGRESS_PREFIX, ".")):
            shutil.rmtree(directory, ignore_errors=True)
        elif name.startswith(LEGACY_PREFIX):
            round_number = _round_of(directory)
            if round_number is None or round_number in rounds:
                shutil.rmtree(directory, ignore_errors=True)
    staging = trial_dir / f".{ROUNDS_INDEX}.tmp"
    staging.write_text(json.dumps(index, indent=1) + "\n")
    staging.replace(trial_dir / ROUNDS_INDEX)
    return index


def referenced_holders(checkpoints: list[Path]) -> set[str]:
    """The sibling checkpoint directories whose tensors `checkpoints` reference."""
    names = set()
    for checkpoint in checkpoints:
        try:
            tensors = read_index(checkpoint)["tensors"]
        except StoreFormatError:  # the earlier layout (state.pt) references nothing
            continue
        names |= {meta["in"] for meta in tensors.values() if meta["in"] and "/" not in meta["in"]}
    return names


def _round_of(checkpoint_dir: Path) -> int | None:
    """The round a round checkpoint's metrics.json names; None for anything else."""
    try:
        return int(json.loads((checkpoint_dir / METRICS_FILE).read_text())["round"])
    except (OSError, ValueError, KeyError, TypeError):
        return None


def tidy_finished_trials(results: Any) -> int:
    """`tidy_finished_trial` for every trial of a ResultGrid that finished without an error and
    lies on a local disk (on cloud storage the progress slots stay); returns how many were
    tidied."""
    tidied = 0
    for result in results:
        path = Path(str(result.path))
        if result.error is None and "://" not in str(result.path) and path.is_dir():
            try:
                tidy_finished_trial(path)
                tidied += 1
            except OSError as error:  # costs readability, not results
                print(f"run_sweep: could not tidy {path}: {error}")
    return tidied
