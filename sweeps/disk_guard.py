"""A full results disk: stop the sweep at once, in a state `--resume` can finish, and say how much
space it needs.

Ray Tune writes a trial's rows and the experiment state on the driver's local disk and copies
them to the storage path after every experiment checkpoint; each copy overwrites the files in
place. On a full storage disk a copy stops part-way and leaves truncated files, and every
further trial fails, is retried and fails again. So the guard, a Tune callback in the driver:

- stops the sweep at the first trial error caused by a full disk (ENOSPC), and already when the
  free space is below what the running trials' next checkpoints need, before anything is
  truncated. It stops the way Ctrl-C does (SIGUSR1, Ray Tune's graceful stop): no trial is
  launched or retried, and the running and errored ones stay resumable;
- keeps a last good copy of Ray's state files (the experiment state and the search state) in
  `.prunetune/`, written atomically, which `sweeps/state_files.py` puts back if a full disk
  truncated Ray's own;
- after the sweep, `message` is the one line run_sweep prints: which disk, how much is free, and
  how much the rest of the sweep needs (its largest round checkpoint times the rounds to go).

Tune pickles its callbacks into the experiment (`tuner.pkl`); the guard pickles as a reference
to the driver's current guard (`current_guard`), so a resumed sweep is guarded by a fresh one.
"""

from __future__ import annotations

import contextlib
import logging
import math
import os
import re
import shutil
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from ray.tune import Callback

from sweeps.state_files import keep_good_copies
from trainables.ray_adapter import stop_experiment
from trainables.trial_store import read_pointer, round_dirs

# How a full disk reads in an error, as Python, pyarrow and the checkpoint writer word it.
DISK_FULL_WORDS = ("No space left on device", "[Errno 28]", "ENOSPC")
# Besides the running trials' next checkpoints and two copies of the driver's files (Ray's
# state, the rows, the logs), a little room to spare.
MARGIN_BYTES = 2**20
# How often the guard sums the files Ray copies at each experiment checkpoint (a stat per file,
# thousands in a large study), unless the free space comes near them first.
SYNCED_COUNT_EVERY_S = 60.0
# What Ray logs when a sweep stops early; wrong advice once the guard has said what to do.
_NO_RESULTS_YET = "Failed to fetch metrics"
_STOP_NOISE = ("Stop signal received", "has been interrupted", "Trials did not complete",
               _NO_RESULTS_YET)
_FAILED_WRITE = re.compile(r"(/\S+): could not write checkpoint")  # trainables/checkpoints.py

_CURRENT: DiskGuard | None = None


def current_guard() -> DiskGuard | None:
    return _CURRENT


def is_disk_full_error(text: str) -> bool:
    return any(words in text for words in DISK_FULL_WORDS)


def _size(path: Path) -> int:
    if path.is_file():
        return path.stat().st_size
    return sum(p.stat().st_size for p in path.rglob("*") if p.is_file())


def _bytes(count: float) -> str:
    for unit in ("B", "KiB", "MiB", "GiB"):
        if count < 1024 or unit == "GiB":
            return f"{count:.0f} {unit}" if unit == "B" else f"{count:.1f} {unit}"
        count /= 1024
    raise AssertionError("unreachable")


def mount_point(path: Path) -> Path:
    """The mount point of the filesystem `path` is on (its nearest existing ancestor's)."""
    path = path.resolve()
    while not path.exists():
        path = path.parent
    while not os.path.ismount(path):
        path = path.parent
    return path


def latest_failure(error_file: str | None) -> str:
    """The newest failure in a trial's error.txt as Ray just wrote it on the driver's disk (its
    copy in the storage follows at the next sync): Ray appends one "Failure # N" per failure."""
    try:
        text = Path(error_file).read_text(errors="replace") if error_file else ""
    except OSError:
        return ""
    return text.rsplit("Failure # ", 1)[-1]


def synced_bytes(directory: Path) -> int:
    """The size of what Ray copies from the driver to an experiment directory at each of its
    checkpoints: the files at its top and at its trials' tops (not checkpoints, not the dense
    cache)."""
    total = 0
    for entry in directory.iterdir():
        if entry.is_file():
            total += entry.stat().st_size
        elif (entry / "params.json").is_file():
            total += sum(p.stat().st_size for p in entry.iterdir() if p.is_file())
    return total


def round_checkpoint_dirs(directory: Path) -> list[Path]:
    """The round checkpoints of an experiment directory's trials."""
    return [path for trial in directory.iterdir() if trial.is_dir()
            for path in round_dirs(trial)]


