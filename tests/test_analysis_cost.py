"""Measured cost in the analysis: FLOPs, latency and speedup against dense, as means over seeds
checked against values worked out by hand on a synthetic experiment; the accuracy-vs-latency and
accuracy-vs-FLOPs figures; levels named by a row field (a channel fraction)."""

from __future__ import annotations

import math
from typing import Any

import pandas as pd
import pytest

from analysis import aggregate, load_results, matching_sparsity, plot
from analysis.report import summary_markdown, summary_table, terminal_text

try:
    from fixtures_experiments import TrialSpec, build_experiment, build_standard_experiment
except ImportError:  # tests/ collected as a package
    from tests.fixtures_experiments import TrialSpec, build_experiment, build_standard_experiment

PNG_MAGIC = b"\x89PNG\r\n\x1a\n"
SEEDS = (0, 1, 2)


def cost(flops: float, effective: float, b1: float, b64: float, speedup1: float = 1.0,
         speedup64: float = 1.0, disturbed64: str | None = None) -> dict[str, Any]:
    """A measured round's cost fields as trainables/measure.py writes them: the times as
    measured and each batch size's paired speedup over the trial's dense reference."""
    fields: dict[str, Any] = {"flops": flops, "flops_effective": effective,
                              "latency_device": "cpu"}
    for batch, ms, speedup in ((1, b1, speedup1), (64, b64, speedup64)):
        fields.update({f"latency_ms_b{batch}": ms, f"latency_dense_ms_b{batch}": ms * speedup,
                       f"speedup_b{batch}": speedup, f"speedup_b{batch}_low": speedup * 0.95,
                       f"speedup_b{batch}_high": speedup * 1.05,
                       f"latency_disturbed_b{batch}": None})
    fields["latency_disturbed_b64"] = disturbed64
    return fields


DISTURBED = "the pairs' ratios spread 0.40 in log terms (limit 0.25)"
# By hand, over seeds 0, 1, 2 (times: arithmetic means, as measured; speedups: the rows' own
# paired speedups, geometric means over seeds):
#   dense:              b1 2.0, 2.2, 2.4 -> 2.2;   b64 20, 22, 24 -> 22;   speedups 1, flops 1000
#   IMP rounds 1, 2:    speedups 1;                 flops 1000, effective 500 and 250
#     (round 0 reports 9.9 ms: a dense start, never part of the reference or the line)
#   channels at 0.5:    b1 1.0, 1.1, 1.2 -> 1.1, speedups 1.6, 2.0, 2.5 -> (8)^(1/3) = 2
#                       (their arithmetic mean would be 2.033); b64 5.0, 5.5, 6.0 -> 5.5,
#                       speedups 4, 2, 8 -> (64)^(1/3) = 4, seed 2's disturbed;
#                       flops 400, 410, 420 -> 410
#   channel fraction 0.3 and 0.6 (level_by target_channel_fraction): acc 0.70/0.72/0.74 -> 0.72
#     and 0.60/0.62/0.64 -> 0.62
CHANNEL_SPEEDUPS = {0: (1.6, 4.0), 1: (2.0, 2.0), 2: (2.5, 8.0)}


def specs() -> list[TrialSpec]:
    out = []
    for seed in SEEDS:
        out.append(TrialSpec("dense", seed, [(0.0, 0.80 + 0.02 * seed)],
                             round_fields=[cost(1000, 1000, 2.0 + 0.2 * seed, 20 + 2 * seed)]))
        out.append(TrialSpec(
            "imp", seed, [(0.0, 0.9), (0.5, 0.8), (0.75, 0.78)],
            schedule="iterative",
            round_fields=[cost(1000, 1000, 9.9, 99), cost(1000, 500, 2.2, 22),
                          cost(1000, 250, 2.2, 22)]))
        speedup1, speedup64 = CHANNEL_SPEEDUPS[seed]
        out.append(TrialSpec(
            "channels", seed, [(0.5, 0.79 + 0.01 * seed)], schedule="oneshot",
            round_fields=[{"label": "channels, L1 norm",
                           **cost(400 + 10 * seed, 400 + 10 * seed, 1.0 + 0.1 * seed,
                                  5.0 + 0.5 * seed, speedup1, speedup64,
                                  DISTURBED if seed == 2 else None)}]))
        for fraction, acc in ((0.3, 0.70), (0.6, 0.60)):
            out.append(TrialSpec(
                "channels", seed, [(fraction, acc + 0.02 * seed)],
                schedule="oneshot",
                extra_config={"channels.target": "channels", "channels.channel_fraction": fraction},
                round_fields=[{"label": "channels, L1 norm by channel fraction",
                               "level_by": "target_channel_fraction",
                               "target_channel_fraction": fraction, "target_sparsity": None,
                               **cost(300, 300, 1.0, 5.0)}]))
    return out


@pytest.fixture(scope="module")
def experiment(tmp_path_factory):
    return build_experiment(tmp_path_factory.mktemp("cost"), "cost", specs(),
                            grid_keys=["method", "seed"])


@pytest.fixture(scope="module")
def agg(experiment):
    return aggregate(load_results(experiment))


def one(agg, **where):
    rows = agg
    for key, value in where.items():
        rows = rows[rows[key] == value]
    assert len(rows) == 1, where
    return rows.iloc[0]


