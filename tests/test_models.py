"""Models registry: published parameter counts, width scaling, forward shapes, weight loading."""

from __future__ import annotations

import time
import types
import urllib.error

import pytest
import torch
import torchvision
from torch import nn

from trainables.errors import ConfigError, WeightsUnavailableError
from trainables.models import MODELS, build_model, count_parameters

# torchvision's file name for ResNet18_Weights.IMAGENET1K_V1 (written out, not read from code).
IMAGENET_FILE = "resnet18-f37072fd.pth"


def model_cfg(name="resnet18", width=64, pretrained=False, weights_path=None):
    return types.SimpleNamespace(
        name=name, width=width, pretrained=pretrained, weights_path=weights_path
    )


def resnet18_params(width: int, num_classes: int, stem: int = 3 * 7 * 7) -> int:
    """Hand count. Stem conv stem*w + bn 2w; stage 1: 4 convs 9w^2 + 4 bns 2w;
    stages 2..4 at c -> 2c: 128 c^2 + 20 c (convs, bns, 1x1 downsample + bn); head 8w*K + K."""
    w = width
    stage1 = 4 * 9 * w * w + 4 * 2 * w
    later = sum(128 * c * c + 20 * c for c in (w, 2 * w, 4 * w))
    return stem * w + 2 * w + stage1 + later + 8 * w * num_classes + num_classes


def test_every_module_of_the_package_is_discovered_and_registers_itself():
    # No list of names is kept: importing the package imports each of its modules, and every
    # model module registers a model or a family (those the tests here build among them).
    import importlib
    import pkgutil

    import trainables.models
    from trainables.models import model_entry, model_families

    modules = {m.name for m in pkgutil.iter_modules(trainables.models.__path__)}
    builders = {MODELS.get(name).build.__module__ for name in MODELS.names()}
    assert model_families() == ["torchvision:"]
    builders.add(model_entry("torchvision:resnet18").build.__module__)  # one of the family
    for module in sorted(modules - {"common", "weights"}):  # what the models share
        imported = importlib.import_module(f"trainables.models.{module}")
        assert imported.__name__ in builders, f"trainables/models/{module}.py registers nothing"
    assert {"resnet18", "resnet18_cifar", "resnet20", "vgg16_bn"} <= set(MODELS.names())


def test_an_unknown_model_names_every_registered_one():
    with pytest.raises(ConfigError) as raised:
        build_model(model_cfg("vgg11"), 10)
    allowed = str(raised.value).split("allowed: ", 1)[1].split(", ")
    assert allowed == [*MODELS.names(), "torchvision:<name>"]


def test_published_parameter_counts():
    assert count_parameters(build_model(model_cfg(), 102)) == 11_228_838
    assert count_parameters(build_model(model_cfg(), 1000)) == 11_689_512
    assert resnet18_params(64, 102) == 11_228_838  # the hand formula agrees with the paper


@pytest.mark.parametrize("width", [8, 16, 24])
@pytest.mark.parametrize("in_channels", [1, 3])
def test_width_scales_parameters_like_the_hand_count(width, in_channels):
    model = build_model(model_cfg(width=width), 10, in_channels)
    assert count_parameters(model) == resnet18_params(width, 10, stem=in_channels * 49)
    cifar = build_model(model_cfg("resnet18_cifar", width=width), 10, in_channels)
    assert count_parameters(cifar) == resnet18_params(width, 10, stem=in_channels * 9)


def test_structural_widths_and_torchvision_names():
    model = build_model(model_cfg(width=16), 10)
    assert model.conv1.out_channels == 16
    assert [getattr(model, f"layer{i}")[1].conv2.out_channels for i in range(1, 5)] == [
        16,
        32,
        64,
        128,
    ]
    assert model.fc.in_features == 128
    reference = torchvision.models.resnet18(num_classes=10)
    assert list(model.state_dict()) == list(reference.state_dict())
    cifar = build_model(model_cfg("resnet18_cifar", width=16), 10, 1)
    assert list(cifar.state_dict()) == list(reference.state_dict())
    assert cifar.conv1.kernel_size == (3, 3) and cifar.conv1.stride == (1, 1)
    assert cifar.conv1.in_channels == 1 and isinstance(cifar.maxpool, nn.Identity)


def test_width_64_is_torchvision_resnet18_under_the_same_seed():
    torch.manual_seed(0)
    ours = build_model(model_cfg(), 102)
    torch.manual_seed(0)
    reference = torchvision.models.resnet18(num_classes=102)
    for (name, a), b in zip(
        ours.state_dict().items(), reference.state_dict().values(), strict=True
    ):
        assert torch.equal(a, b), name


def test_construction_is_deterministic_given_the_global_seed():
    def build(seed):
        torch.manual_seed(seed)
        return build_model(model_cfg("resnet18_cifar", width=8), 10, 1).state_dict()

    a, b, c = build(1), build(1), build(2)
    assert all(torch.equal(a[k], b[k]) for k in a)
    assert not torch.equal(a["conv1.weight"], c["conv1.weight"])


