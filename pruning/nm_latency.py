"""Latency of a 2:4-sparse network with the GPU's semi-structured sparse kernels.

``torch.sparse.to_sparse_semi_structured`` (cuSPARSELt, or CUTLASS) accelerates a matrix
product whose *first* operand is 2:4 sparse along its rows, which is ``F.linear`` with a 2:4
weight. It needs CUDA, a half-precision (or int8) weight, and a weight whose two dimensions
are multiples of the backend's minimum block. Convolutions have no sparse kernel, so each
eligible ``nn.Conv2d`` is computed as im2col (``F.unfold``) + ``F.linear`` with its weight as
the ``[out, in * kh * kw]`` matrix, the layout ``pruning.nm`` groups weights in.

``nm_latency_ms`` reports three figures side by side, in the same dtype: the dense network as
it is (cuDNN), the same network with the eligible layers as dense im2col products (the cost of
the rewrite alone), and with those layers 2:4 sparse. Report the sparse figure even when it is
slower than dense. On the CPU there is no semi-structured kernel: it measures the dense
network only and says so in ``NMLatency.measured_as``.
"""

from __future__ import annotations

import copy
import logging
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from pruning.cost import model_device
from pruning.latency import LatencyResult, LatencySettings, latency_ms
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
    """Dense, dense-im2col and 2:4-sparse latencies (the last two None on the CPU)."""

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
    """Latency of ``model`` (whose weights follow 2:4 where they will be converted) with its
    eligible Conv2d/Linear layers on the semi-structured sparse kernels, beside dense.

    On CUDA, measures copies in ``dtype`` (see ``semi_structured_copies``). On the CPU: the
    dense model only, with ``measured_as`` saying so.
    """
    if model_device(model).type != "cuda":
        logger.warning("nm_latency_ms: %s", CPU_NOTE)
        return NMLatency(CPU_NOTE, latency_ms(model, input_shape, settings), None, None, [], {})
    copies = semi_structured_copies(model, dtype)
    return NMLatency(
        measured_as="cuda: semi-structured 2:4 (torch.sparse.to_sparse_semi_structured)",
        dense=latency_ms(copies.dense, input_shape, settings),
        dense_im2col=latency_ms(copies.dense_im2col, input_shape, settings),
        sparse=latency_ms(copies.sparse, input_shape, settings),
        converted=copies.converted,
        skipped=copies.skipped,
    )


@dataclass(frozen=True)
class SemiStructuredCopies:
    """Three copies of one CUDA model in one dtype: as it is, im2col-dense, and 2:4-sparse."""

    dense: nn.Module
    dense_im2col: nn.Module
    sparse: nn.Module
    converted: list[str]
    skipped: dict[str, str]


def semi_structured_copies(
    model: nn.Module, dtype: torch.dtype = torch.float16
) -> SemiStructuredCopies:
    """Copies of a CUDA ``model`` in ``dtype`` whose eligible layers run on the 2:4 kernels.

    A layer is eligible when the backend has a kernel for ``dtype`` and its ``[out, in*kh*kw]``
    weight matrix is a multiple of the backend's minimum block; the others stay dense and are
    listed in ``skipped`` with the reason. ValueError if an eligible weight is not 2:4 (the
    conversion would silently compute something else).
    """
    from torch.sparse import to_sparse_semi_structured

    dense = copy.deepcopy(model).to(dtype)
    eligible, skipped = _eligible_layers(dense, dtype)
    weights = {name: _matrix(module) for name, module in eligible.items()}
    nonzero = {name: weight != 0 for name, weight in weights.items()}
    not_nm = [name for name, ok in follows_pattern(nonzero, SEMI_STRUCTURED).items() if not ok]
    if not_nm:
        raise ValueError(f"weights of {not_nm} are not 2:4 sparse; apply an N:M mask first")
    sparse_weights = {name: to_sparse_semi_structured(weight) for name, weight in weights.items()}
    return SemiStructuredCopies(
        dense=dense,
        dense_im2col=_rewritten(dense, weights),
        sparse=_rewritten(dense, sparse_weights),
        converted=sorted(eligible),
        skipped=skipped,
    )


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
