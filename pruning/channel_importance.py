"""How much each channel of a group is worth keeping (higher = keep), and the slimming penalty.

A channel of a group is a filter in each of the group's producing layers (one output slice
``weight[c]`` of every Conv2d/Linear in ``ChannelGroup.filters``; one layer for a plain conv, up
to three across a ResNet stage's residual additions) and a scale in each of its BatchNorms.
Each criterion scores every producing layer's filter as its paper defines it and takes the
**mean over the group's producing layers**, so a coupled group's scores stay on the scale of a
single layer's (a sum would make coupled channels look more important under a global
threshold merely for being coupled):

* ``l1`` / ``l2``: the filter's L1 / L2 norm (Li et al. 2017, "Pruning Filters for Efficient
  ConvNets"); biases are not part of a filter's norm.
* ``bn_scale``: |gamma| of the BatchNorm over the channel (Liu et al. 2017, "Learning Efficient
  Convolutional Networks through Network Slimming"), mean over the group's BatchNorms.
* ``taylor``: first-order Taylor importance of the filter, (sum over its weights of w * dL/dw)^2
  for each batch, averaged over the batches (Molchanov et al. 2019, "Importance Estimation
  for Neural Network Pruning", eq. 8 with the filter as the group). Computed in train mode
  (batch statistics), like prunetune's other gradient scorers, on detached copies: the model's
  weights, buffers, modes and ``.grad`` are untouched.
* ``random``: uniform [0, 1) per channel from a CPU generator seeded with ``seed`` (the control).

Criteria return float64 scores, one tensor of length ``channels`` per group name.
"""

from __future__ import annotations

import itertools
from collections.abc import Callable, Iterable
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn
from torch.func import functional_call

from pruning.channel_groups import ChannelGraph, ChannelGroup
from pruning.registry import Registry

ChannelScores = dict[str, torch.Tensor]
Batch = tuple[torch.Tensor, torch.Tensor]


@dataclass(frozen=True)
class CriterionInputs:
    """What a criterion may read besides the weights (``taylor``: batches; ``random``: seed)."""

    batches: Iterable[Batch] | None = None
    num_batches: int = 1
    loss_fn: Callable[[torch.Tensor, torch.Tensor], torch.Tensor] = F.cross_entropy
    seed: int = 0


ChannelCriterion = Callable[[ChannelGraph, CriterionInputs], ChannelScores]
"""A criterion; one that reads `CriterionInputs.batches` says so with a true `reads_batches`
attribute (the trial then takes `channels.score_batches` training batches for it)."""
CRITERIA: Registry[ChannelCriterion] = Registry("channel criterion")


def reads_batches(criterion: str) -> bool:
    """Whether the registered `criterion` reads training batches."""
    return bool(getattr(CRITERIA.get(criterion), "reads_batches", False))


def channel_scores(
    graph: ChannelGraph,
    criterion: str,
    *,
    batches: Iterable[Batch] | None = None,
    num_batches: int = 1,
    loss_fn: Callable[[torch.Tensor, torch.Tensor], torch.Tensor] = F.cross_entropy,
    seed: int = 0,
) -> ChannelScores:
    """Scores of every group of ``graph`` under ``criterion`` (a name in ``CRITERIA``).

    ``taylor`` reads the first ``num_batches`` (inputs, targets) of ``batches``; ``random``
    reads ``seed``; the others read only the weights.
    """
    inputs = CriterionInputs(batches, num_batches, loss_fn, seed)
    return CRITERIA.get(criterion)(graph, inputs)


@CRITERIA.register("l1")
def _l1(graph: ChannelGraph, inputs: CriterionInputs) -> ChannelScores:
    return {
        group.name: _mean_over_filters(graph, group, lambda rows: rows.norm(p=1, dim=1))
        for group in graph.groups
    }


@CRITERIA.register("l2")
def _l2(graph: ChannelGraph, inputs: CriterionInputs) -> ChannelScores:
    return {
        group.name: _mean_over_filters(graph, group, lambda rows: rows.norm(p=2, dim=1))
        for group in graph.groups
    }


@CRITERIA.register("bn_scale")
def _bn_scales(graph: ChannelGraph, inputs: CriterionInputs) -> ChannelScores:
    return {group.name: _bn_scale(graph, group) for group in graph.groups}


