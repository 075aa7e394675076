"""analysis.aggregate / analysis.stats: every number checked against hand-computed values."""

from __future__ import annotations

import math
from pathlib import Path

import numpy as np
import pytest

from analysis import aggregate, bootstrap_interval, load_results, matching_sparsity, t_interval

try:
    from fixtures_experiments import TrialSpec, build_experiment, build_standard_experiment
except ImportError:  # tests/ collected as a package
    from tests.fixtures_experiments import TrialSpec, build_experiment, build_standard_experiment

# Student-t quantiles from tables (not from scipy): t_{0.975, 2} and t_{0.975, 1}.
T975_2 = 4.302652729911275
T975_1 = 12.706204736174704


@pytest.fixture(scope="module")
def results(tmp_path_factory):
    return load_results(build_standard_experiment(tmp_path_factory.mktemp("exp")))


@pytest.fixture(scope="module")
def agg(results):
    return aggregate(results)


def _row(agg, **where):
    mask = np.ones(len(agg), dtype=bool)
    for key, value in where.items():
        mask &= (agg[key].isna() if value is None else agg[key] == value).to_numpy()
    assert mask.sum() == 1, (where, mask.sum())
    return agg[mask].iloc[0]


def test_t_interval_by_hand():
    low, high = t_interval([0.80, 0.82, 0.84])
    half = T975_2 * 0.02 / math.sqrt(3)
    assert low == pytest.approx(0.82 - half, abs=1e-9)
    assert high == pytest.approx(0.82 + half, abs=1e-9)
    assert all(math.isnan(v) for v in t_interval([0.5]))


def test_bootstrap_is_seeded_and_brackets_the_mean():
    values = [0.80, 0.81, 0.85]
    a = bootstrap_interval(values, 0.95, n_resamples=10_000, seed=3)
    assert a == bootstrap_interval(values, 0.95, n_resamples=10_000, seed=3)
    # Resampled means lie within [min, max]; with 10,000 draws the 2.5% / 97.5% percentiles
    # are strictly inside and around the mean 0.82.
    assert 0.80 <= a[0] < 0.82 < a[1] <= 0.85
    assert all(math.isnan(v) for v in bootstrap_interval([0.5]))


def test_dense_reference_uses_dense_trials_only(agg):
    dense = _row(agg, method="dense")
    assert dense["n"] == 3 and dense["seeds"] == "0,1,2"
    assert dense["mean"] == pytest.approx(0.82, abs=1e-9)
    assert dense["std"] == pytest.approx(0.02, abs=1e-9)
    assert dense["ci_high"] - dense["mean"] == pytest.approx(T975_2 * 0.02 / math.sqrt(3))
    assert "3 dense trial(s)" in dense["dense_source"]
    # IMP round 0 (0.90 everywhere) entered neither the dense row nor the IMP line.
    assert not ((agg["method"] == "imp") & (agg["round"] == 0)).any()


@pytest.mark.parametrize(
    ("round_index", "mean", "std", "sparsity"),
    [(1, 0.83, 0.01, 0.501), (2, 0.815, 0.005, 0.751), (3, 0.79, 0.02, 0.876)],
)
def test_imp_iterative_grouped_by_round(agg, round_index, mean, std, sparsity):
    row = _row(agg, method="imp", schedule="iterative", round=round_index)
    # The errored seed-3 trial (0.10 in round 1) must not be in here.
    assert row["n"] == 3 and row["seeds"] == "0,1,2"
    assert row["mean"] == pytest.approx(mean, abs=1e-9)
    assert row["std"] == pytest.approx(std, abs=1e-9)
    half = T975_2 * std / math.sqrt(3)
    assert row["ci_low"] == pytest.approx(mean - half, abs=1e-9)
    assert row["ci_high"] == pytest.approx(mean + half, abs=1e-9)
    assert row["sparsity"] == pytest.approx(sparsity, abs=1e-9)
    assert row["params_total"] == pytest.approx((1 - sparsity) * 1e6 + 10_000, abs=0.5)
    assert row["delta_vs_dense"] == pytest.approx(mean - 0.82, abs=1e-9)


