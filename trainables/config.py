"""One trial's configuration: typed, validated pydantic models loaded from YAML.

Every field has a default, so an empty file is a valid (dense, digits) run. Unknown keys, wrong
types, out-of-range values and unknown registry names are refused at load time with a
`ConfigError` whose one line names the field path and what would be accepted.
"""

from __future__ import annotations

import copy
import difflib
import re
from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from trainables.errors import ConfigError

METHODS = ("dense", "imp", "snip")
_REWIND_PATTERN = re.compile(r"^(init|none|epoch:\d+)$")


class _Section(BaseModel):
    # strict: a YAML string "5" is not an int; extra="forbid": a typo is an error, not a no-op.
    model_config = ConfigDict(extra="forbid", strict=True, frozen=True)


class DataConfig(_Section):
    name: str = Field(
        "digits",
        description="registered dataset: digits, synthetic, flowers102, cifar10, cifar100, "
        "imagefolder, imagenet",
    )
    root: str = Field(
        "data",
        description="dataset root: holds flowers-102/, cifar-10-batches-py/, cifar-100-python/ "
        "or ImageNet's train/ + val/; for imagefolder, the tree itself",
    )
    image_size: int | None = Field(
        None, ge=8, le=1024, description="model input size in px; None = the dataset's default"
    )
    download: bool = Field(True, description="download the dataset when it is absent")
    split_seed: int = Field(
        0, ge=0, description="seed of the train/val/test split or validation hold-out"
    )
    val_size: int | float | None = Field(
        None, gt=0, description="validation hold-out from the training set: a count, or a "
        "fraction < 1 (cifar10/100: 5000, imagenet: 10000, imagefolder without val/: 0.1)",
    )
    split_fractions: list[float] | None = Field(
        None, description="train/val/test fractions of a single imagefolder tree "
        "(default [0.8, 0.1, 0.1])",
    )
    storage: Literal["auto", "memory", "stream"] | None = Field(
        None, description="image-file datasets: decode once into memory, or stream from disk "
        "every epoch; None/auto = memory when the decoded images need at most 8 GiB",
    )
    workers: int | None = Field(
        None, ge=0, le=256, description="DataLoader workers decoding a streamed dataset (4)"
    )
    prefetch: int | None = Field(
        None, ge=1, le=64, description="batches each streaming worker keeps ready (2)"
    )
    augment: bool = Field(True, description="random crop (+ flip) on training batches")
    crop: Literal["random_resized", "padded"] | None = Field(
        None, description="random_resized (RandomResizedCrop) or padded (pad, then random "
        "crop: the CIFAR standard); None = dataset default",
    )
    crop_padding: int | None = Field(
        None, ge=0, le=64, description="padding of the padded crop in px (4)"
    )
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

    @field_validator("split_fractions")
    @classmethod
    def _three_fractions(cls, fractions: list[float] | None) -> list[float] | None:
        if fractions is not None and (
            len(fractions) != 3 or min(fractions) < 0 or abs(sum(fractions) - 1) > 1e-9
        ):
            raise ValueError(
                f"split_fractions must be three fractions [train, val, test] summing to 1, "
                f"got {fractions}"
            )
        return fractions

    @model_validator(mode="after")
    def _options_the_dataset_reads(self) -> DataConfig:
        from trainables.datasets import DATASETS, OPTIONAL_FIELDS, dataset_defaults

        options = dataset_defaults(self.name).options
        for option in OPTIONAL_FIELDS:
            if getattr(self, option) is not None and option not in options:
                readers = [n for n in DATASETS.names() if option in dataset_defaults(n).options]
                raise ValueError(
                    f"data.{option} does not apply to dataset {self.name!r}; it applies to "
                    + ", ".join(readers)
                )
        if isinstance(self.val_size, float) and self.val_size >= 1:
            raise ValueError(f"val_size {self.val_size} is a fraction >= 1; use a count or < 1")
        return self


