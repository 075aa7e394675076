"""analysis.load: reading Ray Tune experiment directories into the tidy table."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

from analysis import AnalysisInputError, excluded_trials, load_results
from analysis.load import RESULT_COLUMNS, load_epochs, load_layer_sparsity

try:
    from fixtures_experiments import TrialSpec, build_experiment, build_standard_experiment
except ImportError:  # tests/ collected as a package
    from tests.fixtures_experiments import TrialSpec, build_experiment, build_standard_experiment

REPO = Path(__file__).resolve().parent.parent


@pytest.fixture
def experiment(tmp_path):
    return build_standard_experiment(tmp_path)


@pytest.mark.slow
def test_analysis_imports_neither_torch_nor_ray():
    code = (
        "import sys, analysis, analysis.figures, analysis.plot; "
        "bad = [m for m in ('torch', 'ray') if m in sys.modules]; "
        "assert not bad, bad"
    )
    subprocess.run([sys.executable, "-c", code], cwd=REPO, check=True, timeout=60)


def test_one_row_per_trial_and_round_with_all_columns(experiment):
    df = load_results(experiment)
    # 3 dense x1 + 3 IMP iterative x4 + 3 one-shot x2 + 6 snip x1 + 2 random x1
    # + errored 2 + unfinished 1 + diverged 1 rounds.
    assert len(df) == 3 + 12 + 6 + 6 + 2 + 2 + 1 + 1
    assert list(df.columns[: len(RESULT_COLUMNS)]) == RESULT_COLUMNS
    assert "prune.target_sparsity" in df.columns  # swept key, dotted name
    assert "some_future_field" in df.columns  # unknown fields survive
    assert not df.duplicated(["trial_id", "round"]).any()
    assert set(df["experiment"]) == {"toy_study"}
    # Full precision kept.
    row = df[
        (df["method"] == "snip")
        & (df["seed"] == 1)
        & (df["target_sparsity"] == 0.5)
        & (df["scorer"] == "snip")
    ]
    assert row["test_acc"].item() == 0.812
    assert row["sparsity"].item() == 0.5 + 0.001
    assert row["params_prunable"].item() == round((1 - 0.501) * 1_000_000)


def test_trial_status_classification(experiment):
    df = load_results(experiment)
    statuses = df.drop_duplicates("trial_id").set_index("trial_id")["trial_status"]
    assert statuses.value_counts().to_dict() == {
        "finished": 3 + 3 + 3 + 6 + 2,
        "errored": 1,
        "unfinished": 1,
        "diverged": 1,
    }
    excluded = excluded_trials(df)
    assert sorted(excluded["trial_status"]) == ["diverged", "errored", "unfinished"]
    errored = excluded[excluded["trial_status"] == "errored"].iloc[0]
    assert "RuntimeError: CUDA out of memory" in errored["reason"]
    assert errored["rounds_reported"] == 2
    diverged = excluded[excluded["trial_status"] == "diverged"].iloc[0]
    assert diverged["seed"] == 4 and "diverged in round 1" in diverged["reason"]
    # Their completed rounds are still in the table.
    assert (df["trial_status"] == "errored").sum() == 2


def test_trial_without_rounds_is_listed(tmp_path):
    exp = build_experiment(tmp_path, "e", [TrialSpec("dense", 0, [(0.0, 0.8)])])
    dead = exp / "train_fn_a1b2c_00009_9_seed=9_2026-01-01_00-00-00"
    dead.mkdir()
    (dead / "params.json").write_text(json.dumps({"method": "imp", "seed": 9}))
    (dead / "error.txt").write_text("Failure # 1\nValueError: bad config\n")
    df = load_results(exp)
    excluded = excluded_trials(df)
    assert excluded["trial_id"].tolist() == ["a1b2c_00009"]
    assert excluded["rounds_reported"].tolist() == [0]
    assert "ValueError: bad config" in excluded["reason"].iloc[0]


def test_swept_keys_inferred_without_sweep_file(tmp_path):
    specs = [
        TrialSpec("dense", s, [(0.0, 0.8)], extra_config={"train.lr": lr})
        for s in (0, 1)
        for lr in (0.1, 0.01)
    ]
    exp = build_experiment(tmp_path, "nosweep", specs, write_sweep=False)
    df = load_results(exp)
    assert df.attrs["swept_keys"] == ["seed", "train.lr"]
    assert sorted(df["train.lr"].unique()) == [0.01, 0.1]
    assert set(df["experiment"]) == {"nosweep"}  # name from the folder


def test_truncated_line_and_rereported_round(tmp_path):
    exp = build_experiment(
        tmp_path,
        "e",
        [TrialSpec("imp", 0, [(0.0, 0.8), (0.5, 0.7)], schedule="iterative")],
    )
    result = next(exp.glob("*/result.json"))
    lines = result.read_text().splitlines()
    round1 = json.loads(lines[-1])
    # A restored trial reports round 1 again (the last report wins), then dies mid-line.
    round1["test_acc"] = 0.75
    written = lines + [json.dumps(round1), '{"row_type": "rou']
    result.write_text("\n".join(written))  # cut off: no newline after the partial row
    with pytest.warns(UserWarning, match=f"skipped its cut-off last line \\({len(written)}\\)"):
        df = load_results(exp)
    assert df["round"].tolist() == [0, 1]
    assert df.loc[df["round"] == 1, "test_acc"].item() == 0.75
    # A damaged line elsewhere is named as such, by its line number.
    result.write_text("\n".join(["{oops", *written[:-1]]) + "\n")
    with pytest.warns(UserWarning, match=r"skipped 1 unparsable line\(s\): \[1\]"):
        assert load_results(exp)["round"].tolist() == [0, 1]


def test_epochs_and_layer_sparsity_read_from_json(experiment):
    epochs = load_epochs(experiment)
    assert {"epoch", "train_loss", "images_per_s"} <= set(epochs.columns)
    df = load_results(experiment)
    rows = df[(df["method"] == "imp") & (df["round"] == 3) & (df["trial_status"] == "finished")]
    layers = load_layer_sparsity(rows)
    assert len(layers) == 3 * 3  # 3 seeds x 3 layers
    conv1 = layers[layers["param"] == "conv1.weight"]
    # conv1 keeps round((1 - 0.876 * 0.5) * 200000) weights in the fixture.
    assert (conv1["remaining"] == round((1 - 0.876 * 0.5) * 200_000)).all()


def test_bad_inputs_raise_one_line_errors(tmp_path):
    with pytest.raises(AnalysisInputError, match="no such directory"):
        load_results(tmp_path / "missing")
    (tmp_path / "empty").mkdir()
    with pytest.raises(AnalysisInputError, match="no trial directories"):
        load_results(tmp_path / "empty")
