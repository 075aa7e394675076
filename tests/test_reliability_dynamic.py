"""Trials whose mask changes during training (gmp, rigl), SIGKILLed mid-round inside a real sweep:
they continue from their progress checkpoint to exactly the numbers of an uninterrupted run, and
what a user reads (result.json, TensorBoard, results.csv) holds each (round, epoch) once."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from invariants import check_experiment, check_finished_layout
from sweep_helpers import rows, run_plot, run_sweep, tiny_base, trial_dirs, write_sweep

from trainables.reporting import DirectoryReporter
from trainables.resolve import parse_trial_config
from trainables.trial import run_trial

TRAIN = {"epochs": 3}  # 3 epochs x 2 batches: the kill lands at the start of the last epoch
METHODS = {
    0: {"method": "gmp", "prune": {"target_sparsity": 0.8},
        "gmp": {"start": 0.0, "end": 0.75, "frequency": 0.2}},
    1: {"method": "rigl", "prune": {"target_sparsity": 0.8}, "rigl": {"update_interval": 1}},
}
COMPARED = ("val_acc", "test_acc", "sparsity", "params_prunable", "best_epoch", "layer_sparsity")


@pytest.fixture(scope="module")
def killed_sweep(data_root, tmp_path_factory):
    """gmp (seed 0) and rigl (seed 1), each SIGKILLed at the start of round 1, epoch 2."""
    tmp = tmp_path_factory.mktemp("dynamic")
    fault = ";".join(f"kill_once:round=1,epoch=2,seed={seed}:{tmp / f'killed-{seed}'}"
                     for seed in METHODS)
    sweep = write_sweep(
        tmp / "dynamic.yaml",
        name="dynamic",
        base=tiny_base(data_root, train=TRAIN),
        experiments=[{"config": config, "grid": {"seed": [seed]}}
                     for seed, config in METHODS.items()],
        resources={"cpu": 1, "gpu": 0},
        max_failures=1,
    )
    process = run_sweep(str(sweep), "--storage", str(tmp / "out"), fault=fault)
    return process, tmp / "out" / "dynamic", tmp


def _reference(trial_dir: Path, tmp: Path) -> list[dict]:
    """The same trial uninterrupted, in-process, without Ray."""
    raw = json.loads((trial_dir / "params.json").read_text())["trial"]
    reporter = DirectoryReporter(tmp)
    run_trial(parse_trial_config(raw, check_ignored=False), reporter, cpus=1)
    return reporter.rows


@pytest.mark.slow
@pytest.mark.parametrize("seed", list(METHODS), ids=[c["method"] for c in METHODS.values()])
def test_killed_mid_round_resumes_exactly_and_reports_each_epoch_once(
    killed_sweep, seed, tmp_path
):
    process, experiment, tmp = killed_sweep
    assert process.returncode == 0, (process.stdout + process.stderr)[-3000:]
    assert (tmp / f"killed-{seed}").exists(), "the kill never fired"
    trial_dir = trial_dirs(experiment)[seed]
    epochs = rows(trial_dir, "epoch")
    rounds = rows(trial_dir)
    # Each epoch once, in order, although the trial died after reporting two of them.
    assert [(r["round"], r["epoch"]) for r in epochs] == [(1, 0), (1, 1), (1, 2)]
    assert [r["round"] for r in rounds] == [1]
    # Epoch 0 was reported (with its progress checkpoint: the first epoch of a process always
    # writes one) by the process that was killed; the restarted one reported only what was left,
    # so it continued inside the round. (Whether epoch 1 was checkpointed too depends on timing.)
    assert epochs[0]["pid"] != epochs[2]["pid"] == rounds[0]["pid"]

    reference = _reference(trial_dir, tmp_path)
    ref_epochs = [r for r in reference if r["row_type"] == "epoch"]
    for resumed, uninterrupted in zip(epochs, ref_epochs, strict=True):
        for key in ("train_loss", "val_acc", "sparsity", "lr"):
            assert resumed[key] == uninterrupted[key], (seed, resumed["epoch"], key)
    (ref_round,) = [r for r in reference if r["row_type"] == "round"]
    for key in COMPARED:
        assert rounds[0][key] == ref_round[key], (seed, key)


@pytest.mark.slow
def test_tensorboard_and_results_csv_hold_each_epoch_once(killed_sweep, tmp_path):
    from tensorboard.backend.event_processing.event_file_loader import EventFileLoader

    process, experiment, _ = killed_sweep
    assert process.returncode == 0, (process.stdout + process.stderr)[-3000:]
    for trial_dir in trial_dirs(experiment).values():
        logged: dict[str, list[int]] = {"val/acc": [], "round/val_acc": []}
        for events in sorted(trial_dir.glob("events.out.tfevents.*")):
            for event in EventFileLoader(str(events)).Load():
                for value in event.summary.value:
                    if value.tag in logged:
                        logged[value.tag].append(event.step)
        epochs, rounds = rows(trial_dir, "epoch"), rows(trial_dir)
        assert len(epochs) + len(rounds) == 4, trial_dir.name
        # One step per epoch, counting on across the restart: none repeated, none skipped.
        assert logged["val/acc"] == list(range(len(epochs))), (trial_dir.name, logged)
        assert logged["round/val_acc"] == [row["round"] for row in rounds], trial_dir.name
    plot = run_plot(str(experiment), "--out", str(tmp_path))
    assert plot.returncode == 0, plot.stdout + plot.stderr
    import pandas as pd

    results = pd.read_csv(tmp_path / "results.csv")
    assert len(results) == 2 and not results.duplicated(["trial_id", "round"]).any()


@pytest.mark.slow
def test_killed_dynamic_sweep_checkpoints_satisfy_invariants(killed_sweep):
    process, experiment, _ = killed_sweep
    assert process.returncode == 0, (process.stdout + process.stderr)[-3000:]
    # One round checkpoint per trial, and nothing else once the sweep has tidied the trials:
    # the progress slots the kill left were replaced and removed.
    assert check_experiment(experiment) == 2
    assert check_finished_layout(experiment) == 2
