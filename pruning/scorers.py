"""Scorers: a score per prunable weight, higher = more worth keeping.

Every scorer has the signature ``(model, mask, context) -> Scores`` and leaves the model as
the caller left it: weights, buffers (BatchNorm running statistics), train/eval modes and
``.grad`` are untouched, because gradient-based scorers run ``torch.func.functional_call``
on detached copies of the parameters and buffers.
"""

from __future__ import annotations

import itertools
from collections.abc import Callable, Iterable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Literal

import torch
import torch.nn.functional as F
from torch import nn
from torch.func import functional_call

from pruning.allocation import Scores, kept_count_for_sparsity, prune_to_sparsity
from pruning.masks import Mask, check_mask_fits
from pruning.registry import Registry

Batch = tuple[torch.Tensor, torch.Tensor]
BatchNormMode = Literal["train", "eval"]
BATCHNORM_MODES: tuple[str, ...] = ("train", "eval")


@dataclass(frozen=True)
class ScoringContext:
    """Everything a scorer may need; each scorer reads only the fields it documents."""

    batches: Iterable[Batch] | None = None
    """(inputs, targets) batches, e.g. a DataLoader; snip and grasp read ``num_batches``."""
    loss_fn: Callable[[torch.Tensor, torch.Tensor], torch.Tensor] = F.cross_entropy
    num_batches: int = 1
    target_sparsity: float | None = None
    """Final sparsity, which the iterative synflow schedule prunes towards."""
    seed: int = 0
    """Seed of the ``random`` scorer's generator."""
    device: torch.device | str | None = None
    """Where batches are moved; default: the device of the first masked parameter."""
    synflow_iterations: int = 100
    grasp_temperature: float = 200.0
    batchnorm_mode: BatchNormMode = "train"
    """BatchNorm while snip and grasp score: ``train`` (batch statistics, as the GraSP reference
    code) or ``eval`` (running statistics, as the SNIP and Synaptic-Flow reference code). The
    papers leave it open, and it matters: at 90% sparsity the two keep different weights."""
    input_shape: tuple[int, ...] | None = None
    """Shape of one input without the batch dimension, for synflow when there are no batches."""


Scorer = Callable[[nn.Module, Mask, ScoringContext], Scores]
SCORERS: Registry[Scorer] = Registry("scorer")


@SCORERS.register("magnitude")
def magnitude_scores(model: nn.Module, mask: Mask, context: ScoringContext) -> Scores:
    """|w| for every masked parameter."""
    parameters = dict(model.named_parameters())
    return {name: parameters[name].detach().abs().clone() for name in mask}


@SCORERS.register("random")
def random_scores(model: nn.Module, mask: Mask, context: ScoringContext) -> Scores:
    """Uniform [0, 1) scores from a CPU generator seeded with ``context.seed``."""
    generator = torch.Generator().manual_seed(context.seed)
    return {
        name: torch.rand(keep.shape, generator=generator).to(keep.device)
        for name, keep in mask.items()
    }


@SCORERS.register("snip")
def snip_scores(model: nn.Module, mask: Mask, context: ScoringContext) -> Scores:
    """SNIP connection sensitivity |w * dL/dw| (Lee et al. 2019).

    Evaluated at the masked weights (``w * mask``) with BatchNorm in
    ``context.batchnorm_mode``, the gradient summed over the first ``context.num_batches``
    batches before the product, as the reference implementations accumulate ``.grad``.
    """
    batches = _take_batches(model, mask, context)
    parameters, buffers, weights = _functional_state(model, mask)
    gradient_sums = [torch.zeros_like(weight) for weight in weights]
    with _modes(model, training=_batchnorm_training(context)), torch.enable_grad():
        for inputs, targets in batches:
            loss = context.loss_fn(
                functional_call(model, (parameters, buffers), (inputs,)), targets
            )
            gradients = torch.autograd.grad(loss, weights, materialize_grads=True)
            torch._foreach_add_(gradient_sums, gradients)
    return {
        name: (weight.detach() * gradient).abs()
        for name, weight, gradient in zip(mask, weights, gradient_sums, strict=True)
    }


