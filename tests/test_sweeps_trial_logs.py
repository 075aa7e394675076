"""An errored trial's report lines name only logs that exist (sweeps/trial_logs.py): its own
stdout/stderr in the Ray session's trial working dir, the worker's log, error.txt, or one line
saying on which node they are. Unit tests on fake session dirs laid out as Ray 2.60 lays them
out, and one real sweep whose trial prints and fails."""

from __future__ import annotations

import itertools
import os
import re
import time
from pathlib import Path

import pytest
from sweep_helpers import run_sweep, tiny_base, write_sweep

from sweeps.trial_logs import (
    RayNode,
    _session_of,
    errored_trial_lines,
    find_trial_logs,
    ray_nodes,
)

STAMP = "2026-01-02_03-04-05"
EXPERIMENT = "exp"
TRIAL = "dense_s0_ab12c_00000"


def listed_paths(lines: list[str]) -> list[Path]:
    """The absolute paths an errored trial's lines name, except in a line saying the output is
    elsewhere (on another node's disk)."""
    shown = [line for line in lines if "this machine" not in line]
    return [Path(path) for path in re.findall(r"(?<![\w/])/[^\s,;()]+", "\n".join(shown))]


def errored_entry(stdout: str) -> list[str]:
    """The report's lines of its (one) errored trial: the `errored:` line and those indented
    under it."""
    lines = stdout.splitlines()
    start = next(i for i, line in enumerate(lines) if line.startswith("  errored: "))
    return [lines[start], *itertools.takewhile(lambda line: line.startswith("    "),
                                               lines[start + 1:])]


def session(root: Path, name: str = "session_2026-01-02_03-04-00_1_1") -> Path:
    directory = root / name
    (directory / "logs").mkdir(parents=True)
    return directory


def working_dir(session_dir: Path, trial: str = TRIAL) -> Path:
    directory = session_dir / "artifacts" / STAMP / EXPERIMENT / "working_dirs" / trial
    directory.mkdir(parents=True)
    (directory / "stdout").write_text("its stdout\n")
    (directory / "stderr").write_text("its stderr\n")
    return directory


def trial_dir(root: Path, error: bool = True) -> Path:
    directory = root / "out" / EXPERIMENT / TRIAL
    directory.mkdir(parents=True)
    if error:
        (directory / "error.txt").write_text("Traceback ...\nRuntimeError: boom\n")
    return directory


def test_output_is_found_in_the_trial_working_dir_and_the_worker_log(tmp_path: Path) -> None:
    here = session(tmp_path)
    work = working_dir(here)
    logs = here / "logs"
    mine = [logs / f"worker-aa-01000000-4242{suffix}" for suffix in (".out", ".err")]
    for path in [*mine, logs / "worker-bb-01000000-14242.out", logs / "raylet.out"]:
        path.write_text("log\n")
    trial = trial_dir(tmp_path)
    nodes = [RayNode("n1", "10.0.0.1", here)]
    found = find_trial_logs(trial, {"pid": 4242, "node_ip": "10.0.0.1"}, nodes)
    assert found.error == trial / "error.txt"
    assert found.output == [work / "stdout", work / "stderr"]
    assert found.worker_logs == sorted(mine)  # not pid 14242's
    assert found.elsewhere is None
    lines = errored_trial_lines(str(trial), {"pid": 4242}, nodes)
    assert len(lines) == 4 and all(path.exists() for path in listed_paths(lines)), lines


def test_copies_in_the_trial_dir_win_and_missing_files_are_not_listed(tmp_path: Path) -> None:
    here = session(tmp_path)
    working_dir(here)
    trial = trial_dir(tmp_path, error=False)
    (trial / "stdout").write_text("synced\n")  # SyncConfig(sync_artifacts=True)
    found = find_trial_logs(trial, {}, [RayNode("n1", "10.0.0.1", here)])
    assert found.error is None and found.output == [trial / "stdout"]
    lines = errored_trial_lines(trial, {}, [RayNode("n1", "10.0.0.1", here)])
    assert not any("error:" in line for line in lines), lines
    assert all(path.exists() for path in listed_paths(lines)), lines


def test_the_node_in_the_result_is_searched_and_the_newest_attempt_wins(tmp_path: Path) -> None:
    # Two nodes on one machine (loopback cluster): the trial's working dir on both (a retry).
    head, other = session(tmp_path / "h"), session(tmp_path / "w")
    old, new = working_dir(head), working_dir(other)
    os.utime(old, (time.time() - 60, time.time() - 60))
    nodes = [RayNode("head", "127.0.0.1", head), RayNode("other", "127.0.0.1", other)]
    trial = trial_dir(tmp_path)
    assert find_trial_logs(trial, {"node_ip": "127.0.0.1"}, nodes).output[0].parent == new
    # The result's node id says where it ran last.
    assert find_trial_logs(trial, {"node_id": "head"}, nodes).output[0].parent == old
    # A retry that failed before reporting ran on another node than the result names.
    other_only = [RayNode("head", "10.0.0.1", session(tmp_path / "x")), nodes[1]]
    assert find_trial_logs(trial, {"node_id": "head"}, other_only).output[0].parent == new


