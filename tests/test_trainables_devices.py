"""Device, precision and compilation options of a trial (CPU machine: the GPU paths are only
checked for refusing cleanly)."""

import tempfile

import pytest
import torch

from trainables.config import TrainConfig
from trainables.errors import ConfigError
from trainables.reporting import DirectoryReporter
from trainables.resolve import parse_trial_config
from trainables.runtime import resolve_runtime
from trainables.trial import run_trial


@pytest.mark.skipif(torch.cuda.is_available(), reason="checks the CPU defaults")
def test_cpu_defaults_are_full_precision_contiguous_and_threads_follow_the_grant() -> None:
    before = torch.get_num_threads()
    try:
        runtime = resolve_runtime(TrainConfig(), cpus=1)
        assert torch.get_num_threads() == 1
    finally:
        torch.set_num_threads(before)
    assert runtime.device == torch.device("cpu")
    assert runtime.amp_dtype is None and not runtime.channels_last
    assert resolve_runtime(TrainConfig(amp="bf16")).amp_dtype == torch.bfloat16
    assert resolve_runtime(TrainConfig(amp="fp16")).needs_grad_scaler


@pytest.mark.skipif(torch.cuda.is_available(), reason="needs a machine without a GPU")
def test_asking_for_cuda_without_a_gpu_is_a_config_error() -> None:
    with pytest.raises(ConfigError, match="torch sees no usable GPU here"):
        resolve_runtime(TrainConfig(device="cuda"))


@pytest.mark.slow
def test_compiled_training_keeps_the_mask_and_reports_like_eager(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    compiled_models = []
    real_compile = torch.compile

    def spy(model, *args, **kwargs):
        compiled_models.append(model)
        return real_compile(model, *args, **kwargs)

    monkeypatch.setattr(torch, "compile", spy)
    results = {}
    for compiled in (False, True):
        config = parse_trial_config({
            "method": "snip", "data": {"name": "synthetic"}, "model": {"width": 4},
            "train": {"epochs": 1, "max_batches": 2, "compile": compiled},
            "prune": {"target_sparsity": 0.5},
        })
        reporter = DirectoryReporter(tempfile.mkdtemp())
        run_trial(config, reporter, cpus=1)
        state = reporter.latest_state()
        for name, keep in state["masks"].items():
            assert not state["best_model"][name][~keep].any(), name
        results[compiled] = reporter.rows[-1]
        assert len(compiled_models) == int(compiled)  # train.compile really compiles
    assert results[True]["sparsity"] == results[False]["sparsity"]
    assert results[True]["params_prunable"] == results[False]["params_prunable"]
    # Compiled kernels may round differently; two batches cannot move accuracy far.
    assert abs(results[True]["val_acc"] - results[False]["val_acc"]) <= 0.05


def test_a_cuda_round_records_its_gpu_grant_and_peak_memory(monkeypatch) -> None:
    from trainables.runtime import DEVICE_FIELDS, Runtime, device_fields

    assert device_fields(Runtime(torch.device("cpu"), None, False)) == {}  # CPU rows unchanged
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "3")
    monkeypatch.setattr(torch.cuda, "get_device_name", lambda device: "NVIDIA H100")
    monkeypatch.setattr(torch.cuda, "max_memory_allocated", lambda device: 1536 * 2 ** 20)
    fields = device_fields(Runtime(torch.device("cuda:0"), None, True, gpu_share=0.25,
                                   gpu_ids=("3",)))
    assert fields == {"gpu_ids": ["3"], "cuda_visible_devices": "3", "gpu_name": "NVIDIA H100",
                      "gpu_memory_peak_mib": 1536.0}
    assert tuple(fields) == DEVICE_FIELDS
