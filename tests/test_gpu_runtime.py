"""The device, precision and CUDA settings a trial chooses from Ray's grant, as units, with
`torch.cuda` patched to stand for GPUs this machine lacks.

The expected values come from NVIDIA's rules, not from the code: bf16 tensor cores start at
compute capability 8.0 (Ampere); a cubin sm_XY runs on major X at minor >= Y; PTX compute_XY is
compiled by the driver for any later GPU; CUDA 13 needs driver 580 or newer.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
import torch

from trainables.config import TrainConfig
from trainables.errors import ConfigError, GpuUnavailableError
from trainables.runtime import (
    GpuGrant,
    amp_dtype_for,
    driver_description,
    resolve_runtime,
    wheel_supports,
)

CU130_ARCHES = ["sm_75", "sm_80", "sm_86", "sm_90", "sm_100", "sm_120"]  # torch 2.14.0+cu130


@pytest.fixture
def restore_torch_settings() -> Iterator[None]:
    """resolve_runtime sets process-wide torch flags; put them back after each test (torch's
    cuBLAS flags live behind __setattr__, so monkeypatch cannot restore them)."""
    flags = [(torch.backends.cudnn, "benchmark"), (torch.backends.cudnn, "allow_tf32"),
             (torch.backends.cuda.matmul, "allow_tf32")]
    saved = [getattr(module, name) for module, name in flags]
    precision, threads = torch.get_float32_matmul_precision(), torch.get_num_threads()
    yield
    for (module, name), value in zip(flags, saved, strict=True):
        setattr(module, name, value)
    torch.set_float32_matmul_precision(precision)
    torch.set_num_threads(threads)


def fake_gpu(monkeypatch: pytest.MonkeyPatch, capability: tuple[int, int] = (8, 0),
             name: str = "NVIDIA A100-SXM4-80GB", arches: list[str] | None = None) -> None:
    """torch.cuda as it looks on a node with one usable GPU of `capability`."""
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(torch.cuda, "is_initialized", lambda: False)
    monkeypatch.setattr(torch.cuda, "device_count", lambda: 1)
    monkeypatch.setattr(torch.cuda, "get_device_capability", lambda device=None: capability)
    monkeypatch.setattr(torch.cuda, "get_device_name", lambda device=None: name)
    monkeypatch.setattr(torch.cuda, "get_arch_list",
                        lambda: CU130_ARCHES if arches is None else arches)


# ---- a granted GPU torch cannot use fails at once, naming the cause (never a CPU fallback) --


@pytest.mark.skipif(torch.cuda.is_available(), reason="needs a machine without a usable GPU")
def test_a_granted_gpu_without_cuda_is_an_error_naming_driver_wheel_and_visible_devices(
    monkeypatch: pytest.MonkeyPatch, restore_torch_settings: None
) -> None:
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "1")
    with pytest.raises(GpuUnavailableError) as raised:
        resolve_runtime(TrainConfig(), cpus=1, grant=GpuGrant(share=0.5, ids=("1",)))
    message = str(raised.value)
    assert "\n" not in message
    assert "Ray granted GPU 1 (CUDA_VISIBLE_DEVICES='1')" in message
    if torch.version.cuda is not None:
        assert f"CUDA {torch.version.cuda}" in message
        assert all(arch in message for arch in torch.cuda.get_arch_list())
    assert "driver" in message


def test_the_driver_version_is_read_from_the_file_the_driver_writes(tmp_path: Path) -> None:
    version = tmp_path / "version"
    version.write_text("NVRM version: NVIDIA UNIX Open Kernel Module for x86_64  575.57.08  "
                       "Release Build  (dvs-builder@U16-I3-B03-4-3)  Wed May 21 2025\n"
                       "GCC version:  gcc version 12.3.0\n")
    assert driver_description(version) == "NVIDIA driver 575.57.08"
    assert "no NVIDIA driver is loaded" in driver_description(tmp_path / "absent")


def test_a_gpu_the_wheel_has_no_kernels_for_is_an_error(
    monkeypatch: pytest.MonkeyPatch, restore_torch_settings: None
) -> None:
    fake_gpu(monkeypatch, capability=(7, 0), name="Tesla V100-SXM2-16GB")
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "0")
    with pytest.raises(GpuUnavailableError, match=r"Tesla V100-SXM2-16GB is sm_70, which this "
                                                  r"torch has no kernels for"):
        resolve_runtime(TrainConfig(), grant=GpuGrant(share=1.0, ids=("0",)))


@pytest.mark.parametrize(("capability", "arches", "runs"), [
    ((7, 0), CU130_ARCHES, False),   # V100: the cu130 wheel starts at sm_75
    ((7, 5), CU130_ARCHES, True),    # T4
    ((8, 9), CU130_ARCHES, True),    # L4: sm_86 cubins run on 8.9
    ((9, 0), CU130_ARCHES, True),    # H100
    ((10, 3), CU130_ARCHES, True),   # B300 runs the sm_100 cubins
    ((9, 0), ["sm_90a"], True),      # arch-specific: that exact GPU only
    ((10, 0), ["sm_90a"], False),
    ((9, 0), ["sm_80", "compute_80"], True),  # PTX, compiled by the driver
    ((7, 5), ["sm_80", "compute_80"], False),
])
def test_wheel_supports_follows_cuda_compatibility_rules(
    capability: tuple[int, int], arches: list[str], runs: bool
) -> None:
    assert wheel_supports(capability, arches) is runs


# ---- train.device cuda with a grant is not "this trial has no GPU" -------------------------


def test_device_cuda_with_a_usable_grant_runs_on_the_granted_gpu(
    monkeypatch: pytest.MonkeyPatch, restore_torch_settings: None
) -> None:
    fake_gpu(monkeypatch)
    runtime = resolve_runtime(TrainConfig(device="cuda"), cpus=2,
                              grant=GpuGrant(share=0.5, ids=("0",)))
    assert runtime.device == torch.device("cuda:0")
    assert runtime.shared_device and runtime.cpus == 2


def test_device_cuda_without_a_grant_says_resources_gpu(
    monkeypatch: pytest.MonkeyPatch, restore_torch_settings: None
) -> None:
    fake_gpu(monkeypatch)
    monkeypatch.setenv("CUDA_VISIBLE_DEVICES", "0,1")
    with pytest.raises(ConfigError, match="granted this trial no GPU.*resources.gpu"):
        resolve_runtime(TrainConfig(device="cuda"), grant=GpuGrant(share=0.0))


# ---- a trial granted no GPU stays off the node's GPUs --------------------------------------


def test_a_trial_granted_no_gpu_runs_on_the_cpu_of_a_gpu_node_and_hides_its_gpus(
    monkeypatch: pytest.MonkeyPatch, restore_torch_settings: None
) -> None:
    fake_gpu(monkeypatch)
    monkeypatch.delenv("CUDA_VISIBLE_DEVICES", raising=False)  # Ray 2.60 leaves it unset
    runtime = resolve_runtime(TrainConfig(), cpus=1, grant=GpuGrant(share=0.0))
    assert runtime.device == torch.device("cpu")
    assert runtime.amp_dtype is None and not runtime.channels_last
    import os

    assert os.environ["CUDA_VISIBLE_DEVICES"] == ""


# ---- bf16 only where the GPU computes it --------------------------------------------------


@pytest.mark.parametrize(("capability", "expected"), [
    ((7, 5), torch.float16),   # T4: bf16 would be emulated
    ((7, 0), torch.float16),
    ((8, 0), torch.bfloat16),  # A100
    ((8, 6), torch.bfloat16),
    ((9, 0), torch.bfloat16),  # H100
    (None, None),              # the CPU
])
def test_amp_auto_is_bf16_from_compute_capability_8_else_fp16(
    capability: tuple[int, int] | None, expected: torch.dtype | None
) -> None:
    assert amp_dtype_for("auto", capability) == expected
    assert amp_dtype_for("off", capability) is None
    assert amp_dtype_for("bf16", capability) == torch.bfloat16


def test_a_t4_trains_in_fp16_with_the_grad_scaler(
    monkeypatch: pytest.MonkeyPatch, restore_torch_settings: None
) -> None:
    fake_gpu(monkeypatch, capability=(7, 5), name="Tesla T4")
    runtime = resolve_runtime(TrainConfig(), grant=GpuGrant(share=1.0, ids=("0",)))
    assert runtime.amp_dtype == torch.float16 and runtime.needs_grad_scaler
    assert runtime.precision == "fp16"


# ---- CUDA speed settings, and a start-up line ---------------------------------------------


@pytest.mark.parametrize("tf32", [True, False])
def test_cuda_trials_turn_on_cudnn_benchmark_and_follow_the_tf32_switch(
    tf32: bool, monkeypatch: pytest.MonkeyPatch, restore_torch_settings: None
) -> None:
    fake_gpu(monkeypatch, capability=(9, 0), name="NVIDIA H100 80GB HBM3")
    torch.backends.cudnn.benchmark = False
    runtime = resolve_runtime(TrainConfig(tf32=tf32), cpus=4,
                              grant=GpuGrant(share=0.25, ids=("0",)))
    assert torch.backends.cudnn.benchmark is True
    assert torch.backends.cudnn.allow_tf32 is tf32
    assert torch.backends.cuda.matmul.allow_tf32 is tf32
    assert torch.get_float32_matmul_precision() == ("high" if tf32 else "highest")
    line = runtime.describe()
    assert "cuda:0 (NVIDIA H100 80GB HBM3, sm_90, 0.25 of the GPU (shared))" in line
    assert "bf16" in line and f"TF32 {'on' if tf32 else 'off'}" in line
    assert "4 CPU thread(s)" in line


def test_cpu_trials_leave_the_cuda_settings_alone(
    monkeypatch: pytest.MonkeyPatch, restore_torch_settings: None
) -> None:
    torch.backends.cudnn.benchmark = False
    runtime = resolve_runtime(TrainConfig(device="cpu"), cpus=1)
    assert torch.backends.cudnn.benchmark is False and not runtime.tf32
    assert runtime.describe() == "prunetune: trial runs on the CPU, 1 thread(s), fp32"


def test_fp32_latency_on_tf32_tensor_cores_is_recorded_as_tf32() -> None:
    from pruning.latency import LatencyResult
    from trainables.measure import latency_fields
    from trainables.runtime import Runtime

    timed = LatencyResult({1: 1.0}, {1: 3}, "cuda:0", None, {1: [1.0, 1.0, 1.0]})
    on = Runtime(torch.device("cuda:0"), None, True, gpu_share=1.0, tf32=True)
    off = Runtime(torch.device("cuda:0"), None, True, gpu_share=0.5, tf32=False)
    assert latency_fields(timed, on) == {"latency_device": "cuda:0", "latency_precision": "tf32",
                                         "latency_shared_device": False}
    assert latency_fields(timed, off)["latency_precision"] == "fp32"
    assert latency_fields(timed, off)["latency_shared_device"] is True


def test_a_cuda_runtime_waits_for_the_gpu_and_a_cpu_runtime_does_not(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """An epoch's wall time ends with `Runtime.synchronize`: without it, the steps the host has
    queued ahead of the GPU fall outside the interval and images/s comes out too high."""
    from trainables.runtime import Runtime

    waited: list[torch.device] = []
    monkeypatch.setattr(torch.cuda, "synchronize", lambda device=None: waited.append(device))
    Runtime(torch.device("cpu"), None, False).synchronize()
    assert waited == []
    Runtime(torch.device("cuda:0"), torch.bfloat16, True, gpu_share=0.25).synchronize()
    assert waited == [torch.device("cuda:0")]


# ---- an epoch's time covers the steps a GPU still had queued -------------------------------


def test_every_epoch_waits_for_the_device_inside_its_timed_window(tiny_trial, tmp_path,
                                                                  monkeypatch) -> None:
    """On a GPU the host runs ahead of the queued steps: each epoch ends with
    `Runtime.synchronize`, inside the time it reports. A synchronize that takes 0.2 s stands for
    the queue here; every epoch row's time must include it."""
    import time

    from trainables.reporting import DirectoryReporter
    from trainables.resolve import parse_trial_config
    from trainables.runtime import Runtime
    from trainables.trial import run_trial

    calls = []

    def slow_synchronize(self: Runtime) -> None:
        calls.append(self.device)
        time.sleep(0.2)

    monkeypatch.setattr(Runtime, "synchronize", slow_synchronize)
    reporter = DirectoryReporter(tmp_path)
    run_trial(parse_trial_config(tiny_trial(train={"epochs": 3})), reporter, cpus=1)
    epochs = [row for row in reporter.rows if row["row_type"] == "epoch"]
    assert len(epochs) == 3 and len(calls) >= 3
    assert all(row["epoch_time_s"] >= 0.2 for row in epochs), [r["epoch_time_s"] for r in epochs]
