"""Scorers: a score per prunable weight, higher = more worth keeping.

A scorer is an object that carries its own settings (its dataclass fields, as Torch-Pruning's
importance objects do), registered by name in `SCORERS`. It is called as
``scorer(model, mask, inputs)``: `ScoringInputs` is what the trial gives every scorer (batches,
loss, target sparsity, seed, input shape); each scorer reads what it documents. Every scorer
leaves the model as the caller left it: weights, buffers (BatchNorm running statistics),
train/eval modes and ``.grad`` are untouched, because gradient-based scorers run
``torch.func.functional_call`` on detached copies of the parameters and buffers.

A new scorer is one class in one module, registered with ``@SCORERS.register("name")`` on a
frozen dataclass subclassing `Scorer`; a sweep chooses it with ``method: prune_at_init`` and
``prune_at_init: {scorer: name, settings: {...its fields...}}``.
"""

from __future__ import annotations

import dataclasses
import itertools
from collections.abc import Callable, Iterable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any, ClassVar, Literal

import torch
import torch.nn.functional as F
from torch import nn
from torch.func import functional_call

from pruning.allocation import Scores, kept_count_for_sparsity, prune_to_sparsity
from pruning.masks import Mask, check_mask_fits
from pruning.registry import Registry, did_you_mean

Batch = tuple[torch.Tensor, torch.Tensor]
BatchNormMode = Literal["train", "eval"]
BATCHNORM_MODES: tuple[str, ...] = ("train", "eval")


@dataclass(frozen=True)
class ScoringInputs:
    """What a trial gives every scorer; each scorer reads only the fields it documents."""

    batches: Iterable[Batch] | None = None
    """(inputs, targets) batches, e.g. a DataLoader; a scorer takes `Scorer.batches_needed`."""
    loss_fn: Callable[[torch.Tensor, torch.Tensor], torch.Tensor] = F.cross_entropy
    target_sparsity: float | None = None
    """Final sparsity, which an iterative scorer (synflow) prunes towards."""
    seed: int = 0
    """Seed of a scorer's random generator."""
    device: torch.device | str | None = None
    """Where batches are moved; default: the device of the first masked parameter."""
    input_shape: tuple[int, ...] | None = None
    """Shape of one input without the batch dimension, for a data-free scorer."""


@dataclass(frozen=True)
class Scorer:
    """Base class of a scorer: subclass it as a frozen dataclass whose fields are its settings
    (each with a default), check them in `__post_init__` (ValueError naming the field), and
    compute the scores in `__call__`."""

    smoke_settings: ClassVar[dict[str, Any]] = {}
    """Settings `--smoke` uses to shrink its work (e.g. fewer iterations)."""

    @property
    def batches_needed(self) -> int:
        """Training batches it reads from `ScoringInputs.batches` (0: none)."""
        return 0

    def __call__(self, model: nn.Module, mask: Mask, inputs: ScoringInputs) -> Scores:
        raise NotImplementedError

    def settings(self) -> dict[str, Any]:
        """Its settings by field name."""
        return {field.name: getattr(self, field.name) for field in dataclasses.fields(self)}


SCORERS: Registry[type[Scorer]] = Registry("scorer")


def magnitude_scores(model: nn.Module, mask: Mask) -> Scores:
    """|w| for every masked parameter."""
    parameters = dict(model.named_parameters())
    return {name: parameters[name].detach().abs().clone() for name in mask}


@SCORERS.register("magnitude")
@dataclass(frozen=True)
class Magnitude(Scorer):
    """|w| (no settings, no inputs)."""

    def __call__(self, model: nn.Module, mask: Mask, inputs: ScoringInputs) -> Scores:
        return magnitude_scores(model, mask)


@SCORERS.register("random")
@dataclass(frozen=True)
class RandomScores(Scorer):
    """Uniform [0, 1) scores from a CPU generator seeded with ``inputs.seed``."""

    def __call__(self, model: nn.Module, mask: Mask, inputs: ScoringInputs) -> Scores:
        generator = torch.Generator().manual_seed(inputs.seed)
        return {
            name: torch.rand(keep.shape, generator=generator).to(keep.device)
            for name, keep in mask.items()
        }


@dataclass(frozen=True)
class _DataScorer(Scorer):
    num_batches: int = 1
    """Training batches the gradients are summed over."""
    batchnorm_mode: BatchNormMode = "train"
    """BatchNorm while scoring: ``train`` (batch statistics, as the GraSP reference code) or
    ``eval`` (running statistics, as the SNIP and Synaptic-Flow reference code). The papers
    leave it open, and it matters: at 90% sparsity the two keep different weights."""

    smoke_settings: ClassVar[dict[str, Any]] = {"num_batches": 1}

    def __post_init__(self) -> None:
        if self.num_batches < 1:
            raise ValueError(f"num_batches must be >= 1; got {self.num_batches}")
        if self.batchnorm_mode not in BATCHNORM_MODES:
            raise ValueError(
                f"batchnorm_mode must be one of {BATCHNORM_MODES}; got {self.batchnorm_mode!r}"
            )

    @property
    def batches_needed(self) -> int:
        return self.num_batches


