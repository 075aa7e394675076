"""A crash while writing a checkpoint, or a disk that fills, never leaves a trial resuming from
garbage: corrupt or half-written checkpoints are reported by path and skipped, and a failed write
is a CheckpointError naming the file. Runs the trainable in-process (no Ray)."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
import torch
from invariants import check_experiment

from trainables import faults
from trainables.checkpoints import (
    CheckpointError,
    load_round_checkpoint,
    save_round_checkpoint,
)
from trainables.reporting import DirectoryReporter
from trainables.resolve import parse_trial_config
from trainables.round_store import INDEX_FILE, TENSORS_FILE
from trainables.trial import run_trial
from trainables.trial_store import TrialStore


@pytest.fixture(scope="module")
def imp_trial_dir(tiny_trial, tmp_path_factory) -> Path:
    """A finished 2-round IMP trial in DirectoryReporter layout (plus params.json)."""
    raw = tiny_trial(
        method="imp",
        imp={"rounds": 2, "rate": 0.5, "rewind": "epoch:1"},
        train={"max_eval_batches": 2},
    )
    directory = tmp_path_factory.mktemp("imp-trial")
    (directory / "params.json").write_text(json.dumps({"trial": raw}))
    run_trial(parse_trial_config(raw), DirectoryReporter(directory), cpus=1)
    return directory


@pytest.fixture
def trial_copy(imp_trial_dir, tmp_path) -> Path:
    target = tmp_path / "trial"
    shutil.copytree(imp_trial_dir, target)
    return target


def round_dirs(trial_dir: Path) -> list[Path]:
    """The round checkpoints, oldest first (progress checkpoints are gone once a trial ends)."""
    dirs = sorted(trial_dir.glob("round_*"))
    assert [load_round_checkpoint(d)["round"] for d in dirs] == [0, 1, 2]
    return dirs


def test_finished_trial_checkpoints_satisfy_invariants(imp_trial_dir):
    assert check_experiment(imp_trial_dir) == 3


@pytest.mark.parametrize("damage", ["truncate", "garbage", "empty", "missing"])
@pytest.mark.parametrize("part", [TENSORS_FILE, INDEX_FILE])
def test_corrupt_newest_checkpoint_falls_back_to_previous(trial_copy, damage, part, capsys):
    previous_dir, newest_dir = round_dirs(trial_copy)[1:]
    expected = load_round_checkpoint(previous_dir)
    newest = newest_dir / part
    intact = newest.read_bytes()
    if damage == "truncate":
        newest.write_bytes(intact[: len(intact) // 2])
    elif damage == "garbage":
        newest.write_bytes(b"\x00not a checkpoint" * 100)
    elif damage == "empty":
        newest.write_bytes(b"")
    else:  # crash between writing the .tmp and the rename
        newest.rename(newest.with_name(part + ".tmp"))

    state = DirectoryReporter(trial_copy).latest_state()

    assert state is not None and state["round"] == 1
    for name, tensor in expected["model"].items():
        assert torch.equal(state["model"][name], tensor)
    printed = capsys.readouterr().out.strip().splitlines()
    assert len(printed) == 1, printed
    assert "skipping unusable checkpoint" in printed[0] and str(newest) in printed[0]


def test_every_checkpoint_corrupt_gives_none_never_garbage(trial_copy):
    for state_file in trial_copy.glob(f"round_*/{TENSORS_FILE}"):
        state_file.write_bytes(state_file.read_bytes()[:100])
    warnings: list[str] = []
    dirs = sorted(trial_copy.glob("round_*"))
    assert TrialStore.for_directory(trial_copy).newest_usable(warn=warnings.append) is None
    assert len(warnings) == len(dirs) == 3
    assert all(str(d) in w for d, w in zip(reversed(dirs), warnings, strict=True))


def test_leftover_tmp_file_is_ignored(trial_copy, capsys):
    newest = round_dirs(trial_copy)[-1]
    (newest / f"{TENSORS_FILE}.tmp").write_bytes(b"half a safetensors file")
    state = DirectoryReporter(trial_copy).latest_state()
    assert state["round"] == 2
    assert capsys.readouterr().out == ""


def test_truncated_file_raises_checkpoint_error_naming_the_path(trial_copy):
    path = round_dirs(trial_copy)[1] / TENSORS_FILE
    path.write_bytes(path.read_bytes()[:-200])
    with pytest.raises(CheckpointError, match=str(path).replace(".", r"\.")) as raised:
        load_round_checkpoint(path.parent)
    assert "\n" not in str(raised.value)


def test_disk_full_while_saving_names_path_and_keeps_previous(trial_copy, monkeypatch):
    directory = round_dirs(trial_copy)[-1]
    state = load_round_checkpoint(directory)
    before = {path.name: path.read_bytes() for path in directory.iterdir()}
    monkeypatch.setenv(faults.ENV_VAR, "enospc")
    with pytest.raises(CheckpointError) as raised:
        save_round_checkpoint(directory, {k: v for k, v in state.items() if k != "format_version"})
    message = str(raised.value)
    assert str(directory / INDEX_FILE) in message and "No space left on device" in message
    # No partial file left; the previous checkpoint in place is untouched.
    assert {path.name: path.read_bytes() for path in directory.iterdir()} == before


def test_disk_full_while_writing_a_slot_leaves_no_slot_and_keeps_the_others(trial_copy,
                                                                           monkeypatch):
    newest = round_dirs(trial_copy)[-1]
    state = load_round_checkpoint(newest)
    state = {**{k: v for k, v in state.items() if k != "format_version"}, "round": 3}
    before = sorted(path.name for path in trial_copy.iterdir())
    monkeypatch.setenv(faults.ENV_VAR, "enospc")
    with pytest.raises(CheckpointError, match="No space left on device"):
        TrialStore.for_directory(trial_copy).write(state)
    assert sorted(path.name for path in trial_copy.iterdir()) == before
    assert DirectoryReporter(trial_copy).latest_state()["round"] == 2


def test_fault_spec_parsing_and_once_markers(tmp_path, monkeypatch):
    marker = tmp_path / "fired"
    parsed = faults.parse_faults(f"crash_once:round=1,epoch=0:{marker}; nan_loss:seed=2")
    assert parsed[0].conditions == {"round": 1, "epoch": 0} and parsed[0].marker == str(marker)
    assert parsed[1].kind == "nan_loss" and parsed[1].marker is None
    with pytest.raises(ValueError, match="unknown fault"):
        faults.parse_faults("explode")
    monkeypatch.setenv(faults.ENV_VAR, f"crash_once:round=1,epoch=0:{marker}")
    faults.at_epoch_start(seed=0, round_index=0, epoch=0)  # not the chosen point
    with pytest.raises(faults.InjectedFaultError):
        faults.at_epoch_start(seed=0, round_index=1, epoch=0)
    faults.at_epoch_start(seed=0, round_index=1, epoch=0)  # fires once only
    monkeypatch.delenv(faults.ENV_VAR)
    assert not faults.nan_loss(seed=2, round_index=1, epoch=0)  # inert when unset
