"""Intervals over seeds: logit-t against hand computation, and what tables and figures say
when a Student-t interval reaches past 0% or 100%."""

from __future__ import annotations

import math

import matplotlib
import pandas as pd
import pytest

from analysis import aggregate, load_results, logit_t_interval, t_interval
from analysis.plot import main as plot_main

try:
    from fixtures_experiments import TrialSpec, build_experiment
except ImportError:  # tests/ collected as a package
    from tests.fixtures_experiments import TrialSpec, build_experiment

# Student-t quantiles, not from scipy: with 2 degrees of freedom the quantile has the closed
# form t_p = (2p - 1) * sqrt(2 / (4p(1 - p))); t_{0.95, 4} is from a printed table.
T975_2 = 0.95 * math.sqrt(2 / (4 * 0.975 * 0.025))
T95_4 = 2.131846786326649

# Random pruning to 99.2% on digits (360 test images), 3 seeds: one seed collapsed to chance.
# These accuracies reproduce the interval the issue quotes from summary.csv, [-33.6%, 128.6%].
COLLAPSED = [36 / 360, 226 / 360, 251 / 360]


def _logit(p: float) -> float:
    return math.log(p / (1.0 - p))


def _expit(z: float) -> float:
    return 1.0 / (1.0 + math.exp(-z))


def _logit_t_by_hand(values: list[float], t_quantile: float) -> tuple[float, float]:
    z = [_logit(v) for v in values]
    n = len(z)
    mean = sum(z) / n
    sd = math.sqrt(sum((x - mean) ** 2 for x in z) / (n - 1))
    half = t_quantile * sd / math.sqrt(n)
    return _expit(mean - half), _expit(mean + half)


def test_issue_case_t_interval_leaves_0_100_and_logit_t_does_not():
    low, high = t_interval(COLLAPSED, 0.95)
    assert (round(100 * low, 1), round(100 * high, 1)) == (-33.6, 128.6)
    expected = _logit_t_by_hand(COLLAPSED, T975_2)
    got = logit_t_interval(COLLAPSED, 0.95)
    assert got == pytest.approx(expected, rel=1e-12)
    assert 0.0 < got[0] < min(COLLAPSED) and max(COLLAPSED) < got[1] < 1.0
    # Hand-computed once more, rounded: [1.19%, 97.94%].
    assert (round(100 * got[0], 2), round(100 * got[1], 2)) == (1.19, 97.94)


def test_logit_t_other_level_and_n():
    values = [0.91, 0.935, 0.94, 0.89, 0.925]
    assert logit_t_interval(values, 0.90) == pytest.approx(
        _logit_t_by_hand(values, T95_4), rel=1e-9
    )


@pytest.mark.parametrize("values", [[0.5], [0.9, 1.0, 0.95], [0.0, 0.1]])
def test_logit_t_undefined_for_one_seed_or_a_seed_at_a_bound(values):
    assert all(math.isnan(v) for v in logit_t_interval(values))


@pytest.fixture
def collapsed_experiment(tmp_path):
    specs = [TrialSpec("dense", s, [(0.0, acc)]) for s, acc in enumerate([0.95, 0.96, 0.97])]
    specs += [
        TrialSpec("random", s, [(0.992, acc)])
        for s, acc in enumerate(COLLAPSED)
    ]
    return build_experiment(tmp_path, "collapse", specs)


def test_aggregate_flags_t_intervals_outside_0_100(collapsed_experiment):
    results = load_results(collapsed_experiment)
    agg = aggregate(results)
    by_method = agg.set_index("method")
    assert by_method.loc["random", "ci_low"] == pytest.approx(
        sum(COLLAPSED) / 3 - T975_2 * pd.Series(COLLAPSED).std() / math.sqrt(3)
    )
    assert bool(by_method.loc["random", "ci_outside_range"]) is True
    assert bool(by_method.loc["dense", "ci_outside_range"]) is False
    logit = aggregate(results, interval="logit-t").set_index("method")
    assert (logit.loc["random", "ci_low"], logit.loc["random", "ci_high"]) == pytest.approx(
        _logit_t_by_hand(COLLAPSED, T975_2), rel=1e-12
    )
    assert logit.loc["random", "ci_method"] == "logit-t 0.95"
    assert not logit["ci_outside_range"].any()
    with pytest.raises(ValueError, match="interval"):
        aggregate(results, interval="wilson")


def test_table_and_figure_say_what_the_interval_is(collapsed_experiment, tmp_path):
    matplotlib.rcParams["svg.fonttype"] = "none"  # keep figure text searchable in the SVG
    try:
        out = tmp_path / "t"
        assert plot_main([str(collapsed_experiment), "--out", str(out)]) == 0
        md = (out / "summary.md").read_text()
        assert "95% Student-t interval of the mean over seeds" in md
        assert "† the interval reaches past 0% or 100%" in md
        mean = 100 * sum(COLLAPSED) / 3
        half = 100 * T975_2 * pd.Series(COLLAPSED).std() / math.sqrt(3)
        assert f"| {mean:.2f} ± {half:.2f}† |" in md
        summary = pd.read_csv(out / "summary.csv")
        assert summary["ci_outside_0_100"].tolist() == [False, True]
        svg = (out / "accuracy_vs_params.svg").read_text()
        assert "95% Student-t CI" in svg
        assert "drawn cut at the frame" in svg

        out = tmp_path / "logit"
        assert plot_main([str(collapsed_experiment), "--out", str(out),
                          "--interval", "logit-t"]) == 0
        md = (out / "summary.md").read_text()
        low, high = _logit_t_by_hand(COLLAPSED, T975_2)
        assert f"| {mean:.2f} [{100 * low:.2f}, {100 * high:.2f}] |" in md
        assert "†" not in md
        svg = (out / "accuracy_vs_params.svg").read_text()
        assert "95% logit-t CI" in svg and "drawn cut at the frame" not in svg
    finally:
        matplotlib.rcParams["svg.fonttype"] = "path"
