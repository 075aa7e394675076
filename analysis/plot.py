"""Tables and figures for one or more prunetune experiment directories.

Usage (from the repository root)::

    python analysis/plot.py output/imp [output/snip ...] [--metric test_acc|val_acc] [--ci 0.95]
        [--interval t|logit-t|bootstrap] [--out DIR] [--tolerance 1.0] [--params total|prunable]
        [--layer-sparsity 0.9] [--latency-batch 1] [--compare A B ...] [--mask-overlap]

Writes into ``--out`` (default: the first experiment directory): results.csv (+ results.parquet
when pyarrow is installed), summary.csv, summary.md, excluded_trials.csv,
accuracy_vs_params.png/.svg, and when the data allow accuracy_vs_speedup.png/.svg and
accuracy_vs_flops.png/.svg (rows that measured their cost), accuracy_vs_round.png/.svg (IMP
iterative) and layer_sparsity.png/.svg; with ``--compare A B``, comparisons.md/.csv and
compare_A_vs_B.png/.svg (analysis/compare.py); with ``--mask-overlap``, mask_overlap.csv and
mask_overlap.png/.svg (analysis/mask_overlap.py, the one part that reads checkpoints with
torch). Bad input: one line on stderr, exit status 2.
"""

from __future__ import annotations

import argparse
import sys
import warnings
from pathlib import Path

if __package__ in (None, ""):
    # Run as a script: make `import analysis` resolve to this package, and keep this folder off
    # sys.path so its module names cannot shadow anything.
    _here = Path(__file__).resolve().parent
    sys.path[:] = [p for p in sys.path if Path(p or ".").resolve() != _here]
    sys.path.insert(0, str(_here.parent))

from analysis.aggregate import aggregate, latency_devices, matching_sparsity  # noqa: E402
from analysis.collapse import checked_counts, collapsed_rounds, mark_dead_layers  # noqa: E402
from analysis.compare import (  # noqa: E402
    comparisons_markdown,
    paired_comparison,
    plot_comparison,
    terminal_lines,
)
from analysis.load import AnalysisInputError, excluded_trials, load_results  # noqa: E402
from analysis.report import (  # noqa: E402
    collapse_warnings,
    summary_markdown,
    summary_table,
    terminal_text,
    tuned_lines,
    tuned_title,
)
from analysis.stats import INTERVALS  # noqa: E402

EXIT_BAD_INPUT = 2


def parse_args(argv: list[str] | None = None,
               prog: str = "python analysis/plot.py") -> argparse.Namespace:
    parser = argparse.ArgumentParser(
        prog=prog,
        description="Aggregate prunetune experiments over seeds; write tables and figures.",
    )
    parser.add_argument("experiments", nargs="+", metavar="EXPERIMENT_DIR",
                        help="Ray Tune experiment directories, e.g. output/imp")
    parser.add_argument("--metric", choices=["test_acc", "val_acc"], default="test_acc",
                        help="accuracy to aggregate (default: test_acc)")
    parser.add_argument("--ci", type=float, default=0.95,
                        help="confidence level of the interval over seeds (default: 0.95)")
    parser.add_argument("--interval", choices=INTERVALS, default="t",
                        help="interval over seeds: t = Student-t of the mean (default; can reach "
                             "past 0/100%% with few seeds), logit-t = t on the logit scale "
                             "(stays inside 0-100%%), bootstrap = seeded percentile bootstrap")
    parser.add_argument("--bootstrap", dest="interval", action="store_const", const="bootstrap",
                        help="same as --interval bootstrap")
    parser.add_argument("--out", type=Path, default=None,
                        help="output folder (default: the first experiment directory)")
    parser.add_argument("--tolerance", type=float, default=1.0,
                        help="matching sparsity tolerance in accuracy points (default: 1.0)")
    parser.add_argument("--params", choices=["total", "prunable"], default="total",
                        help="x axis: all remaining parameters (default) or prunable weights")
    parser.add_argument("--layer-sparsity", type=float, default=None, metavar="SPARSITY",
                        help="target sparsity for the per-layer view (default: the highest one "
                             "every method reaches)")
    parser.add_argument("--latency-batch", type=int, default=None, metavar="B",
                        help="batch size of the accuracy_vs_speedup figure (default: the "
                             "smallest measured)")
    parser.add_argument("--compare", nargs=2, action="append", default=[], metavar=("A", "B"),
                        help="paired comparison of lines A and B (labels as summary.md names "
                             "them, or a method name) per level, by seed, with Holm-corrected "
                             "p-values: comparisons.md/.csv and compare_A_vs_B.png; repeatable")
    parser.add_argument("--mask-overlap", action="store_true",
                        help="Jaccard overlap of the kept weights between methods and seeds at "
                             "each level, from the round checkpoints (needs torch): "
                             "mask_overlap.csv and mask_overlap.png")
    parser.add_argument("--all", action="store_true",
                        help="also the trials a grown experiment's sweep file no longer has "
                             "(kept on disk; left out by default) and a tuned sweep's search "
                             "trials, listed among the excluded trials")
    args = parser.parse_args(argv)
    if not 0.0 < args.ci < 1.0:
        parser.error(f"--ci must be in (0, 1), got {args.ci}")
    if args.tolerance < 0:
        parser.error(f"--tolerance must be >= 0 points, got {args.tolerance}")
    return args