def test_oneshot_and_snip_grouped_by_target(agg):
    oneshot = _row(agg, method="imp", schedule="oneshot")
    assert oneshot["target_sparsity"] == 0.5 and oneshot["n"] == 3
    assert oneshot["mean"] == pytest.approx(0.82, abs=1e-9)
    assert oneshot["std"] == pytest.approx(math.sqrt(0.0007), abs=1e-9)
    snip = _row(agg, method="snip", scorer="snip", target_sparsity=0.5)
    # The diverged seed-4 trial (0.10) is excluded.
    assert snip["n"] == 3 and snip["seeds"] == "0,1,2"
    assert snip["mean"] == pytest.approx(0.812, abs=1e-9)
    assert snip["std"] == pytest.approx(0.002, abs=1e-9)
    snip90 = _row(agg, method="snip", scorer="snip", target_sparsity=0.9)
    # The unfinished seed-3 trial (0.10) is excluded.
    assert snip90["n"] == 3 and snip90["mean"] == pytest.approx(0.70, abs=1e-9)
    random = _row(agg, method="random", scorer="random")
    assert random["n"] == 2
    assert random["mean"] == pytest.approx(0.75, abs=1e-9)
    assert random["std"] == pytest.approx(math.sqrt(0.0002), abs=1e-9)
    assert random["ci_high"] - random["mean"] == pytest.approx(
        T975_1 * math.sqrt(0.0002) / math.sqrt(2), abs=1e-9
    )
    assert len(agg) == 1 + 3 + 1 + 2 + 1  # dense, 3 IMP rounds, one-shot, 2 SNIP, random


def test_matching_sparsity_by_hand(agg):
    m = matching_sparsity(agg, tolerance=1.0)
    by = {
        (r.method, r.schedule if isinstance(r.schedule, str) else None, r.scorer): r
        for r in m.itertuples()
    }
    # Threshold 0.82 - 0.01 = 0.81: IMP rounds 0.83, 0.815 pass, 0.79 fails -> 75.1%.
    assert by[("imp", "iterative", "magnitude")].matching_sparsity == pytest.approx(0.751)
    assert by[("imp", "oneshot", "magnitude")].matching_sparsity == pytest.approx(0.501)
    assert by[("snip", None, "snip")].matching_sparsity == pytest.approx(0.501)  # 0.812
    assert not by[("random", None, "random")].matched
    assert math.isnan(by[("random", None, "random")].matching_sparsity)
    # Tolerance 0.5 point: threshold 0.815; IMP round 2 (0.815) is exactly on it and counts,
    # SNIP 0.812 no longer does.
    m = matching_sparsity(agg, tolerance=0.5)
    by = {(r.method, r.scorer): r for r in m.itertuples() if r.schedule != "oneshot"}
    assert by[("imp", "magnitude")].matching_sparsity == pytest.approx(0.751)
    assert not by[("snip", "snip")].matched
    # Tolerance 0: only levels at or above the dense mean.
    m = matching_sparsity(agg, tolerance=0.0)
    imp = m[(m["method"] == "imp") & (m["schedule"] == "iterative")].iloc[0]
    assert imp["matching_sparsity"] == pytest.approx(0.501)


def test_matching_sparsity_takes_highest_qualifying_level_even_after_a_dip(tmp_path):
    accs = {0: [0.9, 0.70, 0.80], 1: [0.9, 0.70, 0.80]}  # round 1 dips, round 2 recovers
    specs = [TrialSpec("dense", s, [(0.0, 0.80)]) for s in (0, 1)]
    specs += [
        TrialSpec(
            "imp",
            s,
            list(zip([0.0, 0.5, 0.75], accs[s], strict=True)),
            schedule="iterative",
        )
        for s in (0, 1)
    ]
    agg = aggregate(load_results(build_experiment(tmp_path, "dip", specs)))
    m = matching_sparsity(agg, tolerance=1.0)
    assert m["matching_sparsity"].item() == pytest.approx(0.75)


def test_dense_fallback_imp_round0_counts_each_seed_once(tmp_path):
    # No dense trials; two IMP trials per seed (one-shot 0.5 and 0.8) share their round 0.
    round0 = {0: (0.80, 0.82), 1: (0.84, 0.84), 2: (0.86, 0.88)}
    specs = []
    for seed, (a, b) in round0.items():
        specs.append(
            TrialSpec("imp", seed, [(0.0, a), (0.5, 0.80)], schedule="oneshot")
        )
        specs.append(
            TrialSpec("imp", seed, [(0.0, b), (0.8, 0.70)], schedule="oneshot")
        )
    agg = aggregate(load_results(build_experiment(tmp_path, "imponly", specs)))
    dense = _row(agg, method="dense")
    # Per seed: 0.81, 0.84, 0.87 -> n = 3 seeds (not 6 rows), mean 0.84, std 0.03.
    assert dense["n"] == 3
    assert dense["mean"] == pytest.approx(0.84, abs=1e-9)
    assert dense["std"] == pytest.approx(0.03, abs=1e-9)
    assert "round 0 of 6 trial(s) starting from dense" in dense["dense_source"]
    pruned = _row(agg, method="imp", target_sparsity=0.5)
    assert pruned["delta_vs_dense"] == pytest.approx(0.80 - 0.84, abs=1e-9)


