"""Latency as a ratio that stays true on a busy machine: a network timed against a dense reference
of the same architecture, in the same process, the passes alternating (B A, A B, B A, ...).

Absolute times taken by different trials at different moments cannot be divided by each other:
on a machine where anything else runs, one trial's millisecond is not another's. Within a pair
of adjacent passes the load is (nearly) the same for both, so the ratio of the pair, and the
median of the ratios over the pairs, is the speedup whatever the load was. On one CPU thread
(the default: a trial's `resources.cpu: 1`) the ratio is taken on the thread's CPU time, which
the time slices a busy machine gives other processes do not stretch at all: measured beside two
busy loops on two cores, the wall times of a pass varied 2x and more from pass to pass, its CPU
times a few percent. With several threads (their CPU time is not the pass's latency) and on
CUDA (events), the wall time and the pairing carry it alone.

Per batch size: the network's warm-up (the reference's too, the first time in a trial), then
pairs until their share of the timed budget is spent (`min_pairs` to `max_pairs`). The speedup
is the median of the pairs' ratios ``reference / measured``, with the distribution-free 95%
interval of a median (`paired_statistics`). A measurement is **disturbed** when most of its
pairs spread beyond `SPREAD_LIMIT` (a load that kept changing while they ran), or when the
reference's median drifted from its first measurement in the trial by more than `DRIFT_LIMIT`
(the machine slowed down, or sped up, since), or, on one CPU thread, when the thread had the core
for less of the passes' time than `BUSY_LIMIT` allows: it is measured once more, for longer
(`REPEAT_BUDGET`, `REPEAT_PAIRS`), the two pooled, and flagged with the reason if the repeat is
disturbed too.

Cost: a pair's ratio needs fewer repeats than a lone time does (the load cancels), so the pairs
take half the timed budget a network timed alone would (`budget_s`), at most half its
`max_repeats` and at least a third of its `min_repeats` (`min_pairs`): the reference's passes
take the other half. Only a disturbed measurement is repeated: a quiet machine pays nothing
more.
"""

from __future__ import annotations

import math
import statistics
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from functools import partial

import torch
from torch import nn

from pruning.cost import eval_mode
from pruning.latency import (
    LatencySettings,
    autocast_in,
    input_layout,
    precision_name,
    torch_threads,
    warmup_calls,
)

SPREAD_LIMIT = 0.25
"""Largest spread of the pairs' log ratios (scaled MAD: a standard deviation for normal data) of
an undisturbed measurement: 0.25 is a pair-to-pair spread of about 28%, far beyond the few
percent two adjacent passes of a quiet machine differ by, and what a load that keeps taking the
core away for parts of passes does to most of them."""
BUSY_LIMIT = 1.25
"""Largest ratio of a pass's wall time to its CPU time (on one CPU thread) on a machine that is
not busy: beyond it the thread lost the core for a fifth of the time, and every time it gets
it back its caches are cold, which stretches even the CPU time of short passes at random."""
REPEAT_BUDGET = 4
"""A disturbed measurement's repeat may time this many times the budget, ..."""
REPEAT_PAIRS = 8
"""... and takes at least this many pairs: enough for their median to hold under a lasting load
(the repeat is pooled with the first pairs)."""
DRIFT_LIMIT = 1.5
"""Largest factor (either way) between the reference's median now and at its first
measurement in the trial: beyond it, the machine is not the one the trial began on."""


@dataclass(frozen=True)
class PairedLatency:
    """One batch size's paired measurement."""

    median_ms: float
    """The measured network's median pass."""
    reference_median_ms: float
    """The dense reference's median pass, timed between the measured network's passes."""
    speedup: float
    """Median over the pairs of reference / measured: above 1, the network is faster."""
    interval: tuple[float, float]
    """95% interval of that median (the sign test's order statistics)."""
    pairs: int
    disturbed: str | None = None
    """Why the measurement stayed disturbed after its repeat; None when it was clean."""
    reference_basis_ms: float | None = None
    """The reference's median on the clock the ratio is taken on (`PairedResult.clock`): what
    later measurements in the trial judge its drift against."""


