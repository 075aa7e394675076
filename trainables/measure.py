"""What a round's network costs besides its parameters: FLOPs and measured latency.

Every round row gets these fields (see docs/results-and-checkpoints.md, "What a trial records")
unless `measure.enabled` is false:

* `flops`: multiply-accumulates of one forward pass of the network as it is stored, at the
  trial's input size and batch 1 (`pruning.flops`: torch's FlopCounterMode, halved);
* `flops_effective`: the same counting only products with nonzero weights, what an ideal sparse
  kernel would do (`pruning.flops_effective`);
* `latency_ms_b<B>` for each of `measure.batch_sizes`: median milliseconds of a forward pass at
  batch B, as the trial runs the network: on its device, in its precision (autocast with its
  `train.amp` dtype, else float32; `latency_precision`: "fp32", "tf32" (fp32 on TF32 tensor
  cores), "bf16", "fp16"), on an input in its memory format (channels_last where the model
  is), after `measure.warmup` untimed passes;
  on CUDA at least `pruning.latency.CUDA_MIN_WARMUP` of them, for as long as the timed budget,
  because cuDNN autotuning and lazy initialisation happen there (`pruning.latency_ms`).
  `latency_device` says where; `latency_threads` (CPU only: they do not time a GPU) the torch
  threads, the trial's CPUs; `latency_shared_device` whether other trials shared the GPU
  (`resources.gpu` below 1), which slows the figure by however busy they kept it;
* paired with the dense reference (`pruning.paired_latency`: the unpruned architecture, built
  once per trial, its passes alternating with the round's network's in the same process):
  `latency_dense_ms_b<B>` its median, `speedup_b<B>` the round's speedup over it with its 95%
  interval `speedup_b<B>_low` / `_high`, and `latency_disturbed_b<B>` why the measurement was
  disturbed after its repeat (None: clean). Absolute milliseconds depend on what else the
  machine does; the ratio of adjacent passes does not, so only the ratio is compared across
  trials;
* with `prune.pattern` (N:M): on CUDA and a pattern the 2:4 kernels accept, also
  `latency_nm_ms_b<B>` (the 2:4 layers on `torch.sparse.to_sparse_semi_structured`, the others
  dense) beside `latency_nm_dense_ms_b<B>` (the same copy run dense), both in
  `latency_nm_precision` (the trial's half-precision amp dtype, else float16: the default
  cuSPARSELt backend has no float32 kernel); `latency_note` says how the N:M network was
  measured (how many layers ran sparse; on the CPU: as the dense network it is, having no
  kernel for it);
* `measure_time_s`: the wall time all of this took (it is part of `round_time_s`).
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Any

import torch
from torch import nn

import pruning
from pruning.latency import precision_name
from pruning.nm_latency import CPU_NOTE
from trainables.config import TrialConfig
from trainables.models import build_model
from trainables.runtime import Runtime


@dataclass
class LatencyReference:
    """A trial's dense reference for latency: the unpruned architecture with fresh weights
    (their values do not change a dense kernel's time), built on first use and kept for the
    trial, and the reference's first medians (what later rounds' drift is judged against)."""

    network: nn.Module | None = None
    baseline: dict[int, float] = field(default_factory=dict)

    def for_trial(self, config: TrialConfig, num_classes: int, in_channels: int,
                  runtime: Runtime) -> nn.Module:
        if self.network is None:
            # Built on the side: the global RNG the trial trains with is left as it was, and no
            # start weights are loaded (a file or a download just to be timed).
            plain = config.model.model_copy(update={"pretrained": False, "weights_path": None})
            with torch.random.fork_rng(devices=[]):
                network = build_model(plain, num_classes, in_channels)
            network = network.to(runtime.device).eval()
            if runtime.channels_last:
                network = network.to(memory_format=torch.channels_last)
            self.network = network
        return self.network

    def remember(self, result: pruning.PairedResult) -> None:
        """Keep the reference's first undisturbed median of each batch size as the baseline."""
        for size, paired in result.by_batch.items():
            if paired.disturbed is None and paired.reference_basis_ms is not None:
                self.baseline.setdefault(size, paired.reference_basis_ms)


def latency_settings(config: TrialConfig) -> pruning.LatencySettings:
    """The `measure` section as `pruning.LatencySettings` (threads: as the trial runs)."""
    measure = config.measure
    return pruning.LatencySettings(
        batch_sizes=tuple(measure.batch_sizes),
        warmup=measure.warmup,
        min_repeats=measure.min_repeats,
        max_repeats=measure.max_repeats,
        budget_s=measure.budget_s,
    )


