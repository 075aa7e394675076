"""From a config as written to a trial that can run: the step above `trainables.config` and the
registries.

`TrialConfig` checks shapes only (types, ranges, the shared sections). This module looks the
names up in the registries: the method in `METHODS` (its own section validated with the
method's model, its cross-field rules applied by `Method.validate`, the fields it would ignore
found), the dataset in `DATASETS` (and whether it reads the optional data fields set) and the
model (and whether it has a width). It imports the registries and `trainables.config`;
`trainables.config` imports none of them, so parsing never goes round in a cycle.

    parse_trial_config(raw)      a dict -> a resolved TrialConfig, or one-line ConfigError
    load_trial_config(path)      the same from a YAML file with dotted overrides
    check_written_fields(raw)    one layer of a sweep (base, experiment, grid value) as written
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from pydantic import BaseModel, ValidationError

from trainables.config import (
    MOVED_KEYS,
    SectionError,
    TrialConfig,
    apply_overrides,
    did_you_mean,
    format_validation_error,
    moved_key_message,
    read_yaml,
    set_fields,
    validate_section,
)
from trainables.config.written import check_layer_fields
from trainables.datasets import DATASETS, OPTIONAL_FIELDS, dataset_defaults
from trainables.errors import ConfigError
from trainables.methods import METHODS, Method
from trainables.models import model_entry


def method_named(name: str) -> Method:
    """The registered method `name`; SectionError naming the field otherwise."""
    try:
        return METHODS.get(name)
    except ConfigError as error:
        raise SectionError(f"config field 'method': {error}") from None


def _named(path: str, check: Any, name: str) -> None:
    """`check(name)`; SectionError naming the field `path` if it refuses the name."""
    try:
        check(name)
    except ConfigError as error:
        message = str(error)
        raise SectionError(f"config field {path!r}: {message[:1].lower()}{message[1:]}") from None


def check_data_and_model(config: TrialConfig) -> None:
    """The dataset and the model `config` names are registered and read the options it sets;
    SectionError (the whole one line) otherwise."""
    data, model = config.data, config.model
    _named("data.name", DATASETS.check, data.name)
    options = dataset_defaults(data.name).options
    for option in OPTIONAL_FIELDS:
        if getattr(data, option) is not None and option not in options:
            readers = [n for n in DATASETS.names() if option in dataset_defaults(n).options]
            raise SectionError(f"config field 'data': data.{option} does not apply to dataset "
                               f"{data.name!r}; it applies to " + ", ".join(readers))
    _named("model.name", model_entry, model.name)
    if model.width is not None and model_entry(model.name).standard_width is None:
        raise SectionError(f"config field 'model': model.width does not apply to {model.name}; "
                           "leave it unset")


def resolve(config: TrialConfig) -> TrialConfig:
    """`config` with its names looked up, its method's section validated (or defaulted) and the
    method's rules applied; SectionError (the whole one line) if a name, a key, the section or
    a rule is wrong."""
    method = method_named(config.method)
    check_data_and_model(config)
    sections: dict[str, BaseModel] = {}
    for key, value in (config.model_extra or {}).items():
        if key in MOVED_KEYS:
            raise SectionError(moved_key_message(key))
        if key not in METHODS:
            allowed = [*TrialConfig.model_fields, config.method]
            raise SectionError(f"unknown config key {key!r}{did_you_mean(key, allowed)}; "
                               f"allowed here: {', '.join(allowed)}")
        if key != config.method:
            raise SectionError(f"config section {key!r} configures method {key}, but this "
                               f"trial's method is {config.method}")
        if method.section is None:
            raise SectionError(f"method {key} has no settings section {key!r}")
        sections[key] = validate_section(method.section, value, key)
    if method.section is not None and config.method not in sections:
        sections[config.method] = method.section()
    resolved = config.model_copy(update=sections) if sections else config
    method.validate(resolved)
    return resolved


def parse_trial_config(
    raw: dict[str, Any], source: str = "config", check_ignored: bool = True
) -> TrialConfig:
    """Validate and resolve a nested dict into a TrialConfig; ConfigError (one line) if it is
    invalid.

    With `check_ignored` (user input), a field the method would ignore is refused too; configs
    that run_sweep already resolved (every default written out) are parsed without it.
    """
    if not isinstance(raw, dict):
        kind = type(raw).__name__
        raise ConfigError(f"{source}: expected a mapping of config fields, got {kind}")
    try:
        config = resolve(TrialConfig.model_validate(raw))
    except ValidationError as error:
        raise ConfigError(f"{source}: {format_validation_error(error)}") from None
    except SectionError as error:
        raise ConfigError(f"{source}: {error}") from None
    if check_ignored:
        ignored = ignored_fields(config)
        if ignored:
            raise ConfigError(f"{source}: {ignored_field_message(config, ignored[0])}")
    return config


def load_trial_config(path: str | Path, overrides: list[str] | None = None) -> TrialConfig:
    """Load one trial's YAML config with optional dotted overrides, validated and resolved."""
    raw = apply_overrides(read_yaml(path), overrides or [])
    return parse_trial_config(raw, source=str(path))


def ignored_fields(config: TrialConfig) -> list[str]:
    """Fields set in the shared pruning sections or the method's own section that the method
    does not read (`Method.reads`), in path order."""
    written = set_fields(config.prune, "prune.") + set_fields(config.dense_model, "dense_model.")
    if config.settings is not None:
        written += set_fields(config.settings, f"{config.method}.")
    reads = METHODS.get(config.method).reads(config)
    return [path for path in written if not _covered(path, reads)]


def _covered(path: str, reads: set[str]) -> bool:
    return path in reads or any(
        pattern.endswith(".*") and path.startswith(pattern[:-1]) for pattern in reads
    )


def ignored_field_message(config: TrialConfig, path: str) -> str:
    """One line: `path` is set but `config`'s method does not read it."""
    method = METHODS.get(config.method)
    return f"{path} is ignored by method {config.method}{method.mode_note(config)}; remove it"


def check_written_fields(raw: Any, source: str) -> None:
    """Check every value written in one layer of a config (a sweep's base, an experiment, a grid
    value, an override) on its own: type, range and registry name of each field, unknown keys.

    Cross-field rules need the composed trial and are checked there; a value that a later layer
    replaces is still checked here, so no layer can hide an invalid value.
    """
    check_layer_fields(raw, source, _section_model)
    # The names written in this layer, each on its own (the composed trial checks the rest).
    data, model = raw.get("data"), raw.get("model")
    checks = [(method_named, raw.get("method")),
              (lambda name: _named("data.name", DATASETS.check, name),
               data.get("name") if isinstance(data, dict) else None),
              (lambda name: _named("model.name", model_entry, name),
               model.get("name") if isinstance(model, dict) else None)]
    for check, name in checks:
        if isinstance(name, str):
            try:
                check(name)
            except SectionError as error:
                raise ConfigError(f"{source}: {error}") from None


def _section_model(key: str, source: str) -> type[BaseModel] | None:
    """The settings model of the method section `key` (None: a method without one)."""
    if key in MOVED_KEYS:
        raise ConfigError(f"{source}: {moved_key_message(key)}")
    if key not in METHODS:
        allowed = [*TrialConfig.model_fields, *METHODS.names()]
        raise ConfigError(f"{source}: unknown config key {key!r}{did_you_mean(key, allowed)}; "
                          f"allowed here: {', '.join(allowed)}")
    return METHODS.get(key).section
