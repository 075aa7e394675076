"""The identity of a dense training run, computed from its config alone (no torch).

Two trials with the same recipe hash train bit-identical dense models on the CPU, so one may
start from the other's dense model (the shared dense cache, `dense_model.checkpoint`).
"""

from __future__ import annotations

from trainables.config import TrialConfig
from trainables.identity import digest, identity_values


def recipe_hash(config: TrialConfig) -> str:
    """Hash of everything that determines the dense weights: seed, the data, model and training
    fields that decide the result (non-default values, see `trainables.identity`) and what is
    prunable (it decides the dense run's parameter counts). Not the method."""
    recipe = {
        "seed": config.seed,
        "data": identity_values(config.data),
        "model": identity_values(config.model),
        "train": identity_values(config.train),
        "prunable": [config.prune.exclude_first_conv, config.prune.exclude_classifier],
    }
    return digest(recipe)