def run(args: argparse.Namespace) -> int:
    results = load_results(*args.experiments, all_trials=args.all)
    out_dir = args.out if args.out is not None else Path(args.experiments[0])
    out_dir.mkdir(parents=True, exist_ok=True)
    written = []
    excluded = excluded_trials(results)
    if results.empty:
        raise AnalysisInputError(
            f"{', '.join(map(str, args.experiments))}: no round results yet "
            f"({len(results.attrs['trials'])} trial(s), none reported a finished round)"
        )
    results = mark_dead_layers(results)
    results.to_csv(out_dir / "results.csv", index=False)
    written.append(out_dir / "results.csv")
    try:
        import pyarrow  # noqa: F401
    except ImportError:
        pass
    else:
        table = results.copy()
        table.attrs = {}
        table.to_parquet(out_dir / "results.parquet", index=False)
        written.append(out_dir / "results.parquet")
    excluded.to_csv(out_dir / "excluded_trials.csv", index=False)
    written.append(out_dir / "excluded_trials.csv")

    agg = aggregate(results, metric=args.metric, ci=args.ci, interval=args.interval)
    agg.attrs["tuned"] = results.attrs.get("tuned", [])
    if agg.empty:
        print(terminal_excluded(excluded), file=sys.stderr)
        raise AnalysisInputError(
            f"{', '.join(map(str, args.experiments))}: no finished trial to aggregate "
            f"(results.csv and excluded_trials.csv written to {out_dir})"
        )
    matching = matching_sparsity(agg, tolerance=args.tolerance)
    summary = summary_table(agg, matching)
    title = " + ".join(dict.fromkeys(results["experiment"].astype(str)))
    title = tuned_title(title, agg.attrs["tuned"])
    params_column = f"params_{args.params}"
    summary.to_csv(out_dir / "summary.csv", index=False)
    collapses = collapsed_rounds(results)
    (out_dir / "summary.md").write_text(
        summary_markdown(summary, matching, excluded, agg, title=title,
                         tolerance=args.tolerance, params_column=params_column,
                         collapses=collapses, checked=checked_counts(results)),
        encoding="utf-8",
    )
    written += [out_dir / "summary.csv", out_dir / "summary.md"]

    from analysis import figures  # matplotlib only when figures are drawn

    written += figures.plot_accuracy_vs_params(agg, out_dir, title, params_column=params_column)
    written += figures.plot_accuracy_vs_speedup(
        agg, out_dir, title, args.latency_batch, device=latency_devices(results))
    written += figures.plot_accuracy_vs_flops(agg, out_dir, title)
    written += figures.plot_accuracy_vs_round(agg, out_dir, title)
    layers = figures.layer_sparsity_table(results, agg, args.layer_sparsity)
    written += figures.plot_layer_sparsity(layers, out_dir, f"{title}: per-layer sparsity")

    if args.mask_overlap:
        written += write_mask_overlap(results, agg, out_dir)
    comparisons = [paired_comparison(results, agg, a, b, metric=args.metric, ci=args.ci)
                   for a, b in args.compare]
    if comparisons:
        written += write_comparisons(comparisons, out_dir, args,
                                     tuned_lines(agg.attrs["tuned"]))

    print(terminal_text(summary, matching, excluded, agg, args.tolerance))
    for frame in comparisons:
        print("\n".join(terminal_lines(frame)))
    for line in collapse_warnings(collapses):
        print(line)
    print()
    print("wrote:")
    for path in written:
        print(f"  {path}")
    return 0


def write_comparisons(frames: list, out_dir: Path, args: argparse.Namespace,
                      tuned: list[str]) -> list[Path]:
    import pandas as pd

    pd.concat(frames, ignore_index=True).to_csv(out_dir / "comparisons.csv", index=False)
    (out_dir / "comparisons.md").write_text(
        comparisons_markdown(frames, args.metric, args.ci, tuned), encoding="utf-8")
    written = [out_dir / "comparisons.csv", out_dir / "comparisons.md"]
    for frame in frames:
        written += plot_comparison(frame, out_dir)
    return written


def write_mask_overlap(results, agg, out_dir: Path) -> list[Path]:
    from analysis.mask_overlap import mask_overlap, plot_mask_overlap, round_masks

    overlap = mask_overlap(round_masks(results, agg))
    overlap.to_csv(out_dir / "mask_overlap.csv", index=False)
    return [out_dir / "mask_overlap.csv", *plot_mask_overlap(overlap, out_dir)]


def terminal_excluded(excluded) -> str:
    lines = [f"excluded trials ({len(excluded)}):"]
    lines += [f"  {r.experiment}/{r.trial_id} {r.method} seed {r.seed}: {r.reason}"
              for r in excluded.itertuples()]
    return "\n".join(lines)


def main(argv: list[str] | None = None, prog: str = "python analysis/plot.py") -> int:
    args = parse_args(argv, prog)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("default")
            return run(args)
    except AnalysisInputError as error:
        print(f"error: {error}", file=sys.stderr)
        return EXIT_BAD_INPUT
    except BrokenPipeError:  # output piped into `head`: not an error of the input
        return 0
    except OSError as error:
        print(f"error: {error.filename or ''}: {error.strerror or error}", file=sys.stderr)
        return EXIT_BAD_INPUT


if __name__ == "__main__":
    sys.exit(main())
