"""Every benchmark's `--quick` mode still runs and prints one JSON object with its figures.

Nothing is timed here: the numbers of a quick run mean nothing, only that the script works.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

BENCHMARKS = Path(__file__).resolve().parents[1] / "benchmarks"

#: Keys each benchmark's JSON must have (besides bars, machine and wall_s).
EXPECTED_KEYS = {
    "bench_framework_overhead": {"epoch_s", "epoch_ratio_sweep_vs_bare"},
    "bench_input_pipeline": {"sizes", "setup", "device_feed"},
    "bench_pruning_ops": {"magnitude_prune", "snip_vs_train_step", "masked_training"},
    "bench_sweep_efficiency": {"concurrency", "speedup_2_vs_1", "dense_sharing"},
    "bench_memory": {"dataset_cache_mib", "cases", "extra_trial_uss_mib"},
    "bench_gpu_packing": {"cases", "device", "setup"},
    "bench_startup": {"sides", "reps"},
    "bench_latency": {"models", "measuring_cost", "setup"},
    "bench_gpu_latency": {"models", "nm_2_4", "setup", "device"},
    "bench_storage": {"quickstart", "resnet18", "scale"},
    "bench_round_cost": {"trials", "setup"},
    "bench_export": {"networks", "figures", "setup"},
    "bench_busy_machine": {"slowdowns", "speedups", "setup"},
    "bench_search": {"asha", "none"},
    "bench_data_feed": {"images_per_s_per_core", "cores_per_gpu", "cited_gpu", "setup"},
    "bench_dense_wait": {"runs", "setup"},
}


#: Benchmarks that measure on the real Flowers-102, read from benchmarks/common.py's FLOWERS_ROOT.
NEEDS_FLOWERS = {"bench_input_pipeline", "bench_memory", "bench_gpu_packing", "bench_data_feed"}


def flowers_root() -> str:
    """Where the benchmarks look for Flowers-102 (their own setting, not a copy of it)."""
    sys.path.insert(0, str(BENCHMARKS))
    try:
        import common
    finally:
        sys.path.remove(str(BENCHMARKS))
    return common.FLOWERS_ROOT


def torch_has_cuda() -> bool:
    import torch

    return torch.cuda.is_available()


def run_quick(name: str) -> dict:
    done = subprocess.run(
        [sys.executable, str(BENCHMARKS / f"{name}.py"), "--quick"],
        cwd=BENCHMARKS.parent,
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    lines = done.stdout.strip().splitlines()
    assert lines, f"{name} printed nothing"
    return json.loads(lines[-1])


def test_every_benchmark_is_listed() -> None:
    assert {p.stem for p in BENCHMARKS.glob("bench_*.py")} == set(EXPECTED_KEYS)


@pytest.mark.slow
@pytest.mark.parametrize("name", sorted(EXPECTED_KEYS))
def test_quick_mode_prints_its_figures(name: str) -> None:
    if name in NEEDS_FLOWERS and not (Path(flowers_root()) / "flowers-102").is_dir():
        pytest.skip(f"{name} reads Flowers-102: no copy at {flowers_root()} "
                    "(set PRUNETUNE_FLOWERS_ROOT)")
    result = run_quick(name)
    assert result["quick"] is True
    assert {"bars", "machine", "wall_s"} <= set(result)
    for row in result["bars"]:
        assert {"name", "value", "bar", "met", "unit"} <= set(row)
    assert EXPECTED_KEYS[name] <= set(result), sorted(EXPECTED_KEYS[name] - set(result))
    if name == "bench_startup":  # every stage was seen, in order: the probe still fits run_sweep
        for stage in result["sides"]["current"]["stages"]:
            assert stage["seconds"] is not None, stage
            assert 0 <= stage["start_s"] <= stage["end_s"], stage
        wait = result["sides"]["current"]["raylet waits for its object store"]
        assert 0 <= wait["median_s"] <= wait["max_s"] < 10, wait  # found in the raylet's log
    if name in ("bench_gpu_packing", "bench_input_pipeline", "bench_gpu_latency"):
        # the GPU figure's code ran
        device = result["device_feed"]["device"] if name == "bench_input_pipeline" else result[
            "device"]
        assert device.startswith("cuda") == torch_has_cuda()
        gpu_bars = [row for row in result["bars"] if "GPU" in row["name"]]
        assert gpu_bars
        if not torch_has_cuda():  # pending; on CUDA a quick run's trials may not overlap
            assert all(row["value"] is None and row["met"] is None for row in gpu_bars)
    if name == "bench_gpu_latency":
        # ResNet-18's only row that 2:4 cannot split: conv1's 3 x 7 x 7 = 147 weights.
        assert set(result["setup"]["nm_mask_skipped"]) == {"conv1.weight"}
        if not torch_has_cuda():  # the CPU has no 2:4 kernel: dense only, and said so
            assert all("sparse_ms" not in entry and "CPU" in entry["measured_as"]
                       for entry in result["nm_2_4"].values())
    if name == "bench_storage":  # sizes, not timings: each trial's rounds are all counted
        methods = result["quickstart"]["methods"]
        assert len(methods["imp"]["rounds_w"]) == 4 and len(methods["snip 0.992"]["rounds_w"]) == 1
        assert methods["imp"]["checkpoints_w"] < methods["imp"]["legacy_w"]
    if name == "bench_sweep_efficiency":  # a count, not a timing: exact even in a quick run
        sharing = result["dense_sharing"]
        assert sharing["dense_trainings"] == len(result["setup"]["sharing_grid"]["seeds"])
