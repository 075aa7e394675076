"""Allocation: global / layerwise / ERK budgets, exact counts, IMP rounds, no revival."""

from __future__ import annotations

import pytest
import torch
from torch import nn
from torch.nn.utils import prune

from pruning import (
    erk_layer_budgets,
    erk_layer_densities,
    full_mask,
    magnitude_scores,
    prune_remaining_fraction,
    prune_to_sparsity,
    score,
)


def mlp_and_conv(seed: int = 0) -> nn.Sequential:
    torch.manual_seed(seed)
    return nn.Sequential(
        nn.Conv2d(3, 6, 3),
        nn.ReLU(),
        nn.Conv2d(6, 4, 3),
        nn.Flatten(),
        nn.Linear(4 * 4 * 4, 10),
        nn.ReLU(),
        nn.Linear(10, 5),
    )


def kept(mask: dict[str, torch.Tensor]) -> int:
    return sum(int(keep.sum()) for keep in mask.values())


@pytest.mark.parametrize("sparsity", [0.0, 0.1, 0.37, 0.5, 0.8, 0.95])
def test_global_magnitude_equals_torch_global_unstructured_l1(sparsity: float) -> None:
    ours_net, theirs_net = mlp_and_conv(), mlp_and_conv()
    mask = full_mask(ours_net)
    ours = prune_to_sparsity(magnitude_scores(ours_net, mask), mask, sparsity)

    modules = [m for m in theirs_net if isinstance(m, nn.Conv2d | nn.Linear)]
    prune.global_unstructured(
        [(m, "weight") for m in modules], pruning_method=prune.L1Unstructured, amount=sparsity
    )
    for name, module in zip(mask, modules, strict=True):
        assert torch.equal(ours[name], module.weight_mask.bool()), name


def test_weights_are_tie_free_so_the_torch_comparison_is_meaningful() -> None:
    weights = torch.cat([p.detach().abs().flatten() for p in mlp_and_conv().parameters()])
    assert weights.unique().numel() == weights.numel()


def test_global_count_is_exact_and_ties_keep_the_earlier_position() -> None:
    mask = {"a": torch.ones(2, 3, dtype=torch.bool), "b": torch.ones(4, dtype=torch.bool)}
    scores = {"a": torch.ones(2, 3), "b": torch.ones(4)}
    pruned = prune_to_sparsity(scores, mask, 0.6)  # N = 10 -> keep 10 - round(6.0) = 4
    assert pruned["a"].flatten().tolist() == [True, True, True, True, False, False]
    assert pruned["b"].tolist() == [False] * 4


def test_pruning_never_revives_and_only_shrinks() -> None:
    mask = {"a": torch.tensor([True, False, True, False, True, True])}
    # The pruned entries score highest: a reviving implementation would pick them.
    scores = {"a": torch.tensor([1.0, 100.0, 3.0, 100.0, 2.0, 4.0])}
    pruned = prune_to_sparsity(scores, mask, 0.5)  # keep 6 - 3 = 3
    assert pruned["a"].tolist() == [False, False, True, False, True, True]
    with pytest.raises(ValueError, match="never revives"):
        prune_to_sparsity(scores, mask, 0.2)  # current sparsity is 2/6


def test_invalid_arguments_raise_readable_errors() -> None:
    mask = {"a": torch.ones(4, dtype=torch.bool)}
    with pytest.raises(ValueError, match=r"\[0, 1\)"):
        prune_to_sparsity({"a": torch.rand(4)}, mask, 1.0)
    with pytest.raises(ValueError, match="allocation"):
        prune_to_sparsity({"a": torch.rand(4)}, mask, 0.5, allocation="uniform")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="different parameters"):
        prune_to_sparsity({"b": torch.rand(4)}, mask, 0.5)
    with pytest.raises(ValueError, match="NaN"):
        prune_to_sparsity({"a": torch.tensor([0.0, float("nan"), 1.0, 2.0])}, mask, 0.5)


