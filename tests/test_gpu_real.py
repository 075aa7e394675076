"""On a real CUDA GPU (`pytest -m cuda`; skipped on machines without one): the paths that the
CPU tests can only check with a patched torch.cuda."""

from __future__ import annotations

import tempfile

import pytest
import torch

from trainables.config import TrainConfig
from trainables.reporting import DirectoryReporter
from trainables.resolve import parse_trial_config
from trainables.runtime import BF16_CAPABILITY, GpuGrant, cuda_problem, resolve_runtime
from trainables.trial import run_trial

pytestmark = [pytest.mark.cuda,
              pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")]


def test_this_gpu_is_usable_and_its_precision_follows_its_capability() -> None:
    assert cuda_problem(GpuGrant(share=1.0, ids=("0",))) is None
    runtime = resolve_runtime(TrainConfig(), cpus=2, grant=GpuGrant(share=0.5, ids=("0",)))
    capability = torch.cuda.get_device_capability(0)
    assert runtime.device == torch.device("cuda:0") and runtime.shared_device
    expected = torch.bfloat16 if capability >= BF16_CAPABILITY else torch.float16
    assert runtime.amp_dtype == expected and torch.backends.cudnn.benchmark
    assert torch.cuda.get_device_name(0) in runtime.describe()


def test_a_pruned_trial_trains_on_the_gpu_and_keeps_its_mask() -> None:
    config = parse_trial_config({
        "method": "snip", "data": {"name": "synthetic"}, "model": {"width": 4},
        "train": {"epochs": 1, "max_batches": 3, "device": "cuda"},
        "prune": {"target_sparsity": 0.8},
    })
    reporter = DirectoryReporter(tempfile.mkdtemp())
    run_trial(config, reporter, cpus=2, grant=GpuGrant(share=1.0, ids=("0",)))
    state = reporter.latest_state()
    for name, keep in state["masks"].items():
        assert not state["best_model"][name][~keep].any(), name
    [row] = [row for row in reporter.rows if row.get("row_type") == "round"]
    assert row["latency_device"].startswith("cuda")
