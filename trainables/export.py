"""A loaded round's network (`trainables.tickets.load_round`) written as a file a user deploys:

* `onnx`: `torch.onnx.export` (torch's dynamo exporter, which folds batch norm into the
  convolutions) at the trial's input size, with a dynamic batch dimension named `batch`;
  input `input`, output `logits`; the sidecar's fields in the model's `metadata_props`;
* `torchscript`: `torch.jit.trace` at the same input, the fields as the extra file
  `prunetune.json` (torch has deprecated TorchScript; it stays for runtimes that still load it);
* `safetensors`: the state dict, the fields under the metadata key `prunetune` (a structured
  round's layer widths among them: the narrowed shapes are in the tensors themselves).

Every export also writes `<file>.json`, a sidecar naming the trial, round, sparsity, MACs, test
accuracy and the source the sweep ran, so a file on a device can be traced to its row.

A structured (`channels`) round is the physically smaller network, so its file shrinks. A
masked round is the unpruned architecture with exact zeros: as large as the dense file, until
something compresses it (`zipped_bytes` says how far deflate gets). An N:M round carries its
pattern (`pattern`) in the fields. The optional libraries (`pip install prunetune[export]`:
onnx, onnxscript, onnxruntime, safetensors) are imported only by the format that needs them.
"""

from __future__ import annotations

import contextlib
import io
import json
import statistics
import warnings
import zipfile
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
from torch import nn

import pruning
from trainables.errors import PrunetuneError
from trainables.tickets import RoundInfo

FORMATS = ("onnx", "torchscript", "safetensors")
SUFFIXES = {"onnx": ".onnx", "torchscript": ".pt", "safetensors": ".safetensors"}
METADATA_KEY = "prunetune"
#: The example batch the exporters trace with; 2, not 1, so no exporter specialises the batch.
TRACE_BATCH = 2


class ExportDependencyError(PrunetuneError):
    """An optional library of the `[export]` extra is missing (one line, with the fix)."""


@dataclass(frozen=True)
class Exported:
    """What one export wrote."""

    path: Path
    sidecar: Path
    format: str
    file_bytes: int
    zipped_bytes: int
    """The file deflated (zip's default compression): what compression would give."""
    stored_parameters: int
    """Weight and bias elements of the network as written (before any folding)."""
    metadata: dict[str, Any]


def round_metadata(info: RoundInfo, source: dict[str, Any] | None) -> dict[str, Any]:
    """The fields every export carries (sidecar, ONNX metadata_props, TorchScript extra file,
    safetensors metadata). `test_acc` is the row's, which is measured on the best-validation
    weights: it is None for an export of the last weights. `source` is what the sweep recorded
    of the code it ran (None for an experiment that did not record it)."""
    row = info.row
    return {
        "trial": info.name,
        "trial_dir": info.trial_dir.name,
        "round": info.round,
        "weights": info.weights,
        "method": info.config.method,
        "model": info.config.model.name,
        "dataset": info.config.data.name,
        "input_shape": list(info.input_shape),
        "structured": info.layer_widths is not None,
        "layer_widths": info.layer_widths,
        "pattern": info.config.prune.pattern,
        "sparsity": row.get("sparsity"),
        "params_total": row.get("params_total"),
        "params_total_dense": row.get("params_total_dense"),
        "macs": row.get("flops"),
        "macs_effective": row.get("flops_effective"),
        "test_acc": row.get("test_acc") if info.weights == "best" else None,
        "source": source,
    }


def export_round(model: nn.Module, info: RoundInfo, fmt: str, out: str | Path,
                 source: dict[str, Any] | None = None) -> Exported:
    """Write `model` (as `load_round` gave it) to `out` in format `fmt`, and `<out>.json`."""
    if fmt not in FORMATS:
        raise ValueError(f"format must be one of {', '.join(FORMATS)}; got {fmt!r}")
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    metadata = round_metadata(info, source)
    model = model.eval()
    example = torch.randn((TRACE_BATCH, *info.input_shape),
                          generator=torch.Generator().manual_seed(0))
    WRITERS[fmt](model, example, out, metadata)
    sidecar = out.with_name(out.name + ".json")
    sidecar.write_text(json.dumps({"format": fmt, "file": out.name, **metadata}, indent=1) + "\n")
    stored = sum(t.numel() for name, t in model.state_dict().items()
                 if name.endswith(("weight", "bias")))
    return Exported(path=out, sidecar=sidecar, format=fmt, file_bytes=out.stat().st_size,
                    zipped_bytes=zipped_size(out), stored_parameters=stored, metadata=metadata)


