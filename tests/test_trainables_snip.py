"""The snip trainable with every scorer: exact target sparsity counted from the saved weights,
the layerwise-shuffle mask control, and reinitialisation."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import torch

import trainables.loop
import trainables.methods
from trainables.config import parse_trial_config
from trainables.methods import run_trial
from trainables.reporting import DirectoryReporter

TARGET = 0.7


def run_snip(tiny_trial, directory: Path, **prune: Any) -> dict[str, Any]:
    trial = tiny_trial(method="snip", prune={"target_sparsity": TARGET, **prune})
    reporter = DirectoryReporter(directory)
    run_trial(parse_trial_config(trial), reporter)
    (row,) = [row for row in reporter.rows if row["row_type"] == "round"]
    assert row["round"] == 1 and row["final_round"] is True
    return torch.load(directory / "checkpoint_000000" / "state.pt", weights_only=True)


@pytest.mark.parametrize("scorer", ["snip", "random", "magnitude", "grasp", "synflow"])
def test_every_scorer_reaches_the_exact_target(tiny_trial, tmp_path, scorer):
    state = run_snip(tiny_trial, tmp_path, scorer=scorer)
    names = list(state["masks"])
    total = sum(state["model"][name].numel() for name in names)
    zeros = sum(int((state["model"][name] == 0).sum()) for name in names)
    assert zeros == round(TARGET * total)
    for weights in (state["model"], state["best_model"]):
        for name in names:
            assert torch.equal(weights[name] == 0, ~state["masks"][name]), name
    assert state["metrics"]["scorer"] == scorer


def test_layerwise_shuffle_keeps_layer_counts_and_moves_positions(tiny_trial, tmp_path):
    plain = run_snip(tiny_trial, tmp_path / "plain", scorer="snip")["masks"]
    shuffled = run_snip(tiny_trial, tmp_path / "shuffled", scorer="snip",
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

    monkeypatch.setattr(trainables.methods, "train_phase", spy)
    kept = run_snip(tiny_trial, tmp_path / "kept", scorer="snip")
    fresh = run_snip(tiny_trial, tmp_path / "fresh", scorer="snip", reinit=True)
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
