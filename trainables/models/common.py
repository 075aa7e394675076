"""The model registry, `build_model` and the rules every model shares.

A model is one module in this package that registers a `ModelEntry` with `register_model(name,
...)`; a family of names (`torchvision:<name>`) registers a function from the suffix to an entry
with `register_family(prefix, ...)`. Initialisation draws from torch's global RNG: the caller
seeds it before `build_model`, which makes construction deterministic.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from torch import nn

from pruning.registry import Registry, did_you_mean
from trainables.errors import ConfigError
from trainables.models.weights import hub_state_dict, load_trunk_weights, local_state_dict


@dataclass(frozen=True)
class ModelEntry:
    """How to build one model and where its ImageNet weights come from.

    `build(cfg, num_classes, in_channels)` returns the freshly initialised model on the CPU.
    `imagenet_weights(cfg)` returns the torchvision WeightsEnum entry `model.pretrained` loads
    (None: the model has none). `standard_width` is what `model.width: null` means (None: the
    model has no width option). `dropped_weights` are key prefixes of the ImageNet file that
    the built model does not have (auxiliary classifiers), left out when loading it.
    """

    build: Callable[[Any, int, int], nn.Module]
    imagenet_weights: Callable[[Any], Any] | None = None
    standard_width: int | None = None
    dropped_weights: tuple[str, ...] = ()


MODELS: Registry[ModelEntry] = Registry("model", error=ConfigError)
_FAMILIES: dict[str, Callable[[str], ModelEntry]] = {}


def register_model(name: str, **entry: Any) -> Callable[[Callable], Callable]:
    """Decorator: register `build(cfg, num_classes, in_channels)` as model `name`."""

    def add(build: Callable[[Any, int, int], nn.Module]) -> Callable[[Any, int, int], nn.Module]:
        MODELS.register(name)(ModelEntry(build, **entry))
        return build

    return add


def register_family(prefix: str, entry_for: Callable[[str], ModelEntry]) -> None:
    """Register every name `<prefix><suffix>`; `entry_for(suffix)` raises ConfigError for an
    unknown suffix."""
    _FAMILIES[prefix] = entry_for


def model_families() -> list[str]:
    """The prefixes registered with `register_family` (`torchvision:`)."""
    return sorted(_FAMILIES)


def model_entry(name: str) -> ModelEntry:
    """The entry of model `name`; ConfigError naming what is allowed otherwise."""
    for prefix, entry_for in _FAMILIES.items():
        if name.startswith(prefix):
            return entry_for(name[len(prefix):])
    if name not in MODELS:
        families = [f"{prefix}<name>" for prefix in _FAMILIES]
        raise ConfigError(
            f"unknown model {name!r}{did_you_mean(name, MODELS.names())}; allowed: "
            + ", ".join(MODELS.names() + families)
        )
    return MODELS.get(name)


def check_model_name(name: str) -> None:
    """ConfigError (one line) unless `name` is a registered model or family member."""
    model_entry(name)


def resolved_width(cfg: Any, entry: ModelEntry) -> int | None:
    """`model.width`, or the model's standard width where it is None."""
    width = getattr(cfg, "width", None)
    if width is not None and entry.standard_width is None:
        raise ConfigError(f"model.width does not apply to {cfg.name}; leave it unset")
    return entry.standard_width if width is None else width


def _check_pretrained(cfg: Any, entry: ModelEntry, in_channels: int) -> None:
    if entry.imagenet_weights is None:
        raise ConfigError(
            f"model.pretrained is not available for {cfg.name} (no ImageNet weights); "
            "it is for resnet18 and torchvision:<name>"
        )
    width = resolved_width(cfg, entry)
    if width != entry.standard_width:
        raise ConfigError(
            f"model.pretrained needs model.width {entry.standard_width} (ImageNet weights), "
            f"got {width}"
        )
    if in_channels != 3:
        raise ConfigError(
            f"model.pretrained needs 3 input channels (ImageNet weights); "
            f"the dataset has {in_channels}"
        )


def _starting_state(cfg: Any, entry: ModelEntry) -> tuple[dict, str] | None:
    weights_path = getattr(cfg, "weights_path", None)
    if weights_path:
        return local_state_dict(weights_path), str(weights_path)
    if getattr(cfg, "pretrained", False):
        weights = entry.imagenet_weights(cfg)
        state = hub_state_dict(weights, cfg.name)
        state = {k: v for k, v in state.items() if not k.startswith(entry.dropped_weights)}
        return state, f"torchvision {type(weights).__name__}.{weights.name}"
    return None


def build_model(cfg: Any, num_classes: int, in_channels: int = 3) -> nn.Module:
    """The model `cfg.name` (a ModelConfig or any object with its attributes), on the CPU.

    `cfg.weights_path` loads a local state dict (every key strictly, except a head of another
    class count, which stays fresh); otherwise `cfg.pretrained` loads torchvision's ImageNet
    weights (torch hub cache, honouring TORCH_HOME) with the head replaced likewise.
    """
    if num_classes < 1:
        raise ValueError(f"num_classes must be >= 1, got {num_classes}")
    entry = model_entry(cfg.name)
    resolved_width(cfg, entry)  # ConfigError for a width on a model without one
    if getattr(cfg, "pretrained", False):
        _check_pretrained(cfg, entry, in_channels)
    model = entry.build(cfg, num_classes, in_channels)
    start = _starting_state(cfg, entry)
    if start is not None:
        load_trunk_weights(model, start[0], start[1], num_classes)
    return model


def check_weights_available(cfg: Any) -> None:
    """Raise WeightsUnavailableError now, not inside a trial, if the starting weights a model
    config asks for cannot be loaded (downloading them into the torch hub cache if needed)."""
    _starting_state(cfg, model_entry(cfg.name))


def count_parameters(model: nn.Module) -> int:
    """All parameters (weights, biases, BatchNorm affine), trainable or not; no buffers."""
    return sum(p.numel() for p in model.parameters())
