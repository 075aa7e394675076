"""Structured channel pruning: the groups, the surgery's invariants, the allocation's exact
counts (computed here by hand or by brute force), reloading without code, and the target
parameter count."""

from __future__ import annotations

import copy
import math
import types

import pytest
import torch
from torch import nn
from torchvision.models import resnet18

from pruning import (
    ChannelGraph,
    channel_scores,
    channels_to_keep,
    flops,
    prune_channels,
    rebuild,
    shrunk_state,
)
from trainables.models import build_model

try:
    from channel_helpers import (
        brute_force_l1,
        hand_groups,
        old_and_new_slices,
        residual_shapes_match,
    )
except ImportError:  # tests/ collected as a package
    from tests.channel_helpers import (
        brute_force_l1,
        hand_groups,
        old_and_new_slices,
        residual_shapes_match,
    )


def cifar_resnet(width: int = 8, seed: int = 0, classes: int = 10) -> nn.Module:
    torch.manual_seed(seed)
    config = types.SimpleNamespace(
        name="resnet18_cifar", width=width, pretrained=False, weights_path=None
    )
    return build_model(config, classes, 3)


def tv_resnet(seed: int = 0) -> nn.Module:
    torch.manual_seed(seed)
    return resnet18(num_classes=7)


def randomise_norms(model: nn.Module, seed: int) -> nn.Module:
    """Trained-looking BatchNorms (non-trivial gammas, betas and statistics)."""
    generator = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for module in model.modules():
            if isinstance(module, nn.BatchNorm2d):
                size = module.num_features
                module.weight.copy_(torch.rand(size, generator=generator) + 0.1)
                module.bias.copy_(torch.randn(size, generator=generator))
                module.running_mean.copy_(torch.randn(size, generator=generator))
                module.running_var.copy_(torch.rand(size, generator=generator) + 0.5)
    return model


@pytest.mark.parametrize("make", [cifar_resnet, tv_resnet])
def test_groups_are_the_residual_and_block_groups(make) -> None:
    model = make()
    graph = ChannelGraph(model, torch.randn(1, 3, 32, 32))
    found = {g.name: (g.filters, g.norms, tuple(sorted(g.consumers))) for g in graph.groups}
    expected = {name: (f, n, tuple(sorted(c))) for name, (f, n, c) in hand_groups().items()}
    assert found == expected


@pytest.mark.parametrize("make", [cifar_resnet, tv_resnet])
@pytest.mark.parametrize(("allocation", "ratio"), [("uniform", 0.5), ("global", 0.4)])
def test_surgery_removes_the_chosen_channels_everywhere_downstream(make, allocation, ratio) -> None:
    model = randomise_norms(make(), seed=3)
    original = copy.deepcopy(model)
    classes = model.fc.out_features
    result = prune_channels(
        model, torch.randn(1, 3, 32, 32), ratio=ratio, criterion="l1", allocation=allocation
    )
    # A removed filter's channel is gone from its BatchNorms and from every reader's input.
    for name, got, expected in old_and_new_slices(original, model, result.kept):
        assert torch.equal(got, expected), name
    # The network input and the class scores keep their widths.
    assert model.conv1.in_channels == 3 and model.fc.out_features == classes
    # Residual additions still add tensors of one shape, and the network still runs.
    records = residual_shapes_match(model, torch.randn(2, 3, 32, 32))
    assert len(records) == 8
    for name, branch, identity, output in records:
        assert branch == identity == output, name
    assert model(torch.randn(2, 3, 32, 32)).shape == (2, classes)
    assert result.params_after == sum(p.numel() for p in model.parameters())
    assert result.params_before == sum(p.numel() for p in original.parameters())


def test_uniform_counts_are_the_hand_rounding_and_the_best_channels_by_l1() -> None:
    model = cifar_resnet(width=8)
    l1 = brute_force_l1(model)
    result = prune_channels(
        model, torch.randn(1, 3, 16, 16), ratio=0.3, criterion="l1", allocation="uniform"
    )
    # c - round(0.3 c): 8 -> 8 - 2 = 6, 16 -> 16 - 5 = 11, 32 -> 32 - 10 = 22, 64 -> 64 - 19 = 45
    hand = {8: 6, 16: 11, 32: 22, 64: 45}
    assert result.channels_after == {name: hand[c] for name, c in result.channels_before.items()}
    for name, kept in result.kept.items():
        ranked = sorted(range(len(l1[name])), key=lambda c: -l1[name][c])
        assert kept == sorted(ranked[: len(kept)]), name


