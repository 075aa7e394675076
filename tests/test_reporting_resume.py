"""A restarted trial resumes from the right slot of its store, and reports each row once.

The sweep's driver saves its experiment state now and then, naming the trial's newest Ray
checkpoint (a pointer to a slot). If it is killed after the trial replaced that progress slot
and before saving again, a resumed sweep hands the trial a pointer to a slot that is gone: the
trial continues from its newest slot instead.

Ray Tune's side is played here by a stand-in that persists each reported checkpoint as
`checkpoint_<n>` in the trial directory and, as `CheckpointConfig(num_to_keep=1)` does, deletes
the one before.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path
from typing import Any

import pytest
import torch
from ray import tune

from trainables import reporting
from trainables.reporting import ROUND_CHECKPOINT, TuneReporter
from trainables.round_store import TENSORS_FILE
from trainables.trial_store import POINTER_FILE, TrialStore


class FakeTune:
    """`tune.report` / `tune.get_checkpoint` over one trial directory."""

    def __init__(self, trial_dir: Path) -> None:
        self.trial_dir = trial_dir
        self.current: tune.Checkpoint | None = None
        self.rows: list[dict[str, Any]] = []
        self.count = 0

    def report(self, row: dict[str, Any], checkpoint: tune.Checkpoint | None = None) -> None:
        self.rows.append(row)
        if checkpoint is not None:
            target = self.trial_dir / f"checkpoint_{self.count:06d}"
            self.count += 1
            shutil.copytree(checkpoint.path, target)
            if self.current is not None:
                shutil.rmtree(self.current.path, ignore_errors=True)
            self.current = tune.Checkpoint.from_directory(str(target))

    def get_checkpoint(self) -> tune.Checkpoint | None:
        return self.current

    def pointed(self) -> str:
        return json.loads((Path(self.current.path) / POINTER_FILE).read_text())["slot"]


@pytest.fixture
def fake_tune(tmp_path, monkeypatch) -> FakeTune:
    fake = FakeTune(tmp_path)
    monkeypatch.setattr(tune, "report", fake.report)
    monkeypatch.setattr(tune, "get_checkpoint", fake.get_checkpoint)
    return fake


def reporter(tmp_path: Path) -> TuneReporter:
    return TuneReporter(TrialStore.for_directory(tmp_path))


def progress(epoch: int) -> dict[str, Any]:
    return {"kind": reporting.PROGRESS, "round": 1, "epoch": epoch,
            "phase": {"epochs_done": epoch}, "model": {"w": torch.full((3,), float(epoch))}}


def epoch_row(epoch: int) -> dict[str, Any]:
    return {"row_type": "epoch", "round": 1, "epoch": epoch}


def round_state(number: int) -> dict[str, Any]:
    row = {"row_type": "round", "round": number, "test_acc": 0.5}
    return {"kind": "round", "round": number, "metrics": row, "layer_sparsity": {},
            "model": {"w": torch.full((3,), 10.0 + number)}}


def slots(tmp_path: Path) -> list[str]:
    return TrialStore.for_directory(tmp_path).slots()


def test_a_trial_keeps_one_progress_slot_and_ray_one_pointer(fake_tune, tmp_path):
    first = reporter(tmp_path)
    first.report([epoch_row(1)], progress(1))
    assert fake_tune.pointed() == "progress_000001_000001"
    first.report([epoch_row(2)], progress(2))
    assert slots(tmp_path) == ["progress_000001_000002"]
    assert fake_tune.pointed() == "progress_000001_000002"
    first.report([{"row_type": "round", "round": 1}], round_state(1))
    assert slots(tmp_path) == ["round_000001"]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["checkpoint_000002", "round_000001"]
    assert fake_tune.rows[-1] == {"row_type": "round", "round": 1,
                                  ROUND_CHECKPOINT: "round_000001"}


def test_a_restore_of_a_replaced_progress_slot_resumes_from_the_newer_one(fake_tune, tmp_path):
    first = reporter(tmp_path)
    first.report([epoch_row(1)], progress(1))
    stale = Path(fake_tune.current.path)
    kept = tmp_path / "saved"
    shutil.copytree(stale, kept)  # the pointer the killed driver's saved state still names
    first.report([epoch_row(2)], progress(2))
    assert not stale.exists()

    # The resumed sweep restores the stale pointer: the trial continues after epoch 2.
    fake_tune.current = tune.Checkpoint.from_directory(str(kept))
    state = reporter(tmp_path).latest_state()
    assert state["epoch"] == 2
    assert torch.equal(state["model"]["w"], torch.full((3,), 2.0))


def test_a_restore_of_the_newest_pointer_is_unchanged(fake_tune, tmp_path):
    first = reporter(tmp_path)
    first.report([epoch_row(1)], progress(1))
    first.report([epoch_row(2)], progress(2))
    assert reporter(tmp_path).latest_state()["epoch"] == 2


def test_a_slot_written_but_never_reported_is_not_resumed_from(fake_tune, tmp_path):
    """Killed between writing a slot and reporting it: the rows of that slot never reached the
    driver, so the trial resumes from the slot the driver knows and runs those epochs again."""
    first = reporter(tmp_path)
    first.report([epoch_row(1)], progress(1))
    TrialStore.for_directory(tmp_path).write(progress(2))
    state = reporter(tmp_path).latest_state()
    assert state["epoch"] == 1


def test_an_unusable_pointed_slot_falls_back_to_an_earlier_one(fake_tune, tmp_path, capsys):
    first = reporter(tmp_path)
    first.report([{"row_type": "round", "round": 0}], round_state(0))
    first.report([{"row_type": "round", "round": 1}], round_state(1))
    (tmp_path / "round_000001" / TENSORS_FILE).write_bytes(b"garbage")
    state = reporter(tmp_path).latest_state()
    assert state["round"] == 0
    assert "round_000001" in capsys.readouterr().out


@pytest.mark.parametrize("logged", [False, True])
def test_a_round_checkpoint_the_driver_never_logged_is_reported_again(fake_tune, tmp_path,
                                                                      logged):
    """The trial reported progress, then round 1 with its checkpoint, and the driver was killed
    before saving its state or logging the round: restored from the (replaced) progress slot's
    pointer, the trial continues after round 1 and reports round 1's row again, pointing to its
    slot; unless the round's row is in result.json already."""
    first = reporter(tmp_path)
    first.report([epoch_row(1)], progress(1))
    kept = tmp_path / "saved"
    shutil.copytree(fake_tune.current.path, kept)
    first.report([{"row_type": "round", "round": 1, "test_acc": 0.5}], round_state(1))
    if logged:
        rows = [{"row_type": "epoch"},
                {"row_type": "round", "round": 1, ROUND_CHECKPOINT: "round_000001"}]
        (tmp_path / "result.json").write_text("".join(json.dumps(r) + "\n" for r in rows))
    fake_tune.current, fake_tune.rows = tune.Checkpoint.from_directory(str(kept)), []

    state = reporter(tmp_path).latest_state()
    assert state["kind"] == "round" and state["round"] == 1
    if logged:
        assert fake_tune.rows == []
    else:
        assert fake_tune.rows == [{"row_type": "round", "round": 1, "test_acc": 0.5,
                                   ROUND_CHECKPOINT: "round_000001"}]
        assert fake_tune.pointed() == "round_000001"