def test_output_on_another_node_is_one_line_with_its_node_and_location(tmp_path: Path) -> None:
    here = session(tmp_path)
    (here / "artifacts" / STAMP / EXPERIMENT / "driver_artifacts").mkdir(parents=True)
    remote = Path("/nonexistent/ray/session_2026-01-02_03-04-00_1_1")  # that node's disk
    nodes = [RayNode("driver", "10.0.0.1", here),
             RayNode("f00dfeedbeef0123", "10.0.0.2", remote)]
    trial = trial_dir(tmp_path)
    metrics = {"node_id": "f00dfeedbeef0123", "node_ip": "10.0.0.2", "pid": 77}
    found = find_trial_logs(trial, metrics, nodes)
    assert found.output == [] and found.worker_logs == []
    assert found.elsewhere == (
        f"on node f00dfeedbeef (10.0.0.2), not this machine: {remote}/artifacts/{STAMP}/"
        f"{EXPERIMENT}/working_dirs/{TRIAL}/{{stdout,stderr}}, and logs/worker-*-77.out/.err")
    lines = errored_trial_lines(trial, metrics, nodes)
    assert lines == [f"  errored: {trial}", f"    error: {trial / 'error.txt'}",
                     f"    output: {found.elsewhere}"]


def test_a_trial_that_never_reported_and_left_no_output_says_so(tmp_path: Path) -> None:
    here = session(tmp_path)
    trial = trial_dir(tmp_path)
    found = find_trial_logs(trial, None, [RayNode("driver", "10.0.0.1", here)])
    assert found.elsewhere is not None and found.elsewhere.startswith("not found on this machine")
    assert f"working_dirs/{TRIAL}/{{stdout,stderr}}" in found.elsewhere


def test_a_trial_dir_on_cloud_storage_is_named_as_such(tmp_path: Path) -> None:
    lines = errored_trial_lines("bucket/sweeps/exp/trial", {}, [])
    assert lines[1] == "    error: error.txt in bucket/sweeps/exp/trial on the sweep's storage"


def test_a_nodes_session_dir_comes_from_its_raylet_socket() -> None:
    assert _session_of("/tmp/ray/session_2026_1/sockets/raylet") == Path("/tmp/ray/session_2026_1")
    assert _session_of("/run/custom-raylet.sock") is None
    assert _session_of("") is None


def test_no_ray_no_nodes() -> None:
    import ray

    if ray.is_initialized():
        pytest.skip("a Ray instance of another test module is up")
    assert ray_nodes() == []


LOUD_METHOD = '''
import sys

from trainables.methods import Method, register_method


@register_method
class LoudFailure(Method):
    """Prints a marker to stdout and stderr, then fails."""

    name = "loud_failure"
    sweep_order = 99

    def name_parts(self, config):
        return []

    def run(self, context):
        print("LOUD-STDOUT-MARKER", flush=True)
        print("LOUD-STDERR-MARKER", file=sys.stderr, flush=True)
        raise RuntimeError("LOUD-TRACEBACK-MARKER")
'''


@pytest.mark.slow
def test_the_report_of_a_failed_trial_lists_existing_files_with_its_output(
    data_root: Path, tmp_path: Path
) -> None:
    (tmp_path / "loud.py").write_text(LOUD_METHOD)
    sweep = write_sweep(
        tmp_path / "loud.yaml", name="loud", plugins=["./loud.py"],
        base=tiny_base(data_root, method="loud_failure"),
        resources={"cpu": 1, "gpu": 0}, max_failures=0,
    )
    done = run_sweep(str(sweep), "--storage", str(tmp_path / "out"), timeout=240)
    output = done.stdout + done.stderr
    assert done.returncode == 1, output[-3000:]
    entry = errored_entry(done.stdout)
    paths = listed_paths(entry)
    assert len(paths) >= 4, entry  # the trial dir, error.txt, its stdout and stderr
    missing = [path for path in paths if not path.exists()]
    assert not missing, (missing, entry)
    texts = "\n".join(path.read_text() for path in paths[1:])
    for marker in ("LOUD-STDOUT-MARKER", "LOUD-STDERR-MARKER", "LOUD-TRACEBACK-MARKER"):
        assert marker in texts, (marker, entry)
    # Its own stdout file, not only the worker's shared log, holds what it printed.
    stdout = next(path for path in paths if path.name == "stdout")
    assert "LOUD-STDOUT-MARKER" in stdout.read_text()
