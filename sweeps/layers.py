"""How one trial of a sweep is composed from layers, and the rules that keep every layer honest.

A trial is, in order: the sweep's `base`, its experiment's `config`, the grid point (the sweep's
`grid` and the experiment's own), then the command line's `--set`, then `--smoke`.

Rules (tests pin each one):

1. Every value written in the file is checked where it is written, even when a later layer
   replaces it: a bad value is a bug in the file, and no layer may hide it. The message names
   the layer.
2. The file as written must expand into valid trials before `--set` and `--smoke` are applied;
   then the trials are validated again with them.
3. A field the trial's method ignores (`Method.reads`) is refused, naming the layer, when the
   experiment's config, a grid axis, or `--smoke` sets it. `base` and `--set` apply to every
   experiment, so there such a field is dropped for the trials whose method ignores it, and
   refused only if no trial of the sweep reads it.
"""

from __future__ import annotations

import copy
import json
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

from trainables.config import TrialConfig, apply_overrides
from trainables.errors import ConfigError
from trainables.resolve import (
    check_written_fields,
    ignored_field_message,
    ignored_fields,
    parse_trial_config,
)

SHARED_LAYERS = ("base", "--set")
"""Layers that apply to every experiment: fields there that a method ignores are dropped."""


@dataclass
class Layer:
    name: str
    values: dict[str, Any]


@dataclass
class SharedFieldUse:
    """Which fields of the shared layers some trial reads, to refuse those that none reads."""

    set_fields: dict[str, str] = field(default_factory=dict)  # path -> layer
    read: set[str] = field(default_factory=set)

    def check(self, source: str) -> None:
        for path, layer in self.set_fields.items():
            if path not in self.read:
                raise ConfigError(
                    f"{source}: {layer} sets {path}, which no trial of the sweep reads (every "
                    "method in it ignores it); remove it"
                )


def nested(key: str, value: Any) -> dict[str, Any]:
    """`{"a": {"b": value}}` for the dotted key `a.b`."""
    return apply_overrides({}, [f"{key}={json.dumps(value)}"])


def overrides_layer(overrides: list[str]) -> dict[str, Any]:
    return apply_overrides({}, overrides)


def check_layer(layer: Layer, source: str) -> None:
    """Rule 1 for one layer."""
    check_written_fields(layer.values, f"{source}: {layer.name}")


def leaf_paths(values: dict[str, Any], prefix: str = "") -> Iterator[str]:
    for key, value in values.items():
        if isinstance(value, dict) and value:
            yield from leaf_paths(value, f"{prefix}{key}.")
        else:
            yield f"{prefix}{key}"


def _has(values: dict[str, Any], path: str) -> bool:
    node: Any = values
    for part in path.split("."):
        if not isinstance(node, dict) or part not in node:
            return False
        node = node[part]
    return True


def _remove(values: dict[str, Any], path: str) -> None:
    *parents, last = path.split(".")
    node = values
    for part in parents:
        node = node[part]
    del node[last]


def deep_merge(base: dict[str, Any], update: dict[str, Any]) -> dict[str, Any]:
    """`base` with `update` merged in, section by section (copies; neither input changes)."""
    merged = dict(base)
    for key, value in update.items():
        if isinstance(value, dict) and isinstance(merged.get(key), dict):
            merged[key] = deep_merge(merged[key], value)
        else:
            merged[key] = copy.deepcopy(value)
    return merged


def compose_trial(layers: list[Layer], context: str, use: SharedFieldUse) -> TrialConfig:
    """Merge `layers` into one trial and validate it under rules 2 and 3."""
    shared = [layer for layer in layers if layer.name in SHARED_LAYERS]
    for layer in shared:
        for path in leaf_paths(layer.values):
            use.set_fields.setdefault(path, layer.name)
    raw: dict[str, Any] = {}
    for layer in layers:
        raw = deep_merge(raw, layer.values)
    dropped = _drop_other_methods_sections(raw, layers)
    config = parse_trial_config(raw, source=context, check_ignored=False)
    ignored = ignored_fields(config)
    for path in ignored:
        if _setter(layers, path).name not in SHARED_LAYERS:
            raise ConfigError(
                f"{context}: {_setter(layers, path).name} sets "
                f"{ignored_field_message(config, path)}"
            )
        _remove(raw, path)
    if ignored:
        config = parse_trial_config(raw, source=context, check_ignored=True)
    dropped |= set(ignored)
    for layer in shared:
        use.read.update(
            path for path in leaf_paths(layer.values)
            if path not in dropped and path.split(".")[0] not in dropped
        )
    return config


def _setter(layers: list[Layer], path: str) -> Layer:
    """The last layer that sets `path` (the one whose value the trial has)."""
    return next(layer for layer in reversed(layers) if _has(layer.values, path))


def _drop_other_methods_sections(raw: dict[str, Any], layers: list[Layer]) -> set[str]:
    """Remove the sections of other methods that only shared layers set (a base `imp:` section
    does not concern the sweep's dense trials); returns their names."""
    from trainables.methods import METHODS

    method = raw.get("method", "dense")
    dropped = set()
    for key in [key for key in raw if key in METHODS and key != method]:
        if all(layer.name in SHARED_LAYERS for layer in layers if key in layer.values):
            del raw[key]
            dropped.add(key)
    return dropped
