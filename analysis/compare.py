"""Paired comparison of two method lines, level by level (`plot.py DIR --compare A B`).

The seeds of a sweep are shared across its methods (same initialisation, same data order), so
two methods are compared seed by seed: at each level both lines have, the per-seed differences
``A - B`` of the metric, their mean with a Student-t interval, and a paired t-test's two-sided
p-value (the one-sample t-test of the differences, as ``scipy.stats.ttest_rel``). The p-values
of a pair are Holm-corrected across its levels (Holm 1979: the i-th smallest of m is multiplied
by m - i + 1, then made monotone and capped at 1), so "significant at some level" keeps its
family-wise error rate.

Levels are paired by target sparsity (IMP's round k at rate p is the level 1 - (1-p)^k that a
prune-at-init grid names), or by the level value itself where a line has no target sparsity (a
channel fraction). A line of one unpruned level (dense, the budget-matched dense control) is
paired with every level of the other.
Only seeds both lines have at a level enter it; `unpaired_seeds` lists the others.
"""

from __future__ import annotations

import math
import re
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from analysis.aggregate import _level_frame, dense_rows, is_missing, line_keys
from analysis.load import AnalysisInputError
from analysis.report import line_id, line_labels, markdown_table
from analysis.stats import holm, paired_t_test, t_interval

COLUMNS = ["a", "b", "target_sparsity_pct", "level", "n_pairs", "seeds", "mean_a_pct",
           "mean_b_pct", "mean_diff_points", "ci_low_points", "ci_high_points", "t", "p_value",
           "p_holm", "differences_points", "unpaired_seeds"]


def resolve_label(agg: pd.DataFrame, name: str) -> str:
    """The line label `name` stands for: a label as summary.md prints it (any case), or a method
    name that only one line has; AnalysisInputError listing the labels otherwise."""
    by_line, keys = line_labels(agg), line_keys(agg)
    labels = sorted(set(by_line.values()))
    exact = [label for label in labels if label.lower() == name.lower()]
    if exact:
        return exact[0]
    by_method = sorted({by_line[line_id(row, keys)]
                        for _, row in agg[agg["method"] == name].iterrows()})
    if len(by_method) == 1:
        return by_method[0]
    if by_method:
        raise AnalysisInputError(f"--compare: method {name!r} has {len(by_method)} lines; name "
                                 f"one: {', '.join(by_method)}")
    raise AnalysisInputError(f"--compare: no line {name!r}; lines: {', '.join(labels)}")


def _per_seed_levels(results: pd.DataFrame, agg: pd.DataFrame, label: str,
                     metric: str) -> dict[Any, dict[Any, float]]:
    """level -> {seed: the seed's mean metric there} for the line `label`."""
    if label == "dense":
        dense, _ = dense_rows(results)
        return {"dense": dense.groupby("seed")[metric].mean().to_dict()}
    rows = _level_frame(results)
    rows = rows[(rows["method"] != "dense") & ~rows["imp_round0"]]
    labels, keys = line_labels(agg), line_keys(agg)
    mine = rows[[labels.get(line_id(row, keys)) == label for _, row in rows.iterrows()]]
    levels: dict[Any, dict[Any, float]] = {}
    for _, row in mine.iterrows():
        target = row["target_sparsity"]
        level = ("sparsity", round(float(target), 9)) if not is_missing(target) \
            else ("level", row["level"])
        levels.setdefault(level, {}).setdefault(row["seed"], []).append(float(row[metric]))
    return {level: {seed: float(np.mean(v)) for seed, v in seeds.items()}
            for level, seeds in levels.items()}


def _unpruned(levels: dict[Any, dict[Any, float]]) -> bool:
    """A line of one unpruned level (dense, or the budget-matched dense control): it is paired
    with every level of the other line."""
    return len(levels) == 1 and next(iter(levels)) in ("dense", ("sparsity", 0.0))


def paired_comparison(results: pd.DataFrame, agg: pd.DataFrame, a: str, b: str,
                      metric: str = "test_acc", ci: float = 0.95) -> pd.DataFrame:
    """One row per level both lines have (see the module docstring); points and percent."""
    a, b = resolve_label(agg, a), resolve_label(agg, b)
    if a == b:
        raise AnalysisInputError(f"--compare: {a!r} against itself")
    levels_a = _per_seed_levels(results, agg, a, metric)
    levels_b = _per_seed_levels(results, agg, b, metric)
    if _unpruned(levels_a):
        levels_a = dict.fromkeys(levels_b, next(iter(levels_a.values())))
    if _unpruned(levels_b):
        levels_b = dict.fromkeys(levels_a, next(iter(levels_b.values())))
    records = []
    for level in sorted(set(levels_a) & set(levels_b), key=lambda lv: (lv[0], float(lv[1]))):
        seeds_a, seeds_b = levels_a[level], levels_b[level]
        seeds = sorted(set(seeds_a) & set(seeds_b))
        if not seeds:
            continue
        diffs = np.array([seeds_a[s] - seeds_b[s] for s in seeds])
        low, high = t_interval(diffs, ci)
        t, p = paired_t_test(diffs)
        kind, value = level
        records.append({
            "a": a, "b": b,
            "target_sparsity_pct": 100 * value if kind == "sparsity" else math.nan,
            "level": value,
            "n_pairs": len(seeds),
            "seeds": ",".join(map(str, seeds)),
            "mean_a_pct": 100 * float(np.mean([seeds_a[s] for s in seeds])),
            "mean_b_pct": 100 * float(np.mean([seeds_b[s] for s in seeds])),
            "mean_diff_points": 100 * float(diffs.mean()),
            "ci_low_points": 100 * low, "ci_high_points": 100 * high,
            "t": t, "p_value": p,
            "differences_points": ";".join(f"{s}:{100 * d:+.4f}"
                                           for s, d in zip(seeds, diffs, strict=True)),
            "unpaired_seeds": ",".join(map(str, sorted(set(seeds_a) ^ set(seeds_b)))),
        })
    frame = pd.DataFrame.from_records(records, columns=[c for c in COLUMNS if c != "p_holm"])
    if frame.empty:
        raise AnalysisInputError(f"--compare: {a!r} and {b!r} share no level with a common seed")
    frame["p_holm"] = holm(frame["p_value"].to_numpy(dtype=float))
    return frame[COLUMNS]


