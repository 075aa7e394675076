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
from invariants import round_weights

import pruning
import trainables.measure
from trainables.checkpoints import load_round_checkpoint
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
    paths = sorted(path for path in directory.glob("round_*") if path.is_dir())
    return [load_round_checkpoint(p) for p in paths]


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
        dense, nonzero = hand_counts(round_weights(state))
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
    # Measured on the trial's device with the threads it trains with (conftest: one), in the
    # precision it trains in (no amp on the CPU), on a device no other trial shares.
    assert row["latency_device"] == "cpu" and row["latency_threads"] == torch.get_num_threads()
    assert row["latency_precision"] == "fp32" and row["latency_shared_device"] is False
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
    metrics = json.loads(sorted(tmp_path.glob("round_*"))[-1].joinpath(
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
    from sweeps.plan import plan_sweep

    methods = ["dense", "imp", "channels", "snip", "gmp", "rigl"]
    raw = {"name": "m", "base": {"data": {"name": "digits"}, "measure": {"batch_sizes": [4]}},
           "experiments": [{"config": {"method": method}} for method in methods]}
    trials = plan_sweep(raw, "m.yaml").raw_trials
    assert sorted(trial["method"] for trial in trials) == sorted(methods)
    assert all(trial["measure"]["batch_sizes"] == [4] for trial in trials)


def small_conv_net() -> torch.nn.Module:
    return torch.nn.Sequential(torch.nn.Conv2d(3, 8, 3), torch.nn.ReLU(), torch.nn.Flatten(),
                               torch.nn.Linear(8 * 6 * 6, 4))


def test_latency_is_timed_in_the_trials_precision_and_memory_format(tiny_trial):
    """A CPU trial with bf16 autocast and channels_last: the latency pass sees both."""
    from trainables.runtime import Runtime

    model = small_conv_net().to(memory_format=torch.channels_last)
    seen = []
    model[0].register_forward_hook(lambda module, inputs, output: seen.append(
        (inputs[0].is_contiguous(memory_format=torch.channels_last), output.dtype)))
    runtime = Runtime(device=torch.device("cpu"), amp_dtype=torch.bfloat16, channels_last=True)
    config = parse_trial_config(tiny_trial())
    fields = trainables.measure.round_cost(model, config, (3, 8, 8), runtime=runtime)
    timed = seen[-1]  # FLOP counting runs the model too, in float32 and its own layout
    assert timed == (True, torch.bfloat16)
    assert fields["latency_precision"] == "bf16"
    assert fields["latency_threads"] == torch.get_num_threads()
    assert fields["latency_shared_device"] is False


class FakeLatency:
    """`pruning.latency_ms` as if the model were on CUDA: records how it was asked to time."""

    def __init__(self) -> None:
        self.calls: list[dict] = []

    def __call__(self, model, input_shape, settings, **options) -> pruning.LatencyResult:
        self.calls.append(options)
        sizes = settings.batch_sizes
        # threads as a CPU measurement would give them: the row must not report them on CUDA
        return pruning.LatencyResult({b: 1.5 for b in sizes}, {b: 3 for b in sizes}, "cuda:0",
                                     4, {b: [1.5] * 3 for b in sizes}, "bf16", True)


@pytest.mark.parametrize(("gpu_share", "shared"), [(0.25, True), (0.5, True), (1.0, False)])
def test_on_cuda_the_row_says_whether_the_gpu_was_shared_and_drops_threads(
        tiny_trial, monkeypatch, gpu_share, shared):
    from trainables.runtime import Runtime

    fake = FakeLatency()
    monkeypatch.setattr(trainables.measure.pruning, "latency_ms", fake)
    runtime = Runtime(device=torch.device("cuda:0"), amp_dtype=torch.bfloat16,
                      channels_last=True, cpus=2, gpu_share=gpu_share)
    config = parse_trial_config(tiny_trial())
    fields = trainables.measure.round_cost(small_conv_net(), config, (3, 8, 8), runtime=runtime)
    assert fake.calls == [{"amp_dtype": torch.bfloat16, "memory_format": torch.channels_last}]
    assert "latency_threads" not in fields  # torch's CPU threads do not time a GPU
    assert fields["latency_shared_device"] is shared
    assert fields["latency_device"] == "cuda:0" and fields["latency_precision"] == "bf16"
    assert fields["latency_ms_b1"] == fields["latency_ms_b2"] == 1.5


def test_on_cuda_an_nm_round_is_timed_in_the_trials_half_precision(tiny_trial, monkeypatch):
    from pruning.nm_latency import NMLatency
    from trainables.runtime import Runtime

    fake = FakeLatency()
    asked = []

    def nm_latency(model, input_shape, settings, dtype):
        asked.append(dtype)
        result = fake(model, input_shape, settings)
        return NMLatency("cuda: 1 of 2 Conv2d/Linear layers ran 2:4 sparse", result, result,
                         result, ["3"], {"0": "not 2:4"})

    monkeypatch.setattr(trainables.measure.pruning, "latency_ms", fake)
    monkeypatch.setattr(trainables.measure.pruning, "nm_latency_ms", nm_latency)
    runtime = Runtime(device=torch.device("cuda:0"), amp_dtype=torch.bfloat16,
                      channels_last=True, gpu_share=1.0)
    config = parse_trial_config(tiny_trial(method="imp", imp={"schedule": "oneshot"},
                                           prune={"pattern": "2:4"}))
    fields = trainables.measure.round_cost(small_conv_net(), config, (3, 8, 8), runtime=runtime)
    assert asked == [torch.bfloat16]
    assert fields["latency_nm_precision"] == "bf16"
    assert fields["latency_note"] == "cuda: 1 of 2 Conv2d/Linear layers ran 2:4 sparse"
    assert fields["latency_nm_ms_b1"] == fields["latency_nm_dense_ms_b2"] == 1.5
    # No half-precision amp (fp32 training): the kernels' float16.
    fp32 = Runtime(device=torch.device("cuda:0"), amp_dtype=None, channels_last=True)
    assert trainables.measure.nm_dtype(fp32) == torch.float16
