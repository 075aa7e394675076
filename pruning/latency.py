"""Measured latency of one forward pass: warm-up, then the median of timed repeats.

The way serious benchmarks time inference: eval mode, ``torch.inference_mode``, a fixed
thread count, a few untimed warm-up passes, then repeats until a small time budget is spent
(never fewer than ``min_repeats``, never more than ``max_repeats``), reporting the median.
On CUDA each pass is timed with ``torch.cuda.Event`` pairs and a synchronisation, because the
host returns before the kernels finish. Batch size changes the answer (batch 1 is latency-
bound, batch 64 throughput-bound), so each configured batch size is measured.

The input takes the model's memory format (channels_last when its convolutions are, as a
trial's on CUDA are) and the pass runs in the precision asked for (``amp_dtype``: autocast, as
the trial trains), so the figure is that of the network as the trial runs it.
"""

from __future__ import annotations

import statistics
import time
from collections.abc import Callable, Iterator, Sequence
from contextlib import AbstractContextManager, contextmanager, nullcontext
from dataclasses import dataclass, field

import torch
from torch import nn

from pruning.cost import eval_mode, model_device

CUDA_MIN_WARMUP = 10
"""Fewest untimed passes per batch size on CUDA, whatever ``warmup`` says. The first passes
at a new input shape run cuDNN's autotuner (``cudnn.benchmark`` tries every algorithm), load
kernels lazily and grow the caching allocator, each many times a steady pass; the count covers
that one-off work, and warming up for as long as the timed budget as well (``timed_calls``)
lets an idle or shared GPU's clocks ramp up before the first timed pass."""

_PRECISIONS = {torch.float32: "fp32", torch.bfloat16: "bf16", torch.float16: "fp16",
               torch.float64: "fp64"}


def precision_name(dtype: torch.dtype) -> str:
    """``"fp32"``, ``"bf16"``, ``"fp16"``, ... for a floating dtype (else torch's own name)."""
    return _PRECISIONS.get(dtype, str(dtype).removeprefix("torch."))


def input_layout(model: nn.Module, memory_format: torch.memory_format | None
                 ) -> tuple[torch.device, torch.dtype, torch.memory_format]:
    """Where and how a timed input is made for `model`: its device, the dtype of its first
    parameter (fp32 without one), and `memory_format`, else the model's own."""
    parameter = next(model.parameters(), None)
    dtype = parameter.dtype if parameter is not None else torch.float32
    return (model_device(model), dtype,
            memory_format if memory_format is not None else model_memory_format(model))


def model_memory_format(model: nn.Module) -> torch.memory_format:
    """``torch.channels_last`` when the model's first 4-D convolution weight whose layout is
    unambiguous is channels_last-contiguous, else ``torch.contiguous_format``. (A 1x1 kernel or
    a single input channel is contiguous in both layouts and says nothing, so it is passed.)"""
    for module in model.modules():
        weight = getattr(module, "weight", None)
        if not isinstance(module, nn.Conv2d) or not isinstance(weight, torch.Tensor):
            continue
        if weight.dim() != 4:
            continue
        last = weight.is_contiguous(memory_format=torch.channels_last)
        if last != weight.is_contiguous():
            return torch.channels_last if last else torch.contiguous_format
    return torch.contiguous_format


@dataclass(frozen=True)
class LatencySettings:
    """How latency is measured; the defaults are the small budget a round can afford."""

    batch_sizes: tuple[int, ...] = (1, 64)
    warmup: int = 1
    """Untimed passes per batch size before the timed ones (allocator, caches, kernel choice)."""
    min_repeats: int = 3
    max_repeats: int = 30
    budget_s: float = 0.05
    """Wall-clock seconds of timed passes per batch size after which repeating stops (the
    ``min_repeats`` passes run even when they take longer): small, so that measuring stays a
    few percent of even a short round (see benchmarks/bench_latency.py)."""
    threads: int | None = None
    """torch intra-op threads while measuring (restored after); None leaves them as they are."""

    def __post_init__(self) -> None:
        if not self.batch_sizes or any(size < 1 for size in self.batch_sizes):
            raise ValueError(f"batch_sizes must be positive integers; got {self.batch_sizes}")
        if self.warmup < 0 or self.min_repeats < 1 or self.max_repeats < self.min_repeats:
            raise ValueError(
                "need warmup >= 0 and 1 <= min_repeats <= max_repeats; got "
                f"warmup={self.warmup}, min_repeats={self.min_repeats}, "
                f"max_repeats={self.max_repeats}"
            )
        if self.budget_s < 0:
            raise ValueError(f"budget_s must be >= 0; got {self.budget_s}")
        if self.threads is not None and self.threads < 1:
            raise ValueError(f"threads must be >= 1 or None; got {self.threads}")


@dataclass(frozen=True)
class LatencyResult:
    """Median milliseconds per forward pass and the timed repeats behind it, per batch size."""

    median_ms: dict[int, float]
    repeats: dict[int, int]
    device: str
    threads: int | None
    """torch's intra-op threads during the passes; None on CUDA, where they do not time it."""
    samples_ms: dict[int, list[float]] = field(repr=False)
    precision: str = "fp32"
    """What the passes computed in: the autocast dtype, else the weights' (`precision_name`)."""
    channels_last: bool = False
    """Whether the input was channels_last (the model's memory format)."""

    def row_fields(self) -> dict[str, float]:
        """``{"latency_ms_b1": ..., "latency_ms_b64": ...}``: flat fields for a result row."""
        return {f"latency_ms_b{size}": ms for size, ms in self.median_ms.items()}


