"""Data-parallel trials as a user runs them (`sweeps/run_sweep.py` in a subprocess), on a
two-node `ray.cluster_utils.Cluster` of one CPU each, so that a trial's two workers sit on both
nodes: a dense and an IMP experiment with `resources: {workers: 2}`, IMP reusing the dense model
through the shared cache (rank 0 alone holds the cache's lock), then `plot`; then the IMP trial
again with rank 1 stalled at the start of round 1 while the second node is removed (and a fresh
node added for the restarted worker group): its rows equal the whole run's, each once.
"""

from __future__ import annotations

import csv
import json
import shutil
from pathlib import Path
from typing import Any

import pytest
from sweep_helpers import act_during_sweep, run_plot, run_sweep, write_sweep

pytestmark = pytest.mark.slow

PLUGIN = Path(__file__).parent / "plugins" / "plain_cnn.py"


def _rows(experiment: Path) -> dict[str, list[dict[str, Any]]]:
    """{method: rows} of the experiment's trials."""
    found = {}
    for result in experiment.glob("*/result.json"):
        rows = [json.loads(line) for line in result.read_text().splitlines()]
        found[next(r["method"] for r in rows if r.get("row_type") == "round")] = rows
    return found


def _of(rows: list[dict[str, Any]], kind: str) -> list[dict[str, Any]]:
    return [row for row in rows if row.get("row_type") == kind]


def test_two_worker_trials_span_two_nodes_share_the_dense_model_and_survive_a_lost_node(
        data_root: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from ray.cluster_utils import Cluster

    shutil.copy(PLUGIN, tmp_path / "plain_cnn.py")
    marker = tmp_path / "stalled"
    marker.write_text("disarmed")  # armed below, once the whole run is done
    monkeypatch.setenv("PRUNETUNE_FAULT", f"stall_once:round=1,epoch=0,rank=1,seconds=30:{marker}")
    base = {"data": {"name": "digits", "root": str(data_root)},
            "model": {"name": "plain_cnn", "width": 8},
            "train": {"epochs": 2, "batch_size": 32, "max_batches": 6, "optimizer": "adamw",
                      "lr": 0.01, "device": "cpu"},
            "measure": {"batch_sizes": [1], "budget_s": 0.0, "min_repeats": 1}}
    imp = {"label": "imp", "config": {"method": "imp", "imp": {"rounds": 2, "rate": 0.5}}}
    storage = tmp_path / "shared"

    def sweep(name: str, experiments: list[dict[str, Any]]) -> list[str]:
        path = write_sweep(tmp_path / f"{name}.yaml", name=name, plugins=["./plain_cnn.py"],
                           base=base, experiments=experiments,
                           resources={"workers": 2, "cpu": 1}, loggers=[])
        return [str(path), "--address", cluster.address, "--storage", str(storage)]

    def lose_the_second_node() -> None:
        cluster.remove_node(second, allow_graceful=False)
        cluster.add_node(num_cpus=1)

    cluster = Cluster(initialize_head=True,
                      head_node_args={"num_cpus": 1, "include_dashboard": False})
    try:
        second = cluster.add_node(num_cpus=1)
        cluster.wait_for_nodes()
        whole = run_sweep(*sweep("whole", [{"label": "dense", "config": {"method": "dense"}}, imp]))
        assert whole.returncode == 0, whole.stdout[-3000:] + whole.stderr[-3000:]
        assert "at most 1 at once" in whole.stdout
        marker.unlink()
        returncode, output = act_during_sweep(marker.exists, lose_the_second_node,
                                              *sweep("lost", [imp]),
                                              never="rank 1 never reached round 1")
    finally:
        cluster.shutdown()
    assert returncode == 0, output[-3000:]

    whole_rows = _rows(storage / "whole")
    assert sorted(whole_rows) == ["dense", "imp"]
    reference = _of(whole_rows["imp"], "round")
    assert all(row["workers"] == 2 and row["worker_nodes"] == 2  # across both nodes
               for rows in whole_rows.values() for row in _of(rows, "round"))
    # IMP's round 0 is the dense trial's model, from the cache, not trained again.
    assert reference[0]["reused_dense"] is True
    assert reference[0]["test_acc"] == _of(whole_rows["dense"], "round")[0]["test_acc"]
    plotted = run_plot(str(storage / "whole"), "--out", str(tmp_path / "plot"))
    assert plotted.returncode == 0, plotted.stderr[-2000:]
    with (tmp_path / "plot" / "results.csv").open() as stream:
        assert {row["method"] for row in csv.DictReader(stream)} == {"dense", "imp"}

    # The lost node's run trained its own dense model (another experiment), the same one.
    lost = _rows(storage / "lost")["imp"]
    keys = ("round", "sparsity", "val_acc", "test_acc", "mask_checksum")
    assert [{k: r.get(k) for k in keys} for r in _of(lost, "round")] == [
        {k: r.get(k) for k in keys} for r in reference]
    epochs = [(r["round"], r["epoch"]) for r in _of(lost, "epoch")]
    assert epochs == [(r, e) for r in range(3) for e in range(2)]  # each once, none lost
