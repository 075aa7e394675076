"""Running on a cluster with Ray 2.60's token authentication (docs/cluster.md).

A real head and worker started with `ray start` on loopback (tests/ray_cluster_helpers.py),
token authentication on: the sweep runs through `--address` when the driver has
RAY_AUTH_MODE=token and the head's token, and every way of getting that wrong ends with exit
status 2 and one line saying what to set, from the checks before `ray.init` (not after Ray's
~20 s of retries: the line is the pre-check's own wording).
"""

from __future__ import annotations

import json
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest
import yaml
from sweep_helpers import run_sweep

from sweeps.cluster_access import (
    ClusterAccessError,
    check_reachable,
    connection_failure,
    split_host_port,
)

try:
    from ray_cluster_helpers import LoopbackCluster, free_port, loopback_cluster
except ImportError:  # tests/ collected as a package
    from tests.ray_cluster_helpers import LoopbackCluster, free_port, loopback_cluster

REPO = Path(__file__).resolve().parents[1]


def test_split_host_port():
    assert split_host_port("10.0.0.5:6379") == ("10.0.0.5", 6379)
    assert split_host_port("[::1]:6379") == ("::1", 6379)
    for address in ("auto", "ray://head:10001", "head", "head:port"):
        assert split_host_port(address) is None, address


def test_nothing_listening_is_one_line_at_once():
    port = free_port()  # bound and released: nothing listens there now
    with pytest.raises(ClusterAccessError, match=f"no Ray head answers at 127.0.0.1:{port}"):
        check_reachable("127.0.0.1", port, timeout_s=2.0)


def test_ray_init_failures_after_the_checks_become_one_line():
    # What ray.init raises when a refused token slips past the checks (its text, as Ray 2.60
    # words it), when no cluster is found, and anything else (left alone).
    refused = RuntimeError("Failed to connect to GCS. Last connection error: ... "
                           "ray.exceptions.AuthenticationError: RPC error: InvalidAuthToken: ...")
    error = connection_failure(refused, "10.0.0.5:6379")
    assert "refused this driver: set RAY_AUTH_MODE=token" in str(error)
    missing = ConnectionError("Could not find any running Ray instance.\nMore text")
    error = connection_failure(missing, "auto")
    assert str(error) == ("cannot connect to the Ray cluster at auto: Could not find any "
                          "running Ray instance.")
    assert connection_failure(ValueError("bad argument"), "auto") is None


@pytest.fixture(scope="module")
def cluster() -> Iterator[LoopbackCluster]:
    with loopback_cluster() as running:
        yield running


def _sweep(tmp_path: Path) -> Path:
    spec = {
        "name": "cluster",
        "base": {
            "data": {"name": "digits", "root": str(tmp_path / "data")},
            "model": {"name": "resnet18_cifar", "width": 4},
            "train": {"epochs": 1, "batch_size": 32, "max_batches": 2, "max_eval_batches": 2},
        },
        "grid": {"seed": [0, 1]},
        "resources": {"cpu": 1, "gpu": 0},
    }
    path = tmp_path / "cluster.yaml"
    path.write_text(yaml.safe_dump(spec))
    return path


def _run(cluster: LoopbackCluster, env: dict[str, str], tmp_path: Path,
         address: str | None = None) -> subprocess.CompletedProcess[str]:
    return run_sweep(str(_sweep(tmp_path)), "--address", address or cluster.address,
                     "--storage", str(tmp_path / "out"), cwd=tmp_path, environment=env)


def _one_line(process: subprocess.CompletedProcess[str]) -> str:
    assert process.returncode == 2, process.stdout[-2000:] + process.stderr[-3000:]
    lines = process.stderr.strip().splitlines()
    assert len(lines) == 1, process.stderr
    assert lines[0].startswith("run_sweep: error: ")
    return lines[0]


@pytest.mark.slow
def test_sweep_runs_through_address_with_the_token(cluster, tmp_path):
    # docs/cluster.md step 3: on the head, RAY_AUTH_MODE=token; the token is ~/.ray/auth_token.
    assert (cluster.head_home / ".ray" / "auth_token").read_text() == cluster.token
    process = _run(cluster, cluster.env(on_head=True, RAY_AUTH_MODE="token"), tmp_path)
    assert process.returncode == 0, process.stdout[-2000:] + process.stderr[-3000:]
    trials = sorted((tmp_path / "out" / "cluster").glob("*/result.json"))
    assert len(trials) == 2
    for result in trials:
        rows = [json.loads(line) for line in result.read_text().splitlines() if line.strip()]
        assert any(row.get("final_round") for row in rows), result


@pytest.mark.slow
def test_missing_token_says_what_to_set(cluster, tmp_path):
    # The case: the head has a token, the driver sets nothing (even on the head).
    line = _one_line(_run(cluster, cluster.env(on_head=True), tmp_path))
    assert f"the Ray cluster at {cluster.address} requires token authentication" in line
    for words in ("RAY_AUTH_MODE=token", "RAY_AUTH_TOKEN", "RAY_AUTH_TOKEN_PATH",
                  "ray get-auth-token"):
        assert words in line, words
    assert not (tmp_path / "out" / "cluster").exists()


@pytest.mark.slow
def test_token_mode_without_a_token_is_one_line_not_an_abort(cluster, tmp_path):
    line = _one_line(_run(cluster, cluster.env(RAY_AUTH_MODE="token"), tmp_path))
    assert "RAY_AUTH_MODE=token but no token was found" in line
    missing = tmp_path / "no-such-token"
    line = _one_line(_run(cluster, cluster.env(RAY_AUTH_MODE="token",
                                               RAY_AUTH_TOKEN_PATH=str(missing)), tmp_path))
    assert f"RAY_AUTH_TOKEN_PATH={missing} cannot be read" in line


@pytest.mark.slow
def test_wrong_token_says_so(cluster, tmp_path):
    line = _one_line(_run(cluster, cluster.env(RAY_AUTH_MODE="token", RAY_AUTH_TOKEN="0" * 64),
                          tmp_path))
    assert f"the Ray cluster at {cluster.address} refused this driver's token" in line


def test_cluster_yaml_starts_every_node_in_token_mode_with_the_token_and_fair_workers():
    spec = yaml.safe_load((REPO / "sweeps" / "cluster.yaml").read_text())
    starts = [command for key in ("head_start_ray_commands", "worker_start_ray_commands")
              for command in spec[key] if "ray start" in command]
    assert len(starts) == 2
    assert all(command.startswith("RAY_AUTH_MODE=token RAY_worker_niceness=0 ray start")
               for command in starts)
    assert spec["file_mounts"]["~/.ray/auth_token"] == "~/.ray/auth_token"
