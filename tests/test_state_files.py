"""sweeps/state_files.py: Ray's state files are copied only when whole, and before a resume what
a full disk cut off is put right (or the resume refused), without unpickling anything."""

from __future__ import annotations

import json
import pickle
from pathlib import Path

import pytest

from sweeps.state_files import STATE_COPY_DIR, is_whole, keep_good_copies, repair_experiment
from trainables.errors import ConfigError

STATE = "experiment_state-2026-01-01_00-00-00.json"
SEARCH = "basic-variant-state-2026-01-01_00-00-00.json"  # a pickle, whatever its name says


def test_whole_means_json_that_parses_or_a_pickle_that_reaches_stop() -> None:
    state = json.dumps({"trial_data": [["a", "b"]] * 50}).encode()
    search = pickle.dumps({"_iter": 3, "grid": list(range(500))}, protocol=5)
    assert is_whole(state) and is_whole(search)
    for cut in (1, len(state) // 2, len(state) - 1):
        assert not is_whole(state[:cut]), cut
    for cut in (1, 20, len(search) // 2, len(search) - 1):
        assert not is_whole(search[:cut]), cut
    assert not is_whole(b"")


def test_good_copies_follow_the_newest_whole_file_only(tmp_path: Path) -> None:
    copied: dict = {}
    (tmp_path / STATE).write_text('{"trial_data": [1]}')
    (tmp_path / SEARCH).write_bytes(pickle.dumps({"n": 1}))
    keep_good_copies(tmp_path, copied)
    copies = tmp_path / STATE_COPY_DIR
    assert sorted(p.name for p in copies.iterdir()) == sorted([STATE, SEARCH])
    # A newer state that is being written (cut off) leaves the previous good copy in place.
    newer = STATE.replace("00-00-00", "00-00-09")
    (tmp_path / newer).write_text('{"trial_data": [1, ')
    keep_good_copies(tmp_path, copied)
    assert (copies / STATE).read_text() == '{"trial_data": [1]}' and not (copies / newer).exists()
    # Once whole, it replaces the older copy.
    (tmp_path / newer).write_text('{"trial_data": [1, 2]}')
    keep_good_copies(tmp_path, copied)
    assert [p.name for p in copies.glob("experiment_state-*")] == [newer]


def _trial(directory: Path, name: str) -> Path:
    trial = directory / name
    trial.mkdir()
    (trial / "params.json").write_text("{}")
    return trial


def test_repair_puts_back_the_good_copy_and_cuts_partial_lines(tmp_path: Path) -> None:
    (tmp_path / STATE_COPY_DIR).mkdir()
    (tmp_path / STATE_COPY_DIR / STATE).write_text('{"trial_data": [1, 2]}')
    (tmp_path / STATE).write_text('{"trial_data": [1, 2')  # the full disk cut Ray's copy
    trial = _trial(tmp_path, "imp_s0_00000")
    (trial / "result.json").write_text('{"round": 0}\n{"round": 1}\n{"rou')
    (trial / "progress.csv").write_text("round,acc\n0,0.5\n")  # whole: left alone
    error = pickle.dumps(RuntimeError("x" * 300))
    (trial / "error.pkl").write_bytes(error[:-10])
    whole = _trial(tmp_path, "imp_s1_00001")
    (whole / "error.pkl").write_bytes(error)

    notes = repair_experiment(tmp_path)
    assert (tmp_path / STATE).read_text() == '{"trial_data": [1, 2]}'
    assert (tmp_path / f"{STATE}.truncated").read_text() == '{"trial_data": [1, 2'
    assert (trial / "result.json").read_text() == '{"round": 0}\n{"round": 1}\n'
    assert (trial / "progress.csv").read_text() == "round,acc\n0,0.5\n"
    assert not (trial / "error.pkl").exists() and (whole / "error.pkl").read_bytes() == error
    assert len(notes) == 3, notes
    assert repair_experiment(tmp_path) == []  # nothing left to repair


def test_resume_is_refused_when_no_good_copy_was_kept(tmp_path: Path) -> None:
    (tmp_path / SEARCH).write_bytes(pickle.dumps({"n": list(range(100))})[:-3])
    with pytest.raises(ConfigError, match=r"--resume: .*basic-variant-state-.* is cut off") as e:
        repair_experiment(tmp_path)
    assert "\n" not in str(e.value) and "another --name" in str(e.value)
