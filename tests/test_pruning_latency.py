"""`pruning.latency_ms` times the network as the trial runs it: on an input in the model's memory
format, in the trial's autocast precision, and (on CUDA) after a warm-up as thorough as the
timing. CUDA is faked where a pass would need it: the CUDA branch is the code under test, and
these tests run on CPU-only machines."""

from __future__ import annotations

from collections.abc import Callable

import pytest
import torch
from torch import nn

from pruning import LatencySettings, latency_ms, timed_calls

ONE_PASS = LatencySettings(batch_sizes=(2,), warmup=0, min_repeats=1, max_repeats=1, budget_s=0.0)


def conv_net(in_channels: int = 3) -> nn.Module:
    return nn.Sequential(nn.Conv2d(in_channels, 8, 3), nn.ReLU(), nn.Conv2d(8, 8, 3))


def record_first_conv(model: nn.Module) -> list[tuple[bool, torch.dtype]]:
    """(input is channels_last, output dtype) of every call of the model's first convolution."""
    seen: list[tuple[bool, torch.dtype]] = []
    first = next(module for module in model.modules() if isinstance(module, nn.Conv2d))

    def hook(module: nn.Module, inputs: tuple[torch.Tensor], output: torch.Tensor) -> None:
        seen.append((inputs[0].is_contiguous(memory_format=torch.channels_last), output.dtype))

    first.register_forward_hook(hook)
    return seen


def test_the_input_is_channels_last_when_the_model_is() -> None:
    model = conv_net().to(memory_format=torch.channels_last)
    seen = record_first_conv(model)
    result = latency_ms(model, (3, 8, 8), ONE_PASS)
    assert seen == [(True, torch.float32)]
    assert result.channels_last


def test_the_input_stays_contiguous_for_a_contiguous_model() -> None:
    model = conv_net()
    seen = record_first_conv(model)
    result = latency_ms(model, (3, 8, 8), ONE_PASS)
    assert seen == [(False, torch.float32)]
    assert not result.channels_last


def test_the_memory_format_is_read_from_the_first_unambiguous_convolution() -> None:
    from pruning.latency import model_memory_format

    # One input channel and a 1x1 kernel are contiguous in both layouts: they say nothing, and
    # the third convolution decides.
    model = nn.Sequential(nn.Conv2d(1, 4, 3), nn.Conv2d(4, 4, 1), nn.Conv2d(4, 8, 3))
    model.to(memory_format=torch.channels_last)
    for ambiguous in (model[0].weight, model[1].weight):
        assert ambiguous.is_contiguous()
        assert ambiguous.is_contiguous(memory_format=torch.channels_last)
    assert model_memory_format(model) == torch.channels_last
    assert model_memory_format(conv_net()) == torch.contiguous_format
    assert model_memory_format(nn.Linear(3, 2)) == torch.contiguous_format


def test_the_passes_run_in_the_amp_dtype_asked_for_and_say_so() -> None:
    model = conv_net()
    seen = record_first_conv(model)
    result = latency_ms(model, (3, 8, 8), ONE_PASS, amp_dtype=torch.bfloat16)
    assert seen == [(False, torch.bfloat16)]  # autocast ran the convolution in bf16
    assert result.precision == "bf16"
    assert latency_ms(conv_net(), (3, 8, 8), ONE_PASS).precision == "fp32"
    assert latency_ms(conv_net().double(), (3, 8, 8), ONE_PASS).precision == "fp64"


def test_on_the_cpu_the_threads_are_reported() -> None:
    assert latency_ms(conv_net(), (3, 8, 8), ONE_PASS).threads == torch.get_num_threads()


class FakeTime:
    """A clock each call of `work` advances by 1/64 s (exact in binary, so sums are too)."""

    def __init__(self) -> None:
        self.now = 0.0
        self.calls = 0

    def __call__(self) -> float:
        return self.now

    def work(self) -> None:
        self.calls += 1
        self.now += 1 / 64


class FakeEvent:
    """torch.cuda.Event as timed_calls uses it: every timed pass reads 2 ms."""

    def __init__(self, enable_timing: bool = False) -> None:
        assert enable_timing

    def record(self) -> None:
        pass

    def synchronize(self) -> None:
        pass

    def elapsed_time(self, end: FakeEvent) -> float:
        return 2.0


@pytest.fixture
def fake_cuda(monkeypatch: pytest.MonkeyPatch) -> Callable[[], int]:
    """torch.cuda's events and synchronisation faked; returns a counter of synchronisations."""
    syncs = []
    monkeypatch.setattr(torch.cuda, "Event", FakeEvent)
    monkeypatch.setattr(torch.cuda, "synchronize", lambda device=None: syncs.append(device))
    return lambda: len(syncs)


@pytest.mark.parametrize(
    ("warmup", "budget_s", "warmup_passes", "timed_passes"),
    [
        # The documented CUDA minimum (10) whatever `warmup` says; min_repeats 3 are timed.
        (1, 0.0, 10, 3),
        (0, 0.0, 10, 3),
        # More than the minimum asked for: as many as asked.
        (12, 0.0, 12, 3),
        # A budget of 16/64 s: warm-up goes on until it has spent as long (16 passes of 1/64 s),
        # then 16 timed passes spend the same budget.
        (1, 0.25, 16, 16),
    ],
)
def test_cuda_warm_up_is_counted_and_timed(fake_cuda, warmup, budget_s, warmup_passes,
                                           timed_passes) -> None:
    clock = FakeTime()
    settings = LatencySettings(warmup=warmup, min_repeats=3, max_repeats=30, budget_s=budget_s)
    times = timed_calls(clock.work, settings, clock, cuda_device=torch.device("cuda:0"))
    assert times == [2.0] * timed_passes  # the events' reading, not the host clock's
    assert clock.calls == warmup_passes + timed_passes
    assert fake_cuda() >= 1  # the timed passes start on an idle GPU


def test_cuda_warm_up_by_time_is_capped(fake_cuda) -> None:
    clock = FakeTime()
    # 100 s of budget: the warm-up stops at the minimum plus max_repeats passes (10 + 4), the
    # timing at max_repeats (4).
    settings = LatencySettings(warmup=1, min_repeats=1, max_repeats=4, budget_s=100.0)
    times = timed_calls(clock.work, settings, clock, cuda_device=torch.device("cuda:0"))
    assert len(times) == 4
    assert clock.calls == 10 + 4 + 4


def test_cpu_warm_up_is_the_setting(fake_cuda) -> None:
    clock = FakeTime()
    settings = LatencySettings(warmup=2, min_repeats=3, max_repeats=30, budget_s=0.0)
    times = timed_calls(clock.work, settings, clock)
    assert len(times) == 3 and clock.calls == 2 + 3
    assert fake_cuda() == 0
