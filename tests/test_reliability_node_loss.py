"""A node lost mid-sweep: a local two-node Ray cluster (`ray.cluster_utils.Cluster`), the sweep
driven by `run_sweep.py --address` in a subprocess with shared storage, and the worker node
removed while a trial runs on it. The sweep still completes: the lost trial is rescheduled on
the head and resumes from its round checkpoint."""

from __future__ import annotations

import time
from pathlib import Path

import pytest
from invariants import check_experiment
from sweep_helpers import act_during_sweep, rows, tiny_base, trial_dirs, write_sweep

STALL_S = 25


def _ancestors(pid: int) -> list[int]:
    chain = []
    while pid > 1:
        try:
            status = Path(f"/proc/{pid}/status").read_text()
        except OSError:
            break
        pid = int(next(line.split()[1] for line in status.splitlines() if line.startswith("PPid")))
        chain.append(pid)
    return chain


def _stalled_pids(markers: Path) -> dict[int, int]:
    """{seed: pid of the trial process} from the stall markers (the hook writes its pid)."""
    found = {}
    for seed in (0, 1):
        for _ in range(20):  # created first, then written
            text = (markers / f"stall{seed}").read_text()
            if text:
                found[seed] = int(text)
                break
            time.sleep(0.1)
    return found


@pytest.mark.slow
def test_sweep_survives_losing_a_node(data_root, tmp_path, monkeypatch):
    from ray.cluster_utils import Cluster

    markers = tmp_path / "markers"
    markers.mkdir()
    # Each trial stalls once at the start of round 1 (after its round-0 checkpoint): a window in
    # which the worker node is removed. The raylets (so the trials) inherit this environment.
    monkeypatch.setenv("PRUNETUNE_FAULT", ";".join(
        f"stall_once:round=1,epoch=0,seed={seed},seconds={STALL_S}:{markers / f'stall{seed}'}"
        for seed in (0, 1)
    ))
    sweep = write_sweep(
        tmp_path / "nodes.yaml",
        name="nodes",
        base=tiny_base(data_root, method="imp", imp={"rounds": 2, "rate": 0.5}),
        grid={"seed": [0, 1]},
        resources={"cpu": 1, "gpu": 0},
        max_failures=1,
    )
    storage = tmp_path / "shared"
    experiment = storage / "nodes"
    cluster = Cluster(
        initialize_head=True, head_node_args={"num_cpus": 1, "include_dashboard": False}
    )
    try:
        worker = cluster.add_node(num_cpus=1)
        cluster.wait_for_nodes()
        worker_raylet = worker.all_processes["raylet"][0].process.pid
        on_worker: list[int] = []

        def remove_the_worker_node() -> None:
            # Both trials are stalled in round 1; one of them runs on the worker node.
            pids = _stalled_pids(markers)
            on_worker.extend(s for s, pid in pids.items() if worker_raylet in _ancestors(pid))
            assert len(on_worker) == 1, (pids, worker_raylet)
            cluster.remove_node(worker, allow_graceful=False)

        returncode, output = act_during_sweep(
            lambda: all((markers / f"stall{seed}").exists() for seed in (0, 1)),
            remove_the_worker_node, str(sweep), "--address", cluster.address, "--storage",
            str(storage), never="trials never reached round 1")
    finally:
        cluster.shutdown()

    assert returncode == 0, output[-3000:]
    assert "2/2 trials finished" in output, output[-3000:]
    lost = trial_dirs(experiment)[on_worker[0]]
    round_rows = rows(lost)
    # Resumed from the round-0 checkpoint: no round reported twice, round 0 trained once, and
    # the rest by a new process (on the head).
    assert [row["round"] for row in round_rows] == [0, 1, 2]
    assert [r["epoch"] for r in rows(lost, "epoch") if r["round"] == 0] == [0, 1]
    assert round_rows[0]["pid"] != round_rows[1]["pid"] == round_rows[2]["pid"]
    kept = trial_dirs(experiment)[1 - on_worker[0]]
    assert len({row["pid"] for row in rows(kept)}) == 1
    assert check_experiment(experiment) == 6
