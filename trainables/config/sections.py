"""The shared sections of a trial config: data, model, training, pruning, the dense model; and the
base class of a method's own section.

Every field has a default, so an empty file is a valid (dense, digits) run. Sections are strict
(a YAML string "5" is not an int) and refuse unknown keys.
"""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from trainables.config.messages import check_registered


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

        return check_registered(name, DATASETS.names(), "dataset")


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

        return check_registered(name, MODELS.names(), "model")


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


