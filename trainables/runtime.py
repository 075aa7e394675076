"""Where and how a trial computes: device, CPU threads, mixed precision, memory format.

Nothing hard-codes `cuda`. Under Ray the device follows the trial's grant (`GpuGrant`):

* granted a GPU: `cuda:0` (Ray sets CUDA_VISIBLE_DEVICES to the granted one), and a GPU torch
  cannot use (no driver, a driver too old for the wheel's CUDA, an architecture the wheel has no
  kernels for) fails the trial at once with `GpuUnavailableError` instead of training on the CPU
  100x slower and reporting success;
* granted none: the CPU, even on a GPU node. Ray 2.60 no longer hides the node's GPUs from such
  a trial (ray#54868), so CUDA_VISIBLE_DEVICES is emptied here before anything touches CUDA.

Outside Ray (a trial run in-process) `auto` means CUDA when torch has it.
"""

from __future__ import annotations

import contextlib
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from trainables.config import TrainConfig
from trainables.errors import ConfigError, GpuUnavailableError
from trainables.ranks import SOLO, Ranks

_AMP_DTYPES = {"bf16": torch.bfloat16, "fp16": torch.float16}
_AMP_NAMES = {torch.bfloat16: "bf16", torch.float16: "fp16", None: "fp32"}
#: bf16 has tensor-core support from Ampere (compute capability 8.0) on; below it is emulated.
BF16_CAPABILITY = (8, 0)
#: The oldest driver each CUDA major version runs on (NVIDIA's minor-version compatibility).
MIN_DRIVER = {11: 450, 12: 525, 13: 580}
_DRIVER_FILE = Path("/proc/driver/nvidia/version")


@dataclass(frozen=True)
class GpuGrant:
    """What Ray reserved for a trial: `share` = its `resources.gpu`, `ids` = ray.get_gpu_ids()."""

    share: float
    ids: tuple[str, ...] = ()


@dataclass(frozen=True)
class Runtime:
    device: torch.device
    amp_dtype: torch.dtype | None
    channels_last: bool
    cpus: int = 1
    """torch intra-op threads, the trial's CPU grant (compile and data workers follow it)."""
    gpu_share: float = 0.0
    """The GPU Ray granted the trial (`resources.gpu`; 0 = none, below 1 = a shared GPU)."""
    capability: tuple[int, int] | None = None
    """The GPU's compute capability (None on the CPU)."""
    tf32: bool = False
    """TF32 matmuls and convolutions are on (CUDA only)."""
    gpu_ids: tuple[str, ...] = ()
    """The GPUs Ray granted (`ray.get_gpu_ids()`; empty outside Ray or without a GPU)."""
    ranks: Ranks = SOLO
    """The trial's data-parallel workers and this process's rank among them."""

    @property
    def shared_device(self) -> bool:
        """True when other trials may run on this trial's GPU at the same time."""
        return self.device.type == "cuda" and 0 < self.gpu_share < 1

    @property
    def precision(self) -> str:
        """"fp32", "bf16" or "fp16": the precision of the forward passes."""
        return _AMP_NAMES[self.amp_dtype]

    def autocast(self) -> contextlib.AbstractContextManager:
        """Autocast for the forward pass (a no-op when mixed precision is off)."""
        if self.amp_dtype is None:
            return contextlib.nullcontext()
        return torch.autocast(self.device.type, dtype=self.amp_dtype)

    def synchronize(self) -> None:
        """Wait for the work queued on the GPU (nothing on the CPU): the host runs several
        steps ahead of a GPU, so a wall-clock interval that ends without this leaves out the
        steps still queued."""
        if self.device.type == "cuda":
            torch.cuda.synchronize(self.device)

    @property
    def needs_grad_scaler(self) -> bool:
        return self.amp_dtype == torch.float16

    def describe(self) -> str:
        """The start-up line of a trial: where it runs and in what precision (and, when the
        process runs at a niceness above 0, what that costs on a busy node)."""
        who = (f"trial (rank {self.ranks.rank} of {self.ranks.world} data-parallel workers)"
               if self.ranks.parallel else "trial")
        if self.device.type != "cuda":
            return (f"prunetune: {who} runs on the CPU, {self.cpus} thread(s), "
                    f"{self.precision}{niceness_note()}")
        major, minor = self.capability or (0, 0)
        share = f", {self.gpu_share:g} of the GPU (shared)" if self.shared_device else ""
        return (f"prunetune: {who} runs on {self.device} ({torch.cuda.get_device_name(self.device)}"
                f", sm_{major}{minor}{share}), {self.precision}, TF32 "
                f"{'on' if self.tf32 else 'off'}, cudnn.benchmark on, {self.cpus} CPU thread(s)"
                f"{niceness_note()}")


