"""Test-only fault injection: makes a trial crash, die, stall, diverge or hit a full disk at a
chosen point, so the reliability tests can cause real faults inside real Ray workers.

Inert unless the environment variable ``PRUNETUNE_FAULT`` is set; never set it in real sweeps.
Ray workers inherit it from the process that starts Ray (``run_sweep.py`` starting Ray
in-process, or the test that starts a ``ray.cluster_utils.Cluster``).

Syntax: entries separated by ``;``, each ``KIND[:KEY=VALUE,...][:MARKER]``.

- KIND: ``crash_once`` (raise RuntimeError), ``kill_once`` (SIGKILL the trial's own process),
  ``stall_once`` (sleep ``seconds``), at the start of a training epoch; ``nan_loss`` (the
  training loss becomes NaN); ``enospc`` (writing a round checkpoint fails with ENOSPC after a
  partial write).
- KEY=VALUE: conditions on ``round``, ``epoch``, ``seed`` and ``rank`` (a data-parallel
  worker's rank; 0 in a one-process trial) (all must match; an absent key
  matches anything), plus the parameter ``seconds`` for ``stall_once``.
- MARKER: a file path; the fault fires only if it can create that file (atomically), so it fires
  once across restarts and processes, and it holds the pid of the process it hit. Without a
  marker it fires every time it matches.

Example: ``PRUNETUNE_FAULT="crash_once:round=1,epoch=0,seed=0:/tmp/crashed"``.
"""

from __future__ import annotations

import contextlib
import errno
import os
import signal
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

ENV_VAR = "PRUNETUNE_FAULT"
KINDS = ("crash_once", "kill_once", "stall_once", "nan_loss", "enospc")
_CONDITIONS = ("round", "epoch", "seed", "rank")
_PARAMETERS = ("seconds",)


class InjectedFaultError(RuntimeError):
    """The crash a `crash_once` fault raises (deliberately not a PrunetuneError)."""


@dataclass(frozen=True)
class Fault:
    kind: str
    conditions: dict[str, int] = field(default_factory=dict)
    parameters: dict[str, float] = field(default_factory=dict)
    marker: str | None = None

    def matches(self, kind: str, where: dict[str, int | None]) -> bool:
        return self.kind == kind and all(
            where.get(key) == value for key, value in self.conditions.items()
        )

    def claim(self) -> bool:
        """True if the fault should fire now (its marker, if any, created by this call)."""
        if self.marker is None:
            return True
        try:
            descriptor = os.open(self.marker, os.O_CREAT | os.O_EXCL | os.O_WRONLY)
        except FileExistsError:
            return False
        with os.fdopen(descriptor, "w") as stream:
            stream.write(str(os.getpid()))  # which process the fault hit
        return True


def parse_faults(text: str) -> list[Fault]:
    """Parse a PRUNETUNE_FAULT value; ValueError (naming the entry) if malformed."""
    faults = []
    for entry in filter(None, (part.strip() for part in text.split(";"))):
        kind, _, rest = entry.partition(":")
        settings, _, marker = rest.partition(":")
        if kind not in KINDS:
            raise ValueError(f"{ENV_VAR}: unknown fault {kind!r} in {entry!r}; one of {KINDS}")
        conditions: dict[str, int] = {}
        parameters: dict[str, float] = {}
        for item in filter(None, settings.split(",")):
            key, _, value = item.partition("=")
            if key in _CONDITIONS:
                conditions[key] = int(value)
            elif key in _PARAMETERS:
                parameters[key] = float(value)
            else:
                raise ValueError(f"{ENV_VAR}: unknown key {key!r} in {entry!r}")
        faults.append(Fault(kind, conditions, parameters, marker or None))
    return faults


def _active(kind: str, **where: int | None) -> Fault | None:
    text = os.environ.get(ENV_VAR)
    if not text:
        return None
    for fault in parse_faults(text):
        if fault.matches(kind, where) and fault.claim():
            return fault
    return None


@contextlib.contextmanager
def injected_into_epoch(stepper: Any, seed: int, round_index: int, epoch: int,
                        rank: int = 0) -> Iterator[None]:
    """Around one training epoch of `stepper` (trainables.loop.Stepper): the crash, kill or
    stall set for its start, and a NaN loss for its steps (`stepper.loss_fn` replaced for the
    epoch). Inert unless the environment variable is set."""
    if not os.environ.get(ENV_VAR):
        yield
        return
    at_epoch_start(seed, round_index, epoch, rank)
    if not nan_loss(seed, round_index, epoch):
        yield
        return
    original = stepper.loss_fn

    def poisoned(logits: Any, targets: Any) -> Any:
        return original(logits, targets) * float("nan")

    stepper.loss_fn = poisoned
    try:
        yield
    finally:
        stepper.loss_fn = original


def at_epoch_start(seed: int, round_index: int, epoch: int, rank: int = 0) -> None:
    """The crash/kill/stall hook, called before each training epoch."""
    if not os.environ.get(ENV_VAR):
        return
    where = {"seed": seed, "round": round_index, "epoch": epoch, "rank": rank}
    if _active("kill_once", **where) is not None:
        os.kill(os.getpid(), signal.SIGKILL)
    if _active("crash_once", **where) is not None:
        raise InjectedFaultError(f"injected crash at round {round_index}, epoch {epoch}")
    stall = _active("stall_once", **where)
    if stall is not None:
        time.sleep(stall.parameters.get("seconds", 10.0))


def nan_loss(seed: int, round_index: int, epoch: int) -> bool:
    """True if this epoch's training loss should be made NaN."""
    if not os.environ.get(ENV_VAR):
        return False
    return _active("nan_loss", seed=seed, round=round_index, epoch=epoch) is not None


def before_checkpoint_write(path: os.PathLike[str] | str, seed: int | None,
                            round_index: int | None) -> None:
    """Simulate a full disk while a checkpoint file is being written (after a partial write)."""
    if not os.environ.get(ENV_VAR):
        return
    if _active("enospc", seed=seed, round=round_index) is not None:
        with open(path, "wb") as stream:
            stream.write(b"PK\x03\x04 partial")
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC), str(path))
