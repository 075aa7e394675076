"""The documentation's generated blocks: one `Section` per shipped sweep the pages quote.

Each section owns the text between `<!-- docs:NAME:start -->` and `<!-- docs:NAME:end -->`
in its page (README.md or a page under docs/: its figure links, its table, and a line saying
where the numbers come from) and the figure files `docs/NAME_*.png`. Prose that interprets
the numbers stays hand-written outside the markers.

To quote another sweep: add a `Section` to `SECTIONS` (a name, the sweep file,
and optionally other figures or a table function), put the two markers where it belongs in
its page, and run `make docs`. A table function takes the section's `Analysed` results and
returns Markdown; figures are `Figure` entries whose `draw` takes the same and a file stem.
"""

from __future__ import annotations

import posixpath
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import pandas as pd

from analysis import aggregate, load_results, matching_sparsity
from analysis.aggregate import latency_devices
from analysis.collapse import collapsed_rounds, mark_dead_layers
from analysis.report import (
    cost_cells,
    cost_columns,
    cost_headers,
    interval_legend,
    markdown_table,
    mean_ci_text,
    signed_text,
    speedup_note,
    summary_table,
)


@dataclass
class Analysed:
    """A section's results read back through `analysis`: the tidy rows, the aggregate over
    seeds and the summary table (percent), as `analysis/plot.py` would compute them."""

    results: pd.DataFrame
    agg: pd.DataFrame
    summary: pd.DataFrame

    @classmethod
    def from_directory(cls, experiment_dir: Path, interval: str = "t") -> Analysed:
        results = mark_dead_layers(load_results(experiment_dir))  # collapse marks, as plot.py
        agg = aggregate(results, interval=interval)
        summary = summary_table(agg, matching_sparsity(agg))
        return cls(results, agg, summary)


@dataclass(frozen=True)
class Figure:
    """One figure of a section: `draw(analysed, out_dir, stem, title)` writes `stem`.png."""

    suffix: str
    alt: str
    draw: Callable[[Analysed, Path, str, str], list[Path]]


def _accuracy_vs_params(analysed: Analysed, out_dir: Path, stem: str, title: str) -> list[Path]:
    from analysis import figures  # matplotlib only when drawing

    return figures.plot_accuracy_vs_params(analysed.agg, out_dir, title, stem=stem)


def _accuracy_vs_round(analysed: Analysed, out_dir: Path, stem: str, title: str) -> list[Path]:
    from analysis import figures

    return figures.plot_accuracy_vs_round(analysed.agg, out_dir, title, stem=stem)


ACCURACY_VS_PARAMS = Figure("accuracy_vs_params", "test accuracy vs remaining parameters",
                            _accuracy_vs_params)
ACCURACY_VS_ROUND = Figure("accuracy_vs_round", "test accuracy per IMP round", _accuracy_vs_round)


def _accuracy_vs_speedup(analysed: Analysed, out_dir: Path, stem: str, title: str) -> list[Path]:
    from analysis import figures

    return figures.plot_accuracy_vs_speedup(analysed.agg, out_dir, title, stem=stem,
                                            device=latency_devices(analysed.results))


ACCURACY_VS_SPEEDUP = Figure("accuracy_vs_speedup", "test accuracy vs measured speedup",
                             _accuracy_vs_speedup)


def _levels(values: list[str]) -> str:
    return " / ".join(values)


def _number(value: float) -> str:
    """A percentage with at most two decimals and no trailing zeros (80, 96, 99.2)."""
    return f"{round(value, 2):g}"


def method_table(analysed: Analysed) -> str:
    """One row per method line, its levels joined by ' / ' (sparsity, params, accuracy, Δ)."""
    summary = analysed.summary
    metric = str(analysed.agg["metric"].iloc[0])
    seeds = sorted(set(summary["n"].astype(int)))
    n_text = f"{seeds[0]} seeds" if len(seeds) == 1 else f"{seeds[0]}-{seeds[-1]} seeds"
    accuracy = metric.replace("_acc", " acc")
    header = ["method", "sparsity", "remaining params",
              f"{accuracy} % (mean ± 95% CI, {n_text})", "Δ vs dense (points)"]
    lines = []
    for label, line in summary.groupby("label", sort=False):
        rows = [r.to_dict() for _, r in line.iterrows()]
        if rows[0]["level_by"] == "dense":
            sparsity, delta = "0", ""
        else:
            sparsity = _levels([_number(r["sparsity_pct"]) for r in rows]) + "%"
            delta = _levels([signed_text(r["delta_vs_dense_points"]) for r in rows])
        if rows[0]["level_by"] == "round":
            label = f"{label} (round {_levels([str(int(r['round'])) for r in rows])})"
        lines.append([label, sparsity, _levels([f"{r['params_total']:,.0f}" for r in rows]),
                      _levels([mean_ci_text(r, metric) for r in rows]), delta])
    table = "\n".join(markdown_table(header, lines))
    return table + f"\n\nIntervals: {interval_legend(analysed.agg)}."


def cost_table(analysed: Analysed) -> str:
    """One row per method and level: sparsity, parameters, MACs, measured latency (with the
    speedup against dense) and accuracy."""
    summary, agg = analysed.summary, analysed.agg
    metric = str(agg["metric"].iloc[0])
    costs = cost_columns(agg)
    header = ["method", "sparsity", "params", *cost_headers(costs),
              f"{metric.replace('_acc', ' acc')} % (mean ± 95% CI)", "n"]
    rows = []
    for _, r in summary.iterrows():
        row = r.to_dict()
        sparsity = "0" if row["level_by"] == "dense" else _number(row["sparsity_pct"]) + "%"
        rows.append([row["label"], sparsity, f"{row['params_total']:,.0f}",
                     *cost_cells(row, costs), mean_ci_text(row, metric), str(int(row["n"]))])
    return "\n".join(markdown_table(header, rows)) + (
        "\n\nMMACs: millions of multiply-accumulates of one forward pass (exact count). bB ms: "
        f"median latency of a forward pass at batch B on one CPU thread, mean over seeds. "
        f"{speedup_note(summary)} Intervals: {interval_legend(agg)}.")


