"""Correctness invariants of every saved round checkpoint, checked from the files alone.

`check_experiment(dir)` walks each trial directory (one with a params.json) of a Tune experiment
(or a DirectoryReporter directory with a params.json written by the test) and, for every
round and progress checkpoint, asserts:

- pruned weights (mask False) are exactly zero in `model` and in `best_model`;
- masks only shrink across an IMP trial's rounds (unless a mask control shuffles them);
- a structured round (its state has `layer_widths`) rebuilds from a freshly built unpruned model
  with `pruning.rebuild`, its masks cover the smaller weights exactly, and its layers are never
  wider than the unpruned ones;
- the reported `sparsity`, `params_prunable` and `params_total` equal counts of zeros (and of
  entries) in the saved weights, against the unpruned counts of a model built independently
  from the trial's params.json config;
- the reported `test_acc` equals re-evaluating `best_model` on the test split (respecting
  `train.max_eval_batches`).

Returns the number of checkpoints checked, so callers can assert it is not zero.

`check_finished_layout(dir)` asserts what a finished sweep leaves in each trial directory: its
round checkpoints and nothing superseded, indexed by `rounds.json` exactly as the checkpoints'
own `metrics.json` say.

`near_tie_counts` bounds how far an accuracy evaluated in other batches may lie from the
reported one (see there).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import torch

import pruning
from trainables.checkpoints import load_round_checkpoint
from trainables.config import TrialConfig
from trainables.datasets import load_dataset
from trainables.loop import eval_batches, evaluate
from trainables.models import build_model
from trainables.resolve import parse_trial_config
from trainables.runtime import resolve_runtime
from trainables.trial_data import TrialData
from trainables.trial_store import TrialStore

_DATA_CACHE: dict[str, Any] = {}


def _trial_config(trial_dir: Path) -> TrialConfig:
    params = json.loads((trial_dir / "params.json").read_text())
    raw = params["trial"] if set(params) == {"trial"} else params
    return parse_trial_config(raw, source=str(trial_dir / "params.json"), check_ignored=False)


def _splits(config: TrialConfig) -> Any:
    key = config.data.model_dump_json()
    if key not in _DATA_CACHE:
        _DATA_CACHE[key] = load_dataset(config.data)
    return _DATA_CACHE[key]


def round_weights(state: dict[str, Any]) -> dict[str, torch.Tensor]:
    """The weights to count in a round checkpoint: those it ended with, or, in a trial's last
    pruned round (which keeps one weight set), its selected ones, under the same mask."""
    return state["model"] if "model" in state else state["best_model"]


def _checkpoints(trial_dir: Path) -> list[Path]:
    """Every complete round and progress slot, oldest first."""
    return [trial_dir / name for name in TrialStore.for_directory(trial_dir).slots()]


def check_trial(trial_dir: Path) -> int:
    config = _trial_config(trial_dir)
    splits = _splits(config)
    runtime = resolve_runtime(config.train.model_copy(update={"device": "cpu"}), 1)
    data = TrialData.build(splits, config, runtime)

    def fresh_model() -> torch.nn.Module:
        return build_model(config.model, splits.num_classes, splits.in_channels)

    model = fresh_model()
    prunable = pruning.prunable_parameter_names(
        model, config.prune.exclude_first_conv, config.prune.exclude_classifier
    )
    dense_numel = {name: p.numel() for name, p in model.named_parameters()}
    dense_widths = pruning.layer_widths(model)
    total = sum(dense_numel.values())
    prunable_dense = sum(dense_numel[name] for name in prunable)
    previous_masks: dict[str, torch.Tensor] | None = None
    previous_round = -1
    checked = 0
    for checkpoint in _checkpoints(trial_dir):
        where = f"{checkpoint}"
        state = load_round_checkpoint(checkpoint)
        if state["kind"] == "progress":  # mid-round: only its mask is checked, and no metrics
            phase = state["phase"]
            assert not (checkpoint / "metrics.json").exists(), where
            for name, keep in (phase["mask"] or {}).items():
                assert not phase["model"][name][~keep].any(), f"{where}: {name} pruned nonzero"
            continue
        widths = state.get("layer_widths")
        if widths is not None:  # a structured round: the smaller network, rebuilt
            for layer, fields in widths.items():
                for key, value in fields.items():
                    assert value <= dense_widths[layer][key], f"{where}: {layer}.{key} grew"
            model = pruning.rebuild(fresh_model(), {"state_dict": round_weights(state),
                                                    "layer_widths": widths})
        masks = state["masks"]
        assert sorted(masks) == sorted(prunable), f"{where}: masks cover {sorted(masks)}"
        parameters = dict(model.named_parameters())
        for name, keep in masks.items():
            assert keep.shape == parameters[name].shape, f"{where}: mask of {name}"
        for key in [key for key in ("model", "best_model") if key in state]:
            weights = state[key]
            for name, keep in masks.items():
                pruned = weights[name][~keep]
                assert torch.equal(pruned, torch.zeros_like(pruned)), (
                    f"{where}: {key}.{name} has {int(pruned.count_nonzero())} nonzero pruned "
                    "weights"
                )
        # Rounds only move forward in one trial directory; masks only shrink along them.
        assert state["round"] > previous_round, f"{where}: round {state['round']} repeated"
        previous_round = state["round"]
        if (
            config.method == "imp"
            and config.prune.mask_control == "none"
            and previous_masks is not None
        ):
            for name, keep in masks.items():
                grew = keep & ~previous_masks[name]
                assert not grew.any(), f"{where}: mask of {name} regrew {int(grew.sum())}"
        previous_masks = masks

        # Independent accounting: zeros (and entries) in the saved weights, against the
        # unpruned network's counts.
        weights = round_weights(state)
        saved_total = sum(weights[name].numel() for name in parameters)
        saved_prunable = sum(weights[name].numel() for name in prunable)
        prunable_nonzero = sum(int(weights[name].count_nonzero()) for name in prunable)
        if widths is None:
            assert saved_total == total, where
        metrics = state["metrics"]
        on_disk = json.loads((checkpoint / "metrics.json").read_text())
        # The pruned fraction of the two integer counts, as the one division (dense - kept) /
        # dense: exact on any CPU. (1 - kept / dense is the same number in exact arithmetic but
        # can differ in the last bit, e.g. for 10,666 kept of 43,940, and a structured round's
        # kept count depends on the trained weights, so that formula would pass by chance.)
        sparsity = (prunable_dense - prunable_nonzero) / prunable_dense
        for reported in (metrics, on_disk):
            assert reported["sparsity"] == sparsity, where
            assert reported["params_prunable"] == prunable_nonzero, where
            assert reported["params_total"] == saved_total - saved_prunable + prunable_nonzero, (
                where)
            assert reported["params_total_dense"] == total, where
            assert reported["params_prunable_dense"] == prunable_dense, where
        assert state["sparsity"] == metrics["sparsity"], where

        # The reported test accuracy is that of best_model on the test split.
        model.load_state_dict(state["best_model"], strict=True)
        test_acc = evaluate(
            model,
            splits,
            "test",
            data.eval_augment,
            runtime,
            config.train.eval_batch_size,
            config.train.max_eval_batches,
        )
        assert metrics["test_acc"] == test_acc, f"{where}: {metrics['test_acc']} != {test_acc}"
        assert on_disk["test_acc"] == test_acc, where
        checked += 1
    return checked


def near_tie_counts(
    model: torch.nn.Module,
    splits: Any,
    split: str,
    augment: Any,
    runtime: Any,
    batch_size: int,
    max_batches: int | None = None,
    margin: float = 1e-3,
) -> tuple[int, int, int]:
    """(correct, near ties, seen) of `model` on `split`, batched and run as
    `trainables.loop.evaluate` does. A near tie is a sample whose two highest logits lie within
    `margin` of each other: its prediction is the only kind that rounding in the last bits of
    the logits (another batch size, another CPU's kernels) can flip, so an accuracy evaluated
    in other batches may differ from this one by at most near_ties / seen."""
    correct = near = seen = 0
    for logits, targets in eval_batches(model, splits, split, augment, runtime, batch_size,
                                        max_batches):
        top_two = logits.float().topk(2, dim=1).values
        near += int((top_two[:, 0] - top_two[:, 1] <= margin).sum())
        correct += int((logits.argmax(dim=1) == targets).sum())
        seen += len(targets)
    return correct, near, seen


def check_experiment(directory: str | Path) -> int:
    """Check every checkpoint of every trial under `directory`; the number checked."""
    directory = Path(directory)
    trial_dirs = sorted(p.parent for p in directory.glob("*/params.json"))
    if (directory / "params.json").is_file():
        trial_dirs.append(directory)
    assert trial_dirs, f"{directory}: no trial directories"
    return sum(check_trial(trial_dir) for trial_dir in trial_dirs)


def check_finished_layout(directory: str | Path) -> int:
    """Each Tune trial directory under `directory` holds round checkpoints only (no progress
    slot, no Ray checkpoint, nothing half-written), each listed in its `rounds.json` with the
    round, sparsity and test accuracy of its own metrics.json; the number of checkpoints
    indexed."""
    indexed = 0
    for trial_dir in sorted(p.parent for p in Path(directory).glob("*/params.json")):
        on_disk = sorted(p.name for p in trial_dir.iterdir() if p.is_dir())
        assert all((trial_dir / name / "metrics.json").is_file() for name in on_disk), (
            f"{trial_dir}: a checkpoint that is not a round checkpoint was left: {on_disk}")
        index = json.loads((trial_dir / "rounds.json").read_text())
        assert sorted(entry["checkpoint"] for entry in index) == on_disk, trial_dir
        assert [entry["round"] for entry in index] == sorted({e["round"] for e in index})
        for entry in index:
            metrics = json.loads((trial_dir / entry["checkpoint"] / "metrics.json").read_text())
            for field in ("round", "sparsity", "test_acc", "params_prunable"):
                assert entry[field] == metrics[field], (trial_dir, entry, field)
        indexed += len(index)
    return indexed
