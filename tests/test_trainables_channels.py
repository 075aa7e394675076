"""The structured method `channels`, run as trials (DirectoryReporter, no Ray): a round's network
really is smaller and reloads from plain tensors and ints; the channels it keeps are the ones
the allocation picks, computed here from the dense checkpoint's weights by hand; resume after a
crash, inside or between rounds, equals an uninterrupted run; round 0 is the shared dense model.
"""

from __future__ import annotations

import copy
import json
import math
from pathlib import Path
from typing import Any

import pytest
import torch
from invariants import check_trial, near_tie_counts

import pruning
import trainables.methods.rounds
import trainables.reporting
from trainables import faults
from trainables.checkpoints import load_round_checkpoint
from trainables.datasets import load_dataset
from trainables.errors import ConfigError
from trainables.loop import TrialData, evaluate
from trainables.models import build_model
from trainables.reporting import DirectoryReporter
from trainables.resolve import parse_trial_config
from trainables.runtime import resolve_runtime
from trainables.trial import run_trial

try:
    from channel_helpers import brute_force_l1, old_and_new_slices, residual_shapes_match
except ImportError:  # tests/ collected as a package
    from tests.channel_helpers import brute_force_l1, old_and_new_slices, residual_shapes_match

WIDTH, CLASSES, CHANNELS = 4, 10, 1


def run(trial: dict[str, Any], directory: Path) -> DirectoryReporter:
    directory.mkdir(parents=True, exist_ok=True)
    (directory / "params.json").write_text(json.dumps(trial))  # for invariants.check_trial
    reporter = DirectoryReporter(directory)
    run_trial(parse_trial_config(trial), reporter)
    return reporter


def round_states(directory: Path) -> list[dict[str, Any]]:
    paths = sorted(path for path in directory.glob("round_*") if path.is_dir())
    states = [load_round_checkpoint(p) for p in paths]
    return [state for state in states if state["kind"] == "round"]


def fresh(trial: dict[str, Any]) -> torch.nn.Module:
    return build_model(parse_trial_config(trial).model, CLASSES, CHANNELS)


def rebuilt(trial: dict[str, Any], weights: dict[str, torch.Tensor], widths: Any) -> Any:
    return pruning.rebuild(fresh(trial), {"state_dict": weights, "layer_widths": widths})


@pytest.fixture
def round_starts(monkeypatch) -> list[dict[str, Any]]:
    """The weights each round's training starts from, and the model object it trains."""
    starts: list[dict[str, Any]] = []
    real = trainables.methods.rounds.train_phase

    def spy(model, *args, **kwargs):
        starts.append({"round": kwargs["round_index"],
                       "start": {k: v.detach().clone() for k, v in model.state_dict().items()}})
        result = real(model, *args, **kwargs)
        starts[-1]["model"] = copy.deepcopy(model)
        starts[-1]["best_state"] = copy.deepcopy(result.best_state)
        return result

    monkeypatch.setattr(trainables.methods.rounds, "train_phase", spy)
    return starts


def test_a_round_reloads_from_tensors_and_ints_to_identical_outputs_and_its_test_accuracy(
    tiny_trial, tmp_path, round_starts, checkpoint_contract
):
    trial = tiny_trial(method="channels", prune={"target_sparsity": 0.6})
    reporter = run(trial, tmp_path)
    (row,) = [r for r in reporter.rows if r["row_type"] == "round" and r["round"] == 1]
    directory = sorted(tmp_path.glob("round_*"))[-1]
    state = checkpoint_contract(directory, trial)
    # The network as trained in memory, with the round's best weights (the trial's last round
    # keeps only those), and as reloaded from disk.
    trained = round_starts[-1]["model"]
    trained.load_state_dict(round_starts[-1]["best_state"])
    trained.eval()
    reloaded = rebuilt(trial, state["best_model"], state["layer_widths"]).eval()
    inputs = torch.randn(8, CHANNELS, 32, 32)
    with torch.no_grad():
        assert torch.equal(reloaded(inputs), trained(inputs))
    # Smaller for real: its parameters are what the row reports, fewer than the dense ones.
    assert sum(p.numel() for p in reloaded.parameters()) == row["params_total"]
    assert row["params_total"] < row["params_total_dense"] == sum(
        p.numel() for p in fresh(trial).parameters())
    # The recorded test accuracy is the reloaded best weights' (and the file invariants hold).
    config = parse_trial_config(trial)
    splits = load_dataset(config.data)
    runtime = resolve_runtime(config.train)
    best = rebuilt(trial, state["best_model"], state["layer_widths"])
    augment = TrialData.build(splits, config, runtime).eval_augment
    # Evaluated as the trial did (its batch size): the same computation on this machine.
    assert row["test_acc"] == evaluate(best, splits, "test", augment, runtime,
                                       config.train.eval_batch_size, config.train.max_eval_batches)
    # In batches of 97: the same accuracy up to the predictions whose top two logits nearly tie,
    # the only ones that a batch size's (or a CPU's) last-bit rounding can flip.
    test_acc = evaluate(best, splits, "test", augment, runtime, 97)
    correct, near_ties, seen = near_tie_counts(best, splits, "test", augment, runtime, 97)
    assert test_acc == correct / seen
    assert abs(row["test_acc"] * seen - correct) <= near_ties + 1e-6
    assert check_trial(tmp_path) == 2
    # Residual additions still add tensors of one shape.
    for name, branch, identity, output in residual_shapes_match(reloaded, inputs):
        assert branch == identity == output, name


