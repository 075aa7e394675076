"""One trial's configuration: typed, validated pydantic models loaded from YAML.

Every field has a default, so an empty file is a valid (dense, digits) run. Unknown keys, wrong
types, out-of-range values and unknown registry names are refused at load time with a
`ConfigError` whose one line names the field path and what would be accepted.
"""

from __future__ import annotations

import copy
import difflib
from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from trainables.errors import ConfigError


class _Section(BaseModel):
    # strict: a YAML string "5" is not an int; extra="forbid": a typo is an error, not a no-op.
    model_config = ConfigDict(extra="forbid", strict=True, frozen=True)


class DataConfig(_Section):
    name: str = Field("digits", description="registered dataset: digits, flowers102, synthetic")
    root: str = Field("data", description="dataset root (Flowers102 lives in <root>/flowers-102)")
    image_size: int | None = Field(
        None, ge=8, le=1024, description="model input size in px; None = the dataset's default"
    )
    download: bool = Field(True, description="download the dataset when it is absent")
    split_seed: int = Field(0, ge=0, description="seed of the train/val/test split (digits)")
    augment: bool = Field(True, description="random-resized-crop (+ flip) on training batches")
    crop_scale_min: float | None = Field(
        None, gt=0, le=1, description="smallest crop area fraction; None = dataset default"
    )
    hflip: bool | None = Field(None, description="random horizontal flips; None = dataset default")
    cache_dir: str | None = Field(
        None, description="on-disk cache of decoded images; None = <root>/.prunetune_cache"
    )

    @field_validator("name")
    @classmethod
    def _registered_dataset(cls, name: str) -> str:
        from trainables.datasets import DATASETS

        return _check_registered(name, DATASETS.names(), "dataset")


class ModelConfig(_Section):
    name: str = Field("resnet18_cifar", description="registered model: resnet18, resnet18_cifar")
    width: int = Field(64, ge=1, le=1024, description="base width (64 = standard ResNet-18)")
    pretrained: bool = Field(False, description="start from torchvision's ImageNet weights")
    weights_path: str | None = Field(
        None, description="local state dict to start from instead of downloading weights"
    )

    @field_validator("name")
    @classmethod
    def _registered_model(cls, name: str) -> str:
        from trainables.models import MODELS

        return _check_registered(name, MODELS.names(), "model")


class TrainConfig(_Section):
    epochs: int = Field(20, ge=1, description="training epochs (dense phase; retraining default)")
    batch_size: int = Field(64, ge=1, le=65536)
    eval_batch_size: int = Field(512, ge=1, le=65536)
    optimizer: Literal["sgd", "adamw"] = "sgd"
    lr: float = Field(0.05, gt=0, le=10)
    momentum: float = Field(0.9, ge=0, lt=1)
    nesterov: bool = False
    weight_decay: float = Field(5e-4, ge=0, lt=1)
    lr_schedule: Literal["cosine", "step", "constant"] = "cosine"
    warmup_epochs: int = Field(0, ge=0, description="linear LR warm-up epochs")
    lr_milestones: list[int] = Field(
        default_factory=list, description="epochs where the step schedule decays"
    )
    lr_gamma: float = Field(0.1, gt=0, le=1, description="decay factor of the step schedule")
    label_smoothing: float = Field(0.0, ge=0, lt=1)
    grad_clip: float | None = Field(None, gt=0, description="clip the gradient norm to this")
    max_batches: int | None = Field(
        None, ge=1, description="cap on training batches per epoch (smoke runs)"
    )
    max_eval_batches: int | None = Field(
        None, ge=1, description="cap on evaluation batches per split (smoke runs only: "
        "accuracies are then measured on a subset)"
    )
    device: Literal["auto", "cpu", "cuda"] = Field(
        "auto", description="auto = the GPU Ray assigned to the trial, else the CPU"
    )
    amp: Literal["auto", "off", "bf16", "fp16"] = Field(
        "auto", description="mixed precision; auto = bf16 on CUDA, off on the CPU"
    )
    channels_last: bool | None = Field(None, description="None = on for CUDA, off on the CPU")
    compile: bool = Field(False, description="torch.compile the model")
    bn_l1: float = Field(
        0.0, ge=0, lt=1, description="network slimming's L1 penalty on BatchNorm scales "
        "(Liu et al. 2017, e.g. 1e-4), added to the loss of every training phase; 0 = off"
    )

    @model_validator(mode="after")
    def _milestones_inside_training(self) -> TrainConfig:
        for milestone in self.lr_milestones:
            if not 0 < milestone < self.epochs:
                raise ValueError(
                    f"lr_milestones entry {milestone} is outside 1..{self.epochs - 1} (epochs)"
                )
        if self.warmup_epochs >= self.epochs:
            raise ValueError(f"warmup_epochs must be < epochs ({self.epochs})")
        return self


