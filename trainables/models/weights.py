"""Starting weights: a local state dict (`model.weights_path`) or torchvision's ImageNet weights
through torchvision's own mechanism (the torch hub cache, honouring TORCH_HOME)."""

from __future__ import annotations

import logging
import os
from pathlib import Path
from typing import Any

import torch
from torch import nn

from trainables.errors import WeightsUnavailableError

logger = logging.getLogger(__name__)


def hub_state_dict(weights: Any, what: str) -> dict[str, torch.Tensor]:
    """The state dict of a torchvision `WeightsEnum` entry, e.g. ResNet18_Weights.IMAGENET1K_V1.

    Loads `$TORCH_HOME/hub/checkpoints/<file>` if present (no network, no hash check: torch hub
    checks the hash only when downloading), downloads it otherwise.
    """
    file_name = os.path.basename(weights.url)
    target = Path(torch.hub.get_dir()) / "checkpoints" / file_name
    try:
        return weights.get_state_dict(progress=False, check_hash=True)
    except Exception as error:  # network errors, HTTP errors, a bad cached file, ...
        reason = str(getattr(error, "reason", None) or error).splitlines()[0]
        raise WeightsUnavailableError(
            f"ImageNet weights of {what} are not cached and could not be downloaded "
            f"({type(error).__name__}: {reason}); set model.weights_path to a local state dict "
            f"or put {file_name} at {target}"
        ) from None


def local_state_dict(path: str) -> dict[str, torch.Tensor]:
    """A state dict saved with torch.save (optionally under a "state_dict" key), loaded with
    weights_only; WeightsUnavailableError (one line) if it is absent or not a state dict."""
    if not Path(path).is_file():
        raise WeightsUnavailableError(f"model.weights_path {path} is not a file")
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as error:
        reason = str(error).splitlines()[0] if str(error) else type(error).__name__
        raise WeightsUnavailableError(
            f"model.weights_path {path} is not a loadable state dict ({reason})"
        ) from None
    if isinstance(state, dict) and "state_dict" in state and isinstance(state["state_dict"], dict):
        state = state["state_dict"]
    if not isinstance(state, dict):
        raise WeightsUnavailableError(
            f"model.weights_path {path} holds a {type(state).__name__}, not a state dict"
        )
    return state


def head_keys(
    own: dict[str, torch.Tensor], state: dict[str, torch.Tensor], num_classes: int
) -> list[str]:
    """The classifier head's keys where `state` has another class count: tensors whose shapes
    differ only in the first (output) dimension, which is `num_classes` in the model."""
    return [
        key for key in state
        if key in own and state[key].shape != own[key].shape
        and state[key].dim() == own[key].dim() and own[key].shape[0] == num_classes
        and state[key].shape[1:] == own[key].shape[1:]
    ]


def load_trunk_weights(
    model: nn.Module, state: dict[str, torch.Tensor], source: str, num_classes: int
) -> None:
    """Load `state` into `model`, strictly, except a classifier head of another class count.

    A head whose shape differs (`head_keys`) is skipped with a log note and keeps its fresh
    initialisation; any other missing, unexpected or mis-shaped key is a WeightsUnavailableError
    listing them.
    """
    own = model.state_dict()
    state = dict(state)
    skipped = head_keys(own, state, num_classes)
    for key in skipped:
        del state[key]
    missing = sorted(set(own) - set(state) - set(skipped))
    unexpected = sorted(set(state) - set(own))
    mis_shaped = sorted(k for k in set(state) & set(own) if state[k].shape != own[k].shape)
    if missing or unexpected or mis_shaped:
        parts = []
        for label, keys in (("missing", missing), ("unexpected", unexpected)):
            if keys:
                parts.append(f"{label} keys {_abbreviate(keys)}")
        if mis_shaped:
            shapes = [f"{k} {tuple(state[k].shape)} vs {tuple(own[k].shape)}" for k in mis_shaped]
            parts.append(f"shape mismatches {_abbreviate(shapes)}")
        raise WeightsUnavailableError(
            f"weights from {source} do not fit the model: {'; '.join(parts)}"
        )
    model.load_state_dict(state, strict=False)
    if skipped:
        logger.info(
            "weights from %s: head %s skipped (another class count), freshly initialised",
            source,
            ", ".join(skipped),
        )


def _abbreviate(items: list[str], limit: int = 8) -> str:
    shown = ", ".join(items[:limit])
    return shown + (f", ... ({len(items)} in all)" if len(items) > limit else "")
