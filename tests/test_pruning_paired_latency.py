"""Latency paired with a dense reference: the statistics against hand computation (and scipy's
t quantile), the A/B alternation, and disturbances found, repeated and flagged, with a clock the
test controls (each network's pass takes the time a schedule gives it)."""

from __future__ import annotations

import json
import math
from collections.abc import Iterator

import pytest
import torch
from scipy import stats
from torch import nn

from pruning import LatencySettings, paired_latency_ms
from pruning.paired_latency import (
    DRIFT_LIMIT,
    REPEAT_PAIRS,
    SPREAD_LIMIT,
    paired_statistics,
    pass_timer,
)


def test_paired_statistics_by_hand() -> None:
    # Ratios reference / measured: 2, 1, 4 -> the median ratio 2; log ratios ln2, 0, ln4 about
    # their median ln 2: deviations ln2, ln2, 0 -> MAD ln 2. Three pairs are too few for a 95%
    # interval of a median (the sign test needs six): the smallest and largest ratio.
    speedup, interval, spread = paired_statistics([1.0, 2.0, 1.0], [2.0, 2.0, 4.0])
    assert speedup == pytest.approx(2.0)
    assert interval == pytest.approx((1.0, 4.0))
    assert spread == pytest.approx(1.4826 * math.log(2))
    # Identical pairs: the ratio exactly, and an interval of no width.
    assert paired_statistics([3.0] * 4, [6.0] * 4) == (pytest.approx(2.0), pytest.approx(
        (2.0, 2.0)), 0.0)
    with pytest.raises(ValueError, match="as many"):
        paired_statistics([1.0], [1.0, 2.0])


@pytest.mark.parametrize("n", [5, 6, 10, 20, 30])
def test_the_interval_is_the_sign_tests_order_statistics(n: int) -> None:
    """k-th smallest and k-th largest of n ratios, k the largest rank whose lower tail
    P(Binomial(n, 1/2) <= k - 1) is at most 2.5% (scipy's binomial, independently)."""
    ratios = [1.0 + i / 100 for i in range(n)]
    _, (low, high), _ = paired_statistics([1.0] * n, ratios)
    k = max([1] + [j for j in range(1, n + 1) if stats.binom.cdf(j - 1, n, 0.5) <= 0.025])
    assert (low, high) == pytest.approx((ratios[k - 1], ratios[-k]))
    assert k == {5: 1, 6: 1, 10: 2, 20: 6, 30: 10}[n]  # from the binomial table, by hand


def test_a_few_wild_pairs_do_not_move_the_speedup() -> None:
    measured = [2.0] * 9 + [20.0, 2.0, 2.0]  # one pass hit by a time slice
    reference = [3.0] * 12
    speedup, _, spread = paired_statistics(measured, reference)
    assert speedup == pytest.approx(1.5) and spread == 0.0


class FakeClock:
    """Seconds that advance only when a fake network runs."""

    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


class Timed(nn.Module):
    """A network whose every pass advances `clock` by the next of `durations_ms` and records
    its name in `calls`."""

    def __init__(self, name: str, clock: FakeClock, durations_ms: Iterator[float],
                 calls: list[str]) -> None:
        super().__init__()
        self.weight = nn.Parameter(torch.zeros(1))
        self.name, self.clock, self.durations, self.calls = name, clock, durations_ms, calls

    def forward(self, inputs: torch.Tensor) -> torch.Tensor:
        self.calls.append(self.name)
        self.clock.now += next(self.durations) / 1000.0
        return inputs


def constant(ms: float) -> Iterator[float]:
    while True:
        yield ms


def measure(own: Iterator[float], reference: Iterator[float], baseline: float | None = None,
            pairs: int = 3):
    """One paired measurement at batch 1 of `pairs` pairs (a lone measurement's min_repeats
    of 3 x `pairs`, the budget being 0), the passes timed by `FakeClock`."""
    clock, calls = FakeClock(), []
    model, dense = Timed("A", clock, own, calls), Timed("B", clock, reference, calls)
    settings = LatencySettings(batch_sizes=(1,), warmup=1, min_repeats=3 * pairs,
                               max_repeats=3 * pairs, budget_s=0.0)
    result = paired_latency_ms(model, dense, (3,), settings, clock=clock, cpu_clock=clock,
                               reference_baseline={1: baseline} if baseline else None)
    return result.by_batch[1], calls


