"""Channel importance criteria against hand computations, and the network-slimming penalty."""

from __future__ import annotations

import copy

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from pruning import CRITERIA, ChannelGraph, bn_scale_penalty, channel_scores


class Residual(nn.Module):
    """stem -> BN, then a block whose conv2 is added to the stem's output (a coupled group)."""

    def __init__(self) -> None:
        super().__init__()
        self.stem, self.bn0 = nn.Conv2d(2, 4, 3, padding=1, bias=False), nn.BatchNorm2d(4)
        self.conv1, self.bn1 = nn.Conv2d(4, 3, 3, padding=1, bias=False), nn.BatchNorm2d(3)
        self.conv2, self.bn2 = nn.Conv2d(3, 4, 3, padding=1, bias=False), nn.BatchNorm2d(4)
        self.fc = nn.Linear(4, 5)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = torch.relu(self.bn0(self.stem(x)))
        x = torch.relu(x + self.bn2(self.conv2(torch.relu(self.bn1(self.conv1(x))))))
        return self.fc(x.mean(dim=(2, 3)))


def residual(seed: int = 0) -> Residual:
    torch.manual_seed(seed)
    return Residual()


def graph_of(model: nn.Module) -> ChannelGraph:
    return ChannelGraph(model, torch.randn(1, 2, 6, 6))


def test_groups_of_the_residual_net() -> None:
    groups = {g.name: (g.filters, g.norms) for g in graph_of(residual()).groups}
    assert groups == {
        "stem": (("stem", "conv2"), ("bn0", "bn2")),
        "conv1": (("conv1",), ("bn1",)),
    }


@pytest.mark.parametrize(("criterion", "p"), [("l1", 1), ("l2", 2)])
def test_filter_norms_are_averaged_over_the_coupled_filters(criterion: str, p: int) -> None:
    model = residual()
    scores = channel_scores(graph_of(model), criterion)

    def norm(weight: torch.Tensor, c: int) -> float:
        values = weight.detach()[c].flatten().tolist()
        return sum(abs(v) ** p for v in values) ** (1 / p)

    for c in range(4):
        expected = (norm(model.stem.weight, c) + norm(model.conv2.weight, c)) / 2
        assert scores["stem"][c].item() == pytest.approx(expected, rel=1e-12)
    for c in range(3):
        assert scores["conv1"][c].item() == pytest.approx(norm(model.conv1.weight, c), rel=1e-12)


def test_bn_scale_is_the_mean_absolute_gamma() -> None:
    model = residual()
    with torch.no_grad():
        model.bn0.weight.copy_(torch.tensor([1.0, -2.0, 0.5, 0.0]))
        model.bn2.weight.copy_(torch.tensor([3.0, 2.0, -0.5, 0.25]))
        model.bn1.weight.copy_(torch.tensor([-0.1, 0.2, 0.3]))
    scores = channel_scores(graph_of(model), "bn_scale")
    assert scores["stem"].tolist() == [2.0, 2.0, 0.5, 0.125]
    assert scores["conv1"].tolist() == pytest.approx([0.1, 0.2, 0.3], rel=1e-7)


def test_bn_scale_without_batchnorm_is_refused_naming_the_group() -> None:
    model = nn.Sequential(nn.Conv2d(2, 3, 3), nn.ReLU(), nn.Flatten(), nn.Linear(3 * 4 * 4, 2))
    with pytest.raises(ValueError, match="bn_scale.*group 0"):
        channel_scores(ChannelGraph(model, torch.randn(1, 2, 6, 6)), "bn_scale")