def latency_ms(
    model: nn.Module,
    input_shape: Sequence[int],
    settings: LatencySettings | None = None,
    *,
    clock: Callable[[], float] = time.perf_counter,
    amp_dtype: torch.dtype | None = None,
    memory_format: torch.memory_format | None = None,
) -> LatencyResult:
    """Median latency of ``model`` on inputs of ``input_shape`` (one sample, no batch dim).

    Runs on the model's own device and dtype, under ``torch.autocast`` with ``amp_dtype`` when
    given (the trial's mixed precision), on an input in ``memory_format`` (default: the
    model's, `model_memory_format`). The model is left as it was: every module's train/eval
    flag and torch's thread count are restored, and nothing is written to weights or buffers
    (eval mode under ``torch.inference_mode``). ``clock`` measures the budget (and the passes,
    on the CPU); tests replace it.
    """
    settings = settings or LatencySettings()
    device, dtype, memory_format = input_layout(model, memory_format)
    generator = torch.Generator().manual_seed(0)
    medians, repeats, samples = {}, {}, {}
    channels_last = False
    with (torch_threads(settings.threads), eval_mode(model), torch.inference_mode(),
          autocast_in(device, amp_dtype)):
        threads = torch.get_num_threads() if device.type != "cuda" else None
        for size in settings.batch_sizes:
            inputs = torch.randn((size, *input_shape), generator=generator, dtype=dtype)
            inputs = inputs.to(device)
            if inputs.dim() == 4:  # channels_last exists for NCHW batches only
                inputs = inputs.contiguous(memory_format=memory_format)
                channels_last = memory_format == torch.channels_last
            times = _timed_passes(model, inputs, settings, clock)
            medians[size] = statistics.median(times)
            repeats[size] = len(times)
            samples[size] = times
    precision = precision_name(amp_dtype if amp_dtype is not None else dtype)
    return LatencyResult(medians, repeats, str(device), threads, samples, precision,
                         channels_last)


def _timed_passes(
    model: nn.Module,
    inputs: torch.Tensor,
    settings: LatencySettings,
    clock: Callable[[], float],
) -> list[float]:
    """Milliseconds of each timed pass of `model` on `inputs` (see `timed_calls`)."""
    cuda = inputs.device if inputs.device.type == "cuda" else None
    return timed_calls(lambda: model(inputs), settings, clock, cuda_device=cuda)


def timed_calls(
    call: Callable[[], object],
    settings: LatencySettings,
    clock: Callable[[], float] = time.perf_counter,
    *,
    cuda_device: torch.device | None = None,
) -> list[float]:
    """Milliseconds of each timed `call()` after the untimed warm-up ones (`warmup_calls`): at
    least min_repeats, then until the budget is spent. With `cuda_device`, each call is timed by
    CUDA events (the host returns before the kernels finish); any other runtime (onnxruntime,
    say) is timed by `clock` around the call."""
    warmup_calls(call, settings, clock, cuda_device=cuda_device)
    times: list[float] = []
    started = clock()
    while len(times) < settings.max_repeats:
        if cuda_device is not None:
            begin, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
            begin.record()
            call()
            end.record()
            end.synchronize()
            times.append(begin.elapsed_time(end))
        else:
            begin_s = clock()
            call()
            times.append(1000.0 * (clock() - begin_s))
        if len(times) >= settings.min_repeats and clock() - started >= settings.budget_s:
            break
    return times


def warmup_calls(
    call: Callable[[], object],
    settings: LatencySettings,
    clock: Callable[[], float] = time.perf_counter,
    *,
    cuda_device: torch.device | None = None,
) -> int:
    """Run the untimed warm-up calls; returns how many ran. Off CUDA: `settings.warmup`. On
    CUDA: at least ``max(settings.warmup, CUDA_MIN_WARMUP)``, then on until `settings.budget_s`
    of (synchronised) warm-up time is spent, at most ``max_repeats`` calls beyond the count:
    the warm-up is as thorough as the timing that follows (see `CUDA_MIN_WARMUP`)."""
    if cuda_device is None:
        for _ in range(settings.warmup):
            call()
        return settings.warmup
    least = max(settings.warmup, CUDA_MIN_WARMUP)
    done = 0
    started = clock()
    while done < least + settings.max_repeats:
        call()
        done += 1
        torch.cuda.synchronize(cuda_device)
        if done >= least and clock() - started >= settings.budget_s:
            break
    return done


def autocast_in(device: torch.device, amp_dtype: torch.dtype | None) -> AbstractContextManager:
    """`torch.autocast` on `device` with `amp_dtype`; nothing when it is None."""
    if amp_dtype is None:
        return nullcontext()
    return torch.autocast(device.type, dtype=amp_dtype)


@contextmanager
def torch_threads(count: int | None) -> Iterator[None]:
    """torch's intra-op threads set to `count` for the block (None: left as they are)."""
    saved = torch.get_num_threads()
    if count is not None:
        torch.set_num_threads(count)
    try:
        yield
    finally:
        torch.set_num_threads(saved)
