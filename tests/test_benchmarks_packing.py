"""The GPU benchmarks' own logic, on the CPU: packing measured over the interval in which every
trial ran (hand-made step timestamps, hand-computed figures), the per-step clock of
`packing_probe.py` (CUDA events faked), the CUDA code path of `bench_gpu_packing.py` end to end
with its sweeps faked, and the device and data-root choices both GPU benchmarks offer."""

from __future__ import annotations

import json
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from types import ModuleType

import pytest
import torch
import yaml

BENCHMARKS = Path(__file__).resolve().parents[1] / "benchmarks"


@pytest.fixture
def bench() -> Iterator[dict[str, ModuleType]]:
    """The benchmark modules, imported as the scripts import them (their folder on sys.path)."""
    sys.path.insert(0, str(BENCHMARKS))
    try:
        import bench_gpu_packing
        import common
        import packing_probe

        yield {"packing": bench_gpu_packing, "common": common, "probe": packing_probe}
    finally:
        sys.path.remove(str(BENCHMARKS))


def fake_sweeps(packing: ModuleType, monkeypatch: pytest.MonkeyPatch,
                steps: list[list[float]]) -> list[dict]:
    """Replace bench_gpu_packing's probed sweep: every trial (one per seed) writes the trace of
    `steps` ([start, end, images] each); returns the list the sweep files' specs go to."""
    specs: list[dict] = []

    def fake_sweep(sweep_file: Path, storage: Path, trace: Path) -> float:
        spec = yaml.safe_load(Path(sweep_file).read_text())
        specs.append(spec)
        trace.mkdir(parents=True)
        for seed in spec["grid"]["seed"]:
            (trace / f"seed{seed}-1.json").write_text(json.dumps(
                {"trial": f"seed{seed}", "steps": steps}))
        return 1.0

    monkeypatch.setattr(packing, "run_probed_sweep", fake_sweep)
    return specs


def test_overlap_counts_the_images_finished_while_every_trial_ran(bench) -> None:
    trials = {
        # (start, end, images) of each step
        "a": [(0, 1, 10), (1, 2, 10), (2, 3, 10), (3, 4, 10), (4, 5, 10)],
        "b": [(1.5, 2.5, 20), (2.5, 3.5, 20), (3.5, 4.5, 20), (4.5, 6.5, 20)],
        "c": [(0.5, 2, 5), (2, 4.5, 5), (4.5, 7, 5)],
    }
    overlap = bench["packing"].overlap_throughput(trials)
    # Every trial ran from max(0, 1.5, 0.5) = 1.5 to min(5, 6.5, 7) = 5. Finished inside it:
    # a's steps ending 2, 3, 4, 5 (not the one ending 1); b's ending 2.5, 3.5, 4.5 (not 6.5);
    # c's ending 2 and 4.5 (not 7).
    assert (overlap.start, overlap.end, overlap.seconds) == (1.5, 5, 3.5)
    assert overlap.per_trial == {"a": 40, "b": 60, "c": 10}
    assert overlap.images == 110
    assert overlap.images_per_s == pytest.approx(110 / 3.5)


def test_a_step_ending_at_the_overlaps_start_is_not_in_it_one_ending_at_its_end_is(bench):
    overlap = bench["packing"].overlap_throughput({
        "a": [(0, 1, 1), (1, 2, 1)],
        "b": [(1, 2, 1)],
    })
    assert (overlap.start, overlap.end) == (1, 2)
    assert overlap.per_trial == {"a": 1, "b": 1}
    assert overlap.images_per_s == 2.0


def test_one_trial_overlaps_itself_from_its_first_step_to_its_last(bench) -> None:
    overlap = bench["packing"].overlap_throughput({"only": [(0, 1, 64), (1, 2, 64), (2, 4, 64)]})
    assert overlap.seconds == 4 and overlap.images == 192 and overlap.images_per_s == 48.0


def test_trials_that_never_ran_together_have_no_figure(bench) -> None:
    overlap = bench["packing"].overlap_throughput({"a": [(0, 1, 5)], "b": [(2, 3, 5)]})
    assert overlap.seconds == 0 and overlap.images == 0 and overlap.images_per_s is None
    with pytest.raises(ValueError, match="at least one step"):
        bench["packing"].overlap_throughput({"a": [(0, 1, 5)], "b": []})


def test_on_the_cpu_a_step_is_timed_by_the_clock_around_it(bench) -> None:
    readings = iter([10.0, 11.0, 12.0, 13.5])
    times = bench["probe"].StepTimes(cuda=False, clock=lambda: next(readings))
    for _ in range(2):
        begun = times.begin()
        times.end(begun, 3)
    assert times.steps() == [(10.0, 11.0, 3), (12.0, 13.5, 3)]


class FakeEvent:
    """A CUDA timing event that completes at `gpu_ms` on the GPU's clock."""

    def __init__(self, gpu_ms: float) -> None:
        self.gpu_ms = gpu_ms

    def elapsed_time(self, other: FakeEvent) -> float:
        return other.gpu_ms - self.gpu_ms


