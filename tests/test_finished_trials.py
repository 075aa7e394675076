"""A finished trial's directory: round checkpoints and rounds.json, no progress slot, no leftovers
(in this layout and in the earlier one, whose experiments a resumed sweep may still finish)."""

from __future__ import annotations

import json
from pathlib import Path
from types import SimpleNamespace

from sweeps.finished_trials import round_index, tidy_finished_trial, tidy_finished_trials
from trainables.schema import ROUND_CHECKPOINT
from trainables.trial_store import POINTER_FILE, TrialStore

#: The earlier layout's superseded progress checkpoint: a directory holding only this file.
SUPERSEDED = "SUPERSEDED"


def _round(number: int, checkpoint: str, test_acc: float) -> dict:
    return {"row_type": "round", "round": number, "checkpoint_dir_name": checkpoint,
            "sparsity": 0.2 * number, "test_acc": test_acc, "val_acc": 0.5,
            "params_prunable": 100 - 20 * number, "status": "ok", "training_iteration": 9}


def _trial(directory: Path) -> Path:
    """Rounds 0 and 1 with a restart between them: progress checkpoints 1-2 superseded, round 1
    reported twice (the second report after the restart wins), and a line cut off at the end."""
    directory.mkdir()
    for number in range(4):
        checkpoint = directory / f"checkpoint_{number:06d}"
        checkpoint.mkdir()
        (checkpoint / ("metrics.json" if number in (0, 3) else SUPERSEDED)).write_text("{}")
    lines = [
        json.dumps(_round(0, "checkpoint_000000", 0.9)),
        json.dumps({"row_type": "epoch", "round": 1, "epoch": 0}),
        json.dumps({"row_type": "epoch", "round": 1, "epoch": 1, "checkpoint_dir_name":
                    "checkpoint_000001"}),
        json.dumps(_round(1, "checkpoint_000002", 0.1)),
        json.dumps(_round(1, "checkpoint_000003", 0.8)),
        '{"row_type": "round", "round": 2, "checkpoint_dir_na',
    ]
    (directory / "result.json").write_text("\n".join(lines) + "\n")
    return directory


def test_round_index_takes_round_rows_with_checkpoints_last_one_winning(tmp_path: Path) -> None:
    lines = (_trial(tmp_path / "t") / "result.json").read_text().splitlines()
    assert round_index(lines) == [
        {"round": 0, "checkpoint": "checkpoint_000000", "sparsity": 0.0, "test_acc": 0.9,
         "val_acc": 0.5, "params_prunable": 100, "status": "ok"},
        {"round": 1, "checkpoint": "checkpoint_000003", "sparsity": 0.2, "test_acc": 0.8,
         "val_acc": 0.5, "params_prunable": 80, "status": "ok"},
    ]


def test_tidy_removes_markers_only_and_writes_the_index(tmp_path: Path) -> None:
    trial = _trial(tmp_path / "t")
    index = tidy_finished_trial(trial)
    assert sorted(p.name for p in trial.glob("checkpoint_*")) == [
        "checkpoint_000000", "checkpoint_000003"]
    assert json.loads((trial / "rounds.json").read_text()) == index
    assert [(e["round"], e["checkpoint"]) for e in index] == [
        (0, "checkpoint_000000"), (1, "checkpoint_000003")]
    assert not list(trial.glob(".rounds.json*"))


def test_errored_and_remote_trials_are_left_as_they_are(tmp_path: Path) -> None:
    finished, errored = _trial(tmp_path / "ok"), _trial(tmp_path / "err")
    results = [SimpleNamespace(path=str(finished), error=None),
               SimpleNamespace(path=str(errored), error=RuntimeError("boom")),
               SimpleNamespace(path="s3://bucket/exp/trial", error=None)]
    assert tidy_finished_trials(results) == 1
    assert (finished / "rounds.json").is_file() and not (errored / "rounds.json").exists()
    assert len(list(errored.glob("checkpoint_*"))) == 4


