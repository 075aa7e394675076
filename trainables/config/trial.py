"""One trial's configuration: the shared sections, and the chosen method's own section kept as
written until `trainables.resolve` validates it with the method's model."""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from trainables.config.messages import SectionError, format_validation_error
from trainables.config.sections import (
    DataConfig,
    DenseModelConfig,
    MeasureConfig,
    MethodSection,
    ModelConfig,
    PruneConfig,
    TrainConfig,
    names_in,
)
from trainables.identity import EXECUTION


class TrialConfig(BaseModel):
    """One trial. Besides the shared sections below, the chosen method's own settings live under
    a key named after it (`imp: {...}`, `gmp: {...}`), validated by the method's section model;
    an absent section means the method's defaults.

    This model checks shapes only: `method`, `data.name` and `model.name` are any strings here
    and a method section any value. `trainables.resolve.parse_trial_config` looks the names up
    and validates the method's section; use it, not `model_validate`, to read a config."""

    # extra="allow" only admits method sections: `trainables.resolve` refuses anything else.
    model_config = ConfigDict(extra="allow", strict=True, frozen=True)

    method: str = Field("dense", description="the pruning method",
                        json_schema_extra=names_in("method"))
    seed: int = Field(0, ge=0, description="seeds initialisation, batch order and augmentation")
    data: DataConfig = DataConfig()
    model: ModelConfig = ModelConfig()
    train: TrainConfig = TrainConfig()
    prune: PruneConfig = PruneConfig()
    dense_model: DenseModelConfig = DenseModelConfig()
    # What each round measures of its cost: how a result is reported, not what it is.
    measure: MeasureConfig = Field(MeasureConfig(), json_schema_extra=EXECUTION)

    @property
    def settings(self) -> MethodSection | None:
        """The chosen method's own section (None for a method without one); set by
        `trainables.resolve`, which validates it with the method's model."""
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