@SCORERS.register("snip")
@dataclass(frozen=True)
class Snip(_DataScorer):
    """SNIP connection sensitivity |w * dL/dw| (Lee et al. 2019).

    Evaluated at the masked weights (``w * mask``) with BatchNorm in `batchnorm_mode`, the
    gradient summed over the first `num_batches` batches before the product, as the reference
    implementations accumulate ``.grad``.
    """

    def __call__(self, model: nn.Module, mask: Mask, inputs: ScoringInputs) -> Scores:
        batches = _take_batches(mask, inputs, self.num_batches)
        parameters, buffers, weights = _functional_state(model, mask)
        gradient_sums = [torch.zeros_like(weight) for weight in weights]
        with _modes(model, training=self.batchnorm_mode == "train"), torch.enable_grad():
            for batch_inputs, targets in batches:
                loss = inputs.loss_fn(
                    functional_call(model, (parameters, buffers), (batch_inputs,)), targets
                )
                gradients = torch.autograd.grad(loss, weights, materialize_grads=True)
                torch._foreach_add_(gradient_sums, gradients)
        return {
            name: (weight.detach() * gradient).abs()
            for name, weight, gradient in zip(mask, weights, gradient_sums, strict=True)
        }


@SCORERS.register("grasp")
@dataclass(frozen=True)
class Grasp(_DataScorer):
    """GraSP (Wang et al. 2020) in "higher = keep" form: ``w * (H g)``.

    The paper scores ``S = -w * (H g)`` and removes the weights with the HIGHEST ``S`` (the
    reference code keeps ``S <= threshold``); this returns ``-S`` so that keeping the highest
    scores is the reference's rule. ``g`` is the gradient of the loss of the logits divided by
    `temperature` summed over the batches, ``H g`` the Hessian-gradient product by double
    backward summed over the same batches, at the masked weights, BatchNorm in
    `batchnorm_mode`. From an already-pruned mask the product is ``m * H (m * g)``, as in the
    reference: pruned weights contribute neither to ``g`` nor to the product.
    """

    temperature: float = 200.0
    """The logits are divided by it (GraSP's T)."""

    def __post_init__(self) -> None:
        super().__post_init__()
        if not self.temperature > 0:
            raise ValueError(f"temperature must be > 0; got {self.temperature}")

    def __call__(self, model: nn.Module, mask: Mask, inputs: ScoringInputs) -> Scores:
        batches = _take_batches(mask, inputs, self.num_batches)
        parameters, buffers, weights = _functional_state(model, mask)

        def loss_of(batch_inputs: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
            logits = functional_call(model, (parameters, buffers), (batch_inputs,))
            return inputs.loss_fn(logits / self.temperature, targets)

        keeps = [keep.to(w.dtype) for keep, w in zip(mask.values(), weights, strict=True)]
        with _modes(model, training=self.batchnorm_mode == "train"), torch.enable_grad():
            gradient_sums = [torch.zeros_like(weight) for weight in weights]
            for batch_inputs, targets in batches:
                gradients = torch.autograd.grad(
                    loss_of(batch_inputs, targets), weights, materialize_grads=True
                )
                torch._foreach_add_(gradient_sums, gradients)
            torch._foreach_mul_(gradient_sums, keeps)  # m * g: pruned weights carry no gradient
            hessian_gradient = [torch.zeros_like(weight) for weight in weights]
            for batch_inputs, targets in batches:
                gradients = torch.autograd.grad(
                    loss_of(batch_inputs, targets), weights, create_graph=True,
                    materialize_grads=True,
                )
                gradient_dot = sum(
                    (fixed * gradient).sum()
                    for fixed, gradient in zip(gradient_sums, gradients, strict=True)
                )
                products = torch.autograd.grad(gradient_dot, weights, materialize_grads=True)
                torch._foreach_add_(hessian_gradient, products)
        return {
            name: weight.detach() * product * keep
            for name, weight, product, keep in zip(mask, weights, hessian_gradient, keeps,
                                                   strict=True)
        }


@SCORERS.register("synflow")
@dataclass(frozen=True)
class Synflow(Scorer):
    """SynFlow (Tanaka et al. 2020): data-free, iterative, float64 scores.

    Each round linearises the network (|w| for every parameter and floating buffer, eval-mode
    BatchNorm, as in the reference), feeds an all-ones input, and scores
    ``|w * dR/dw|`` with ``R = sum(output)``. Between rounds the masked weights are pruned
    globally towards ``inputs.target_sparsity`` on the reference's exponential density
    schedule ``d_k = d_0 * (d_final / d_0) ** (k / n)``. Returns the last round's scores, with
    ``-inf`` for weights that ``mask`` or an earlier round pruned, so
    ``prune_to_sparsity(scores, mask, target_sparsity)`` reproduces the iterative result.
    The input's shape is ``inputs.input_shape``, else that of the first batch.

    The reference code runs the linearised network in float32 (its ``model.double()`` is
    commented out); float64 is our choice, because the product of |w| over a deep network
    under- and overflows float32 at high sparsity and then reorders scores.
    """

    iterations: int = 100
    """Pruning rounds of the iterative schedule."""

    smoke_settings: ClassVar[dict[str, Any]] = {"iterations": 5}

    def __post_init__(self) -> None:
        if self.iterations < 1:
            raise ValueError(f"iterations must be >= 1; got {self.iterations}")

    def __call__(self, model: nn.Module, mask: Mask, inputs: ScoringInputs) -> Scores:
        rounds = self.iterations
        if inputs.target_sparsity is None and rounds > 1:
            raise ValueError("synflow needs target_sparsity for its iterative schedule")
        check_mask_fits(model, mask)
        if not mask:
            return {}
        total = sum(keep.numel() for keep in mask.values())
        alive = sum(int(keep.sum()) for keep in mask.values())
        initial_density = alive / total
        target = inputs.target_sparsity
        if target is not None and not (
            0.0 <= target < 1.0 and kept_count_for_sparsity(total, target) <= alive
        ):
            raise ValueError(
                f"target_sparsity must be in [current sparsity {1.0 - initial_density}, 1); "
                f"got {target}"
            )
        if alive == 0:
            return {
                name: torch.full(keep.shape, float("-inf"), dtype=torch.float64,
                                 device=keep.device)
                for name, keep in mask.items()
            }
        device = _device(mask, inputs)
        ones = torch.ones((1, *_input_shape(inputs)), dtype=torch.float64, device=device)
        parameters = {
            name: parameter.detach().to(torch.float64).abs()
            for name, parameter in model.named_parameters()
        }
        buffers = {
            name: buffer.detach().to(torch.float64).abs() if buffer.is_floating_point()
            else buffer
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
                density = initial_density * (final_density / initial_density) ** (
                    round_index / rounds)
                # Never below the current sparsity, whatever float rounding did to the schedule.
                kept_now = sum(int(keep.sum()) for keep in current.values())
                sparsity = max(1.0 - density, (total - kept_now) / total)
                if kept_count_for_sparsity(total, sparsity) <= kept_now:
                    current = prune_to_sparsity(round_scores, current, sparsity)
        return {name: round_scores[name].masked_fill(~current[name], float("-inf"))
                for name in mask}


def make_scorer(name: str, settings: dict[str, Any] | None = None) -> Scorer:
    """The registered scorer `name` with `settings` (its fields); ValueError naming an unknown
    scorer, an unknown setting (with the scorer's own) or a bad value."""
    cls = SCORERS.get(name)
    settings = dict(settings or {})
    known = [field.name for field in dataclasses.fields(cls)]
    for key in settings:
        if key not in known:
            allowed = ", ".join(known) if known else "none"
            raise ValueError(f"scorer {name!r} has no setting {key!r}{did_you_mean(key, known)}; "
                             f"its settings: {allowed}")
    return cls(**settings)


def score(model: nn.Module, mask: Mask, scorer: str | Scorer, **options: Any) -> Scores:
    """Scores of `scorer` (a registered name or a scorer object) for the weights `mask` covers.

    `options` are `ScoringInputs` fields, and for a named scorer its settings too:
    ``score(model, mask, "snip", batches=loader, num_batches=2)``.
    """
    input_fields = {field.name for field in dataclasses.fields(ScoringInputs)}
    inputs = ScoringInputs(**{k: v for k, v in options.items() if k in input_fields})
    settings = {k: v for k, v in options.items() if k not in input_fields}
    if isinstance(scorer, str):
        scorer = make_scorer(scorer, settings)
    elif settings:
        raise TypeError(f"settings {sorted(settings)} given with a scorer object; set them on it")
    return scorer(model, mask, inputs)


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


def _device(mask: Mask, inputs: ScoringInputs) -> torch.device:
    if inputs.device is not None:
        return torch.device(inputs.device)
    return next(iter(mask.values())).device


def _take_batches(mask: Mask, inputs: ScoringInputs, count: int) -> list[Batch]:
    if inputs.batches is None:
        raise ValueError("this scorer needs batches: an iterable of (inputs, targets)")
    device = _device(mask, inputs)
    batches = [
        (batch_inputs.to(device), targets.to(device))
        for batch_inputs, targets in itertools.islice(inputs.batches, count)
    ]
    if len(batches) < count:
        raise ValueError(f"num_batches is {count} but the batches held only {len(batches)}")
    return batches


def _input_shape(inputs: ScoringInputs) -> tuple[int, ...]:
    if inputs.input_shape is not None:
        return tuple(inputs.input_shape)
    if inputs.batches is None:
        raise ValueError("synflow needs input_shape or batches to know the input's shape")
    batch_inputs, _ = next(iter(inputs.batches))
    return tuple(batch_inputs.shape[1:])
