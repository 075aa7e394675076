"""GPU grants end to end: sweeps on a Ray head that declares GPUs this machine does not have
(`num_gpus=2` on a CPU-only node), as a cluster with a broken driver looks to Ray.

Ray then grants trials GPU ids and sets CUDA_VISIBLE_DEVICES while torch cannot use CUDA. A
sweep must not train such trials on the CPU and report success, must not retry them, and must
refuse GPU requests that can never run before any trial waits.
"""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any

import pytest
import torch
import yaml

try:
    from sweep_helpers import run_sweep
    from test_sweeps_run import REPO, TINY_BASE, rows, trial_dirs
except ImportError:  # tests/ collected as a package
    from tests.test_sweeps_run import REPO, TINY_BASE, rows, run_sweep, trial_dirs

pytestmark = pytest.mark.skipif(torch.cuda.is_available(), reason="stands for a broken GPU node")

# torch.cuda as on a node with two working GPUs, which CUDA_VISIBLE_DEVICES="" hides (as the
# real CUDA runtime does); imported by every trial as the sweep's plug-in, before it runs.
FAKE_GPU_NODE = '''
import os
import torch


def _visible() -> int:
    visible = os.environ.get("CUDA_VISIBLE_DEVICES")
    return 2 if visible is None else len([d for d in visible.split(",") if d.strip()])


torch.cuda.device_count = _visible
torch.cuda.is_available = lambda: _visible() > 0
'''


@pytest.fixture(scope="module")
def gpu_head() -> Any:
    """A one-node Ray cluster whose head declares 2 GPUs (and 2 CPUs)."""
    cluster_utils = pytest.importorskip("ray.cluster_utils")
    cluster = cluster_utils.Cluster(
        initialize_head=True, connect=False,
        head_node_args={"num_cpus": 2, "num_gpus": 2, "include_dashboard": False},
    )
    cluster.wait_for_nodes()
    try:
        yield cluster
    finally:
        cluster.shutdown()


def write(directory: Path, name: str, **fields: Any) -> Path:
    base = {**TINY_BASE, "method": "dense"}
    path = directory / f"{name}.yaml"
    path.write_text(yaml.safe_dump({"name": name, "base": base, "max_failures": 1, **fields}))
    return path


def failures(trial_dir: Path) -> int:
    """How many times Ray says the trial failed (error.txt has one 'Failure #' per failure)."""
    error = trial_dir / "error.txt"
    return error.read_text().count("Failure #") if error.exists() else 0


@pytest.mark.slow
def test_trials_granted_an_unusable_gpu_fail_at_once_and_are_not_retried(
    tmp_path: Path, gpu_head: Any
) -> None:
    """Findings 1 and 2: `auto` and `cuda` trials granted half a GPU each."""
    path = write(tmp_path, "granted", resources={"cpu": 1, "gpu": 0.5}, experiments=[
        {"label": "auto", "config": {"train": {"device": "auto"}, "seed": 0}},
        # Another seed: the device is not part of a trial's identity, so seed 0 would run once.
        {"label": "cuda", "config": {"train": {"device": "cuda"}, "seed": 1}},
    ])
    proc = run_sweep(str(path), "--address", gpu_head.address, "--storage",
                     str(tmp_path / "out"), cwd=tmp_path)
    assert proc.returncode == 1, proc.stdout[-2000:] + proc.stderr[-3000:]
    assert "0/2 trials finished" in proc.stdout
    said = [line for line in proc.stderr.splitlines() if "not retried" in line]
    assert len(said) == 2, proc.stderr[-3000:]
    for line in said:
        assert "GpuUnavailableError: Ray granted GPU" in line
        assert "CUDA_VISIBLE_DEVICES='" in line and "torch cannot use CUDA" in line
        assert "has no GPU" not in line  # it has one: torch cannot use it
    assert proc.stdout.count("cause (not retried): GpuUnavailableError: Ray granted GPU") == 2
    dirs = trial_dirs(tmp_path / "out" / "granted")
    assert len(dirs) == 2
    assert [failures(d) for d in dirs] == [1, 1]
    assert not any(rows(d, "epoch") for d in dirs)  # nothing trained on the CPU


@pytest.mark.slow
def test_a_trial_granted_no_gpu_on_a_gpu_node_trains_on_the_cpu(
    tmp_path: Path, gpu_head: Any
) -> None:
    """On a node whose GPUs torch sees, `gpu: 0` trials stay off cuda:0 (a trial granted no GPU
    must not take one from the trials that were)."""
    (tmp_path / "fake_gpu_node.py").write_text(FAKE_GPU_NODE)
    path = write(tmp_path, "no_grant", resources={"cpu": 1, "gpu": 0},
                 plugins=["./fake_gpu_node.py"])
    proc = run_sweep(str(path), "--address", gpu_head.address, "--storage",
                     str(tmp_path / "out"), cwd=tmp_path)
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-3000:]
    [trial] = trial_dirs(tmp_path / "out" / "no_grant")
    assert {row["latency_device"] for row in rows(trial)} == {"cpu"}


