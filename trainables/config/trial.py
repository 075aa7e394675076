"""One trial's configuration: the shared sections plus the chosen method's own section, validated,
and the fields a method would ignore."""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from trainables.config.messages import (
    MOVED_KEYS,
    SectionError,
    did_you_mean,
    format_validation_error,
    moved_key_message,
)
from trainables.config.sections import (
    DataConfig,
    DenseModelConfig,
    MeasureConfig,
    ModelConfig,
    PruneConfig,
    TrainConfig,
)
from trainables.errors import ConfigError
from trainables.identity import EXECUTION


def _methods() -> Any:
    from trainables.methods import METHODS

    return METHODS


class TrialConfig(BaseModel):
    """One trial. Besides the shared sections below, the chosen method's own settings live under
    a key named after it (`imp: {...}`, `gmp: {...}`), validated by the method's section model;
    an absent section means the method's defaults."""

    # extra="allow" only admits method sections: `_method_section` refuses anything else.
    model_config = ConfigDict(extra="allow", strict=True, frozen=True)

    method: str = Field("dense", description="registered pruning method (see trainables/methods)")
    seed: int = Field(0, ge=0, description="seeds initialisation, batch order and augmentation")
    data: DataConfig = DataConfig()
    model: ModelConfig = ModelConfig()
    train: TrainConfig = TrainConfig()
    prune: PruneConfig = PruneConfig()
    dense_model: DenseModelConfig = DenseModelConfig()
    # What each round measures of its cost: how a result is reported, not what it is.
    measure: MeasureConfig = Field(MeasureConfig(), json_schema_extra=EXECUTION)

    @field_validator("method")
    @classmethod
    def _registered_method(cls, method: str) -> str:
        return _methods().check(method)

    @model_validator(mode="after")
    def _method_section(self) -> TrialConfig:
        methods = _methods()
        method = methods.get(self.method)
        extra = self.__pydantic_extra__
        for key in list(extra):
            if key in MOVED_KEYS:
                raise SectionError(moved_key_message(key))
            if key not in methods:
                allowed = [*type(self).model_fields, self.method]
                raise SectionError(
                    f"unknown config key {key!r}{did_you_mean(key, allowed)}; "
                    f"allowed here: {', '.join(allowed)}"
                )
            if key != self.method:
                raise SectionError(
                    f"config section {key!r} configures method {key}, but this trial's method "
                    f"is {self.method}"
                )
            if method.section is None:
                raise SectionError(f"method {key} has no settings section {key!r}")
            extra[key] = validate_section(method.section, extra[key], key)
        if method.section is not None and self.method not in extra:
            extra[self.method] = method.section()
        method.validate(self)
        return self

    @property
    def settings(self) -> Any:
        """The chosen method's own section (None for a method without one)."""
        return (self.__pydantic_extra__ or {}).get(self.method)


def validate_section(section: type[BaseModel], value: Any, key: str) -> BaseModel:
    """`value` validated as the method section `key`; SectionError naming `key.field` if bad."""
    if isinstance(value, section):
        return value
    if not isinstance(value, dict):
        raise SectionError(
            f"config field {key!r}: expected a mapping of {key} settings (got {value!r})"
        )
    try:
        return section.model_validate(value)
    except ValidationError as error:
        raise SectionError(format_validation_error(error, section, prefix=f"{key}.")) from None


def set_fields(section: BaseModel, prefix: str) -> list[str]:
    """Dotted paths of the fields explicitly set in `section` (recursively), as written."""
    paths = []
    for name in sorted(section.model_fields_set):
        value = getattr(section, name)
        if isinstance(value, BaseModel):
            paths += set_fields(value, f"{prefix}{name}.")
        else:
            paths.append(f"{prefix}{name}")
    return paths


def ignored_fields(config: TrialConfig) -> list[str]:
    """Fields set in the shared pruning sections or the method's own section that the method
    does not read (`Method.reads`), in path order."""
    method = _methods().get(config.method)
    written = set_fields(config.prune, "prune.") + set_fields(config.dense_model, "dense_model.")
    if config.settings is not None:
        written += set_fields(config.settings, f"{config.method}.")
    reads = method.reads(config)
    return [path for path in written if not _covered(path, reads)]


def _covered(path: str, reads: set[str]) -> bool:
    return path in reads or any(
        pattern.endswith(".*") and path.startswith(pattern[:-1]) for pattern in reads
    )


def ignored_field_message(config: TrialConfig, path: str) -> str:
    """One line: `path` is set but `config`'s method does not read it."""
    method = _methods().get(config.method)
    return f"{path} is ignored by method {config.method}{method.mode_note(config)}; remove it"


def parse_trial_config(
    raw: dict[str, Any], source: str = "config", check_ignored: bool = True
) -> TrialConfig:
    """Validate a nested dict into a TrialConfig; ConfigError (one line) if it is invalid.

    With `check_ignored` (user input), a field the method would ignore is refused too; configs
    that run_sweep already resolved (every default written out) are parsed without it.
    """
    if not isinstance(raw, dict):
        kind = type(raw).__name__
        raise ConfigError(f"{source}: expected a mapping of config fields, got {kind}")
    try:
        config = TrialConfig.model_validate(raw)
    except ValidationError as error:
        raise ConfigError(f"{source}: {format_validation_error(error)}") from None
    if check_ignored:
        ignored = ignored_fields(config)
        if ignored:
            raise ConfigError(f"{source}: {ignored_field_message(config, ignored[0])}")
    return config


