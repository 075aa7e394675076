"""A tuned sweep's `search:` section before Ray starts: its units, the values each final trial
runs on, and every bad input refused in one line with exit status 2.

Expected units and values are written out by hand from the sweep mappings below.
"""

from __future__ import annotations

import copy
from pathlib import Path
from typing import Any

import pytest
import yaml

from sweeps.plan import plan_sweep
from trainables.errors import ConfigError

REPO = Path(__file__).resolve().parents[1]
BASE = {
    "data": {"name": "digits"},
    "model": {"name": "resnet18_cifar", "width": 4},
    "train": {"epochs": 4, "batch_size": 32, "lr": 0.1, "max_batches": 2, "max_eval_batches": 2},
}
SEARCH = {
    "space": {"train.lr": {"loguniform": [0.01, 0.5]},
              "train.weight_decay": {"choice": [0.0, 5.0e-4]}},
    "samples": 3, "searcher": "random", "scheduler": "asha", "seeds": [100, 101],
}


def tuned(search: dict[str, Any] | None = None, **fields: Any) -> dict[str, Any]:
    sweep = {
        "name": "tuned", "base": copy.deepcopy(BASE), "grid": {"seed": [0, 1]},
        "search": {**SEARCH, **(search or {})},
        "experiments": [
            {"label": "dense", "config": {"method": "dense"}},
            {"label": "imp", "config": {"method": "imp", "imp": {"rounds": 2}},
             "search": {"per": "experiment"}},
            {"label": "snip", "config": {"method": "snip"},
             "grid": {"prune.target_sparsity": [0.5, 0.8]}},
        ],
    }
    sweep.update(fields)
    return sweep


def plan(raw: dict[str, Any], tmp_path: Path, **kwargs: Any) -> Any:
    return plan_sweep(raw, "tuned.yaml", launch_dir=tmp_path, **kwargs)


def test_units_are_one_per_level_and_one_for_a_method_whose_levels_are_rounds(tmp_path):
    search = plan(tuned(), tmp_path).search
    assert [unit.name for unit in search.units] == ["dense", "imp", "snip_sp0.5", "snip_sp0.8"]
    assert [unit.per for unit in search.units] == ["level", "experiment", "level", "level"]
    snip_08 = search.units[3]
    assert snip_08.template.prune.target_sparsity == 0.8
    assert snip_08.template.train.epochs == 4
    # 4 epochs and 1 round: 5 rows; IMP: 4 dense epochs + 2 rounds of 4, and 3 rounds.
    assert snip_08.rows_per_trial == 5
    assert search.units[1].rows_per_trial == 4 + 2 * 4 + 3


def test_each_final_trial_runs_on_its_units_choice(tmp_path):
    chosen = {"dense": {"train.lr": 0.05, "train.weight_decay": 0.0},
              "imp": {"train.lr": 0.2, "train.weight_decay": 5.0e-4},
              "snip_sp0.5": {"train.lr": 0.011, "train.weight_decay": 0.0},
              "snip_sp0.8": {"train.lr": 0.3, "train.weight_decay": 5.0e-4}}
    planned = plan(tuned(), tmp_path, chosen=chosen)
    expected = {("dense", None): (0.05, 0.0), ("imp", None): (0.2, 5.0e-4),
                ("snip", 0.5): (0.011, 0.0), ("snip", 0.8): (0.3, 5.0e-4)}
    seen = set()
    for trial in planned.trials:
        level = trial.config.prune.target_sparsity if trial.label == "snip" else None
        values = (trial.config.train.lr, trial.config.train.weight_decay)
        assert values == expected[(trial.label, level)], trial.name
        assert trial.config.seed in (0, 1)
        seen.add((trial.label, level, trial.config.seed))
    assert len(seen) == len(planned.trials) == 2 * 4
    assert planned.search.chosen == chosen
    # Without a choice, the final trials are the file's own recipe (what --dry-run shows).
    assert {trial.config.train.lr for trial in plan(tuned(), tmp_path).trials} == {0.1}


