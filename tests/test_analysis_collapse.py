"""Layer collapse: a round whose mask leaves a layer with no weights is flagged in results.csv,
counted per level, warned about in summary.md and on the terminal, and marked in the figure.
The dead layer is planted by hand in one seed's round checkpoint of the standard experiment,
which otherwise has none."""

from __future__ import annotations

import json

import matplotlib
import pandas as pd
import pytest

from analysis import aggregate, load_results
from analysis.collapse import collapsed_rounds, mark_dead_layers
from analysis.plot import main

try:
    from fixtures_experiments import build_standard_experiment
except ImportError:  # tests/ collected as a package
    from tests.fixtures_experiments import build_standard_experiment


def plant_dead_layer(experiment, method: str, seed: int, target: float, param: str) -> str:
    """Empty `param` in that trial's last round checkpoint; returns the trial directory name."""
    for trial_dir in sorted(experiment.glob(f"*method={method},seed={seed}_*")):
        config = json.loads((trial_dir / "params.json").read_text())["trial"]
        if config["prune"]["target_sparsity"] != target:
            continue
        metrics_file = sorted(trial_dir.glob("round_*/metrics.json"))[-1]
        metrics = json.loads(metrics_file.read_text())
        metrics["layer_sparsity"][param].update(remaining=0, sparsity=1.0)
        metrics_file.write_text(json.dumps(metrics))
        return trial_dir.name
    raise AssertionError("no such trial")


@pytest.fixture()
def planted(tmp_path):
    experiment = build_standard_experiment(tmp_path)
    name = plant_dead_layer(experiment, "snip", 2, 0.9, "layer1.0.conv1.weight")
    return experiment, name


def test_the_planted_layer_is_the_one_flagged(planted):
    experiment, name = planted
    results = mark_dead_layers(load_results(experiment))
    flagged = results[results["dead_layers"].fillna("") != ""]
    assert flagged["trial_dir"].map(lambda d: d.endswith(name)).tolist() == [True]
    assert flagged["dead_layers"].tolist() == ["layer1.0.conv1.weight"]
    (row,) = collapsed_rounds(results).itertuples()
    assert (row.method, row.seed, row.round) == ("snip", 2, 1)
    agg = aggregate(results)
    snip = agg[(agg["method"] == "snip") & (agg["scorer"] == "snip")]
    assert snip.set_index("target_sparsity")["collapsed_seeds"].to_dict() == {0.5: 0, 0.9: 1}
    assert (agg.loc[agg["method"] != "snip", "collapsed_seeds"] == 0).all()


def test_summary_terminal_and_figure_warn(planted, capsys):
    experiment, _ = planted
    with matplotlib.rc_context({"svg.fonttype": "none"}):  # keep the figure's text as text
        assert main([str(experiment)]) == 0
    out = capsys.readouterr().out
    assert ("warning: layer collapse: SNIP seed 2 round 1 (90.10% sparsity): no weights left "
            "in layer1.0.conv1.weight") in out
    md = (experiment / "summary.md").read_text()
    assert "**Warning: 1 round(s) leave a layer with no weights**" in md
    assert "| SNIP | 2 | 1 | 90.10 | layer1.0.conv1.weight |" in md
    assert "a layer has no weights (summary.md)" in (experiment / "accuracy_vs_params.svg") \
        .read_text()
    assert pd.read_csv(experiment / "results.csv")["dead_layers"].notna().any()


def test_no_dead_layer_says_so_with_what_was_checked(tmp_path, capsys):
    experiment = build_standard_experiment(tmp_path)
    assert main([str(experiment)]) == 0
    assert "layer collapse" not in capsys.readouterr().out
    md = (experiment / "summary.md").read_text()
    finished = load_results(experiment).query("trial_status == 'finished'")
    assert (f"None: every checked round keeps weights in every layer ({len(finished)} of the "
            f"finished trials' {len(finished)} rounds checked") in md