@dataclass(frozen=True)
class PairedResult:
    """Every batch size's `PairedLatency`, where and in what precision they were timed."""

    by_batch: dict[int, PairedLatency]
    device: str
    threads: int | None
    precision: str
    clock: str = "wall clock"
    """What the ratio is taken on: "thread CPU time", "wall clock" or "CUDA events"."""

    def row_fields(self) -> dict[str, float | str | None]:
        """Flat fields of a round row: for each batch size B, ``latency_ms_b<B>`` and
        ``latency_dense_ms_b<B>`` (the medians, as measured), ``speedup_b<B>`` with
        ``speedup_b<B>_low`` / ``_high`` (its interval, None from a single pair) and
        ``latency_disturbed_b<B>``; and
        ``speedup_clock``, what the ratios were taken on."""
        fields: dict[str, float | str | None] = {"speedup_clock": self.clock}
        for size, paired in self.by_batch.items():
            fields[f"latency_ms_b{size}"] = paired.median_ms
            fields[f"latency_dense_ms_b{size}"] = paired.reference_median_ms
            fields[f"speedup_b{size}"] = paired.speedup
            # One pair has no interval: null in the row (NaN is not JSON).
            low, high = (None, None) if math.isnan(paired.interval[0]) else paired.interval
            fields[f"speedup_b{size}_low"], fields[f"speedup_b{size}_high"] = low, high
            fields[f"latency_disturbed_b{size}"] = paired.disturbed
        return fields


def paired_statistics(measured_ms: Sequence[float], reference_ms: Sequence[float]
                      ) -> tuple[float, tuple[float, float], float]:
    """(speedup, its 95% interval (NaN, NaN from one pair), spread) of pairs (measured[i],
    reference[i]).

    The speedup is the median of the pairs' ratios reference / measured, its interval the
    distribution-free one of a median (the sign test's order statistics: the k-th smallest and
    k-th largest ratio, k the largest with P(Binomial(n, 1/2) < k) <= 2.5%; with too few pairs
    for 95%, the smallest and the largest), and the spread the scaled median absolute deviation
    of the log ratios (1.4826 MAD, the standard deviation of normal data). Medians, because a
    load that hits some passes and not others makes a few pairs wild: they must not move the
    answer, and they do not count towards a disturbance until they are the rule.
    """
    if len(measured_ms) != len(reference_ms) or not measured_ms:
        raise ValueError("need as many measured as reference passes, at least one")
    logs = sorted(math.log(ref / own) for own, ref in zip(measured_ms, reference_ms,
                                                           strict=True))
    middle = statistics.median(logs)
    spread = 1.4826 * statistics.median(abs(value - middle) for value in logs)
    if len(logs) == 1:
        return math.exp(middle), (math.nan, math.nan), spread
    k = _sign_test_rank(len(logs))
    return math.exp(middle), (math.exp(logs[k - 1]), math.exp(logs[-k])), spread


def _sign_test_rank(n: int) -> int:
    """The largest k >= 1 with P(Binomial(n, 1/2) <= k - 1) <= 0.025 (1 when none is)."""
    k, below = 0, 0.0
    while k < n:
        below += math.comb(n, k) / 2 ** n  # P(Binomial(n, 1/2) <= k)
        if below > 0.025:
            break
        k += 1
    return max(k, 1)


class PassTimer:
    """Times one pass: (wall milliseconds, milliseconds of the clock the ratio is taken on)."""

    name = "wall clock"

    def __init__(self, clock: Callable[[], float]) -> None:
        self.clock = clock

    def __call__(self, call: Callable[[], object]) -> tuple[float, float]:
        begin = self.clock()
        call()
        wall = 1000.0 * (self.clock() - begin)
        return wall, wall


