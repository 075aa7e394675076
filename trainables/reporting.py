"""Where a trial's rows and checkpoints go: Ray Tune inside a sweep, or a plain directory when a
method is run directly (notebooks, unit tests). The methods see only `TrialLog`.

Two kinds of checkpoint, both written by prunetune into the trial's own directory
(`trainables.trial_store`):

* a **round** checkpoint at the end of every round (all are kept; the contract is in
  docs/results-and-checkpoints.md);
* a **progress** checkpoint inside a long round, so that a crash loses at most about an epoch.
  A trial keeps one: each checkpoint reported removes the progress checkpoint before it.

Rows are reported together with the checkpoint that covers them: an epoch row is held back until
the next checkpoint is written and then reported just before it. A trial restarted from that
checkpoint therefore never reports a (round, epoch) row a second time, in `result.json`,
TensorBoard or any other logger. The cost is that rows arrive in bursts when checkpoints are
spaced out (see `CheckpointCadence`).

Ray Tune is told of each checkpoint through its public API, with a checkpoint of one small file
(`trial_store.POINTER_FILE`) naming the slot, and keeps only the newest of these
(`CheckpointConfig(num_to_keep=1)` in the sweep), so its experiment state does not grow with a
trial's checkpoints. A restarted trial resumes from the slot Ray's checkpoint names when that
slot is there. When it is not (the driver was killed after the trial had replaced that progress
slot, and before saving its state again), the trial resumes from its newest slot; if that is a
round checkpoint whose row the driver never logged, the row is reported again, so it is not
lost.
"""

from __future__ import annotations

import contextlib
import json
import tempfile
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any, Protocol

from trainables.schema import ROUND_CHECKPOINT, ROUND_ROW, row_checkpoint
from trainables.trial_store import POINTER_FILE, TrialStore, is_round_slot, read_pointer

PROGRESS = "progress"
#: `row_type` (and key, holding the one-line error) of the row a trial reports just before it
#: fails with an error a retry cannot fix (trainables/tune_trainable.py, sweeps/fatal_errors.py).
FATAL_ROW = "fatal"


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

    `agree` turns this process's decision into the one every data-parallel rank takes (rank
    0's), since each checkpoint is a report all ranks must make together.
    """

    def __init__(self, overhead: float = 0.05, clock: Callable[[], float] = time.perf_counter,
                 agree: Callable[[bool], bool] | None = None):
        self.overhead = overhead
        self.clock = clock
        self.agree = agree
        self.last_end: float | None = None
        self.last_cost = 0.0

    def due(self) -> bool:
        due = (self.last_end is None
               or self.clock() - self.last_end >= self.last_cost / self.overhead)
        return self.agree(due) if self.agree is not None else due

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


class TuneReporter:
    """Reports through `ray.tune.report`, writing checkpoints into the trial's directory on the
    sweep's storage; resumes from the slot `ray.tune.get_checkpoint()` names."""

    def __init__(self, store: TrialStore | None = None) -> None:
        self._store = store

    @property
    def store(self) -> TrialStore:
        """The trial's store, found on first use (inside the Tune session)."""
        if self._store is None:
            from trainables.ray_adapter import trial_storage

            self._store = TrialStore(*trial_storage())
        return self._store

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

        if last.get("row_type") == "round" and ray.is_initialized():
            # Which Ray node ran the round (multi-node sweeps).
            last = {**last, "node_id": ray.get_runtime_context().get_node_id()}
        name = self.store.write(state, shared)
        if not is_progress(state):
            last = {**last, ROUND_ROW.name(ROUND_CHECKPOINT): name}
        self._report_pointing_to(last, name)
        self.store.keep_only(name)

    def _report_pointing_to(self, row: dict[str, Any], name: str) -> None:
        from ray import tune

        with tempfile.TemporaryDirectory(prefix="prunetune-pointer-") as directory:
            (Path(directory) / POINTER_FILE).write_text(json.dumps({"slot": name}) + "\n")
            tune.report(row, checkpoint=tune.Checkpoint.from_directory(directory))

    def latest_state(self) -> dict[str, Any] | None:
        from ray import tune

        checkpoint = tune.get_checkpoint()
        if checkpoint is None:
            return None
        named = pointed_slot(checkpoint)
        if isinstance(named, dict):
            return named  # a checkpoint of the layout before the trial store
        slots = self.store.slots()
        if named in slots:
            # The newest the driver knows of; an earlier one if it is unusable.
            found = self.store.newest_usable(slots[: slots.index(named) + 1])
        else:
            found = self.store.newest_usable(slots)
            if (found is not None and is_round_slot(found[0]) and found[1].get("metrics")
                    and found[0] not in logged_round_checkpoints(self.store)):
                # A round checkpoint whose row the driver never logged (see the docstring).
                row = {**found[1]["metrics"], ROUND_ROW.name(ROUND_CHECKPOINT): found[0]}
                self._report_pointing_to(row, found[0])
        return found[1] if found else None