class ModelConfig(_Section):
    name: str = Field(
        "resnet18_cifar",
        description="registered model (resnet18, resnet18_cifar, resnet20, resnet32, resnet56, "
        "vgg16_bn, vgg19_bn) or torchvision:<classifier>, e.g. torchvision:resnet50",
    )
    width: int | None = Field(
        None, ge=1, le=1024, description="base width; None = the model's standard (ResNet-18 "
        "and VGG 64, CIFAR ResNets 16); torchvision models have none",
    )
    pretrained: bool = Field(
        False, description="start from torchvision's ImageNet weights (resnet18, torchvision:*)"
    )
    weights_path: str | None = Field(
        None, description="local state dict to start from instead of downloading weights"
    )

    @field_validator("name")
    @classmethod
    def _registered_model(cls, name: str) -> str:
        from trainables.models import check_model_name

        check_model_name(name)
        return name

    @model_validator(mode="after")
    def _width_the_model_has(self) -> ModelConfig:
        from trainables.models import model_entry

        if self.width is not None and model_entry(self.name).standard_width is None:
            raise ValueError(f"model.width does not apply to {self.name}; leave it unset")
        return self


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
    target_sparsity: float = Field(
        0.8, ge=0, lt=1, description="pruned fraction of the prunable weights (snip, one-shot)"
    )
    scorer: str = Field(
        "snip", description="score of the snip trainable: snip, random, magnitude, grasp, synflow"
    )
    allocation: Literal["global", "layerwise", "erk"] = "global"
    exclude_first_conv: bool = Field(False, description="never prune the first convolution")
    exclude_classifier: bool = Field(False, description="never prune the final linear layer")
    score_batches: int = Field(1, ge=1, description="training batches SNIP/GraSP score on")
    synflow_iterations: int = Field(100, ge=1)
    mask_control: Literal["none", "layerwise_shuffle"] = Field(
        "none", description="layerwise_shuffle keeps each layer's count, shuffles positions"
    )
    reinit: bool = Field(False, description="keep the mask, draw fresh weights")

    @field_validator("scorer")
    @classmethod
    def _registered_scorer(cls, scorer: str) -> str:
        from pruning import SCORERS

        return _check_registered(scorer, sorted(SCORERS), "scorer")


class ImpConfig(_Section):
    schedule: Literal["iterative", "oneshot"] = Field(
        "iterative", description="iterative rounds at `rate`, or one-shot to target_sparsity"
    )
    rounds: int = Field(5, ge=1, le=100, description="pruning rounds (iterative)")
    rate: float = Field(0.2, gt=0, lt=1, description="fraction of remaining weights per round")
    rewind: str = Field("init", description="reset after pruning: init, epoch:K, or none")
    lr_rewind: bool = Field(True, description="restart the LR schedule when rewind is none")
    retrain_epochs: int | None = Field(
        None, ge=1, description="epochs per retraining round; None = train.epochs"
    )
    dense_checkpoint: str | None = Field(
        None, description="a dense trial's checkpoint dir to start from instead of training"
    )

    @field_validator("rewind")
    @classmethod
    def _rewind_spelling(cls, rewind: str) -> str:
        if not _REWIND_PATTERN.match(rewind):
            raise ValueError(f"rewind {rewind!r} is not one of: init, none, epoch:K (K >= 0)")
        return rewind

    @property
    def rewind_epoch(self) -> int | None:
        """K of `epoch:K`; 0 for `init`; None for `none`."""
        if self.rewind == "none":
            return None
        return 0 if self.rewind == "init" else int(self.rewind.split(":")[1])


class TrialConfig(_Section):
    method: Literal["dense", "imp", "snip"] = "dense"
    seed: int = Field(0, ge=0, description="seeds initialisation, batch order and augmentation")
    data: DataConfig = DataConfig()
    model: ModelConfig = ModelConfig()
    train: TrainConfig = TrainConfig()
    prune: PruneConfig = PruneConfig()
    imp: ImpConfig = ImpConfig()
    dense_cache: str | None = Field(
        None,
        description="directory of dense checkpoints shared by trials of the same seed and "
        "recipe (run_sweep sets it); None = every IMP trial trains its own dense model",
    )

    @model_validator(mode="after")
    def _rewind_inside_dense_run(self) -> TrialConfig:
        epoch = self.imp.rewind_epoch
        limit = min(self.train.epochs, self.imp.retrain_epochs or self.train.epochs)
        if self.method == "imp" and epoch is not None and epoch >= limit:
            raise ValueError(
                f"imp.rewind epoch:{epoch} must be below train.epochs and imp.retrain_epochs "
                f"({limit})"
            )
        return self


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
    first = error.errors()[0]
    loc = tuple(first["loc"])
    path = prefix + ".".join(str(part) for part in loc) if loc else prefix.rstrip(".")
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


def parse_trial_config(raw: dict[str, Any], source: str = "config") -> TrialConfig:
    """Validate a nested dict into a TrialConfig; ConfigError (one line) if it is invalid."""
    if not isinstance(raw, dict):
        kind = type(raw).__name__
        raise ConfigError(f"{source}: expected a mapping of config fields, got {kind}")
    try:
        return TrialConfig.model_validate(raw)
    except ValidationError as error:
        raise ConfigError(f"{source}: {format_validation_error(error)}") from None


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
