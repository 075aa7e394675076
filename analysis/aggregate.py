"""Aggregate the tidy result table over seeds, against a dense reference.

Rules (tests pin them):

- Only rows of ``finished`` trials enter (see :mod:`analysis.load`); errored, unfinished and
  diverged trials are excluded as whole trials and listed by ``excluded_trials``.
- The unit of replication is a seed: rows sharing (experiment, seed) inside a group are first
  averaged, so a seed is never counted twice; ``n`` is the number of seeds.
- Levels: each round row says how its method's levels are defined (``level_by``, set by the
  method): by round index for a method whose rounds are its sparsity levels (iterative IMP;
  also split by the trial's final target sparsity, should several be swept), by another row
  field it names (e.g. ``target_channel_fraction``), otherwise by ``target_sparsity``. Every
  other swept key except the seed splits groups too.
- Round 0 of a method other than dense is its dense start; it never appears on the method's line.
- Dense reference, per experiment: the trials with ``method == "dense"``; if the experiment has
  none, the round-0 rows of its other methods (``dense_source`` says which). An experiment with
  neither is compared with the dense reference pooled over all experiments.
- Cost (where rows measured it): ``flops``, ``flops_effective`` and each ``latency_ms_b<B>`` are
  means over seeds like the positions (absolute milliseconds, as measured). ``speedup_b<B>`` is
  the geometric mean over seeds of the rows' own paired speedups (each round timed against the
  trial's dense reference in the same process, `pruning.paired_latency`; a seed's rows are
  first combined the same way): a ratio is never formed from times taken by different trials,
  which depend on what else the machine was doing. ``disturbed_b<B>`` counts the seeds whose
  measurement stayed disturbed after its repeat (``disturbed_reason_b<B>`` says why, for one).
  Rows without paired fields (an experiment older than them) give no speedup.
- Interval (``interval=``, see :mod:`analysis.stats`; NaN when n = 1):

  - ``"t"`` (default): Student-t over seeds, ``mean +- t_{(1+ci)/2, n-1} * s / sqrt(n)`` (std
    with ddof=1). The usual interval for a mean, kept as the default because it is the one
    papers report and its half-width reads directly as "± points". It assumes roughly normal
    seed-to-seed variation; with few seeds and a large spread its ends can pass 0 or 1 (n = 3
    seeds of a collapsing method gave [-33.6%, 128.6%]). Such ends are kept as computed and
    flagged (``ci_outside_range``), so tables can mark them and figures say they are cut.
  - ``"logit-t"``: the same t interval on the logit scale, mapped back with the logistic
    function: always inside (0, 1), asymmetric near the bounds; an interval for
    ``expit(mean logit)``, which differs from the arithmetic mean when seeds disagree; NaN when
    a seed is at exactly 0 or 1. Use it when intervals near 0% or 100% matter.
  - ``"bootstrap"``: seeded percentile bootstrap of the mean; inside [min, max] of the seeds,
    too narrow with few seeds.
- Matching sparsity of a line: the highest mean measured sparsity among its levels whose mean
  accuracy satisfies ``mean >= dense_mean - tolerance`` (tolerance in percentage points). Levels
  need not be monotone; a level above a failing one still counts. NaN when no level qualifies
  (a 1e-12 slack absorbs float rounding only).
- The round to export for a group (``export_*``): the row whose metric is closest to the
  group's mean (the lowest seed on a tie), named as ``prunetune export`` takes it;
  ``export_all`` lists every seed's ``trial@round``.
"""

from __future__ import annotations

import math
import re
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from analysis.load import ROW_FIELDS, readable_name
from analysis.stats import (
    INTERVALS,
    bootstrap_interval,
    logit_t_interval,
    mean_std,
    t_interval,
)

