"""Confidence intervals over seeds: Student-t (default) and percentile bootstrap."""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np
from scipy import stats as scipy_stats


def mean_std(values: Sequence[float]) -> tuple[float, float]:
    """Mean and sample standard deviation (ddof=1; NaN for a single value)."""
    arr = np.asarray(values, dtype=float)
    if arr.size == 0:
        return math.nan, math.nan
    mean = float(arr.mean())
    std = float(arr.std(ddof=1)) if arr.size > 1 else math.nan
    return mean, std


def t_interval(values: Sequence[float], level: float = 0.95) -> tuple[float, float]:
    """Student-t interval for the mean: mean +- t_{(1+level)/2, n-1} * s / sqrt(n).

    With one value there is no spread estimate: returns (NaN, NaN).
    """
    _check_level(level)
    arr = np.asarray(values, dtype=float)
    n = arr.size
    if n < 2:
        return math.nan, math.nan
    mean, std = mean_std(arr)
    half = float(scipy_stats.t.ppf((1.0 + level) / 2.0, n - 1)) * std / math.sqrt(n)
    return mean - half, mean + half


def bootstrap_interval(
    values: Sequence[float],
    level: float = 0.95,
    n_resamples: int = 10_000,
    seed: int = 0,
) -> tuple[float, float]:
    """Percentile bootstrap interval of the mean (resampling seeds with replacement).

    Deterministic for a given ``seed``. With one value: (NaN, NaN). With few seeds the
    percentile bootstrap is known to be too narrow; the t interval is the default for that reason.
    """
    _check_level(level)
    arr = np.asarray(values, dtype=float)
    n = arr.size
    if n < 2:
        return math.nan, math.nan
    rng = np.random.default_rng(seed)
    means = arr[rng.integers(0, n, size=(n_resamples, n))].mean(axis=1)
    alpha = (1.0 - level) / 2.0
    low, high = np.quantile(means, [alpha, 1.0 - alpha])
    return float(low), float(high)


def _check_level(level: float) -> None:
    if not 0.0 < level < 1.0:
        raise ValueError(f"confidence level must be in (0, 1), got {level}")
