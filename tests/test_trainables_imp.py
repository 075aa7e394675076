"""IMP schedules run directly (DirectoryReporter, no Ray): sparsity per round, masks, rewinding,
resume after a crash, determinism and divergence. Expected values are computed here from the
saved weights, not taken from the rows the code reports."""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any

import pytest
import torch

import pruning
import trainables.loop
import trainables.methods.rounds
from trainables.checkpoints import load_round_checkpoint
from trainables.models import build_model
from trainables.reporting import DirectoryReporter
from trainables.resolve import parse_trial_config
from trainables.trial import run_trial


def run(trial: dict[str, Any], directory: Path, reporter_type=DirectoryReporter):
    reporter = reporter_type(directory)
    run_trial(parse_trial_config(trial), reporter)
    return reporter


def checkpoints(directory: Path) -> list[dict[str, Any]]:
    paths = sorted(path for path in directory.glob("round_*") if path.is_dir())
    return [load_round_checkpoint(p) for p in paths]


def result_rows(directory: Path) -> list[dict[str, Any]]:
    return [json.loads(line) for line in (directory / "result.json").read_text().splitlines()]


def zero_count(weights: dict[str, torch.Tensor], names) -> int:
    return sum(int((weights[name] == 0).sum()) for name in names)


@pytest.fixture
def spy_train_phase(monkeypatch):
    """Records, per call of train_phase, the round and a copy of the model state it starts
    from, plus the state after each epoch."""
    calls: list[dict[str, Any]] = []
    real = trainables.loop.train_phase

    def spy(model, *args, **kwargs):
        call = {
            "round": kwargs["round_index"],
            "start": {k: v.detach().clone() for k, v in model.state_dict().items()},
            "after_epoch": {},
        }
        calls.append(call)
        inner = kwargs.get("on_epoch_end")

        def on_epoch_end(row, snapshot):
            call["after_epoch"][row["epoch"]] = {
                k: v.detach().clone() for k, v in model.state_dict().items()
            }
            if inner is not None:
                inner(row, snapshot)

        kwargs["on_epoch_end"] = on_epoch_end
        return real(model, *args, **kwargs)

    monkeypatch.setattr(trainables.methods.rounds, "train_phase", spy)
    return calls


RATE, ROUNDS = 0.5, 3


@pytest.mark.parametrize("rewind", ["init", "epoch:1"])
def test_iterative_imp_sparsity_masks_and_rewinding(tiny_trial, tmp_path, spy_train_phase, rewind):
    trial = tiny_trial(method="imp", imp={"rounds": ROUNDS, "rate": RATE, "rewind": rewind})
    run(trial, tmp_path)
    states = checkpoints(tmp_path)
    assert [state["round"] for state in states] == list(range(ROUNDS + 1))

    names = list(states[0]["masks"])
    total = sum(states[0]["model"][name].numel() for name in names)
    for k, state in enumerate(states):
        expected_pruned = (1 - (1 - RATE) ** k) * total
        # Every round keeps the weights it ended with but the last, which keeps one set.
        assert ("model" in state) == (k < ROUNDS)
        for weights in (state.get("model", state["best_model"]), state["best_model"]):
            assert abs(zero_count(weights, names) - expected_pruned) <= 1
            for name in names:  # pruned positions exactly zero; zeros exactly there
                assert torch.equal(weights[name] == 0, ~state["masks"][name])
        if k:
            for name in names:  # a weight pruned once stays pruned
                assert not (state["masks"][name] & ~states[k - 1]["masks"][name]).any()

    # The rewind weights are what round 0 held at the rewind point, and every later round
    # starts from them (times its own mask); unprunable tensors and BN buffers come back whole.
    calls = spy_train_phase
    assert [call["round"] for call in calls] == list(range(ROUNDS + 1))
    if rewind == "init":
        torch.manual_seed(0)
        init = build_model(parse_trial_config(trial).model, 10, 1).state_dict()
        expected_rewind = calls[0]["start"]
        for key, tensor in init.items():
            assert torch.equal(expected_rewind[key], tensor), key
    else:
        expected_rewind = calls[0]["after_epoch"][0]
    # Round 0 (the dense model) keeps what can be rewound to; the pruning rounds carry it.
    kept = states[0]["init_weights"] if rewind == "init" else states[0]["epoch_weights"][1]
    rewind_weights = states[1]["rewind_weights"]
    for key, tensor in kept.items():
        assert torch.equal(rewind_weights[key], tensor), key
    assert rewind_weights.keys() == expected_rewind.keys()
    for key, tensor in expected_rewind.items():
        assert torch.equal(rewind_weights[key], tensor), key
    for call, state in zip(calls[1:], states[1:], strict=True):
        for key, tensor in rewind_weights.items():
            expected = tensor * state["masks"][key] if key in state["masks"] else tensor
            assert torch.equal(call["start"][key], expected), (call["round"], key)


