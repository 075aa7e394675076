"""Checking one layer of a config as written (a sweep's base, an experiment, a grid value, an
override), field by field, before layers are composed. Method sections are checked with the
model that `section_model` names for them (`trainables.resolve` passes the registry's)."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from pydantic import BaseModel, ValidationError

from trainables.config.messages import format_error_detail
from trainables.config.trial import TrialConfig
from trainables.errors import ConfigError

#: (key, source) -> the settings model of method section `key`, None for a method without one;
#: raises ConfigError for a key that is no method.
SectionModel = Callable[[str, str], "type[BaseModel] | None"]


def check_layer_fields(raw: Any, source: str, section_model: SectionModel) -> None:
    """Check every value written in one layer on its own: type and range of each field, unknown
    keys. Cross-field rules need the composed trial and are checked there."""
    if not isinstance(raw, dict):
        kind = type(raw).__name__
        raise ConfigError(f"{source}: expected a mapping of config fields, got {kind}")
    _check_fields(raw, TrialConfig, "", source, section_model)


def _check_fields(raw: dict[str, Any], model: type[BaseModel], prefix: str, source: str,
                  section_model: SectionModel) -> None:
    for key, value in raw.items():
        path = f"{prefix}{key}"
        field = model.model_fields.get(str(key))
        section = field.annotation if field is not None else None
        if field is None and model is TrialConfig:
            section = section_model(str(key), source)
            if section is None:  # a method without settings: let the composed check say so
                continue
        if isinstance(section, type) and issubclass(section, BaseModel) and isinstance(value, dict):
            _check_fields(value, section, f"{path}.", source, section_model)
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
