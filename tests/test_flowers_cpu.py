"""sweeps/flowers_cpu.yaml, the front page's real-data study, is valid and runs: one --smoke
trial of it (IMP, every round) on the shared Flowers-102 copy, skipped where there is none.
The study itself (half an hour on 2 cores) runs under `make docs-flowers`, not in CI."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest

from sweeps.plan import load_sweep
from trainables.reporting import DirectoryReporter
from trainables.trial import run_trial

REPO = Path(__file__).resolve().parents[1]
SWEEP = REPO / "sweeps" / "flowers_cpu.yaml"
ROOT = Path(os.environ.get("PRUNETUNE_FLOWERS_ROOT", REPO.parent / "shared" / "data"))


def test_the_study_is_the_grid_the_readme_describes():
    plan = load_sweep(SWEEP, [f"data.root={ROOT}"])
    counts: dict[str, int] = {}
    for trial in plan.trials:
        counts[trial.method] = counts.get(trial.method, 0) + 1
    # 3 seeds: dense, one IMP trial (3 rounds), 3 levels of each at-init / sparse-training
    # method, and the budget-matched dense control.
    assert counts == {"dense": 3, "imp": 3, "gmp": 9, "rigl": 9, "snip": 9, "synflow": 9,
                      "random": 9, "budget_dense": 3}
    budget = next(t.config for t in plan.trials if t.method == "budget_dense")
    assert budget.train.epochs == 30 + 3 * 29  # IMP's: dense, then 3 rounds from epoch 1


@pytest.mark.slow
def test_one_smoke_trial_runs_on_the_real_images(tmp_path):
    if not (ROOT / "flowers-102" / "setid.mat").exists():
        pytest.skip(f"no Flowers-102 copy at {ROOT} (set PRUNETUNE_FLOWERS_ROOT)")
    plan = load_sweep(SWEEP, [f"data.root={ROOT}", f"data.cache_dir={tmp_path / 'cache'}"],
                      smoke=True, storage=str(tmp_path / "out"))
    config = next(t.config for t in plan.trials if t.method == "imp" and t.config.seed == 0)
    run_trial(config, DirectoryReporter(tmp_path / "trial"), cpus=1)
    lines = (tmp_path / "trial" / "result.json").read_text().splitlines()
    rounds = [row for row in map(json.loads, lines) if row.get("row_type") == "round"]
    assert [row["round"] for row in rounds] == [0, 1, 2, 3]
    assert [row["target_sparsity"] for row in rounds] == pytest.approx([0.0, 0.8, 0.96, 0.992])
    assert all(0.0 <= row["test_acc"] <= 1.0 for row in rounds)
    assert rounds[0]["params_total_dense"] == rounds[0]["params_total"]
