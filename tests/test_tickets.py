"""`load_round` gives back a round's network as it ended: re-evaluated on the trial's own test
batches it scores exactly the test accuracy its row reported (same machine, same threads), for
a masked IMP round (pruned weights exactly zero) and a structured round (the smaller network)."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from ticket_helpers import rows, run_into_experiment, test_batches

from trainables.checkpoints import load_round_checkpoint
from trainables.tickets import RoundNotFoundError, find_trial, load_round, readable_name


@pytest.fixture(scope="module")
def experiment(tmp_path_factory, tiny_trial) -> Path:
    root = tmp_path_factory.mktemp("tickets")
    run_into_experiment(root, "imp_s0_p0.5x2", 0, tiny_trial(
        method="imp", imp={"rounds": 2, "rate": 0.5, "rewind": "init"}))
    run_into_experiment(root, "channels_s0_c0.5", 1, tiny_trial(
        method="channels", channels={"target": "channels", "channel_fraction": 0.5}))
    return root


def test_accuracy(model: torch.nn.Module, info) -> float:
    correct = seen = 0
    with torch.no_grad():
        for inputs, targets in test_batches(info):
            correct += int((model(inputs).argmax(dim=1) == targets).sum())
            seen += len(targets)
    return correct / seen


test_accuracy.__test__ = False  # a helper, not a test


@pytest.mark.parametrize("round_number", [0, 1, 2])
def test_an_imp_round_scores_its_reported_test_accuracy(experiment, round_number):
    model, info = load_round(experiment, "imp_s0_p0.5x2", round_number)
    reported = rows(info.trial_dir)[round_number]
    assert not model.training and info.row["test_acc"] == reported["test_acc"]
    assert test_accuracy(model, info) == reported["test_acc"]
    parameters = dict(model.named_parameters())
    pruned = sum(int((~keep).sum()) for keep in info.masks.values())
    assert pruned == sum(int((parameters[n][~k] == 0).sum()) for n, k in info.masks.items())
    kept = sum(int(keep.sum()) for keep in info.masks.values())
    assert kept == reported["params_prunable"]


def test_a_structured_round_is_the_smaller_network(experiment):
    model, info = load_round(experiment, "channels_s0_c0.5", 1)
    dense, _ = load_round(experiment, "channels_s0_c0.5", 0)
    reported = rows(info.trial_dir)[1]
    assert info.layer_widths is not None
    assert sum(p.numel() for p in model.parameters()) == reported["params_total"]
    assert sum(p.numel() for p in model.parameters()) < sum(
        p.numel() for p in dense.parameters())
    assert test_accuracy(model, info) == reported["test_acc"]


def test_last_weights_and_names(experiment):
    best, info = load_round(experiment, "imp_s0_p0.5x2_ab12c_00000", 1)
    last, _ = load_round(experiment, "imp_s0_p0.5x2", 1, weights="last")
    state = load_round_checkpoint(info.checkpoint)
    assert all(torch.equal(t, state["model"][n]) for n, t in last.state_dict().items())
    assert all(torch.equal(t, state["best_model"][n]) for n, t in best.state_dict().items())
    assert readable_name(info.trial_dir) == "imp_s0_p0.5x2" == info.name
    assert find_trial(experiment, "channels_s0_c0.5").name == "channels_s0_c0.5_ab12c_00001"


@pytest.mark.parametrize(("trial", "round_number", "message"), [
    ("imp_s0_p0.5x3", 1, "no trial 'imp_s0_p0.5x3' (did you mean 'imp_s0_p0.5x2'?); trials: "
                         "channels_s0_c0.5, imp_s0_p0.5x2"),
    ("imp_s0_p0.5x2", 7, "imp_s0_p0.5x2_ab12c_00000: no round 7; its rounds: 0, 1, 2"),
])
def test_a_bad_trial_or_round_is_one_line(experiment, trial, round_number, message):
    with pytest.raises(RoundNotFoundError) as raised:
        load_round(experiment, trial, round_number)
    assert str(raised.value).endswith(message) and "\n" not in str(raised.value)


@pytest.mark.slow
def test_a_round_of_a_real_sweep_by_its_readable_name(data_root, tmp_path):
    """Through Ray and run_sweep: the trial is named as in the progress line, its rounds are
    found through rounds.json, and its round scores what the sweep's row reported."""
    from sweep_helpers import run_sweep, tiny_base, trial_dirs, write_sweep

    sweep = write_sweep(tmp_path / "one.yaml", name="one", grid={"seed": [0]},
                        base=tiny_base(data_root, method="imp",
                                       imp={"rounds": 1, "rate": 0.5, "rewind": "init"}),
                        resources={"cpu": 1, "gpu": 0})
    done = run_sweep(str(sweep), "--storage", str(tmp_path / "out"))
    assert done.returncode == 0, done.stderr[-2000:]
    (trial_dir,) = trial_dirs(tmp_path / "out" / "one").values()
    assert (trial_dir / "rounds.json").is_file()
    model, info = load_round(tmp_path / "out" / "one", readable_name(trial_dir), 1)
    assert info.trial_dir == trial_dir
    assert test_accuracy(model, info) == rows(trial_dir)[1]["test_acc"]
