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
from sweeps.controls import CONTROLS
from sweeps.loggers import LOGGERS
from sweeps.registries import registries
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
    kinds = registries()
    expected = {"method": METHODS, "dataset": DATASETS, "model": MODELS, "scorer": SCORERS,
                "channel criterion": CRITERIA, "allocation": ALLOCATIONS,
                "channel allocation": CHANNEL_ALLOCATIONS, "control": CONTROLS, "logger": LOGGERS}
    assert kinds == expected
    for kind, registry in kinds.items():
        assert isinstance(registry, Registry) and registry.kind == kind
    assert {"erk", "global", "lamp", "layerwise"} <= set(ALLOCATIONS.names())
    assert {"global", "uniform"} <= set(CHANNEL_ALLOCATIONS.names())
    assert LOGGERS.names() == ["csv", "mlflow", "ray_tensorboard", "tensorboard", "wandb"]


def test_every_config_field_that_names_an_entry_says_which_registry() -> None:
    """The configuration reference lists each such field's registered names from the registry,
    and no field copies the names into a Literal (where a plug-in's could not be chosen)."""
    import typing

    from pydantic import BaseModel

    from sweeps.spec import SweepSpec
    from trainables.config import TrialConfig
    from trainables.config.sections import REGISTRY_KEY

    marked: dict[str, str] = {}
    literals: dict[str, tuple] = {}

    def walk(model: type[BaseModel], prefix: str) -> None:
        for name, info in model.model_fields.items():
            extra = info.json_schema_extra
            if isinstance(extra, dict) and REGISTRY_KEY in extra:
                marked[prefix + name] = extra[REGISTRY_KEY]
            annotation = info.annotation
            for argument in (annotation, *typing.get_args(annotation)):
                if typing.get_origin(argument) is typing.Literal:
                    literals[prefix + name] = typing.get_args(argument)
            if isinstance(annotation, type) and issubclass(annotation, BaseModel):
                walk(annotation, f"{prefix}{name}.")

    walk(SweepSpec, "sweep.")
    walk(TrialConfig, "")
    for method in METHODS.names():
        if METHODS.get(method).section is not None:
            walk(METHODS.get(method).section, f"{method}.")
    assert marked == {
        "sweep.controls": "control", "sweep.loggers": "logger", "method": "method",
        "data.name": "dataset", "model.name": "model", "prune.allocation": "allocation",
        "channels.criterion": "channel criterion", "channels.allocation": "channel allocation",
        "prune_at_init.scorer": "scorer"}
    # A Literal whose values are all names of one registry is a copy of it.
    copies = {field: values for field, values in literals.items()
              if any(set(values) <= set(registry.names()) for registry in registries().values())}
    assert copies == {}


def test_unknown_allocations_name_the_closest() -> None:
    scores = {"w": torch.arange(10.0)}
    mask = {"w": torch.ones(10, dtype=torch.bool)}
    hint = re.escape("unknown allocation 'lamb' (did you mean 'lamp'?)")
    with pytest.raises(ValueError, match=hint):
        prune_to_sparsity(scores, mask, 0.5, "lamb")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="unknown channel allocation 'unifrom'.*'uniform'"):
        channels_to_keep({"g": torch.arange(4.0)}, 0.5, "unifrom")  # type: ignore[arg-type]
