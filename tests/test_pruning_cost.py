"""Cost of a network: MACs against hand counts, effective MACs against brute force, and the
structure of the latency measurement (what is timed, how often, what is restored). Nothing is
timed here: a fake clock stands in for the real one."""

from __future__ import annotations

import itertools
import math

import pytest
import torch
import torch.nn.functional as F
from torch import nn
from torchvision.models import resnet18

from pruning import LatencySettings, flops, flops_effective, latency_ms, output_positions


class SmallResidualNet(nn.Module):
    """conv (no bias) -> BN -> ReLU -> residual conv (bias) -> strided conv -> pool -> linear."""

    def __init__(self) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(3, 8, 3, padding=1, bias=False)
        self.bn1 = nn.BatchNorm2d(8)
        self.conv2 = nn.Conv2d(8, 8, 3, padding=1, bias=True)
        self.down = nn.Conv2d(8, 16, 3, stride=2, padding=1, bias=True)
        self.pool = nn.AdaptiveAvgPool2d(1)
        self.fc = nn.Linear(16, 5)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = F.relu(self.bn1(self.conv1(x)))
        x = x + self.conv2(x)  # residual addition: elementwise, not counted
        x = self.down(x)
        return self.fc(torch.flatten(self.pool(x), 1))


def small_net(seed: int = 0) -> SmallResidualNet:
    torch.manual_seed(seed)
    return SmallResidualNet()


# Hand counts for a 10x10 input: MACs of a conv = out * in * kh * kw * H_out * W_out.
CONV1_MACS = 8 * 3 * 3 * 3 * 10 * 10  # padding 1 keeps 10x10
CONV2_MACS = 8 * 8 * 3 * 3 * 10 * 10
DOWN_MACS = 16 * 8 * 3 * 3 * 5 * 5  # stride 2: floor((10 + 2 - 3) / 2) + 1 = 5
FC_MACS = 16 * 5


@pytest.mark.parametrize("batch", [1, 3])
def test_flops_is_the_hand_count_of_conv_and_linear_macs(batch: int) -> None:
    # Biases, BatchNorm, ReLU, pooling and the residual addition are not multiply-accumulates.
    expected = batch * (CONV1_MACS + CONV2_MACS + DOWN_MACS + FC_MACS)
    assert flops(small_net(), (batch, 3, 10, 10)) == expected


def test_flops_of_torchvision_resnet18_is_the_hand_count() -> None:
    def conv(out: int, inp: int, k: int, size: int) -> int:
        return out * inp * k * k * size * size

    expected = (
        conv(64, 3, 7, 112)  # stem at 224 px, stride 2
        + 4 * conv(64, 64, 3, 56)  # layer1 after the max-pool
        + conv(128, 64, 3, 28) + 3 * conv(128, 128, 3, 28) + conv(128, 64, 1, 28)
        + conv(256, 128, 3, 14) + 3 * conv(256, 256, 3, 14) + conv(256, 128, 1, 14)
        + conv(512, 256, 3, 7) + 3 * conv(512, 512, 3, 7) + conv(512, 256, 1, 7)
        + 512 * 1000  # fc
    )  # fmt: skip
    assert flops(resnet18(), (1, 3, 224, 224)) == expected


def zero_some_weights(model: nn.Module, seed: int) -> None:
    generator = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for module in model.modules():
            if isinstance(module, (nn.Conv2d, nn.Linear)):
                keep = torch.rand(module.weight.shape, generator=generator) < 0.4
                module.weight.mul_(keep)


def brute_force_effective_macs(model: SmallResidualNet, batch: int, size: int) -> int:
    """Per output position, count each nonzero weight once (padding positions included)."""
    total = 0
    spatial = size
    for conv in (model.conv1, model.conv2, model.down):
        (k, _), (stride, _), (pad, _) = conv.kernel_size, conv.stride, conv.padding
        out_size = (spatial + 2 * pad - k) // stride + 1
        for _b, _y, _x in itertools.product(range(batch), range(out_size), range(out_size)):
            for o in range(conv.out_channels):
                total += sum(1 for w in conv.weight[o].flatten().tolist() if w != 0)
        spatial = out_size
    for _b in range(batch):
        total += sum(1 for w in model.fc.weight.flatten().tolist() if w != 0)
    return total


def test_flops_effective_counts_only_products_by_nonzero_weights() -> None:
    model = small_net()
    zero_some_weights(model, seed=1)
    assert flops_effective(model, (2, 3, 10, 10)) == brute_force_effective_macs(model, 2, 10)
    # The dense count ignores the zeros.
    assert flops(model, (2, 3, 10, 10)) == 2 * (CONV1_MACS + CONV2_MACS + DOWN_MACS + FC_MACS)


