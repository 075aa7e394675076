"""Where a trial's rows and checkpoints go: Ray Tune inside a sweep, or a plain directory when a
method is run directly (notebooks, unit tests). The methods see only `TrialLog`.

Two kinds of checkpoint:

* a **round** checkpoint at the end of every round (all are kept; the contract is in
  docs/results-and-checkpoints.md);
* a **progress** checkpoint inside a long round, so that a crash loses at most about an epoch.
  Only the newest progress checkpoint is kept: once a newer checkpoint exists, an older one is
  emptied down to a `SUPERSEDED` marker file. Its directory stays, because the sweep's driver may
  have saved its experiment state while that checkpoint was the newest and be killed before
  saving again: a resumed sweep then restores the marked checkpoint, and the trial follows the
  marker to the newest usable checkpoint beside it.

Rows are reported together with the checkpoint that covers them: an epoch row is held back until
the next checkpoint is written and then reported just before it. A trial restarted from that
checkpoint therefore never reports a (round, epoch) row a second time, in `result.json`,
TensorBoard or any other logger. The cost is that rows arrive in bursts when checkpoints are
spaced out (see `CheckpointCadence`).

A restarted trial also guards against two things a crash can leave behind in its directory:

* Ray numbers a trial's checkpoints on from the last one its driver logged, so a new checkpoint
  could land in (and mix its files with) a directory an earlier attempt wrote after that, e.g.
  a progress checkpoint already emptied to its marker. `TuneReporter` numbers on past every
  checkpoint directory that exists.
* A trial that reported a round checkpoint and crashed before the driver logged it loses that
  round's row; restored from an older checkpoint, it follows the marker to the round checkpoint
  and reports the round's row again, with a copy of the checkpoint, so the row is not lost.
"""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import tempfile
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any, Protocol

from trainables.checkpoints import (
    CheckpointError,
    load_round_checkpoint,
    save_round_checkpoint,
    stored_tensors,
)
from trainables.ray_adapter import local_trial_dir, number_checkpoints_past_existing

PROGRESS = "progress"
#: `row_type` (and key, holding the one-line error) of the row a trial reports just before it
#: fails with an error a retry cannot fix (trainables/tune_trainable.py, sweeps/fatal_errors.py).
FATAL_ROW = "fatal"
#: The one file left in a superseded progress checkpoint (see the module docstring).
SUPERSEDED = "SUPERSEDED"


class Reporter(Protocol):
    def report(self, rows: list[dict[str, Any]], state: dict[str, Any] | None = None,
               shared: Path | None = None) -> None:
        """Report `rows` in order; the last one together with checkpoint `state`, if given,
        whose tensors held by `shared` (a dense model's cache entry) are referenced there."""
        ...

    def latest_state(self) -> dict[str, Any] | None: ...


def is_progress(state: dict[str, Any] | None) -> bool:
    return state is not None and state.get("kind") == PROGRESS


class CheckpointCadence:
    """When to write a progress checkpoint at the end of an epoch.

    At the end of an epoch when at least `1 / overhead` times the last checkpoint's write time has
    passed since the last checkpoint, so that checkpointing costs at most `overhead` of the
    training time; the first epoch of a process always checkpoints (to measure the write time).
    With small models that is every epoch; with large ones on fast hardware, every few epochs.
    """

    def __init__(self, overhead: float = 0.05, clock: Callable[[], float] = time.perf_counter):
        self.overhead = overhead
        self.clock = clock
        self.last_end: float | None = None
        self.last_cost = 0.0

    def due(self) -> bool:
        if self.last_end is None:
            return True
        return self.clock() - self.last_end >= self.last_cost / self.overhead

    def written(self, cost_s: float) -> None:
        self.last_cost = cost_s
        self.last_end = self.clock()


