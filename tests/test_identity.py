"""Identities come from the schema: each field's role, non-default values only."""

from __future__ import annotations

import json

from pydantic import Field, create_model

from trainables.config import TrialConfig
from trainables.config.sections import DataConfig, TrainConfig
from trainables.datasets import data_identity
from trainables.identity import EXECUTION, field_role, identity_values, trial_key
from trainables.recipe import recipe_hash
from trainables.resolve import parse_trial_config


def _config(**sections: dict) -> TrialConfig:
    return parse_trial_config({"method": "imp", **sections}, check_ignored=False)


def test_only_non_default_result_fields_are_in_an_identity() -> None:
    config = _config(train={"lr": 0.1, "device": "cpu", "eval_batch_size": 7},
                     data={"name": "flowers102", "workers": 3, "hflip": False},
                     imp={"rate": 0.5})
    assert identity_values(config) == {
        "method": "imp", "train": {"lr": 0.1}, "data": {"name": "flowers102", "hflip": False},
        "imp": {"rate": 0.5}}


def test_a_new_field_with_its_default_leaves_old_hashes_valid() -> None:
    """A copy of the schema with one more training field: configs that leave it at its default
    hash as before; setting it changes the hash."""
    base = _config(train={"lr": 0.1, "epochs": 3})
    extended = create_model("TrainConfig", __base__=TrainConfig,
                            ema_decay=(float, Field(0.0, description="a field added later")))
    same = base.model_copy(update={"train": extended(**base.train.model_dump())})
    moved = base.model_copy(update={"train": extended(**base.train.model_dump(), ema_decay=0.9)})
    assert recipe_hash(same) == recipe_hash(base)
    assert recipe_hash(moved) != recipe_hash(base)
    assert identity_values(same) == identity_values(base)
    assert identity_values(moved)["train"] == {"lr": 0.1, "epochs": 3, "ema_decay": 0.9}


def test_execution_fields_leave_the_recipe_and_the_trial_key_alone() -> None:
    base = _config(train={"epochs": 3}, data={"name": "flowers102"})
    fed_otherwise = _config(train={"epochs": 3, "device": "cpu", "compile": True},
                            data={"name": "flowers102", "workers": 2, "prefetch": 4,
                                  "storage": "memory", "root": "elsewhere", "download": False},
                            measure={"enabled": False})
    assert recipe_hash(fed_otherwise) == recipe_hash(base)
    assert trial_key(fed_otherwise) == trial_key(base)
    flowers = {"name": "flowers102"}
    for changed in (_config(train={"epochs": 4}, data=flowers),
                    _config(train={"epochs": 3}, data=flowers, seed=1),
                    _config(train={"epochs": 3}, data={**flowers, "crop_scale_min": 0.5}),
                    _config(train={"epochs": 3}, data=flowers, prune={"exclude_classifier": True})):
        assert recipe_hash(changed) != recipe_hash(base)
        assert trial_key(changed) != trial_key(base)
    # The pruning method is not part of the dense recipe, but it is the trial's.
    snip = parse_trial_config({"method": "snip", "train": {"epochs": 3}, "data": flowers},
                              check_ignored=False)
    assert recipe_hash(snip) == recipe_hash(base) and trial_key(snip) != trial_key(base)


def test_augmentation_shares_the_decoded_data_and_feeding_does_not() -> None:
    plain = DataConfig(name="flowers102")
    augmented = DataConfig(name="flowers102", hflip=False, crop_scale_min=0.5)
    assert data_identity(augmented) == data_identity(plain)
    for fed in (DataConfig(name="flowers102", storage="stream"),
                DataConfig(name="flowers102", workers=2),
                DataConfig(name="flowers102", split_seed=1)):
        assert data_identity(fed) != data_identity(plain)
    assert json.loads(data_identity(plain))["image_size"] > 0  # resolved, not None


def test_every_role_is_a_known_one() -> None:
    for section in (DataConfig, TrainConfig, TrialConfig):
        for name in section.model_fields:
            assert field_role(section, name) in {"result", "execution", "batches"}
    assert field_role(TrialConfig, "measure") == "execution" and EXECUTION["role"] == "execution"
