"""Masks: which weights are prunable, and boolean keep-masks over them."""

from __future__ import annotations

import os
import tempfile
from pathlib import Path

import torch
from torch import nn

Mask = dict[str, torch.Tensor]
"""Parameter name (as in ``model.named_parameters()``) -> bool tensor; True = weight kept."""

_PRUNABLE_MODULE_TYPES = (nn.Conv2d, nn.Linear)


def prunable_parameter_names(
    model: nn.Module, exclude_first_conv: bool = False, exclude_classifier: bool = False
) -> list[str]:
    """Names of the prunable weights, in module order.

    By default the ``.weight`` of every ``nn.Conv2d`` and ``nn.Linear``; biases and
    normalisation parameters are never prunable. ``exclude_first_conv`` leaves out the first
    ``nn.Conv2d`` and ``exclude_classifier`` the last ``nn.Linear`` (in ``named_modules`` order).
    """
    candidates = [
        (name, module)
        for name, module in model.named_modules()
        if isinstance(module, _PRUNABLE_MODULE_TYPES)
    ]
    excluded: set[str] = set()
    if exclude_first_conv:
        convs = [name for name, module in candidates if isinstance(module, nn.Conv2d)]
        excluded.update(convs[:1])
    if exclude_classifier:
        linears = [name for name, module in candidates if isinstance(module, nn.Linear)]
        excluded.update(linears[-1:])
    # named_parameters() deduplicates shared tensors; only names it yields are valid keys.
    parameter_names = {name for name, _ in model.named_parameters()}
    names = []
    for module_name, _ in candidates:
        if module_name in excluded:
            continue
        name = f"{module_name}.weight" if module_name else "weight"
        if name in parameter_names:
            names.append(name)
    return names


def full_mask(model: nn.Module, names: list[str] | None = None) -> Mask:
    """An all-True mask over ``names`` (default: ``prunable_parameter_names(model)``)."""
    if names is None:
        names = prunable_parameter_names(model)
    parameters = dict(model.named_parameters())
    missing = [name for name in names if name not in parameters]
    if missing:
        raise KeyError(f"not parameters of the model: {missing}; see model.named_parameters()")
    return {name: torch.ones_like(parameters[name], dtype=torch.bool) for name in names}


def check_mask_fits(model: nn.Module, mask: Mask) -> None:
    """Raise ValueError unless every mask entry is a bool tensor shaped like its parameter."""
    parameters = dict(model.named_parameters())
    for name, keep in mask.items():
        if name not in parameters:
            raise ValueError(f"mask key {name!r} is not a parameter of the model")
        if keep.dtype != torch.bool:
            raise ValueError(f"mask[{name!r}] has dtype {keep.dtype}; expected torch.bool")
        if keep.shape != parameters[name].shape:
            raise ValueError(
                f"mask[{name!r}] has shape {tuple(keep.shape)}; the parameter has "
                f"{tuple(parameters[name].shape)}"
            )


@torch.no_grad()
def apply_mask(model: nn.Module, mask: Mask) -> None:
    """Set every masked-out weight of ``model`` to exactly zero, in place."""
    check_mask_fits(model, mask)
    parameters = dict(model.named_parameters())
    for name, keep in mask.items():
        parameter = parameters[name]
        # masked_fill (not mul) so that inf/NaN weights also become exactly zero.
        parameter.masked_fill_(~keep.to(parameter.device), 0)


def mask_sparsity(mask: Mask) -> float:
    """Fraction of the masked weights that are pruned (False), over all entries of ``mask``."""
    total = sum(keep.numel() for keep in mask.values())
    if total == 0:
        return 0.0
    kept = sum(int(keep.sum()) for keep in mask.values())
    return (total - kept) / total


def layerwise_shuffle(mask: Mask, generator: torch.Generator) -> Mask:
    """Same number of kept weights per layer, at uniformly random positions.

    The random-reinitialisation-free "layerwise shuffle" control of Frankle et al. (2021).
    Draws from ``generator`` (a CPU generator) layer by layer in the mask's key order.
    """
    shuffled: Mask = {}
    for name, keep in mask.items():
        kept = int(keep.sum())
        positions = torch.randperm(keep.numel(), generator=generator)[:kept]
        flat = torch.zeros(keep.numel(), dtype=torch.bool)
        flat[positions] = True
        shuffled[name] = flat.view(keep.shape).to(keep.device)
    return shuffled


def save_mask(mask: Mask, path: str | os.PathLike[str]) -> None:
    """Write ``mask`` to ``path`` atomically (a reader sees the old file or the new, never half)."""
    path = Path(path)
    payload = {
        name: keep.detach().to("cpu", torch.bool).contiguous() for name, keep in mask.items()
    }
    file_descriptor, temporary = tempfile.mkstemp(
        dir=path.parent, prefix=f".{path.name}.", suffix=".tmp"
    )
    try:
        with os.fdopen(file_descriptor, "wb") as handle:
            torch.save(payload, handle)
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(temporary, path)
    except BaseException:
        Path(temporary).unlink(missing_ok=True)
        raise


def load_mask(path: str | os.PathLike[str], map_location: str | torch.device = "cpu") -> Mask:
    """Read a mask written by ``save_mask`` (tensors only: ``torch.load(weights_only=True)``)."""
    loaded = torch.load(path, map_location=map_location, weights_only=True)
    if not isinstance(loaded, dict) or not all(
        isinstance(name, str) and isinstance(keep, torch.Tensor) and keep.dtype == torch.bool
        for name, keep in loaded.items()
    ):
        raise ValueError(f"{path} does not hold a mask (a dict of name -> bool tensor)")
    return loaded
