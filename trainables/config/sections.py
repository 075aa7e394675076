"""The shared sections of a trial config: data, model, training, pruning, the dense model; and the
base class of a method's own section.

Every field has a default, so an empty file is a valid (dense, digits) run. Sections are strict
(a YAML string "5" is not an int) and refuse unknown keys.
"""

from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from trainables.identity import BATCHES, EXECUTION

# Fields marked EXECUTION or BATCHES are left out of some identities (trial key, dense recipe
# hash, decoded data); unmarked fields decide the result. See trainables/identity.py.


REGISTRY_KEY = "registry"


def names_in(kind: str) -> dict[str, str]:
    """`json_schema_extra` of a field whose value names an entry of the registry of `kind`
    ("dataset", "allocation", ...): the registry checks it (`trainables.resolve`, or the
    section's validator) and the configuration reference lists what is registered, so no list
    of names is copied here."""
    return {REGISTRY_KEY: kind}


class _Section(BaseModel):
    # strict: a YAML string "5" is not an int; extra="forbid": a typo is an error, not a no-op.
    model_config = ConfigDict(extra="forbid", strict=True, frozen=True)


class DataConfig(_Section):
    """The dataset, its split, how it is fed and how training batches are augmented."""

    name: str = Field("digits", description="the dataset", json_schema_extra=names_in("dataset"))
    root: str = Field(
        "data",
        description="dataset root: holds flowers-102/, cifar-10-batches-py/, cifar-100-python/ "
        "or ImageNet's train/ + val/; for imagefolder, the tree itself",
        json_schema_extra=EXECUTION,
    )
    image_size: int | None = Field(
        None, ge=8, le=1024, description="model input size in px; None = the dataset's default"
    )
    download: bool = Field(
        True, description="download the dataset when it is absent",
        json_schema_extra=EXECUTION,
    )
    split_seed: int = Field(
        0, ge=0, description="seed of the train/val/test split or validation hold-out"
    )
    val_size: int | float | None = Field(
        None, gt=0, description="validation hold-out from the training set: a count, or a "
        "fraction < 1; None = the dataset's default",
    )
    split_fractions: list[float] | None = Field(
        None, description="train/val/test fractions of a single imagefolder tree "
        "(default [0.8, 0.1, 0.1])",
    )
    storage: Literal["auto", "memory", "stream"] | None = Field(
        None, description="image-file datasets: decode once into memory, or stream from disk "
        "every epoch; None/auto = memory when the decoded images need at most 8 GiB",
        json_schema_extra=EXECUTION,
    )
    workers: int | None = Field(
        None, ge=0, le=256, description="DataLoader workers decoding a streamed dataset; None = "
        "resources.cpu - 1 (per data-parallel worker; set, workers + 1 must fit in resources.cpu)",
        json_schema_extra=EXECUTION,
    )
    prefetch: int | None = Field(
        None, ge=1, le=64, description="batches each streaming worker keeps ready (2)",
        json_schema_extra=EXECUTION,
    )
    augment: bool = Field(
        True, description="random crop (+ flip) on training batches",
        json_schema_extra=BATCHES,
    )
    crop: Literal["random_resized", "padded"] | None = Field(
        None, description="random_resized (RandomResizedCrop) or padded (pad, then random "
        "crop: the CIFAR standard); None = dataset default", json_schema_extra=BATCHES,
    )
    crop_padding: int | None = Field(
        None, ge=0, le=64, description="padding of the padded crop in px (4)",
        json_schema_extra=BATCHES,
    )
    crop_scale_min: float | None = Field(
        None, gt=0, le=1, description="smallest crop area fraction; None = dataset default",
        json_schema_extra=BATCHES,
    )
    hflip: bool | None = Field(
        None, description="random horizontal flips; None = dataset default",
        json_schema_extra=BATCHES,
    )
    cache_dir: str | None = Field(
        None, description="on-disk cache of decoded images; None = <root>/.prunetune_cache",
        json_schema_extra=EXECUTION,
    )

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
    def _val_size_fraction_below_one(self) -> DataConfig:
        # Which dataset reads which option is `trainables.resolve`'s to check (the registry).
        if isinstance(self.val_size, float) and self.val_size >= 1:
            raise ValueError(f"val_size {self.val_size} is a fraction >= 1; use a count or < 1")
        return self


