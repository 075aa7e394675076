"""Speedups that stay true on a busy machine: a small sweep's trials, two busy loops (started and
stopped here) running beside the first half of them. Every unstructured round's paired speedup
at batch 1 lies in 0.85-1.15x (its network is the dense one, as far as a dense kernel can
tell), and a structured round's is the same network's measured again afterwards on the quiet
machine, within the same band."""

from __future__ import annotations

import json
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest
import torch

import pruning
from trainables.checkpoints import load_round_checkpoint
from trainables.config import ModelConfig
from trainables.models import build_model
from trainables.reporting import DirectoryReporter
from trainables.resolve import parse_trial_config
from trainables.trial import run_trial

TRAIN = {"epochs": 1, "batch_size": 64, "max_batches": 3, "max_eval_batches": 2,
         "device": "cpu"}
MODEL = {"name": "resnet18_cifar", "width": 16}
LOADED = [("channels", {"prune": {"target_sparsity": 0.8}}),
          ("snip", {"prune": {"target_sparsity": 0.9}})]
QUIET = [("magnitude_init", {"prune": {"target_sparsity": 0.5}}), ("dense", {})]


#: A longer measuring budget than the default 0.05 s: some 20 pairs a batch size instead of 5,
#: so that each round's median holds the band every time (benchmarks/bench_busy_machine.py runs
#: the default settings).
MEASURE = {"batch_sizes": [1], "budget_s": 0.2}


def run(method: str, settings: dict[str, Any], directory: Path) -> list[dict[str, Any]]:
    config = parse_trial_config({"method": method, "seed": 0, "data": {"name": "digits"},
                                 "model": MODEL, "train": TRAIN, "measure": MEASURE,
                                 **settings})
    reporter = DirectoryReporter(directory)
    run_trial(config, reporter, cpus=1)
    return [row for row in reporter.rows if row["row_type"] == "round"]


@pytest.mark.slow
def test_speedups_stay_true_with_a_load_beside_half_the_sweep(tmp_path: Path) -> None:
    torch.set_num_threads(1)
    loops = [subprocess.Popen([sys.executable, "-c", "while True: pass"]) for _ in range(2)]
    try:
        time.sleep(0.5)
        loaded = {method: run(method, settings, tmp_path / method) for method, settings in LOADED}
    finally:
        for loop in loops:
            loop.kill()
            loop.wait()
    quiet = {method: run(method, settings, tmp_path / method) for method, settings in QUIET}
    rows = {**loaded, **quiet}

    structured = rows["channels"][-1]
    assert structured["round"] == 1
    unstructured = [row for method, method_rows in rows.items() for row in method_rows
                    if row is not structured]
    for row in unstructured:
        assert row["speedup_clock"] == "thread CPU time"
        assert 0.85 <= row["speedup_b1"] <= 1.15, (row["method"], row["round"], row)

    # The structured round's network, measured again now, against a fresh dense reference.
    (checkpoint,) = [path for path in sorted((tmp_path / "channels").glob("round_*"))
                     if json.loads((path / "metrics.json").read_text())["round"] == 1]
    state = load_round_checkpoint(checkpoint)
    network = build_model(ModelConfig(**MODEL), 10, 1)
    pruning.rebuild(network, {"state_dict": state["best_model"],
                              "layer_widths": state["layer_widths"]})
    reference = build_model(ModelConfig(**MODEL), 10, 1)
    # Measured at length on the quiet machine: the value the loaded round's interval must hold.
    settings = pruning.LatencySettings(batch_sizes=(1,), budget_s=1.0, max_repeats=400)
    again = pruning.paired_latency_ms(network, reference, (1, 32, 32), settings).by_batch[1]
    assert structured["speedup_b1"] > 1.3  # a real speedup: 80% of the parameters are gone
    # Within the band the unstructured rounds keep, relative to the quiet value. Not within the
    # round's own interval: that one is statistical, and a thread that keeps losing its core
    # comes back to cold caches, which slows a small network's short passes more than the
    # reference's; measured here, that shifted a structured speedup by up to about a tenth.
    assert 0.85 <= structured["speedup_b1"] / again.speedup <= 1.15, (structured, again)
