"""Experiments laid out as Tune lays them out, run in-process in seconds, for the tests of
`load_round` and of exporting a round; and the trial's own test data to score a round on."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import torch
from invariants import _splits

from trainables.reporting import DirectoryReporter
from trainables.resolve import parse_trial_config
from trainables.runtime import resolve_runtime
from trainables.trial import run_trial
from trainables.trial_data import TrialData


def run_into_experiment(experiment: Path, name: str, index: int, raw: dict) -> Path:
    """One trial in Tune's layout: `<name>_<id>_<index>/` with params.json and its rows and
    round checkpoints, run in-process."""
    trial_dir = experiment / f"{name}_ab12c_{index:05d}"
    trial_dir.mkdir(parents=True)
    (trial_dir / "params.json").write_text(json.dumps({"trial": raw}))
    run_trial(parse_trial_config(raw), DirectoryReporter(trial_dir), cpus=1)
    return trial_dir


def test_batches(info: Any, batch_size: int | None = None,
                 max_batches: int | None = None) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
    """(inputs, labels) of the trial's test split, preprocessed as the trial evaluated it."""
    config = info.config
    splits = _splits(config)
    runtime = resolve_runtime(config.train, 1)
    data = TrialData.build(splits, config, runtime)
    yield from splits.batches("test", batch_size or config.train.eval_batch_size,
                              shuffle=False, generator=None, device=runtime.device,
                              augment=data.eval_augment, drop_last=False,
                              max_batches=max_batches or config.train.max_eval_batches)


def rows(trial_dir: Path) -> dict[int, dict]:
    """The trial's round rows by round, as it reported them."""
    lines = (trial_dir / "result.json").read_text().splitlines()
    return {r["round"]: r for r in map(json.loads, lines) if r.get("row_type") == "round"}


test_batches.__test__ = False  # a helper, not a test