def test_cost_means_and_speedups_by_hand(agg):
    dense = one(agg, method="dense")
    assert dense["latency_ms_b1"] == pytest.approx(2.2)
    assert dense["latency_ms_b64"] == pytest.approx(22)
    assert dense["speedup_b1"] == pytest.approx(1.0) and dense["flops"] == 1000
    channels = one(agg, label="channels, L1 norm")
    assert channels["latency_ms_b1"] == pytest.approx(1.1)
    assert channels["speedup_b1"] == pytest.approx(2.0)  # geometric, not 2.033
    assert channels["speedup_b64"] == pytest.approx(4.0)
    assert (channels["disturbed_b1"], channels["disturbed_b64"]) == (0, 1)
    assert channels["disturbed_reason_b64"] == DISTURBED
    assert channels["flops"] == pytest.approx(410)
    assert channels["dense_latency_ms_b1"] == pytest.approx(2.2)
    for round_index, effective in ((1, 500), (2, 250)):
        imp = one(agg, method="imp", round=round_index)
        assert imp["speedup_b1"] == pytest.approx(1.0)
        assert imp["flops"] == 1000 and imp["flops_effective"] == effective


def test_no_speedup_is_formed_from_times_of_different_trials(tmp_path):
    """Rows without paired fields (an experiment older than them) give no speedup at all, not
    one divided out of two trials' absolute times."""
    unpaired = {"flops": 1000, "flops_effective": 1000, "latency_device": "cpu"}
    specs = [TrialSpec("dense", 0, [(0.0, 0.8)],
                       round_fields=[{**unpaired, "latency_ms_b1": 2.0, "latency_ms_b64": 20}]),
             TrialSpec("snip", 0, [(0.5, 0.7)],
                       round_fields=[{**unpaired, "latency_ms_b1": 1.0, "latency_ms_b64": 10}])]
    rows = aggregate(load_results(build_experiment(tmp_path, "old", specs,
                                                   grid_keys=["method", "seed"])))
    snip = one(rows, method="snip")
    assert snip["latency_ms_b1"] == 1.0 and pd.isna(snip.get("speedup_b1", math.nan))


def test_a_level_named_by_a_row_field(agg):
    by_fraction = agg[agg["label"] == "channels, L1 norm by channel fraction"]
    assert list(by_fraction["level_by"]) == ["target_channel_fraction"] * 2
    assert by_fraction["target_channel_fraction"].tolist() == pytest.approx([0.3, 0.6])
    assert by_fraction["mean"].tolist() == pytest.approx([0.72, 0.62])
    assert by_fraction["n"].tolist() == [3, 3]


def test_summary_tables_carry_cost_and_speedup(agg):
    matching = matching_sparsity(agg)
    summary = summary_table(agg, matching)
    channels = summary[summary["label"] == "channels, L1 norm"].iloc[0]
    assert channels["latency_ms_b1"] == pytest.approx(1.1)
    assert channels["speedup_b64"] == pytest.approx(4.0)
    assert channels["flops"] == pytest.approx(410)
    excluded = pd.DataFrame(columns=["experiment"])
    markdown = summary_markdown(summary, matching, excluded, agg, "cost", 1.0)
    assert "| MMACs | b1 ms (x dense) | b64 ms (x dense) |" in markdown
    assert "| 0.00041 | 1.1 (2.00) | 5.5 (4.00‡) |" in markdown
    assert "timed against its trial's dense reference side by side" in markdown
    assert "‡ the load changed while it was measured" in markdown
    assert f"channels, L1 norm at batch 64 (1 seed(s): {DISTURBED})" in markdown
    text = terminal_text(summary, matching, excluded, agg, 1.0)
    assert "b1 ms (x dense)" in text and "1.1 (2.00)" in text and "22 (1.00)" in text


def test_plot_draws_latency_and_flops_figures_only_where_measured(experiment, tmp_path):
    assert plot.main([str(experiment), "--out", str(tmp_path / "cost")]) == 0
    for stem in ("accuracy_vs_speedup", "accuracy_vs_flops"):
        data = (tmp_path / "cost" / f"{stem}.png").read_bytes()
        assert data[:8] == PNG_MAGIC and len(data) > 20_000, stem
    assert plot.main([str(experiment), "--out", str(tmp_path / "b64"),
                      "--latency-batch", "64"]) == 0
    assert (tmp_path / "b64" / "accuracy_vs_speedup.svg").is_file()
    unmeasured = build_standard_experiment(tmp_path / "plain")
    assert plot.main([str(unmeasured), "--out", str(tmp_path / "plain_out")]) == 0
    assert not list((tmp_path / "plain_out").glob("accuracy_vs_speedup.*"))
    assert not list((tmp_path / "plain_out").glob("accuracy_vs_flops.*"))


def test_without_any_dense_trial_the_paired_speedup_still_stands(tmp_path):
    # Only a method trained from scratch (as gmp): no dense trial and no round 0. Each round was
    # timed against its own trial's dense reference, so its speedup needs none: 1.2, 1.0 and
    # 1.44 -> (1.728)^(1/3) = 1.2. The latencies are averaged as measured (1.0, 1.2, 1.4 -> 1.2).
    only_sparse = [TrialSpec("gmp", seed, [(0.9, 0.8)],
                             round_fields=[cost(300, 30, 1.0 + 0.2 * seed, 8.0,
                                                speedup1=(1.2, 1.0, 1.44)[seed])])
                   for seed in SEEDS]
    rows = aggregate(load_results(build_experiment(tmp_path, "sparse", only_sparse,
                                                   grid_keys=["method", "seed"])))
    gmp = one(rows, method="gmp")
    assert gmp["latency_ms_b1"] == pytest.approx(1.2)
    assert gmp["speedup_b1"] == pytest.approx(1.2) and pd.isna(gmp["dense_mean"])
