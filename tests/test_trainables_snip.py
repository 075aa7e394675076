"""The prune-at-initialisation methods (snip, grasp, synflow, random, magnitude_init): exact
target sparsity counted from the saved weights, the layerwise-shuffle mask control, and
reinitialisation."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import torch

import trainables.loop
import trainables.methods.rounds
from trainables.reporting import DirectoryReporter
from trainables.resolve import parse_trial_config
from trainables.trial import run_trial

TARGET = 0.7


SCORERS = {"snip": "snip", "random": "random", "magnitude_init": "magnitude", "grasp": "grasp",
           "synflow": "synflow"}


def run_snip(tiny_trial, directory: Path, method: str = "snip", **prune: Any) -> dict[str, Any]:
    settings = {"synflow": {"iterations": 5}} if method == "synflow" else {}
    trial = tiny_trial(method=method, prune={"target_sparsity": TARGET, **prune}, **settings)
    reporter = DirectoryReporter(directory)
    run_trial(parse_trial_config(trial), reporter)
    (row,) = [row for row in reporter.rows if row["row_type"] == "round"]
    assert row["round"] == 1 and row["final_round"] is True
    (checkpoint,) = directory.glob("checkpoint_*")  # progress checkpoints are gone by now
    return torch.load(checkpoint / "state.pt", weights_only=True)


@pytest.mark.parametrize("method", list(SCORERS))
def test_every_scorer_reaches_the_exact_target(tiny_trial, tmp_path, method):
    state = run_snip(tiny_trial, tmp_path, method)
    names = list(state["masks"])
    total = sum(state["model"][name].numel() for name in names)
    zeros = sum(int((state["model"][name] == 0).sum()) for name in names)
    assert zeros == round(TARGET * total)
    for weights in (state["model"], state["best_model"]):
        for name in names:
            assert torch.equal(weights[name] == 0, ~state["masks"][name]), name
    assert state["metrics"]["scorer"] == SCORERS[method]


def test_layerwise_shuffle_keeps_layer_counts_and_moves_positions(tiny_trial, tmp_path):
    plain = run_snip(tiny_trial, tmp_path / "plain")["masks"]
    shuffled = run_snip(tiny_trial, tmp_path / "shuffled",
                        mask_control="layerwise_shuffle")["masks"]  # fmt: skip
    assert plain.keys() == shuffled.keys()
    for name in plain:
        assert int(plain[name].sum()) == int(shuffled[name].sum()), name
    moved = [name for name in plain if not torch.equal(plain[name], shuffled[name])]
    # Every layer with something both kept and pruned gets new positions.
    mixed = [name for name, keep in plain.items() if 0 < int(keep.sum()) < keep.numel()]
    assert moved == mixed and mixed


def test_reinit_keeps_the_mask_and_draws_different_weights(tiny_trial, tmp_path, monkeypatch):
    starts: list[dict[str, torch.Tensor]] = []
    real = trainables.loop.train_phase

    def spy(model, *args, **kwargs):
        starts.append({k: v.detach().clone() for k, v in model.state_dict().items()})
        return real(model, *args, **kwargs)

    monkeypatch.setattr(trainables.methods.rounds, "train_phase", spy)
    kept = run_snip(tiny_trial, tmp_path / "kept")
    fresh = run_snip(tiny_trial, tmp_path / "fresh", reinit=True)
    for name, keep in kept["masks"].items():
        assert torch.equal(keep, fresh["masks"][name]), name
    init = kept["init_weights"]
    for key, tensor in init.items():  # same seed: the same initialisation was scored
        assert torch.equal(fresh["init_weights"][key], tensor), key
    for name, keep in kept["masks"].items():
        # Without reinit training starts from init * mask; with it, from other weights on the
        # surviving positions (and still zero on the pruned ones).
        assert torch.equal(starts[0][name], init[name] * keep), name
        assert not torch.equal(starts[1][name][keep], init[name][keep]), name
        assert (starts[1][name][~keep] == 0).all(), name
