"""Paired comparisons (`plot.py --compare A B`): the paired t-test agrees with
scipy.stats.ttest_rel, Holm's correction with the hand-computed step-down, and the per-level
table with differences worked out by hand from the standard experiment's accuracies."""

from __future__ import annotations

import math

import numpy as np
import pytest
from scipy import stats as scipy_stats

from analysis import aggregate, load_results
from analysis.compare import paired_comparison
from analysis.plot import main
from analysis.stats import holm, paired_t_test

try:
    from fixtures_experiments import DENSE_ACC, IMP_ACC, SNIP_ACC, build_standard_experiment
except ImportError:  # tests/ collected as a package
    from tests.fixtures_experiments import (
        DENSE_ACC,
        IMP_ACC,
        SNIP_ACC,
        build_standard_experiment,
    )


@pytest.mark.parametrize(("a", "b"), [
    ([0.82, 0.83, 0.84], [0.81, 0.812, 0.814]),
    ([0.5, 0.9, 0.7, 0.61], [0.52, 0.8, 0.71, 0.6]),
    ([0.1, 0.2], [0.3, 0.35]),
])
def test_the_paired_t_test_is_scipys(a, b):
    t, p = paired_t_test(np.subtract(a, b))
    expected = scipy_stats.ttest_rel(a, b)
    assert t == pytest.approx(expected.statistic, rel=1e-12)
    assert p == pytest.approx(expected.pvalue, rel=1e-12)


def test_no_spread_or_one_pair_has_no_test():
    assert all(math.isnan(v) for v in paired_t_test([0.03, 0.03, 0.03]))
    # Equal differences as floats compute them (0.77 - 0.80 != 0.79 - 0.82 in the last bits).
    assert all(math.isnan(v) for v in paired_t_test([0.77 - 0.80, 0.79 - 0.82, 0.81 - 0.84]))
    assert all(math.isnan(v) for v in paired_t_test([0.03]))


def test_holm_by_hand():
    # Sorted 0.01, 0.03, 0.04 of m = 3: 3 * 0.01 = 0.03; 2 * 0.03 = 0.06; 1 * 0.04 = 0.04,
    # raised to the 0.06 before it. NaN stays out of the family.
    adjusted = holm([0.01, 0.04, 0.03, math.nan])
    assert adjusted[:3] == pytest.approx([0.03, 0.06, 0.06], abs=1e-15)
    assert math.isnan(adjusted[3])
    assert holm([0.6, 0.5]) == pytest.approx([1.0, 1.0])  # capped at 1


@pytest.fixture(scope="module")
def standard(tmp_path_factory):
    experiment = build_standard_experiment(tmp_path_factory.mktemp("compare"))
    results = load_results(experiment)
    return experiment, results, aggregate(results)


def test_imp_against_snip_at_their_one_shared_level(standard):
    _, results, agg = standard
    table = paired_comparison(results, agg, "IMP iterative", "snip")
    (row,) = table.itertuples()
    imp, snip = [IMP_ACC[s][1] for s in range(3)], SNIP_ACC[0.5]  # both at 50%
    diffs = np.subtract(imp, snip)
    assert (row.b, row.target_sparsity_pct, row.n_pairs, row.seeds) == ("SNIP", 50.0, 3, "0,1,2")
    assert row.mean_diff_points == pytest.approx(100 * 0.018, abs=1e-9)
    assert row.p_value == pytest.approx(scipy_stats.ttest_rel(imp, snip).pvalue, rel=1e-12)
    assert row.p_holm == row.p_value  # a family of one
    assert row.differences_points == ";".join(f"{s}:{100 * d:+.4f}" for s, d in enumerate(diffs))


def test_imp_against_dense_pairs_dense_with_every_level(standard):
    _, results, agg = standard
    table = paired_comparison(results, agg, "IMP iterative", "dense")
    assert table["target_sparsity_pct"].tolist() == [50.0, 75.0, 87.5]
    p = [scipy_stats.ttest_rel([IMP_ACC[s][k] for s in range(3)], DENSE_ACC).pvalue
         for k in (1, 2)]
    # Round 3 is 0.03 below dense for every seed: no spread, no p-value, out of the family.
    assert table["mean_diff_points"].iloc[2] == pytest.approx(-3.0, abs=1e-9)
    assert math.isnan(table["p_value"].iloc[2]) and math.isnan(table["p_holm"].iloc[2])
    low, high = sorted(p)
    by_hand = {low: 2 * low, high: max(2 * low, high)}
    assert table["p_holm"].iloc[:2].tolist() == pytest.approx([by_hand[p[0]], by_hand[p[1]]])


def test_the_cli_writes_the_comparison_and_refuses_unknown_lines(standard, tmp_path, capsys):
    experiment, _, _ = standard
    out = tmp_path / "out"
    assert main([str(experiment), "--out", str(out), "--compare", "imp", "dense"]) == 2
    assert "method 'imp' has 2 lines; name one: IMP iterative, IMP one-shot" in \
        capsys.readouterr().err
    assert main([str(experiment), "--out", str(out), "--compare", "imp iterative", "dense"]) == 0
    assert "compare IMP iterative - dense at 50%: +1.00 points" in capsys.readouterr().out
    assert "## IMP iterative - dense" in (out / "comparisons.md").read_text()
    assert (out / "comparisons.csv").is_file()
    assert (out / "compare_imp_iterative_vs_dense.png").read_bytes()[:4] == b"\x89PNG"
    assert main([str(experiment), "--out", str(out), "--compare", "snip", "nope"]) == 2
    err = capsys.readouterr().err
    assert "no line 'nope'; lines: " in err and err.count("\n") == 1
