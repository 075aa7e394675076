"""Assembling one trial: config, device, data and model in, the method run on them."""

from __future__ import annotations

import torch

import pruning
from trainables import random_streams
from trainables.config import TrialConfig
from trainables.datasets import ImageSplits, load_dataset
from trainables.methods import METHODS
from trainables.methods.context import TrialContext, build_network
from trainables.recipe import recipe_hash
from trainables.reporting import Reporter, TrialLog
from trainables.runtime import GpuGrant, resolve_runtime
from trainables.trial_data import TrialData


def run_trial(
    config: TrialConfig,
    reporter: Reporter,
    splits: ImageSplits | None = None,
    cpus: float | None = None,
    grant: GpuGrant | None = None,
) -> None:
    """Run (or continue, from the reporter's latest checkpoint) one trial of `config.method`:
    seed, load data, build the model on the trial's device, find where to resume, run.

    `cpus` and `grant` are what Ray reserved for the trial (None: run in-process, on what this
    machine has)."""
    runtime = resolve_runtime(config.train, cpus, grant)
    print(runtime.describe(), flush=True)
    splits = splits if splits is not None else load_dataset(config.data)
    random_streams.seed_initialisation(config.seed)
    model = build_network(config, splits).to(runtime.device)
    if runtime.channels_last:
        model = model.to(memory_format=torch.channels_last)
    prunable = pruning.prunable_parameter_names(
        model, config.prune.exclude_first_conv, config.prune.exclude_classifier
    )
    log = TrialLog(reporter)
    context = TrialContext(
        config=config,
        method=METHODS.get(config.method),
        runtime=runtime,
        data=TrialData.build(splits, config, runtime),
        model=model,
        prunable=prunable,
        log=log,
        recipe=recipe_hash(config),
        resume=log.latest_state(),
        dense_numel={name: parameter.numel() for name, parameter in model.named_parameters()},
    )
    context.method.run(context)