class DiskGuard(Callback):
    """See the module docstring. `directory` is the local experiment directory (None for cloud
    storage, whose buckets do not fill); `rounds` how many rounds the sweep's trials report in
    all (`Method.round_checkpoints`)."""

    def __init__(self, directory: str | None, rounds: int, every_s: float = 2.0) -> None:
        global _CURRENT
        self.directory = Path(directory) if directory else None
        self.rounds = rounds
        self.every_s = every_s
        self.checked = 0.0
        self.largest_checkpoint = 0
        self.synced = 0  # the bytes Ray copies at each experiment checkpoint, at the last count
        self.counted = -math.inf
        self.reason: str | None = None
        self.full_path: Path | None = None  # where a write failed, when the error says
        self.copied: dict[str, tuple[str, float]] = {}
        _CURRENT = self

    def __reduce__(self) -> tuple[Any, tuple]:
        return current_guard, ()

    # ---- what the sweep does ------------------------------------------------------------

    def on_checkpoint(self, iteration: int, trials: list, trial: Any, checkpoint: Any,
                      **info: Any) -> None:
        # Ray's checkpoint names the slot the trial wrote beside it (trainables/trial_store.py).
        slot = read_pointer(checkpoint.filesystem, checkpoint.path)
        path = Path(checkpoint.path).parent / slot if slot is not None else None
        if self.directory is not None and path is not None and path.is_dir():
            self.largest_checkpoint = max(self.largest_checkpoint, _size(path))

    def on_trial_error(self, iteration: int, trials: list, trial: Any, **info: Any) -> None:
        self._check_error(trial)

    def on_trial_recover(self, iteration: int, trials: list, trial: Any, **info: Any) -> None:
        self._check_error(trial)

    def on_step_end(self, iteration: int, trials: list, **info: Any) -> None:
        now = time.monotonic()
        if self.directory is None or self.reason is not None or now - self.checked < self.every_s:
            return
        self.checked = now
        self._keep_state_copies()
        if not self.largest_checkpoint:
            return
        running = sum(1 for t in trials if t.status == "RUNNING")
        free = shutil.disk_usage(self.directory).free
        checkpoints = running * self.largest_checkpoint + MARGIN_BYTES
        # Once a minute, and whenever the free space comes near twice the last count.
        if now - self.counted >= SYNCED_COUNT_EVERY_S or free < checkpoints + 4 * self.synced:
            self.synced, self.counted = synced_bytes(self.directory), now
        need = checkpoints + 2 * self.synced
        if free < need:
            self.stop(f"less free space than the {running} running trial(s) need for their "
                      f"next checkpoints ({_bytes(need)})")

    # ---- stopping -----------------------------------------------------------------------

    def _check_error(self, trial: Any) -> None:
        text = latest_failure(trial.error_file)
        if is_disk_full_error(text):
            # The checkpoint writer names its file: a trial's local staging folder (/tmp) may be
            # what is full, not the results disk.
            written = _FAILED_WRITE.search(text)
            self.full_path = Path(written.group(1)) if written else None
            self.stop("a trial could not write to it (No space left on device)")

    def stop(self, reason: str) -> None:
        """End the sweep as Ctrl-C would: Tune saves the state, trials stay resumable."""
        if self.reason is not None:
            return
        self.reason = reason
        stop_experiment()

    @contextlib.contextmanager
    def quiet_ray(self, resuming: bool) -> Iterator[None]:
        """While the block runs, Ray's logs about stopping early are dropped once the guard has
        stopped the sweep (they advise `Tuner.restore`, which run_sweep's line replaces), and
        so is the warning about trials without results when a sweep is resumed (those not
        started yet)."""
        handlers = logging.getLogger("ray").handlers

        def keep(record: logging.LogRecord) -> bool:
            text = record.getMessage()
            if resuming and _NO_RESULTS_YET in text:
                return False
            return self.reason is None or not any(words in text for words in _STOP_NOISE)

        for handler in handlers:
            handler.addFilter(keep)
        try:
            yield
        finally:
            for handler in handlers:
                handler.removeFilter(keep)

    def message(self) -> str:
        """The one line for the user: the disk, its free space, and what the sweep needs."""
        elsewhere = self.full_path is not None and (
            self.directory is None or mount_point(self.full_path) != mount_point(self.directory))
        if elsewhere:  # e.g. the local folder a checkpoint is staged in before Ray copies it
            where = mount_point(self.full_path)
            return (f"the disk {where} is full ({_bytes(shutil.disk_usage(where).free)} free): "
                    f"{self.reason}, while writing {self.full_path}")
        if self.directory is None:
            return f"the results storage is full: {self.reason}"
        where = mount_point(self.directory)
        usage = shutil.disk_usage(where)
        written = round_checkpoint_dirs(self.directory)
        largest = max([self.largest_checkpoint, *map(_size, written)])
        left = max(self.rounds - len(written), 1)
        need = (f"; the rest of the sweep needs about {_bytes(largest * left)} more ({left} "
                f"round checkpoint(s) of up to {_bytes(largest)})") if largest else ""
        return (f"the results disk {where} is full ({_bytes(usage.free)} free of "
                f"{_bytes(usage.total)}): {self.reason}{need}")

    # ---- the last good copies of Ray's state files ----------------------------------------

    def _keep_state_copies(self) -> None:
        keep_good_copies(self.directory, self.copied)
