"""Where a trial's rows and round checkpoints go: Ray Tune inside a sweep, or a plain directory
when a method is run directly (notebooks, unit tests). The method schedules see only this seam.
"""

from __future__ import annotations

import json
import shutil
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import Any, Protocol

from trainables.checkpoints import CheckpointError, load_round_checkpoint, save_round_checkpoint


class Reporter(Protocol):
    def epoch(self, row: dict[str, Any]) -> None: ...

    def round(self, row: dict[str, Any], state: dict[str, Any]) -> None: ...

    def latest_state(self) -> dict[str, Any] | None: ...


def _round_checkpoint_dirs(trial_dir: Path) -> list[Path]:
    return sorted(path for path in trial_dir.glob("checkpoint_*") if path.is_dir())


def load_latest_usable(
    candidates: list[Path], warn: Callable[[str], None] = print
) -> dict[str, Any] | None:
    """The newest loadable checkpoint among `candidates` (oldest first); a corrupt one is
    reported with its path and skipped, never loaded."""
    for directory in reversed(candidates):
        try:
            return load_round_checkpoint(directory)
        except CheckpointError as error:
            warn(f"prunetune: skipping unusable checkpoint: {error}")
    return None


class TuneReporter:
    """Reports through `ray.tune.report`; resumes from `ray.tune.get_checkpoint()`."""

    def epoch(self, row: dict[str, Any]) -> None:
        from ray import tune

        tune.report(row)

    def round(self, row: dict[str, Any], state: dict[str, Any]) -> None:
        import ray
        from ray import tune

        # Which Ray node ran the round (multi-node sweeps; a reused dense row gets this node's).
        row = {**row, "node_id": ray.get_runtime_context().get_node_id()}
        with tempfile.TemporaryDirectory(prefix="prunetune-ckpt-") as directory:
            save_round_checkpoint(directory, state)
            tune.report(row, checkpoint=tune.Checkpoint.from_directory(directory))

    def latest_state(self) -> dict[str, Any] | None:
        from ray import tune

        checkpoint = tune.get_checkpoint()
        if checkpoint is None:
            return None
        with checkpoint.as_directory() as directory:
            latest = Path(directory)
            # Fall back to earlier rounds (siblings in the trial dir) if the newest is corrupt.
            siblings = _round_checkpoint_dirs(latest.parent) if latest.parent.is_dir() else []
            candidates = [path for path in siblings if path.name <= latest.name] or [latest]
            if latest not in candidates:
                candidates.append(latest)
            return load_latest_usable(candidates)


class DirectoryReporter:
    """Writes rows to `result.json` (one JSON per line) and checkpoints to `checkpoint_NNNNNN`
    in a directory, the same layout a Tune trial directory has."""

    def __init__(self, directory: str | Path, echo: bool = False) -> None:
        self.directory = Path(directory)
        self.directory.mkdir(parents=True, exist_ok=True)
        self.rows: list[dict[str, Any]] = []
        self.echo = echo

    def _append(self, row: dict[str, Any]) -> None:
        self.rows.append(row)
        with (self.directory / "result.json").open("a") as stream:
            stream.write(json.dumps(row, default=float) + "\n")
        if self.echo:
            shown = {k: round(v, 4) if isinstance(v, float) else v for k, v in row.items()}
            print(shown, flush=True)

    def epoch(self, row: dict[str, Any]) -> None:
        self._append(row)

    def round(self, row: dict[str, Any], state: dict[str, Any]) -> None:
        index = len(_round_checkpoint_dirs(self.directory))
        target = self.directory / f"checkpoint_{index:06d}"
        with tempfile.TemporaryDirectory(dir=self.directory, prefix=".ckpt-") as staging:
            save_round_checkpoint(staging, state)
            shutil.copytree(staging, target)
        self._append(row)

    def latest_state(self) -> dict[str, Any] | None:
        return load_latest_usable(_round_checkpoint_dirs(self.directory))