def test_taylor_is_the_batch_mean_of_squared_filter_first_order_terms() -> None:
    model = residual()
    generator = torch.Generator().manual_seed(4)
    batches = [
        (
            torch.randn(3, 2, 6, 6, generator=generator),
            torch.randint(0, 5, (3,), generator=generator),
        )
        for _ in range(3)
    ]
    # By hand with ordinary autograd on a copy in train mode: per batch, per filter c,
    # (sum of w * dL/dw over the filter)^2; averaged over the 2 batches used.
    reference = copy.deepcopy(model).train()
    terms: dict[str, list[list[float]]] = {"stem": [], "conv2": [], "conv1": []}
    for inputs, targets in batches[:2]:
        reference.zero_grad()
        F.cross_entropy(reference(inputs), targets).backward()
        for name in terms:
            weight = getattr(reference, name).weight
            per_filter = (weight.detach().double() * weight.grad.double()).flatten(1).sum(1)
            terms[name].append(per_filter.pow(2).tolist())

    def mean_over_batches(name: str) -> list[float]:
        return [sum(values) / 2 for values in zip(*terms[name], strict=True)]

    before = {key: value.clone() for key, value in model.state_dict().items()}
    model.eval()
    scores = channel_scores(graph_of(model), "taylor", batches=batches, num_batches=2)
    expected_stem = [
        (a + b) / 2
        for a, b in zip(mean_over_batches("stem"), mean_over_batches("conv2"), strict=True)
    ]
    assert scores["stem"].tolist() == pytest.approx(expected_stem, rel=1e-5)
    assert scores["conv1"].tolist() == pytest.approx(mean_over_batches("conv1"), rel=1e-5)
    # The model is untouched: no gradients, same buffers (BatchNorm statistics), same mode.
    assert all(p.grad is None for p in model.parameters())
    assert all(torch.equal(before[k], v) for k, v in model.state_dict().items())
    assert not model.training and not model.bn0.training


def test_taylor_needs_enough_batches() -> None:
    with pytest.raises(ValueError, match="batches"):
        channel_scores(graph_of(residual()), "taylor")
    one = [(torch.randn(2, 2, 6, 6), torch.tensor([0, 1]))]
    with pytest.raises(ValueError, match="num_batches is 2"):
        channel_scores(graph_of(residual()), "taylor", batches=one, num_batches=2)


def test_random_scores_are_seeded_uniform_draws() -> None:
    graph = graph_of(residual())
    first = channel_scores(graph, "random", seed=7)
    again = channel_scores(graph, "random", seed=7)
    other = channel_scores(graph, "random", seed=8)
    assert all(torch.equal(first[name], again[name]) for name in first)
    assert any(not torch.equal(first[name], other[name]) for name in first)
    assert all(((s >= 0) & (s < 1)).all() for s in first.values())
    assert {name: len(s) for name, s in first.items()} == {"stem": 4, "conv1": 3}


def test_unknown_criterion_lists_the_known_ones() -> None:
    with pytest.raises(ValueError, match="unknown channel criterion 'fpgm'.*l1"):
        channel_scores(graph_of(residual()), "fpgm")
    with pytest.raises(ValueError, match="did you mean 'taylor'"):
        channel_scores(graph_of(residual()), "taylr")
    assert CRITERIA.names() == ["bn_scale", "l1", "l2", "random", "taylor"]


def test_slimming_penalty_is_lambda_times_the_sum_of_absolute_gammas() -> None:
    model = residual()
    with torch.no_grad():
        model.bn0.weight.copy_(torch.tensor([1.0, -2.0, 0.5, 0.0]))
    gammas = [v for m in (model.bn0, model.bn1, model.bn2) for v in m.weight.detach().tolist()]
    penalty = bn_scale_penalty(model, 1e-4)
    assert penalty.item() == pytest.approx(1e-4 * sum(abs(v) for v in gammas), rel=1e-6)
    penalty.backward()
    # Its gradient is Liu et al.'s subgradient lambda * sign(gamma) (0 at gamma = 0).
    assert model.bn0.weight.grad.tolist() == pytest.approx([1e-4, -1e-4, 1e-4, 0.0])
    assert model.stem.weight.grad is None
