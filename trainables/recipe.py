"""The identity of a dense training run, computed from its config alone (no torch).

Two trials with the same recipe hash train bit-identical dense models on the CPU, so one may
start from the other's dense model (the shared dense cache, `dense_model.checkpoint`).
"""

from __future__ import annotations

import hashlib
import json

from trainables.config import TrialConfig


def recipe_hash(config: TrialConfig) -> str:
    """Hash of everything that determines the dense weights: seed, data, model, training recipe
    and what is prunable (it decides the dense run's parameter counts). Not the method."""
    recipe = {
        "seed": config.seed,
        "data": config.data.model_dump(exclude={"root", "cache_dir", "download"}),
        "model": config.model.model_dump(),
        "train": config.train.model_dump(exclude={"device", "compile", "eval_batch_size"}),
        "prunable": [config.prune.exclude_first_conv, config.prune.exclude_classifier],
    }
    text = json.dumps(recipe, sort_keys=True)
    return hashlib.sha256(text.encode()).hexdigest()[:16]
