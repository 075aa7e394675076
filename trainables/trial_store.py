"""A trial's checkpoints in its storage directory, written by prunetune itself.

Two kinds of slot, each a directory of `trainables.checkpoints` files:

* `round_RRRRRR`: the checkpoint at the end of round R, one per round, kept;
* `progress_RRRRRR_EEEEEE`: the progress checkpoint of round R after E of its epochs. A trial
  keeps one: once a newer slot is reported, the older progress slots go (`keep_only`).

On a filesystem (local, or a mount every node shares) a slot is written into a hidden
directory beside it and renamed into place, so a full disk or a kill never leaves a half-written
slot under a slot's name. On cloud storage, whose objects appear whole or not at all, a slot's
files are uploaded with its index last: a slot without `index.json` holds nothing.

Ray Tune is told which slot is newest through a tiny checkpoint of its own (`pointer.json`,
`POINTER_FILE`); see `trainables.reporting` for how a restarted trial uses it.
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import shutil
import tempfile
import uuid
from collections.abc import Callable, Collection
from pathlib import Path
from typing import Any

import pyarrow.fs

from trainables.checkpoints import (
    CheckpointError,
    has_checkpoint,
    load_round_checkpoint,
    save_round_checkpoint,
    stored_tensors,
)
from trainables.round_store import INDEX_FILE

ROUND_PREFIX = "round_"
PROGRESS_PREFIX = "progress_"
#: The one file of the checkpoint a trial reports to Ray: `{"slot": <slot name>}`.
POINTER_FILE = "pointer.json"
_SLOT = re.compile(r"(round|progress)_(\d{6})(?:_(\d{6}))?")
#: Round checkpoints of the layout before this store: Ray's own checkpoint directories.
LEGACY_PREFIX = "checkpoint_"


def read_pointer(filesystem: pyarrow.fs.FileSystem, checkpoint_path: str) -> str | None:
    """The slot named by the Ray checkpoint at `checkpoint_path` (None: not a pointer, or gone)."""
    try:
        with filesystem.open_input_stream(f"{checkpoint_path}/{POINTER_FILE}") as stream:
            return str(json.loads(stream.read())["slot"])
    except (OSError, ValueError, KeyError, TypeError):
        return None


def slot_name(state: dict[str, Any]) -> str:
    """The slot a checkpoint state goes to: its round, and for progress its epochs done."""
    if state.get("kind") == "progress":
        return f"{PROGRESS_PREFIX}{state['round']:06d}_{state['phase']['epochs_done']:06d}"
    return f"{ROUND_PREFIX}{state['round']:06d}"


def slot_order(name: str) -> tuple[int, int, int] | None:
    """Sort key of a slot name (None for other names): progress within round R comes before
    round R's own checkpoint, which comes before anything of round R + 1."""
    match = _SLOT.fullmatch(name)
    if match is None or (match.group(1) == "round") != (match.group(3) is None):
        return None
    kind, number, epochs = match.groups()
    return (int(number), 1, 0) if kind == "round" else (int(number), 0, int(epochs))


def is_round_slot(name: str) -> bool:
    return name.startswith(ROUND_PREFIX) and slot_order(name) is not None


def round_dirs(trial_dir: Path) -> list[Path]:
    """A trial directory's complete round checkpoints, oldest first, of either layout (this
    store's `round_*` slots, or the earlier layout's `checkpoint_*` directories)."""
    slots = sorted((path for path in trial_dir.glob(f"{ROUND_PREFIX}*")
                    if is_round_slot(path.name) and has_checkpoint(path)),
                   key=lambda path: slot_order(path.name))
    legacy = sorted(path for path in trial_dir.glob(f"{LEGACY_PREFIX}*")
                    if has_checkpoint(path) and (path / "metrics.json").is_file())
    return legacy + slots


def held_for(trial_dir: Path | None, shared: Path | None = None,
             before: str | None = None) -> dict[str, str]:
    """The tensors a new checkpoint of the trial in `trial_dir` can reference: those held by
    its round slots ordered before slot `before` (a later one may be a leftover of an earlier
    attempt, rewritten later), and those `shared` holds (named by its path relative to
    `trial_dir`) when it lies in the same experiment directory, so that the experiment stays
    whole when moved. None for `trial_dir` (cloud storage): nothing, every slot stands alone."""
    if trial_dir is None:
        return {}
    held = {}
    if shared is not None:
        relative = os.path.relpath(shared, trial_dir)
        if not relative.startswith(os.path.join(os.pardir, os.pardir)):
            held = dict.fromkeys(stored_tensors([shared]), relative)
    limit = slot_order(before) if before is not None else None
    rounds = [path for path in round_dirs(trial_dir)
              if limit is None or (slot_order(path.name) or (-1, 0, 0)) < limit]
    return {**held, **stored_tensors(rounds)}


