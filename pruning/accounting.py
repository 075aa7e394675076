"""Counting parameters: totals, prunable weights, and what remains after pruning."""

from __future__ import annotations

from dataclasses import dataclass

from torch import nn

from pruning.masks import Mask, prunable_parameter_names


@dataclass(frozen=True)
class LayerCount:
    """One prunable weight tensor: its size, its nonzero entries, its pruned fraction."""

    numel: int
    nonzero: int
    sparsity: float


@dataclass(frozen=True)
class ParameterCounts:
    """Parameter counts of a model.

    ``total``/``prunable`` count entries; ``total_nonzero``/``prunable_nonzero`` count the
    remaining (nonzero) ones. ``sparsity`` is the pruned fraction of the prunable weights,
    measured by counting zeros in the weights themselves, so a weight that happens to be
    exactly zero counts as pruned even if its mask keeps it (see ``mask_sparsity`` for the
    mask's own figure).
    """

    total: int
    prunable: int
    total_nonzero: int
    prunable_nonzero: int
    sparsity: float
    per_layer: dict[str, LayerCount]


def count_parameters(
    model: nn.Module, mask: Mask | None = None, prunable_names: list[str] | None = None
) -> ParameterCounts:
    """Count ``model``'s parameters (each shared tensor once; buffers are not parameters).

    The prunable weights are ``prunable_names`` if given, else the keys of ``mask``, else
    ``prunable_parameter_names(model)``.
    """
    if prunable_names is None:
        prunable_names = list(mask) if mask is not None else prunable_parameter_names(model)
    parameters = dict(model.named_parameters())
    missing = [name for name in prunable_names if name not in parameters]
    if missing:
        raise KeyError(f"not parameters of the model: {missing}; see model.named_parameters()")
    total = sum(parameter.numel() for parameter in parameters.values())
    total_nonzero = sum(int(parameter.count_nonzero()) for parameter in parameters.values())
    per_layer = {}
    for name in prunable_names:
        numel = parameters[name].numel()
        nonzero = int(parameters[name].count_nonzero())
        per_layer[name] = LayerCount(numel, nonzero, _pruned_fraction(numel, nonzero))
    prunable = sum(layer.numel for layer in per_layer.values())
    prunable_nonzero = sum(layer.nonzero for layer in per_layer.values())
    return ParameterCounts(
        total=total,
        prunable=prunable,
        total_nonzero=total_nonzero,
        prunable_nonzero=prunable_nonzero,
        sparsity=_pruned_fraction(prunable, prunable_nonzero),
        per_layer=per_layer,
    )


def _pruned_fraction(numel: int, nonzero: int) -> float:
    return (numel - nonzero) / numel if numel else 0.0