@pytest.mark.parametrize("rate", [0.05, 0.2, 0.5])
def test_imp_rounds_reach_one_minus_one_minus_rate_to_the_k(rate: float) -> None:
    net = mlp_and_conv()
    mask = full_mask(net)
    total = sum(keep.numel() for keep in mask.values())
    for round_index in range(1, 13):
        scores = magnitude_scores(net, mask)
        new_mask = prune_remaining_fraction(scores, mask, rate, round_index=round_index)
        assert all(bool((new_mask[n] <= mask[n]).all()) for n in mask)  # monotone
        mask = new_mask
        with torch.no_grad():
            for name, parameter in net.named_parameters():
                if name in mask:
                    parameter.mul_(mask[name])
        expected_pruned = (1 - (1 - rate) ** round_index) * total
        assert abs((total - kept(mask)) - expected_pruned) <= 1.0


def test_imp_rounds_do_not_compound_rounding_on_a_tiny_layer() -> None:
    # N = 10, rate 0.05: compounding "prune round(5% of what remains)" never prunes anything,
    # while the target 1 - 0.95^k must be met: after 14 rounds 10 * (1 - 0.95^14) = 5.12.
    mask = {"w": torch.ones(10, dtype=torch.bool)}
    scores = {"w": torch.arange(10, dtype=torch.float32)}
    for round_index in range(1, 15):
        mask = prune_remaining_fraction(scores, mask, 0.05, round_index=round_index)
    assert kept(mask) == 5
    assert mask["w"].tolist() == [False] * 5 + [True] * 5


def test_layerwise_prunes_every_layer_to_the_same_sparsity() -> None:
    mask = {"a": torch.ones(10, dtype=torch.bool), "b": torch.ones(4, 5, dtype=torch.bool)}
    generator = torch.Generator().manual_seed(0)
    scores = {"a": torch.rand(10, generator=generator), "b": torch.rand(4, 5, generator=generator)}
    pruned = prune_to_sparsity(scores, mask, 0.3, allocation="layerwise")
    # a: 10 - round(3.0) = 7 kept; b: 20 - round(6.0) = 14 kept; each its own top scores.
    assert int(pruned["a"].sum()) == 7 and int(pruned["b"].sum()) == 14
    for name, count in (("a", 7), ("b", 14)):
        top = torch.topk(scores[name].flatten(), count).indices
        assert sorted(pruned[name].flatten().nonzero().flatten().tolist()) == sorted(top.tolist())


# ERK toy: three layers, hand-computed (Evci et al. 2020: raw_l = sum(shape) / prod(shape)).
#   A conv (3, 2, 3, 3): numel 54, raw 11/54;  B linear (4, 12): numel 48, raw 16/48;
#   C linear (2, 4): numel 8, raw 6/8.  N = 110; sparsity 0.5 keeps 55.
#   eps = 55 / (11 + 16 + 6) = 5/3 -> density_C = 5/4 > 1, so C is dense (8 kept);
#   eps = (55 - 8) / (11 + 16) = 47/27 -> density_A = 517/1458, density_B = 47/81.
#   Budgets 19.148 and 27.852 -> floors 19, 27 (+ 8 = 54): the one left goes to B (.852).
ERK_SHAPES = {"A": (3, 2, 3, 3), "B": (4, 12), "C": (2, 4)}


def erk_mask() -> dict[str, torch.Tensor]:
    return {name: torch.ones(shape, dtype=torch.bool) for name, shape in ERK_SHAPES.items()}


def test_erk_densities_follow_the_formula_with_the_dense_layer_fix() -> None:
    shapes = {name: torch.Size(shape) for name, shape in ERK_SHAPES.items()}
    densities = erk_layer_densities(shapes, kept_total=55)
    assert densities["A"] == pytest.approx(517 / 1458, rel=1e-12)
    assert densities["B"] == pytest.approx(47 / 81, rel=1e-12)
    assert densities["C"] == 1.0


