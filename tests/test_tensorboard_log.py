"""prunetune's TensorBoard events, read back with TensorBoard's own event reader: the tags and
steps a trial's rows become, the trial as a HParams session with the fields the sweep varies,
and an epoch count that continues after a restart. (Through a real TensorBoard server:
tests/test_sweeps_run.py, over the quickstart.)"""

from __future__ import annotations

import json
import pickle
from collections import defaultdict
from pathlib import Path
from typing import Any

import pytest
from tensorboard.backend.event_processing.event_file_loader import EventFileLoader
from tensorboard.plugins.hparams import api_pb2
from tensorboard.plugins.hparams import metadata as hparams_metadata
from tensorboard.plugins.hparams.plugin_data_pb2 import HParamsPluginData
from tensorboard.util import tensor_util

from sweeps.loggers import LOGGERS, LoggerContext, logger_callbacks
from sweeps.plan import config_text, plan_sweep
from sweeps.tensorboard_log import (
    PrunetuneTensorBoard,
    TrialEvents,
    epoch_scalars,
    round_scalars,
    sparsity_step,
    varying_hparams,
)
from sweeps.tensorboard_view import check_directory
from trainables.errors import ConfigError


def epoch_row(round_index: int, epoch: int, val_acc: float) -> dict[str, Any]:
    return {"row_type": "epoch", "round": round_index, "epoch": epoch, "train_loss": 1.5,
            "train_acc": 0.5, "val_acc": val_acc, "lr": 0.1, "epoch_time_s": 2.0,
            "images_per_s": 100.0, "sparsity": 0.0, "training_iteration": 99}


def round_row(method: str, round_index: int, sparsity: float, test_acc: float) -> dict[str, Any]:
    return {"row_type": "round", "method": method, "round": round_index, "seed": 0,
            "target_sparsity": sparsity, "sparsity": sparsity, "test_acc": test_acc,
            "val_acc": test_acc + 0.01, "params_total": 1000, "flops": 5000,
            "flops_effective": 4000, "latency_ms_b1": 2.0, "speedup_b1": 1.02,
            "speedup_b1_low": None, "latency_disturbed_b1": None, "status": "ok",
            "final_round": False, "layer_sparsity": {"conv1.weight": sparsity / 2,
                                                     "fc.weight": sparsity}}


def read_events(directory: Path) -> tuple[dict[str, list[tuple[int, float]]], list[Any]]:
    """(tag -> [(step, value)], other summary values) of the events files in `directory`."""
    scalars: dict[str, list[tuple[int, float]]] = defaultdict(list)
    others = []
    for path in sorted(directory.glob("events.out.tfevents.*")):
        for event in EventFileLoader(str(path)).Load():
            for value in event.summary.value:
                if value.metadata.plugin_data.plugin_name == "scalars":
                    number = tensor_util.make_ndarray(value.tensor).item()
                    scalars[value.tag].append((event.step, number))
                else:
                    others.append((event.step, value))
    return scalars, others


def test_rows_become_named_scalars_and_other_fields_are_left_out() -> None:
    assert epoch_scalars(epoch_row(2, 3, 0.75)) == {
        "train/loss": 1.5, "train/acc": 0.5, "val/acc": 0.75, "lr": 0.1, "train/sparsity": 0.0,
        "train/round": 2.0}
    scalars = round_scalars({**round_row("imp", 1, 0.8, 0.9), "test_acc": float("nan")})
    assert scalars == {"round/val_acc": pytest.approx(0.91), "round/sparsity": 0.8,
                       "round/params": 1000, "round/flops": 5000, "round/flops_effective": 4000,
                       "round/latency_ms_b1": 2.0, "round/speedup_b1": 1.02}  # NaN, None out
    assert round_scalars({"final_round": True, "status": "ok"}) == {}  # bools are not numbers
    assert (sparsity_step(0.0), sparsity_step(0.9), sparsity_step(0.98999999)) == (0, 9000, 9900)


def planned_trials(experiments: list[dict[str, Any]], seeds: list[int]) -> list[Any]:
    """The trials the planner makes of a sweep with these experiments and seeds."""
    spec = {"name": "t", "base": {"data": {"name": "digits"}, "train": {"epochs": 2}},
            "grid": {"seed": seeds}, "experiments": experiments}
    return list(plan_sweep(spec, "t.yaml", launch_dir=Path("/tmp/prunetune-plan")).trials)


