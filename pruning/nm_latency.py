"""Latency of a 2:4-sparse network with the GPU's semi-structured sparse kernels.

``torch.sparse.to_sparse_semi_structured`` (cuSPARSELt, or CUTLASS) accelerates a matrix
product whose *first* operand is 2:4 sparse along its rows, which is ``F.linear`` with a 2:4
weight. It needs CUDA, a half-precision (or int8) weight, and a weight whose two dimensions
are multiples of the backend's minimum block. Convolutions have no sparse kernel, so each
eligible ``nn.Conv2d`` is computed as im2col (``F.unfold``) + ``F.linear`` with its weight as
the ``[out, in * kh * kw]`` matrix, the layout ``pruning.nm`` groups weights in.

``nm_latency_ms`` reports three figures side by side, in the same dtype: the dense network as
it is (cuDNN), the same network with the 2:4 layers as dense im2col products (the cost of the
rewrite alone), and with those layers 2:4 sparse. A layer the kernels could take whose weights
are not 2:4 (the first convolution, left out of the mask, say) stays dense, and
``NMLatency.measured_as`` says how many layers ran sparse. Report the sparse figure even when
it is slower than dense. On the CPU there is no semi-structured kernel: it measures the dense
network only and says so in ``measured_as``.
"""

from __future__ import annotations

import copy
import logging
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from pruning.cost import model_device
from pruning.latency import (
    LatencyResult,
    LatencySettings,
    latency_ms,
    model_memory_format,
    precision_name,
)
from pruning.nm import NMPattern, follows_pattern

logger = logging.getLogger(__name__)

SEMI_STRUCTURED = NMPattern(2, 4)
CPU_NOTE = "dense: the CPU has no semi-structured sparse kernel; the N:M model ran as dense"


class Im2colConv2d(nn.Module):
    """A ``nn.Conv2d`` (groups 1, zero padding) as unfold + linear with a 2-D weight.

    ``weight`` is the convolution's weight as ``[out, in * kh * kw]``: a dense tensor, or a
    ``SparseSemiStructuredTensor`` made from it.
    """

    def __init__(self, conv: nn.Conv2d, weight: torch.Tensor) -> None:
        super().__init__()
        if conv.groups != 1 or conv.padding_mode != "zeros" or isinstance(conv.padding, str):
            raise ValueError("Im2colConv2d needs groups=1 and numeric zero padding")
        self.out_channels = conv.out_channels
        self.kernel_size, self.stride = conv.kernel_size, conv.stride
        self.padding, self.dilation = conv.padding, conv.dilation
        self.weight = nn.Parameter(weight, requires_grad=False)
        self.bias = None if conv.bias is None else nn.Parameter(conv.bias.detach(), False)

    def forward(self, inputs: torch.Tensor) -> torch.Tensor:
        batch, _, height, width = inputs.shape
        columns = F.unfold(inputs, self.kernel_size, self.dilation, self.padding, self.stride)
        out_h, out_w = (
            (size + 2 * pad - dil * (kernel - 1) - 1) // step + 1
            for size, pad, dil, kernel, step in zip(
                (height, width),
                self.padding,
                self.dilation,
                self.kernel_size,
                self.stride,
                strict=True,
            )
        )
        rows = columns.transpose(1, 2).reshape(-1, columns.shape[1])  # [batch * L, in*kh*kw]
        outputs = F.linear(rows, self.weight, self.bias)  # [batch * L, out]
        return (
            outputs.view(batch, out_h * out_w, -1)
            .transpose(1, 2)
            .reshape(batch, self.out_channels, out_h, out_w)
        )


@dataclass(frozen=True)
class NMLatency:
    """Dense, dense-im2col and 2:4-sparse latencies (the last two None on the CPU);
    `converted`: the layers that ran 2:4 sparse, `skipped`: the other Conv2d/Linear layers and
    why they ran dense."""

    measured_as: str
    dense: LatencyResult
    dense_im2col: LatencyResult | None
    sparse: LatencyResult | None
    converted: list[str]
    skipped: dict[str, str]


def nm_latency_ms(
    model: nn.Module,
    input_shape: tuple[int, ...],
    settings: LatencySettings | None = None,
    dtype: torch.dtype = torch.float16,
) -> NMLatency:
    """Latency of ``model`` with its 2:4 Conv2d/Linear layers on the semi-structured sparse
    kernels (the others dense), beside dense.

    On CUDA, measures copies in ``dtype`` (see ``semi_structured_copies``), each on an input in
    the model's memory format. On the CPU: the dense model only, with ``measured_as`` saying so.
    """
    if model_device(model).type != "cuda":
        logger.warning("nm_latency_ms: %s", CPU_NOTE)
        return NMLatency(CPU_NOTE, latency_ms(model, input_shape, settings), None, None, [], {})
    # The rewritten copies may have no Conv2d left to read the layout from: take the model's.
    memory_format = model_memory_format(model)
    copies = semi_structured_copies(model, dtype)

    def timed(copy_: nn.Module) -> LatencyResult:
        return latency_ms(copy_, input_shape, settings, memory_format=memory_format)

    return NMLatency(
        measured_as=cuda_measured_as(copies.converted, copies.skipped, dtype),
        dense=timed(copies.dense),
        dense_im2col=timed(copies.dense_im2col),
        sparse=timed(copies.sparse),
        converted=copies.converted,
        skipped=copies.skipped,
    )