@pytest.mark.slow
def test_gpu_requests_no_node_can_hold_are_refused_before_any_trial(
    tmp_path: Path, gpu_head: Any
) -> None:
    """1.5 and 2 GPUs per trial are refused in one line, exit 2, nothing written: Ray refuses
    fractions above 1 only inside fit, and a trial process trains on one GPU (more GPUs are
    data-parallel workers, which the message names)."""
    path = write(tmp_path, "many")
    for request, words in [("1.5", "fractions only below 1"),
                           ("2", "set workers: 2 and gpu: 1")]:
        proc = run_sweep(str(path), "--address", gpu_head.address, "--set",
                         f"resources.gpu={request}", "--storage", str(tmp_path / "out"),
                         cwd=tmp_path)
        assert proc.returncode == 2, proc.stderr[-3000:]
        [line] = proc.stderr.strip().splitlines()
        assert line.startswith("run_sweep: error: ") and words in line, line
    assert not (tmp_path / "out").exists()


def _node_types(status: bytes | None) -> dict[str, str]:
    report = json.loads(status).get("autoscaler_report") if status else None
    return (report or {}).get("node_type_mapping") or {}


@pytest.mark.slow
def test_a_manual_cluster_does_not_count_as_autoscaling(gpu_head: Any) -> None:
    """Every head runs Ray's monitor; without a cluster config it is read-only, and its status
    (read here from the live head) says so."""
    import ray

    from sweeps.gpu_requests import autoscaling_from_status
    from trainables.ray_adapter import autoscaler_status

    ray.init(address=gpu_head.address, log_to_driver=False)
    try:
        deadline = time.monotonic() + 30
        while not _node_types(status := autoscaler_status()):
            assert time.monotonic() < deadline, f"the monitor published no node types: {status}"
            time.sleep(0.5)
    finally:
        ray.shutdown()
    assert not autoscaling_from_status(status)
    # The same status as an autoscaler with `ray up`'s node types would publish it.
    written = json.loads(status)
    mapping = written["autoscaler_report"]["node_type_mapping"]
    written["autoscaler_report"]["node_type_mapping"] = dict.fromkeys(mapping, "ray.head.default")
    assert autoscaling_from_status(json.dumps(written))


def test_an_autoscaling_cluster_without_gpus_yet_is_warned_about_not_refused(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    """sweeps/cluster.yaml starts as a CPU head with GPU workers from 0: no node has a GPU at
    submit time. A fixed cluster like that is refused; an autoscaling one is not."""
    from types import SimpleNamespace

    from sweeps import run_sweep as module
    from trainables.errors import ConfigError

    head_only = [{"Alive": True, "Resources": {"CPU": 8.0}}]
    monkeypatch.setattr("ray.nodes", lambda: head_only)
    monkeypatch.setattr("ray.cluster_resources", lambda: {"CPU": 8.0})
    launch = SimpleNamespace(explicit_storage=True, plan=SimpleNamespace(spec=SimpleNamespace(
        resources=SimpleNamespace(gpu=0.5, cpu=4, workers=1))))
    monkeypatch.setattr(module, "cluster_autoscales", lambda: False, raising=False)
    with pytest.raises(ConfigError, match="resources.gpu is 0.5 per trial"):
        module._check_cluster(launch)
    monkeypatch.setattr(module, "cluster_autoscales", lambda: True, raising=False)
    module._check_cluster(launch)
    [warning] = capsys.readouterr().err.strip().splitlines()
    assert warning.startswith("run_sweep: warning: ") and "autoscales" in warning


def test_dry_run_validates_a_gpu_sweep_on_a_machine_without_gpus(
    capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    """`--dry-run` of the shipped GPU file checks the file, not this machine (a file is
    validated anywhere before it goes to the cluster)."""
    from sweeps import run_sweep as module

    def no_ray(*args: Any, **kwargs: Any) -> None:
        raise AssertionError("Ray was started")

    monkeypatch.setattr(module, "_start_ray", no_ray)
    path = REPO / "sweeps" / "lth_cifar10_resnet20.yaml"
    assert yaml.safe_load(path.read_text())["resources"]["gpu"] > 0
    code = module.main([str(path), "--dry-run", "--storage", str(tmp_path / "out")])
    assert code == 0, capsys.readouterr().err
    assert "dry run: 30 trials valid" in capsys.readouterr().out


def test_a_request_is_checked_against_the_largest_node_not_the_total() -> None:
    """A trial's GPUs all sit on one node: eight 1-GPU nodes hold 8 GPUs but no trial that
    needs more than one of them; a CPU-only cluster holds no GPU trial at all."""
    from sweeps.gpu_requests import check_gpu_request
    from trainables.errors import ConfigError

    eight = [{"Alive": True, "Resources": {"CPU": 8.0, "GPU": 1.0}} for _ in range(8)]
    dead = [{"Alive": False, "Resources": {"CPU": 8.0, "GPU": 4.0}}]
    assert check_gpu_request(1.0, eight, autoscales=False) is None
    assert check_gpu_request(0.25, eight, autoscales=False) is None
    with pytest.raises(ConfigError, match=r"no node has more than 1 GPU\(s\) \(8 node\(s\), 8 GPU"):
        check_gpu_request(2.0, eight + dead, autoscales=False)
    cpus_only = [{"Alive": True, "Resources": {"CPU": 8.0}}] * 2
    with pytest.raises(ConfigError, match=r"0.5 per trial but no node has more than 0 GPU"):
        check_gpu_request(0.5, cpus_only, autoscales=False)
    assert "autoscales" in check_gpu_request(0.5, cpus_only, autoscales=True)