class TrialLog:
    """A trial's rows and checkpoints, through its `Reporter`, with epoch rows held back until
    the checkpoint that covers them (see the module docstring)."""

    def __init__(self, reporter: Reporter, cadence: CheckpointCadence | None = None) -> None:
        self.reporter = reporter
        self.cadence = cadence or CheckpointCadence()
        self.pending: list[dict[str, Any]] = []
        self._held: list[tuple[dict[str, Any], dict[str, Any]]] | None = None

    def epoch(
        self, row: dict[str, Any], progress: Callable[[], dict[str, Any]] | None
    ) -> None:
        """An epoch row; `progress()` builds the progress checkpoint state, only when one is due
        (None: no checkpoint here, e.g. when the round's own checkpoint follows)."""
        self.pending.append(row)
        if progress is not None and self.cadence.due():
            self._flush(progress())

    def round(self, row: dict[str, Any], state: dict[str, Any], shared: Path | None = None
              ) -> None:
        """A round row with its round checkpoint (after the round's held-back epoch rows);
        `shared`: a checkpoint outside the trial holding some of its tensors (referenced)."""
        if self._held is not None:
            self._held.append((row, state))
            return
        self.pending.append(row)
        self._flush(state, shared)

    @contextlib.contextmanager
    def holding_rounds(self) -> Iterator[list[tuple[dict[str, Any], dict[str, Any]]]]:
        """Keep the round reports made inside back (yielded as (row, state) pairs) until
        `release`: a dense model shared through a cache is saved there first, so that the
        trial's round 0 can reference it instead of holding a copy."""
        self._held = held = []
        try:
            yield held
        finally:
            self._held = None

    def release(self, held: list[tuple[dict[str, Any], dict[str, Any]]],
                shared: Path | None = None) -> None:
        for row, state in held:
            self.round(row, state, shared)

    def _flush(self, state: dict[str, Any], shared: Path | None = None) -> None:
        started = time.perf_counter()
        rows, self.pending = self.pending, []
        self.reporter.report(rows, state, shared)
        self.cadence.written(time.perf_counter() - started)

    def latest_state(self) -> dict[str, Any] | None:
        return self.reporter.latest_state()


def is_superseded(checkpoint_dir: Path) -> bool:
    """True for a progress checkpoint emptied because a newer checkpoint exists."""
    return (checkpoint_dir / SUPERSEDED).is_file()


def usable_checkpoint_dirs(trial_dir: Path) -> list[Path]:
    """A trial directory's checkpoints, oldest first, without superseded progress stubs."""
    return sorted(path for path in trial_dir.glob("checkpoint_*")
                  if path.is_dir() and not is_superseded(path))


def load_latest_usable(
    candidates: list[Path], warn: Callable[[str], None] = print
) -> tuple[Path, dict[str, Any]] | None:
    """The newest loadable checkpoint among `candidates` (oldest first) and its directory; a
    corrupt one is reported with its path and skipped, never loaded."""
    for directory in reversed(candidates):
        try:
            return directory, load_round_checkpoint(directory)
        except CheckpointError as error:
            warn(f"prunetune: skipping unusable checkpoint: {error}")
    return None


def held_for(trial_dir: Path | None, shared: Path | None = None) -> dict[str, str]:
    """The tensors a new checkpoint of the trial in `trial_dir` can reference: those its round
    checkpoints hold, and those `shared` holds (named by its path relative to `trial_dir`) when
    it lies in the same experiment directory, so that the experiment stays whole when moved.
    None for `trial_dir` (storage that is not a filesystem here): nothing, every checkpoint
    stands alone."""
    if trial_dir is None:
        return {}
    held = {}
    if shared is not None:
        relative = os.path.relpath(shared, trial_dir)
        if not relative.startswith(os.path.join(os.pardir, os.pardir)):
            held = dict.fromkeys(stored_tensors([shared]), relative)
    return {**held, **stored_tensors(usable_checkpoint_dirs(trial_dir))}


