"""Accounting against brute-force counting, and the published ResNet-18 counts."""

from __future__ import annotations

import torch
from torch import nn
from torchvision.models import resnet18

from pruning import (
    apply_mask,
    count_parameters,
    full_mask,
    magnitude_scores,
    mask_sparsity,
    prune_to_sparsity,
)


def brute_force_nonzero(tensors: list[torch.Tensor]) -> int:
    return sum(
        int(value != 0) for tensor in tensors for value in tensor.detach().flatten().tolist()
    )


def test_resnet18_flowers_counts_and_the_published_40_percent_row() -> None:
    torch.manual_seed(0)
    model = resnet18(num_classes=102)
    counts = count_parameters(model)
    assert counts.total == 11_228_838  # the published dense count
    # Brute force: every conv kernel is 4-D and the fc weight is the only 2-D parameter.
    weights = [p for _, p in model.named_parameters() if p.dim() in (2, 4)]
    assert counts.prunable == sum(p.numel() for p in weights)
    # By hand: 4,800 BatchNorm channels (weight + bias) and 102 fc biases are not prunable.
    assert counts.prunable == 11_228_838 - 2 * 4_800 - 102 == 11_219_136
    # Initialisation can leave an exact zero or two: they count as pruned (weights decide).
    weights_nonzero = sum(int(p.count_nonzero()) for p in weights)
    assert counts.prunable_nonzero == weights_nonzero
    assert counts.sparsity == (counts.prunable - weights_nonzero) / counts.prunable

    mask = full_mask(model)
    apply_mask(model, prune_to_sparsity(magnitude_scores(model, mask), mask, 0.4))
    counts = count_parameters(model)
    assert counts.prunable_nonzero == 6_731_482  # the study's 40% row
    everything = list(model.parameters())
    assert counts.total_nonzero == sum(int(p.count_nonzero()) for p in everything)
    assert counts.sparsity == (11_219_136 - 6_731_482) / 11_219_136


def test_counts_equal_brute_force_on_a_small_pruned_net() -> None:
    torch.manual_seed(0)
    net = nn.Sequential(nn.Conv2d(2, 3, 3), nn.BatchNorm2d(3), nn.Flatten(), nn.Linear(12, 4))
    mask = full_mask(net)
    mask["0.weight"][0] = False  # 18 of 54 pruned
    mask["3.weight"][:, :3] = False  # 12 of 48 pruned
    apply_mask(net, mask)
    with torch.no_grad():
        net[1].bias.zero_()  # non-prunable zeros count in total_nonzero only
    counts = count_parameters(net, mask)
    parameters = list(net.parameters())
    assert counts.total == 54 + 3 + 3 + 3 + 48 + 4
    assert counts.prunable == 54 + 48
    assert counts.total_nonzero == brute_force_nonzero(parameters)
    assert counts.prunable_nonzero == brute_force_nonzero([net[0].weight, net[3].weight])
    assert counts.prunable_nonzero == 36 + 36
    assert counts.sparsity == 30 / 102
    assert counts.per_layer["0.weight"].numel == 54
    assert counts.per_layer["0.weight"].nonzero == 36
    assert counts.per_layer["0.weight"].sparsity == 18 / 54
    assert counts.per_layer["3.weight"].sparsity == 12 / 48


def test_sparsity_is_measured_from_weights_not_from_the_mask() -> None:
    net = nn.Linear(5, 2)
    mask = full_mask(net)
    with torch.no_grad():
        net.weight[0, 0] = 0.0  # exactly zero yet kept by the mask
    assert count_parameters(net, mask).sparsity == 1 / 10
    assert mask_sparsity(mask) == 0.0


def test_shared_parameters_count_once_and_names_can_be_given() -> None:
    shared = nn.Linear(3, 3)
    net = nn.Sequential(shared, nn.ReLU(), shared, nn.Linear(3, 1, bias=False))
    counts = count_parameters(net)
    assert counts.total == 9 + 3 + 3
    assert counts.prunable == 9 + 3
    assert count_parameters(net, prunable_names=["3.weight"]).prunable == 3
