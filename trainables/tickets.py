"""Any round's network back from an experiment directory, in one call:

    model, info = load_round("output/quickstart", "imp_s0_p0.8x3", round=2)

The network is rebuilt exactly as the round ended: the smaller network after a structured
(`channels`) round, the unpruned architecture with the round's masks applied (pruned weights
exactly zero) otherwise, in eval mode, on the CPU. Its weights are the round's best-validation
weights (`best_model`, the ones its reported test accuracy is from) unless `weights="last"`
(the weights it ended with: every round but a trial's last pruned one keeps them).
Everything is loaded with `torch.load(weights_only=True)`; no code is unpickled, and no data
or pretrained weights are needed.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import torch
from torch import nn

import pruning
from pruning.registry import did_you_mean
from trainables.checkpoints import CheckpointError, load_round_checkpoint
from trainables.config import ModelConfig, TrialConfig
from trainables.datasets.common import resolved_image_size
from trainables.errors import PrunetuneError
from trainables.models import build_model
from trainables.resolve import parse_trial_config
from trainables.schema import ROUND_ROW, SchemaVersionError, check_version
from trainables.trial_store import round_dirs

#: A Tune trial directory is `<readable name>_<experiment id>_<trial index>`.
_TRIAL_ID = re.compile(r"_[0-9a-f]{5}_\d{5}$")
_WEIGHTS = {"best": "best_model", "last": "model"}


class RoundNotFoundError(PrunetuneError):
    """The experiment has no such trial, or the trial no such round (one line)."""


@dataclass(frozen=True)
class RoundInfo:
    """Where a loaded round came from and what it reported."""

    trial_dir: Path
    name: str
    """The trial's readable name (its directory without Tune's id)."""
    round: int
    checkpoint: Path
    row: dict[str, Any]
    """The round's row as reported (test_acc, sparsity, parameter counts, ...)."""
    config: TrialConfig
    masks: dict[str, torch.Tensor]
    weights: str
    """"best" (the best-validation weights) or "last" (the weights the round ended with)."""
    layer_widths: pruning.LayerWidths | None
    """A structured round's layer widths; None for a masked (unstructured) round."""
    input_shape: tuple[int, int, int]
    """One example's (channels, height, width), as the trial fed the network."""


def readable_name(trial_dir: Path | str) -> str:
    """`imp_s0_p0.8x3` for the Tune directory `imp_s0_p0.8x3_999bf_00003`."""
    return _TRIAL_ID.sub("", Path(trial_dir).name)


def find_trial(experiment_dir: str | Path, trial: str) -> Path:
    """The trial directory named `trial` (its Tune directory name or its readable name)."""
    experiment = Path(experiment_dir)
    trials = sorted(p.parent for p in experiment.glob("*/params.json"))
    if not trials:
        raise RoundNotFoundError(f"{experiment}: no trial directories (is it an experiment "
                                 "directory of prunetune's sweeps?)")
    found = [p for p in trials if trial in (p.name, readable_name(p))]
    if len(found) == 1:
        return found[0]
    names = sorted({readable_name(p) for p in trials})
    if found:
        raise RoundNotFoundError(f"{experiment}: {len(found)} trials are named {trial!r}; name "
                                 "one by its directory: " + ", ".join(p.name for p in found))
    raise RoundNotFoundError(f"{experiment}: no trial {trial!r}{did_you_mean(trial, names)}; "
                             f"trials: {', '.join(names)}")


def round_checkpoints(trial_dir: Path) -> dict[int, Path]:
    """Round number -> its checkpoint directory: from `rounds.json` when the sweep has finished
    the trial, else from the round checkpoints' own metrics.json (the newest copy wins)."""
    index = trial_dir / "rounds.json"
    if index.is_file():
        return {entry["round"]: trial_dir / entry["checkpoint"]
                for entry in json.loads(index.read_text())}
    rounds: dict[int, Path] = {}
    for directory in round_dirs(trial_dir):
        try:
            metrics = json.loads((directory / "metrics.json").read_text())
        except (OSError, json.JSONDecodeError):
            continue  # a cut-off copy
        rounds[int(metrics["round"])] = directory
    return rounds


