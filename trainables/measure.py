"""What a round's network costs besides its parameters: FLOPs and measured latency.

Every round row gets these fields (see docs/results-and-checkpoints.md, "What a trial records")
unless `measure.enabled` is false:

* `flops`: multiply-accumulates of one forward pass of the network as it is stored, at the
  trial's input size and batch 1 (`pruning.flops`: torch's FlopCounterMode, halved);
* `flops_effective`: the same counting only products with nonzero weights, what an ideal sparse
  kernel would do (`pruning.flops_effective`);
* `latency_ms_b<B>` for each of `measure.batch_sizes`: median milliseconds of a forward pass at
  batch B, on the trial's device, in float32, with torch's threads as the trial runs them (its
  CPUs), after `measure.warmup` untimed passes (`pruning.latency_ms`); `latency_device` and
  `latency_threads` say where;
* with `prune.pattern` (N:M): on CUDA and a pattern the 2:4 kernels accept, also
  `latency_nm_ms_b<B>` (the eligible layers on `torch.sparse.to_sparse_semi_structured`, float16)
  beside `latency_nm_dense_ms_b<B>` (the same float16 copy run dense); `latency_note` says how
  the N:M network was measured (on the CPU: as the dense network it is, having no kernel for it);
* `measure_time_s`: the wall time all of this took (it is part of `round_time_s`).
"""

from __future__ import annotations

import time
from typing import Any

from torch import nn

import pruning
from pruning.nm_latency import CPU_NOTE
from trainables.config import TrialConfig


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
    model: nn.Module, config: TrialConfig, input_shape: tuple[int, ...]
) -> dict[str, Any]:
    """The cost fields of a round row for `model` on its own device (see the module docstring);
    `input_shape` is one example's (channels, height, width). Empty when measuring is off."""
    if not config.measure.enabled:
        return {}
    started = time.perf_counter()
    one = (1, *input_shape)
    fields: dict[str, Any] = {
        "flops": pruning.flops(model, one),
        "flops_effective": pruning.flops_effective(model, one),
    }
    settings = latency_settings(config)
    latency = pruning.latency_ms(model, input_shape, settings)
    fields.update(latency.row_fields())
    fields.update(latency_device=latency.device, latency_threads=latency.threads)
    if config.prune.pattern is not None:
        fields.update(_semi_structured(model, input_shape, settings, config.prune.pattern))
    fields["measure_time_s"] = time.perf_counter() - started
    return fields


def _semi_structured(
    model: nn.Module,
    input_shape: tuple[int, ...],
    settings: pruning.LatencySettings,
    pattern: str,
) -> dict[str, Any]:
    """N:M latency where a kernel exists; otherwise a note that the model ran as dense."""
    if next(model.parameters()).device.type != "cuda":
        return {"latency_note": CPU_NOTE}
    parsed = pruning.parse_pattern(pattern)
    # The kernels take 2:4; an N:M mask fits it when each group of 4 holds at most 2 kept.
    if 4 % parsed.m or parsed.n * (4 // parsed.m) > 2:
        return {"latency_note": f"dense: {pattern} is not a 2:4 pattern, the only CUDA "
                                "semi-structured kernel"}
    try:
        measured = pruning.nm_latency_ms(model, input_shape, settings)
    except (ValueError, RuntimeError) as error:  # e.g. an excluded layer the kernel would take
        return {"latency_note": f"dense: 2:4 kernels not measured ({error})"}
    fields: dict[str, Any] = {"latency_note": measured.measured_as}
    for size, ms in measured.sparse.median_ms.items():
        fields[f"latency_nm_ms_b{size}"] = ms
        fields[f"latency_nm_dense_ms_b{size}"] = measured.dense.median_ms[size]
    return fields