def zipped_size(path: Path) -> int:
    """Bytes of `path` in a zip archive with the default (deflate) compression."""
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w", compression=zipfile.ZIP_DEFLATED) as archive:
        archive.write(path, arcname=path.name)
    return buffer.tell()


def _write_onnx(model: nn.Module, example: torch.Tensor, out: Path,
                metadata: dict[str, Any]) -> None:
    _require("onnxscript", "onnx export")  # torch's exporter needs it; say so in one line
    batch = torch.export.Dim("batch")
    with contextlib.redirect_stdout(io.StringIO()):  # the exporter narrates its passes
        program = torch.onnx.export(
            model, (example,), input_names=["input"], output_names=["logits"],
            dynamic_shapes=({0: batch},), verbose=False)
    program.model.metadata_props[METADATA_KEY] = json.dumps(metadata)
    program.save(str(out), external_data=False)


def _write_torchscript(model: nn.Module, example: torch.Tensor, out: Path,
                       metadata: dict[str, Any]) -> None:
    with _quiet_deprecation(), torch.no_grad():
        traced = torch.jit.trace(model, example)
        torch.jit.save(traced, str(out), _extra_files={f"{METADATA_KEY}.json":
                                                       json.dumps(metadata)})


def _write_safetensors(model: nn.Module, example: torch.Tensor, out: Path,
                       metadata: dict[str, Any]) -> None:
    save_file = _require("safetensors.torch", "safetensors export").save_file
    state = {name: tensor.detach().contiguous() for name, tensor in model.state_dict().items()}
    save_file(state, str(out), metadata={METADATA_KEY: json.dumps(metadata)})


WRITERS: dict[str, Callable[[nn.Module, torch.Tensor, Path, dict[str, Any]], None]] = {
    "onnx": _write_onnx,
    "torchscript": _write_torchscript,
    "safetensors": _write_safetensors,
}


def load_torchscript(path: str | Path) -> tuple[torch.jit.ScriptModule, dict[str, Any]]:
    """A TorchScript export and its fields, as a deployment would read them back."""
    extra = {f"{METADATA_KEY}.json": ""}
    with _quiet_deprecation():
        module = torch.jit.load(str(path), _extra_files=extra)
    return module, json.loads(extra[f"{METADATA_KEY}.json"])


def onnx_session(path: str | Path, threads: int | None = None) -> Any:
    """An onnxruntime CPU session of an exported file (`threads` intra-op threads; None: its
    default), with every graph optimisation on, as deployments run it."""
    ort = _require("onnxruntime", "running an ONNX export")
    options = ort.SessionOptions()
    options.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    if threads is not None:
        options.intra_op_num_threads = threads
        options.inter_op_num_threads = 1
    return ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])


def onnx_latency_ms(session: Any, input_shape: tuple[int, ...],
                    settings: pruning.LatencySettings) -> dict[int, float]:
    """Median milliseconds of `session.run` per batch size of `settings`, timed as
    `pruning.latency_ms` times torch (same inputs, warm-up and repeats; the thread count is the
    session's own)."""
    generator = torch.Generator().manual_seed(0)
    medians = {}
    for size in settings.batch_sizes:
        inputs = torch.randn((size, *input_shape), generator=generator).numpy()
        times = pruning.timed_calls(lambda x=inputs: session.run(None, {"input": x}), settings)
        medians[size] = statistics.median(times)
    return medians


def _require(module: str, what: str) -> Any:
    import importlib

    try:
        return importlib.import_module(module)
    except ImportError:
        raise ExportDependencyError(
            f"{what} needs {module.split('.')[0]}: pip install 'prunetune[export]'") from None


@contextlib.contextmanager
def _quiet_deprecation() -> Iterator[None]:
    """torch warns on every TorchScript call that it is deprecated; the module docstring says
    so once instead."""
    with warnings.catch_warnings():
        warnings.filterwarnings("ignore", category=FutureWarning, module=r"torch\.jit")
        yield