def test_rewind_none_keeps_the_trained_weights(tiny_trial, tmp_path, spy_train_phase):
    trial = tiny_trial(method="imp", imp={"rounds": 2, "rate": 0.5, "rewind": "none"})
    run(trial, tmp_path)
    states = checkpoints(tmp_path)
    assert states[1]["rewind_epoch"] is None and states[1]["rewind_weights"] is None
    calls = spy_train_phase
    for call, previous, state in zip(calls[1:], states[:-1], states[1:], strict=True):
        for key, tensor in previous["model"].items():
            expected = tensor * state["masks"][key] if key in state["masks"] else tensor
            assert torch.equal(call["start"][key], expected), (call["round"], key)


class CrashAfterRound:
    """A DirectoryReporter that dies (like a killed worker) right after checkpointing a round."""

    def __init__(self, crash_round: int):
        self.crash_round = crash_round

    def __call__(self, directory):
        crash_round = self.crash_round

        class Crashing(DirectoryReporter):
            def report(self, rows, state=None, shared=None):
                super().report(rows, state, shared)
                if state and state["kind"] == "round" and state["round"] == crash_round:
                    raise KeyboardInterrupt("simulated crash")

        return Crashing(directory)


METRICS_COMPARED = ("train_loss", "train_acc", "val_acc", "lr", "test_acc", "sparsity")


def comparable(rows):
    return [
        {key: row.get(key) for key in ("row_type", "round", "epoch", *METRICS_COMPARED)}
        for row in rows
    ]


def test_resume_after_a_crash_continues_exactly(tiny_trial, tmp_path):
    trial = tiny_trial(
        method="imp", train={"epochs": 2}, imp={"rounds": 3, "rate": 0.4, "rewind": "epoch:1"}
    )
    run(trial, tmp_path / "whole")
    whole = result_rows(tmp_path / "whole")

    with pytest.raises(KeyboardInterrupt):
        run(trial, tmp_path / "crashed", CrashAfterRound(crash_round=1))
    run(trial, tmp_path / "crashed")
    resumed = result_rows(tmp_path / "crashed")

    round_numbers = [row["round"] for row in resumed if row["row_type"] == "round"]
    assert round_numbers == [0, 1, 2, 3]  # none repeated, none missing
    assert comparable(resumed) == comparable(whole)
    whole_states, resumed_states = (
        checkpoints(tmp_path / "whole"),
        checkpoints(tmp_path / "crashed"),
    )
    for a, b in zip(whole_states, resumed_states, strict=True):
        assert a.keys() == b.keys()
        for weights in ("model", "best_model"):
            for key in a.get(weights, {}):
                assert torch.equal(a[weights][key], b[weights][key]), (a["round"], key)


def test_same_config_twice_gives_identical_metrics(tiny_trial, tmp_path):
    trial = tiny_trial(method="imp", imp={"schedule": "oneshot"}, prune={"target_sparsity": 0.7})
    run(trial, tmp_path / "a")
    run(trial, tmp_path / "b")
    assert comparable(result_rows(tmp_path / "a")) == comparable(result_rows(tmp_path / "b"))


def test_oneshot_prunes_once_to_the_target(tiny_trial, tmp_path):
    trial = tiny_trial(method="imp", imp={"schedule": "oneshot"}, prune={"target_sparsity": 0.65})
    run(trial, tmp_path)
    states = checkpoints(tmp_path)
    assert [state["round"] for state in states] == [0, 1]
    names = list(states[1]["masks"])
    total = sum(states[1]["best_model"][name].numel() for name in names)
    assert zero_count(states[1]["best_model"], names) == round(0.65 * total)