def test_hyperparameters_are_the_deciding_fields_that_vary() -> None:
    trials = planned_trials([
        {"label": "dense", "config": {"method": "dense"}},
        {"label": "imp", "config": {"method": "imp", "imp": {
            "rounds": 3, "rate": 0.5, "rewind": "epoch:1"}}},
        {"label": "snip", "config": {"method": "snip"},
         "grid": {"prune.target_sparsity": [0.5, 0.96]}},
    ], seeds=[0, 1])
    hparams = varying_hparams(trials)
    by_trial = {(t.label, t.config.seed, t.config.prune.target_sparsity):
                hparams.by_trial[config_text(t.raw)] for t in trials}
    # Varying: method, seed, and the sparsity each trial ends at: dense 0, IMP's third round
    # 1 - 0.5^3, SNIP's target. Not imp.rounds or imp.rewind (the same in every IMP trial), not
    # dense_model.keep_epochs (where the dense run keeps weights: how it runs, not what it
    # gives), not the labels (they say what the methods say).
    assert list(hparams.columns) == ["method", "target_sparsity", "seed"]
    assert by_trial[("snip", 1, 0.96)] == {"method": "snip", "target_sparsity": 0.96, "seed": 1.0}
    (imp,) = [v for (label, seed, _), v in by_trial.items() if (label, seed) == ("imp", 0)]
    assert imp == {"method": "imp", "target_sparsity": 0.875, "seed": 0.0}
    (dense,) = [v for (label, seed, _), v in by_trial.items() if (label, seed) == ("dense", 1)]
    assert dense == {"method": "dense", "target_sparsity": 0.0, "seed": 1.0}
    # Two lines of one method: the label is a hyperparameter; a grid over the learning rate
    # is one too, with the default (0.05) where a trial left it.
    tuned = varying_hparams(planned_trials([
        {"label": "snip_a", "config": {"method": "snip"}},
        {"label": "snip_b", "config": {"method": "snip"}, "grid": {"train.lr": [0.01, 0.1]}},
    ], seeds=[0]))
    assert list(tuned.columns) == ["experiment", "train.lr"]
    assert sorted(tuned.by_trial.values(), key=str) == sorted([
        {"experiment": "snip_a", "train.lr": 0.05}, {"experiment": "snip_b", "train.lr": 0.01},
        {"experiment": "snip_b", "train.lr": 0.1}], key=str)


def replay(trial_dir: Path, rows: list[dict[str, Any]], hparams: dict[str, Any]) -> None:
    events = TrialEvents(trial_dir, hparams)
    for row in rows:
        (events.epoch if row["row_type"] == "epoch" else events.round)(row)
    events.close("STATUS_SUCCESS")
    with (trial_dir / "result.json").open("a") as result:  # as Ray's JSON logger writes them
        for row in rows:
            result.write(json.dumps(row) + "\n")


def imp_rows(first_round: int, rounds: int) -> list[dict[str, Any]]:
    rows = []
    for r in range(first_round, first_round + rounds):
        rows += [epoch_row(r, e, 0.5 + r / 10 + e / 100) for e in range(2)]
        rows.append(round_row("imp", r, 1 - 0.8 ** r, 0.9 - r / 100))
    return rows


def test_a_trial_logs_epochs_across_rounds_rounds_by_round_and_is_a_session(
        tmp_path: Path) -> None:
    replay(tmp_path, imp_rows(0, 3), {"method": "imp", "seed": 0.0})
    scalars, others = read_events(tmp_path)
    # Epochs on one count across rounds 0-2: 0..5; the round of each epoch marks the boundaries.
    assert [step for step, _ in scalars["val/acc"]] == list(range(6))
    assert scalars["train/round"] == [(0, 0), (1, 0), (2, 1), (3, 1), (4, 2), (5, 2)]
    assert scalars["val/acc"][3] == (3, pytest.approx(0.61))
    # Rounds on the round; accuracy on the sparsity in basis points (1 - 0.8^r).
    assert [step for step, _ in scalars["round/test_acc"]] == [0, 1, 2]
    assert [step for step, _ in scalars["sparsity/test_acc"]] == [0, 2000, 3600]
    assert not any(tag.startswith("ray/") for tag in scalars)
    images = [(step, value) for step, value in others if value.tag == "round/layer_sparsity"]
    assert [step for step, _ in images] == [0, 1, 2]
    width, height, png = images[0][1].tensor.string_val  # TensorBoard's image summary
    assert png.startswith(b"\x89PNG") and int(width) > 0 and int(height) > 0
    layout = [value for _, value in others if value.tag == "custom_scalars__config__"]
    assert len(layout) == 1
    # The trial is a HParams session: its hyperparameters, then its end.
    (start,) = [v for _, v in others if v.tag == hparams_metadata.SESSION_START_INFO_TAG]
    content = HParamsPluginData.FromString(start.metadata.plugin_data.content)
    hparams = {key: getattr(value, value.WhichOneof("kind"))
               for key, value in content.session_start_info.hparams.items()}
    assert hparams == {"method": "imp", "seed": 0.0}
    (end,) = [v for _, v in others if v.tag == hparams_metadata.SESSION_END_INFO_TAG]
    content = HParamsPluginData.FromString(end.metadata.plugin_data.content)
    assert api_pb2.Status.Name(content.session_end_info.status) == "STATUS_SUCCESS"
    assert not [p for p in tmp_path.iterdir() if p.is_dir()]  # no runs besides the trial's


