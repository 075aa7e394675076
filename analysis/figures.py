"""Figures: accuracy vs remaining parameters, vs measured latency and vs FLOPs; accuracy vs IMP
round; per-layer sparsity.

Matplotlib with the non-interactive Agg backend; colours from the Okabe-Ito palette, which stays
distinguishable with the common colour-vision deficiencies. Every function writes PNG and SVG.
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

import matplotlib

matplotlib.use("Agg")
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402
from matplotlib.ticker import FixedLocator, FuncFormatter, LogLocator, NullFormatter  # noqa: E402
from matplotlib.transforms import offset_copy  # noqa: E402

from analysis.aggregate import _level_frame, latency_batches, line_keys  # noqa: E402
from analysis.load import load_layer_sparsity  # noqa: E402
from analysis.report import interval_name, line_id, line_labels  # noqa: E402

# Okabe & Ito (2008), black left out for lines: it is the dense reference's colour.
OKABE_ITO = ["#0072B2", "#E69F00", "#009E73", "#D55E00", "#CC79A7", "#56B4E9", "#F0E442",
             "#999999"]
MARKERS = ["o", "s", "^", "D", "v", "P", "X", "*"]
DENSE_COLOURS = ["#000000", "#555555", "#888888"]
PARAMS_LABELS = {
    "params_total": "remaining parameters, all (millions, log scale)",
    "params_prunable": "remaining prunable weights (millions, log scale)",
}


def _save(fig, out_dir: Path, stem: str) -> list[Path]:
    paths = [out_dir / f"{stem}.png", out_dir / f"{stem}.svg"]
    fig.savefig(paths[0], dpi=150, bbox_inches="tight")
    fig.savefig(paths[1], bbox_inches="tight")
    plt.close(fig)
    return paths


def _n_text(ns: pd.Series) -> str:
    low, high = int(ns.min()), int(ns.max())
    return f"n={low}" if low == high else f"n={low}-{high}"


def _lines(agg: pd.DataFrame):
    keys = line_keys(agg)
    labels = line_labels(agg)
    for _, line in agg[agg["level_by"] != "dense"].groupby(keys, dropna=False, sort=False):
        yield labels[line_id(line.iloc[0], keys)], line


def _cap_accuracy_axis(ax, agg: pd.DataFrame) -> None:
    """Accuracy lives in [0, 100]: with few seeds a t-interval can reach past it, and the axis
    should not stretch to show impossible values. The band is cut at the frame, and a note
    under the axes says so, so that a cut band is never read as the whole interval."""
    low, high = ax.get_ylim()
    # The frame is 0% and 100% exactly, so "cut at the frame" means cut at the possible range.
    ax.set_ylim(max(low, 0.0), min(high, 100.0))
    if agg["ci_outside_range"].any():
        ax.annotate(
            "† some intervals reach past 0% or 100% (too few seeds for their spread); "
            "drawn cut at the frame",
            xy=(0.0, 0.0), xycoords="axes fraction", xytext=(0, -42),
            textcoords="offset points", fontsize=8, va="top",
        )


def plot_accuracy_vs_params(
    agg: pd.DataFrame,
    out_dir: str | Path,
    title: str,
    params_column: str = "params_total",
    stem: str = "accuracy_vs_params",
) -> list[Path]:
    """Mean accuracy (%) against remaining parameters, CI bands, dense reference as a band."""
    return plot_accuracy_against(
        agg, out_dir, title, params_column, stem,
        PARAMS_LABELS.get(params_column, params_column), unit=1e6, sparsity_axis=True)


def plot_accuracy_vs_speedup(
    agg: pd.DataFrame, out_dir: str | Path, title: str, batch: int | None = None,
    device: str | None = None, stem: str = "accuracy_vs_speedup",
) -> list[Path]:
    """Mean accuracy against the measured speedup over dense at batch `batch` (default: the
    smallest measured) on `device` (named on the axis): each round's own paired speedup
    (analysis/aggregate.py), never a ratio of times taken by different trials. Nothing when
    the rows measured none."""
    batches = latency_batches(agg)
    if batch is None and batches:
        batch = batches[0]
    column = f"speedup_b{batch}"
    if batch not in batches or column not in agg or agg[column].isna().all():
        return []
    where = f" on {device}" if device else ""
    label = (f"speedup over dense of a forward pass at batch {batch}{where} (x, timed side by "
             "side; geometric mean over seeds, log scale)")
    return plot_accuracy_against(agg, out_dir, title, column, stem, label, unit=1.0)


def plot_accuracy_vs_flops(
    agg: pd.DataFrame, out_dir: str | Path, title: str, column: str = "flops",
    stem: str = "accuracy_vs_flops",
) -> list[Path]:
    """Mean accuracy against MACs of one forward pass (`flops`, or `flops_effective`: by nonzero
    weights only); nothing when the rows counted none."""
    if column not in agg.columns or agg[column].isna().all():
        return []
    what = "by nonzero weights, " if column == "flops_effective" else ""
    label = f"multiply-accumulates per image ({what}millions, log scale)"
    return plot_accuracy_against(agg, out_dir, title, column, stem, label, unit=1e6)


def plot_accuracy_against(
    agg: pd.DataFrame,
    out_dir: str | Path,
    title: str,
    column: str,
    stem: str,
    xlabel: str,
    unit: float,
    sparsity_axis: bool = False,
) -> list[Path]:
    """Mean accuracy (%) against `column` / `unit` (log x), each method line with its CI band,
    the dense reference as a star at its own x and a horizontal band."""
    out_dir = Path(out_dir)
    metric = str(agg["metric"].iloc[0])
    ci_name = _ci_name(agg)
    fig, ax = plt.subplots(figsize=(8.0, 5.0))
    xs_all = []
    single = collapsed = 0
    for i, (label, line) in enumerate(_lines(agg)):
        line = line.dropna(subset=[column]).sort_values(column)
        if line.empty:
            continue
        x = line[column].to_numpy(float) / unit
        y = 100 * line["mean"].to_numpy(float)
        colour = OKABE_ITO[i % len(OKABE_ITO)]
        ax.plot(x, y, marker=MARKERS[i % len(MARKERS)], color=colour, lw=1.8, ms=5,
                label=f"{label} ({_n_text(line['n'])})", zorder=3)
        low = 100 * line["ci_low"].to_numpy(float)
        high = 100 * line["ci_high"].to_numpy(float)
        ok = ~(np.isnan(low) | np.isnan(high))
        if ok.sum() >= 2:
            ax.fill_between(x[ok], low[ok], high[ok], color=colour, alpha=0.18, lw=0, zorder=2)
        elif ok.any():
            # A one-level line has no band to draw: show its interval as an error bar.
            # Nudged right by a few points per such line so that bars at one x stay apart.
            single += 1
            shift = offset_copy(ax.transData, fig=fig, x=3.0 * single, y=0.0, units="points")
            ax.errorbar(x[ok], y[ok], yerr=[y[ok] - low[ok], high[ok] - y[ok]], fmt="none",
                        ecolor=colour, elinewidth=1.2, capsize=3, zorder=3, transform=shift)
            # A transformed artist does not widen the data limits: widen them by hand.
            ax.update_datalim(np.column_stack([np.r_[x[ok], x[ok]], np.r_[low[ok], high[ok]]]))
            ax.autoscale_view()
        xs_all.extend(x)
        collapsed += _mark_collapse(ax, line, x, y, collapsed == 0)

    dense = agg[agg["level_by"] == "dense"]
    dense_labels = line_labels(agg)
    keys = line_keys(agg)
    for j, (_, row) in enumerate(dense.iterrows()):
        colour = DENSE_COLOURS[j % len(DENSE_COLOURS)]
        mean = 100 * row["mean"]
        x = row[f"{column}_dense"] / unit if f"{column}_dense" in row else math.nan
        if math.isnan(x):
            x = row[column] / unit
        label = dense_labels[line_id(row, keys)]
        if not math.isnan(row["ci_low"]):
            ax.axhspan(100 * row["ci_low"], 100 * row["ci_high"], color=colour, alpha=0.08,
                       lw=0, zorder=1)
            yerr = [[mean - 100 * row["ci_low"]], [100 * row["ci_high"] - mean]]
        else:
            yerr = None
        ax.axhline(mean, color=colour, lw=1.0, ls="--", zorder=1)
        if math.isnan(x):
            continue
        ax.errorbar([x], [mean], yerr=yerr, fmt="*", ms=11, color=colour, capsize=4,
                    zorder=4, label=f"{label} ({_n_text(pd.Series([row['n']]))}"
                    f"{', no CI' if yerr is None else ''})")
        xs_all.append(x)

    ax.set_xscale("log")
    subs: tuple[float, ...] = (1.0, 2.0, 5.0)
    if xs_all:
        lo, hi = min(xs_all), max(xs_all)
        ax.set_xlim(lo / 1.25, hi * 1.25)
        if hi / lo < 20:  # less than about a decade (speedups): more labelled ticks
            subs = (1.0, 1.5, 2.0, 3.0, 5.0, 7.0)
    ax.xaxis.set_major_locator(LogLocator(base=10, subs=subs))
    ax.xaxis.set_major_formatter(FuncFormatter(lambda v, _: f"{v:g}"))
    ax.xaxis.set_minor_formatter(NullFormatter())
    ax.set_xlabel(xlabel)
    ax.set_ylabel(f"{metric.replace('_acc', '')} accuracy (%), mean ± {ci_name}")
    ax.grid(True, which="major", alpha=0.3)
    _cap_accuracy_axis(ax, agg)
    top = sparsity_axis and _shared_dense_counts(agg)
    if top:
        _sparsity_top_axis(ax, agg, column)
    ax.set_title(title, pad=28 if top else 6)
    ax.legend(loc="upper left", bbox_to_anchor=(1.02, 1.0), frameon=False, fontsize=9)
    return _save(fig, out_dir, stem)


def _mark_collapse(ax: Any, line: pd.DataFrame, x: np.ndarray, y: np.ndarray,
                   first: bool) -> int:
    """A red ✕ over each point where a seed's round left a layer with no weights (see
    analysis/collapse.py); the number of points marked."""
    if "collapsed_seeds" not in line:
        return 0
    hit = pd.to_numeric(line["collapsed_seeds"], errors="coerce").fillna(0).to_numpy() > 0
    if hit.any():
        ax.scatter(x[hit], y[hit], marker="x", s=70, linewidths=2.0, color="#d62728", zorder=5,
                   label="a layer has no weights (summary.md)" if first else None)
    return int(hit.sum())


def _ci_name(agg: pd.DataFrame) -> str:
    """Axis-label name of the interval, e.g. '95% Student-t CI'."""
    return interval_name(agg)


def _shared_dense_counts(agg: pd.DataFrame) -> tuple[float, float] | None:
    totals = agg["params_total_dense"].dropna().round().unique()
    prunables = agg["params_prunable_dense"].dropna().round().unique()
    if len(totals) == 1 and len(prunables) == 1 and prunables[0] > 0:
        return float(totals[0]), float(prunables[0])
    return None


def _sparsity_top_axis(ax, agg: pd.DataFrame, params_column: str) -> None:
    """Sparsity ticks on a top axis; only when every curve shares one unpruned model size."""
    counts = _shared_dense_counts(agg)
    if counts is None:
        return
    total, prunable = counts
    fixed = total - prunable if params_column == "params_total" else 0.0
    candidates = [0.0, 0.5, 0.8, 0.9, 0.95, 0.98, 0.99, 0.995, 0.998, 0.999]
    lo, hi = ax.get_xlim()
    ticks, labels = [], []
    last = math.inf
    for s in candidates:
        x = (fixed + (1.0 - s) * prunable) / 1e6
        # Skip ticks outside the axis or closer than ~12% in log space to the previous one.
        if lo <= x <= hi and (last == math.inf or math.log10(last / x) > 0.05):
            ticks.append(x)
            labels.append(f"{100 * s:g}%")
            last = x
    if not ticks:
        return
    top = ax.twiny()
    top.set_xscale("log")
    top.set_xlim(lo, hi)
    top.xaxis.set_major_locator(FixedLocator(ticks))
    top.xaxis.set_major_formatter(FuncFormatter(lambda v, pos: labels[pos] if pos < len(labels)
                                                else ""))
    top.xaxis.set_minor_locator(FixedLocator([]))
    top.set_xlabel("sparsity of the prunable weights", fontsize=9)
    top.tick_params(labelsize=8)


def plot_accuracy_vs_round(agg: pd.DataFrame, out_dir: str | Path, title: str,
                           stem: str = "accuracy_vs_round") -> list[Path]:
    """IMP iterative: mean accuracy per round with CI band; top labels give the sparsity."""
    out_dir = Path(out_dir)
    lines = [(label, line) for label, line in _lines(agg)
             if (line["level_by"] == "round").all()]
    if not lines:
        return []
    metric = str(agg["metric"].iloc[0])
    fig, ax = plt.subplots(figsize=(7.5, 4.5))
    for i, (label, line) in enumerate(lines):
        line = line.sort_values("round")
        x = line["round"].to_numpy(float)
        y = 100 * line["mean"].to_numpy(float)
        colour = OKABE_ITO[i % len(OKABE_ITO)]
        ax.plot(x, y, marker=MARKERS[i % len(MARKERS)], color=colour,
                label=f"{label} ({_n_text(line['n'])})")
        low, high = 100 * line["ci_low"].to_numpy(float), 100 * line["ci_high"].to_numpy(float)
        ok = ~(np.isnan(low) | np.isnan(high))
        if ok.any():
            ax.fill_between(x[ok], low[ok], high[ok], color=colour, alpha=0.18, lw=0)
        if len(lines) == 1:
            ax.set_xticks(x, [f"{int(r)}\n{100 * sp:.1f}%"
                              for r, sp in zip(x, line["sparsity"], strict=True)])
    dense = agg[agg["level_by"] == "dense"]
    for j, (_, row) in enumerate(dense.iterrows()):
        colour = DENSE_COLOURS[j % len(DENSE_COLOURS)]
        ax.axhline(100 * row["mean"], color=colour, ls="--", lw=1,
                   label=f"dense{'' if len(dense) == 1 else ' ' + str(row['experiment'])}"
                   f" (n={int(row['n'])})")
        if not math.isnan(row["ci_low"]):
            ax.axhspan(100 * row["ci_low"], 100 * row["ci_high"], color=colour, alpha=0.08, lw=0)
    if len(lines) == 1:
        ax.set_xlabel("IMP round / measured sparsity of the prunable weights")
    else:
        ax.set_xlabel("IMP round")
        ax.xaxis.set_major_locator(matplotlib.ticker.MaxNLocator(integer=True))
    ax.set_ylabel(f"{metric.replace('_acc', '')} accuracy (%), mean ± {_ci_name(agg)}")
    ax.grid(True, alpha=0.3)
    _cap_accuracy_axis(ax, agg)
    ax.set_title(title)
    ax.legend(loc="upper left", bbox_to_anchor=(1.02, 1.0), frameon=False, fontsize=9)
    return _save(fig, out_dir, stem)


def default_layer_target(agg: pd.DataFrame) -> float | None:
    """The highest target sparsity that every method line reaches (for the per-layer view)."""
    lines = list(_lines(agg))
    if not lines:
        return None
    return float(min(line["target_sparsity"].max() for _, line in lines))


def layer_sparsity_table(results: pd.DataFrame, agg: pd.DataFrame,
                         target: float | None = None) -> pd.DataFrame:
    """Mean per-layer sparsity over seeds of each method line at the level nearest ``target``."""
    target = default_layer_target(agg) if target is None else target
    if target is None:
        return pd.DataFrame()
    rows = _level_frame(results)
    rows = rows[(rows["method"] != "dense") & ~rows["imp_round0"]]
    keys = line_keys(agg)
    parts = []
    for label, line in _lines(agg):
        distance = (line["target_sparsity"] - target).abs().to_numpy(float)
        nearest = line.iloc[int(distance.argmin())]
        mask = pd.Series(True, index=rows.index)
        for k in keys + ["level_by"]:
            value = nearest[k]
            mask &= rows[k].isna() if pd.isna(value) else rows[k] == value
        level_value = nearest["round"] if nearest["level_by"] == "round" else nearest[
            "target_sparsity"]
        level_col = rows["round"] if nearest["level_by"] == "round" else rows["level"]
        mask &= np.isclose(level_col.astype(float), float(level_value))
        layers = load_layer_sparsity(rows[mask])
        if layers.empty:
            continue
        mean = layers.groupby("param", sort=False).agg(
            layer_sparsity=("layer_sparsity", "mean"), numel=("numel", "first"),
            n=("seed", "nunique")).reset_index()
        mean["label"] = label
        mean["sparsity"] = nearest["sparsity"]
        parts.append(mean)
    return pd.concat(parts, ignore_index=True) if parts else pd.DataFrame()


def plot_layer_sparsity(table: pd.DataFrame, out_dir: str | Path, title: str,
                        stem: str = "layer_sparsity") -> list[Path]:
    """Horizontal grouped bars: sparsity (%) of each prunable layer, one colour per method."""
    if table.empty:
        return []
    out_dir = Path(out_dir)
    params = list(dict.fromkeys(table["param"]))
    methods = list(dict.fromkeys(table["label"]))
    height = 0.8 / len(methods)
    fig, ax = plt.subplots(figsize=(7.5, max(2.5, 0.32 * len(params) * max(1, len(methods) / 2)
                                             + 1.2)))
    y = np.arange(len(params))
    for i, method in enumerate(methods):
        part = table[table["label"] == method].set_index("param").reindex(params)
        s = part["sparsity"].dropna()
        label = f"{method} at {100 * s.iloc[0]:.1f}% (n={int(part['n'].max())})"
        ax.barh(y - 0.4 + (i + 0.5) * height, 100 * part["layer_sparsity"].to_numpy(float),
                height=height, color=OKABE_ITO[i % len(OKABE_ITO)], label=label)
    ax.set_yticks(y, params, fontsize=8)
    ax.invert_yaxis()
    ax.set_xlim(0, 100)
    ax.set_xlabel("layer sparsity (% of the layer's weights pruned), mean over seeds")
    ax.grid(True, axis="x", alpha=0.3)
    ax.set_title(title)
    ax.legend(loc="upper left", bbox_to_anchor=(1.02, 1.0), frameon=False, fontsize=9)
    return _save(fig, out_dir, stem)
