"""Property tests over random small Linear/Conv networks, sparsities and seeds."""

from __future__ import annotations

import math

import torch
from hypothesis import assume, given, settings
from hypothesis import strategies as st
from torch import nn
from torch.nn.utils import prune

from pruning import (
    apply_mask,
    count_parameters,
    erk_layer_budgets,
    erk_layer_densities,
    full_mask,
    layerwise_shuffle,
    prunable_parameter_names,
    prune_remaining_fraction,
    prune_to_sparsity,
    score,
)

PROPERTY_SETTINGS = settings(max_examples=30, deadline=None)
sparsities = st.floats(min_value=0.0, max_value=0.99, allow_nan=False)


@st.composite
def networks(draw: st.DrawFn) -> nn.Sequential:
    """A random stack: 0-2 convs (optional bias / BatchNorm), then 1-3 Linear layers."""
    torch.manual_seed(draw(st.integers(0, 2**16)))
    layers: list[nn.Module] = []
    channels, size = draw(st.integers(1, 3)), 6
    for _ in range(draw(st.integers(0, 2))):
        out_channels, kernel = draw(st.integers(1, 4)), draw(st.integers(1, 3))
        layers.append(nn.Conv2d(channels, out_channels, kernel, bias=draw(st.booleans())))
        if draw(st.booleans()):
            layers.append(nn.BatchNorm2d(out_channels))
        layers.append(nn.ReLU())
        channels, size = out_channels, size - kernel + 1
    layers.append(nn.Flatten())
    features = channels * size * size
    for _ in range(draw(st.integers(1, 3))):
        out_features = draw(st.integers(1, 6))
        layers.append(nn.Linear(features, out_features, bias=draw(st.booleans())))
        features = out_features
    return nn.Sequential(*layers)


def kept(mask: dict[str, torch.Tensor]) -> int:
    return sum(int(keep.sum()) for keep in mask.values())


def numel(mask: dict[str, torch.Tensor]) -> int:
    return sum(keep.numel() for keep in mask.values())


@PROPERTY_SETTINGS
@given(networks(), sparsities, sparsities, st.integers(0, 1000), st.sampled_from(["global", "erk"]))
def test_exact_global_counts_and_monotone_masks(
    net: nn.Sequential, first: float, second: float, seed: int, allocation: str
) -> None:
    low, high = sorted((first, second))
    mask = full_mask(net)
    total = numel(mask)
    low_mask = prune_to_sparsity(score(net, mask, "random", seed=seed), mask, low, allocation)
    high_mask = prune_to_sparsity(
        score(net, low_mask, "random", seed=seed + 1), low_mask, high, allocation
    )
    assert kept(low_mask) == total - round(low * total)
    assert kept(high_mask) == total - round(high * total)
    for name in mask:
        assert bool((high_mask[name] <= low_mask[name]).all())


@PROPERTY_SETTINGS
@given(networks(), sparsities, st.integers(0, 1000))
def test_layerwise_counts_are_exact_per_layer(
    net: nn.Sequential, sparsity: float, seed: int
) -> None:
    mask = full_mask(net)
    pruned = prune_to_sparsity(score(net, mask, "random", seed=seed), mask, sparsity, "layerwise")
    for keep in pruned.values():
        assert int(keep.sum()) == keep.numel() - round(sparsity * keep.numel())


@PROPERTY_SETTINGS
@given(networks(), sparsities)
def test_global_magnitude_matches_torch_prune(net: nn.Sequential, sparsity: float) -> None:
    mask = full_mask(net)
    ours = prune_to_sparsity(score(net, mask, "magnitude"), mask, sparsity)
    modules = [m for m in net if isinstance(m, nn.Conv2d | nn.Linear)]
    flat = torch.cat([m.weight.detach().abs().flatten() for m in modules])
    assume(flat.unique().numel() == flat.numel())  # with ties both are right yet may differ
    prune.global_unstructured(
        [(m, "weight") for m in modules], pruning_method=prune.L1Unstructured, amount=sparsity
    )
    for name, module in zip(mask, modules, strict=True):
        assert torch.equal(ours[name], module.weight_mask.bool())