def pointed_slot(checkpoint: Any) -> str | dict[str, Any] | None:
    """The slot a Ray checkpoint of this trial names; the state itself for a checkpoint of the
    earlier layout (the whole checkpoint inside Ray's); None when it is gone or unreadable."""
    from trainables.checkpoints import CheckpointError, has_checkpoint, load_round_checkpoint

    name = read_pointer(checkpoint.filesystem, checkpoint.path)
    if name is not None:
        return name
    try:
        with checkpoint.as_directory() as directory:
            if has_checkpoint(Path(directory)):
                return load_round_checkpoint(directory)
    except (OSError, CheckpointError) as error:
        print(f"prunetune: skipping unusable checkpoint: {error}")
    return None


def reported_rows(trial_dir: Path) -> Iterator[dict[str, Any]]:
    """The rows in the trial's `result.json`, in order; lines a crash cut off are passed over."""
    path = trial_dir / "result.json"
    yield from parse_rows(path.read_text() if path.is_file() else "")


def parse_rows(text: str) -> Iterator[dict[str, Any]]:
    """The rows of a `result.json` text; lines a crash cut off are passed over."""
    for line in text.splitlines():
        try:
            row = json.loads(line)
        except json.JSONDecodeError:
            continue  # a line cut off by a crash
        if isinstance(row, dict):
            yield row


def logged_rows(store: TrialStore) -> list[dict[str, Any]]:
    """The rows in the trial's `result.json` as the driver last saved it to the storage."""
    try:
        with store.filesystem.open_input_stream(f"{store.path}/result.json") as stream:
            text = stream.read().decode(errors="replace")
    except OSError:
        return []
    return list(parse_rows(text))


def logged_round_checkpoints(store: TrialStore) -> set[str]:
    """The round slots named by round rows in the trial's `result.json` (as the driver last
    saved it to the storage)."""
    return {name for row in logged_rows(store)
            if row.get("row_type") == "round" and (name := row_checkpoint(row))}


class DirectoryReporter:
    """Writes rows to `result.json` (one JSON per line) and checkpoints to the slots of
    `trainables.trial_store` in a directory, the layout a Tune trial directory has."""

    def __init__(self, directory: str | Path, echo: bool = False) -> None:
        self.directory = Path(directory)
        self.directory.mkdir(parents=True, exist_ok=True)
        self.store = TrialStore.for_directory(self.directory)
        self.rows: list[dict[str, Any]] = []
        self.echo = echo

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
            name = self.store.write(state, shared)
            if not is_progress(state):
                last = {**last, ROUND_ROW.name(ROUND_CHECKPOINT): name}
            self.store.keep_only(name)
        self._append(last)

    def latest_state(self) -> dict[str, Any] | None:
        found = self.store.newest_usable()
        return found[1] if found else None