def expected_kept(scores: dict[str, list[float]], fraction: float, allocation: str
                  ) -> dict[str, list[int]]:
    """The allocation by hand: floors of max(1, ceil(0.1 c)); uniform keeps c - round(f c) of
    each group by score, global removes the round(f * total) lowest-scoring channels above the
    floors (ties: none occur with trained float weights)."""
    floors = {name: max(1, math.ceil(0.1 * len(s))) for name, s in scores.items()}
    ranked = {name: sorted(range(len(s)), key=lambda c: -s[c]) for name, s in scores.items()}
    if allocation == "uniform":
        counts = {name: max(floors[name], len(s) - round(fraction * len(s)))
                  for name, s in scores.items()}
    else:
        candidates = sorted((scores[name][c], name) for name, order in ranked.items()
                            for c in order[floors[name]:])
        total = sum(len(s) for s in scores.values())
        counts = {name: len(s) for name, s in scores.items()}
        for _, name in candidates[:round(fraction * total)]:
            counts[name] -= 1
    return {name: sorted(ranked[name][: counts[name]]) for name in scores}


@pytest.mark.parametrize(("allocation", "fraction"), [("uniform", 0.5), ("global", 0.4)])
def test_kept_channels_are_the_allocation_and_removed_ones_vanish_downstream(
    tiny_trial, tmp_path, round_starts, allocation, fraction
):
    trial = tiny_trial(method="channels", channels={
        "target": "channels", "channel_fraction": fraction, "allocation": allocation})
    reporter = run(trial, tmp_path)
    dense_state, pruned_state = round_states(tmp_path)
    dense = fresh(trial)
    dense.load_state_dict(dense_state["model"])
    kept = expected_kept(brute_force_l1(dense), fraction, allocation)
    # Round 1 starts from the dense weights with exactly those channels, everywhere downstream.
    start = rebuilt(trial, round_starts[1]["start"], pruned_state["layer_widths"])
    for name, got, want in old_and_new_slices(dense, start, kept):
        assert torch.equal(got, want), name
    counts = {name: len(indices) for name, indices in kept.items()}
    assert pruned_state["channel_counts"] == counts
    assert pruned_state["original_channels"] == {name: len(s) for name, s in
                                                 brute_force_l1(dense).items()}
    (row,) = [r for r in reporter.rows if r["row_type"] == "round" and r["round"] == 1]
    assert row["channels"] == sum(counts.values())
    assert row["target_channel_fraction"] == fraction and row["target_sparsity"] is None
    assert row["level_by"] == "target_channel_fraction"


def test_params_target_keeps_at_most_what_unstructured_pruning_keeps(tiny_trial, tmp_path):
    trial = tiny_trial(method="channels",
                       channels={"schedule": "iterative", "rounds": 2, "rate": 0.5,
                                 "allocation": "global", "criterion": "bn_scale"})
    reporter = run(trial, tmp_path)
    model = fresh(trial)
    total = sum(p.numel() for p in model.parameters())
    prunable = sum(dict(model.named_parameters())[name].numel()
                   for name in pruning.prunable_parameter_names(model))
    rows = [r for r in reporter.rows if r["row_type"] == "round"]
    assert [r["target_sparsity"] for r in rows] == [0.0, 0.5, 0.75]
    for row in rows[1:]:
        matched = total - round(row["target_sparsity"] * prunable)
        assert row["params_total"] <= matched
        assert row["params_total"] > 0.8 * matched  # the least pruning, not an overshoot
    assert check_trial(tmp_path) == 3


COMPARED = ("row_type", "round", "epoch", "train_loss", "val_acc", "test_acc", "params_total",
            "channels", "flops")


