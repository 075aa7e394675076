"""The trainable through a real `ray.tune.Tuner`: rows per round and epoch, and the round
checkpoints the trial keeps, checked against the checkpoint contract
(docs/results-and-checkpoints.md)."""

from __future__ import annotations

import json
import warnings
from pathlib import Path
from typing import Any

import pytest
from invariants import round_weights

from trainables.resolve import parse_trial_config
from trainables.schema import ROUND_CHECKPOINT
from trainables.trial_store import POINTER_FILE, round_dirs

EPOCH_FIELDS = {"train_loss", "train_acc", "val_acc", "lr", "epoch_time_s", "images_per_s"}


def _key(trial: dict[str, Any]) -> str:
    if trial["method"] == "imp":
        return "imp-" + trial.get("imp", {}).get("schedule", "iterative")
    return trial["method"]


@pytest.fixture(scope="module")
def tune_results(ray_local, tiny_trial, tmp_path_factory) -> dict[str, tuple[dict, Path]]:
    """One Tuner run of the four trainables; {kind: (trial config dict, trial dir)}."""
    from ray import tune

    from trainables.tune_trainable import prunetune_trainable

    trials = [
        tiny_trial(method="dense"),
        tiny_trial(method="imp", imp={"rounds": 2, "rate": 0.5, "rewind": "epoch:1"}),
        tiny_trial(method="imp", imp={"schedule": "oneshot"}, prune={"target_sparsity": 0.6}),
        tiny_trial(method="snip", prune={"target_sparsity": 0.7}),
    ]
    storage = tmp_path_factory.mktemp("tune").resolve()
    tuner = tune.Tuner(
        tune.with_resources(prunetune_trainable, {"cpu": 1}),
        param_space={"trial": tune.grid_search(trials)},
        run_config=tune.RunConfig(storage_path=str(storage), name="trainables", verbose=0),
    )
    results = tuner.fit()
    assert not results.errors, results.errors
    by_kind = {}
    for result in results:
        trial = result.config["trial"]
        by_kind[_key(trial)] = (trial, Path(result.path))
    assert sorted(by_kind) == ["dense", "imp-iterative", "imp-oneshot", "snip"]
    return by_kind


def read_rows(trial_dir: Path) -> list[dict[str, Any]]:
    lines = (trial_dir / "result.json").read_text().splitlines()
    return [json.loads(line) for line in lines if line.strip()]


@pytest.mark.slow
@pytest.mark.parametrize(
    ("kind", "rounds"),
    [("dense", [0]), ("imp-iterative", [0, 1, 2]), ("imp-oneshot", [0, 1]), ("snip", [1])],
)
def test_round_and_epoch_rows(tune_results, kind, rounds):
    trial, trial_dir = tune_results[kind]
    config = parse_trial_config(trial)
    rows = read_rows(trial_dir)
    round_rows = [row for row in rows if row["row_type"] == "round"]
    assert [row["round"] for row in round_rows] == rounds
    assert [row["final_round"] for row in round_rows] == [False] * (len(rounds) - 1) + [True]
    assert all(row["status"] == "ok" for row in round_rows)

    epoch_rows = [row for row in rows if row["row_type"] == "epoch"]
    for row in epoch_rows:
        assert set(row) >= EPOCH_FIELDS, set(row)
        assert all(isinstance(row[field], float) for field in EPOCH_FIELDS)
    # Every round's epochs come before its round row.
    for round_row in round_rows:
        position = rows.index(round_row)
        before = [r["epoch"] for r in rows[:position] if r.get("round") == round_row["round"]]
        assert before and len(before) == round_row["epochs"]
    if kind == "imp-iterative":  # rewind to epoch 1 continues the schedule from epoch 1
        assert [(r["round"], r["epoch"]) for r in epoch_rows] == [(0, 0), (0, 1), (1, 1), (2, 1)]
        assert [r["target_sparsity"] for r in round_rows] == [0.0, 0.5, 0.75]
    else:
        epochs = list(range(config.train.epochs))
        assert [r["epoch"] for r in epoch_rows] == epochs * len(rounds)


@pytest.mark.slow
@pytest.mark.parametrize("kind", ["dense", "imp-iterative", "imp-oneshot", "snip"])
def test_every_round_checkpoint_is_kept_and_follows_the_contract(
    tune_results, checkpoint_contract, kind
):
    trial, trial_dir = tune_results[kind]
    round_rows = [row for row in read_rows(trial_dir) if row["row_type"] == "round"]
    directories = round_dirs(trial_dir)
    assert [row[ROUND_CHECKPOINT] for row in round_rows] == [p.name for p in directories]
    # Every other directory is a checkpoint Ray keeps, naming a slot and holding nothing else;
    # the progress slot went once the last round was reported.
    for other in {p for p in trial_dir.iterdir() if p.is_dir()} - set(directories):
        assert other.name.startswith("checkpoint_"), other
        assert [p.name for p in other.iterdir()] == [POINTER_FILE], other
    for directory, row in zip(directories, round_rows, strict=True):
        state = checkpoint_contract(directory, trial)
        assert state["round"] == row["round"]
        # Sparsity as reported == zeros counted in the saved weights over the mask's names.
        weights = round_weights(state)
        zeros = sum(int((weights[name] == 0).sum()) for name in state["masks"])
        total = sum(keep.numel() for keep in state["masks"].values())
        assert row["sparsity"] == pytest.approx(zeros / total, abs=1e-12)
        assert row["params_prunable"] == total - zeros


@pytest.mark.slow
def test_trainable_accepts_wrapped_and_bare_trial_configs(tiny_trial, monkeypatch):
    from trainables import tune_trainable

    seen = []
    monkeypatch.setattr(tune_trainable, "run_trial", lambda config, *rest: seen.append(config))
    trial = tiny_trial(method="snip", seed=3)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # get_trial_resources outside a Tune session warns
        tune_trainable.prunetune_trainable({"trial": trial})
        tune_trainable.prunetune_trainable(trial)
    assert [(c.method, c.seed) for c in seen] == [("snip", 3), ("snip", 3)]