def test_a_restarted_trial_continues_its_epoch_count(tmp_path: Path) -> None:
    replay(tmp_path, imp_rows(0, 1), {})  # 2 epochs, then the driver is restarted
    replay(tmp_path, imp_rows(1, 1), {})
    scalars, _ = read_events(tmp_path)
    assert [step for step, _ in scalars["val/acc"]] == [0, 1, 2, 3]
    assert [step for step, _ in scalars["round/test_acc"]] == [0, 1]


class FakeTrial:
    def __init__(self, path: Path, raw: dict[str, Any]) -> None:
        self.local_path, self.config = str(path), {"trial": raw}

    def init_local_path(self) -> None:
        Path(self.local_path).mkdir(parents=True, exist_ok=True)


def test_the_callback_finds_each_trials_hyperparameters_and_pickles_without_writers(
        tmp_path: Path) -> None:
    sweep = planned_trials([{"label": "dense", "config": {"method": "dense"}}], seeds=[0, 1])
    (callback,) = [c for c in logger_callbacks(["tensorboard"], LoggerContext(
        "s", str(tmp_path), tuple(sweep))) if isinstance(c, PrunetuneTensorBoard)]
    trial = FakeTrial(tmp_path / "t1", sweep[1].raw)
    callback.log_trial_start(trial)
    callback.log_trial_result(1, trial, round_row("dense", 0, 0.0, 0.9))
    restored = pickle.loads(pickle.dumps(callback))  # Ray saves callbacks with the experiment
    assert restored.hparams == callback.hparams and restored._trials == {}
    assert list(callback.hparams.columns) == ["seed"]
    callback.log_trial_end(trial, failed=True)
    _, other = read_events(tmp_path / "t1")
    (start,) = [v for _, v in other if v.tag == hparams_metadata.SESSION_START_INFO_TAG]
    content = HParamsPluginData.FromString(start.metadata.plugin_data.content)
    assert dict(content.session_start_info.hparams)["seed"].number_value == 1.0
    (end,) = [v for _, v in other if v.tag == hparams_metadata.SESSION_END_INFO_TAG]
    content = HParamsPluginData.FromString(end.metadata.plugin_data.content)
    assert api_pb2.Status.Name(content.session_end_info.status) == "STATUS_FAILURE"


def test_rays_dump_is_a_logger_of_its_own() -> None:
    from ray.tune.logger import TBXLoggerCallback

    assert isinstance(LOGGERS.get("ray_tensorboard")(LoggerContext("s", "/tmp")),
                      TBXLoggerCallback)


def test_tensorboard_needs_a_directory_with_events(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="no such directory"):
        check_directory(tmp_path / "absent")
    with pytest.raises(ConfigError, match="no TensorBoard events"):
        check_directory(tmp_path)
    replay(tmp_path / "trial", [round_row("dense", 0, 0.0, 0.9)], {})
    check_directory(tmp_path)  # the parent of a trial with events


def test_the_command_refuses_bad_input_in_one_line(tmp_path: Path, capsys) -> None:
    from sweeps.cli import main

    assert main(["tensorboard", str(tmp_path / "absent")]) == 2
    replay(tmp_path / "trial", [round_row("dense", 0, 0.0, 0.9)], {})
    assert main(["tensorboard", str(tmp_path), "--port", "six"]) == 2
    errors = capsys.readouterr().err.splitlines()
    assert errors == [f"prunetune tensorboard: error: {tmp_path / 'absent'}: no such directory",
                      "prunetune tensorboard: error: --port six: a port number, 0, or default"]