@SCORERS.register("grasp")
def grasp_scores(model: nn.Module, mask: Mask, context: ScoringContext) -> Scores:
    """GraSP (Wang et al. 2020) in "higher = keep" form: ``w * (H g)``.

    The paper scores ``S = -w * (H g)`` and removes the weights with the HIGHEST ``S`` (the
    reference code keeps ``S <= threshold``); this returns ``-S`` so that keeping the highest
    scores is the reference's rule. ``g`` is the gradient of the loss of the logits divided by
    ``context.grasp_temperature`` summed over the batches, ``H g`` the Hessian-gradient product
    by double backward summed over the same batches, at the masked weights, BatchNorm in
    ``context.batchnorm_mode``. From an already-pruned mask the product is ``m * H (m * g)``,
    as in the reference: pruned weights contribute neither to ``g`` nor to the product.
    """
    batches = _take_batches(model, mask, context)
    parameters, buffers, weights = _functional_state(model, mask)
    temperature = context.grasp_temperature

    def loss_of(inputs: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
        logits = functional_call(model, (parameters, buffers), (inputs,))
        return context.loss_fn(logits / temperature, targets)

    keeps = [keep.to(weight.dtype) for keep, weight in zip(mask.values(), weights, strict=True)]
    with _modes(model, training=_batchnorm_training(context)), torch.enable_grad():
        gradient_sums = [torch.zeros_like(weight) for weight in weights]
        for inputs, targets in batches:
            gradients = torch.autograd.grad(
                loss_of(inputs, targets), weights, materialize_grads=True
            )
            torch._foreach_add_(gradient_sums, gradients)
        torch._foreach_mul_(gradient_sums, keeps)  # m * g: pruned weights carry no gradient
        hessian_gradient = [torch.zeros_like(weight) for weight in weights]
        for inputs, targets in batches:
            gradients = torch.autograd.grad(
                loss_of(inputs, targets), weights, create_graph=True, materialize_grads=True
            )
            gradient_dot = sum(
                (fixed * gradient).sum()
                for fixed, gradient in zip(gradient_sums, gradients, strict=True)
            )
            products = torch.autograd.grad(gradient_dot, weights, materialize_grads=True)
            torch._foreach_add_(hessian_gradient, products)
    return {
        name: weight.detach() * product * keep
        for name, weight, product, keep in zip(mask, weights, hessian_gradient, keeps, strict=True)
    }


@SCORERS.register("synflow")
def synflow_scores(model: nn.Module, mask: Mask, context: ScoringContext) -> Scores:
    """SynFlow (Tanaka et al. 2020): data-free, iterative, float64 scores.

    Each round linearises the network (|w| for every parameter and floating buffer, eval-mode
    BatchNorm, as in the reference), feeds an all-ones input, and scores
    ``|w * dR/dw|`` with ``R = sum(output)``. Between rounds the masked weights are pruned
    globally towards ``context.target_sparsity`` on the reference's exponential density
    schedule ``d_k = d_0 * (d_final / d_0) ** (k / n)``. Returns the last round's scores, with
    ``-inf`` for weights that ``mask`` or an earlier round pruned, so
    ``prune_to_sparsity(scores, mask, target_sparsity)`` reproduces the iterative result.

    The reference code runs the linearised network in float32 (its ``model.double()`` is
    commented out); float64 is our choice, because the product of |w| over a deep network
    under- and overflows float32 at high sparsity and then reorders scores.
    """
    rounds = context.synflow_iterations
    if rounds < 1:
        raise ValueError(f"synflow_iterations must be >= 1; got {rounds}")
    if context.target_sparsity is None and rounds > 1:
        raise ValueError("synflow needs target_sparsity for its iterative schedule")
    check_mask_fits(model, mask)
    if not mask:
        return {}
    total = sum(keep.numel() for keep in mask.values())
    alive = sum(int(keep.sum()) for keep in mask.values())
    initial_density = alive / total
    target = context.target_sparsity
    if target is not None and not (
        0.0 <= target < 1.0 and kept_count_for_sparsity(total, target) <= alive
    ):
        raise ValueError(
            f"target_sparsity must be in [current sparsity {1.0 - initial_density}, 1); "
            f"got {target}"
        )
    if alive == 0:
        return {
            name: torch.full(keep.shape, float("-inf"), dtype=torch.float64, device=keep.device)
            for name, keep in mask.items()
        }
    device = _device(mask, context)
    ones = torch.ones((1, *_input_shape(context)), dtype=torch.float64, device=device)
    parameters = {
        name: parameter.detach().to(torch.float64).abs()
        for name, parameter in model.named_parameters()
    }
    buffers = {
        name: buffer.detach().to(torch.float64).abs() if buffer.is_floating_point() else buffer
        for name, buffer in model.named_buffers()
    }
    absolute_weights = {name: parameters[name] for name in mask}
    current = dict(mask)
    for round_index in range(1, rounds + 1):
        weights = [(absolute_weights[name] * current[name]).requires_grad_() for name in mask]
        parameters.update(zip(mask, weights, strict=True))
        with _modes(model, training=False), torch.enable_grad():
            output = functional_call(model, (parameters, buffers), (ones,))
            gradients = torch.autograd.grad(output.sum(), weights, materialize_grads=True)
        round_scores = {
            name: (weight.detach() * gradient).abs()
            for name, weight, gradient in zip(mask, weights, gradients, strict=True)
        }
        if round_index < rounds:
            final_density = 1.0 - target
            density = initial_density * (final_density / initial_density) ** (round_index / rounds)
            # Never below the current sparsity, whatever float rounding did to the schedule.
            kept_now = sum(int(keep.sum()) for keep in current.values())
            sparsity = max(1.0 - density, (total - kept_now) / total)
            if kept_count_for_sparsity(total, sparsity) <= kept_now:
                current = prune_to_sparsity(round_scores, current, sparsity)
    return {name: round_scores[name].masked_fill(~current[name], float("-inf")) for name in mask}


def score(model: nn.Module, mask: Mask, scorer: str, **context: object) -> Scores:
    """Scores of ``scorer`` for the weights ``mask`` covers; ``context`` fills a ScoringContext."""
    return SCORERS.get(scorer)(model, mask, ScoringContext(**context))


def _functional_state(
    model: nn.Module, mask: Mask
) -> tuple[dict[str, torch.Tensor], dict[str, torch.Tensor], list[torch.Tensor]]:
    """Detached parameters (masked weights as fresh leaves requiring grad) and cloned buffers.

    Cloned buffers absorb BatchNorm's running-statistic updates; the model's stay untouched.
    """
    check_mask_fits(model, mask)
    parameters = {name: p.detach() for name, p in model.named_parameters()}
    weights = [(parameters[name] * keep).requires_grad_() for name, keep in mask.items()]
    parameters.update(zip(mask, weights, strict=True))
    buffers = {name: buffer.detach().clone() for name, buffer in model.named_buffers()}
    return parameters, buffers, weights


@contextmanager
def _modes(model: nn.Module, training: bool) -> Iterator[None]:
    """Put every submodule in train (or eval) mode, restoring each module's own flag after."""
    saved = [(module, module.training) for module in model.modules()]
    model.train(training)
    try:
        yield
    finally:
        for module, flag in saved:
            module.training = flag


def _batchnorm_training(context: ScoringContext) -> bool:
    if context.batchnorm_mode not in BATCHNORM_MODES:
        raise ValueError(
            f"batchnorm_mode must be one of {BATCHNORM_MODES}; got {context.batchnorm_mode!r}"
        )
    return context.batchnorm_mode == "train"


def _device(mask: Mask, context: ScoringContext) -> torch.device:
    if context.device is not None:
        return torch.device(context.device)
    return next(iter(mask.values())).device


def _take_batches(model: nn.Module, mask: Mask, context: ScoringContext) -> list[Batch]:
    if context.batches is None:
        raise ValueError("this scorer needs batches: an iterable of (inputs, targets)")
    if context.num_batches < 1:
        raise ValueError(f"num_batches must be >= 1; got {context.num_batches}")
    device = _device(mask, context)
    batches = [
        (inputs.to(device), targets.to(device))
        for inputs, targets in itertools.islice(context.batches, context.num_batches)
    ]
    if len(batches) < context.num_batches:
        raise ValueError(
            f"num_batches is {context.num_batches} but the batches held only {len(batches)}"
        )
    return batches


def _input_shape(context: ScoringContext) -> tuple[int, ...]:
    if context.input_shape is not None:
        return tuple(context.input_shape)
    if context.batches is None:
        raise ValueError("synflow needs input_shape or batches to know the input's shape")
    inputs, _ = next(iter(context.batches))
    return tuple(inputs.shape[1:])