def test_flops_effective_equals_flops_without_zero_weights_and_drops_a_zeroed_layer() -> None:
    model = small_net()
    assert flops_effective(model, (1, 3, 10, 10)) == flops(model, (1, 3, 10, 10))
    with torch.no_grad():
        model.conv2.weight.zero_()
    assert flops_effective(model, (1, 3, 10, 10)) == CONV1_MACS + DOWN_MACS + FC_MACS


def test_output_positions_are_batch_times_output_size() -> None:
    assert output_positions(small_net(), (2, 3, 10, 10)) == {
        "conv1": 2 * 10 * 10,
        "conv2": 2 * 10 * 10,
        "down": 2 * 5 * 5,
        "fc": 2,
    }


def test_counting_leaves_modes_weights_and_buffers_as_they_were() -> None:
    model = small_net().train()
    before = {key: value.clone() for key, value in model.state_dict().items()}
    flops(model, (2, 3, 10, 10))
    flops_effective(model, (2, 3, 10, 10))
    assert model.training and model.bn1.training
    after = model.state_dict()
    assert all(torch.equal(before[key], after[key]) for key in before)


class FakeClock:
    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


class ClockedModel(nn.Module):
    """Each forward pass 'takes' `seconds` on the fake clock and records what it saw."""

    def __init__(self, clock: FakeClock, seconds: float) -> None:
        super().__init__()
        self.clock, self.seconds = clock, seconds
        self.bn = nn.BatchNorm2d(2)
        self.calls: list[tuple[tuple[int, ...], bool, bool, int]] = []

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        self.clock.now += self.seconds
        self.calls.append(
            (
                tuple(x.shape),
                self.training or self.bn.training,
                torch.is_inference_mode_enabled(),
                torch.get_num_threads(),
            )
        )
        return self.bn(x)


@pytest.mark.parametrize(
    ("budget_s", "expected_repeats"),
    [
        (0.0, 3),  # never fewer than min_repeats
        (0.9, 4),  # ceil(0.9 / 0.25) passes spend the budget
        (1.0, 4),  # exactly spent after 4 passes
        (100.0, 7),  # never more than max_repeats
    ],
)
def test_repeats_stop_when_the_budget_is_spent(budget_s: float, expected_repeats: int) -> None:
    clock = FakeClock()
    model = ClockedModel(clock, seconds=0.25)
    settings = LatencySettings(
        batch_sizes=(1, 4), warmup=2, min_repeats=3, max_repeats=7, budget_s=budget_s
    )
    result = latency_ms(model, (2, 3, 3), settings, clock=clock)
    assert result.repeats == {1: expected_repeats, 4: expected_repeats}
    assert result.median_ms == {1: 250.0, 4: 250.0}
    assert result.samples_ms[1] == [250.0] * expected_repeats
    # Warm-up passes run first and are not timed; each batch size gets its own.
    shapes = [call[0] for call in model.calls]
    per_size = 2 + expected_repeats
    assert shapes == [(1, 2, 3, 3)] * per_size + [(4, 2, 3, 3)] * per_size
    assert result.row_fields() == {"latency_ms_b1": 250.0, "latency_ms_b4": 250.0}


def test_measuring_uses_eval_inference_mode_and_the_thread_count_then_restores_them() -> None:
    clock = FakeClock()
    model = ClockedModel(clock, seconds=0.01).train()
    buffers = {key: value.clone() for key, value in model.state_dict().items()}
    threads_before = torch.get_num_threads()
    wanted = 2 if threads_before != 2 else 1
    settings = LatencySettings(
        batch_sizes=(2,), warmup=1, min_repeats=2, budget_s=0.0, threads=wanted
    )
    result = latency_ms(model, (2, 3, 3), settings, clock=clock)
    assert {call[1:] for call in model.calls} == {(False, True, wanted)}
    assert result.threads == wanted
    assert torch.get_num_threads() == threads_before
    assert model.training and model.bn.training
    after = model.state_dict()
    assert all(torch.equal(buffers[key], after[key]) for key in buffers)


def test_outputs_are_unchanged_by_measuring() -> None:
    model = small_net().eval()
    inputs = torch.randn(2, 3, 10, 10)
    before = model(inputs)
    result = latency_ms(model, (3, 10, 10), LatencySettings(batch_sizes=(1, 2), budget_s=0.0))
    assert torch.equal(model(inputs), before)
    assert result.device == "cpu"
    assert all(math.isfinite(ms) and ms > 0 for ms in result.median_ms.values())


@pytest.mark.parametrize(
    "bad",
    [
        {"batch_sizes": ()},
        {"batch_sizes": (0,)},
        {"min_repeats": 0},
        {"min_repeats": 5, "max_repeats": 4},
        {"warmup": -1},
        {"budget_s": -1.0},
        {"threads": 0},
    ],
)
def test_settings_refuse_what_cannot_be_measured(bad: dict) -> None:
    with pytest.raises(ValueError):
        LatencySettings(**bad)
