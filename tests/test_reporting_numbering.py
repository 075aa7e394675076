"""Inside a real Ray trial, checkpoints are slots in the trial's own storage directory, and Ray
keeps one small checkpoint naming the newest.

The trial finds what an earlier attempt cut off in its directory before its first report: a
staging directory of a slot (a crash mid-write) and a `round_000000` without its index (as a
non-atomic copy would leave). Its round 0 must replace the second, ignore the first, and Ray's
checkpoint must name the slot.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

import pytest
import ray.cloudpickle
import torch
from ray import tune

from trainables.checkpoints import load_round_checkpoint
from trainables.reporting import ROUND_CHECKPOINT, TuneReporter
from trainables.trial_store import POINTER_FILE


def trainable(config: dict) -> None:
    reporter = TuneReporter()
    trial_dir = Path(reporter.store.path)
    (trial_dir / ".round_000000.tmp-0000").mkdir(parents=True)
    (trial_dir / ".round_000000.tmp-0000" / "tensors.safetensors").write_bytes(b"cut off")
    (trial_dir / "round_000000").mkdir()
    (trial_dir / "round_000000" / "tensors.safetensors").write_bytes(b"cut off")
    assert reporter.latest_state() is None
    row = {"row_type": "round", "round": 0, "test_acc": 0.5}
    reporter.report([row], {"kind": "round", "round": 0, "metrics": row,
                            "layer_sparsity": {}, "model": {"w": torch.ones(2)}})


@pytest.mark.slow
def test_a_trials_checkpoint_is_a_slot_of_its_directory(ray_local, tmp_path: Path) -> None:
    ray.cloudpickle.register_pickle_by_value(sys.modules[__name__])  # workers lack tests/
    tuner = tune.Tuner(trainable, run_config=tune.RunConfig(
        storage_path=str(tmp_path), name="slots",
        checkpoint_config=tune.CheckpointConfig(num_to_keep=1)))
    result = tuner.fit()[0]
    assert result.error is None, result.error
    trial_dir = Path(result.path)
    assert trial_dir.parent == tmp_path / "slots"
    pointer = json.loads((Path(result.checkpoint.path) / POINTER_FILE).read_text())
    assert pointer == {"slot": "round_000000"}
    assert sorted(p.name for p in Path(result.checkpoint.path).iterdir()) == [POINTER_FILE]
    assert result.metrics[ROUND_CHECKPOINT] == "round_000000"
    assert sorted(p.name for p in (trial_dir / "round_000000").iterdir()) == [
        "index.json", "metrics.json", "tensors.safetensors"]
    assert torch.equal(load_round_checkpoint(trial_dir / "round_000000")["model"]["w"],
                       torch.ones(2))