class ThreadTimer(PassTimer):
    """On one CPU thread: the ratio on the thread's own CPU time, which time slices given to
    other processes do not inflate (a busy machine stretches the wall time only)."""

    name = "thread CPU time"

    def __init__(self, clock: Callable[[], float], cpu_clock: Callable[[], float]) -> None:
        super().__init__(clock)
        self.cpu_clock = cpu_clock

    def __call__(self, call: Callable[[], object]) -> tuple[float, float]:
        begin, begin_cpu = self.clock(), self.cpu_clock()
        call()
        return 1000.0 * (self.clock() - begin), 1000.0 * (self.cpu_clock() - begin_cpu)


class CudaTimer(PassTimer):
    """On CUDA: events around the pass (the host returns before the kernels finish)."""

    name = "CUDA events"

    def __call__(self, call: Callable[[], object]) -> tuple[float, float]:
        begin, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
        begin.record()
        call()
        end.record()
        end.synchronize()
        elapsed = begin.elapsed_time(end)
        return elapsed, elapsed


def pass_timer(device_type: str, threads: int | None, clock: Callable[[], float],
               cpu_clock: Callable[[], float]) -> PassTimer:
    """How passes are timed: CUDA events on a GPU, the thread's CPU time on one CPU thread,
    else the wall clock."""
    if device_type == "cuda":
        return CudaTimer(clock)
    if threads == 1:
        return ThreadTimer(clock, cpu_clock)
    return PassTimer(clock)


@dataclass
class _Passes:
    """Timed passes of both networks: wall milliseconds, and those the ratio is taken on."""

    measured: list[float]
    reference: list[float]
    measured_wall: list[float]
    reference_wall: list[float]

    def __add__(self, other: _Passes) -> _Passes:
        return _Passes(self.measured + other.measured, self.reference + other.reference,
                       self.measured_wall + other.measured_wall,
                       self.reference_wall + other.reference_wall)


def paired_latency_ms(
    model: nn.Module,
    reference: nn.Module,
    input_shape: Sequence[int],
    settings: LatencySettings | None = None,
    *,
    reference_baseline: dict[int, float] | None = None,
    clock: Callable[[], float] = time.perf_counter,
    cpu_clock: Callable[[], float] = time.thread_time,
    amp_dtype: torch.dtype | None = None,
    memory_format: torch.memory_format | None = None,
) -> PairedResult:
    """`model` timed against `reference` (the same architecture, dense) on inputs of
    `input_shape` (one sample, no batch dim), per batch size of `settings`, alternating their
    passes; see the module docstring. Both run on `model`'s device, in `amp_dtype` autocast,
    on the same input in `memory_format` (default: `model`'s); both are left as they were.

    The ratio is taken on CUDA events on a GPU, on the thread's CPU time (`cpu_clock`) on one
    CPU thread, else on the wall clock (`clock`); the medians reported are wall times (CUDA
    events on a GPU), as measured. `reference_baseline` (batch size -> ms on the ratio's clock)
    is the reference's first median in this trial (`PairedLatency.reference_basis_ms`): a
    drift from it beyond `DRIFT_LIMIT` counts as a disturbance.
    """
    settings = settings or LatencySettings()
    device, dtype, memory_format = input_layout(model, memory_format)
    generator = torch.Generator().manual_seed(0)
    baselines = reference_baseline or {}
    by_batch = {}
    with (torch_threads(settings.threads), eval_mode(model), eval_mode(reference),
          torch.inference_mode(), autocast_in(device, amp_dtype)):
        threads = torch.get_num_threads() if device.type != "cuda" else None
        timer = pass_timer(device.type, threads, clock, cpu_clock)
        for size in settings.batch_sizes:
            inputs = torch.randn((size, *input_shape), generator=generator, dtype=dtype)
            inputs = inputs.to(device)
            if inputs.dim() == 4:
                inputs = inputs.contiguous(memory_format=memory_format)
            cuda = inputs.device if inputs.device.type == "cuda" else None
            ours, theirs = partial(model, inputs), partial(reference, inputs)
            baseline = baselines.get(size)
            if baseline is None:  # the reference's first measurement in this trial
                warmup_calls(theirs, settings, clock, cuda_device=cuda)
            warmup_calls(ours, settings, clock, cuda_device=cuda)
            passes = _pairs(ours, theirs, clock, timer, settings.budget_s / 2,
                            min_pairs(settings), max_pairs(settings))
            reason = _disturbance(passes, baseline)
            if reason is not None:
                # Once more, and longer: a passing load is gone by then, and under a lasting one
                # the median of many pairs still holds (a few wild pairs cannot move it).
                more = _pairs(ours, theirs, clock, timer, REPEAT_BUDGET * settings.budget_s,
                              REPEAT_PAIRS, max(settings.max_repeats, REPEAT_PAIRS))
                passes = passes + more
                reason = _disturbance(more, baseline)
            speedup, interval, _ = paired_statistics(passes.measured, passes.reference)
            by_batch[size] = PairedLatency(
                statistics.median(passes.measured_wall), statistics.median(passes.reference_wall),
                speedup, interval, len(passes.measured), reason,
                statistics.median(passes.reference))
    precision = precision_name(amp_dtype if amp_dtype is not None else dtype)
    return PairedResult(by_batch, str(device), threads, precision, timer.name)


