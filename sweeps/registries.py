"""Every registry a config or sweep file names entries of, by the kind its entries are called
(`Registry.kind`): what `prunetune list` prints and the configuration reference lists beside
each field that names one (`trainables.config.names_in`)."""

from __future__ import annotations

from typing import Any

from pruning import ALLOCATIONS, CHANNEL_ALLOCATIONS, CRITERIA, SCORERS, Registry
from sweeps.controls import CONTROLS
from sweeps.loggers import LOGGERS
from trainables.datasets import DATASETS
from trainables.methods import METHODS
from trainables.models import MODELS, model_families


def registries() -> dict[str, Registry[Any]]:
    """Kind -> registry, in the order people look for them."""
    found = [METHODS, DATASETS, MODELS, SCORERS, ALLOCATIONS, CRITERIA, CHANNEL_ALLOCATIONS,
             CONTROLS, LOGGERS]
    return {registry.kind: registry for registry in found}


def plural(kind: str) -> str:
    """How a heading names the entries of `kind`: "methods", "channel criteria"."""
    return kind[: -len("criterion")] + "criteria" if kind.endswith("criterion") else kind + "s"


def registered_names(kind: str) -> list[str]:
    """The names registered for `kind` (models: with their families, e.g. torchvision:<name>)."""
    names = registries()[kind].names()
    if kind == "model":
        names += [f"{prefix}<name>" for prefix in model_families()]
    return names