def test_an_experiment_with_an_empty_space_is_not_searched(tmp_path):
    raw = tuned()
    raw["experiments"][0]["search"] = {"space": {}}
    assert [unit.name for unit in plan(raw, tmp_path).search.units] == \
        ["imp", "snip_sp0.5", "snip_sp0.8"]


def test_smoke_runs_two_samples_without_asha_where_the_trials_leave_it_no_rung(tmp_path):
    search = plan(tuned({"samples": 8}), tmp_path, smoke=True).search
    assert search.spec.samples == 2
    # --smoke: 1 epoch a phase. Dense and SNIP: 1 epoch + 1 round = 2 rows, no rung before the
    # last epoch. IMP: 1 dense epoch + 2 rounds of 1 epoch, and 3 round rows = 6 rows: ASHA
    # keeps rungs at rows 1 and 2 (the last allowed is row 4).
    assert [unit.scheduler for unit in search.units] == ["none", "asha", "none", "none"]
    assert len(search.notes) == 3 and all("ASHA" in note for note in search.notes)


def _one_line_error(raw: dict[str, Any], tmp_path: Path) -> str:
    with pytest.raises(ConfigError) as caught:
        plan(raw, tmp_path)
    message = str(caught.value)
    assert "\n" not in message
    return message


@pytest.mark.parametrize(("change", "words"), [
    ({"space": {"train.lrr": {"uniform": [0.1, 0.2]}}}, "train.lrr"),
    ({"space": {"train.eval_batch_size": {"choice": [256, 512]}}}, "decides how a trial runs"),
    ({"space": {"train.lr": {"loguniform": [0.0, 0.5]}}}, "0 < low"),
    ({"space": {"train.lr": {"uniform": [0.5, 0.1]}}}, "low < high"),
    ({"space": {"train.lr": {"uniform": [0.1, 0.5], "choice": [0.1]}}}, "exactly one of"),
    ({"metric": "test_acc"}, "test metric"),
    ({"seeds": [1, 100]}, "search.seeds [1] are also final seeds"),
    ({"space": {"seed": {"randint": [0, 9]}}}, "searches 'seed'"),
    ({"space": {"train.lr": {"uniform": [0.1, 5.0e3]}}}, "train.lr"),
], ids=["unknown-field", "execution-field", "log-bound", "reversed-bounds", "two-kinds",
        "test-metric", "seed-overlap", "seed-searched", "value-out-of-range"])
def test_bad_search_is_one_line(change, words, tmp_path):
    assert words in _one_line_error(tuned(change), tmp_path)


def test_a_grid_axis_cannot_be_searched(tmp_path):
    raw = tuned()
    raw["experiments"][2]["search"] = {
        "space": {"prune.target_sparsity": {"uniform": [0.1, 0.9]}}}
    assert "also a grid axis" in _one_line_error(raw, tmp_path)


def test_asha_with_no_epoch_left_to_save_is_refused(tmp_path):
    raw = tuned()
    raw["base"]["train"]["epochs"] = 1
    raw["experiments"] = raw["experiments"][:1]
    message = _one_line_error(raw, tmp_path)
    assert "scheduler: asha" in message and "2 rows" in message
    raw["search"]["scheduler"] = "none"
    assert [unit.scheduler for unit in plan(raw, tmp_path).search.units] == ["none"]


def test_an_experiment_may_turn_asha_off_for_itself(tmp_path):
    raw = tuned()
    raw["experiments"][2]["search"] = {"scheduler": "none"}
    units = plan(raw, tmp_path).search.units
    assert {unit.name: unit.scheduler for unit in units} == {
        "dense": "asha", "imp": "asha", "snip_sp0.5": "none", "snip_sp0.8": "none"}
    # Its own setting is part of what a rerun compares.
    assert units[0].fingerprint(plan(raw, tmp_path).search.spec)["scheduler"] == "asha"
    assert units[2].fingerprint(plan(raw, tmp_path).search.spec)["scheduler"] == "none"
    # An experiment too short for ASHA is fine once it turns ASHA off.
    raw["experiments"][2]["config"]["train"] = {"epochs": 1}
    assert plan(raw, tmp_path).search.units[2].scheduler == "none"


