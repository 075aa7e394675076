"""Rows and checkpoints of directly-run trials: the checkpoint contract (docs/
results-and-checkpoints.md, `check_checkpoint_contract` in tests/conftest.py), per-epoch
fields, and test accuracy that matches re-evaluating the checkpoint's best weights."""

from __future__ import annotations

import json
import math

import pytest
from invariants import near_tie_counts

from trainables.checkpoints import load_round_checkpoint
from trainables.datasets import load_dataset
from trainables.loop import evaluate
from trainables.models import build_model
from trainables.reporting import DirectoryReporter
from trainables.resolve import parse_trial_config
from trainables.runtime import resolve_runtime
from trainables.trial import run_trial
from trainables.trial_data import TrialData

EPOCH_FIELDS = ("train_loss", "train_acc", "val_acc", "lr", "epoch_time_s", "images_per_s")


@pytest.mark.parametrize("method", ["dense", "imp", "snip"])
def test_checkpoint_contract_and_test_accuracy(tiny_trial, tmp_path, checkpoint_contract, method):
    settings = {"imp": {"rounds": 2, "rate": 0.5}} if method == "imp" else {}
    trial = tiny_trial(method=method, **settings)
    config = parse_trial_config(trial)
    reporter = DirectoryReporter(tmp_path)
    run_trial(config, reporter)

    epoch_rows = [row for row in reporter.rows if row["row_type"] == "epoch"]
    round_rows = [row for row in reporter.rows if row["row_type"] == "round"]
    for row in epoch_rows:
        for field in EPOCH_FIELDS:
            assert isinstance(row[field], float) and math.isfinite(row[field]), field
        assert 0 <= row["train_acc"] <= 1 and 0 <= row["val_acc"] <= 1
        assert row["epoch_time_s"] > 0 and row["images_per_s"] > 0
    assert [row["lr"] for row in epoch_rows[:2]] == [0.05, 0.05 * 0.5 * (1 + math.cos(math.pi / 2))]

    splits = load_dataset(config.data)
    runtime = resolve_runtime(config.train)
    data = TrialData.build(splits, config, runtime)
    directories = sorted(tmp_path.glob("round_*"))
    assert len(directories) == len(round_rows)
    for directory, row in zip(directories, round_rows, strict=True):
        state = checkpoint_contract(directory, trial)
        assert json.loads((directory / "metrics.json").read_text())["test_acc"] == row["test_acc"]
        model = build_model(config.model, splits.num_classes, splits.in_channels)
        model.load_state_dict(state["best_model"], strict=True)
        # Evaluated as the trial did (its batch size): the same computation on this machine.
        assert row["test_acc"] == evaluate(
            model, splits, "test", data.eval_augment, runtime, config.train.eval_batch_size,
            config.train.max_eval_batches,
        )
        # In other batches (97, a partial last one): the same accuracy, BatchNorm in eval mode,
        # up to the predictions whose top two logits nearly tie, the only ones that a batch
        # size's (or a CPU's) last-bit rounding can flip.
        test_acc = evaluate(
            model, splits, "test", data.eval_augment, runtime, 97
        )
        correct, near_ties, seen = near_tie_counts(
            model, splits, "test", data.eval_augment, runtime, 97
        )
        assert test_acc == correct / seen
        assert abs(row["test_acc"] * seen - correct) <= near_ties + 1e-6
        # The best epoch's val_acc is the round's val_acc.
        round_epochs = [r for r in epoch_rows if r["round"] == row["round"]]
        best = max(round_epochs, key=lambda r: r["val_acc"])
        assert row["val_acc"] == best["val_acc"]
        assert row["best_epoch"] == min(
            r["epoch"] for r in round_epochs if r["val_acc"] == best["val_acc"]
        )


def test_rows_survive_json_with_full_precision(tiny_trial, tmp_path):
    reporter = DirectoryReporter(tmp_path)
    run_trial(parse_trial_config(tiny_trial(method="dense")), reporter)
    def refuse(constant: str) -> None:
        raise AssertionError(f"{constant} in a row: not JSON that other tools read")

    written = [json.loads(line, parse_constant=refuse)
               for line in (tmp_path / "result.json").read_text().splitlines()]
    for kept, row in zip(written, reporter.rows, strict=True):
        for key, value in row.items():
            if isinstance(value, float):
                assert kept[key] == value, key  # no rounding on the way to disk
    (checkpoint,) = tmp_path.glob("round_*")
    state = load_round_checkpoint(checkpoint)
    assert state["metrics"]["val_acc"] == reporter.rows[-1]["val_acc"]
