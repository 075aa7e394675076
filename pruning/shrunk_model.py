"""A channel-pruned model as plain data, and its reconstruction without unpickling code.

A pruned network's architecture differs from its registry entry only in the widths of its
Conv2d, BatchNorm and Linear layers. ``layer_widths`` records them as plain ints; together
with the state dict that is everything needed, and both load with
``torch.load(weights_only=True)``. ``rebuild`` takes a freshly built *unpruned* model of the
same registry entry, narrows each recorded layer in place to its recorded width (fresh
uninitialised tensors), then loads the state dict strictly, so a missing, unexpected or
mis-shaped tensor is an error rather than a silently different network.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import nn

_BatchNorm = nn.modules.batchnorm._BatchNorm
LayerWidths = dict[str, dict[str, int]]


def layer_widths(model: nn.Module) -> LayerWidths:
    """``module name -> its width fields`` for every Conv2d, BatchNorm and Linear layer."""
    widths: LayerWidths = {}
    for name, module in model.named_modules():
        if isinstance(module, nn.Conv2d):
            widths[name] = {
                "in_channels": module.in_channels,
                "out_channels": module.out_channels,
                "groups": module.groups,
            }
        elif isinstance(module, _BatchNorm):
            widths[name] = {"num_features": module.num_features}
        elif isinstance(module, nn.Linear):
            widths[name] = {"in_features": module.in_features, "out_features": module.out_features}
    return widths


def shrunk_state(model: nn.Module) -> dict[str, Any]:
    """``{"state_dict": ..., "layer_widths": ...}``: a pruned model as tensors and ints only."""
    return {
        "state_dict": {key: value.detach().cpu() for key, value in model.state_dict().items()},
        "layer_widths": layer_widths(model),
    }


def rebuild(unpruned: nn.Module, state: dict[str, Any]) -> nn.Module:
    """Narrow ``unpruned`` in place to ``state["layer_widths"]`` and load its state dict.

    Returns the same module object. Raises ValueError for a recorded layer that ``unpruned``
    lacks or that is of another kind, and RuntimeError (from ``load_state_dict``) for any
    tensor that does not fit.
    """
    modules = dict(unpruned.named_modules())
    for name, widths in state["layer_widths"].items():
        module = modules.get(name)
        if module is None:
            raise ValueError(f"layer_widths names {name!r}, which the model does not have")
        _narrow(name, module, widths)
    unpruned.load_state_dict(state["state_dict"], strict=True)
    return unpruned


def _narrow(name: str, module: nn.Module, widths: dict[str, int]) -> None:
    expected = set(layer_widths(module).get("", {}))
    if set(widths) != expected:
        raise ValueError(
            f"layer_widths[{name!r}] has fields {sorted(widths)}; a {type(module).__name__} "
            f"has {sorted(expected)}"
        )
    if layer_widths(module)[""] == widths:
        return
    reference = next(
        (t for t in (module.weight, getattr(module, "running_mean", None)) if t is not None), None
    )
    like = {} if reference is None else {"device": reference.device, "dtype": reference.dtype}
    with torch.no_grad():
        if isinstance(module, nn.Conv2d):
            module.in_channels, module.out_channels = widths["in_channels"], widths["out_channels"]
            module.groups = widths["groups"]
            shape = (module.out_channels, module.in_channels // module.groups, *module.kernel_size)
            _replace(module, "weight", torch.empty(shape, **like))
            _replace(module, "bias", torch.empty(module.out_channels, **like))
        elif isinstance(module, _BatchNorm):
            size = module.num_features = widths["num_features"]
            for key in ("weight", "bias", "running_mean", "running_var"):
                _replace(module, key, torch.empty(size, **like))
        else:  # nn.Linear
            module.in_features, module.out_features = widths["in_features"], widths["out_features"]
            _replace(module, "weight", torch.empty(module.out_features, module.in_features, **like))
            _replace(module, "bias", torch.empty(module.out_features, **like))


def _replace(module: nn.Module, key: str, tensor: torch.Tensor) -> None:
    """Swap a parameter or buffer for one of a new shape; absent ones (bias=False) stay absent."""
    current = getattr(module, key, None)
    if current is None:
        return
    if isinstance(current, nn.Parameter):
        setattr(module, key, nn.Parameter(tensor, requires_grad=current.requires_grad))
    else:
        setattr(module, key, tensor)