def round_cost(
    model: nn.Module, config: TrialConfig, input_shape: tuple[int, ...], *, runtime: Runtime,
    reference: LatencyReference | None = None,
) -> dict[str, Any]:
    """The cost fields of a round row for `model` on its own device, timed as `runtime` (the
    trial's) trains it (see the module docstring); `input_shape` is one example's (channels,
    height, width). With `reference` (the trial's, its network built), latency is paired with
    its dense network. Empty when measuring is off."""
    if not config.measure.enabled:
        return {}
    started = time.perf_counter()
    one = (1, *input_shape)
    fields: dict[str, Any] = {
        "flops": pruning.flops(model, one),
        "flops_effective": pruning.flops_effective(model, one),
    }
    settings = latency_settings(config)
    memory_format = torch.channels_last if runtime.channels_last else torch.contiguous_format
    if reference is None:
        latency = pruning.latency_ms(model, input_shape, settings, amp_dtype=runtime.amp_dtype,
                                     memory_format=memory_format)
        fields.update(latency.row_fields())
    else:
        if reference.network is None:
            raise ValueError("the latency reference has no network: call its for_trial first")
        latency = pruning.paired_latency_ms(
            model, reference.network, input_shape, settings,
            reference_baseline=reference.baseline, amp_dtype=runtime.amp_dtype,
            memory_format=memory_format)
        reference.remember(latency)
        fields.update(latency.row_fields())
    fields.update(latency_fields(latency, runtime))
    if config.prune.pattern is not None:
        fields.update(_semi_structured(model, input_shape, settings, config.prune.pattern,
                                       latency.device, runtime))
    fields["measure_time_s"] = time.perf_counter() - started
    return fields


def latency_fields(latency: pruning.LatencyResult | pruning.PairedResult,
                   runtime: Runtime) -> dict[str, Any]:
    """Where and how `latency` was measured, as row fields (see the module docstring)."""
    fields: dict[str, Any] = {
        "latency_device": latency.device,
        # TF32 tensor cores compute "fp32" passes at a 10-bit mantissa (train.tf32).
        "latency_precision": "tf32" if latency.precision == "fp32" and runtime.tf32
        else latency.precision,
        "latency_shared_device": runtime.shared_device,
    }
    if torch.device(latency.device).type == "cpu":
        fields["latency_threads"] = latency.threads
    return fields


def nm_dtype(runtime: Runtime) -> torch.dtype:
    """The dtype of the 2:4 copies: the trial's half-precision amp dtype, else float16."""
    if runtime.amp_dtype in (torch.float16, torch.bfloat16):
        return runtime.amp_dtype
    return torch.float16


def _semi_structured(
    model: nn.Module,
    input_shape: tuple[int, ...],
    settings: pruning.LatencySettings,
    pattern: str,
    device: str,
    runtime: Runtime,
) -> dict[str, Any]:
    """N:M latency where a kernel exists; otherwise a note that the model ran as dense."""
    if torch.device(device).type != "cuda":
        return {"latency_note": CPU_NOTE}
    parsed = pruning.parse_pattern(pattern)
    # The kernels take 2:4; an N:M mask fits it when each group of 4 holds at most 2 kept.
    if 4 % parsed.m or parsed.n * (4 // parsed.m) > 2:
        return {"latency_note": f"dense: {pattern} is not a 2:4 pattern, the only CUDA "
                                "semi-structured kernel"}
    dtype = nm_dtype(runtime)
    try:
        measured = pruning.nm_latency_ms(model, input_shape, settings, dtype)
    except (ValueError, RuntimeError) as error:  # e.g. a GPU without the kernels
        return {"latency_note": f"dense: 2:4 kernels not measured ({error})"}
    if measured.sparse is None:  # the model was not on CUDA after all
        return {"latency_note": measured.measured_as}
    fields: dict[str, Any] = {"latency_note": measured.measured_as,
                              "latency_nm_precision": precision_name(dtype)}
    for size, ms in measured.sparse.median_ms.items():
        fields[f"latency_nm_ms_b{size}"] = ms
        fields[f"latency_nm_dense_ms_b{size}"] = measured.dense.median_ms[size]
    return fields
