"""Whether a cluster can ever run a sweep's `resources.gpu`, checked before any trial waits.

A trial's GPUs must all sit on one node, so the request is checked against the largest node,
not the cluster's total (`gpu: 2` on eight 1-GPU nodes would stay pending for ever). A cluster
with an autoscaler (`ray up sweeps/cluster.yaml`: a CPU head, GPU workers from 0) has no GPUs
until it scales: there the check warns instead of refusing.
"""

from __future__ import annotations

import json
from typing import Any

from trainables.errors import ConfigError
from trainables.ray_adapter import autoscaler_status


def cluster_autoscales() -> bool:
    """True when an autoscaler with a cluster config runs the connected cluster."""
    status = autoscaler_status()
    return status is not None and autoscaling_from_status(status)


def autoscaling_from_status(status: bytes | str) -> bool:
    """Whether an autoscaler status (as Ray's monitor publishes it) comes from a real autoscaler.

    Every head runs the monitor. Without a cluster config (`ray start`, SLURM, a laptop) it runs
    read-only, and each node's type is its own anonymous `node_<node id>`
    (ray.autoscaler._private.util.format_readonly_node_type); under `ray up` the types are the
    cluster file's `available_node_types`.
    """
    try:
        report = json.loads(status)["autoscaler_report"]
    except (ValueError, KeyError, TypeError):
        return False
    mapping = report.get("node_type_mapping") or {}
    return any(kind != f"node_{node}" for node, kind in mapping.items())


def node_gpus(nodes: list[dict[str, Any]]) -> list[float]:
    """The GPUs of each alive node, as `ray.nodes()` lists them."""
    return [float(node.get("Resources", {}).get("GPU", 0)) for node in nodes
            if node.get("Alive", True)]


def check_gpu_request(gpus_per_trial: float, nodes: list[dict[str, Any]],
                      autoscales: bool, workers: int = 1) -> str | None:
    """ConfigError when no node of the cluster can hold one trial's GPUs (with data-parallel
    `workers`, when its nodes cannot hold that many workers of `gpus_per_trial` each); a warning
    (returned) instead when the cluster autoscales and may yet add such nodes; None when it
    fits."""
    if gpus_per_trial == 0:
        return None
    per_node = node_gpus(nodes)
    if workers > 1:
        return _check_workers(gpus_per_trial, per_node, autoscales, workers)
    largest = max(per_node, default=0.0)
    if gpus_per_trial <= largest:
        return None
    total = sum(per_node)
    have = (f"no node has more than {largest:g} GPU(s) ({len(per_node)} node(s), "
            f"{total:g} GPU(s) in all; a trial's GPUs must be on one node)")
    if autoscales:
        return (f"resources.gpu is {gpus_per_trial:g} per trial and {have}; the cluster "
                "autoscales, so trials wait until a node with enough GPUs joins (for ever, if "
                "no worker type in the cluster file has that many)")
    raise ConfigError(f"resources.gpu is {gpus_per_trial:g} per trial but {have}")


def _check_workers(gpus_per_worker: float, per_node: list[float], autoscales: bool,
                   workers: int) -> str | None:
    """The data-parallel form: each worker's GPUs on one node, the workers on any nodes."""
    slots = sum(int(gpus // gpus_per_worker) for gpus in per_node)
    if slots >= workers:
        return None
    have = (f"the cluster's {len(per_node)} node(s), {sum(per_node):g} GPU(s) in all, hold "
            f"{slots} such worker(s)")
    asked = f"resources ask for {workers} workers x {gpus_per_worker:g} GPU per trial"
    if autoscales:
        return f"{asked} and {have}; the cluster autoscales, so trials wait until nodes join"
    raise ConfigError(f"{asked} but {have}")
