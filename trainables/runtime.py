"""Where and how a trial computes: device, CPU threads, mixed precision, memory format.

Nothing hard-codes `cuda`: a trial uses the GPU Ray assigned to it (Ray sets
CUDA_VISIBLE_DEVICES, so it is `cuda:0` inside the trial), else the CPU.
"""

from __future__ import annotations

import contextlib
from dataclasses import dataclass

import torch

from trainables.config import TrainConfig
from trainables.errors import ConfigError

_AMP_DTYPES = {"bf16": torch.bfloat16, "fp16": torch.float16}


@dataclass(frozen=True)
class Runtime:
    device: torch.device
    amp_dtype: torch.dtype | None
    channels_last: bool

    def autocast(self) -> contextlib.AbstractContextManager:
        """Autocast for the forward pass (a no-op when mixed precision is off)."""
        if self.amp_dtype is None:
            return contextlib.nullcontext()
        return torch.autocast(self.device.type, dtype=self.amp_dtype)

    @property
    def needs_grad_scaler(self) -> bool:
        return self.amp_dtype == torch.float16


def resolve_runtime(train: TrainConfig, cpus: float | None = None) -> Runtime:
    """The device and precision a trial runs with; sets torch's threads to the CPUs granted.

    Matching torch's intra-op threads to the trial's CPU grant is what keeps concurrent trials
    from oversubscribing the node's cores.
    """
    if cpus is not None:
        torch.set_num_threads(max(1, int(cpus)))
    has_cuda = torch.cuda.is_available()
    if train.device == "cuda" and not has_cuda:
        raise ConfigError(
            "train.device is 'cuda' but this trial has no GPU: give trials GPUs with "
            "resources.gpu in the sweep file (Ray grants 0 GPUs unless asked)"
        )
    use_cuda = has_cuda and train.device != "cpu"
    device = torch.device("cuda:0" if use_cuda else "cpu")
    if train.amp == "auto":
        amp_dtype = torch.bfloat16 if use_cuda else None
    else:
        amp_dtype = _AMP_DTYPES.get(train.amp)
    channels_last = use_cuda if train.channels_last is None else train.channels_last
    return Runtime(device=device, amp_dtype=amp_dtype, channels_last=channels_last)