def test_tidy_removes_leftovers_no_row_names_but_keeps_an_unlogged_round(tmp_path: Path) -> None:
    """Left by a crash: a progress checkpoint (state only), a copy of round 0 under another name
    (a restarted trial reported the round again) and round 5's checkpoint with no row."""
    trial = _trial(tmp_path / "t")
    for number, metrics in ((4, None), (5, {"round": 0}), (6, {"round": 5})):
        checkpoint = trial / f"checkpoint_{number:06d}"
        checkpoint.mkdir()
        (checkpoint / "state.pt").write_bytes(b"weights")
        if metrics is not None:
            (checkpoint / "metrics.json").write_text(json.dumps(metrics))
    index = tidy_finished_trial(trial)
    assert [entry["checkpoint"] for entry in index] == ["checkpoint_000000", "checkpoint_000003"]
    assert sorted(p.name for p in trial.glob("checkpoint_*")) == [
        "checkpoint_000000", "checkpoint_000003", "checkpoint_000006"]


def test_tidy_keeps_an_unindexed_round_a_kept_checkpoint_references(tmp_path: Path) -> None:
    """A restarted trial reported round 3 again (checkpoint_000005, indexed) as a copy that
    references the tensors of the unlogged original (checkpoint_000004): the original stays."""
    import torch

    from trainables.checkpoints import save_round_checkpoint, stored_tensors

    trial = _trial(tmp_path / "t")
    original, copy = trial / "checkpoint_000004", trial / "checkpoint_000005"
    state = {"round": 3, "model": {"w": torch.randn(8)}, "metrics": {"round": 3},
             "layer_sparsity": {}}
    save_round_checkpoint(original, state)
    save_round_checkpoint(copy, state, stored_tensors([original]))
    rows = [{"row_type": "round", "round": 3, "checkpoint_dir_name": copy.name}]
    with (trial / "result.json").open("a") as stream:
        stream.writelines(json.dumps(row) + "\n" for row in rows)
    tidy_finished_trial(trial)
    assert original.is_dir() and copy.is_dir()


def _slot_state(round_number: int, epochs_done: int | None = None) -> dict:
    import torch

    if epochs_done is not None:
        return {"kind": "progress", "round": round_number, "phase": {"epochs_done": epochs_done},
                "model": {"w": torch.ones(4)}}
    return {"kind": "round", "round": round_number, "metrics": {"round": round_number},
            "layer_sparsity": {}, "model": {"w": torch.full((4,), float(round_number))}}


def _slot_trial(directory: Path) -> Path:
    """Rounds 0 and 1 in slots, round 2's progress slot, a staging directory a crash left, Ray's
    pointer, and rows naming the round slots."""
    store = TrialStore.for_directory(directory)
    for state in (_slot_state(0), _slot_state(1), _slot_state(2, epochs_done=3)):
        store.write(state)
    (directory / ".round_000002.tmp-0a1b2c3d").mkdir()
    (directory / "checkpoint_000007").mkdir()
    pointer = directory / "checkpoint_000007" / POINTER_FILE
    pointer.write_text(json.dumps({"slot": "progress_000002_000003"}))
    rows = []
    for number in (0, 1):
        row = _round(number, "", 0.5)
        del row["checkpoint_dir_name"]  # the earlier layout's field
        rows.append({**row, ROUND_CHECKPOINT: f"round_{number:06d}"})
    (directory / "result.json").write_text("".join(json.dumps(row) + "\n" for row in rows))
    return directory


def test_tidy_leaves_a_slot_trial_its_round_slots_and_index(tmp_path: Path) -> None:
    trial = _slot_trial(tmp_path / "t")
    index = tidy_finished_trial(trial)
    assert [(e["round"], e["checkpoint"]) for e in index] == [
        (0, "round_000000"), (1, "round_000001")]
    assert sorted(p.name for p in trial.iterdir()) == [
        "result.json", "round_000000", "round_000001", "rounds.json"]


def test_logged_round_checkpoints_reads_the_slots_round_rows_name(tmp_path: Path) -> None:
    from trainables.reporting import logged_round_checkpoints

    trial = _slot_trial(tmp_path / "t")
    assert logged_round_checkpoints(TrialStore.for_directory(trial)) == {
        "round_000000", "round_000001"}
    assert logged_round_checkpoints(TrialStore.for_directory(tmp_path)) == set()