def test_forward_shapes():
    model = build_model(model_cfg(width=8), 102).eval()
    with torch.no_grad():
        assert model(torch.randn(2, 3, 32, 32)).shape == (2, 102)
        cifar = build_model(model_cfg("resnet18_cifar", width=8), 10, 1).eval()
        assert cifar(torch.randn(2, 1, 32, 32)).shape == (2, 10)
        assert cifar(torch.randn(2, 1, 16, 16)).shape == (2, 10)


# ----------------------------------------------------------------------------- weights


def imagenet_like_state_dict() -> dict[str, torch.Tensor]:
    torch.manual_seed(123)
    state = torchvision.models.resnet18(num_classes=1000).state_dict()
    state["layer3.1.conv2.weight"].fill_(0.125)  # a known value to find again
    return state


def assert_trunk_loaded(model: nn.Module, state: dict[str, torch.Tensor], num_classes: int):
    own = model.state_dict()
    for key, value in state.items():
        if not key.startswith("fc."):
            assert torch.equal(own[key], value), key
    assert torch.all(own["layer3.1.conv2.weight"] == 0.125)
    assert own["fc.weight"].shape == (num_classes, 512)
    # The head is fresh: torchvision's default Linear init, bound 1/sqrt(512), not the file's.
    assert own["fc.weight"].abs().max() <= 1 / 512**0.5


def test_weights_path_loads_trunk_and_keeps_a_fresh_head(tmp_path):
    state = imagenet_like_state_dict()
    path = tmp_path / "weights.pt"
    torch.save(state, path)
    model = build_model(model_cfg(weights_path=str(path)), 102)
    assert_trunk_loaded(model, state, 102)
    # Same class count: the head is loaded too.
    same = build_model(model_cfg(weights_path=str(path)), 1000)
    assert torch.equal(same.state_dict()["fc.weight"], state["fc.weight"])


def test_weights_path_mismatch_lists_missing_and_unexpected_keys(tmp_path):
    state = imagenet_like_state_dict()
    del state["layer1.0.conv1.weight"]
    state["extra.weight"] = torch.zeros(1)
    path = tmp_path / "bad.pt"
    torch.save(state, path)
    with pytest.raises(WeightsUnavailableError) as info:
        build_model(model_cfg(weights_path=str(path)), 102)
    message = str(info.value)
    assert "missing keys layer1.0.conv1.weight" in message
    assert "unexpected keys extra.weight" in message
    assert "\n" not in message and str(path) in message


def test_weights_path_errors_are_one_line(tmp_path):
    with pytest.raises(WeightsUnavailableError, match="is not a file"):
        build_model(model_cfg(weights_path=str(tmp_path / "absent.pt")), 102)
    junk = tmp_path / "junk.pt"
    junk.write_bytes(b"not a checkpoint")
    with pytest.raises(WeightsUnavailableError, match="not a loadable state dict") as info:
        build_model(model_cfg(weights_path=str(junk)), 102)
    assert "\n" not in str(info.value)


def test_pretrained_loads_from_torch_home_without_network(tmp_path, monkeypatch):
    monkeypatch.setenv("TORCH_HOME", str(tmp_path))
    state = imagenet_like_state_dict()
    checkpoints = tmp_path / "hub" / "checkpoints"
    checkpoints.mkdir(parents=True)
    # The content's hash does not match the name's "f37072fd": torch hub verifies hashes only
    # when it downloads, so a pre-populated file is trusted.
    torch.save(state, checkpoints / IMAGENET_FILE)

    def no_download(*args, **kwargs):
        raise AssertionError("tried to download although the file is cached")

    monkeypatch.setattr(torch.hub, "download_url_to_file", no_download)
    model = build_model(model_cfg(pretrained=True), 102)
    assert_trunk_loaded(model, state, 102)


def test_pretrained_without_cache_or_network_is_one_line(tmp_path, monkeypatch):
    monkeypatch.setenv("TORCH_HOME", str(tmp_path))

    def no_network(url, dst, *args, **kwargs):
        raise urllib.error.URLError("[Errno -2] Name or service not known")

    monkeypatch.setattr(torch.hub, "download_url_to_file", no_network)
    start = time.perf_counter()
    with pytest.raises(WeightsUnavailableError) as info:
        build_model(model_cfg(pretrained=True), 102)
    assert time.perf_counter() - start < 10
    message = str(info.value)
    assert "\n" not in message and info.value.__suppress_context__
    assert "model.weights_path" in message
    assert str(tmp_path / "hub" / "checkpoints" / IMAGENET_FILE) in message


def test_pretrained_needs_width_64_rgb_and_the_imagenet_architecture():
    with pytest.raises(ConfigError, match="width 64"):
        build_model(model_cfg(width=16, pretrained=True), 102)
    with pytest.raises(ConfigError, match="3 input channels"):
        build_model(model_cfg(pretrained=True), 10, in_channels=1)
    with pytest.raises(ConfigError, match="not available for resnet18_cifar"):
        build_model(model_cfg("resnet18_cifar", pretrained=True), 10)


def test_works_with_the_real_model_config():
    config = pytest.importorskip("trainables.config")
    cfg = config.ModelConfig(name="resnet18_cifar", width=8)
    assert build_model(cfg, 10, 1).fc.out_features == 10
