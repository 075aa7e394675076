"""The pruning literature's CIFAR models and `torchvision:<name>`: parameter counts against the
published figures and torchvision's own numbers, structure, heads and ImageNet weights."""

from __future__ import annotations

import os
import types

import pytest
import torch
import torchvision

import pruning
from trainables.errors import ConfigError
from trainables.models import build_model, count_parameters
from trainables.models.cifar_resnet import ZeroPadShortcut


def model_cfg(name, width=None, pretrained=False, weights_path=None):
    return types.SimpleNamespace(
        name=name, width=width, pretrained=pretrained, weights_path=weights_path
    )


def cifar_resnet_params(depth: int, width: int = 16, classes: int = 10) -> int:
    """Hand count of a ResNet-(6n+2) with option-A (parameter-free) shortcuts: 3x3 convs
    without bias, BatchNorm (2 per channel), one linear head."""
    n = (depth - 2) // 6
    total = 3 * 9 * width + 2 * width  # stem conv + bn
    channels = width
    for out in (width, 2 * width, 4 * width):
        for _ in range(n):
            total += 9 * channels * out + 9 * out * out + 4 * out  # two convs, two bns
            channels = out
    return total + channels * classes + classes


def vgg_params(plan: list[int], classes: int = 10) -> int:
    """Hand count: 3x3 convs with bias, BatchNorm after each, one linear head."""
    total, channels = 0, 3
    for out in plan:
        total += 9 * channels * out + out + 2 * out
        channels = out
    return total + channels * classes + classes


VGG16 = [64, 64, 128, 128, 256, 256, 256, 512, 512, 512, 512, 512, 512]
VGG19 = [64, 64, 128, 128, 256, 256, 256, 256, 512, 512, 512, 512, 512, 512, 512, 512]


@pytest.mark.parametrize(
    ("name", "depth", "published_millions"),
    # He et al. (2016), Table 6: ResNet-20 0.27M, ResNet-32 0.46M, ResNet-56 0.85M.
    [("resnet20", 20, 0.27), ("resnet32", 32, 0.46), ("resnet56", 56, 0.85)],
)
def test_cifar_resnets_have_the_published_parameter_counts(name, depth, published_millions):
    model = build_model(model_cfg(name), 10)
    count = count_parameters(model)
    assert count == cifar_resnet_params(depth)
    assert round(count / 1e6, 2) == published_millions
    # Weighted layers: the depth is the count of convolutions + the linear head (option A adds
    # no shortcut convolutions), and every one of them is prunable.
    assert len(pruning.prunable_parameter_names(model)) == depth


@pytest.mark.parametrize(
    ("name", "plan", "published_millions"),
    # VGG-16: 14.7M (Frankle et al. 2020, Table 1); VGG-19: 20.0M (Frankle & Carbin 2019, Fig. 2).
    [("vgg16_bn", VGG16, 14.7), ("vgg19_bn", VGG19, 20.0)],
)
def test_vggs_have_the_published_parameter_counts(name, plan, published_millions):
    model = build_model(model_cfg(name), 10)
    count = count_parameters(model)
    assert count == vgg_params(plan)
    assert round(count / 1e6, 1) == published_millions
    assert len(pruning.prunable_parameter_names(model)) == len(plan) + 1  # convs + one head
    assert sum(isinstance(m, torch.nn.Linear) for m in model.modules()) == 1


@pytest.mark.parametrize("name", ["resnet20", "resnet56", "vgg16_bn", "vgg19_bn"])
def test_width_scales_the_filters_and_forward_works(name):
    plain = build_model(model_cfg(name, width=4), 100, in_channels=1).eval()
    if name.startswith("resnet"):
        depth = int(name.removeprefix("resnet"))
        expected = cifar_resnet_params(depth, width=4, classes=100) - 2 * 9 * 4  # 1 input channel
        assert count_parameters(plain) == expected
    with torch.no_grad():
        assert plain(torch.randn(2, 1, 32, 32)).shape == (2, 100)


def test_option_a_shortcut_subsamples_and_zero_pads():
    shortcut = ZeroPadShortcut(16, 32, stride=2)
    x = torch.randn(2, 16, 8, 8)
    out = shortcut(x)
    assert out.shape == (2, 32, 4, 4)
    assert torch.equal(out[:, 8:24], x[:, :, ::2, ::2])
    assert not out[:, :8].any() and not out[:, 24:].any()
    assert not list(shortcut.parameters())