def load_round(
    experiment_dir: str | Path,
    trial: str,
    round: int | None = None,  # noqa: A002 - the name users know from the rows
    weights: Literal["best", "last"] = "best",
) -> tuple[nn.Module, RoundInfo]:
    """Round `round` (None: the last finished one) of `trial` in `experiment_dir`, rebuilt as
    it ended (see the module docstring); RoundNotFoundError (one line) for a trial or round
    that is not there."""
    if weights not in _WEIGHTS:
        raise ValueError(f"weights must be 'best' or 'last', got {weights!r}")
    trial_dir = find_trial(experiment_dir, trial)
    rounds = round_checkpoints(trial_dir)
    if round is None and rounds:
        round = max(rounds)  # noqa: A001
    if round not in rounds:
        have = ", ".join(map(str, sorted(rounds))) or "none yet"
        missing = "no round has finished" if round is None else f"no round {round}"
        raise RoundNotFoundError(f"{trial_dir.name}: {missing}; its rounds: {have}")
    checkpoint = rounds[round]
    try:
        state = load_round_checkpoint(checkpoint)
        check_version(state["metrics"], str(checkpoint / "metrics.json"))
    except (CheckpointError, SchemaVersionError) as error:
        raise RoundNotFoundError(str(error)) from None
    params = json.loads((trial_dir / "params.json").read_text())
    raw = params.get("trial", params)  # run_sweep nests the trial config under "trial"
    config = parse_trial_config(raw, source=f"{trial_dir}/params.json",
                                check_ignored=False)
    if _WEIGHTS[weights] not in state:
        raise RoundNotFoundError(
            f"{trial_dir.name}: round {round} keeps only its best-validation weights (a trial's "
            "last pruned round stores one weight set); load it with weights='best'")
    weights_state = state[_WEIGHTS[weights]]
    counts = network_counts(config.model, weights_state)
    model = _built(config.model, weights_state, state.get("layer_widths"), counts)
    masks = state["masks"]
    parameters = dict(model.named_parameters())
    with torch.no_grad():
        for name, keep in masks.items():
            parameters[name].mul_(keep.to(parameters[name].dtype))
    model.eval()
    side = resolved_image_size(config.data)
    info = RoundInfo(trial_dir=trial_dir, name=readable_name(trial_dir), round=round,
                     checkpoint=checkpoint, row=ROUND_ROW.read(state["metrics"]), config=config,
                     masks=masks, weights=weights, layer_widths=state.get("layer_widths"),
                     input_shape=(counts[1], side, side))
    return model, info


def network(model_cfg: ModelConfig, state_dict: dict[str, torch.Tensor],
            layer_widths: pruning.LayerWidths | None = None) -> nn.Module:
    """The network `model_cfg` describes with `state_dict` loaded strictly (narrowed first to
    `layer_widths` for a structured round). The class count and input channels are read off
    the state dict, so no dataset is needed; no pretrained weights are fetched."""
    return _built(model_cfg, state_dict, layer_widths, network_counts(model_cfg, state_dict))


def _built(model_cfg: ModelConfig, state_dict: dict[str, torch.Tensor],
           layer_widths: pruning.LayerWidths | None, counts: tuple[int, int]) -> nn.Module:
    fresh = model_cfg.model_copy(update={"pretrained": False, "weights_path": None})
    model = build_model(fresh, *counts)
    if layer_widths is not None:
        return pruning.rebuild(model, {"state_dict": state_dict, "layer_widths": layer_widths})
    model.load_state_dict(state_dict, strict=True)
    return model


def network_counts(model_cfg: ModelConfig,
                   state_dict: dict[str, torch.Tensor]) -> tuple[int, int]:
    """(num_classes, in_channels) of the network `state_dict` was saved from: the model is
    built twice on the meta device with other counts, and the tensors whose shapes follow each
    count say where to read it."""
    model_cfg = model_cfg.model_copy(update={"pretrained": False, "weights_path": None})

    def shapes(classes: int, channels: int) -> dict[str, torch.Size]:
        with torch.device("meta"):
            built = build_model(model_cfg, classes, channels)
        return {name: tensor.shape for name, tensor in built.state_dict().items()}

    base, more_classes, more_channels = shapes(2, 3), shapes(5, 3), shapes(2, 1)
    return (_count(base, more_classes, state_dict, 2, "class count"),
            _count(base, more_channels, state_dict, 3, "input channel count"))


def _count(base: dict[str, torch.Size], other: dict[str, torch.Size],
           state_dict: dict[str, torch.Tensor], value: int, what: str) -> int:
    for name, shape in base.items():
        if other[name] != shape:
            dim = next(d for d, (a, b) in enumerate(zip(shape, other[name], strict=True))
                       if a != b and a == value)
            return int(state_dict[name].shape[dim])
    raise ValueError(f"cannot tell the {what} of the network from its weights")
