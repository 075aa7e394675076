"""The layers a trial is composed from (base, experiment config, grid, --set, --smoke) and the
rules of sweeps/layers.py: every layer is checked as written, the file before the command line,
and a field the method ignores is refused where it was written (dropped only from the layers that
apply to every experiment, as long as some trial reads it)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import yaml

from sweeps.plan import SMOKE_SETTINGS, plan_sweep
from trainables.errors import ConfigError
from trainables.methods import METHODS
from trainables.resolve import parse_trial_config

TINY = {"data": {"name": "digits"}, "model": {"name": "resnet18_cifar", "width": 4},
        "train": {"epochs": 6}}


def sweep(*experiments: dict[str, Any], **spec: Any) -> dict[str, Any]:
    base = spec.pop("base", {})
    return {"name": "layers", "base": {**TINY, **base}, "experiments": list(experiments), **spec}


def refused(raw: dict[str, Any], *words: str, **options: Any) -> str:
    with pytest.raises(ConfigError) as raised:
        plan_sweep(raw, "s.yaml", **options)
    message = str(raised.value)
    assert "\n" not in message
    for word in words:
        assert word in message, (word, message)
    return message


def smoke_fields() -> dict[str, str]:
    """Every field --smoke overrides, and a method that reads it."""
    fields = {path: "dense" for path in [*SMOKE_SETTINGS, "train.epochs"]}
    for name in METHODS.names():
        config = parse_trial_config({"method": name})
        for path in METHODS.get(name).smoke_overrides(config):
            fields[path] = name
    return fields


def test_the_smoke_fields_are_the_expected_ones():
    # Written out by hand, so that a new smoke override is noticed (and gets its test below).
    assert smoke_fields() == {
        "train.epochs": "dense", "train.max_batches": "dense", "train.max_eval_batches": "dense",
        "train.warmup_epochs": "dense", "train.lr_milestones": "dense",
        "imp.retrain_epochs": "imp", "channels.retrain_epochs": "channels",
        "snip.score_batches": "snip",
        "grasp.score_batches": "grasp", "synflow.iterations": "synflow",
        "rigl.update_interval": "rigl", "set.update_interval": "set",
    }


def _nested(path: str, value: Any) -> dict[str, Any]:
    section, field = path.split(".")
    return {section: {field: value}}


@pytest.mark.parametrize("value", [-3, "ten"])
@pytest.mark.parametrize("path", sorted(smoke_fields()))
def test_smoke_never_hides_an_invalid_value_in_the_file(path, value, tmp_path, capsys, monkeypatch):
    from sweeps import run_sweep

    method = smoke_fields()[path]
    config = {"method": method, **_nested(path, value)}
    file = tmp_path / "s.yaml"
    file.write_text(yaml.safe_dump(sweep({"config": config})))
    monkeypatch.setattr(run_sweep, "_start_ray", lambda *a, **k: pytest.fail("Ray started"))
    code = run_sweep.main([str(file), "--smoke", "--dry-run", "--storage", str(tmp_path)])
    err = capsys.readouterr().err
    assert code == 2, err
    assert "experiments[0].config" in err and f"'{path}'" in err, err


def test_smoke_refuses_a_rewind_point_beyond_training_instead_of_training_longer():
    raw = sweep({"config": {"method": "imp", "imp": {"rewind": "epoch:999"}}})
    refused(raw, "imp.rewind", "epoch:999", "below train.epochs", smoke=True)


def test_smoke_trains_just_long_enough_to_reach_the_rewind_point():
    raw = sweep({"config": {"method": "dense"}},
                {"config": {"method": "imp", "imp": {"rewind": "epoch:2"}}})
    trials = plan_sweep(raw, "s.yaml", smoke=True).raw_trials
    # The same epochs for every trial (the dense recipes must match), K + 1 = 3.
    assert [t["train"]["epochs"] for t in trials] == [3, 3]
    assert trials[1]["imp"]["retrain_epochs"] == 3 and trials[1]["train"]["max_batches"] == 2


# ---- rule 1: every layer as written --------------------------------------------------------


def test_an_invalid_base_value_is_refused_although_every_experiment_replaces_it():
    raw = sweep({"config": {"method": "dense", "train": {"epochs": 2}}},
                base={"train": {"epochs": -3}})
    refused(raw, "s.yaml: base", "'train.epochs'")


def test_an_invalid_experiment_value_is_refused_although_its_grid_replaces_it():
    raw = sweep({"config": {"method": "snip", "prune": {"target_sparsity": 2.0}},
                 "grid": {"prune.target_sparsity": [0.5]}})
    refused(raw, "experiments[0].config", "'prune.target_sparsity'")


def test_an_invalid_grid_value_names_its_axis():
    raw = sweep({"config": {"method": "snip"}, "grid": {"prune.target_sparsity": [0.5, 1.5]}})
    refused(raw, "experiments[0].grid prune.target_sparsity", "less than 1")


def test_set_is_checked_on_its_own_and_never_hides_the_file():
    good = sweep({"config": {"method": "dense"}})
    refused(good, "--set", "'train.epochs'", overrides=["train.epochs=-1"])
    bad = sweep({"config": {"method": "dense"}}, base={"train": {"lr": -1.0}})
    refused(bad, "s.yaml: base", "'train.lr'", overrides=["train.lr=0.1"])


def test_cross_field_rules_are_checked_on_the_composed_trial():
    # warmup 8 alone is fine (default 20 epochs); with this experiment's 6 epochs it is not.
    raw = sweep({"config": {"method": "dense", "train": {"epochs": 6}}},
                base={"train": {"warmup_epochs": 8}})
    refused(raw, "experiments[0]", "warmup_epochs must be < epochs")


# ---- rule 3: fields a method ignores ----------------------------------------------------------


def test_a_field_the_experiments_method_ignores_is_refused_naming_the_layer():
    raw = sweep({"config": {"method": "imp", "prune": {"target_sparsity": 0.9}}})
    refused(raw, "experiments[0].config sets prune.target_sparsity",
            "ignored by method imp with imp.schedule: iterative")


def test_an_experiment_grid_axis_the_method_ignores_is_refused():
    raw = sweep({"config": {"method": "imp"}, "grid": {"prune.target_sparsity": [0.5, 0.9]}})
    refused(raw, "experiments[0].grid sets prune.target_sparsity")


def test_a_sweep_grid_axis_an_experiment_ignores_is_refused():
    raw = sweep({"config": {"method": "dense"}}, {"config": {"method": "snip"}},
                grid={"prune.target_sparsity": [0.5, 0.9]})
    refused(raw, "experiments[0]", "grid sets prune.target_sparsity", "method dense")


def test_base_and_set_fields_apply_only_to_the_trials_that_read_them():
    raw = sweep({"config": {"method": "dense"}},
                {"config": {"method": "imp", "imp": {"schedule": "oneshot"}}},
                base={"prune": {"allocation": "erk"}, "imp": {"retrain_epochs": 2}})
    dense, imp = plan_sweep(raw, "s.yaml", overrides=["prune.target_sparsity=0.7"]).raw_trials
    assert dense["prune"]["allocation"] is None and "imp" not in dense
    assert dense["prune"]["target_sparsity"] == 0.8  # the default: dense never reads it
    assert imp["prune"]["allocation"] == "erk" and imp["imp"]["retrain_epochs"] == 2
    assert imp["prune"]["target_sparsity"] == 0.7


def test_a_shared_field_that_no_trial_reads_is_refused():
    raw = sweep({"config": {"method": "dense"}}, base={"prune": {"reinit": True}})
    refused(raw, "base sets prune.reinit, which no trial of the sweep reads")
    ok = sweep({"config": {"method": "dense"}})
    refused(ok, "--set sets prune.target_sparsity", overrides=["prune.target_sparsity=0.5"])


def test_old_spellings_are_refused_with_the_new_one(tmp_path: Path):
    raw = sweep({"config": {"method": "snip", "prune": {"scorer": "magnitude"}}})
    refused(raw, "prune.scorer", "was renamed", "method: magnitude_init")
    raw = sweep({"config": {"method": "imp", "imp": {"dense_checkpoint": str(tmp_path)}}})
    refused(raw, "imp.dense_checkpoint", "dense_model.checkpoint")


def test_every_shipped_sweep_file_plans_under_smoke():
    root = Path(__file__).resolve().parents[1] / "sweeps"
    for path in sorted(root.glob("*.yaml")):
        raw = yaml.safe_load(path.read_text())
        if "experiments" not in raw:
            continue  # sweeps/cluster.yaml is a `ray up` file
        written = plan_sweep(raw, str(path), overrides=["resources.gpu=0"])
        smoked = plan_sweep(raw, str(path), overrides=["resources.gpu=0"], smoke=True)
        assert len(written.trials) == len(smoked.trials), path.name