# ---- torchvision:<name> ------------------------------------------------------------------------

# Input features of the head, from torchvision's architecture definitions.
HEAD_IN = {"resnet50": 2048, "mobilenet_v3_small": 1024}


@pytest.mark.parametrize("name", sorted(HEAD_IN))
def test_torchvision_counts_are_torchvision_s_own(name):
    meta = torchvision.models.get_model_weights(name).DEFAULT.meta
    assert count_parameters(build_model(model_cfg(f"torchvision:{name}"), 1000)) == meta[
        "num_params"
    ]
    resized = count_parameters(build_model(model_cfg(f"torchvision:{name}"), 10))
    assert resized == meta["num_params"] - 990 * (HEAD_IN[name] + 1)


@pytest.mark.parametrize(
    ("name", "size"),
    [("mobilenet_v3_small", 32), ("squeezenet1_1", 64), ("efficientnet_b0", 32),
     ("googlenet", 64), ("shufflenet_v2_x0_5", 32)],
)
def test_torchvision_heads_are_resized_to_the_dataset(name, size):
    model = build_model(model_cfg(f"torchvision:{name}"), 7)
    model.train()  # googlenet would return auxiliary outputs in training mode if it had them
    out = model(torch.randn(2, 3, size, size))
    assert isinstance(out, torch.Tensor) and out.shape == (2, 7)
    names = pruning.prunable_parameter_names(model)
    modules = dict(model.named_modules())
    assert names and all(
        isinstance(modules[n.removesuffix(".weight")], torch.nn.Conv2d | torch.nn.Linear)
        for n in names
    )


def test_torchvision_names_are_checked_with_a_hint():
    with pytest.raises(ConfigError, match="did you mean 'resnet50'") as info:
        build_model(model_cfg("torchvision:resnt50"), 10)
    assert "\n" not in str(info.value)
    with pytest.raises(ConfigError, match="model.width does not apply"):
        build_model(model_cfg("torchvision:resnet18", width=32), 10)
    with pytest.raises(ConfigError, match="RGB"):
        build_model(model_cfg("torchvision:resnet18"), 10, in_channels=1)
    with pytest.raises(ConfigError, match="not available for resnet20"):
        build_model(model_cfg("resnet20", pretrained=True), 10)


def _cache_imagenet_file(tmp_path, monkeypatch, name, **build_options):
    """A seeded 1000-class torchvision model saved where torch hub looks for `name`'s weights."""
    monkeypatch.setenv("TORCH_HOME", str(tmp_path))
    torch.manual_seed(5)
    state = torchvision.models.get_model(name, num_classes=1000, **build_options).state_dict()
    weights = torchvision.models.get_model_weights(name).DEFAULT
    checkpoints = tmp_path / "hub" / "checkpoints"
    checkpoints.mkdir(parents=True)
    torch.save(state, checkpoints / os.path.basename(weights.url))

    def no_download(*args, **kwargs):
        raise AssertionError("tried to download although the file is cached")

    monkeypatch.setattr(torch.hub, "download_url_to_file", no_download)
    return state


def test_torchvision_pretrained_loads_the_trunk_and_keeps_a_fresh_head(tmp_path, monkeypatch):
    state = _cache_imagenet_file(tmp_path, monkeypatch, "mobilenet_v3_small")
    model = build_model(model_cfg("torchvision:mobilenet_v3_small", pretrained=True), 10)
    own = model.state_dict()
    for key, value in state.items():
        if not key.startswith("classifier.3."):
            assert torch.equal(own[key], value), key
    assert own["classifier.3.weight"].shape == (10, 1024)
    assert not torch.equal(own["classifier.3.weight"], state["classifier.3.weight"][:10])


def test_googlenet_pretrained_drops_the_auxiliary_classifiers(tmp_path, monkeypatch):
    state = _cache_imagenet_file(
        tmp_path, monkeypatch, "googlenet", aux_logits=True, init_weights=True
    )
    assert any(key.startswith("aux1.") for key in state)
    model = build_model(model_cfg("torchvision:googlenet", pretrained=True), 5)
    own = model.state_dict()
    assert not any(key.startswith(("aux1.", "aux2.")) for key in own)
    assert torch.equal(own["inception5b.branch1.conv.weight"],
                       state["inception5b.branch1.conv.weight"])
    assert model.transform_input  # the ImageNet weights expect torchvision's input transform
