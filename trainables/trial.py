"""Assembling one trial: config, device, data and model in, the method run on them."""

from __future__ import annotations

from typing import Any

import torch

import pruning
from trainables import random_streams
from trainables.config import TrialConfig
from trainables.datasets import ImageSplits, load_dataset
from trainables.methods import METHODS
from trainables.methods.context import TrialContext, build_network
from trainables.plugins import Plugin, import_plugins, load_installed_plugins
from trainables.ranks import SOLO, Ranks
from trainables.recipe import recipe_hash
from trainables.reporting import CheckpointCadence, Reporter, TrialLog
from trainables.resolve import parse_trial_config
from trainables.runtime import GpuGrant, resolve_runtime
from trainables.trial_data import TrialData


def run_trial(
    config: TrialConfig,
    reporter: Reporter,
    splits: ImageSplits | None = None,
    cpus: float | None = None,
    grant: GpuGrant | None = None,
    ranks: Ranks = SOLO,
    device_index: int = 0,
) -> None:
    """Run (or continue, from the reporter's latest checkpoint) one trial of `config.method`:
    seed, load data, build the model on the trial's device, find where to resume, run.

    `cpus` and `grant` are what Ray reserved for the trial (None: run in-process, on what this
    machine has); `ranks` and `device_index` place a data-parallel worker
    (trainables/data_parallel.py)."""
    runtime = resolve_runtime(config.train, cpus, grant, ranks, device_index)
    print(runtime.describe(), flush=True)
    splits = splits if splits is not None else load_dataset(config.data)
    random_streams.seed_initialisation(config.seed)
    model = build_network(config, splits)
    if ranks.parallel and config.train.sync_bn:
        # Batch statistics over the global batch rather than each rank's part of it.
        model = torch.nn.SyncBatchNorm.convert_sync_batchnorm(model)
    model = model.to(runtime.device)
    if runtime.channels_last:
        model = model.to(memory_format=torch.channels_last)
    prunable = pruning.prunable_parameter_names(
        model, config.prune.exclude_first_conv, config.prune.exclude_classifier
    )
    log = TrialLog(reporter, CheckpointCadence(agree=ranks.from_main) if ranks.parallel else None)
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


def prepare_trial(raw: dict[str, Any], methods: dict[str, Any] | None,
                  plugins: list[Plugin] | None) -> TrialConfig:
    """The trial's config, parsed after its plug-ins and the driver's methods are known here."""
    load_installed_plugins()
    import_plugins(plugins or [])
    for name, method in (methods or {}).items():
        if name not in METHODS:
            METHODS.register(name)(method)
    # Already validated (ignored fields included) by the planner, which wrote every default out.
    return parse_trial_config(raw, source="trial config", check_ignored=False)