def niceness_note() -> str:
    """A warning for the start-up line when this process runs at a niceness above 0."""
    from trainables.ray_adapter import niceness

    level = niceness()
    if level <= 0:
        return ""
    return (f"; warning: the process runs at niceness {level} (Ray's default for workers): on "
            "a busy node it gets a small share of a core; start the node's Ray with "
            "RAY_worker_niceness=0 (docs/cluster.md)")


def resolve_runtime(train: TrainConfig, cpus: float | None = None,
                    grant: GpuGrant | None = None, ranks: Ranks = SOLO,
                    device_index: int = 0) -> Runtime:
    """The device and precision a trial runs with; sets torch's threads to the CPUs granted and,
    on CUDA, the speed settings (`apply_cuda_settings`).

    `grant` is Ray's reservation for the trial (None outside Ray). Matching torch's intra-op
    threads to the trial's CPU grant is what keeps concurrent trials from oversubscribing the
    node's cores. A data-parallel worker (`ranks`) computes on the node's GPU `device_index`
    (its local rank among the GPUs Ray made visible to the trial's workers on that node).
    """
    if cpus is not None:
        torch.set_num_threads(max(1, int(cpus)))
    use_cuda = _wants_cuda(train, grant)
    device = torch.device(f"cuda:{device_index}" if use_cuda else "cpu")
    capability = torch.cuda.get_device_capability(device) if use_cuda else None
    amp_dtype = amp_dtype_for(train.amp, capability)
    channels_last = use_cuda if train.channels_last is None else train.channels_last
    runtime = Runtime(
        device=device, amp_dtype=amp_dtype, channels_last=channels_last,
        cpus=torch.get_num_threads(), gpu_share=grant.share if grant is not None else 0.0,
        capability=capability, tf32=use_cuda and train.tf32,
        gpu_ids=grant.ids if grant is not None and use_cuda else (), ranks=ranks,
    )
    if use_cuda:
        apply_cuda_settings(train.tf32)
    return runtime


def _wants_cuda(train: TrainConfig, grant: GpuGrant | None) -> bool:
    """Whether the trial runs on CUDA; raises when what was asked cannot be had."""
    if grant is None:  # in-process, outside Ray: whatever this machine has
        if train.device == "cuda" and not torch.cuda.is_available():
            raise ConfigError(
                "train.device is 'cuda' but torch sees no usable GPU here: "
                + cuda_problem(GpuGrant(share=1.0))
            )
        return train.device != "cpu" and torch.cuda.is_available()
    if grant.share == 0:
        if train.device == "cuda":
            raise ConfigError(
                "train.device is 'cuda' but Ray granted this trial no GPU: give trials GPUs "
                "with resources.gpu in the sweep file (Ray grants 0 GPUs unless asked)"
            )
        hide_gpus()
        return False
    if train.device == "cpu":
        return False  # asked for explicitly: the reserved GPU stays idle
    problem = cuda_problem(grant)
    if problem is not None:
        raise GpuUnavailableError(problem)
    return True


def hide_gpus() -> None:
    """Make the node's GPUs invisible to a trial Ray granted none (torch, DataLoader workers and
    anything else the trial starts); too late only if CUDA was already initialised here."""
    if not torch.cuda.is_initialized():
        os.environ["CUDA_VISIBLE_DEVICES"] = ""


def amp_dtype_for(amp: str, capability: tuple[int, int] | None) -> torch.dtype | None:
    """The autocast dtype of `train.amp`: `auto` = off on the CPU, bf16 on a GPU that computes
    it natively (capability >= 8.0), else fp16 (with the grad scaler, `needs_grad_scaler`)."""
    if amp != "auto":
        return _AMP_DTYPES.get(amp)
    if capability is None:
        return None
    return torch.bfloat16 if capability >= BF16_CAPABILITY else torch.float16


