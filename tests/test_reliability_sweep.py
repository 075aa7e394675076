"""Faults injected into real sweeps (run_sweep.py as a subprocess, Ray started by it, the fault
hook `PRUNETUNE_FAULT` inherited by its Ray workers): a trial that raises, a trial whose process
is SIGKILLed and a trial whose loss turns NaN.
Every checkpoint the sweeps write is checked with tests/invariants.py. (A full disk:
test_reliability_disk.py.)"""

from __future__ import annotations

import math

import pytest
import torch
from invariants import check_experiment, check_finished_layout
from sweep_helpers import (
    reference_rounds,
    rows,
    run_plot,
    run_sweep,
    tiny_base,
    trial_dirs,
    write_sweep,
)

from trainables.checkpoints import load_round_checkpoint

IMP = {"rounds": 2, "rate": 0.5, "rewind": "init"}
COMPARED = ("val_acc", "test_acc", "sparsity", "params_total", "params_prunable", "best_epoch")


@pytest.fixture(scope="module")
def fault_sweep(data_root, tmp_path_factory):
    """One sweep of three IMP trials: seed 0 raises at round 1 epoch 0, seed 1 is SIGKILLed at
    round 1 epoch 1 (after reporting that round's epoch 0), seed 2's loss is NaN in round 1."""
    tmp = tmp_path_factory.mktemp("faults")
    markers = tmp / "markers"
    markers.mkdir()
    fault = ";".join([
        f"crash_once:round=1,epoch=0,seed=0:{markers / 'crash'}",
        f"kill_once:round=1,epoch=1,seed=1:{markers / 'kill'}",
        "nan_loss:round=1,seed=2",
    ])
    sweep = write_sweep(
        tmp / "faults.yaml",
        name="faults",
        base=tiny_base(data_root, method="imp", imp=IMP),
        grid={"seed": [0, 1, 2]},
        resources={"cpu": 1, "gpu": 0},
        max_failures=1,
    )
    storage = tmp / "out"
    process = run_sweep(str(sweep), "--storage", str(storage), fault=fault)
    return process, storage / "faults", markers


@pytest.mark.slow
def test_sweep_survives_faults_and_exits_0(fault_sweep):
    process, experiment, markers = fault_sweep
    output = process.stdout + process.stderr
    assert process.returncode == 0, output[-3000:]
    # Both one-shot faults really fired inside the Ray workers (the env var reached them).
    assert (markers / "crash").exists() and (markers / "kill").exists()
    assert "3/3 trials finished" in process.stdout
    assert "diverged (kept out of averages)" in process.stdout


@pytest.mark.slow
@pytest.mark.parametrize("seed", [0, 1], ids=["raise", "sigkill"])
def test_crashed_trial_resumes_and_matches_uninterrupted_run(fault_sweep, seed, tmp_path):
    process, experiment, _ = fault_sweep
    assert process.returncode == 0, (process.stdout + process.stderr)[-3000:]
    trial_dir = trial_dirs(experiment)[seed]
    round_rows = rows(trial_dir)
    # Each round reported once: the restart continued after its round-0 checkpoint.
    assert [row["round"] for row in round_rows] == [0, 1, 2]
    assert len({row["pid"] for row in round_rows}) == 2, "the trial was not restarted"
    assert round_rows[0]["pid"] != round_rows[1]["pid"]
    # Round 0's epochs ran once; the restart did not retrain the dense model.
    assert [r["epoch"] for r in rows(trial_dir, "epoch") if r["round"] == 0] == [0, 1]
    # Every (round, epoch) is reported once, the interrupted round's included.
    reported = [(r["round"], r["epoch"]) for r in rows(trial_dir, "epoch")]
    assert reported == [(k, e) for k in (0, 1, 2) for e in (0, 1)], reported

    reference = reference_rounds(trial_dir, tmp_path)
    assert [row["round"] for row in reference] == [0, 1, 2]
    for resumed, uninterrupted in zip(round_rows, reference, strict=True):
        for key in COMPARED:
            assert resumed[key] == uninterrupted[key], (seed, resumed["round"], key)
        assert resumed["layer_sparsity"] == uninterrupted["layer_sparsity"]


@pytest.mark.slow
def test_diverged_trial_stops_cleanly_with_last_good_metrics(fault_sweep):
    process, experiment, _ = fault_sweep
    assert process.returncode == 0, (process.stdout + process.stderr)[-3000:]
    trial_dir = trial_dirs(experiment)[2]
    assert not (trial_dir / "error.txt").exists()
    round_rows = rows(trial_dir)
    assert [row["round"] for row in round_rows] == [0, 1]  # round 2 never started
    assert [row["status"] for row in round_rows] == ["ok", "diverged"]
    assert round_rows[-1]["final_round"] is True
    assert all(math.isfinite(round_rows[-1][key]) for key in ("val_acc", "test_acc"))
    # The diverged round's checkpoint holds the last good (finite) weights, its one set: the
    # round ends the trial.
    newest = sorted(trial_dir.glob("round_*"))[-1]
    state = load_round_checkpoint(newest)
    assert state["round"] == 1 and "model" not in state
    weights = state["best_model"]
    assert all(torch.isfinite(t).all() for t in weights.values() if t.is_floating_point())


@pytest.mark.slow
def test_plot_lists_diverged_trial_and_keeps_it_out_of_averages(fault_sweep, tmp_path):
    process, experiment, _ = fault_sweep
    assert process.returncode == 0, (process.stdout + process.stderr)[-3000:]
    plot = run_plot(str(experiment), "--out", str(tmp_path))
    assert plot.returncode == 0, plot.stdout + plot.stderr
    text = plot.stdout + plot.stderr
    assert "diverged" in text and "excluded" in text.lower(), text
    excluded = (tmp_path / "excluded_trials.csv").read_text()
    assert "diverged" in excluded and len(excluded.strip().splitlines()) == 2, excluded
    import pandas as pd

    summary = pd.read_csv(tmp_path / "summary.csv")
    seeds_column = next(c for c in summary.columns if c in ("n_seeds", "n", "seeds"))
    assert (summary[seeds_column] == 2).all(), summary.to_string()
    assert "diverged" in (tmp_path / "summary.md").read_text()


@pytest.mark.slow
def test_fault_sweep_checkpoints_satisfy_invariants(fault_sweep):
    process, experiment, _ = fault_sweep
    assert process.returncode == 0, (process.stdout + process.stderr)[-3000:]
    # 3 + 3 + 2 round checkpoints, and after the restarts nothing superseded is left.
    assert check_experiment(experiment) == 8
    assert check_finished_layout(experiment) == 8