def test_passes_alternate_reference_first_after_both_warm_up() -> None:
    paired, calls = measure(constant(2.0), constant(4.0), pairs=3)
    # The first measurement in a trial warms both up; then 3 pairs in the order
    # B A, A B, B A (whatever favours a pair's first pass favours each network alike).
    assert calls == ["B", "A"] + ["B", "A", "A", "B", "B", "A"]
    assert (paired.speedup, paired.median_ms, paired.reference_median_ms) == (
        pytest.approx(2.0), pytest.approx(2.0), pytest.approx(4.0))
    assert paired.pairs == 3 and paired.disturbed is None
    # Later in the trial (a baseline is known) the reference is warm already.
    _, later = measure(constant(2.0), constant(4.0), baseline=4.0, pairs=3)
    assert later == ["A"] + ["B", "A", "A", "B", "B", "A"]


def test_a_load_that_slows_both_networks_alike_leaves_the_speedup_alone() -> None:
    # Every pair runs at its own speed (the machine's load): 1x, 3x, 2x, 5x ... for both.
    factors = [1.0, 3.0, 2.0, 5.0, 1.5, 4.0]
    own = iter([0.0] + [2.0 * f for f in factors])  # warm-up pass first
    reference = iter([0.0] + [3.0 * f for f in factors])
    paired, _ = measure(own, reference, pairs=6)
    assert paired.speedup == pytest.approx(1.5) and paired.disturbed is None
    assert paired.interval == pytest.approx((1.5, 1.5)) and paired.pairs == 6


def test_a_load_that_keeps_hitting_most_pairs_is_a_disturbance() -> None:
    # Every other pass of the measured network takes ten times as long, in the repeat too.
    paired, _ = measure(spiky(2.0, set(range(1, 40, 2))), constant(2.0), pairs=4)
    assert paired.disturbed is not None and "spread" in paired.disturbed
    # Repeated for longer (REPEAT_PAIRS more pairs), pooled, still disturbed: flagged.
    assert str(SPREAD_LIMIT) in paired.disturbed and paired.pairs == 4 + REPEAT_PAIRS


def spiky(ms: float, spike_at: set[int]) -> Iterator[float]:
    """`ms` per pass, ten times that at the passes numbered in `spike_at` (0 = warm-up)."""
    index = 0
    while True:
        yield ms * 10 if index in spike_at else ms
        index += 1


def test_a_disturbed_measurement_is_repeated_and_the_clean_repeat_counts() -> None:
    # Passes 1 and 3 of the measured network (half of the first 4 pairs) are hit; the repeat
    # (passes 5 to 12) is clean. Pooled, the median holds: the wild pairs are a minority.
    paired, calls = measure(spiky(2.0, {1, 3}), constant(2.0), pairs=4)
    assert paired.disturbed is None and paired.pairs == 4 + REPEAT_PAIRS
    assert paired.speedup == pytest.approx(1.0)
    assert calls.count("A") == 1 + 4 + REPEAT_PAIRS  # warm-up, the disturbed pairs, the repeat


def test_a_quiet_measurement_is_not_repeated() -> None:
    _, calls = measure(constant(2.0), constant(2.0), pairs=4)
    assert calls.count("A") == 1 + 4


def test_a_reference_that_drifted_from_its_first_time_is_flagged() -> None:
    drift = 2.0 * DRIFT_LIMIT * 1.1  # the reference now takes more than DRIFT_LIMIT x 2 ms
    paired, _ = measure(constant(drift), constant(drift), baseline=2.0, pairs=3)
    assert paired.speedup == pytest.approx(1.0)
    assert paired.disturbed is not None and "first time in this trial" in paired.disturbed
    clean, _ = measure(constant(2.5), constant(2.5), baseline=2.0, pairs=3)  # 1.25x: within
    assert clean.disturbed is None


def test_the_networks_are_left_as_they_were() -> None:
    model, reference = nn.Linear(3, 2).train(), nn.Linear(3, 2).train()
    before = {k: v.clone() for k, v in model.state_dict().items()}
    result = paired_latency_ms(model, reference, (3,), LatencySettings(
        batch_sizes=(1, 2), min_repeats=6, budget_s=0.0))  # 2 pairs
    assert model.training and reference.training
    assert all(torch.equal(before[k], v) for k, v in model.state_dict().items())
    fields = result.row_fields()
    assert set(fields) == {f"{name}_b{size}" for size in (1, 2) for name in (
        "latency_ms", "latency_dense_ms", "speedup", "latency_disturbed")} | {
        f"speedup_b{size}_{end}" for size in (1, 2) for end in ("low", "high")} | {
        "speedup_clock"}
    assert fields["speedup_clock"] == "thread CPU time"  # the tests run on one thread
    assert fields["speedup_b1_low"] <= fields["speedup_b1"] <= fields["speedup_b1_high"]