def comparable(rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
    return [{key: row.get(key) for key in COMPARED} for row in rows]


@pytest.mark.parametrize("crash", ["inside_round", "after_round"])
def test_resume_of_a_crashed_structured_trial_equals_an_uninterrupted_run(
    tiny_trial, tmp_path, monkeypatch, crash
):
    # A progress checkpoint after every epoch, so the crash inside round 2 resumes from one.
    monkeypatch.setattr(trainables.reporting.CheckpointCadence, "due", lambda self: True)
    trial = tiny_trial(method="channels", train={"epochs": 3},
                       channels={"schedule": "iterative", "rounds": 2, "rate": 0.5,
                                 "rewind": "epoch:1", "criterion": "taylor"})
    whole = run(trial, tmp_path / "whole").rows
    # Round 2 trains epochs 1 and 2 (rewound to 1): die before epoch 2, or before round 2.
    epoch = 2 if crash == "inside_round" else 1
    monkeypatch.setenv(faults.ENV_VAR, f"crash_once:round=2,epoch={epoch}:{tmp_path / 'mark'}")
    with pytest.raises(faults.InjectedFaultError):
        run(trial, tmp_path / "crashed")
    left = round_states(tmp_path / "crashed")
    assert [state["round"] for state in left] == [0, 1]
    resumed = run(trial, tmp_path / "crashed").rows
    rows = [json.loads(line) for line in
            (tmp_path / "crashed" / "result.json").read_text().splitlines()]
    # Every (round, epoch) once, and the numbers of the uninterrupted run.
    assert comparable(rows) == comparable(whole)
    if crash == "inside_round":
        assert [(r["round"], r["epoch"]) for r in resumed if r["row_type"] == "epoch"] == [(2, 2)]
    for a, b in zip(round_states(tmp_path / "whole"), round_states(tmp_path / "crashed"),
                    strict=True):
        assert a.get("layer_widths") == b.get("layer_widths") and a.keys() == b.keys()
        for key in ("model", "best_model", "rewind_weights"):
            for name, tensor in (a.get(key) or {}).items():
                assert torch.equal(tensor, b[key][name]), (a["round"], key, name)
    assert check_trial(tmp_path / "crashed") == 3


def test_round_0_is_the_shared_dense_model(tiny_trial, tmp_path):
    cache = {"dense_model": {"cache": str(tmp_path / "cache")}}
    run(tiny_trial(method="imp", imp={"schedule": "oneshot"}, **cache), tmp_path / "imp")
    channels = run(tiny_trial(method="channels", **cache), tmp_path / "channels").rows
    dense_row = next(r for r in channels if r["row_type"] == "round")
    assert dense_row["reused_dense"] is True and dense_row["method"] == "channels"
    assert not [r for r in channels if r["row_type"] == "epoch" and r["round"] == 0]
    imp_dense, _ = round_states(tmp_path / "imp")
    channels_dense, _ = round_states(tmp_path / "channels")
    for name, tensor in imp_dense["model"].items():
        assert torch.equal(tensor, channels_dense["model"][name]), name


def test_what_channels_does_not_read_is_refused(tiny_trial):
    cases = {
        "prune.allocation": ({"prune": {"allocation": "global"}}, "channels.allocation"),
        "target_sparsity with a channel target": (
            {"prune": {"target_sparsity": 0.5}, "channels": {"target": "channels"}},
            "prune.target_sparsity is ignored by method channels"),
        "score_batches without taylor": ({"channels": {"score_batches": 2}},
                                         "channels.score_batches is ignored"),
        "rate of one-shot": ({"channels": {"rate": 0.3}}, "channels.rate is ignored"),
        "rewind beyond training": ({"channels": {"rewind": "epoch:2"}}, "channels.rewind"),
    }
    for settings, words in cases.values():
        with pytest.raises(ConfigError, match=words.replace(".", r"\.")):
            parse_trial_config(tiny_trial(method="channels", **settings))


def test_unreachable_target_names_the_method_and_round(tiny_trial, tmp_path):
    trial = tiny_trial(method="channels", prune={"target_sparsity": 0.999},
                       channels={"min_keep_fraction": 0.5})
    with pytest.raises(ConfigError, match="method channels, round 1: target_params"):
        run(trial, tmp_path)


def test_bn_l1_adds_network_slimmings_subgradient_to_the_bn_scales(tiny_trial, tmp_path):
    # One SGD step without momentum or decay: gamma' = gamma - lr (dCE/dgamma + s sign(gamma));
    # BatchNorm scales start at 1, so the penalty moves each by exactly -lr * s.
    strength, lr = 0.01, 0.05
    train = {"epochs": 1, "max_batches": 1, "momentum": 0.0, "weight_decay": 0.0, "lr": lr}
    plain = tiny_trial(train=train)
    slim = tiny_trial(train={**train, "bn_l1": strength})
    run(plain, tmp_path / "plain")
    run(slim, tmp_path / "slim")
    (a,), (b,) = round_states(tmp_path / "plain"), round_states(tmp_path / "slim")
    weights = a["model"]
    norms = [name for name in weights if name.endswith(".weight") and weights[name].dim() == 1]
    assert norms
    for name in norms:
        assert torch.allclose(b["model"][name] - a["model"][name],
                              torch.full_like(a["model"][name], -lr * strength), atol=1e-7), name
    convs = [name for name in a["model"] if a["model"][name].dim() == 4]
    for name in convs:  # nothing else moved differently
        assert torch.equal(a["model"][name], b["model"][name]), name
