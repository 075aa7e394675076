"""Ray's files in an experiment directory: keeping good copies of its state files while a sweep
runs, and, before `--resume`, putting right what a full disk (or a crash while Ray copied its
files to the storage path) left cut off, or refusing with one line.

- Ray's state files (`STATE_PATTERNS`): while the sweep runs, the disk guard
  (`sweeps/disk_guard.py`) keeps the newest whole one of each in `.prunetune/`, written
  atomically. Before a resume, a newest file that is not whole is set aside as
  `<name>.truncated` and the last good copy is put back. Without a good copy the resume is
  refused: Ray would start over with whatever it could read and report fewer trials.
- A trial's `result.json` and `progress.csv` whose last line was cut off lose that partial line:
  Ray appends the resumed trial's rows to them, and a row glued to a partial line would be lost
  (the rows of a checkpoint are reported again with it).
- A trial's `error.pkl` that is not a whole pickle is removed (`error.txt` keeps the message);
  Ray would fail reading it when it lists the results.
"""

from __future__ import annotations

import json
import pickletools
from pathlib import Path

from trainables.errors import ConfigError
from trainables.files import atomic_write

STATE_COPY_DIR = ".prunetune"
# Ray's state files: the trials and their checkpoints; the grid points not yet made trials; the
# Tuner itself (run config, callbacks).
STATE_PATTERNS = ("experiment_state-*.json", "basic-variant-state-*.json", "tuner.pkl")
ROW_FILES = ("result.json", "progress.csv")


def is_whole(data: bytes) -> bool:
    """Whether a state file's bytes are complete: a pickle that runs to its STOP opcode (read
    without unpickling anything; Ray's search state is one, despite its .json name), or else
    JSON that parses."""
    try:
        if data[:1] == b"\x80":  # the PROTO opcode every pickle since protocol 2 starts with
            return any(opcode.name == "STOP" for opcode, _, _ in pickletools.genops(data))
        json.loads(data)
    except ValueError:
        return False
    return True


def write_bytes_atomically(path: Path, data: bytes) -> None:
    atomic_write(path, lambda target: target.write_bytes(data))


def keep_good_copies(directory: Path, copied: dict[str, tuple[str, float]]) -> None:
    """Copy the newest whole file of each of `STATE_PATTERNS` into `.prunetune/` (atomically;
    older copies removed). `copied` remembers what was copied, so unchanged files are not read
    again; a file Ray is writing right now, or a full disk, leaves the previous copy."""
    copies = directory / STATE_COPY_DIR
    for pattern in STATE_PATTERNS:
        states = sorted(directory.glob(pattern))
        if not states:
            continue
        newest = states[-1]
        try:
            stamp = (newest.name, newest.stat().st_mtime)
            if stamp == copied.get(pattern):
                continue
            data = newest.read_bytes()
            if not is_whole(data):
                continue
            copies.mkdir(exist_ok=True)
            write_bytes_atomically(copies / newest.name, data)
        except OSError:
            continue
        for older in copies.glob(pattern):
            if older.name != newest.name:
                older.unlink(missing_ok=True)
        copied[pattern] = stamp


def repair_experiment(directory: Path) -> list[str]:
    """Repair `directory` for Tuner.restore; notes (one line each) on what was repaired.
    ConfigError if it cannot be resumed."""
    notes = []
    for pattern in STATE_PATTERNS:
        notes += _repair_state(directory, pattern)
    for trial_dir in sorted(p.parent for p in directory.glob("*/params.json")):
        for name in ROW_FILES:
            path = trial_dir / name
            if path.is_file() and _cut_partial_line(path):
                notes.append(f"{path}: removed a cut-off last line")
        error = trial_dir / "error.pkl"
        if error.is_file() and not is_whole(error.read_bytes()):
            error.unlink()
            notes.append(f"{error}: removed (cut off; error.txt keeps the message)")
    return notes


def _repair_state(directory: Path, pattern: str) -> list[str]:
    states = sorted(directory.glob(pattern))
    if not states or is_whole(states[-1].read_bytes()):
        return []
    broken = states[-1]
    copies = sorted((directory / STATE_COPY_DIR).glob(pattern))
    if not copies:
        raise ConfigError(
            f"--resume: {broken} is cut off (the disk filled, or Ray was stopped while writing "
            f"it) and no good copy was kept in {directory / STATE_COPY_DIR}; Ray cannot resume "
            "this experiment: run the sweep again under another --name")
    broken.rename(broken.with_name(broken.name + ".truncated"))
    good = copies[-1]
    write_bytes_atomically(directory / good.name, good.read_bytes())
    return [f"{broken}: cut off; put back the last good copy ({good.name}), set the cut-off "
            "one aside as .truncated"]


def _cut_partial_line(path: Path) -> bool:
    """Truncate `path` after its last newline; True if a partial line was removed."""
    data = path.read_bytes()
    if not data or data.endswith(b"\n"):
        return False
    with path.open("r+b") as stream:
        stream.truncate(data.rfind(b"\n") + 1)
    return True