@PROPERTY_SETTINGS
@given(networks(), st.floats(0.01, 0.6), st.integers(1, 8))
def test_imp_rounds_hit_the_geometric_target(net: nn.Sequential, rate: float, rounds: int) -> None:
    mask = full_mask(net)
    total = numel(mask)
    for round_index in range(1, rounds + 1):
        new_mask = prune_remaining_fraction(
            score(net, mask, "magnitude"), mask, rate, round_index=round_index
        )
        assert all(bool((new_mask[n] <= mask[n]).all()) for n in mask)
        mask = new_mask
        apply_mask(net, mask)
    assert abs((total - kept(mask)) - (1 - (1 - rate) ** rounds) * total) <= 1.0


@PROPERTY_SETTINGS
@given(networks(), sparsities, st.integers(0, 1000))
def test_accounting_equals_counting(net: nn.Sequential, sparsity: float, seed: int) -> None:
    mask = full_mask(net)
    apply_mask(net, prune_to_sparsity(score(net, mask, "random", seed=seed), mask, sparsity))
    counts = count_parameters(net)
    names = set(prunable_parameter_names(net))
    parameters = dict(net.named_parameters())
    nonzero = {n: sum(v != 0 for v in p.detach().flatten().tolist()) for n, p in parameters.items()}
    assert counts.total == sum(p.numel() for p in parameters.values())
    assert counts.total_nonzero == sum(nonzero.values())
    assert counts.prunable == sum(parameters[n].numel() for n in names)
    assert counts.prunable_nonzero == sum(nonzero[n] for n in names)
    zeros = sum(parameters[n].numel() - nonzero[n] for n in names)
    assert math.isclose(counts.sparsity, zeros / counts.prunable, rel_tol=1e-12, abs_tol=1e-15)
    for name in names:
        assert counts.per_layer[name].nonzero == nonzero[name]


@PROPERTY_SETTINGS
@given(networks(), sparsities, st.floats(0.0, 2.0))
def test_erk_budgets_sum_exactly_and_follow_the_formula(
    net: nn.Sequential, sparsity: float, power: float
) -> None:
    mask = full_mask(net)
    total = numel(mask)
    keep_total = total - round(sparsity * total)
    budgets = erk_layer_budgets(mask, keep_total, power)
    assert sum(budgets.values()) == keep_total
    densities = erk_layer_densities({n: k.shape for n, k in mask.items()}, keep_total, None, power)
    for name, keep in mask.items():
        assert 0 <= budgets[name] <= keep.numel()
        assert abs(budgets[name] - densities[name] * keep.numel()) < 1.0 + 1e-9
        raw = (sum(keep.shape) / keep.numel()) ** power
        if densities[name] < 1.0:  # layers below capacity share one eps
            eps = densities[name] / raw
            assert all(
                math.isclose(densities[other] / (sum(k.shape) / k.numel()) ** power, eps)
                for other, k in mask.items()
                if densities[other] < 1.0
            )
        else:  # a dense layer is one whose formula density would exceed 1
            others = [n for n in mask if densities[n] < 1.0]
            if others:
                eps = (
                    densities[others[0]]
                    / (sum(mask[others[0]].shape) / mask[others[0]].numel()) ** power
                )
                assert eps * raw >= 1.0 - 1e-9


@PROPERTY_SETTINGS
@given(networks(), sparsities, st.integers(0, 1000))
def test_layerwise_shuffle_preserves_per_layer_counts(
    net: nn.Sequential, sparsity: float, seed: int
) -> None:
    mask = full_mask(net)
    pruned = prune_to_sparsity(score(net, mask, "random", seed=seed), mask, sparsity)
    shuffled = layerwise_shuffle(pruned, torch.Generator().manual_seed(seed))
    assert {n: int(k.sum()) for n, k in shuffled.items()} == {
        n: int(k.sum()) for n, k in pruned.items()
    }