def comparisons_markdown(frames: list[pd.DataFrame], metric: str, ci: float,
                         tuned: list[str] | None = None) -> str:
    """comparisons.md; `tuned`: the lines saying the recipes were tuned (report.tuned_lines)."""
    out = ["# Paired comparisons", "",
           f"Per level both lines have: {metric} differences A - B in points, paired by seed "
           f"(same initialisation and data order); mean ± {ci:.0%} Student-t interval of the "
           "differences; two-sided paired t-test, Holm-corrected across the pair's levels.", ""]
    for line in tuned or []:
        out += [line, ""]
    for frame in frames:
        a, b = frame["a"].iloc[0], frame["b"].iloc[0]
        out += [f"## {a} - {b}", ""]
        rows = [[_level_text(r), r["n_pairs"], f"{r['mean_a_pct']:.2f}", f"{r['mean_b_pct']:.2f}",
                 f"{r['mean_diff_points']:+.2f} [{r['ci_low_points']:+.2f}, "
                 f"{r['ci_high_points']:+.2f}]", _p(r["p_value"]), _p(r["p_holm"]),
                 r["differences_points"].replace(";", "; ")]
                for _, r in frame.iterrows()]
        out += markdown_table(["level", "pairs", f"{a} %", f"{b} %", "A - B (points, CI)",
                               "p", "p (Holm)", "per seed (seed: points)"], rows)
        out.append("")
    return "\n".join(out)


def terminal_lines(frame: pd.DataFrame) -> list[str]:
    a, b = frame["a"].iloc[0], frame["b"].iloc[0]
    return [f"compare {a} - {b} at {_level_text(r)}: {r['mean_diff_points']:+.2f} points "
            f"[{r['ci_low_points']:+.2f}, {r['ci_high_points']:+.2f}], p {_p(r['p_value'])} "
            f"(Holm {_p(r['p_holm'])}), {r['n_pairs']} seeds" for _, r in frame.iterrows()]


def plot_comparison(frame: pd.DataFrame, out_dir: Path) -> list[Path]:
    """compare_<A>_vs_<B>.png/.svg: each seed's difference per level, the mean and its
    interval, the zero line, and the Holm-corrected p-value over each level."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    a, b = frame["a"].iloc[0], frame["b"].iloc[0]
    fig, ax = plt.subplots(figsize=(max(4.0, 1.3 * len(frame) + 2), 3.6))
    for x, (_, r) in enumerate(frame.iterrows()):
        seeds = [float(part.split(":")[1]) for part in r["differences_points"].split(";")]
        ax.scatter([x] * len(seeds), seeds, color="0.55", s=14, zorder=2,
                   label="one seed" if x == 0 else None)
        half = [[r["mean_diff_points"] - r["ci_low_points"]],
                [r["ci_high_points"] - r["mean_diff_points"]]]
        ax.errorbar([x], [r["mean_diff_points"]], yerr=None if math.isnan(half[0][0]) else half,
                    fmt="o", color="C0", capsize=4, zorder=3,
                    label="mean, t-interval" if x == 0 else None)
        ax.annotate(f"p={_p(r['p_holm'])}", (x, 1.0), xycoords=("data", "axes fraction"),
                    ha="center", va="bottom", fontsize=8)
    ax.axhline(0.0, color="black", linewidth=0.8)
    ax.set_xticks(range(len(frame)), [_level_text(r) for _, r in frame.iterrows()])
    ax.set_xlabel("level")
    ax.set_ylabel(f"{a} - {b} (points)")
    ax.set_title(f"{a} - {b}, paired by seed (p: Holm)", pad=16, fontsize=10)
    ax.legend(fontsize=8, loc="best")
    fig.tight_layout()
    stem = out_dir / f"compare_{_slug(a)}_vs_{_slug(b)}"
    written = []
    for suffix in (".png", ".svg"):
        fig.savefig(stem.with_suffix(suffix), dpi=150)
        written.append(stem.with_suffix(suffix))
    plt.close(fig)
    return written


def _level_text(row: Any) -> str:
    if not is_missing(row["target_sparsity_pct"]):
        return f"{row['target_sparsity_pct']:g}%"
    return f"{row['level']:g}"


def _p(value: float) -> str:
    return "n/a" if is_missing(value) else f"{value:.3g}"


def _slug(label: str) -> str:
    return re.sub(r"[^A-Za-z0-9]+", "_", label).strip("_").lower()
