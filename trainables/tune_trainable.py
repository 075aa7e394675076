"""The Ray Tune function trainable: one trial's config dict in, rows and checkpoints out."""

from __future__ import annotations

from typing import Any

from trainables.config import DataConfig, parse_trial_config
from trainables.datasets import ImageSplits
from trainables.methods import run_trial
from trainables.reporting import TuneReporter


def dataset_key(data: DataConfig) -> str:
    """Identity of the decoded uint8 cache: trials with equal keys can share one copy."""
    return f"{data.name}|{data.root}|{data.image_size}|{data.split_seed}"


def prunetune_trainable(
    config: dict[str, Any], datasets: dict[str, ImageSplits] | None = None
) -> None:
    """Run one trial inside Ray Tune.

    `datasets` (passed with `tune.with_parameters`, so it travels through the object store once
    per node) maps `dataset_key` to decoded splits; trials whose data is not in it decode their
    own copy.
    """
    from ray import tune

    trial_config = parse_trial_config(config, source="trial config")
    resources = tune.get_context().get_trial_resources()
    cpus = resources.required_resources.get("CPU") if resources is not None else None
    splits = (datasets or {}).get(dataset_key(trial_config.data))
    run_trial(trial_config, TuneReporter(), splits, cpus)