def study_table(analysed: Analysed, pairs: tuple[tuple[str, str], ...]) -> str:
    """`method_table`, then each pair's paired comparison by level (analysis/compare.py) and
    the rounds that left a layer with no weights (analysis/collapse.py)."""
    from analysis.compare import paired_comparison

    lines = [method_table(analysed), ""]
    for a, b in pairs:
        frame = paired_comparison(analysed.results, analysed.agg, a, b)
        diffs = _levels([f"{d:+.2f}" for d in frame["mean_diff_points"]])
        p_values = _levels([f"{p:.2g}" for p in frame["p_holm"]])
        levels = _levels([f"{_number(t)}%" for t in frame["target_sparsity_pct"]])
        lines.append(f"* {frame['a'].iloc[0]} - {frame['b'].iloc[0]}, paired by seed at "
                     f"{levels}: {diffs} points (Holm-corrected p {p_values}).")
    collapses = collapsed_rounds(analysed.results)
    for (label, sparsity), group in collapses.groupby(["label", "sparsity"], sort=False):
        layers = sorted({layer for row in group["dead_layers"] for layer in row.split(";")})
        lines.append(f"* Layer collapse: {label} at {_number(100 * sparsity)}% leaves a layer "
                     f"with no weights in {group['seed'].nunique()} of "
                     f"{int(analysed.agg['n'].max())} seeds (emptied in at least one: "
                     f"{', '.join(f'`{n}`' for n in layers)}).")
    return "\n".join(lines)


def flowers_table(analysed: Analysed) -> str:
    return study_table(analysed, (("IMP iterative", "SNIP"),
                                  ("IMP iterative", "dense, imp's budget (117 epochs)")))


def tuned_table(analysed: Analysed) -> str:
    """`method_table` of the final trials, then what each unit's search chose and cost (the
    experiment's search_report.csv, sweeps/search/report.py)."""
    import csv

    tuned = analysed.results.attrs.get("tuned") or []
    lines = [method_table(analysed)]
    for entry in tuned:
        report = Path(entry["report"]).with_name("search_report.csv")
        with report.open(newline="", encoding="utf-8") as handle:
            units = list(csv.DictReader(handle))
        fields = [key.removeprefix("chosen.") for key in units[0] if key.startswith("chosen.")]
        rows = [[unit["unit"], *(f"{float(unit['chosen.' + f]):.3g}" for f in fields),
                 f"{100 * float(unit['score']):.2f}", f"{unit['stopped']} of {unit['trials']}",
                 f"{unit['epochs_run']} / {unit['epochs_full']}"] for unit in units]
        run = sum(int(unit["epochs_run"]) for unit in units)
        full = sum(int(unit["epochs_full"]) for unit in units)
        lines += ["", f"Chosen by {entry['search_trials']} search trials on validation "
                  "accuracy (their own seeds; not in the table above):", ""]
        lines += markdown_table(["unit", *(f"`{f}`" for f in fields), "val acc %",
                                 "stopped by ASHA", "trial-epochs run / to the end"], rows)
        lines += ["", f"The search ran {run} of {full} trial-epochs "
                  f"({100 * run / full:.0f}%)."]
    return "\n".join(lines)


@dataclass(frozen=True)
class Section:
    """A generated block: a shipped sweep, its figures and its table."""

    name: str
    sweep: str
    title: str
    figures: tuple[Figure, ...] = (ACCURACY_VS_PARAMS,)
    table: Callable[[Analysed], str] = method_table
    interval: str = "t"
    run_args: tuple[str, ...] = field(default_factory=tuple)
    page: str = "README.md"
    """The Markdown file, relative to the repository root, that holds the block."""
    on_demand: bool = False
    """A sweep that runs for tens of minutes: `make docs` leaves its block as it is; only
    `--only NAME` (its own make target, `command`) reruns it."""
    command: str = "make docs"
    """What regenerates the block (named in its provenance line)."""

    def figure_file(self, figure: Figure) -> str:
        """The figure's path relative to the repository root (figures live in docs/)."""
        return f"docs/{self.name}_{figure.suffix}.png"

    def figure_path(self, figure: Figure) -> str:
        """The figure's link as written in `page` (relative to the page's directory)."""
        return posixpath.relpath(self.figure_file(figure), posixpath.dirname(self.page) or ".")


SECTIONS: tuple[Section, ...] = (
    Section(name="quickstart", sweep="sweeps/quickstart.yaml", title="quickstart"),
    Section(name="methods", sweep="sweeps/methods_digits.yaml", title="methods_digits",
            page="docs/methods.md"),
    Section(name="structured", sweep="sweeps/structured_digits.yaml", title="structured_digits",
            figures=(ACCURACY_VS_SPEEDUP,), table=cost_table, page="docs/methods.md"),
    Section(name="tuned", sweep="sweeps/tuned_digits.yaml", title="tuned_digits",
            table=tuned_table, page="docs/sweeps.md"),
    Section(name="flowers_cpu", sweep="sweeps/flowers_cpu.yaml", title="flowers_cpu",
            table=flowers_table, on_demand=True, command="make docs-flowers"),
)
