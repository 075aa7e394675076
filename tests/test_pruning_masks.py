"""Masks: prunable names, full/apply, layerwise shuffle, save/load."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
import torch
from torch import nn
from torchvision.models import resnet18

from pruning import (
    apply_mask,
    check_mask_fits,
    full_mask,
    layerwise_shuffle,
    load_mask,
    mask_sparsity,
    prunable_parameter_names,
    save_mask,
)


def small_net() -> nn.Sequential:
    torch.manual_seed(0)
    return nn.Sequential(
        nn.Conv2d(3, 4, 3),
        nn.BatchNorm2d(4),
        nn.ReLU(),
        nn.Conv2d(4, 5, 3),
        nn.Flatten(),
        nn.Linear(5 * 4 * 4, 6),
        nn.ReLU(),
        nn.Linear(6, 3),
    )


def test_prunable_names_are_conv_and_linear_weights_in_module_order() -> None:
    net = small_net()
    assert prunable_parameter_names(net) == ["0.weight", "3.weight", "5.weight", "7.weight"]
    assert prunable_parameter_names(net, exclude_first_conv=True) == [
        "3.weight",
        "5.weight",
        "7.weight",
    ]
    assert prunable_parameter_names(net, exclude_classifier=True) == [
        "0.weight",
        "3.weight",
        "5.weight",
    ]
    assert prunable_parameter_names(net, True, True) == ["3.weight", "5.weight"]


def test_resnet18_prunable_names() -> None:
    model = resnet18(num_classes=102)
    names = prunable_parameter_names(model)
    # Brute force: every 4-D parameter is a conv kernel, every 2-D one the fc weight.
    expected = [name for name, p in model.named_parameters() if p.dim() in (2, 4)]
    assert names == expected
    assert len(names) == 21  # 20 convolutions (3 of them 1x1 downsamples) + fc
    assert names[0] == "conv1.weight" and names[-1] == "fc.weight"
    trimmed = prunable_parameter_names(model, exclude_first_conv=True, exclude_classifier=True)
    assert trimmed == names[1:-1]


def test_shared_module_is_listed_once() -> None:
    shared = nn.Linear(4, 4)
    net = nn.Sequential(shared, nn.ReLU(), shared)
    assert prunable_parameter_names(net) == ["0.weight"]


def test_full_mask_and_apply_mask_zero_exactly_the_pruned_entries() -> None:
    net = small_net()
    mask = full_mask(net)
    assert all(keep.dtype == torch.bool and bool(keep.all()) for keep in mask.values())
    before = {name: p.detach().clone() for name, p in net.named_parameters()}
    mask["3.weight"][0, 0, 0, 0] = False
    mask["7.weight"][:, 1] = False
    with torch.no_grad():
        net[7].weight[0, 1] = float("nan")  # a NaN weight must still end up exactly zero
    apply_mask(net, mask)
    after = dict(net.named_parameters())
    for name, original in before.items():
        keep = mask.get(name, torch.ones_like(original, dtype=torch.bool))
        assert torch.equal(after[name][~keep], torch.zeros(int((~keep).sum())))
        if name != "7.weight":
            assert torch.equal(after[name][keep], original[keep])
    assert mask_sparsity(mask) == pytest.approx(4 / sum(k.numel() for k in mask.values()))


def test_check_mask_fits_rejects_wrong_shape_dtype_and_name() -> None:
    net = small_net()
    with pytest.raises(ValueError, match="shape"):
        check_mask_fits(net, {"0.weight": torch.ones(2, dtype=torch.bool)})
    with pytest.raises(ValueError, match="dtype"):
        check_mask_fits(net, {"0.weight": torch.ones(4, 3, 3, 3)})
    with pytest.raises(ValueError, match="not a parameter"):
        check_mask_fits(net, {"nope.weight": torch.ones(1, dtype=torch.bool)})


def test_layerwise_shuffle_keeps_per_layer_counts_and_moves_positions() -> None:
    generator = torch.Generator().manual_seed(0)
    mask = {
        "a": torch.rand(20, 30, generator=generator) < 0.3,
        "b": torch.rand(5, 4, 3, 3, generator=generator) < 0.6,
    }
    shuffled = layerwise_shuffle(mask, torch.Generator().manual_seed(1))
    again = layerwise_shuffle(mask, torch.Generator().manual_seed(1))
    other = layerwise_shuffle(mask, torch.Generator().manual_seed(2))
    for name, keep in mask.items():
        assert shuffled[name].shape == keep.shape and shuffled[name].dtype == torch.bool
        assert int(shuffled[name].sum()) == int(keep.sum())
        assert not torch.equal(shuffled[name], keep)
        assert torch.equal(shuffled[name], again[name])
        assert not torch.equal(shuffled[name], other[name])


def test_save_and_load_round_trip_atomically(tmp_path: Path) -> None:
    mask = {"a.weight": torch.rand(3, 4) < 0.5, "b.weight": torch.rand(2, 2, 3, 3) < 0.5}
    path = tmp_path / "mask.pt"
    save_mask(mask, path)
    save_mask(mask, path)  # overwriting goes through os.replace as well
    loaded = load_mask(path)
    assert loaded.keys() == mask.keys()
    assert all(torch.equal(loaded[name], mask[name]) for name in mask)
    assert os.listdir(tmp_path) == ["mask.pt"]  # no temporary file left behind


def test_failed_save_leaves_previous_file_and_no_temporary(tmp_path: Path) -> None:
    path = tmp_path / "mask.pt"
    save_mask({"a": torch.ones(2, dtype=torch.bool)}, path)
    with pytest.raises(AttributeError):
        save_mask({"a": "not a tensor"}, path)  # type: ignore[dict-item]
    assert os.listdir(tmp_path) == ["mask.pt"]
    assert torch.equal(load_mask(path)["a"], torch.ones(2, dtype=torch.bool))


def test_load_mask_rejects_non_masks(tmp_path: Path) -> None:
    path = tmp_path / "weights.pt"
    torch.save({"a": torch.ones(2)}, path)
    with pytest.raises(ValueError, match="does not hold a mask"):
        load_mask(path)
