"""Export one round's network from an experiment directory as a file to deploy.

    prunetune export EXPERIMENT_DIR --trial NAME [--round K] [--format onnx|torchscript|safetensors]
                     [--out PATH] [--weights best|last] [--benchmark]
    python sweeps/export.py ...   (the same, from a checkout)

NAME is the trial's readable name (`imp_s0_p0.8x3`, as the progress line and the analysis
summary show it) or its Tune directory; K defaults to the trial's last round. The file gets a
sidecar `PATH.json` (trial, round, sparsity, MACs, test accuracy, the sweep's source commit).
`--benchmark` (ONNX) times the file in onnxruntime beside the torch latency the round recorded.
Bad input (no such trial or round, a missing `[export]` library): one line, exit status 2.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Any

if __package__ in (None, ""):  # run as a script: make the repository importable
    sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from trainables.errors import PrunetuneError  # noqa: E402

EXIT_BAD_INPUT = 2


def parse_args(argv: list[str] | None, prog: str) -> argparse.Namespace:
    from trainables.export import FORMATS

    parser = argparse.ArgumentParser(prog=prog, description=__doc__.split("\n\n")[0])
    parser.add_argument("experiment_dir", help="an experiment directory (output/NAME)")
    parser.add_argument("--trial", required=True, help="readable name or Tune directory")
    parser.add_argument("--round", type=int, default=None, help="default: the last round")
    parser.add_argument("--format", choices=FORMATS, default="onnx")
    parser.add_argument("--out", type=Path, default=None,
                        help="default: exports/<trial>_r<K>.<ext> in the experiment directory")
    parser.add_argument("--weights", choices=("best", "last"), default="best",
                        help="best-validation weights (whose test accuracy the row reports) "
                             "or the weights the round ended with")
    parser.add_argument("--benchmark", action="store_true",
                        help="time the ONNX file in onnxruntime at the round's batch sizes")
    return parser.parse_args(argv)


def run(args: argparse.Namespace) -> int:
    from sweeps.provenance import recorded_source
    from trainables.export import SUFFIXES, export_round
    from trainables.tickets import load_round

    experiment = Path(args.experiment_dir)
    model, info = load_round(experiment, args.trial, args.round, weights=args.weights)
    out = args.out or experiment / "exports" / f"{info.name}_r{info.round}{SUFFIXES[args.format]}"
    if args.benchmark and args.format != "onnx":
        raise PrunetuneError("--benchmark times an ONNX file in onnxruntime: use --format onnx")
    exported = export_round(model, info, args.format, out, recorded_source(experiment))
    print(f"export: wrote {exported.path} ({args.format}, {_size(exported.file_bytes)}) and "
          f"{exported.sidecar.name}")
    print(f"export: {what_the_file_holds(exported)}")
    if args.benchmark:
        print(f"export: {benchmark_line(exported, info)}")
    return 0


def what_the_file_holds(exported: Any) -> str:
    """One line: a structured round is smaller; a masked one is dense with exact zeros."""
    meta = exported.metadata
    where = f"round {meta['round']} of {meta['trial']}"
    dense, total = meta.get("params_total_dense"), meta.get("params_total")
    if meta["structured"]:
        return (f"{where} is structured: the network itself is smaller, {total:,} of the "
                f"dense {dense:,} parameters")
    if meta["sparsity"] is None or meta["sparsity"] == 0:
        return f"{where} is dense: no weight is pruned"
    line = (f"{where} is masked: dense tensors with {100 * meta['sparsity']:.1f}% of the "
            f"prunable weights exact zeros, as large as the dense network; zipped it is "
            f"{_size(exported.zipped_bytes)} "
            f"({100 * exported.zipped_bytes / exported.file_bytes:.0f}% of the file)")
    if meta["pattern"]:
        line += f"; its {meta['pattern']} pattern is in the metadata (key 'prunetune')"
    return line


def benchmark_line(exported: Any, info: Any) -> str:
    """onnxruntime's latency of the file beside the torch latency the round recorded, at the
    round's batch sizes, measuring settings and thread count."""
    from trainables.export import onnx_latency_ms, onnx_session
    from trainables.measure import latency_settings

    row = info.row
    threads = row.get("latency_threads")
    settings = latency_settings(info.config)
    session = onnx_session(exported.path, threads=threads)
    onnx_ms = onnx_latency_ms(session, info.input_shape, settings)
    cells = []
    for size, ms in onnx_ms.items():
        recorded = row.get(f"latency_ms_b{size}")
        torch_text = f"{recorded:.3g} ms" if recorded is not None else "not recorded"
        cells.append(f"batch {size}: onnxruntime {ms:.3g} ms, torch {torch_text}")
    where = f"{threads} thread(s)" if threads else "onnxruntime's default threads"
    return f"{'; '.join(cells)} (CPU, {where}; torch as the round recorded it)"


def _size(count: int) -> str:
    for unit, scale in (("MB", 1e6), ("KB", 1e3)):
        if count >= scale:
            return f"{count / scale:.1f} {unit}"
    return f"{count} B"


def main(argv: list[str] | None = None, prog: str = "python sweeps/export.py") -> int:
    args = parse_args(argv, prog)
    try:
        return run(args)
    except PrunetuneError as error:
        print(f"{prog}: error: {error}", file=sys.stderr)
        return EXIT_BAD_INPUT


if __name__ == "__main__":
    sys.exit(main())