METRICS = ("test_acc", "val_acc")
# Numeric columns averaged (per seed first) to place a group on the plot.
_POSITION_COLUMNS = [
    "target_sparsity",
    "sparsity",
    "params_total",
    "params_prunable",
    "params_total_dense",
    "params_prunable_dense",
    "target_channel_fraction",
    "channel_fraction_removed",
    "flops",
    "flops_effective",
]
# Measured latencies (ms), one column per batch size B: latency_ms_b<B> (and, for N:M networks on
# CUDA, latency_nm_ms_b<B> / latency_nm_dense_ms_b<B>).
_LATENCY = re.compile(r"^latency(_nm|_nm_dense)?_ms_b(\d+)$")
# The paired speedup a round row carries per batch size (trainables/measure.py).
_SPEEDUP = re.compile(r"^speedup_b(\d+)$")
#: Which round to export for a group (see `_export_choice`).
EXPORT_COLUMNS = ["export_trial", "export_round", "export_dir", "export_value", "export_all"]
LINE_KEYS = ["experiment", "method", "label", "scorer", "schedule", "final_target_sparsity"]


def extra_group_keys(results: pd.DataFrame) -> list[str]:
    """Swept keys other than the seed that are not already a row field (method, scorer...)."""
    keys = results.attrs.get("swept_keys", [])
    return [k for k in keys if k in results.columns and k.split(".")[-1] not in ROW_FIELDS]


def position_columns(frame: pd.DataFrame) -> list[str]:
    """The numeric columns averaged to place a group (positions, cost), present in ``frame``."""
    latency = sorted((c for c in frame.columns if _LATENCY.match(str(c))),
                     key=lambda c: (_LATENCY.match(c).group(1) or "", int(_LATENCY.match(c)[2])))
    return [c for c in _POSITION_COLUMNS if c in frame.columns] + latency


def latency_devices(results: pd.DataFrame) -> str | None:
    """The devices the rows of ``results`` measured latency on, comma-separated; None if none."""
    if "latency_device" not in results:
        return None
    return ", ".join(map(str, results["latency_device"].dropna().unique())) or None


def latency_batches(frame: pd.DataFrame) -> list[int]:
    """Batch sizes B of the ``latency_ms_b<B>`` columns in ``frame``, ascending."""
    return sorted(int(m[2]) for c in frame.columns if (m := _LATENCY.match(str(c))) and not m[1])


def _level_frame(results: pd.DataFrame) -> pd.DataFrame:
    """Finished rows with ``level_by``/``level`` columns; dense-start rows (round 0 of a method
    other than dense) flagged as ``imp_round0``."""
    rows = results[results["trial_status"] == "finished"].copy()
    for column in position_columns(rows):  # None (not measured, n/a) becomes NaN
        rows[column] = pd.to_numeric(rows[column], errors="coerce")
    by_round = rows["level_by"] == "round"
    final_target = rows.groupby(["experiment", "trial_id"])["target_sparsity"].transform("max")
    rows["final_target_sparsity"] = np.where(by_round, final_target, np.nan)
    # A level named by another numeric row field (a channel fraction), else target_sparsity.
    named = rows["level_by"].where(
        rows["level_by"].map(lambda v: isinstance(v, str) and v in rows.columns
                             and v not in ("round", "dense")), "target_sparsity")
    rows["level_by"] = np.where(rows["method"] == "dense", "dense",
                                np.where(by_round, "round", named))
    level = pd.Series(np.nan, index=rows.index)
    for column in named.unique():
        chosen = named == column
        level[chosen] = pd.to_numeric(rows.loc[chosen, column], errors="coerce").round(9)
    rows["level"] = np.where(by_round, rows["round"], level)
    rows["level"] = np.where(rows["method"] == "dense", 0.0, rows["level"])
    rows["imp_round0"] = (rows["method"] != "dense") & (rows["round"] == 0)
    return rows


def _interval(
    values: np.ndarray, ci: float, interval: str, n_resamples: int, seed: int
) -> tuple[float, float, str]:
    if interval == "bootstrap":
        low, high = bootstrap_interval(values, ci, n_resamples=n_resamples, seed=seed)
        return low, high, f"bootstrap percentile {ci:g} ({n_resamples} resamples, seed {seed})"
    if interval == "logit-t":
        low, high = logit_t_interval(values, ci)
        if values.size > 1 and math.isnan(low):
            return low, high, f"logit-t {ci:g}: undefined (a seed at exactly 0% or 100%)"
        return low, high, f"logit-t {ci:g}"
    low, high = t_interval(values, ci)
    return low, high, f"student-t {ci:g}"