class TrialStore:
    """The slots of one trial directory on a pyarrow filesystem (`for_directory` for a local
    one)."""

    def __init__(self, filesystem: pyarrow.fs.FileSystem, path: str) -> None:
        self.filesystem = filesystem
        self.path = path.rstrip("/")
        self.local = isinstance(filesystem, pyarrow.fs.LocalFileSystem)

    @classmethod
    def for_directory(cls, directory: str | Path) -> TrialStore:
        return cls(pyarrow.fs.LocalFileSystem(), str(Path(directory).absolute()))

    # ---- listing ------------------------------------------------------------------------

    def slots(self) -> list[str]:
        """The names of the slots, oldest first (a slot without its index is listed, and
        refused with a message when loaded)."""
        selector = pyarrow.fs.FileSelector(self.path, allow_not_found=True)
        names = [info.base_name for info in self.filesystem.get_file_info(selector)
                 if info.type == pyarrow.fs.FileType.Directory
                 and slot_order(info.base_name) is not None]
        return sorted(names, key=slot_order)

    # ---- writing ------------------------------------------------------------------------

    def write(self, state: dict[str, Any], shared: Path | None = None) -> str:
        """Write `state` to its slot (replacing an earlier attempt's copy); returns the slot's
        name. CheckpointError if it cannot be written."""
        name = slot_name(state)
        if self.local:
            self._write_local(name, state, shared)
        else:
            self._upload(name, state)
        return name

    def keep_only(self, name: str) -> None:
        """Remove every progress slot but `name`: once the slot written last is known to the
        driver, nothing will resume from an older one."""
        for other in self.slots():
            if other != name and other.startswith(PROGRESS_PREFIX):
                self._delete(other)

    def _write_local(self, name: str, state: dict[str, Any], shared: Path | None) -> None:
        trial_dir = Path(self.path)
        trial_dir.mkdir(parents=True, exist_ok=True)
        staging = trial_dir / f".{name}.tmp-{uuid.uuid4().hex[:8]}"
        try:
            save_round_checkpoint(staging, state, held_for(trial_dir, shared, before=name))
            target = trial_dir / name
            if target.exists():  # left by an earlier attempt of this trial: replaced
                old = trial_dir / f".{name}.old-{uuid.uuid4().hex[:8]}"
                target.rename(old)
                staging.rename(target)
                shutil.rmtree(old, ignore_errors=True)
            else:
                staging.rename(target)
        finally:
            shutil.rmtree(staging, ignore_errors=True)

    def _upload(self, name: str, state: dict[str, Any]) -> None:
        target = f"{self.path}/{name}"
        with tempfile.TemporaryDirectory(prefix="prunetune-slot-") as staging:
            save_round_checkpoint(staging, state)
            self._delete(name)
            try:
                self.filesystem.create_dir(target)
                files = sorted(Path(staging).iterdir(), key=lambda path: path.name == INDEX_FILE)
                for path in files:  # the index last: without it the slot holds nothing
                    pyarrow.fs.copy_files(str(path), f"{target}/{path.name}",
                                          destination_filesystem=self.filesystem)
            except OSError as error:
                raise CheckpointError(f"{target}: could not write checkpoint: {error}") from error

    def _delete(self, name: str) -> None:
        with contextlib.suppress(OSError):  # a leftover costs disk, not correctness
            self.filesystem.delete_dir(f"{self.path}/{name}")

    # ---- reading ------------------------------------------------------------------------

    def load(self, name: str, only: Collection[str] | None = None) -> dict[str, Any]:
        """The state in slot `name`; CheckpointError if it is unusable."""
        if self.local:
            return load_round_checkpoint(Path(self.path) / name, only)
        with tempfile.TemporaryDirectory(prefix="prunetune-slot-") as local:
            try:
                pyarrow.fs.copy_files(f"{self.path}/{name}", local,
                                      source_filesystem=self.filesystem)
            except OSError as error:
                raise CheckpointError(f"{self.path}/{name}: unreadable checkpoint "
                                      f"({error})") from None
            try:
                return load_round_checkpoint(local, only)
            except CheckpointError as error:  # named by where it lies, not by the local copy
                raise CheckpointError(str(error).replace(local, f"{self.path}/{name}")) from None

    def newest_usable(self, names: list[str] | None = None,
                      warn: Callable[[str], None] = print) -> tuple[str, dict[str, Any]] | None:
        """The newest loadable slot among `names` (default: all) and its state; an unusable one
        is reported with its path and passed over, never loaded."""
        for name in reversed(self.slots() if names is None else names):
            try:
                return name, self.load(name)
            except CheckpointError as error:
                warn(f"prunetune: skipping unusable checkpoint: {error}")
        return None
