"""A restarted trial's next checkpoint never lands in a directory an earlier attempt left.

Ray numbers a trial's checkpoints on from the last one its driver logged. Here a trial finds
`checkpoint_000000` (a superseded marker) and `checkpoint_000001` (cut off by a full disk) in
its directory before its first report, as a trial restarted from nothing after such a crash
does; its first checkpoint must be `checkpoint_000002`, and the two old ones stay as they were.
"""

from __future__ import annotations

import sys
from pathlib import Path

import pytest
import ray.cloudpickle
import torch
from ray import tune

from trainables.reporting import SUPERSEDED, TuneReporter


def trainable(config: dict) -> None:
    from ray.train._internal.session import get_session

    # Where Ray persists this trial's checkpoints (a local storage path here).
    trial_dir = Path(get_session().storage.trial_fs_path)
    (trial_dir / "checkpoint_000000").mkdir(parents=True)
    (trial_dir / "checkpoint_000000" / SUPERSEDED).write_text("old\n")
    (trial_dir / "checkpoint_000001").mkdir()
    (trial_dir / "checkpoint_000001" / "tensors.safetensors.tmp").write_bytes(b"cut off")
    row = {"row_type": "round", "round": 0, "test_acc": 0.5}
    TuneReporter().report([row], {"kind": "round", "round": 0, "metrics": row,
                                  "layer_sparsity": {}, "model": {"w": torch.ones(2)}})


@pytest.mark.slow
def test_the_first_checkpoint_is_numbered_past_those_on_disk(ray_local, tmp_path: Path) -> None:
    ray.cloudpickle.register_pickle_by_value(sys.modules[__name__])  # workers lack tests/
    tuner = tune.Tuner(trainable, run_config=tune.RunConfig(storage_path=str(tmp_path),
                                                            name="numbering"))
    result = tuner.fit()[0]
    assert result.error is None, result.error
    trial_dir = Path(result.path)
    assert Path(result.checkpoint.path).name == "checkpoint_000002"
    assert sorted(p.name for p in (trial_dir / "checkpoint_000000").iterdir()) == [SUPERSEDED]
    assert sorted(p.name for p in (trial_dir / "checkpoint_000001").iterdir()) == [
        "tensors.safetensors.tmp"]
    assert sorted(p.name for p in (trial_dir / "checkpoint_000002").iterdir()) == [
        "index.json", "metrics.json", "tensors.safetensors"]
