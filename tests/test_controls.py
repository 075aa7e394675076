"""`controls: [budget_matched_dense]`: one dense trial per seed for each experiment that trains
longer than dense, trained for that experiment's total epochs, which are counted by hand here
and checked against the epochs a real IMP trial runs; its rows form a line of their own, never
part of the dense reference."""

from __future__ import annotations

import json

import pytest

from analysis import aggregate, load_results
from sweeps.plan import plan_sweep
from trainables.methods import METHODS
from trainables.reporting import DirectoryReporter
from trainables.resolve import parse_trial_config
from trainables.trial import run_trial

try:
    from fixtures_experiments import TrialSpec, build_experiment
except ImportError:  # tests/ collected as a package
    from tests.fixtures_experiments import TrialSpec, build_experiment


def sweep(data_root, **extra):
    return {
        "name": "controls",
        "base": {"data": {"name": "digits", "root": str(data_root)},
                 "model": {"name": "resnet18_cifar", "width": 4},
                 "train": {"epochs": 6, "batch_size": 64, "lr": 0.1}},
        "grid": {"seed": [0, 1]},
        "experiments": [
            {"label": "dense", "config": {"method": "dense"}},
            {"label": "imp", "config": {"method": "imp", "imp": {
                "rounds": 3, "rate": 0.8, "rewind": "epoch:1"}}},
            {"label": "ft", "config": {"method": "imp", "imp": {
                "rounds": 2, "rate": 0.5, "rewind": "none", "retrain_epochs": 4}}},
            {"label": "ch", "config": {"method": "channels", "channels": {
                "target": "channels", "channel_fraction": 0.5}}},
            {"label": "snip", "config": {"method": "snip"},
             "grid": {"prune.target_sparsity": [0.8, 0.9]}},
        ],
        **extra,
    }


def test_each_longer_experiment_gets_a_dense_trial_per_seed_at_its_budget(data_root):
    plan = plan_sweep(sweep(data_root, controls=["budget_matched_dense"]), "controls.yaml")
    controls = [(t.label, t.raw) for t in plan.trials if t.method == "budget_dense"]
    # By hand: imp = 6 dense + 3 rounds x epochs 1..5 (rewound to epoch 1) = 21; ft = 6 + 2 x 4
    # (retrain_epochs, from the start) = 14; ch (channel rounds retrain like IMP, rewind none,
    # one one-shot round of train.epochs) = 6 + 6 = 12. dense and snip train 6: no control.
    budgets = sorted((label, t["seed"], t["train"]["epochs"]) for label, t in controls)
    assert budgets == [("ch_budget", 0, 12), ("ch_budget", 1, 12), ("ft_budget", 0, 14),
                       ("ft_budget", 1, 14), ("imp_budget", 0, 21), ("imp_budget", 1, 21)]
    imp = next(t.raw for t in plan.trials if t.method == "imp" and t.config.seed == 0)
    control = next(t for label, t in controls if label == "imp_budget" and t["seed"] == 0)
    assert control["budget_dense"] == {"of": "imp"}
    assert (control["data"], control["model"]) == (imp["data"], imp["model"])
    assert {**control["train"], "epochs": 6} == imp["train"]
    without = plan_sweep(sweep(data_root), "controls.yaml")
    assert len(plan.trials) == len(without.trials) + 6


def test_the_budget_is_the_epochs_an_imp_trial_really_trains(tiny_trial, tmp_path):
    raw = tiny_trial(method="imp", train={"epochs": 3},
                     imp={"rounds": 2, "rate": 0.5, "rewind": "epoch:1"})
    config = parse_trial_config(raw)
    run_trial(config, DirectoryReporter(tmp_path), cpus=1)
    rows = [json.loads(line) for line in (tmp_path / "result.json").read_text().splitlines()]
    trained = sum(1 for row in rows if row.get("row_type") == "epoch")
    assert trained == METHODS.get("imp").training_epochs(config) == 3 + 2 * 2


def test_a_budget_dense_trial_is_one_unpruned_round_with_its_label(tiny_trial, tmp_path):
    raw = tiny_trial(method="budget_dense", budget_dense={"of": "imp"})
    run_trial(parse_trial_config(raw), DirectoryReporter(tmp_path), cpus=1)
    rows = [json.loads(line) for line in (tmp_path / "result.json").read_text().splitlines()]
    (round_row,) = [row for row in rows if row.get("row_type") == "round"]
    assert (round_row["round"], round_row["sparsity"]) == (1, 0.0)
    assert round_row["label"] == "dense, imp's budget (2 epochs)"
    assert sum(1 for row in rows if row.get("row_type") == "epoch") == 2


def test_the_control_is_a_line_of_its_own_not_the_dense_reference(tmp_path):
    specs = [TrialSpec("dense", s, [(0.0, acc)]) for s, acc in enumerate([0.80, 0.82])]
    specs += [TrialSpec("budget_dense", s, [(0.0, acc)],
                        round_fields=[{"label": "dense, imp's budget (21 epochs)"}])
              for s, acc in enumerate([0.90, 0.94])]
    agg = aggregate(load_results(build_experiment(tmp_path, "ctl", specs)))
    dense = agg[agg["method"] == "dense"]
    assert dense["n"].tolist() == [2] and dense["mean"].tolist() == pytest.approx([0.81])
    control = agg[agg["method"] == "budget_dense"]
    assert control["mean"].tolist() == pytest.approx([0.92])
    assert control["delta_vs_dense"].tolist() == pytest.approx([0.11])


def test_a_method_compared_with_the_control_pairs_it_with_every_level(tmp_path):
    from analysis.compare import paired_comparison

    specs = [TrialSpec("dense", s, [(0.0, 0.80)]) for s in range(3)]
    specs += [TrialSpec("budget_dense", s, [(0.0, acc)],
                        round_fields=[{"label": "dense, imp's budget (21 epochs)"}])
              for s, acc in enumerate([0.90, 0.92, 0.97])]
    specs += [TrialSpec("snip", s, [(target, acc)])
              for target, accs in {0.5: [0.85, 0.86, 0.90], 0.9: [0.70, 0.75, 0.74]}.items()
              for s, acc in enumerate(accs)]
    results = load_results(build_experiment(tmp_path, "ctl", specs))
    table = paired_comparison(results, aggregate(results), "snip",
                              "dense, imp's budget (21 epochs)")
    assert table["target_sparsity_pct"].tolist() == [50.0, 90.0]
    # By hand: (0.85-0.90, 0.86-0.92, 0.90-0.97) and (0.70-0.90, 0.75-0.92, 0.74-0.97).
    assert table["mean_diff_points"].tolist() == pytest.approx([-6.0, -20.0])
