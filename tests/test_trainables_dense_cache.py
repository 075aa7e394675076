"""The shared dense cache and `dense_model.checkpoint`: a dense model is trained once per
(seed, recipe), reused by later trials, and never taken from a different recipe."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

import trainables.loop
import trainables.methods.rounds
from trainables.errors import ConfigError
from trainables.reporting import DirectoryReporter
from trainables.resolve import parse_trial_config
from trainables.trial import run_trial


@pytest.fixture
def dense_trainings(monkeypatch) -> list[int]:
    """Seeds of the dense (round-0) training phases actually run."""
    seeds: list[int] = []
    real = trainables.loop.train_phase

    def spy(model, data, config, *args, **kwargs):
        if kwargs["round_index"] == 0:
            seeds.append(config.seed)
        return real(model, data, config, *args, **kwargs)

    monkeypatch.setattr(trainables.methods.rounds, "train_phase", spy)
    return seeds


def run(trial: dict[str, Any], directory: Path) -> list[dict[str, Any]]:
    reporter = DirectoryReporter(directory)
    run_trial(parse_trial_config(trial), reporter)
    return [row for row in reporter.rows if row["row_type"] == "round"]


def test_dense_model_is_trained_once_per_seed(tiny_trial, tmp_path, dense_trainings):
    cache = str(tmp_path / "cache")
    dense = run(tiny_trial(method="dense", dense_model={"cache": cache}), tmp_path / "dense")
    oneshots = [
        run(
            tiny_trial(
                method="imp",
                dense_model={"cache": cache},
                imp={"schedule": "oneshot"},
                prune={"target_sparsity": target},
            ),
            tmp_path / f"oneshot-{target}",
        )
        for target in (0.5, 0.8)
    ]
    assert dense_trainings == [0]
    assert "reused_dense" not in dense[0]
    for rows in oneshots:
        assert rows[0]["round"] == 0 and rows[0]["reused_dense"] is True
        assert rows[0]["method"] == "imp" and rows[0]["final_round"] is False
        # The same dense model: same round-0 accuracies as the trial that trained it.
        assert (rows[0]["val_acc"], rows[0]["test_acc"]) == (
            dense[0]["val_acc"],
            dense[0]["test_acc"],
        )
        assert [row["round"] for row in rows] == [0, 1]

    other_seed = tiny_trial(method="imp", seed=1, dense_model={"cache": cache},
                            imp={"schedule": "oneshot"})
    rows = run(other_seed, tmp_path / "seed1")
    assert dense_trainings == [0, 1]
    assert "reused_dense" not in rows[0]


def test_reused_dense_gives_the_same_trial_as_training_it(tiny_trial, tmp_path):
    oneshot = {"method": "imp", "imp": {"schedule": "oneshot"}}
    own = run(tiny_trial(**oneshot), tmp_path / "own")
    cache = str(tmp_path / "cache")
    run(tiny_trial(method="dense", dense_model={"cache": cache}), tmp_path / "dense")
    reused = run(tiny_trial(**oneshot, dense_model={"cache": cache}), tmp_path / "reused")
    for key in ("val_acc", "test_acc", "sparsity", "params_prunable"):
        assert own[1][key] == reused[1][key], key


def test_dense_checkpoint_of_another_recipe_is_refused(tiny_trial, tmp_path):
    run(tiny_trial(method="dense", train={"lr": 0.1}), tmp_path / "dense")
    (checkpoint,) = map(str, (tmp_path / "dense").glob("round_*"))
    ok = tiny_trial(method="imp", train={"lr": 0.1}, dense_model={"checkpoint": checkpoint},
                    imp={"schedule": "oneshot"})
    assert run(ok, tmp_path / "ok")[0]["reused_dense"] is True
    other = tiny_trial(method="imp", dense_model={"checkpoint": checkpoint})  # default lr 0.05
    with pytest.raises(ConfigError, match="dense_model.checkpoint.*recipe"):
        run(other, tmp_path / "other")
    # The dense trial kept no epoch-1 weights, so a trial rewinding to epoch 1 cannot use it.
    rewinding = tiny_trial(method="imp", train={"lr": 0.1}, dense_model={"checkpoint": checkpoint},
                           imp={"rewind": "epoch:1"})
    with pytest.raises(ConfigError, match="dense_model.checkpoint.*rewinds to epoch 1"):
        run(rewinding, tmp_path / "rewinding")
    with pytest.raises(ConfigError, match="dense_model.checkpoint"):
        missing = tiny_trial(method="imp", dense_model={"checkpoint": str(tmp_path / "nowhere")})
        run(missing, tmp_path / "missing")