class ModelConfig(_Section):
    """The network: a registered model or `torchvision:<name>`, its width and start weights."""

    name: str = Field(
        "resnet18_cifar", description="the model, or a family member such as "
        "torchvision:resnet50", json_schema_extra=names_in("model"),
    )
    width: int | None = Field(
        None, ge=1, le=1024, description="base width; None = the model's standard (ResNet-18 "
        "and VGG 64, CIFAR ResNets 16); torchvision models have none",
    )
    pretrained: bool = Field(
        False, description="start from the model's ImageNet weights (where it has them)"
    )
    weights_path: str | None = Field(
        None, description="local state dict to start from instead of downloading weights"
    )


class TrainConfig(_Section):
    """The training recipe of every phase: optimiser, schedule, precision, device."""

    epochs: int = Field(20, ge=1, description="training epochs (dense phase; retraining default)")
    batch_size: int = Field(64, ge=1, le=65536, description="training batch size: the global "
                            "batch, split evenly across a trial's data-parallel workers")
    eval_batch_size: int = Field(512, ge=1, le=65536, description="evaluation batch size",
                                 json_schema_extra=EXECUTION)
    optimizer: Literal["sgd", "adamw"] = Field("sgd", description="SGD or AdamW")
    lr: float = Field(0.05, gt=0, le=10, description="peak learning rate")
    momentum: float = Field(0.9, ge=0, lt=1, description="SGD momentum (AdamW ignores it)")
    nesterov: bool = Field(False, description="Nesterov momentum (SGD)")
    weight_decay: float = Field(5e-4, ge=0, lt=1, description="weight decay (AdamW: decoupled)")
    lr_schedule: Literal["cosine", "step", "constant"] = Field(
        "cosine", description="cosine decay, step decay at lr_milestones, or constant"
    )
    warmup_epochs: int = Field(0, ge=0, description="linear LR warm-up epochs")
    lr_milestones: list[int] = Field(
        default_factory=list, description="epochs where the step schedule decays"
    )
    lr_gamma: float = Field(0.1, gt=0, le=1, description="decay factor of the step schedule")
    label_smoothing: float = Field(0.0, ge=0, lt=1, description="label smoothing of the loss")
    grad_clip: float | None = Field(None, gt=0, description="clip the gradient norm to this")
    max_batches: int | None = Field(
        None, ge=1, description="cap on training batches per epoch (smoke runs)"
    )
    max_eval_batches: int | None = Field(
        None, ge=1, description="cap on evaluation batches per split (smoke runs only: "
        "accuracies are then measured on a subset)"
    )
    device: Literal["auto", "cpu", "cuda"] = Field(
        "auto", description="auto = the GPU Ray assigned to the trial, else the CPU",
        json_schema_extra=EXECUTION,
    )
    amp: Literal["auto", "off", "bf16", "fp16"] = Field(
        "auto", description="mixed precision; auto = bf16 on GPUs of compute capability >= 8.0"
        ", fp16 (with loss scaling) on older ones, off on the CPU"
    )
    tf32: bool = Field(
        True, description="CUDA: TF32 tensor cores for fp32 matmuls and convolutions (Ampere+; "
        "false = IEEE fp32 throughout)"
    )
    channels_last: bool | None = Field(None, description="None = on for CUDA, off on the CPU")
    sync_bn: bool = Field(
        False, description="data-parallel trials (resources.workers > 1): BatchNorm statistics "
        "over the global batch (SyncBatchNorm) instead of each worker's part of it")
    compile: bool = Field(
        False, description="torch.compile the training forward (once per network shape, with "
        "as many compile workers as the trial has CPUs)", json_schema_extra=EXECUTION,
    )
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
    allocation: str | None = Field(
        None, description="how the sparsity is spread over layers; None = the method's default",
        json_schema_extra=names_in("allocation"),
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
        "(run_sweep sets it); None = each trial trains its own", json_schema_extra=EXECUTION,
    )
    keep_epochs: list[int] = Field(
        default_factory=list,
        description="epochs K whose weights the dense run keeps for rewinding (`epoch:K`), "
        "besides the initial ones; run_sweep sets the union over a recipe's trials",
        json_schema_extra=EXECUTION,
    )

    @field_validator("keep_epochs")
    @classmethod
    def _positive_sorted(cls, epochs: list[int]) -> list[int]:
        if any(epoch < 1 for epoch in epochs):
            raise ValueError("keep_epochs entries must be >= 1 (epoch 0 is the initial weights)")
        return sorted(set(epochs))


class MethodSection(_Section):
    """Base class of a method's own settings, found under the key named after the method."""


