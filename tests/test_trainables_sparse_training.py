"""Masks that change during training, through the loop's per-step seam: one RigL and one SET
update worked out by hand, the dense gradient RigL reads, GMP's per-step counts in a real trial
against Zhu & Gupta's formula, and dynamic sparse trials that keep every layer's count."""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

import pytest
import torch
from torch import nn

import pruning
from trainables import random_streams
from trainables.checkpoints import load_round_checkpoint
from trainables.methods.dynamic_sparse import DropAndGrow
from trainables.methods.gmp import GradualMagnitude
from trainables.reporting import DirectoryReporter
from trainables.resolve import parse_trial_config
from trainables.trial import run_trial


def one_layer(weight: list[list[float]]) -> nn.Linear:
    layer = nn.Linear(len(weight[0]), len(weight), bias=False)
    with torch.no_grad():
        layer.weight.copy_(torch.tensor(weight))
    return layer


def primed_optimizer(model: nn.Module, momentum: torch.Tensor) -> torch.optim.SGD:
    optimizer = torch.optim.SGD(model.parameters(), lr=0.1, momentum=0.9)
    optimizer.state[model.weight]["momentum_buffer"] = momentum.clone()
    return optimizer


@pytest.mark.parametrize("rigl", [True, False], ids=["rigl", "set"])
def test_one_update_by_hand(rigl: bool) -> None:
    model = one_layer([[0.5, -0.1, 0.0, 0.3], [0.0, -0.2, 0.9, 0.0]])
    keep = torch.tensor([[True, True, False, True], [False, True, True, False]])
    momentum = torch.arange(1.0, 9.0).view(2, 4)
    optimizer = primed_optimizer(model, momentum)
    keeper = pruning.MaskedTraining(model, {"weight": keep}, optimizer)
    dense_gradient = torch.tensor([[0.1, 0.2, -0.8, 0.0], [0.3, 0.0, 0.0, -0.5]])
    schedule = pruning.DropSchedule(interval=1, end_step=4, alpha=0.8)
    # At t = 2 of T_end = 4 the drop fraction is 0.8/2 * (1 + cos(pi/2)) = 0.4: floor(0.4 * 5) = 2.
    assert math.floor(schedule.drop_fraction(2) * 5) == 2
    updater = DropAndGrow(schedule, seed=7, by_gradient=rigl)
    with keeper.dense_gradients():
        model.weight.grad = dense_gradient.clone()
        new = updater.update(2, model, keeper.mask)
        keeper.set_mask(new)

    # Drop: the 2 smallest |w| among the 5 active: -0.1 (0, 1) and -0.2 (1, 1).
    survivors = keep.clone()
    survivors[0, 1] = survivors[1, 1] = False
    candidates = [(r, c) for r in range(2) for c in range(4) if not survivors[r, c]]
    if rigl:  # grow the largest |dense gradient| among the inactive: -0.8 (0, 2), -0.5 (1, 3)
        grown = {(0, 2), (1, 3)}
    else:  # uniform scores from the named regrowth stream, highest first
        scores = torch.rand((2, 4), generator=random_streams.regrowth(7, 2, 0))
        grown = set(sorted(candidates, key=lambda rc: -float(scores[rc]))[:2])
    expected = survivors.clone()
    for position in grown:
        expected[position] = True
    assert torch.equal(keeper.mask["weight"], expected)
    assert int(expected.sum()) == int(keep.sum())  # the layer's count is unchanged

    weight = model.weight.detach()
    buffer = optimizer.state[model.weight]["momentum_buffer"]
    for r in range(2):
        for c in range(4):
            changed = bool(expected[r, c]) != bool(keep[r, c])
            if changed:  # dropped or grown: weight and momentum start from zero
                assert weight[r, c] == 0 and buffer[r, c] == 0, (r, c)
            else:
                assert buffer[r, c] == momentum[r, c], (r, c)
    assert weight[0, 0] == 0.5 and weight[1, 2] == 0.9  # survivors untouched
    # Leaving the block masks the gradient with the new mask: no step moves a pruned weight.
    assert torch.equal(model.weight.grad, dense_gradient * expected)
    keeper.detach()


def test_the_dense_gradient_reaches_pruned_weights_only_inside_the_block() -> None:
    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(5, 4), nn.Tanh(), nn.Linear(4, 3))
    mask = pruning.full_mask(model)
    mask["0.weight"][0, :3] = False
    keeper = pruning.MaskedTraining(model, mask, torch.optim.SGD(model.parameters(), lr=0.1))
    inputs, targets = torch.randn(6, 5), torch.tensor([0, 1, 2, 0, 1, 2])
    # Independent: the gradient of the same loss with the same (masked) weights, no hooks.
    reference = nn.Sequential(nn.Linear(5, 4), nn.Tanh(), nn.Linear(4, 3))
    reference.load_state_dict(model.state_dict())
    nn.functional.cross_entropy(reference(inputs), targets).backward()
    expected = reference[0].weight.grad

    with keeper.dense_gradients():
        nn.functional.cross_entropy(model(inputs), targets).backward()
        inside = model[0].weight.grad.clone()
    assert torch.equal(inside, expected) and inside[0, :3].abs().sum() > 0
    assert torch.equal(model[0].weight.grad, expected * mask["0.weight"])
    model.zero_grad()
    nn.functional.cross_entropy(model(inputs), targets).backward()  # outside: masked at once
    assert (model[0].weight.grad[0, :3] == 0).all()
    keeper.detach()


