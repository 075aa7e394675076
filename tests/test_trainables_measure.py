"""The cost fields of every round row (trainables/measure.py): FLOPs against a count by hand
from the saved weights, the nonzero count falling exactly as the zeros say, the `measure`
switch, and the settings kept out of the dense recipe. Nothing here is timed: latency fields are
checked for presence and sense only."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
import torch

import pruning
import trainables.measure
from trainables.errors import ConfigError
from trainables.recipe import recipe_hash
from trainables.reporting import DirectoryReporter
from trainables.resolve import parse_trial_config
from trainables.trial import run_trial


def run(trial: dict[str, Any], directory: Path) -> list[dict[str, Any]]:
    reporter = DirectoryReporter(directory)
    run_trial(parse_trial_config(trial), reporter)
    return [row for row in reporter.rows if row["row_type"] == "round"]


def states(directory: Path) -> list[dict[str, Any]]:
    paths = sorted(path for path in directory.glob("checkpoint_*") if path.is_dir())
    return [torch.load(p / "state.pt", map_location="cpu", weights_only=True) for p in paths]


def output_positions_by_hand(name: str, image_size: int = 32) -> int:
    """Where each weight of a resnet18_cifar layer is applied, for one image: the 3x3 stride-1
    stem and stage 1 keep the input size; stages 2-4 halve it (their first conv and downsample
    have stride 2); the classifier runs once on the pooled features."""
    if name == "fc":
        return 1
    stage = int(name[len("layer")]) if name.startswith("layer") else 1
    side = image_size // 2 ** (stage - 1)
    return side * side


def hand_counts(weights: dict[str, torch.Tensor]) -> tuple[int, int]:
    """(MACs, MACs by nonzero weights) of one forward pass: every conv/linear weight entry is
    one multiply-accumulate per output position (biases, BatchNorm and additions are not MACs)."""
    dense = nonzero = 0
    for key, tensor in weights.items():
        if key.endswith(".weight") and tensor.dim() in (2, 4):
            positions = output_positions_by_hand(key.removesuffix(".weight"))
            dense += tensor.numel() * positions
            nonzero += int(tensor.count_nonzero()) * positions
    return dense, nonzero


@pytest.mark.parametrize(
    "method", [{"method": "imp", "imp": {"schedule": "oneshot"}}, {"method": "channels"}],
    ids=["imp", "channels"])
def test_flops_equal_a_hand_count_of_the_saved_weights(tiny_trial, tmp_path, method):
    rows = run(tiny_trial(prune={"target_sparsity": 0.7}, **method), tmp_path)
    saved = [state for state in states(tmp_path) if state["kind"] == "round"]
    assert len(saved) == len(rows) == 2
    for row, state in zip(rows, saved, strict=True):
        dense, nonzero = hand_counts(state["model"])
        assert row["flops"] == dense
        assert row["flops_effective"] == nonzero
    dense_row, pruned_row = rows
    if method["method"] == "imp":
        # Zeros do not shrink a dense kernel: same MACs, fewer by nonzero weights.
        assert pruned_row["flops"] == dense_row["flops"] > pruned_row["flops_effective"]
    else:
        # A smaller network: fewer MACs, all of them by nonzero weights.
        assert pruned_row["flops"] == pruned_row["flops_effective"] < dense_row["flops"]


def test_flops_effective_falls_by_the_zeroed_weights_times_their_positions(tiny_trial, tmp_path):
    rows = run(tiny_trial(method="imp", imp={"rounds": 2, "rate": 0.5}), tmp_path)
    saved = [state for state in states(tmp_path) if state["kind"] == "round"]
    for earlier, later, state in zip(rows, rows[1:], saved[1:], strict=False):
        removed = 0
        for key, keep in state["masks"].items():
            newly = int((~keep).sum()) - int((~saved[earlier["round"]]["masks"][key]).sum())
            removed += newly * output_positions_by_hand(key.removesuffix(".weight"))
        assert earlier["flops_effective"] - later["flops_effective"] == removed
        assert later["flops"] == earlier["flops"]


def test_latency_fields_follow_the_measure_section(tiny_trial, tmp_path):
    trial = tiny_trial(measure={"batch_sizes": [1, 3], "min_repeats": 2})
    (row,) = run(trial, tmp_path)
    latency = {key for key in row if key.startswith("latency_ms_")}
    assert latency == {"latency_ms_b1", "latency_ms_b3"}
    assert all(row[key] > 0 for key in latency)
    # Measured on the trial's device with the threads it trains with (conftest: one).
    assert row["latency_device"] == "cpu" and row["latency_threads"] == torch.get_num_threads()
    assert 0 < row["measure_time_s"] < row["round_time_s"]
    assert "latency_note" not in row  # only N:M trials carry one


def test_the_switch_turns_all_measuring_off(tiny_trial, tmp_path, monkeypatch):
    def refuse(*args, **kwargs):
        raise AssertionError("measured although measure.enabled is false")

    monkeypatch.setattr(trainables.measure.pruning, "latency_ms", refuse)
    monkeypatch.setattr(trainables.measure.pruning, "flops", refuse)
    rows = run(tiny_trial(method="imp", imp={"schedule": "oneshot"},
                          measure={"enabled": False}), tmp_path)
    assert len(rows) == 2
    for row in rows:
        assert not [key for key in row if key.startswith(("latency", "flops", "measure"))], row
    metrics = json.loads(sorted(tmp_path.glob("checkpoint_*"))[-1].joinpath(
        "metrics.json").read_text())
    assert "flops" not in metrics


def test_measure_settings_stay_out_of_the_dense_recipe_and_bn_l1_is_in_it(tiny_trial):
    base = parse_trial_config(tiny_trial())
    unmeasured = parse_trial_config(tiny_trial(measure={"enabled": False, "batch_sizes": [8]}))
    slimmed = parse_trial_config(tiny_trial(train={"bn_l1": 1e-4}))
    assert recipe_hash(unmeasured) == recipe_hash(base)
    assert recipe_hash(slimmed) != recipe_hash(base)


def test_a_reused_dense_round_is_measured_by_the_trial_that_reports_it(tiny_trial, tmp_path):
    cache = {"dense_model": {"cache": str(tmp_path / "cache")}}
    first = run(tiny_trial(method="imp", imp={"schedule": "oneshot"}, **cache), tmp_path / "a")
    assert "latency_ms_b2" in first[0]
    again = run(tiny_trial(method="imp", imp={"schedule": "oneshot"}, measure={
        "enabled": False}, **cache), tmp_path / "b")
    assert again[0]["reused_dense"] is True
    assert not [key for key in again[0] if key.startswith(("latency", "flops"))]
    assert again[0]["test_acc"] == first[0]["test_acc"]


@pytest.mark.parametrize(("settings", "words"), [
    ({"batch_sizes": [1, 1]}, "'measure.batch_sizes': batch_sizes must be distinct"),
    ({"batch_sizes": []}, "'measure.batch_sizes': list should have at least 1 item"),
    ({"min_repeats": 5, "max_repeats": 2}, "'measure': max_repeats (2) must be >= min_repeats"),
    ({"budget_s": -1.0}, "'measure.budget_s': input should be greater than or equal to 0"),
])
def test_bad_measure_settings_name_the_field(tiny_trial, settings, words):
    with pytest.raises(ConfigError) as raised:
        parse_trial_config(tiny_trial(measure=settings))
    assert words in str(raised.value)


def test_settings_reach_the_latency_measurement(tiny_trial):
    config = parse_trial_config(tiny_trial(measure={"batch_sizes": [2, 5], "warmup": 0,
                                                    "min_repeats": 4, "max_repeats": 9,
                                                    "budget_s": 0.5}))
    assert trainables.measure.latency_settings(config) == pruning.LatencySettings(
        batch_sizes=(2, 5), warmup=0, min_repeats=4, max_repeats=9, budget_s=0.5)


def test_every_method_reads_the_measure_section_from_a_sweeps_base():
    from sweeps.spec import plan_sweep

    methods = ["dense", "imp", "channels", "snip", "gmp", "rigl"]
    raw = {"name": "m", "base": {"data": {"name": "digits"}, "measure": {"batch_sizes": [4]}},
           "experiments": [{"config": {"method": method}} for method in methods]}
    trials = plan_sweep(raw, "m.yaml").trials
    assert sorted(trial["method"] for trial in trials) == sorted(methods)
    assert all(trial["measure"]["batch_sizes"] == [4] for trial in trials)
