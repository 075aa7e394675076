"""Shared fixtures: one local Ray instance per test session, and tiny trial configs.

The trial configs are deliberately minute (width-4 ResNet, 2 batches an epoch) so that a whole
schedule runs in well under a second once torch is warm; the tests check bookkeeping, not
accuracy.
"""

from __future__ import annotations

import json
import os
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from sweeps.layers import deep_merge

DIGITS_CLASSES, DIGITS_CHANNELS = 10, 1


#: `make test-fast` sets it: the fast tier runs the tests not marked slow, and a test there that
#: starts a process (Ray starts its raylet and GCS as processes too) fails at once, naming the
#: marker it needs instead of quietly making the tier slow.
FAST_TIER = os.environ.get("PRUNETUNE_TEST_TIER") == "fast"


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    if FAST_TIER:
        keep = [item for item in items if item.get_closest_marker("slow") is None]
        config.hook.pytest_deselected(items=[item for item in items if item not in keep])
        items[:] = keep


@pytest.fixture(autouse=True)
def no_processes_in_the_fast_tier(monkeypatch: pytest.MonkeyPatch,
                                  request: pytest.FixtureRequest) -> None:
    if not FAST_TIER:
        return
    import subprocess

    def refuse(*args: Any, **kwargs: Any) -> None:
        raise AssertionError(
            f"{request.node.nodeid} starts a process (a subprocess, or Ray): mark it "
            "@pytest.mark.slow, or keep it in-process (the fast tier starts none)")

    monkeypatch.setattr(subprocess.Popen, "__init__", refuse)


@pytest.fixture(scope="session", autouse=True)
def one_torch_thread() -> Iterator[None]:
    """Tiny models on a shared 2-core machine: a second intra-op thread only waits for the first
    (measured 0.5 s vs 10-20 s per tiny trial under load). Ray trials set their own count."""
    import torch

    previous = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(previous)


@pytest.fixture(scope="session")
def data_root(tmp_path_factory: pytest.TempPathFactory) -> Path:
    # Absolute: Ray trials run with their trial directory as working directory.
    return tmp_path_factory.mktemp("prunetune-data").resolve()


@pytest.fixture(scope="session")
def tiny_trial(data_root: Path) -> Callable[..., dict[str, Any]]:
    """`tiny_trial(method=..., train={...}, ...)`: a raw TrialConfig dict for a seconds-long
    digits trial, with the given sections merged over the tiny defaults."""
    base = {
        "method": "dense",
        "seed": 0,
        "data": {"name": "digits", "root": str(data_root)},
        "model": {"name": "resnet18_cifar", "width": 4},
        "train": {
            "epochs": 2,
            "batch_size": 32,
            "eval_batch_size": 512,
            "max_batches": 2,
            "device": "cpu",
        },
        # Every round measures its cost; the cheapest settings that still time two batch sizes.
        "measure": {"batch_sizes": [1, 2], "budget_s": 0.0, "min_repeats": 1},
    }

    def make(**overrides: Any) -> dict[str, Any]:
        return deep_merge(base, overrides)

    return make


@pytest.fixture(scope="module")
def ray_local() -> Iterator[Any]:
    """A 2-CPU local Ray started once per module that asks for it, and shut down after it, so
    that code under test which calls `ray.init` itself (run_sweep) never finds one running.
    A Ray that is already up is used and left alone."""
    ray = pytest.importorskip("ray")
    if ray.is_initialized():
        yield ray
        return
    # address="local": a bare ray.init joins any Ray already running on this machine.
    ray.init(address="local", num_cpus=2, include_dashboard=False, log_to_driver=False)
    try:
        yield ray
    finally:
        ray.shutdown()


def check_checkpoint_contract(directory: Path, trial: dict[str, Any]) -> dict[str, Any]:
    """Assert the checkpoint contract users rely on (docs/results-and-checkpoints.md) on one
    round checkpoint of a digits trial; returns its
    state. Plain tensors (weights_only), strict loading into a fresh unpruned model, masks over
    exactly the prunable weights, and the resume/rewind fields present; a structured round
    (`layer_widths`) rebuilds from the unpruned model with `pruning.rebuild`."""
    import torch

    import pruning
    from trainables.checkpoints import load_round_checkpoint
    from trainables.config import ModelConfig
    from trainables.models import build_model
    from trainables.resolve import parse_trial_config

    config = parse_trial_config(trial, check_ignored=False)
    state = load_round_checkpoint(directory)
    for key in ("kind", "round", "sparsity", "best_model", "masks", "init_weights"):
        assert key in state, key
    assert state["kind"] == "round"
    # The weights a round ended with are kept for the next round (and round 0's for the trials
    # that start from the dense model); a trial's last pruned round keeps one set only.
    last_pruned = state["round"] > 0 and state["metrics"]["final_round"]
    assert ("model" in state) != last_pruned, (state["round"], sorted(state))
    # Every stream is derived from the seed (trainables/random_streams.py): no RNG state saved;
    # a finished round is never resumed mid-way, so it carries no optimizer state either.
    assert "rng" not in state and "optimizer" not in state
    if state["round"] == 0:  # the dense model keeps the weights it can be rewound to
        assert isinstance(state["epoch_weights"], dict)
    elif config.method in ("imp", "channels"):
        rewind = config.settings.rewind_epoch
        assert state["rewind_epoch"] == rewind
        assert (state["rewind_weights"] is None) == (rewind is None)

    def fresh() -> Any:
        return build_model(ModelConfig(width=config.model.width), DIGITS_CLASSES, DIGITS_CHANNELS)

    widths = state.get("layer_widths")
    if widths is not None:
        # A structured round holds the smaller network: plain state dicts plus its per-layer
        # widths (ints), rebuilt from a freshly built unpruned model; strictly, both weights.
        assert all(isinstance(v, int) for fields in widths.values() for v in fields.values())
        assert widths != pruning.layer_widths(fresh()), "a structured round removed nothing"
        for key in ("original_channels", "channel_counts"):
            assert all(isinstance(count, int) for count in state[key].values()), key
    for name in ("model", "best_model")[last_pruned:]:
        keys = list(state[name])
        assert not [k for k in keys if "weight_orig" in k or "weight_mask" in k], keys
        assert not [k for k in keys if "parametrizations" in k], keys
        model = fresh()
        if widths is None:
            model.load_state_dict(state[name], strict=True)
        else:
            pruning.rebuild(model, {"state_dict": state[name], "layer_widths": widths})

    assert list(state["masks"]) == pruning.prunable_parameter_names(model)
    parameters = dict(model.named_parameters())
    for name, keep in state["masks"].items():
        assert keep.dtype == torch.bool and keep.shape == parameters[name].shape

    metrics = json.loads((directory / "metrics.json").read_text())
    assert metrics["round"] == state["round"]
    assert metrics["sparsity"] == state["sparsity"]
    return state


@pytest.fixture(scope="session")
def checkpoint_contract() -> Callable[[Path, dict[str, Any]], dict[str, Any]]:
    """`checkpoint_contract(directory, trial_dict)`: assert the checkpoint contract."""
    return check_checkpoint_contract