def test_per_level_for_a_method_whose_levels_are_rounds_is_refused(tmp_path):
    raw = tuned()
    del raw["experiments"][1]["search"]
    assert "rounds of one trial" in _one_line_error(raw, tmp_path)


def test_per_experiment_over_levels_that_are_separate_trials_is_refused(tmp_path):
    raw = tuned()
    raw["experiments"][2]["search"] = {"per": "experiment"}
    assert "2 levels that are separate trials" in _one_line_error(raw, tmp_path)


def test_a_field_the_method_ignores_is_refused(tmp_path):
    raw = tuned()
    raw["experiments"][2]["search"] = {"space": {"imp.rate": {"uniform": [0.2, 0.8]}}}
    assert "imp.rate" in _one_line_error(raw, tmp_path)


def test_an_experiment_search_needs_the_sweeps_section(tmp_path):
    raw = tuned()
    del raw["search"]
    assert "needs the sweep's own `search:`" in _one_line_error(raw, tmp_path)


def test_optuna_missing_is_one_line_naming_the_extra(tmp_path, monkeypatch):
    import importlib.util

    real = importlib.util.find_spec
    monkeypatch.setattr(importlib.util, "find_spec",
                        lambda name, *a: None if name == "optuna" else real(name, *a))
    assert "prunetune[search]" in _one_line_error(tuned({"searcher": "optuna"}), tmp_path)


def test_run_sweep_exits_2_before_ray_for_a_bad_search(tmp_path, capsys, monkeypatch):
    from sweeps import run_sweep as module

    def no_ray(*args: Any, **kwargs: Any) -> None:
        raise AssertionError("Ray was started")

    monkeypatch.setattr(module, "_start_ray", no_ray)
    path = tmp_path / "tuned.yaml"
    path.write_text(yaml.safe_dump(tuned({"metric": "test_acc"})))
    assert module.main([str(path), "--storage", str(tmp_path / "out")]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "test metric" in err[0]
    assert not (tmp_path / "out").exists()


def test_the_shipped_example_plans_three_units(tmp_path):
    from sweeps.plan import load_sweep

    planned = load_sweep(REPO / "sweeps" / "tuned_digits.yaml", launch_dir=tmp_path)
    assert [unit.name for unit in planned.search.units] == ["dense", "imp", "snip_sp0.96"]
    assert planned.search.spec.searcher == "optuna" and planned.search.spec.scheduler == "asha"
    assert sorted(trial.config.seed for trial in planned.trials) == [0, 0, 0, 1, 1, 1]


def test_a_tuned_sweep_on_cloud_storage_is_refused_before_ray(tmp_path, capsys, monkeypatch):
    from sweeps import run_sweep as module

    path = tmp_path / "tuned.yaml"
    path.write_text(yaml.safe_dump(tuned()))
    assert module.main([str(path), "--storage", "s3://bucket/prefix", "--dry-run"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "local or shared filesystem" in err[0]


def test_a_nested_space_and_set_on_one_searched_field(tmp_path):
    raw = tuned()
    raw["search"]["space"] = {"train": {"lr": {"loguniform": [0.01, 0.5]},
                                        "weight_decay": {"choice": [0.0, 5.0e-4]}}}
    nested = plan(raw, tmp_path).search.units[0]
    assert nested.space == plan(tuned(), tmp_path).search.units[0].space
    changed = plan(tuned(), tmp_path,
                   overrides=["search.space.train.lr.loguniform=[0.01, 1.0]"]).search.units[0]
    assert changed.space["train.lr"].loguniform == (0.01, 1.0)
    assert changed.space["train.weight_decay"].choice == [0.0, 5.0e-4]