# ---- divergence ---------------------------------------------------------------------------


def nan_after(monkeypatch, good_steps: int, finite_loss_nan_grad: bool = False):
    """Make the training loss non-finite from step `good_steps + 1` on.

    A real run with train.lr 10 does not diverge here (BatchNorm keeps a width-4 ResNet finite),
    so the failure is injected. With `finite_loss_nan_grad` the loss value stays finite but its
    gradient is NaN (sqrt'(0) * 0), so the weights go bad before the loss shows it.
    """
    real_loss = torch.nn.CrossEntropyLoss
    steps = {"n": 0}

    class PoisonedLoss(real_loss):
        def forward(self, logits, targets):
            loss = super().forward(logits, targets)
            if not torch.is_grad_enabled():
                return loss
            steps["n"] += 1
            if steps["n"] <= good_steps:
                return loss
            if finite_loss_nan_grad:
                return loss + (logits.sum() * 0).sqrt()
            return loss * float("nan")

    monkeypatch.setattr(trainables.loop.nn, "CrossEntropyLoss", PoisonedLoss)
    return steps


def all_finite(weights: dict[str, torch.Tensor]) -> bool:
    return all(bool(torch.isfinite(t).all()) for t in weights.values() if t.is_floating_point())


def test_huge_lr_alone_does_not_diverge_so_the_loss_is_poisoned(tiny_trial, tmp_path):
    trial = tiny_trial(train={"lr": 10.0, "epochs": 2})
    run(trial, tmp_path)
    losses = [row["train_loss"] for row in result_rows(tmp_path) if row["row_type"] == "epoch"]
    assert all(math.isfinite(loss) for loss in losses)


@pytest.mark.parametrize("finite_loss_nan_grad", [False, True])
def test_dense_divergence_ends_with_last_good_weights(
    tiny_trial, tmp_path, monkeypatch, finite_loss_nan_grad
):
    # 2 batches per epoch: epoch 0 is good; the last step of epoch 1 goes bad.
    nan_after(monkeypatch, good_steps=3, finite_loss_nan_grad=finite_loss_nan_grad)
    trial = tiny_trial(train={"epochs": 4})
    run(trial, tmp_path)  # does not raise
    rows = result_rows(tmp_path)
    round_rows = [row for row in rows if row["row_type"] == "round"]
    assert len(round_rows) == 1
    (last,) = round_rows
    assert last["status"] == "diverged" and last["final_round"] is True
    assert all(math.isfinite(last[key]) for key in ("val_acc", "test_acc", "sparsity"))
    epoch_rows = [row for row in rows if row["row_type"] == "epoch"]
    assert all(math.isfinite(row["train_loss"]) for row in epoch_rows)
    assert [row["epoch"] for row in epoch_rows] == [0]
    (state,) = checkpoints(tmp_path)
    assert all_finite(state["model"]) and all_finite(state["best_model"])  # round 0 keeps both


def test_imp_divergence_in_a_later_round_stops_the_trial(tiny_trial, tmp_path, monkeypatch):
    nan_after(monkeypatch, good_steps=4)  # round 0 (2 epochs x 2 batches) trains normally
    trial = tiny_trial(method="imp", imp={"rounds": 3, "rate": 0.5})
    run(trial, tmp_path)
    round_rows = [row for row in result_rows(tmp_path) if row["row_type"] == "round"]
    assert [(row["round"], row["status"], row["final_round"]) for row in round_rows] == [
        (0, "ok", False),
        (1, "diverged", True),
    ]
    assert all(math.isfinite(round_rows[1][key]) for key in ("val_acc", "test_acc"))
    states = checkpoints(tmp_path)
    # The diverged round ends the trial: it keeps its last good weights as its one set.
    assert "model" not in states[1] and all_finite(states[1]["best_model"])
    names = list(states[1]["masks"])
    for name in names:
        assert torch.equal(states[1]["best_model"][name] == 0, ~states[1]["masks"][name])
    # A restart of the finished (diverged) trial does nothing more.
    run(trial, tmp_path)
    assert len(checkpoints(tmp_path)) == 2
    assert pruning.mask_sparsity(states[1]["masks"]) == pytest.approx(0.5, abs=1e-4)