def _stats(
    rows: pd.DataFrame, metric: str, ci: float, interval: str, n_resamples: int, seed: int
) -> dict[str, Any]:
    per_seed = rows.groupby(["experiment", "seed"], dropna=False)
    values = per_seed[metric].mean().to_numpy(dtype=float)
    mean, std = mean_std(values)
    low, high, method = _interval(values, ci, interval, n_resamples, seed)
    out: dict[str, Any] = {
        "n": int(values.size),
        "seeds": ",".join(str(s) for _, s in per_seed[metric].mean().index),
        "mean": mean,
        "std": std,
        "ci_low": low,
        "ci_high": high,
        "ci_method": method if values.size > 1 else "none (n=1)",
        # Accuracies cannot leave [0, 1]; a t interval can (see the module docstring).
        "ci_outside_range": bool(low < 0.0 or high > 1.0),
        "trials": int(rows["trial_id"].nunique()),
        **_export_choice(rows, metric, mean),
        # Seeds whose round left a layer with no weights (analysis/collapse.py; NaN: unchecked).
        "collapsed_seeds": int(rows.loc[rows["dead_layers"].fillna("").astype(bool), "seed"]
                               .nunique()) if "dead_layers" in rows else math.nan,
    }
    positions = per_seed[position_columns(rows)].mean()
    for column in positions.columns:
        out[column] = float(positions[column].mean())
    out.update(_paired_speedups(rows))
    return out


def _geometric_mean(values: pd.Series) -> float:
    positive = values.dropna().to_numpy(dtype=float)
    positive = positive[positive > 0]
    return float(np.exp(np.log(positive).mean())) if len(positive) else math.nan


def _paired_speedups(rows: pd.DataFrame) -> dict[str, Any]:
    """Per batch size: the geometric mean over seeds of the rows' paired speedups, and how many
    seeds' measurements stayed disturbed (with one reason)."""
    out: dict[str, Any] = {}
    for column in rows.columns:
        match = _SPEEDUP.match(str(column))
        if match is None:
            continue
        batch = match[1]
        per_seed = rows.groupby(["experiment", "seed"], dropna=False)[column].agg(_geometric_mean)
        out[column] = _geometric_mean(per_seed)
        flag = f"latency_disturbed_b{batch}"
        reasons = rows[flag].dropna() if flag in rows else pd.Series(dtype=object)
        reasons = reasons[reasons.astype(str) != ""]
        out[f"disturbed_b{batch}"] = int(rows.loc[reasons.index, "seed"].nunique())
        out[f"disturbed_reason_b{batch}"] = str(reasons.iloc[0]) if len(reasons) else None
    return out


def _export_choice(rows: pd.DataFrame, metric: str, mean: float) -> dict[str, Any]:
    """The round a user would export for this group: the seed whose value is closest to the
    group's mean (the lowest seed on a tie), and every seed's, as `trial@round` by seed."""
    # Gaps equal to 1e-12 are a tie (0.74 and 0.76 around 0.75 differ in the last bits).
    ordered = rows.assign(_gap=(rows[metric] - mean).abs().round(12)).sort_values(
        ["_gap", "seed", "trial_dir"], kind="stable", na_position="last")
    chosen = ordered.iloc[0]
    by_seed = rows.sort_values(["seed", "trial_dir"], kind="stable")
    return {
        "export_trial": readable_name(chosen["trial_dir"]),
        "export_round": int(chosen["round"]),
        "export_dir": str(Path(chosen["trial_dir"]).parent),
        "export_value": float(chosen[metric]),
        "export_all": ";".join(f"{readable_name(d)}@{int(r)}"
                               for d, r in zip(by_seed["trial_dir"], by_seed["round"],
                                               strict=True)),
    }


def dense_rows(results: pd.DataFrame) -> tuple[pd.DataFrame, dict[str, str]]:
    """The rows forming each experiment's dense reference, and a description per experiment."""
    rows = _level_frame(results)
    parts = []
    sources: dict[str, str] = {}
    for experiment, exp_rows in rows.groupby("experiment", sort=False):
        dense = exp_rows[exp_rows["method"] == "dense"]
        if not dense.empty:
            sources[str(experiment)] = f"{dense['trial_id'].nunique()} dense trial(s)"
        else:
            dense = exp_rows[exp_rows["imp_round0"]]
            if dense.empty:
                continue
            sources[str(experiment)] = (
                f"round 0 of {dense['trial_id'].nunique()} trial(s) starting from dense "
                "(no dense trials)"
            )
        parts.append(dense.assign(dense_source=sources[str(experiment)]))
    if not parts:
        return rows.iloc[0:0].assign(dense_source=pd.Series(dtype=object)), sources
    return pd.concat(parts, ignore_index=True), sources


