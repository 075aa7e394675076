"""A superseded progress checkpoint stays restorable.

The sweep's driver saves its experiment state now and then. If it is killed after a trial
reported progress checkpoint B (so A was superseded) but before saving again, a resumed sweep
asks the trial to restore A. Ray Tune refuses a checkpoint whose directory is gone, so A is
emptied down to a marker instead of removed, and the trial follows the marker to B.

Ray Tune's side is played here by a stand-in that persists each reported checkpoint as
`checkpoint_<n>` in a trial directory, as Tune's storage layer does.
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
from trainables.checkpoints import load_round_checkpoint
from trainables.reporting import SUPERSEDED, TuneReporter, usable_checkpoint_dirs


class FakeTune:
    """`tune.report` / `tune.get_checkpoint` over one trial directory."""

    def __init__(self, trial_dir: Path) -> None:
        self.trial_dir = trial_dir
        self.current: tune.Checkpoint | None = None
        self.rows: list[dict[str, Any]] = []

    def report(self, row: dict[str, Any], checkpoint: tune.Checkpoint | None = None) -> None:
        self.rows.append(row)
        if checkpoint is not None:
            target = self.trial_dir / f"checkpoint_{len(list(self.trial_dir.iterdir())):06d}"
            shutil.copytree(checkpoint.path, target)
            self.current = tune.Checkpoint.from_directory(str(target))

    def get_checkpoint(self) -> tune.Checkpoint | None:
        return self.current


@pytest.fixture
def fake_tune(tmp_path, monkeypatch) -> FakeTune:
    fake = FakeTune(tmp_path)
    monkeypatch.setattr(tune, "report", fake.report)
    monkeypatch.setattr(tune, "get_checkpoint", fake.get_checkpoint)
    return fake


def progress(epoch: int) -> dict[str, Any]:
    return {"kind": reporting.PROGRESS, "round": 1, "epoch": epoch,
            "model": {"w": torch.full((3,), float(epoch))}}


def epoch_row(epoch: int) -> dict[str, Any]:
    return {"row_type": "epoch", "round": 1, "epoch": epoch}


def test_a_restore_of_a_superseded_checkpoint_resumes_from_the_newer_one(fake_tune, tmp_path):
    first = TuneReporter()
    first.report([epoch_row(1)], progress(1))
    stale = fake_tune.current  # what the killed driver's saved state still names
    first.report([epoch_row(2)], progress(2))
    newer = fake_tune.current

    # The older checkpoint still exists for Tune, holding only its marker.
    assert Path(stale.path).is_dir()
    assert [p.name for p in Path(stale.path).iterdir()] == [SUPERSEDED]
    assert usable_checkpoint_dirs(tmp_path) == [Path(newer.path)]

    # The resumed sweep restores the stale one: the trial continues after epoch 2, not epoch 1.
    fake_tune.current = stale
    resumed = TuneReporter()
    state = resumed.latest_state()
    assert state["epoch"] == 2
    assert torch.equal(state["model"]["w"], torch.full((3,), 2.0))

    # Its next checkpoint supersedes the one it resumed from (emptied, not left whole).
    resumed.report([epoch_row(3)], progress(3))
    assert [p.name for p in Path(newer.path).iterdir()] == [SUPERSEDED]
    assert [d.name for d in usable_checkpoint_dirs(tmp_path)] == [Path(fake_tune.current.path).name]


def test_a_restore_of_the_newest_checkpoint_is_unchanged(fake_tune):
    reporter = TuneReporter()
    reporter.report([epoch_row(1)], progress(1))
    reporter.report([epoch_row(2)], progress(2))
    assert TuneReporter().latest_state()["epoch"] == 2


def round_state(number: int) -> dict[str, Any]:
    row = {"row_type": "round", "round": number, "test_acc": 0.5}
    return {"kind": "round", "round": number, "metrics": row, "layer_sparsity": {},
            "model": {"w": torch.full((3,), 10.0 + number)}}


@pytest.mark.parametrize("logged", [False, True])
def test_a_round_checkpoint_the_driver_never_logged_is_reported_again(fake_tune, tmp_path,
                                                                      logged):
    """The trial reported progress, then round 1 with its checkpoint, and crashed before the
    driver logged the round: restored from the (superseded) progress checkpoint, it continues
    after round 1 and reports round 1's row again, with a copy of its checkpoint; unless the
    round's row is in result.json already."""
    first = TuneReporter()
    first.report([epoch_row(1)], progress(1))
    stale = fake_tune.current
    first.report([{"row_type": "round", "round": 1, "test_acc": 0.5}], round_state(1))
    round_dir = Path(fake_tune.current.path)
    if logged:
        rows = [{"row_type": "epoch"}, {"round": 1, "checkpoint_dir_name": round_dir.name}]
        (tmp_path / "result.json").write_text("".join(json.dumps(r) + "\n" for r in rows))
    fake_tune.current, fake_tune.rows = stale, []

    state = TuneReporter().latest_state()
    assert state["kind"] == "round" and state["round"] == 1
    if logged:
        assert fake_tune.rows == []
    else:
        assert fake_tune.rows == [{"row_type": "round", "round": 1, "test_acc": 0.5}]
        copy = Path(fake_tune.current.path)
        assert copy != round_dir and torch.equal(
            load_round_checkpoint(copy)["model"]["w"],
            torch.full((3,), 11.0))
