"""Checking one layer of a config as written (a sweep's base, an experiment, a grid value, an
override), field by field, before layers are composed."""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel, ValidationError

from trainables.config.messages import (
    MOVED_KEYS,
    did_you_mean,
    format_error_detail,
    moved_key_message,
)
from trainables.config.trial import TrialConfig, _methods
from trainables.errors import ConfigError


def check_written_fields(raw: Any, source: str) -> None:
    """Check every value written in one layer of a config (a sweep's base, an experiment, a grid
    value, an override) on its own: type, range and registry name of each field, unknown keys.

    Cross-field rules need the composed trial and are checked there; a value that a later layer
    replaces is still checked here, so no layer can hide an invalid value.
    """
    if not isinstance(raw, dict):
        kind = type(raw).__name__
        raise ConfigError(f"{source}: expected a mapping of config fields, got {kind}")
    _check_fields(raw, TrialConfig, "", source)


def _check_fields(raw: dict[str, Any], model: type[BaseModel], prefix: str, source: str) -> None:
    for key, value in raw.items():
        path = f"{prefix}{key}"
        field = model.model_fields.get(str(key))
        section = field.annotation if field is not None else None
        if field is None and model is TrialConfig:
            section = _section_model(str(key), source)
            if section is None:  # a method without settings: let the composed check say so
                continue
        if isinstance(section, type) and issubclass(section, BaseModel) and isinstance(value, dict):
            _check_fields(value, section, f"{path}.", source)
            continue
        try:
            model.model_validate({key: value})
        except ValidationError as error:
            # Errors located elsewhere come from cross-field rules evaluated against defaults;
            # the composed trial reports those.
            own = [e for e in error.errors() if tuple(e["loc"])[:1] == (key,)]
            if own:
                message = format_error_detail(own[0], model, prefix)
                raise ConfigError(f"{source}: {message}") from None


def _section_model(key: str, source: str) -> type[BaseModel] | None:
    methods = _methods()
    if key in MOVED_KEYS:
        raise ConfigError(f"{source}: {moved_key_message(key)}")
    if key not in methods:
        allowed = [*TrialConfig.model_fields, *methods.names()]
        raise ConfigError(
            f"{source}: unknown config key {key!r}{did_you_mean(key, allowed)}; "
            f"allowed here: {', '.join(allowed)}"
        )
    return methods.get(key).section