class TuneReporter:
    """Reports through `ray.tune.report`; resumes from `ray.tune.get_checkpoint()`."""

    def __init__(self) -> None:
        self._superseded: Any = None  # the last progress checkpoint, removed by the next one
        number_checkpoints_past_existing()

    def report(self, rows: list[dict[str, Any]], state: dict[str, Any] | None = None,
               shared: Path | None = None) -> None:
        from ray import tune

        *earlier, last = rows
        for row in earlier:
            tune.report(row)
        if state is None:
            tune.report(last)
            return
        self._report_with_checkpoint(last, state, shared)

    def _report_with_checkpoint(self, last: dict[str, Any], state: dict[str, Any],
                                shared: Path | None = None) -> None:
        import ray
        from ray import tune

        if last.get("row_type") == "round" and ray.is_initialized():
            # Which Ray node ran the round (multi-node sweeps).
            last = {**last, "node_id": ray.get_runtime_context().get_node_id()}
        with tempfile.TemporaryDirectory(prefix="prunetune-ckpt-") as directory:
            save_round_checkpoint(directory, state, held_for(local_trial_dir(), shared))
            tune.report(last, checkpoint=tune.Checkpoint.from_directory(directory))
        self._remove_superseded()
        if is_progress(state):
            self._superseded = tune.get_checkpoint()  # the persisted copy just reported

    def _remove_superseded(self) -> None:
        checkpoint, self._superseded = self._superseded, None
        if checkpoint is not None:
            try:  # empty it, keep the directory with its marker (see the module docstring)
                checkpoint.filesystem.delete_dir_contents(checkpoint.path)
                with checkpoint.filesystem.open_output_stream(
                    f"{checkpoint.path}/{SUPERSEDED}"
                ) as marker:
                    marker.write(b"a newer checkpoint of this trial replaced this one\n")
            except OSError as error:  # a leftover costs disk, not correctness
                print(f"prunetune: could not empty old progress checkpoint: {error}")

    def latest_state(self) -> dict[str, Any] | None:
        from ray import tune

        checkpoint = tune.get_checkpoint()
        if checkpoint is None:
            return None
        with checkpoint.as_directory() as directory:
            latest = Path(directory)
            siblings = usable_checkpoint_dirs(latest.parent) if latest.parent.is_dir() else []
            if is_superseded(latest):
                # The driver's saved state predates the checkpoint that replaced this one.
                candidates = siblings
            else:
                # Fall back to earlier checkpoints (siblings) if the newest is corrupt.
                candidates = [path for path in siblings if path.name <= latest.name] or [latest]
                if latest not in candidates:
                    candidates.append(latest)
            found = load_latest_usable(candidates)
            if (is_superseded(latest) and found is not None and found[0].name > latest.name
                    and found[1].get("metrics")
                    and found[0].name not in logged_checkpoints(latest.parent)):
                # A round checkpoint whose row the driver never logged (see the docstring).
                self._report_with_checkpoint(found[1]["metrics"], found[1])
        state = found[1] if found else None
        if is_progress(state):
            # Superseded in turn by this trial's next checkpoint.
            self._superseded = (checkpoint if found[0] == latest
                                else tune.Checkpoint.from_directory(str(found[0])))
        return state


def reported_rows(trial_dir: Path) -> Iterator[dict[str, Any]]:
    """The rows in the trial's `result.json`, in order; lines a crash cut off are passed over."""
    path = trial_dir / "result.json"
    for line in path.read_text().splitlines() if path.is_file() else []:
        try:
            row = json.loads(line)
        except json.JSONDecodeError:
            continue  # a line cut off by a crash
        if isinstance(row, dict):
            yield row


def logged_checkpoints(trial_dir: Path) -> set[str]:
    """The checkpoint directory names that rows in the trial's `result.json` came with."""
    return {name for row in reported_rows(trial_dir) if (name := row.get("checkpoint_dir_name"))}


class DirectoryReporter:
    """Writes rows to `result.json` (one JSON per line) and checkpoints to `checkpoint_NNNNNN`
    in a directory, the same layout a Tune trial directory has."""

    def __init__(self, directory: str | Path, echo: bool = False) -> None:
        self.directory = Path(directory)
        self.directory.mkdir(parents=True, exist_ok=True)
        self.rows: list[dict[str, Any]] = []
        self.echo = echo
        self._superseded: Path | None = None

    def _append(self, row: dict[str, Any]) -> None:
        self.rows.append(row)
        with (self.directory / "result.json").open("a") as stream:
            stream.write(json.dumps(row, default=float) + "\n")
        if self.echo:
            shown = {k: round(v, 4) if isinstance(v, float) else v for k, v in row.items()}
            print(shown, flush=True)

    def report(self, rows: list[dict[str, Any]], state: dict[str, Any] | None = None,
               shared: Path | None = None) -> None:
        *earlier, last = rows
        for row in earlier:
            self._append(row)
        if state is not None:
            existing = usable_checkpoint_dirs(self.directory)
            index = int(existing[-1].name.split("_")[1]) + 1 if existing else 0
            target = self.directory / f"checkpoint_{index:06d}"
            with tempfile.TemporaryDirectory(dir=self.directory, prefix=".ckpt-") as staging:
                save_round_checkpoint(staging, state, held_for(self.directory, shared))
                shutil.copytree(staging, target)
            if self._superseded is not None:
                shutil.rmtree(self._superseded, ignore_errors=True)
            self._superseded = target if is_progress(state) else None
        self._append(last)

    def latest_state(self) -> dict[str, Any] | None:
        found = load_latest_usable(usable_checkpoint_dirs(self.directory))
        if found is None:
            return None
        directory, state = found
        if is_progress(state):
            self._superseded = directory
        return state