def aggregate(
    results: pd.DataFrame,
    metric: str = "test_acc",
    ci: float = 0.95,
    interval: str = "t",
    n_resamples: int = 10_000,
    seed: int = 0,
) -> pd.DataFrame:
    """Mean, std and interval of ``metric`` over seeds, per method line and sparsity level.

    One row per group, dense reference rows first (``method == "dense"``, ``level_by ==
    "dense"``), then every method line sorted by level. Accuracy columns (``mean``, ``std``,
    ``ci_low``, ``ci_high``, ``dense_mean``, ``delta_vs_dense``) are in the metric's own units
    (fractions), unrounded. ``delta_vs_dense = mean - dense_mean`` of the matching dense
    reference. ``interval`` is one of ``"t"``, ``"logit-t"``, ``"bootstrap"``; ``ci_method``
    names it and ``ci_outside_range`` flags intervals reaching past [0, 1] (see the module
    docstring for every rule).
    """
    if metric not in METRICS:
        raise ValueError(f"metric must be one of {METRICS}, got {metric!r}")
    if interval not in INTERVALS:
        raise ValueError(f"interval must be one of {INTERVALS}, got {interval!r}")
    extras = extra_group_keys(results)
    rows = _level_frame(results)
    args = (metric, ci, interval, n_resamples, seed)

    dense, sources = dense_rows(results)
    dense_groups = []
    for experiment, exp_dense in dense.groupby("experiment", sort=False):
        # Split the dense reference only by swept keys that vary among the dense rows themselves.
        keys = [k for k in extras if exp_dense[k].dropna().nunique() > 1]
        grouped = exp_dense.groupby(keys, dropna=False, sort=True) if keys else [((), exp_dense)]
        for key, group in grouped:
            key = key if isinstance(key, tuple) else (key,)
            record = {"experiment": experiment, "method": "dense", "level_by": "dense",
                      "dense_source": sources[str(experiment)], "dense_keys": ",".join(keys)}
            record.update(dict(zip(keys, key, strict=True)))
            record.update(_stats(group, *args))
            dense_groups.append(record)
    pooled = _stats(dense, *args) if not dense.empty else None

    method_rows = rows[(rows["method"] != "dense") & ~rows["imp_round0"]]
    group_keys = LINE_KEYS + extras + ["level_by", "level"]
    records = []
    for key, group in method_rows.groupby(group_keys, dropna=False, sort=True):
        record = dict(zip(group_keys, key, strict=True))
        if record["level_by"] == "round":
            record["round"] = int(record["level"])
        record.update(_stats(group, *args))
        record.update(_match_dense(record, dense_groups, pooled, sources))
        records.append(record)

    for record in dense_groups:
        record.update({"dense_mean": record["mean"], "delta_vs_dense": 0.0,
                       "dense_n": record["n"], **_dense_costs(record)})
    frame = pd.DataFrame.from_records(dense_groups + records)
    if frame.empty:
        return frame
    frame["metric"] = metric
    first = [
        "experiment", "method", "label", "scorer", "schedule", "final_target_sparsity", *extras,
        "level_by", "round", "target_sparsity", "sparsity", "params_total", "params_prunable",
        "params_total_dense", "params_prunable_dense", "metric", "n", "seeds", "mean", "std",
        "ci_low", "ci_high", "ci_method", "ci_outside_range", "dense_mean", "dense_n",
        "delta_vs_dense", "dense_source", "trials", *EXPORT_COLUMNS, "collapsed_seeds",
    ]
    first[first.index("params_prunable_dense") + 1:first.index("params_prunable_dense") + 1] = [
        c for c in position_columns(rows) if c not in first]
    first += [c for c in frame.columns
              if c.startswith(("dense_flops", "dense_latency", "speedup", "disturbed"))]
    for column in first:
        if column not in frame.columns:
            frame[column] = np.nan
    frame = frame[first]
    frame.attrs["dense_sources"] = sources
    frame.attrs["interval"] = interval
    frame.attrs["ci"] = ci
    frame.attrs["extra_keys"] = extras
    return frame


