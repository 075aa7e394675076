"""A results disk that fills during a sweep: the sweep stops at once with one line naming the
disk and what the rest needs, and after space returns `--resume` finishes every trial, with the
rows of an uninterrupted run. Once with a checkpoint writer that raises ENOSPC part-way through
(`PRUNETUNE_FAULT=enospc`), once on a real, small tmpfs (where this machine may mount one)."""

from __future__ import annotations

import re
import subprocess
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest
from invariants import check_experiment
from sweep_helpers import (
    reference_rounds,
    rows,
    run_plot,
    run_sweep,
    tiny_base,
    trial_dirs,
    write_sweep,
)

from trainables.checkpoints import load_round_checkpoint
from trainables.trial_store import TrialStore

IMP = {"rounds": 2, "rate": 0.5, "rewind": "init"}
COMPARED = ("val_acc", "test_acc", "sparsity", "params_total", "params_prunable", "best_epoch")
ONE_LINE = re.compile(
    r"^run_sweep: error: the results disk (\S+) is full \(.* free of .*\): (.*); the rest of "
    r"the sweep needs about .* more \((\d+) round checkpoint\(s\) of up to .*\); free space "
    r"\(or choose another --storage\), then: python sweeps/run_sweep.py (\S+) --resume --name "
    r"(\S+)$")


def imp_sweep(path: Path, data_root: Path, name: str) -> Path:
    """Two IMP trials (seeds 0, 1) of 3 rounds each (dense round 0, two pruned rounds)."""
    return write_sweep(path, name=name, base=tiny_base(data_root, method="imp", imp=IMP),
                       grid={"seed": [0, 1]}, resources={"cpu": 1, "gpu": 0}, max_failures=1)


def assert_resumed_like_uninterrupted(experiment: Path, tmp: Path) -> None:
    """Every trial finished, each round reported once, and the round rows equal the same trial
    run uninterrupted (in-process, same machine); the checkpoints pass the invariants."""
    dirs = trial_dirs(experiment)
    assert sorted(dirs) == [0, 1]
    for seed, trial_dir in dirs.items():
        resumed = rows(trial_dir)
        assert [row["round"] for row in resumed] == [0, 1, 2], seed
        reference = reference_rounds(trial_dir, tmp / f"reference{seed}")
        for got, expected in zip(resumed, reference, strict=True):
            for key in COMPARED:
                assert got[key] == expected[key], (seed, got["round"], key)
    assert check_experiment(experiment) == 6


@pytest.mark.slow
def test_a_write_failing_with_enospc_stops_the_sweep_and_resume_finishes_it(data_root, tmp_path):
    sweep = imp_sweep(tmp_path / "full.yaml", data_root, "full")
    storage = tmp_path / "out"
    # Seed 1's round-1 checkpoint fails part-way with ENOSPC, once (the marker file).
    fault = f"enospc:seed=1,round=1:{tmp_path / 'fired'}"
    first = run_sweep(str(sweep), "--storage", str(storage), fault=fault)
    assert first.returncode == 1, (first.stdout + first.stderr)[-3000:]
    assert (tmp_path / "fired").exists()
    last = first.stderr.strip().splitlines()[-1]
    match = ONE_LINE.match(last)
    assert match, last
    assert match.group(2) == "a trial could not write to it (No space left on device)"
    assert (match.group(4), match.group(5)) == (str(sweep), "full")
    # Stopped at the first failure: the trial was not retried although max_failures is 1, and
    # Ray's advice to call Tuner.restore is not shown.
    assert "Tuner.restore" not in first.stderr
    assert "trials finished" not in first.stdout
    done = sum(len(rows(d)) for d in trial_dirs(storage / "full").values())
    assert done < 6
    # 2 trials x 3 rounds, minus the round checkpoints already written.
    written = list((storage / "full").glob("*/round_*/metrics.json"))
    assert int(match.group(3)) == 6 - len(written)

    resumed = run_sweep(str(sweep), "--storage", str(storage), "--resume", fault=fault)
    assert resumed.returncode == 0, (resumed.stdout + resumed.stderr)[-3000:]
    assert "2/2 trials finished" in resumed.stdout
    assert_resumed_like_uninterrupted(storage / "full", tmp_path)


@pytest.fixture
def small_tmpfs(tmp_path: Path) -> Iterator[Path]:
    """A 3 MiB tmpfs (root and CAP_SYS_ADMIN needed; skipped otherwise), unmounted after."""
    mount = tmp_path / f"tmpfs-{uuid.uuid4().hex[:6]}"
    mount.mkdir()
    done = subprocess.run(["mount", "-t", "tmpfs", "-o", "size=3m", "tmpfs", str(mount)],
                          capture_output=True, text=True)
    if done.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here: {done.stderr.strip() or done.returncode}")
    try:
        yield mount
    finally:
        subprocess.run(["umount", "-l", str(mount)], check=False)


@pytest.mark.slow
def test_a_real_full_disk_stops_the_sweep_and_resume_finishes_it(data_root, tmp_path,
                                                                  small_tmpfs):
    sweep = imp_sweep(tmp_path / "tmpfs.yaml", data_root, "tmpfs")
    first = run_sweep(str(sweep), "--storage", str(small_tmpfs))
    assert first.returncode == 1, (first.stdout + first.stderr)[-3000:]
    last = first.stderr.strip().splitlines()[-1]
    match = ONE_LINE.match(last)
    assert match and match.group(1) == str(small_tmpfs), last
    assert "Traceback" not in first.stdout
    # Whatever the full disk cut off was never under a checkpoint's name: every one loads.
    slots = [trial_dir / name for trial_dir in trial_dirs(small_tmpfs / "tmpfs").values()
             for name in TrialStore.for_directory(trial_dir).slots()]
    assert slots and all(load_round_checkpoint(slot) for slot in slots)

    subprocess.run(["mount", "-o", "remount,size=256m", str(small_tmpfs)], check=True)
    resumed = run_sweep(str(sweep), "--storage", str(small_tmpfs), "--resume")
    assert resumed.returncode == 0, (resumed.stdout + resumed.stderr)[-3000:]
    assert "2/2 trials finished" in resumed.stdout
    experiment = small_tmpfs / "tmpfs"
    assert_resumed_like_uninterrupted(experiment, tmp_path)
    plot = run_plot(str(experiment), "--out", str(tmp_path / "plot"))
    assert plot.returncode == 0, plot.stderr
    assert "unparsable" not in plot.stderr and "cut-off" not in plot.stderr
