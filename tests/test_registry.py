"""Every named kind is one Registry: unknown names get a did-you-mean and the allowed names."""

from __future__ import annotations

import re

import pytest
import torch

from pruning import (
    ALLOCATIONS,
    CHANNEL_ALLOCATIONS,
    CRITERIA,
    SCORERS,
    Registry,
    channels_to_keep,
    prune_to_sparsity,
)
from sweeps.loggers import LOGGERS
from trainables.datasets import DATASETS
from trainables.errors import ConfigError
from trainables.methods import METHODS
from trainables.models import MODELS


def test_registry_gets_checks_and_refuses_with_the_closest_name() -> None:
    colours: Registry[int] = Registry("colour")
    colours.add("red", 1)
    colours.register("green")(2)
    assert colours.get("green") == 2 and colours.check("red") == "red"
    assert colours.names() == ["green", "red"] and "red" in colours and len(colours) == 2
    with pytest.raises(ValueError, match=re.escape(
            "unknown colour 'gren' (did you mean 'green'?); allowed: green, red")):
        colours.get("gren")
    with pytest.raises(ValueError, match=re.escape("unknown colour 'blue'; allowed: green, red")):
        colours.check("blue")
    with pytest.raises(ValueError, match="registered twice"):
        colours.add("red", 3)
    assert colours.unregister("red") == 1 and colours.names() == ["green"]


def test_a_registry_raises_the_error_kind_it_was_given() -> None:
    strict: Registry[int] = Registry("thing", error=ConfigError)
    with pytest.raises(ConfigError, match="unknown thing 'x'"):
        strict.get("x")
    with pytest.raises(ValueError, match="unknown thing 7"):  # not a string: no hint, no crash
        strict.get(7)  # type: ignore[arg-type]


def test_every_named_kind_is_a_registry() -> None:
    kinds = {
        "method": METHODS, "dataset": DATASETS, "model": MODELS, "scorer": SCORERS,
        "channel criterion": CRITERIA, "allocation": ALLOCATIONS,
        "channel allocation": CHANNEL_ALLOCATIONS, "logger": LOGGERS,
    }
    for kind, registry in kinds.items():
        assert isinstance(registry, Registry) and registry.kind == kind
    assert ALLOCATIONS.names() == ["erk", "global", "lamp", "layerwise"]
    assert CHANNEL_ALLOCATIONS.names() == ["global", "uniform"]
    assert LOGGERS.names() == ["csv", "mlflow", "tensorboard", "wandb"]


def test_unknown_allocations_name_the_closest() -> None:
    scores = {"w": torch.arange(10.0)}
    mask = {"w": torch.ones(10, dtype=torch.bool)}
    hint = re.escape("unknown allocation 'lamb' (did you mean 'lamp'?)")
    with pytest.raises(ValueError, match=hint):
        prune_to_sparsity(scores, mask, 0.5, "lamb")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="unknown channel allocation 'unifrom'.*'uniform'"):
        channels_to_keep({"g": torch.arange(4.0)}, 0.5, "unifrom")  # type: ignore[arg-type]