def cuda_measured_as(converted: list[str], skipped: dict[str, str], dtype: torch.dtype) -> str:
    """What a CUDA N:M measurement ran: how many of the Conv2d/Linear layers were 2:4 sparse."""
    layers = len(converted) + len(skipped)
    return (
        f"cuda: {len(converted)} of {layers} Conv2d/Linear layers ran 2:4 sparse "
        f"(torch.sparse.to_sparse_semi_structured, {precision_name(dtype)}), the others dense"
    )


@dataclass(frozen=True)
class SemiStructuredCopies:
    """Three copies of one CUDA model in one dtype: as it is, im2col-dense, and 2:4-sparse."""

    dense: nn.Module
    dense_im2col: nn.Module
    sparse: nn.Module
    converted: list[str]
    skipped: dict[str, str]


NOT_2_4 = "weights are not 2:4 sparse (left out of the N:M mask?)"


def semi_structured_copies(
    model: nn.Module, dtype: torch.dtype = torch.float16
) -> SemiStructuredCopies:
    """Copies of a CUDA ``model`` in ``dtype`` whose 2:4 layers run on the 2:4 kernels.

    The layers converted are `semi_structured_layers`'; the others stay dense and are listed
    in ``skipped`` with the reason.
    """
    from torch.sparse import to_sparse_semi_structured

    dense = copy.deepcopy(model).to(dtype)
    layers, skipped = semi_structured_layers(dense, dtype)
    weights = {name: _matrix(module) for name, module in layers.items()}
    sparse_weights = {name: to_sparse_semi_structured(weight) for name, weight in weights.items()}
    return SemiStructuredCopies(
        dense=dense,
        dense_im2col=_rewritten(dense, weights),
        sparse=_rewritten(dense, sparse_weights),
        converted=sorted(layers),
        skipped=skipped,
    )


def semi_structured_layers(
    model: nn.Module, dtype: torch.dtype
) -> tuple[dict[str, nn.Module], dict[str, str]]:
    """The Conv2d/Linear layers of ``model`` to run on the 2:4 kernels in ``dtype``, and the
    others with why they stay dense.

    A layer is converted when the backend has a kernel for ``dtype``, its ``[out, in*kh*kw]``
    weight matrix is a multiple of the backend's minimum block, and its weights are 2:4 sparse
    (converting any other would compute something else). One layer that is not 2:4 leaves the
    rest converted: an N:M mask often spares the first convolution.
    """
    eligible, skipped = _eligible_layers(model, dtype)
    nonzero = {name: _matrix(module) != 0 for name, module in eligible.items()}
    verdicts = follows_pattern(nonzero, SEMI_STRUCTURED)
    layers = {}
    for name, module in eligible.items():
        if verdicts.get(name, False):
            layers[name] = module
        else:
            skipped[name] = NOT_2_4
    return layers, skipped


def _eligible_layers(
    model: nn.Module, dtype: torch.dtype
) -> tuple[dict[str, nn.Module], dict[str, str]]:
    from torch.sparse.semi_structured import (
        SparseSemiStructuredTensor,
        SparseSemiStructuredTensorCUSPARSELT,
        SparseSemiStructuredTensorCUTLASS,
    )

    # to_sparse_semi_structured picks cuSPARSELt unless CUTLASS is forced; each backend has
    # its own minimum block per dtype.
    backend = (
        SparseSemiStructuredTensorCUTLASS
        if SparseSemiStructuredTensor._FORCE_CUTLASS
        else SparseSemiStructuredTensorCUSPARSELT
    )
    limits = backend._DTYPE_SHAPE_CONSTRAINTS.get(dtype)
    eligible, skipped = {}, {}
    for name, module in model.named_modules():
        if not isinstance(module, (nn.Conv2d, nn.Linear)):
            continue
        if isinstance(module, nn.Conv2d) and (
            module.groups != 1 or module.padding_mode != "zeros" or isinstance(module.padding, str)
        ):
            skipped[name] = "grouped, non-zero-padded or 'same'-padded convolution"
            continue
        rows, cols = _matrix(module).shape
        if limits is None:
            skipped[name] = f"no semi-structured kernel for {dtype}"
        elif rows % limits.sparse_min_rows or cols % limits.sparse_min_cols:
            skipped[name] = (
                f"weight matrix {rows}x{cols} is not a multiple of "
                f"{limits.sparse_min_rows}x{limits.sparse_min_cols}"
            )
        else:
            eligible[name] = module
    return eligible, skipped


def _matrix(module: nn.Module) -> torch.Tensor:
    return module.weight.detach().reshape(module.weight.shape[0], -1).contiguous()


def _rewritten(model: nn.Module, weights: dict[str, torch.Tensor]) -> nn.Module:
    """A copy of ``model`` whose named layers multiply by ``weights`` (2-D) instead."""
    copied = copy.deepcopy(model)
    modules = dict(copied.named_modules())
    for name, weight in weights.items():
        module = modules[name]
        if isinstance(module, nn.Linear):
            module.weight = nn.Parameter(weight, requires_grad=False)
            continue
        parent_name, _, child = name.rpartition(".")
        setattr(
            modules[parent_name] if parent_name else copied, child, Im2colConv2d(module, weight)
        )
    return copied