@CRITERIA.register("random")
def _random(graph: ChannelGraph, inputs: CriterionInputs) -> ChannelScores:
    generator = torch.Generator().manual_seed(inputs.seed)
    return {
        group.name: torch.rand(group.channels, generator=generator, dtype=torch.float64)
        for group in graph.groups
    }


def _rows(weight: torch.Tensor) -> torch.Tensor:
    """A layer's filters as rows: ``[out, everything else]`` in float64."""
    return weight.detach().reshape(weight.shape[0], -1).to(torch.float64)


def _mean_over_filters(
    graph: ChannelGraph, group: ChannelGroup, per_filter: Callable[[torch.Tensor], torch.Tensor]
) -> torch.Tensor:
    scores = [per_filter(_rows(graph.module(name).weight)) for name in group.filters]
    return torch.stack(scores).mean(dim=0).cpu()


def _bn_scale(graph: ChannelGraph, group: ChannelGroup) -> torch.Tensor:
    norms = [graph.module(name) for name in group.norms]
    if not norms or any(norm.weight is None for norm in norms):
        raise ValueError(
            f"criterion bn_scale needs an affine BatchNorm over every pruned channel; channel "
            f"group {group.name} has {list(group.norms) or 'none'}"
        )
    scales = [norm.weight.detach().abs().to(torch.float64) for norm in norms]
    return torch.stack(scales).mean(dim=0).cpu()


@CRITERIA.register("taylor")
def _taylor(graph: ChannelGraph, inputs: CriterionInputs) -> ChannelScores:
    batches, num_batches, loss_fn = inputs.batches, inputs.num_batches, inputs.loss_fn
    if batches is None:
        raise ValueError("criterion taylor needs batches: an iterable of (inputs, targets)")
    if num_batches < 1:
        raise ValueError(f"num_batches must be >= 1; got {num_batches}")
    model = graph.model
    filter_names = sorted({name for group in graph.groups for name in group.filters})
    parameters = {name: p.detach() for name, p in model.named_parameters()}
    leaves = {name: parameters[f"{name}.weight"].clone().requires_grad_() for name in filter_names}
    parameters.update({f"{name}.weight": leaf for name, leaf in leaves.items()})
    # Cloned buffers absorb BatchNorm's running-statistic updates in train mode.
    buffers = {name: b.detach().clone() for name, b in model.named_buffers()}
    device = next(iter(leaves.values())).device
    squared = {
        name: torch.zeros(leaf.shape[0], dtype=torch.float64) for name, leaf in leaves.items()
    }
    taken = 0
    saved_modes = [(module, module.training) for module in model.modules()]
    model.train()
    try:
        with torch.enable_grad():
            for inputs, targets in itertools.islice(batches, num_batches):
                outputs = functional_call(model, (parameters, buffers), (inputs.to(device),))
                loss = loss_fn(outputs, targets.to(device))
                gradients = torch.autograd.grad(loss, list(leaves.values()), materialize_grads=True)
                for (name, leaf), gradient in zip(leaves.items(), gradients, strict=True):
                    first_order = (_rows(leaf) * _rows(gradient)).sum(dim=1)
                    squared[name] += first_order.pow(2).cpu()
                taken += 1
    finally:
        for module, flag in saved_modes:
            module.training = flag
    if taken < num_batches:
        raise ValueError(f"num_batches is {num_batches} but the batches held only {taken}")
    return {
        group.name: torch.stack([squared[name] / taken for name in group.filters]).mean(dim=0)
        for group in graph.groups
    }


_taylor.reads_batches = True  # type: ignore[attr-defined]


def bn_scale_penalty(model: nn.Module, strength: float) -> torch.Tensor:
    """``strength * sum |gamma|`` over every affine BatchNorm: the sparsity term network
    slimming (Liu et al. 2017) adds to the training loss (their lambda, e.g. 1e-4)."""
    scales = [
        module.weight.abs().sum()
        for module in model.modules()
        if isinstance(module, nn.modules.batchnorm._BatchNorm) and module.weight is not None
    ]
    if not scales:
        return torch.zeros(())
    return strength * torch.stack(scales).sum()