def _match_dense(
    record: dict[str, Any],
    dense_groups: list[dict[str, Any]],
    pooled: dict[str, Any] | None,
    sources: dict[str, str],
) -> dict[str, Any]:
    candidates = [d for d in dense_groups if d["experiment"] == record["experiment"]]
    for dense in candidates:
        keys = [k for k in dense["dense_keys"].split(",") if k]
        if all(_same(dense.get(k), record.get(k)) for k in keys):
            return {"dense_mean": dense["mean"], "dense_n": dense["n"],
                    "delta_vs_dense": record["mean"] - dense["mean"],
                    "dense_source": dense["dense_source"], **_dense_costs(dense)}
    if pooled is None:
        return {"dense_mean": math.nan, "dense_n": 0, "delta_vs_dense": math.nan,
                "dense_source": "none (no dense trials and no IMP round 0)"}
    where = "; ".join(f"{e}: {s}" for e, s in sources.items())
    return {"dense_mean": pooled["mean"], "dense_n": pooled["n"],
            "delta_vs_dense": record["mean"] - pooled["mean"],
            "dense_source": f"pooled over experiments ({where})", **_dense_costs(pooled)}


def _dense_costs(dense: dict[str, Any]) -> dict[str, Any]:
    """The dense reference's mean cost (``dense_flops``, ``dense_latency_ms_b<B>``, ...)."""
    return {f"dense_{key}": value for key, value in dense.items()
            if key in ("flops", "flops_effective") or _LATENCY.match(str(key))}


def _same(a: Any, b: Any) -> bool:
    if is_missing(a) and is_missing(b):
        return True
    return a == b


def is_missing(value: Any) -> bool:
    """True for None, NaN and pandas' missing markers; False for any other value."""
    if value is None:
        return True
    try:
        return bool(pd.isna(value))
    except (TypeError, ValueError):
        return False


def line_keys(agg: pd.DataFrame) -> list[str]:
    """Columns identifying one line (method curve) in an aggregate table."""
    return LINE_KEYS + list(agg.attrs.get("extra_keys", []))


def matching_sparsity(agg: pd.DataFrame, tolerance: float = 1.0) -> pd.DataFrame:
    """Per method line: the highest sparsity whose mean stays within ``tolerance`` points of dense.

    A level qualifies iff ``mean >= dense_mean - tolerance / 100`` (accuracies are fractions,
    the tolerance is in percentage points). Returns one row per line with ``matching_sparsity``
    (mean measured sparsity of that level), ``matching_target_sparsity``, its mean and the
    dense mean; NaN columns and ``matched = False`` when no level qualifies.
    """
    keys = line_keys(agg)
    lines = agg[agg["level_by"] != "dense"]
    records = []
    for key, line in lines.groupby(keys, dropna=False, sort=False):
        record = dict(zip(keys, key, strict=True))
        # The slack absorbs float rounding (0.81 - 0.01 != 0.80 exactly), nothing more.
        ok = line[line["mean"] >= line["dense_mean"] - tolerance / 100.0 - 1e-12]
        record["tolerance_points"] = tolerance
        record["dense_mean"] = float(line["dense_mean"].iloc[0])
        record["levels"] = len(line)
        if ok.empty:
            record.update({"matched": False, "matching_sparsity": math.nan,
                           "matching_target_sparsity": math.nan, "matching_round": math.nan,
                           "mean_at_matching": math.nan, "n_at_matching": 0})
        else:
            best = ok.loc[ok["sparsity"].idxmax()]
            record.update({"matched": True, "matching_sparsity": float(best["sparsity"]),
                           "matching_target_sparsity": float(best["target_sparsity"]),
                           "matching_round": best["round"],
                           "mean_at_matching": float(best["mean"]),
                           "n_at_matching": int(best["n"])})
        records.append(record)
    return pd.DataFrame.from_records(records)
