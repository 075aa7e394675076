"""The disk guard's periodic check (sweeps/disk_guard.py) costs one `statvfs` every 2 s, not a
stat of every trial file: the trials' files are summed once a minute, and at once when the free
space comes near what they took. With a clock and a disk standing in, no process started."""

from __future__ import annotations

from pathlib import Path
from types import SimpleNamespace

import pytest

from sweeps import disk_guard
from sweeps.disk_guard import MARGIN_BYTES, DiskGuard

MIB = 2**20


@pytest.fixture
def guard(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> SimpleNamespace:
    world = SimpleNamespace(now=0.0, free=10_000 * MIB, synced=5 * MIB, counts=0, stops=0)

    def synced_bytes(directory: Path) -> int:
        world.counts += 1
        return world.synced

    def stop_experiment() -> bool:
        world.stops += 1
        return True

    monkeypatch.setattr(disk_guard.time, "monotonic", lambda: world.now)
    monkeypatch.setattr(disk_guard.shutil, "disk_usage",
                        lambda path: SimpleNamespace(free=world.free, total=20_000 * MIB))
    monkeypatch.setattr(disk_guard, "synced_bytes", synced_bytes)
    monkeypatch.setattr(disk_guard, "stop_experiment", stop_experiment)
    world.guard = DiskGuard(str(tmp_path), rounds=10, every_s=2.0)
    world.guard.largest_checkpoint = 10 * MIB
    world.trials = [SimpleNamespace(status="RUNNING"), SimpleNamespace(status="RUNNING")]
    return world


def steps(world: SimpleNamespace, seconds: float) -> None:
    """Tune's loop calling on_step_end every 0.5 s for `seconds`."""
    end = world.now + seconds
    while world.now < end:
        world.now += 0.5
        world.guard.on_step_end(iteration=0, trials=world.trials)


def test_with_room_to_spare_the_files_are_summed_once_a_minute(guard) -> None:
    steps(guard, 61.0)
    assert guard.counts == 1 and guard.stops == 0  # the first check (at 2 s), then none
    steps(guard, 2.0)  # a minute after the first count
    assert guard.counts == 2
    steps(guard, 600.0)
    assert guard.counts == 12 and guard.stops == 0


def test_near_the_limit_they_are_summed_at_once_and_the_sweep_stops_below_it(guard) -> None:
    steps(guard, 3.0)
    assert guard.counts == 1
    checkpoints = 2 * 10 * MIB + MARGIN_BYTES  # two running trials' next checkpoints
    guard.free = checkpoints + 4 * guard.synced - 1  # near: counted at the next check
    guard.synced = 40 * MIB  # the rows grew since the last count
    steps(guard, 2.0)
    assert guard.counts == 2
    # Free space is now below the checkpoints plus two copies of what Ray copies: stop.
    assert guard.free < checkpoints + 2 * guard.synced and guard.stops == 1