def test_erk_densities_without_a_dense_layer() -> None:
    # Sparsity 0.8 keeps 22: eps = 22 / 33 = 2/3, all densities below 1.
    shapes = {name: torch.Size(shape) for name, shape in ERK_SHAPES.items()}
    densities = erk_layer_densities(shapes, kept_total=22)
    assert densities == pytest.approx({"A": 2 / 3 * 11 / 54, "B": 2 / 9, "C": 1 / 2}, rel=1e-12)


def test_erk_budgets_and_mask_hit_the_global_count() -> None:
    assert erk_layer_budgets(erk_mask(), 55) == {"A": 19, "B": 28, "C": 8}
    generator = torch.Generator().manual_seed(0)
    scores = {name: torch.rand(shape, generator=generator) for name, shape in ERK_SHAPES.items()}
    pruned = prune_to_sparsity(scores, erk_mask(), 0.5, allocation="erk")
    assert {name: int(keep.sum()) for name, keep in pruned.items()} == {"A": 19, "B": 28, "C": 8}


def test_erk_power_scale_zero_is_uniform_density() -> None:
    # raw_l = 1 for every layer: density 55 / 110 = 1/2 -> exactly 27, 24 and 4.
    assert erk_layer_budgets(erk_mask(), 55, power_scale=0.0) == {"A": 27, "B": 24, "C": 4}


@pytest.mark.parametrize("allocation", ["global", "layerwise", "erk"])
@pytest.mark.parametrize("scorer", ["magnitude", "random"])
def test_every_allocation_returns_a_sub_mask(allocation: str, scorer: str) -> None:
    net = mlp_and_conv()
    mask = full_mask(net)
    first = prune_to_sparsity(score(net, mask, scorer, seed=3), mask, 0.5, allocation)
    second = prune_to_sparsity(score(net, first, scorer, seed=4), first, 0.75, allocation)
    total = sum(keep.numel() for keep in mask.values())
    for name in mask:
        assert bool((second[name] <= first[name]).all())
    if allocation != "layerwise":  # layerwise rounds per layer; exact per layer instead
        assert kept(first) == total - round(0.5 * total)
        assert kept(second) == total - round(0.75 * total)
    else:
        assert all(
            int(second[n].sum()) == second[n].numel() - round(0.75 * second[n].numel())
            for n in mask
        )


def test_published_resnet18_prunable_count_at_60_percent() -> None:
    from torchvision.models import resnet18

    model = resnet18(num_classes=102)
    mask = full_mask(model)
    scores = magnitude_scores(model, mask)
    # The study's 60% row: 4,487,654 prunable weights remain (the 40% row: accounting tests).
    assert kept(prune_to_sparsity(scores, mask, 0.6)) == 4_487_654


def test_selection_on_millions_of_scores_equals_a_stable_sort() -> None:
    """The sampled-bracket selection used above 1M weights keeps exactly the weights a stable
    descending sort keeps, ties (many, at the cut) and dead weights included."""
    from pruning.allocation import _keep_top, _kth_smallest

    generator = torch.Generator().manual_seed(3)
    n = 1_500_000
    scores = torch.randint(0, 5_000, (n,), generator=generator).float()  # ~300 ties per value
    alive = torch.rand(n, generator=generator) < 0.9
    for count in (1, 7, 400_000, int(alive.sum()) - 3, int(alive.sum())):
        order = torch.sort(
            torch.where(alive, scores, torch.tensor(-float("inf"))), descending=True, stable=True
        ).indices
        expected = torch.zeros(n, dtype=torch.bool)
        expected[order[:count]] = True
        assert torch.equal(_keep_top(scores, alive, count), expected), count
    # A bracket that misses (all values equal) falls back to the full selection.
    flat = torch.zeros(n)
    assert _kth_smallest(flat, 12345) == 0
    values = torch.randn(n, generator=generator)
    assert _kth_smallest(values, 777) == torch.kthvalue(values, 777).values
