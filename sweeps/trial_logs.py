"""Where an errored trial's logs really are, for run_sweep's report.

Ray 2.60 writes a trial's `error.txt` into the trial directory, but with `log_to_file=True` its
stdout and stderr go to the trial's *working directory* on the node that ran it,

    <session dir>/artifacts/<timestamp>/<experiment>/working_dirs/<trial dir name>/{stdout,stderr}

(ray/train/_internal/storage.py `trial_working_directory`, ray/tune/trainable/trainable.py
`_open_logfiles`; a reused actor reopens them per trial in `reset`), and they are copied into
the trial directory only with `SyncConfig(sync_artifacts=True)`. What bypasses Python's
`sys.stdout` (a C++/CUDA message, a crash dump) is only in the worker process's own log,
`<session dir>/logs/worker-<worker id>-<job id>-<pid>.out/.err`, shared by every trial that
worker ran. So the report lists the files that exist on this machine, and otherwise says on
which node and where they are.
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from trainables.ray_adapter import local_session_dir
from trainables.reporting import FATAL_ROW

OUTPUT_FILES = ("stdout", "stderr")  # what log_to_file=True names them
ERROR_FILE = "error.txt"


@dataclass(frozen=True)
class RayNode:
    """A node of the Ray cluster: its id, IP and session directory (on that node's disk)."""

    node_id: str
    ip: str
    session_dir: Path | None


@dataclass(frozen=True)
class TrialLogs:
    """An errored trial's logs: files that exist on this machine, and where the rest are."""

    error: Path | None
    output: list[Path]  # the trial's own stdout and stderr
    worker_logs: list[Path]  # the worker process's .out/.err (every trial that worker ran)
    elsewhere: str | None  # one line: where the output is when it is not on this machine


def ray_nodes() -> list[RayNode]:
    """The nodes of the Ray cluster this process is connected to, the driver's own first;
    [] when Ray is not initialized."""
    import ray

    if not ray.is_initialized():
        return []
    nodes: list[RayNode] = []
    session = local_session_dir()
    if session is not None:  # a Ray client (ray://) has no local node
        nodes.append(RayNode(ray.get_runtime_context().get_node_id(),
                             ray.util.get_node_ip_address(), session))
    with contextlib.suppress(Exception):
        for node in ray.nodes():  # dead nodes too: a trial may have died with its node
            if any(known.node_id == node.get("NodeID") for known in nodes):
                continue
            nodes.append(RayNode(node.get("NodeID", ""), node.get("NodeManagerAddress", ""),
                                 _session_of(node.get("RayletSocketName", ""))))
    return nodes


def _session_of(raylet_socket: str) -> Path | None:
    # A node's raylet socket is <session dir>/sockets/raylet unless its --raylet-socket-name
    # says otherwise; Ray offers no other view of another node's session dir.
    path = Path(raylet_socket)
    if path.parent.name == "sockets" and path.parent.parent.name.startswith("session_"):
        return path.parent.parent
    return None


def find_trial_logs(trial_dir: str | Path, metrics: Mapping[str, Any] | None,
                    nodes: Iterable[RayNode]) -> TrialLogs:
    """The logs of the trial whose directory is `trial_dir` (`Result.path`), whose last result
    was `metrics` (`node_ip` and `pid` are Ray's, `node_id` prunetune's round rows'), on a
    cluster of `nodes`."""
    trial = Path(trial_dir)
    metrics = metrics or {}
    nodes = list(nodes)
    ran_on = _nodes_that_ran(metrics, nodes)
    error = trial / ERROR_FILE
    output = [trial / name for name in OUTPUT_FILES if (trial / name).is_file()]
    # A retry that failed before reporting ran where the result does not say: then any node.
    found = _newest(_working_dirs(ran_on, trial)) or _newest(_working_dirs(nodes, trial))
    worker_logs: list[Path] = []
    if found is not None:
        node, directory = found
        output = output or [directory / name for name in OUTPUT_FILES
                            if (directory / name).is_file()]
        pid = metrics.get("pid")
        if pid is not None and node.session_dir is not None:
            logs = node.session_dir / "logs"
            worker_logs = sorted(
                path for suffix in (".out", ".err")
                for path in logs.glob(f"worker-*-{int(pid)}{suffix}") if path.is_file()
            )
    elsewhere = None
    if not output and not worker_logs:
        elsewhere = _where_elsewhere(trial, metrics, ran_on, nodes)
    return TrialLogs(error if error.is_file() else None, output, worker_logs, elsewhere)


def _nodes_that_ran(metrics: Mapping[str, Any], nodes: list[RayNode]) -> list[RayNode]:
    """The nodes the trial may have run on: the one its result names, else every node (a
    trial that failed before reporting anything)."""
    node_id, ip = metrics.get("node_id"), metrics.get("node_ip")
    if node_id:
        by_id = [node for node in nodes if node.node_id == node_id]
        if by_id:
            return by_id
    if ip:
        by_ip = [node for node in nodes if node.ip == ip]  # several on one machine
        if by_ip:
            return by_ip
    return nodes


def _working_dirs(nodes: list[RayNode], trial: Path) -> list[tuple[RayNode, Path]]:
    """The trial's working dirs on this machine, with the node whose session holds each."""
    found = []
    for node in nodes:
        artifacts = node.session_dir / "artifacts" if node.session_dir else None
        if artifacts is None or not artifacts.is_dir():  # another machine's session dir
            continue
        for stamp in artifacts.iterdir():
            directory = stamp / trial.parent.name / "working_dirs" / trial.name
            if directory.is_dir():
                found.append((node, directory))
    return found


def _newest(found: list[tuple[RayNode, Path]]) -> tuple[RayNode, Path] | None:
    # A trial retried on another node (or again after a resume) has a working dir on each.
    return max(found, key=lambda pair: pair[1].stat().st_mtime, default=None)


def _where_elsewhere(trial: Path, metrics: Mapping[str, Any], ran_on: list[RayNode],
                     nodes: list[RayNode]) -> str:
    experiment = trial.parent.name
    # The trials' working dirs share the driver's artifacts timestamp (one StorageContext).
    stamp = next((
        directory.name for node in nodes[:1] if node.session_dir is not None
        for directory in _by_mtime((node.session_dir / "artifacts").glob("*"))
        if (directory / experiment / "driver_artifacts").is_dir()
    ), "<timestamp>")
    tail = f"artifacts/{stamp}/{experiment}/working_dirs/{trial.name}/{{stdout,stderr}}"
    pid = metrics.get("pid")
    worker = f", and logs/worker-*-{pid}.out/.err" if pid is not None else ""
    if len(ran_on) == 1 and ran_on != nodes[:1]:
        node = ran_on[0]
        session = node.session_dir or "<its Ray session dir>"
        return (f"on node {node.node_id[:12]} ({node.ip}), not this machine: "
                f"{session}/{tail}{worker}")
    return (f"not found on this machine; Ray writes it on the node that ran the trial, "
            f"<Ray session dir>/{tail}{worker}")


def _by_mtime(paths: Iterable[Path]) -> list[Path]:
    return sorted(paths, key=lambda path: path.stat().st_mtime, reverse=True)


def errored_trial_lines(trial_dir: str | Path, metrics: Mapping[str, Any] | None,
                        nodes: Iterable[RayNode]) -> list[str]:
    """run_sweep's lines for one errored trial: every path listed exists on this machine,
    except in the one line that says the output is elsewhere."""
    logs = find_trial_logs(trial_dir, metrics, nodes)
    lines = [f"  errored: {trial_dir}"]
    if metrics and metrics.get(FATAL_ROW):  # the one line a trial said before it failed
        lines.append(f"    cause (not retried): {metrics[FATAL_ROW]}")
    if logs.error is not None:
        lines.append(f"    error: {logs.error}")
    elif not Path(trial_dir).is_dir():  # cloud storage: the trial dir is not on this disk
        lines.append(f"    error: {ERROR_FILE} in {trial_dir} on the sweep's storage")
    if logs.output:
        lines.append(f"    output: {', '.join(map(str, logs.output))}")
    if logs.worker_logs:
        lines.append("    worker log (every trial that worker ran): "
                     f"{', '.join(map(str, logs.worker_logs))}")
    if logs.elsewhere is not None:
        lines.append(f"    output: {logs.elsewhere}")
    return lines
