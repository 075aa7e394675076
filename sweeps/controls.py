"""The controls a sweep file switches on with `controls: [...]`, as extra trials.

`budget_matched_dense`: for each experiment that trains longer than dense (IMP and channels:
a dense round, then retraining every round), a `budget_dense` trial per seed that trains the
unpruned network from scratch for that experiment's total epochs (`Method.training_epochs`),
with the experiment's own data, model and training recipe. Reviewers ask for it because part
of what looks like pruning helping can be the extra training.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from pruning.registry import Registry
from trainables.config import TrialConfig
from trainables.errors import ConfigError
from trainables.methods import METHODS
from trainables.methods.base import PRUNABLE_FIELDS

Control = Callable[[TrialConfig, str], dict[str, Any] | None]
"""`control(config, label)`: the raw trial that controls `config` (of the line `label`), or
None where it needs none."""
CONTROLS: Registry[Control] = Registry("control", error=ConfigError)
#: The sections a dense trial shares with the trial it controls; the method's own, `prune` (but
#: what is prunable) and `dense_model` stay at their defaults.
SHARED_SECTIONS = ("seed", "data", "model", "train", "measure")


@CONTROLS.register("budget_matched_dense")
def budget_matched_dense(config: TrialConfig, label: str) -> dict[str, Any] | None:
    """The raw budget_dense trial controlling `config` (an experiment labelled `label`), or
    None when `config` trains no longer than dense does."""
    epochs = METHODS.get(config.method).training_epochs(config)
    if epochs <= config.train.epochs:
        return None
    written = config.model_dump(mode="json")
    raw = {key: written[key] for key in SHARED_SECTIONS}
    raw["train"] = {**raw["train"], "epochs": epochs}
    raw["prune"] = {field.split(".")[1]: written["prune"][field.split(".")[1]]
                    for field in sorted(PRUNABLE_FIELDS)}
    raw.update(method="budget_dense", budget_dense={"of": label})
    return raw
