"""Growing an experiment (sweeps/grow.py): the quickstart's shape with one more seed and one
more level runs exactly its new trials, leaves the finished ones as they were, and analyses
row for row as a fresh run of the grown file does; a changed recipe is refused in one line;
grid points taken out again are kept on disk and left out of the analysis unless --all."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
from sweep_helpers import run_sweep, tiny_base, write_sweep

from analysis import aggregate, load_results
from analysis.load import readable_name
from sweeps.grow import plan_growth
from sweeps.plan import load_sweep
from trainables.errors import ConfigError

pytestmark = pytest.mark.slow

COMPARED = ["method", "seed", "round", "target_sparsity", "sparsity", "params_total",
            "params_prunable", "val_acc", "test_acc", "best_epoch", "epochs"]


def sweep_file(path: Path, data_root: Path, seeds: list[int], levels: list[float],
               epochs: int = 2) -> Path:
    base = tiny_base(data_root, measure={"enabled": False})
    base["model"]["width"] = 8
    base["train"].update(epochs=epochs, max_batches=6)
    return write_sweep(path, name="grow", base=base, grid={"seed": seeds},
                       experiments=[
                           {"label": "dense", "config": {"method": "dense"}},
                           {"label": "imp", "config": {"method": "imp", "imp": {
                               "rounds": 2, "rate": 0.5, "rewind": "epoch:1"}}},
                           {"label": "snip", "config": {"method": "snip"},
                            "grid": {"prune.target_sparsity": levels}},
                       ], resources={"cpu": 1, "gpu": 0})


def names(experiment: Path) -> dict[str, Path]:
    return {readable_name(p.parent): p.parent for p in experiment.glob("*/params.json")}


def round_rows(experiment: Path, all_trials: bool = False) -> list[tuple]:
    results = load_results(experiment, all_trials=all_trials)
    table = results.assign(trial=results["trial_dir"].map(readable_name))
    return sorted(tuple(row) for row in table[["trial", *COMPARED]].itertuples(index=False))


@pytest.fixture(scope="module")
def grown(tmp_path_factory, data_root):
    root = tmp_path_factory.mktemp("grow")
    small = sweep_file(root / "small.yaml", data_root, [0], [0.8])
    bigger = sweep_file(root / "grown.yaml", data_root, [0, 1], [0.8, 0.96])
    first = run_sweep(str(small), "--storage", str(root / "out"))
    assert first.returncode == 0, first.stderr[-2000:]
    experiment = root / "out" / "grow"
    before = {name: (path / "result.json").read_bytes() for name, path in
              names(experiment).items()}
    second = run_sweep(str(bigger), "--storage", str(root / "out"))
    assert second.returncode == 0, second.stderr[-2000:]
    fresh = run_sweep(str(bigger), "--storage", str(root / "fresh"))
    assert fresh.returncode == 0, fresh.stderr[-2000:]
    return {"root": root, "small": small, "grown": bigger, "experiment": experiment,
            "before": before, "second": second, "fresh": root / "fresh" / "grow"}


def test_only_the_new_trials_run_and_the_old_ones_are_untouched(grown):
    experiment, before = grown["experiment"], grown["before"]
    assert set(before) == {"dense_s0", "imp_s0_p0.5x2", "snip_s0_sp0.8"}
    new = set(names(experiment)) - set(before)
    assert new == {"dense_s1", "imp_s1_p0.5x2", "snip_s0_sp0.96", "snip_s1_sp0.8",
                   "snip_s1_sp0.96"}
    for name, data in before.items():
        assert (names(experiment)[name] / "result.json").read_bytes() == data, name
    out = grown["second"].stdout
    assert "growing the experiment: 5 new trial(s) to run, 3 finished trial(s) reused" in out
    assert "5/5 trials finished" in out


def test_the_grown_experiment_analyses_as_a_fresh_run_does(grown):
    assert round_rows(grown["experiment"]) == round_rows(grown["fresh"])
    columns = ["method", "round", "target_sparsity", "sparsity", "n", "seeds", "mean", "std",
               "ci_low", "ci_high", "delta_vs_dense"]
    grown_agg = aggregate(load_results(grown["experiment"]))[columns]
    fresh_agg = aggregate(load_results(grown["fresh"]))[columns]
    assert grown_agg.equals(fresh_agg)


def test_a_changed_recipe_is_refused_with_what_changed(grown, data_root):
    changed = sweep_file(grown["root"] / "changed.yaml", data_root, [0, 1], [0.8, 0.96],
                         epochs=3)
    done = run_sweep(str(changed), "--storage", str(grown["root"] / "out"), "--dry-run")
    assert done.returncode == 2
    assert done.stderr.count("\n") == 1 and "another recipe (dense: train.epochs: 2 -> 3" in \
        done.stderr


def test_a_trial_that_did_not_finish_is_finished_before_growing(grown):
    copy = grown["root"] / "unfinished"
    shutil.copytree(grown["root"] / "out", copy)
    (names(copy / "grow")["snip_s0_sp0.8"] / "rounds.json").unlink()
    saved = json.loads((copy / "grow" / "prunetune_sweep.json").read_text())
    plan = load_sweep(grown["grown"])
    with pytest.raises(ConfigError, match="did not finish; finish the experiment there first"):
        plan_growth(copy / "grow", plan, saved)


def test_points_taken_out_stay_on_disk_and_out_of_the_analysis(grown):
    shrunk = run_sweep(str(grown["small"]), "--storage", str(grown["root"] / "out"))
    assert shrunk.returncode == 0, shrunk.stderr[-2000:]
    assert "nothing to run" in shrunk.stdout and "5 trial(s) no longer in the file" in \
        shrunk.stdout
    experiment = grown["experiment"]
    assert len(names(experiment)) == 8
    assert {row[0] for row in round_rows(experiment)} == set(grown["before"])
    assert round_rows(experiment, all_trials=True) == round_rows(grown["fresh"])