class PruneConfig(_Section):
    """What every pruning method shares: what is prunable, how far, and the sanity controls.

    Which of these a method reads is the method's business (`Method.reads`); a field set for a
    method that ignores it is refused, not dropped.
    """

    target_sparsity: float = Field(
        0.8, ge=0, lt=1, description="final pruned fraction of the prunable weights"
    )
    allocation: Literal["global", "layerwise", "erk", "lamp"] | None = Field(
        None, description="how the sparsity is spread over layers; None = the method's default"
    )
    exclude_first_conv: bool = Field(False, description="never prune the first convolution")
    exclude_classifier: bool = Field(False, description="never prune the final linear layer")
    mask_control: Literal["none", "layerwise_shuffle"] = Field(
        "none", description="layerwise_shuffle keeps each layer's count, shuffles positions"
    )
    reinit: bool = Field(False, description="keep the mask, draw fresh weights")
    pattern: str | None = Field(
        None, description="N:M semi-structured masks, e.g. '2:4' (keep N of every M consecutive "
        "weights); replaces target_sparsity and allocation; None = unstructured"
    )

    @field_validator("pattern", mode="before")
    @classmethod
    def _n_of_m(cls, pattern: Any) -> Any:
        if isinstance(pattern, int) and not isinstance(pattern, bool):
            # YAML 1.1 reads an unquoted 2:4 as the base-60 number 124.
            raise ValueError(f"write the pattern quoted, e.g. '2:4' (YAML read it as {pattern})")
        if isinstance(pattern, str):
            from pruning.nm import parse_pattern

            try:
                parsed = parse_pattern(pattern)
            except ValueError:
                parsed = None
            if parsed is None or parsed.n == parsed.m:
                raise ValueError(f"expected 'N:M' with 1 <= N < M, e.g. '2:4' (got {pattern!r})")
            return str(parsed)
        return pattern


class MeasureConfig(_Section):
    """What each round measures of its network's cost besides the parameter counts: FLOPs (an
    exact count) and latency (timed on the trial's device). Not part of the dense recipe."""

    enabled: bool = Field(True, description="count FLOPs and time latency after every round")
    batch_sizes: list[int] = Field(
        default_factory=lambda: [1, 64], min_length=1, description="latency batch sizes"
    )
    budget_s: float = Field(
        0.05, ge=0, le=60, description="seconds of timed passes per batch size (after warmup "
        "and at least min_repeats)"
    )
    warmup: int = Field(1, ge=0, le=100, description="untimed passes per batch size")
    min_repeats: int = Field(3, ge=1, le=1000, description="fewest timed passes per batch size")
    max_repeats: int = Field(30, ge=1, le=10000, description="most timed passes per batch size")

    @field_validator("batch_sizes")
    @classmethod
    def _positive_distinct(cls, sizes: list[int]) -> list[int]:
        if any(size < 1 or size > 4096 for size in sizes) or len(set(sizes)) != len(sizes):
            raise ValueError(f"batch_sizes must be distinct integers in 1..4096 (got {sizes})")
        return sizes

    @model_validator(mode="after")
    def _repeats_ordered(self) -> MeasureConfig:
        if self.max_repeats < self.min_repeats:
            raise ValueError(
                f"max_repeats ({self.max_repeats}) must be >= min_repeats ({self.min_repeats})"
            )
        return self


class DenseModelConfig(_Section):
    """The dense model that methods starting from a trained network (dense, IMP, gmp from
    dense) share: where it comes from and which of its training epochs are kept for rewinding."""

    checkpoint: str | None = Field(
        None, description="a dense trial's checkpoint dir to start from instead of training"
    )
    cache: str | None = Field(
        None,
        description="directory of dense models shared by the trials of one seed and recipe "
        "(run_sweep sets it); None = each trial trains its own",
    )
    keep_epochs: list[int] = Field(
        default_factory=list,
        description="epochs K whose weights the dense run keeps for rewinding (`epoch:K`), "
        "besides the initial ones; run_sweep sets the union over a recipe's trials",
    )

    @field_validator("keep_epochs")
    @classmethod
    def _positive_sorted(cls, epochs: list[int]) -> list[int]:
        if any(epoch < 1 for epoch in epochs):
            raise ValueError("keep_epochs entries must be >= 1 (epoch 0 is the initial weights)")
        return sorted(set(epochs))


class MethodSection(_Section):
    """Base class of a method's own settings, found under the key named after the method."""


class SectionError(ValueError):
    """A problem found while validating a method section or the trial as a whole; its message
    is already the complete one line (field path included)."""


# Spellings that existed before methods owned their settings, and what replaced them.
MOVED_KEYS = {
    "prune.scorer": "the scorer is the method now: write method: {scorer_method}",
    "prune.score_batches": "moved to snip.score_batches (or grasp.score_batches)",
    "prune.synflow_iterations": "moved to synflow.iterations",
    "imp.dense_checkpoint": "moved to dense_model.checkpoint",
    "dense_cache": "moved to dense_model.cache",
}


_SCORER_METHODS = {"snip": "snip", "grasp": "grasp", "synflow": "synflow", "random": "random",
                   "magnitude": "magnitude_init"}