def test_uniform_floors_keep_every_layer() -> None:
    model = cifar_resnet(width=8)
    result = prune_channels(
        model,
        torch.randn(1, 3, 16, 16),
        ratio=0.95,
        criterion="l1",
        allocation="uniform",
        min_keep_fraction=0.1,
    )
    # c - round(0.95 c) = 0, 1, 2, 3 for c = 8, 16, 32, 64; floors max(1, ceil(0.1 c)) = 1, 2, 4, 7
    hand = {8: 1, 16: 2, 32: 4, 64: 7}
    assert result.channels_after == {name: hand[c] for name, c in result.channels_before.items()}


@pytest.mark.parametrize(("ratio", "min_keep_fraction"), [(0.3, 0.1), (0.6, 0.25), (0.85, 0.1)])
def test_global_counts_follow_a_brute_force_threshold_over_all_filter_norms(
    ratio, min_keep_fraction
) -> None:
    model = cifar_resnet(width=8, seed=5)
    l1 = brute_force_l1(model)
    # Each group's floor of best channels is safe; the rest compete under one threshold.
    candidates, expected = [], {}
    for name, scores in l1.items():
        floor = max(1, math.ceil(min_keep_fraction * len(scores)))
        ranked = sorted(range(len(scores)), key=lambda c: -scores[c])
        expected[name] = set(ranked)
        candidates += [(scores[c], name, c) for c in ranked[floor:]]
    to_remove = min(round(ratio * sum(len(s) for s in l1.values())), len(candidates))
    threshold = sorted(score for score, _, _ in candidates)[to_remove - 1]
    for score, name, c in candidates:
        if score <= threshold:  # random weights: no ties at the threshold
            expected[name].discard(c)
    result = prune_channels(
        model,
        torch.randn(1, 3, 16, 16),
        ratio=ratio,
        criterion="l1",
        allocation="global",
        min_keep_fraction=min_keep_fraction,
    )
    assert {name: set(kept) for name, kept in result.kept.items()} == expected
    assert sum(result.channels_before.values()) - sum(result.channels_after.values()) == to_remove