def apply_cuda_settings(tf32: bool) -> None:
    """CUDA settings of a trial, each for a reason.

    * cudnn.benchmark: the training shapes are fixed (`drop_last=True`), so the autotuned
      convolution algorithm chosen on the first batch serves every later one.
    * TF32 (`train.tf32`): fp32 matmuls and convolutions on tensor cores (Ampere and later) at a
      10-bit mantissa; off gives IEEE fp32 everywhere, for runs that must match fp32 bits.
    """
    torch.backends.cudnn.benchmark = True
    torch.backends.cudnn.allow_tf32 = tf32
    torch.backends.cuda.matmul.allow_tf32 = tf32
    torch.set_float32_matmul_precision("high" if tf32 else "highest")


#: The round-row fields `device_fields` writes (a reused round drops the ones it was given).
DEVICE_FIELDS = ("gpu_ids", "cuda_visible_devices", "gpu_name", "gpu_memory_peak_mib")


def device_fields(runtime: Runtime) -> dict[str, Any]:
    """A CUDA round row's record of its GPU: which one Ray granted (`gpu_ids`, and
    `cuda_visible_devices` as the trial saw it), its name, and `gpu_memory_peak_mib`, the most
    memory torch held on it since the trial began. Nothing on the CPU."""
    if runtime.device.type != "cuda":
        return {}
    return {
        "gpu_ids": list(runtime.gpu_ids),
        "cuda_visible_devices": os.environ.get("CUDA_VISIBLE_DEVICES"),
        "gpu_name": torch.cuda.get_device_name(runtime.device),
        "gpu_memory_peak_mib": torch.cuda.max_memory_allocated(runtime.device) / 2 ** 20,
    }


def cuda_problem(grant: GpuGrant) -> str | None:
    """Why torch cannot compute on the GPU Ray granted, in one line; None when it can."""
    visible = os.environ.get("CUDA_VISIBLE_DEVICES")
    granted = (f"Ray granted GPU {', '.join(grant.ids) or '?'} (CUDA_VISIBLE_DEVICES="
               f"{visible!r})" if visible is not None else "CUDA_VISIBLE_DEVICES is unset")
    build = wheel_description()
    if not torch.cuda.is_available():
        return f"{granted} but torch cannot use CUDA: {driver_description()}; {build}"
    capability = torch.cuda.get_device_capability(0)
    if not wheel_supports(capability, torch.cuda.get_arch_list()):
        name = torch.cuda.get_device_name(0)
        return (f"{granted}: {name} is sm_{capability[0]}{capability[1]}, which this torch has "
                f"no kernels for; {build}")
    return None


def wheel_description() -> str:
    """The torch build's CUDA version, the driver it needs and its GPU architectures."""
    cuda = torch.version.cuda
    if cuda is None:
        return f"torch {torch.__version__} is a CPU-only build (install a CUDA wheel)"
    needs = MIN_DRIVER.get(int(cuda.split(".")[0]))
    driver = f", needs NVIDIA driver >= {needs}" if needs else ""
    arches = " ".join(torch.cuda.get_arch_list()) or "none listed"
    return f"torch {torch.__version__} is built for CUDA {cuda}{driver}, arch {arches}"


def driver_description(version_file: Path = _DRIVER_FILE) -> str:
    """The loaded NVIDIA kernel driver's version, from the file the driver itself writes."""
    try:
        text = version_file.read_text()
    except OSError:
        return f"no NVIDIA driver is loaded on this node ({version_file} is absent)"
    for word in text.split():
        head = word.split(".")[0]
        if head.isdigit() and "." in word:
            return f"NVIDIA driver {word}"
    return f"NVIDIA driver of unknown version ({version_file})"


def wheel_supports(capability: tuple[int, int], arch_list: list[str]) -> bool:
    """Whether a build with `arch_list` (torch.cuda.get_arch_list()) runs on a GPU of
    `capability`: a cubin `sm_XY` runs on the same major at minor >= Y; PTX `compute_XY` is
    compiled by the driver for any capability >= XY."""
    major, minor = capability
    for arch in arch_list:
        kind, _, digits = arch.partition("_")
        specific = digits.rstrip("af") != digits  # sm_90a: that exact architecture only
        digits = digits.rstrip("af")
        if not digits.isdigit():
            continue
        built = (int(digits[:-1]), int(digits[-1]))
        if kind == "sm" and (built == capability if specific else
                             built[0] == major and built[1] <= minor):
            return True
        if kind == "compute" and built <= capability:
            return True
    return False