# ---- whole trials ------------------------------------------------------------------------------

EPOCHS, STEPS_PER_EPOCH = 4, 2  # tiny_trial caps every epoch at max_batches = 2


def record_updates(monkeypatch, updater: type) -> list[tuple[int, dict[str, int]]]:
    """(step, per-layer kept counts after the update) for every update the trial makes."""
    seen: list[tuple[int, dict[str, int]]] = []
    real = updater.update

    def spy(self, step, model, mask):
        new = real(self, step, model, mask)
        seen.append((step, {name: int(keep.sum()) for name, keep in new.items()}))
        return new

    monkeypatch.setattr(updater, "update", spy)
    return seen


def run(trial: dict[str, Any], directory: Path) -> DirectoryReporter:
    reporter = DirectoryReporter(directory)
    run_trial(parse_trial_config(trial), reporter)
    return reporter


def test_gmp_prunes_on_the_cubic_schedule_counted_exactly(tiny_trial, tmp_path, monkeypatch):
    seen = record_updates(monkeypatch, GradualMagnitude)
    final = 0.8
    trial = tiny_trial(method="gmp", train={"epochs": EPOCHS}, prune={"target_sparsity": final},
                       gmp={"start": 0.0, "end": 1.0, "frequency": 0.25})
    reporter = run(trial, tmp_path)

    # By hand: T = 8 steps, t0 = 0, dt = round(0.25 * 8) = 2, last allowed step 7, so n = 3 and
    # the pruning steps are 0, 2, 4, 6 with s_k = s_f + (0 - s_f) * (1 - k / 3) ** 3.
    assert [step for step, _ in seen] == [0, 2, 4, 6]
    total = sum(seen[0][1].values())  # step 0 prunes to s_0 = 0: every weight is still kept
    for k, (_, counts) in enumerate(seen):
        sparsity = final + (0.0 - final) * (1 - k / 3) ** 3
        assert sum(counts.values()) == total - round(sparsity * total), k
    (row,) = [r for r in reporter.rows if r["row_type"] == "round"]
    assert row["round"] == 1 and row["sparsity"] == round(final * total) / total
    epochs = [r for r in reporter.rows if r["row_type"] == "epoch"]
    # Epoch rows carry the sparsity at their end (epoch k ends after pruning step k).
    assert [r["sparsity"] for r in epochs] == [
        (total - kept) / total for kept in (sum(c.values()) for _, c in seen)]
    assert row["best_epoch"] == 3  # only epochs that end at the final sparsity are selectable


@pytest.mark.parametrize("method", ["rigl", "set"])
def test_dynamic_sparse_trials_keep_each_layers_count(tiny_trial, tmp_path, monkeypatch, method):
    seen = record_updates(monkeypatch, DropAndGrow)
    trial = tiny_trial(method=method, train={"epochs": EPOCHS}, prune={"target_sparsity": 0.9},
                       **{method: {"update_interval": 2, "end": 0.75}})
    reporter = run(trial, tmp_path)
    # T = 8, T_end = floor(0.75 * 8) = 6: updates after 2, 4 and 6 steps.
    assert [step for step, _ in seen] == [2, 4, 6]
    (checkpoint,) = tmp_path.glob("round_*")
    state = load_round_checkpoint(checkpoint)
    final_counts = {name: int(keep.sum()) for name, keep in state["masks"].items()}
    assert all(counts == final_counts for _, counts in seen)
    # The initial mask is ERK over the whole model (the default allocation of rigl and set).
    shapes = {name: keep.shape for name, keep in state["masks"].items()}
    total = sum(keep.numel() for keep in state["masks"].values())
    budgets = pruning.erk_layer_budgets(
        {name: torch.ones(shape, dtype=torch.bool) for name, shape in shapes.items()},
        total - round(0.9 * total),
    )
    assert final_counts == budgets
    (row,) = [r for r in reporter.rows if r["row_type"] == "round"]
    assert row["round"] == 1 and row["target_sparsity"] == 0.9
    assert all(r["sparsity"] == row["sparsity"] for r in reporter.rows if r["row_type"] == "epoch")
    # The topology really moved: the final mask is not the initial random ERK mask.
    generator_seed = random_streams.random_scores_seed(0)
    initial = pruning.prune_to_sparsity(
        pruning.score(None, state["masks"], "random", seed=generator_seed),
        {name: torch.ones(shape, dtype=torch.bool) for name, shape in shapes.items()}, 0.9, "erk")
    assert any(not torch.equal(initial[name], state["masks"][name]) for name in shapes)
