"""The arithmetic cost of one forward pass: dense multiply-accumulates and the nonzero share.

Both counts are multiply-accumulates (MACs), not FLOPs. ``flops`` asks torch's own
``torch.utils.flop_counter.FlopCounterMode``, which counts 2 FLOPs per multiply-accumulate of
its matrix ops (convolutions, ``mm``/``addmm``/``bmm``, attention) and nothing else; prunetune
halves that. So a count covers the weights' products and leaves out bias additions,
BatchNorm, activations, pooling and residual additions (elementwise work that pruning a
weight does not remove).

``flops_effective`` is the same count with every product by a zero weight left out: what an
ideal sparse kernel would do. A weight of a ``nn.Conv1d/2d/3d`` or ``nn.Linear`` contributes
one MAC per output position it is applied at, so a layer's effective MACs are its nonzero
weights times its output positions, taken from a forward hook. Products with the zeros of
*padding* still count: that is exactly what a sparse kernel running over a zero-padded input
does, and it keeps ``flops_effective == flops`` for a network without zero weights.
"""

from __future__ import annotations

import math
from collections.abc import Iterator, Sequence
from contextlib import contextmanager

import torch
from torch import nn

#: Layers whose weight zeros ``flops_effective`` discounts (the layers prunetune prunes).
WEIGHTED_LAYER_TYPES = (nn.Conv1d, nn.Conv2d, nn.Conv3d, nn.Linear)


def flops(model: nn.Module, input_shape: Sequence[int]) -> int:
    """Multiply-accumulates of one forward pass on an input of ``input_shape`` (batch included).

    The network as it is stored: zero weights count like any other (see ``flops_effective``).
    Runs one forward pass in eval mode under ``torch.no_grad`` and restores every module's
    train/eval flag; weights and buffers are untouched.
    """
    with _flop_counter() as counter:
        _forward(model, input_shape)
    return counter.get_total_flops() // 2  # FlopCounterMode: 2 FLOPs per multiply-accumulate


def flops_effective(model: nn.Module, input_shape: Sequence[int]) -> int:
    """``flops`` less the multiplies by zero weights of every Conv1d/2d/3d and Linear layer."""
    positions: dict[str, int] = {}
    with _flop_counter() as counter, _output_positions(model, positions):
        _forward(model, input_shape)
    dense = counter.get_total_flops() // 2
    modules = dict(model.named_modules())
    zero_products = sum(
        (modules[name].weight.numel() - int(modules[name].weight.count_nonzero())) * count
        for name, count in positions.items()
    )
    return dense - zero_products


def _flop_counter():
    # Imported here: torch.utils.flop_counter costs ~0.1 s to import, and every trial process
    # imports pruning whether or not it counts FLOPs.
    from torch.utils.flop_counter import FlopCounterMode

    return FlopCounterMode(display=False)


def output_positions(model: nn.Module, input_shape: Sequence[int]) -> dict[str, int]:
    """For each Conv1d/2d/3d and Linear layer: how many output positions each of its weights
    is applied at in one forward pass (batch x output spatial size for a convolution, the
    product of all output dimensions but the last for a linear layer), summed over calls."""
    positions: dict[str, int] = {}
    with _output_positions(model, positions):
        _forward(model, input_shape)
    return positions


@contextmanager
def _output_positions(model: nn.Module, positions: dict[str, int]) -> Iterator[None]:
    def hook_for(name: str, module: nn.Module):
        def record(_module: nn.Module, _inputs: object, output: torch.Tensor) -> None:
            if isinstance(module, nn.Linear):
                count = math.prod(output.shape[:-1])
            else:  # convolution: batch x output spatial size, per output channel
                count = output.shape[0] * math.prod(output.shape[2:])
                if output.dim() == module.weight.dim() - 1:  # unbatched input
                    count = math.prod(output.shape[1:])
            positions[name] = positions.get(name, 0) + count

        return record

    handles = [
        module.register_forward_hook(hook_for(name, module))
        for name, module in model.named_modules()
        if isinstance(module, WEIGHTED_LAYER_TYPES)
    ]
    try:
        yield
    finally:
        for handle in handles:
            handle.remove()


@contextmanager
def eval_mode(model: nn.Module) -> Iterator[None]:
    """Every submodule in eval mode; each module's own train/eval flag restored after."""
    saved = [(module, module.training) for module in model.modules()]
    model.eval()
    try:
        yield
    finally:
        for module, flag in saved:
            module.training = flag


def model_device(model: nn.Module) -> torch.device:
    """The device of the model's first parameter (or buffer); the CPU for a stateless model."""
    for tensor in (*model.parameters(), *model.buffers()):
        return tensor.device
    return torch.device("cpu")


def _forward(model: nn.Module, input_shape: Sequence[int]) -> None:
    parameter = next(model.parameters(), None)
    dtype = parameter.dtype if parameter is not None else torch.float32
    inputs = torch.zeros(tuple(input_shape), device=model_device(model), dtype=dtype)
    with eval_mode(model), torch.no_grad():
        model(inputs)
