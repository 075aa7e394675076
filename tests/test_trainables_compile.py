"""`train.compile` as trials use it (DirectoryReporter, no Ray): one compiled model per network
shape across a trial's phases, and inductor's compile workers capped at the trial's CPUs.

`torch.compile` is replaced by a counting fake (compiling for real takes minutes on a CPU and
is torch's to test): it records the model it was given, that model's parameter shapes and
inductor's `compile_threads` at that moment, and returns a plain wrapper calling the model.
"""

from __future__ import annotations

import copy
import dataclasses
from collections.abc import Iterator
from typing import Any

import pytest
import torch
from torch._inductor import config as inductor_config

import trainables.loop
import trainables.trial
from trainables.reporting import DirectoryReporter
from trainables.resolve import parse_trial_config
from trainables.runtime import resolve_runtime
from trainables.trial import run_trial

#: A CPU grant unlike both torch's thread count in tests (1) and inductor's default (the cores).
TRIAL_CPUS = 3


@pytest.fixture
def compiles(monkeypatch) -> Iterator[list[dict[str, Any]]]:
    """Every torch.compile call of the code under test; the trial's runtime has TRIAL_CPUS."""
    calls: list[dict[str, Any]] = []

    def fake_compile(model: torch.nn.Module, *args: Any, **kwargs: Any) -> Any:
        calls.append({
            "model": model,
            "shapes": [tuple(p.shape) for p in model.parameters()],
            "compile_threads": inductor_config.compile_threads,
        })

        def forward(*inputs: Any, **options: Any) -> Any:
            return model(*inputs, **options)

        return forward

    def runtime_with_cpus(*args: Any, **kwargs: Any) -> Any:
        # Ray's CPU grant without setting torch's threads (the test session keeps one).
        return dataclasses.replace(resolve_runtime(*args, **kwargs), cpus=TRIAL_CPUS)

    monkeypatch.setattr(torch, "compile", fake_compile)
    monkeypatch.setattr(trainables.trial, "resolve_runtime", runtime_with_cpus)
    # Torch's own patch restores it after the test (the code under test sets it); pytest's
    # monkeypatch would delete the config entry instead.
    with inductor_config.patch(compile_threads=inductor_config.compile_threads):
        yield calls


def run(trial: dict[str, Any], directory) -> DirectoryReporter:
    reporter = DirectoryReporter(directory)
    run_trial(parse_trial_config(trial), reporter)
    return reporter


def test_imp_rounds_on_one_network_compile_it_once_with_the_trials_cpus(
    tiny_trial, tmp_path, compiles
):
    trial = tiny_trial(method="imp", imp={"rounds": 2, "rate": 0.5}, train={"compile": True})
    reporter = run(trial, tmp_path)
    rounds = [row for row in reporter.rows if row["row_type"] == "round"]
    assert [row["round"] for row in rounds] == [0, 1, 2]  # three training phases ...
    assert len(compiles) == 1  # ... one compiled model (old code: one per phase, 3)
    assert compiles[0]["compile_threads"] == TRIAL_CPUS  # old: min(32, the machine's cores)


def test_a_narrowed_network_gets_its_own_compiled_model(tiny_trial, tmp_path, compiles):
    trial = tiny_trial(method="channels", prune={"target_sparsity": 0.6},
                       train={"compile": True})
    run(trial, tmp_path)
    # Round 0 trains the dense network, round 1 the narrowed one: the same model object with
    # fewer channels, so two shapes and two compiled models, each with the trial's CPUs.
    assert len(compiles) == 2
    assert compiles[0]["model"] is compiles[1]["model"]
    assert compiles[0]["shapes"] != compiles[1]["shapes"]
    assert [call["compile_threads"] for call in compiles] == [TRIAL_CPUS, TRIAL_CPUS]


def test_compiled_reuses_per_model_and_shape_and_is_not_copied(compiles):
    runtime = dataclasses.replace(resolve_runtime(parse_trial_config({}).train), cpus=2)
    first, other = torch.nn.Linear(4, 3), torch.nn.Linear(4, 3)
    wrapper = trainables.loop.compiled(first, runtime)
    assert trainables.loop.compiled(first, runtime) is wrapper  # a later phase: no compile
    assert len(compiles) == 1 and compiles[0]["compile_threads"] == 2
    trainables.loop.compiled(other, runtime)  # same shapes, another network: its own
    first.weight = torch.nn.Parameter(torch.zeros(2, 4))  # narrowed in place
    first.bias = torch.nn.Parameter(torch.zeros(2))
    trainables.loop.compiled(first, runtime)
    assert [call["model"] for call in compiles] == [first, other, first]
    # A copy of the model (evaluation copies it) starts with no compiled forms of its own.
    copied = copy.deepcopy(first)
    trainables.loop.compiled(copied, runtime)
    assert len(compiles) == 4 and compiles[-1]["model"] is copied
    assert set(first.state_dict()) == {"weight", "bias"}  # the cache is no submodule