def moved_key_message(path: str, value: Any = None) -> str:
    """One line for a key of an old spelling, saying what to write instead."""
    method = _SCORER_METHODS.get(value) if isinstance(value, str) else None
    scorer_method = method or "snip, grasp, synflow, random or magnitude_init"
    return f"config key {path!r} was renamed: " + MOVED_KEYS[path].format(
        scorer_method=scorer_method)


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
    measure: MeasureConfig = MeasureConfig()

    @field_validator("method")
    @classmethod
    def _registered_method(cls, method: str) -> str:
        return _check_registered(method, _methods().names(), "method")

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


def _check_registered(name: str, allowed: list[str], kind: str) -> str:
    if name not in allowed:
        raise ValueError(
            f"unknown {kind} {name!r}{did_you_mean(name, allowed)}; allowed: " + ", ".join(allowed)
        )
    return name


def did_you_mean(word: str, candidates: list[str]) -> str:
    close = difflib.get_close_matches(word, candidates, n=1)
    return f" (did you mean {close[0]!r}?)" if close else ""


def fields_at(model: type[BaseModel], path: tuple[Any, ...]) -> list[str]:
    """The field names of the section that `path` points into (for did-you-mean)."""
    for key in path:
        field = model.model_fields.get(str(key))
        if field is None or not (
            isinstance(field.annotation, type) and issubclass(field.annotation, BaseModel)
        ):
            return []
        model = field.annotation
    return list(model.model_fields)


def format_validation_error(
    error: ValidationError, model: type[BaseModel] = TrialConfig, prefix: str = ""
) -> str:
    """One line for the first problem in `error`, naming its dotted field path."""
    return format_error_detail(error.errors()[0], model, prefix)


def format_error_detail(
    first: dict[str, Any], model: type[BaseModel] = TrialConfig, prefix: str = ""
) -> str:
    """One line for one entry of `ValidationError.errors()`."""
    cause = (first.get("ctx") or {}).get("error")
    if isinstance(cause, SectionError):
        return str(cause)
    loc = tuple(first["loc"])
    path = prefix + ".".join(str(part) for part in loc) if loc else prefix.rstrip(".")
    if first["type"] == "extra_forbidden" and path in MOVED_KEYS:
        return moved_key_message(path, first.get("input"))
    if first["type"] == "extra_forbidden":
        allowed = fields_at(model, loc[:-1])
        hint = did_you_mean(str(loc[-1]), allowed)
        return f"unknown config key {path!r}{hint}; allowed here: {', '.join(allowed)}"
    message = first["msg"].removeprefix("Value error, ")
    message = message[:1].lower() + message[1:]
    where = f"config field {path!r}" if path else "config"
    if first["type"] in ("value_error", "assertion_error") or "input" not in first:
        return f"{where}: {message}"
    return f"{where}: {message} (got {first['input']!r})"


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


def read_yaml(path: str | Path) -> dict[str, Any]:
    """Read a YAML mapping with safe_load; ConfigError for a missing, malformed or non-map file."""
    path = Path(path)
    try:
        text = path.read_text()
    except OSError as error:
        raise ConfigError(f"{path}: cannot read config file ({error.strerror})") from None
    try:
        data = yaml.safe_load(text)
    except yaml.YAMLError as error:
        mark = getattr(error, "problem_mark", None)
        where = f" at line {mark.line + 1}, column {mark.column + 1}" if mark else ""
        problem = getattr(error, "problem", None) or "malformed YAML"
        raise ConfigError(f"{path}: malformed YAML{where}: {problem}") from None
    if data is None:
        return {}
    if not isinstance(data, dict):
        raise ConfigError(f"{path}: expected a mapping of config fields at the top level")
    return data


def apply_overrides(raw: dict[str, Any], overrides: list[str]) -> dict[str, Any]:
    """Return a copy of `raw` with `key.path=value` overrides set (values parsed as YAML)."""
    result = copy.deepcopy(raw)
    for override in overrides:
        key, sep, text = override.partition("=")
        if not sep or not key.strip():
            raise ConfigError(f"override {override!r}: expected key.path=value")
        try:
            value = yaml.safe_load(text)
        except yaml.YAMLError:
            raise ConfigError(f"override {override!r}: value is not valid YAML") from None
        parts = key.strip().split(".")
        node = result
        for depth, part in enumerate(parts[:-1]):
            child = node.setdefault(part, {})
            if not isinstance(child, dict):
                where = ".".join(parts[: depth + 1])
                raise ConfigError(f"override {override!r}: {where!r} is a value, not a section")
            node = child
        node[parts[-1]] = value
    return result


def load_trial_config(path: str | Path, overrides: list[str] | None = None) -> TrialConfig:
    """Load one trial's YAML config with optional dotted overrides, validated."""
    raw = apply_overrides(read_yaml(path), overrides or [])
    return parse_trial_config(raw, source=str(path))