def min_pairs(settings: LatencySettings) -> int:
    """The fewest pairs a measurement takes: a third of the lone passes' `min_repeats` (at
    least 1). A batch size whose passes are short gets many more from the budget; one whose
    single pair spends it gets one, whose ratio has no interval."""
    return max(1, math.ceil(settings.min_repeats / 3))


def max_pairs(settings: LatencySettings) -> int:
    """The most pairs a measurement takes: half the lone passes' `max_repeats` (at least
    `min_pairs`)."""
    return max(min_pairs(settings), settings.max_repeats // 2)


def _pairs(ours: Callable[[], object], theirs: Callable[[], object],
           clock: Callable[[], float], timer: PassTimer, budget_s: float, least: int,
           most: int) -> _Passes:
    """Alternating timed passes, in the order B A, A B, B A, ... (B the reference): at least
    `least` pairs, then on until `budget_s` is spent, at most `most`."""
    passes = _Passes([], [], [], [])
    started = clock()

    def time_ours() -> None:
        wall, basis = timer(ours)
        passes.measured.append(basis)
        passes.measured_wall.append(wall)

    def time_theirs() -> None:
        wall, basis = timer(theirs)
        passes.reference.append(basis)
        passes.reference_wall.append(wall)

    while len(passes.measured) < most:
        # B A, A B, B A, ...: whatever favours the first (or second) pass of a pair, such as a
        # scheduler whose time slices line up with the pairs, favours each network alike.
        order = (time_theirs, time_ours) if len(passes.measured) % 2 == 0 else (
            time_ours, time_theirs)
        for time_one in order:
            time_one()
        if len(passes.measured) >= least and clock() - started >= budget_s:
            break
    return passes


def _disturbance(passes: _Passes, baseline: float | None) -> str | None:
    """Why a set of pairs is disturbed (see the module docstring), or None."""
    _, _, spread = paired_statistics(passes.measured, passes.reference)
    if spread > SPREAD_LIMIT:
        return (f"the pairs' ratios spread {spread:.2f} in log terms (limit {SPREAD_LIMIT}): "
                "the load changed while they were timed")
    now = statistics.median(passes.reference)
    if baseline is not None and baseline > 0 and not 1 / DRIFT_LIMIT <= now / baseline \
            <= DRIFT_LIMIT:
        return (f"the dense reference took {now / baseline:.2f}x its first time in this trial "
                f"({now:.3g} ms against {baseline:.3g} ms; limit {DRIFT_LIMIT}x either way)")
    if passes.measured_wall != passes.measured:  # timed on CPU time: how busy was the core?
        stretch = statistics.median(
            wall / basis for wall, basis in zip(passes.measured_wall + passes.reference_wall,
                                                passes.measured + passes.reference, strict=True)
            if basis > 0)
        if stretch > BUSY_LIMIT:
            return (f"the thread had the core for {100 / stretch:.0f}% of a pass's time (limit "
                    f"{100 / BUSY_LIMIT:.0f}%): the machine was busy")
    return None
