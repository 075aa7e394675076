"""Layer collapse: rounds whose mask leaves a prunable layer with no weights at all.

A layer pruned to 100% cuts every path through it: in a plain network (VGG) nothing reaches
the classifier, in a residual one its block's branch carries no signal (SNIP at 97.4% on
Flowers-102 empties `layer4.1.conv2`, and the accuracy collapses). The per-layer counts are read
from each round checkpoint's `metrics.json` (`layer_sparsity`: `remaining` per parameter), so
this needs no torch and no retraining. A round whose checkpoint is gone cannot be checked: the
summary says how many were.
"""

from __future__ import annotations

import warnings

import pandas as pd

from analysis.load import load_layer_sparsity

COLUMN = "dead_layers"
"""results column: the `;`-joined parameters with no weights left ("" for none; NaN: no
checkpoint to read)."""


def mark_dead_layers(results: pd.DataFrame) -> pd.DataFrame:
    """`results` with the `dead_layers` column (see COLUMN)."""
    with warnings.catch_warnings():  # rounds without checkpoint metrics are counted instead
        warnings.simplefilter("ignore")
        layers = load_layer_sparsity(results)
    checked = layers.groupby(["experiment", "trial_id", "round"]).size().index
    dead = layers[pd.to_numeric(layers["remaining"], errors="coerce") == 0]
    names = dead.groupby(["experiment", "trial_id", "round"])["param"].agg(";".join)
    keys = list(zip(results["experiment"], results["trial_id"], results["round"], strict=True))
    checked_keys = set(checked)
    marked = results.copy()
    marked[COLUMN] = [names.get(key, "") if key in checked_keys else None for key in keys]
    return marked


def collapsed_rounds(results: pd.DataFrame) -> pd.DataFrame:
    """The finished trials' rounds with a dead layer: method label, seed, round, sparsity,
    trial directory and the layers."""
    rows = results[(results["trial_status"] == "finished")
                   & results[COLUMN].fillna("").astype(bool)]
    columns = ["experiment", "label", "method", "seed", "round", "sparsity", "trial_dir", COLUMN]
    return rows[[c for c in columns if c in rows.columns]].reset_index(drop=True)


def checked_counts(results: pd.DataFrame) -> tuple[int, int]:
    """(rounds checked, rounds) of the finished trials."""
    finished = results[results["trial_status"] == "finished"]
    return int(finished[COLUMN].notna().sum()), len(finished)