def test_on_cuda_steps_are_timed_by_events_placed_on_the_host_clock(bench) -> None:
    gpu_times = iter([5.0, 5.0, 25.0, 30.0, 70.0])  # reference, then begin/end of two steps
    host_reads, syncs = [], []

    def clock() -> float:
        host_reads.append(1000.0)
        return 1000.0

    times = bench["probe"].StepTimes(cuda=True, clock=clock,
                                     event=lambda: FakeEvent(next(gpu_times)),
                                     synchronize=lambda: syncs.append(1))
    for images in (64, 32):
        begun = times.begin()
        times.end(begun, images)
    assert len(syncs) == 1 and len(host_reads) == 1  # one reference; no sync per step
    steps = times.steps()
    assert len(syncs) == 2  # reading waits for the queued steps
    expected = [(1000.0, 1000.020, 64), (1000.025, 1000.065, 32)]
    for got, want in zip(steps, expected, strict=True):
        assert got == pytest.approx(want)


def test_the_probe_records_every_training_step(bench, monkeypatch) -> None:
    from trainables import loop

    probe = bench["probe"]
    monkeypatch.setattr(loop.Stepper, "step", lambda self, index, inputs, targets:
                        (index, len(targets)))
    monkeypatch.setattr(probe, "_current", None)
    probe._trace_steps()
    probe._trace_steps()  # once per process: a second call does not wrap again
    stepper = object.__new__(loop.Stepper)
    assert stepper.step(0, torch.zeros(8, 3), torch.zeros(8)) == (0, 8)
    assert stepper.step(1, torch.zeros(4, 3), torch.zeros(4)) == (1, 4)
    assert [images for _, _, images in probe._current.steps()] == [8, 4]
    assert not probe._current.cuda


@pytest.mark.slow
def test_the_cuda_path_measures_the_overlap_of_each_case(bench, monkeypatch, capsys) -> None:
    """bench_gpu_packing's CUDA code with its sweeps faked: each trial of a case with n trials
    trains 64 images in each of the seconds [0, 1] and [1, 2], so the overlap is 2 s long and
    holds 128 n images: 64 n images/s, n times the one-trial case's."""
    packing = bench["packing"]
    specs = fake_sweeps(packing, monkeypatch, steps=[[0, 1, 64], [1, 2, 64]])
    packing.main(["--device", "cuda", "--data-root", "/elsewhere"])
    result = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert [(s["resources"]["gpu"], s["max_concurrent_trials"]) for s in specs] == [
        (1.0, 1), (0.5, 2), (0.25, 4)]
    assert {s["base"]["train"]["device"] for s in specs} == {"cuda"}
    assert {s["base"]["data"]["root"] for s in specs} == {"/elsewhere"}
    assert {s["base"]["train"]["epochs"] for s in specs} == {30}  # not --quick
    assert [result["cases"][n]["overlap_images_per_s"] for n in ("1", "2", "4")] == [
        64.0, 128.0, 256.0]
    assert result["cases"]["4"]["images_in_overlap"] == {f"seed{i}": 128 for i in range(4)}
    assert [bar["value"] for bar in result["bars"]] == [2.0, 4.0]
    assert "gpu" not in result  # nothing pending


def test_the_device_follows_torch_unless_asked(bench, monkeypatch) -> None:
    common = bench["common"]
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    assert common.default_device() == "cuda"
    assert common.default_device("cpu") == "cpu"
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    assert common.default_device() == "cpu"


@pytest.mark.slow
@pytest.mark.parametrize("script", ["bench_input_pipeline.py", "bench_gpu_packing.py"])
def test_both_gpu_benchmarks_take_a_device_and_a_data_root(script: str) -> None:
    done = subprocess.run([sys.executable, str(BENCHMARKS / script), "--help"],
                          capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    help_text = " ".join(done.stdout.split())
    assert "--device {cuda,cpu}" in help_text
    assert "--data-root" in help_text and "PRUNETUNE_FLOWERS_ROOT" in help_text


@pytest.mark.slow
def test_on_the_cpu_the_same_code_runs_small_and_the_gpu_figure_is_pending(bench, monkeypatch,
                                                                            capsys) -> None:
    packing = bench["packing"]
    specs = fake_sweeps(packing, monkeypatch, steps=[[0, 1, 64]])
    packing.main(["--device", "cpu"])
    result = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert [(s["resources"]["gpu"], s["base"]["train"]["device"]) for s in specs] == [
        (0.0, "cpu"), (0.0, "cpu")]
    assert {(s["base"]["train"]["epochs"], s["base"]["train"]["max_batches"]) for s in specs} \
        == {(1, 3)}
    assert [bar["value"] for bar in result["bars"]] == [None, None]
    assert result["gpu"].startswith("pending")
    assert result["cases"]["2"]["overlap_images_per_s"] == 128.0  # measured all the same