def test_single_seed_gives_nan_interval(tmp_path):
    specs = [TrialSpec("dense", 0, [(0.0, 0.8)]), TrialSpec("snip", 0, [(0.5, 0.7)])]
    agg = aggregate(load_results(build_experiment(tmp_path, "one", specs)))
    assert (agg["n"] == 1).all()
    assert agg["ci_low"].isna().all() and agg["std"].isna().all()
    assert (agg["ci_method"] == "none (n=1)").all()


def test_other_swept_keys_split_groups_and_match_dense(tmp_path):
    specs = []
    for lr, base in ((0.1, 0.80), (0.01, 0.60)):
        for seed in (0, 1):
            specs.append(
                TrialSpec("dense", seed, [(0.0, base + 0.01 * seed)], extra_config={"train.lr": lr})
            )
            specs.append(
                TrialSpec(
                    "snip",
                    seed,
                    [(0.5, base - 0.05 + 0.01 * seed)],
                    extra_config={"train.lr": lr},
                )
            )
    exp = build_experiment(tmp_path, "lr", specs, grid_keys=["method", "seed", "train.lr"])
    agg = aggregate(load_results(exp))
    assert len(agg) == 4
    for lr, base in ((0.1, 0.80), (0.01, 0.60)):
        snip = _row(agg, method="snip", **{"train.lr": lr})
        assert snip["mean"] == pytest.approx(base - 0.045, abs=1e-9)
        assert snip["dense_mean"] == pytest.approx(base + 0.005, abs=1e-9)
        assert snip["delta_vs_dense"] == pytest.approx(-0.05, abs=1e-9)


def test_bootstrap_option_and_val_metric(results):
    agg = aggregate(results, metric="val_acc", interval="bootstrap", seed=1)
    dense = _row(agg, method="dense")
    assert dense["mean"] == pytest.approx(0.81, abs=1e-9)  # val = test - 0.01
    assert dense["ci_method"].startswith("bootstrap")
    assert dense["ci_low"] < 0.81 < dense["ci_high"]
    with pytest.raises(ValueError, match="metric"):
        aggregate(results, metric="loss")


# Hand-picked from the standard experiment's accuracies (tests/fixtures_experiments.py): the
# seed closest to each group's mean; 0.74 and 0.76 around 0.75 tie, and the lower seed wins.
EXPORT_CHOICES = [
    ({"method": "dense"}, 1, 0),                                        # 0.82 = the mean
    ({"method": "imp", "schedule": "iterative", "round": 3}, 1, 3),     # 0.79 = the mean
    ({"method": "imp", "schedule": "oneshot"}, 1, 1),                   # 0.81 of mean 0.82
    # Prune-at-init trials report no round 0: their one round is round 1.
    ({"method": "snip", "scorer": "snip", "target_sparsity": 0.9}, 1, 1),
    ({"method": "random", "scorer": "random"}, 0, 1),                   # a tie
]


@pytest.mark.parametrize(("where", "seed", "round_number"), EXPORT_CHOICES)
def test_the_round_to_export_is_the_seed_closest_to_the_mean(agg, results, where, seed,
                                                             round_number):
    row = _row(agg, **where)
    chosen = results[results["trial_dir"].map(lambda d: Path(d).name) == row["export_trial"]]
    assert set(chosen["seed"]) == {seed} and set(chosen["method"]) == {where["method"]}
    at_round = chosen[chosen["round"] == round_number]
    assert row["export_round"] == round_number and len(at_round) == 1
    assert row["export_value"] == at_round["test_acc"].iloc[0]
    assert Path(row["export_dir"]) == Path(chosen["trial_dir"].iloc[0]).parent
    assert len(row["export_all"].split(";")) == row["n"]


def test_a_run_sweep_directory_is_named_without_tunes_id():
    from analysis.load import readable_name

    assert readable_name("/x/imp_s0_p0.8x3_999bf_00003") == "imp_s0_p0.8x3"
    assert readable_name("/x/train_fn_a1b2c_00000_0_seed=0_2026") == \
        "train_fn_a1b2c_00000_0_seed=0_2026"
