"""Confidence intervals over seeds for accuracies (fractions in [0, 1]).

Three intervals, chosen by name (:data:`INTERVALS`):

- ``t``: Student-t on the raw scale, ``mean +- t_{(1+level)/2, n-1} * s / sqrt(n)``. The
  standard interval for a mean; it assumes roughly normal seed-to-seed variation, so with few
  seeds and a large spread its ends can fall outside [0, 1] (e.g. n = 3 seeds at 0.10, 0.60,
  0.72 give [-0.34, 1.29]). Those ends are reported as computed, never clipped silently.
- ``logit-t``: the Student-t interval of the mean *logit* of the seeds' accuracies, mapped back
  with the logistic function. Always inside (0, 1) and asymmetric near the bounds. It is an
  interval for ``expit(mean(logit(acc)))`` (the accuracy of the "typical" seed on the logit
  scale), which equals the arithmetic mean only when the seeds agree; undefined (NaN) when a
  seed is at exactly 0 or 1.
- ``bootstrap``: seeded percentile bootstrap of the mean; inside [min, max] of the seeds, but
  known to be too narrow with few seeds.
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np
from scipy import special as scipy_special
from scipy import stats as scipy_stats

INTERVALS = ("t", "logit-t", "bootstrap")


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


def logit_t_interval(values: Sequence[float], level: float = 0.95) -> tuple[float, float]:
    """Student-t interval on the logit scale, mapped back: inside (0, 1) for fractions.

    ``expit(mean(z) +- t_{(1+level)/2, n-1} * sd(z) / sqrt(n))`` with ``z = logit(values)``.
    (NaN, NaN) with one value, or when a value is not strictly between 0 and 1 (its logit is
    infinite: no finite interval describes that spread).
    """
    arr = np.asarray(values, dtype=float)
    if arr.size < 2 or not ((arr > 0.0) & (arr < 1.0)).all():
        _check_level(level)
        return math.nan, math.nan
    low, high = t_interval(scipy_special.logit(arr), level)
    return float(scipy_special.expit(low)), float(scipy_special.expit(high))


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


def paired_t_test(differences: Sequence[float]) -> tuple[float, float]:
    """(t, two-sided p) of the paired t-test on per-seed differences A - B: the one-sample
    t-test of mean 0, ``t = mean / (s / sqrt(n))`` with n - 1 degrees of freedom. NaN with
    fewer than two differences, or when they do not vary (no spread to test against; a spread
    below 1e-12 is the float rounding of equal differences, such as 0.77 - 0.80 and
    0.79 - 0.82, where scipy would report p ~ 1e-30)."""
    arr = np.asarray(differences, dtype=float)
    n = arr.size
    if n < 2:
        return math.nan, math.nan
    mean, std = mean_std(arr)
    if std <= 1e-12 * max(1.0, abs(mean)):
        return math.nan, math.nan
    t = mean / (std / math.sqrt(n))
    return t, float(2.0 * scipy_stats.t.sf(abs(t), n - 1))


def holm(p_values: Sequence[float]) -> np.ndarray:
    """Holm's step-down adjustment of a family of p-values (NaN ones are left out of the
    family and stay NaN): the i-th smallest of m is multiplied by m - i + 1 (i from 1), then
    each is raised to the largest adjusted value before it and capped at 1."""
    arr = np.asarray(p_values, dtype=float)
    adjusted = np.full(arr.shape, math.nan)
    finite = np.flatnonzero(~np.isnan(arr))
    order = finite[np.argsort(arr[finite], kind="stable")]
    m = order.size
    running = 0.0
    for i, index in enumerate(order):
        running = max(running, min(1.0, (m - i) * arr[index]))
        adjusted[index] = running
    return adjusted


def _check_level(level: float) -> None:
    if not 0.0 < level < 1.0:
        raise ValueError(f"confidence level must be in (0, 1), got {level}")