class TwoConvs(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.a, self.bn_a = nn.Conv2d(3, 4, 3), nn.BatchNorm2d(4)
        self.b, self.bn_b = nn.Conv2d(4, 6, 3), nn.BatchNorm2d(6)
        self.fc = nn.Linear(6, 2)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.bn_b(self.b(torch.relu(self.bn_a(self.a(x)))))
        return self.fc(x.mean(dim=(2, 3)))


def test_ties_keep_the_earlier_channel() -> None:
    # bn_scale on fresh BatchNorms: every gamma is 1, every score ties.
    graph = ChannelGraph(TwoConvs(), torch.randn(1, 3, 8, 8))
    scores = channel_scores(graph, "bn_scale")
    kept = channels_to_keep(scores, 0.5, "uniform")
    assert {name: k.tolist() for name, k in kept.items()} == {"a": [0, 1], "b": [0, 1, 2]}
    # Global: 5 of 10 go; floors keep index 0 of each; the later group's later channels go first.
    kept = channels_to_keep(scores, 0.5, "global", min_keep_fraction=0.1)
    assert {name: k.tolist() for name, k in kept.items()} == {"a": [0, 1, 2, 3], "b": [0]}


def test_uniform_half_of_width_16_is_the_width_8_network() -> None:
    model = cifar_resnet(width=16)
    result = prune_channels(
        model, torch.randn(1, 3, 16, 16), ratio=0.5, criterion="l2", allocation="uniform"
    )
    narrow = cifar_resnet(width=8)
    assert result.params_after == sum(p.numel() for p in narrow.parameters())
    assert flops(model, (1, 3, 32, 32)) == flops(narrow, (1, 3, 32, 32))


def test_iterative_rounds_count_from_the_original_widths() -> None:
    model = cifar_resnet(width=8)
    example = torch.randn(1, 3, 16, 16)
    first = prune_channels(model, example, ratio=0.5, criterion="l1", allocation="uniform")
    second = prune_channels(
        model,
        example,
        ratio=0.75,
        criterion="l1",
        allocation="uniform",
        original_channels=first.channels_before,
    )
    # c - round(0.75 c) of the original c = 8, 16, 32, 64 -> 2, 4, 8, 16
    hand = {8: 2, 16: 4, 32: 8, 64: 16}
    assert second.channels_after == {n: hand[c] for n, c in first.channels_before.items()}
    with pytest.raises(ValueError, match="never revives"):
        prune_channels(
            model,
            example,
            ratio=0.5,
            criterion="l1",
            allocation="uniform",
            original_channels=first.channels_before,
        )


def test_reloaded_model_rebuilt_from_tensors_and_ints_gives_identical_outputs(tmp_path) -> None:
    model = randomise_norms(cifar_resnet(width=8, seed=1), seed=2)
    prune_channels(
        model, torch.randn(1, 3, 16, 16), ratio=0.45, criterion="l1", allocation="global"
    )
    torch.save(shrunk_state(model), tmp_path / "state.pt")
    loaded = torch.load(tmp_path / "state.pt", weights_only=True)
    fresh = cifar_resnet(width=8, seed=99)  # the unpruned architecture, other weights
    rebuilt = rebuild(fresh, loaded)
    inputs = torch.randn(3, 3, 32, 32)
    with torch.no_grad():
        assert torch.equal(rebuilt.eval()(inputs), model.eval()(inputs))
    assert sum(p.numel() for p in rebuilt.parameters()) == sum(
        p.numel() for p in model.parameters()
    )


def test_rebuild_refuses_what_does_not_fit() -> None:
    model = cifar_resnet(width=8)
    prune_channels(
        model, torch.randn(1, 3, 16, 16), ratio=0.5, criterion="l1", allocation="uniform"
    )
    state = shrunk_state(model)
    missing = {
        **state,
        "state_dict": {k: v for k, v in state["state_dict"].items() if k != "fc.bias"},
    }
    with pytest.raises(RuntimeError, match="fc.bias"):
        rebuild(cifar_resnet(width=8), missing)
    unknown = {
        **state,
        "layer_widths": {**state["layer_widths"], "head": {"in_features": 1, "out_features": 1}},
    }
    with pytest.raises(ValueError, match="head"):
        rebuild(cifar_resnet(width=8), unknown)


@pytest.mark.parametrize("allocation", ["uniform", "global"])
def test_target_parameter_count_is_met_by_the_least_pruning(allocation) -> None:
    model = cifar_resnet(width=8)
    total = sum(p.numel() for p in model.parameters())
    target = total // 3
    example = torch.randn(1, 3, 16, 16)
    result = prune_channels(
        copy.deepcopy(model), example, target_params=target, criterion="l1", allocation=allocation
    )
    assert result.params_after <= target
    # One step less pruning leaves more than the target: for global, one channel fewer removed;
    # for uniform, the ratio just below the one found.
    removed = sum(result.channels_before.values()) - sum(result.channels_after.values())
    total_channels = sum(result.channels_before.values())
    less = (removed - 1) / total_channels if allocation == "global" else result.ratio - 1e-9
    assert (
        prune_channels(
            copy.deepcopy(model), example, ratio=less, criterion="l1", allocation=allocation
        ).params_after
        > target
    )
    with pytest.raises(ValueError, match="floors"):
        prune_channels(copy.deepcopy(model), example, target_params=1000, allocation=allocation)


def test_exactly_one_target_is_accepted() -> None:
    example = torch.randn(1, 3, 16, 16)
    with pytest.raises(ValueError, match="exactly one of ratio"):
        prune_channels(cifar_resnet(), example)
    with pytest.raises(ValueError, match="exactly one of ratio"):
        prune_channels(cifar_resnet(), example, ratio=0.5, target_params=10_000)
