"""Mask overlap (`plot.py DIR --mask-overlap`): do two methods, or two seeds, keep the same
weights? Jaccard overlap |A ∩ B| / |A ∪ B| of the kept weights, per layer and over all
prunable weights, between every pair of (method line, seed) rounds at each level, read from the
round checkpoints' masks (no retraining).

Pairs at a level: every two rounds of the finished trials whose target sparsity is that level
(IMP's round k counts at its 1 - (1-p)^k). `jaccard_random` beside each figure is what two
independent random masks of the same densities would overlap, d_a d_b / (d_a + d_b - d_a d_b):
overlap above it is agreement, not chance. Structured rounds are left out: their masks cover
networks of different shapes.

The one module of `analysis` that needs torch (to read the round checkpoints through
`trainables.checkpoints`); it is imported only when `--mask-overlap` is asked for.
"""

from __future__ import annotations

import itertools
import math
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from analysis.aggregate import _level_frame, is_missing, line_keys
from analysis.load import round_checkpoint_dir
from analysis.report import line_id, line_labels
from trainables.schema import ROUND_CHECKPOINT

ALL_LAYERS = "(all prunable)"
COLUMNS = ["target_sparsity", "a", "seed_a", "b", "seed_b", "layer", "kept_a", "kept_b",
           "intersection", "union", "jaccard", "jaccard_random"]


def round_masks(results: pd.DataFrame, agg: pd.DataFrame) -> list[dict[str, Any]]:
    """Each finished, masked, pruned round: its line label, seed, level and checkpoint directory
    (its masks are read level by level, in `mask_overlap`)."""
    from trainables.checkpoints import has_checkpoint

    rows = _level_frame(results)
    rows = rows[(rows["method"] != "dense") & ~rows["imp_round0"]]
    labels, keys = line_labels(agg), line_keys(agg)
    found = []
    for _, row in rows.iterrows():
        if is_missing(row["target_sparsity"]):
            continue
        directory = round_checkpoint_dir(Path(row["trial_dir"]), row.get(ROUND_CHECKPOINT),
                                         row["round"])
        if directory is None or not has_checkpoint(directory):
            continue
        found.append({
            "label": labels.get(line_id(row, keys), str(row["method"])),
            "seed": row["seed"],
            "level": round(float(row["target_sparsity"]), 9),
            "directory": directory,
        })
    return found


def read_masks(directory: Path) -> dict[str, np.ndarray] | None:
    """A round's masks (numpy bool), reading nothing else; None for a structured round, whose
    masks cover another network's shapes."""
    from trainables.checkpoints import load_round_checkpoint

    state = load_round_checkpoint(directory, only=("masks", "layer_widths"))
    if state.get("layer_widths") is not None:
        return None
    return {name: keep.numpy().astype(bool) for name, keep in state["masks"].items()}


def mask_overlap(rounds: list[dict[str, Any]]) -> pd.DataFrame:
    """One row per pair of rounds at a level and layer, plus one over all layers (see COLUMNS).

    The masks are read one level at a time and dropped after it, so memory holds one level's
    rounds, however many levels and trials the study has."""
    records = []
    by_level: dict[float, list[dict[str, Any]]] = {}
    for entry in rounds:
        by_level.setdefault(entry["level"], []).append(entry)
    for level, entries in sorted(by_level.items()):
        entries = sorted(entries, key=lambda e: (e["label"], str(e["seed"])))
        loaded = [{**entry, "masks": masks} for entry in entries
                  if (masks := read_masks(entry["directory"])) is not None]
        for first, second in itertools.combinations(loaded, 2):
            common = sorted(set(first["masks"]) & set(second["masks"]))
            totals = np.zeros(5, dtype=np.int64)  # kept_a, kept_b, intersection, union, numel
            for layer in common:
                a, b = first["masks"][layer], second["masks"][layer]
                counts = np.array([a.sum(), b.sum(), (a & b).sum(), (a | b).sum(), a.size])
                totals += counts
                records.append(_record(level, first, second, layer, counts))
            records.append(_record(level, first, second, ALL_LAYERS, totals))
    return pd.DataFrame.from_records(records, columns=COLUMNS)


def _record(level: float, first: dict, second: dict, layer: str, counts: np.ndarray) -> dict:
    kept_a, kept_b, intersection, union, numel = (int(c) for c in counts)
    density_a, density_b = kept_a / numel, kept_b / numel
    chance = density_a * density_b
    return {
        "target_sparsity": level, "a": first["label"], "seed_a": first["seed"],
        "b": second["label"], "seed_b": second["seed"], "layer": layer,
        "kept_a": kept_a, "kept_b": kept_b, "intersection": intersection, "union": union,
        "jaccard": intersection / union if union else math.nan,
        "jaccard_random": chance / (density_a + density_b - chance)
        if density_a + density_b > 0 else math.nan,
    }


def line_matrix(overlap: pd.DataFrame, level: float) -> pd.DataFrame:
    """Mean overall Jaccard between lines at `level` over their seed pairs; the diagonal is a
    line against itself across seeds (same-seed pairs of one line do not exist)."""
    rows = overlap[(overlap["layer"] == ALL_LAYERS) & (overlap["target_sparsity"] == level)]
    lines = sorted(set(rows["a"]) | set(rows["b"]))
    matrix = pd.DataFrame(np.nan, index=lines, columns=lines)
    for (a, b), group in rows.groupby(["a", "b"]):
        matrix.loc[a, b] = matrix.loc[b, a] = group["jaccard"].mean()
    return matrix


def plot_mask_overlap(overlap: pd.DataFrame, out_dir: Path) -> list[Path]:
    """mask_overlap.png/.svg: one heatmap per level of the lines' mean overall Jaccard."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    levels = sorted(overlap["target_sparsity"].unique())
    if not levels:
        return []
    size = max(len(line_matrix(overlap, level)) for level in levels)
    fig, axes = plt.subplots(1, len(levels), squeeze=False,
                             figsize=(max(4.5, (1.1 * size + 1.8) * len(levels)), 1.0 * size + 2))
    for column, (ax, level) in enumerate(zip(axes[0], levels, strict=True)):
        matrix = line_matrix(overlap, level)
        image = ax.imshow(matrix.to_numpy(float), vmin=0.0, vmax=1.0, cmap="viridis")
        for (i, j), value in np.ndenumerate(matrix.to_numpy(float)):
            if not math.isnan(value):
                ax.text(j, i, f"{value:.2f}", ha="center", va="center", fontsize=8,
                        color="white" if value < 0.6 else "black")
        ax.set_xticks(range(len(matrix)), matrix.columns, rotation=40, ha="right", fontsize=8)
        ax.set_yticks(range(len(matrix)), matrix.index if column == 0 else [], fontsize=8)
        ax.set_title(f"{100 * level:g}% sparsity", fontsize=9)
    fig.colorbar(image, ax=axes[0].tolist(), shrink=0.8, label="Jaccard overlap of kept weights")
    fig.suptitle("mask overlap, mean over seed pairs (diagonal: across seeds)", fontsize=10)
    written = []
    for suffix in (".png", ".svg"):
        fig.savefig(out_dir / f"mask_overlap{suffix}", dpi=150, bbox_inches="tight")
        written.append(out_dir / f"mask_overlap{suffix}")
    plt.close(fig)
    return written