def test_a_single_pair_leaves_the_interval_null_in_strict_json() -> None:
    clock, calls = FakeClock(), []
    model, dense = Timed("A", clock, constant(2.0), calls), Timed("B", clock, constant(4.0), calls)
    settings = LatencySettings(batch_sizes=(1,), warmup=1, min_repeats=3, max_repeats=3,
                               budget_s=0.0)  # one pair
    result = paired_latency_ms(model, dense, (3,), settings, clock=clock, cpu_clock=clock)
    assert result.by_batch[1].pairs == 1
    fields = result.row_fields()
    assert fields["speedup_b1_low"] is None and fields["speedup_b1_high"] is None
    assert fields["speedup_b1"] == pytest.approx(2.0)
    json.dumps(fields, allow_nan=False)  # a row file stays JSON other tools can read


class Stolen(nn.Module):
    """A network whose passes compute for `cpu_ms` and wait `stolen` times as long again while
    the machine runs something else: the wall clock advances by both, the thread's CPU clock by
    the computing only."""

    def __init__(self, wall: FakeClock, cpu: FakeClock, cpu_ms: float, stolen: float) -> None:
        super().__init__()
        self.weight = nn.Parameter(torch.zeros(1))
        self.wall, self.cpu, self.cpu_ms, self.stolen = wall, cpu, cpu_ms, stolen

    def forward(self, inputs: torch.Tensor) -> torch.Tensor:
        self.cpu.now += self.cpu_ms / 1000
        self.wall.now += self.cpu_ms * (1 + self.stolen) / 1000
        return inputs


def paired_on_stolen_time(model_stolen: float, reference_stolen: float):
    wall, cpu = FakeClock(), FakeClock()
    model = Stolen(wall, cpu, 1.0, model_stolen)  # twice as fast as the reference
    dense = Stolen(wall, cpu, 2.0, reference_stolen)
    settings = LatencySettings(batch_sizes=(1,), warmup=1, min_repeats=18, max_repeats=18,
                               budget_s=0.0)  # 6 pairs
    torch.set_num_threads(1)  # as tests/conftest.py has it: the thread's CPU time is used
    return paired_latency_ms(model, dense, (3,), settings, clock=wall, cpu_clock=cpu)


def test_on_one_thread_the_ratio_is_taken_on_cpu_time_and_the_times_reported_are_wall() -> None:
    # The measured network's every pass loses the core for a fifth of its time.
    paired = paired_on_stolen_time(0.2, 0.0)
    result = paired.by_batch[1]
    assert paired.clock == "thread CPU time"
    assert result.speedup == pytest.approx(2.0) and result.disturbed is None
    assert result.median_ms == pytest.approx(1.2)  # the wall time, as measured
    assert result.reference_median_ms == pytest.approx(2.0)
    assert result.reference_basis_ms == pytest.approx(2.0)


def test_a_core_that_keeps_being_taken_away_is_a_busy_machine() -> None:
    # Every pass of both waits as long as it computes: the thread has the core half the time.
    result = paired_on_stolen_time(1.0, 1.0).by_batch[1]
    assert result.speedup == pytest.approx(2.0)  # the CPU times still say it
    assert result.disturbed is not None and "the machine was busy" in result.disturbed
    assert "50%" in result.disturbed and result.pairs == 6 + REPEAT_PAIRS


class FakeEvent:
    """torch.cuda.Event as a timer uses it: every pass reads 3 ms."""

    def __init__(self, enable_timing: bool = False) -> None:
        assert enable_timing

    def record(self) -> None:
        pass

    def synchronize(self) -> None:
        pass

    def elapsed_time(self, end: FakeEvent) -> float:
        return 3.0


def test_passes_are_timed_by_events_on_cuda_by_cpu_time_on_one_thread_else_by_the_wall(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setattr(torch.cuda, "Event", FakeEvent)
    wall, cpu = FakeClock(), FakeClock()

    def work() -> None:  # 5 ms of wall time, 2 of them computing
        wall.now += 0.005
        cpu.now += 0.002

    cuda = pass_timer("cuda", None, wall, cpu)
    assert cuda.name == "CUDA events" and cuda(work) == (3.0, 3.0)
    one_thread = pass_timer("cpu", 1, wall, cpu)
    assert one_thread.name == "thread CPU time"
    assert one_thread(work) == (pytest.approx(5.0), pytest.approx(2.0))
    several = pass_timer("cpu", 2, wall, cpu)
    assert several.name == "wall clock" and several(work) == (pytest.approx(5.0),) * 2
