"""result.json as the sweep writes it (sweeps/json_rows.py) and as analysis reads it: rows
without Ray's copy of the config (params.json holds it once), and epoch rows that analysis can
pass over unparsed when it wants round rows only."""

from __future__ import annotations

import json
from pathlib import Path
from types import SimpleNamespace

import pytest

from analysis.load import _json_rows, load_trial
from sweeps.json_rows import RowsJsonLogger


class FakeTrial(SimpleNamespace):
    """What the JSON logger reads of a Tune trial; hashable by identity, as Trial is."""

    __hash__ = object.__hash__


@pytest.fixture
def trial(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> FakeTrial:
    monkeypatch.setattr(RowsJsonLogger, "_restore_from_remote", lambda self, name, trial: None)
    config = {"trial": {"method": "imp", "seed": 3}}
    return FakeTrial(local_path=str(tmp_path), config=config, init_local_path=lambda: None)


def test_rows_are_written_without_the_config_and_params_json_keeps_it(trial) -> None:
    logger = RowsJsonLogger()
    epoch = {"row_type": "epoch", "round": 0, "epoch": 0, "val_acc": 0.5,
             "trial_id": "abc_00000", "config": trial.config}
    round_row = {"row_type": "round", "round": 0, "test_acc": 0.75, "trial_id": "abc_00000",
                 "config": trial.config, "final_round": True}
    logger.log_trial_start(trial)
    logger.log_trial_result(1, trial, epoch)
    logger.log_trial_result(2, trial, round_row)
    logger.log_trial_end(trial)
    directory = Path(trial.local_path)
    written = [json.loads(line) for line in (directory / "result.json").read_text().splitlines()]
    assert written == [{k: v for k, v in row.items() if k != "config"}
                       for row in (epoch, round_row)]
    assert json.loads((directory / "params.json").read_text()) == trial.config

    # What analysis reads: the round row, the epoch row passed over without being parsed.
    assert [row["row_type"] for row in _json_rows(directory / "result.json", epochs=False)] == [
        "round"]
    loaded = load_trial(directory, "e")
    assert loaded.round_rows == [written[1]] and loaded.config == trial.config["trial"]
    assert loaded.trial_id == "abc_00000" and loaded.status == "finished"
    assert loaded.epoch_rows() == [written[0]]
