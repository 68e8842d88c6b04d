"""Uncertainty of offline figures: the user bootstrap, and the paired comparison of two models.

Every figure of an evaluation is a mean over users. Its confidence interval is the percentile interval of
that mean over ``resamples`` bootstrap resamples of the *users* (drawn with replacement, seeded, so a
re-run gives the same interval). All series of one evaluation are resampled with the same draws, so two
models' intervals, and their paired difference, come from the same resampled populations.

A series may be undefined for some users (a variant's figure exists only for users with a relevant item
among its candidates): each resample's mean is then the ratio ``sum(count x value) / sum(count)`` over the
users where it is defined (the ratio estimator), so one set of draws serves every series.

Paired comparison of model A with model B on the same users: per user ``d = a - f x b`` (``f = 1`` for
"A beats B", ``f = 1 - tolerance`` for "A is not worse than B by more than the tolerance"); the mean of
``d`` and its bootstrap interval decide. ``p_value`` is the one-sided bootstrap share of resamples whose
mean difference is <= 0 (a small value: A is better beyond noise).
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import numpy as np


def _count_chunks(n: int, resamples: int, seed: int, chunk: int = 64) -> Iterator[np.ndarray]:
    """Bootstrap draws as count matrices float64 [c, n] (how often each user is drawn), ``resamples`` rows
    in all, in chunks (memory: chunk x n)."""
    rng = np.random.default_rng(seed)
    done = 0
    while done < resamples:
        c = min(chunk, resamples - done)
        idx = rng.integers(0, n, size=(c, n)) + (np.arange(c, dtype=np.int64) * n)[:, None]
        yield np.bincount(idx.ravel(), minlength=c * n).reshape(c, n).astype(np.float64)
        done += c


def bootstrap_means(values: np.ndarray, *, resamples: int, seed: int) -> np.ndarray:
    """Resampled means [resamples, S] of ``values`` [n, S] (NaN = undefined for that user)."""
    values = np.asarray(values, dtype=np.float64)
    if values.ndim == 1:
        values = values[:, None]
    n = values.shape[0]
    defined = np.isfinite(values)
    filled = np.where(defined, values, 0.0)
    out = []
    weights = defined.astype(np.float64)
    for counts in _count_chunks(n, resamples, seed):
        # one product per series: a matrix product's rounding depends on how many columns it holds, so a
        # series' interval would change in its last digits with the series evaluated beside it
        num = np.column_stack([counts @ filled[:, j] for j in range(filled.shape[1])])
        den = np.column_stack([counts @ weights[:, j] for j in range(weights.shape[1])])
        with np.errstate(invalid="ignore", divide="ignore"):
            out.append(np.where(den > 0, num / np.where(den > 0, den, 1.0), np.nan))
    return np.vstack(out) if out else np.zeros((0, values.shape[1]))


def _interval(draws: np.ndarray, confidence: float) -> tuple[np.ndarray, np.ndarray]:
    """Percentile interval per column (NaN for a column with no defined resample)."""
    alpha = (1.0 - confidence) / 2.0
    lo = np.full(draws.shape[1], np.nan)
    hi = np.full(draws.shape[1], np.nan)
    ok = np.isfinite(draws).any(axis=0) if draws.shape[0] else np.zeros(draws.shape[1], bool)
    if ok.any():
        lo[ok] = np.nanquantile(draws[:, ok], alpha, axis=0)
        hi[ok] = np.nanquantile(draws[:, ok], 1.0 - alpha, axis=0)
    return lo, hi


def _num(x: float) -> float | None:
    return float(x) if np.isfinite(x) else None


def holding(ci: list[float | None], point: float | None) -> list[float | None]:
    """``ci`` widened, if need be, to hold its point estimate. The resampled means are ratios of sums in
    another order than the point's mean, so where every user has the same value (a degenerate interval) the
    percentile ends can fall a rounding error beside it ([0.09999999999999987, 0.09999999999999995] around
    a precision of 0.1); beyond such rounding, a percentile interval of a mean holds it."""
    lo, hi = ci
    if point is None or lo is None or hi is None or not np.isfinite(point):
        return [lo, hi]
    return [min(lo, float(point)), max(hi, float(point))]


def confidence_intervals(series: dict[str, np.ndarray], *, resamples: int, seed: int,
                         confidence: float) -> dict[str, dict[str, Any]]:
    """Per named per-user series (all of one length n, NaN where undefined): mean, [low, high], users."""
    names = list(series)
    if not names:
        return {}
    values = np.column_stack([np.asarray(series[k], dtype=np.float64) for k in names])
    if values.shape[0] == 0:
        return {k: {"mean": None, "ci": [None, None], "users": 0} for k in names}
    draws = bootstrap_means(values, resamples=resamples, seed=seed)
    lo, hi = _interval(draws, confidence)
    defined = np.isfinite(values)
    out = {}
    for j, k in enumerate(names):
        n = int(defined[:, j].sum())
        mean = float(values[defined[:, j], j].mean()) if n else float("nan")
        out[k] = {"mean": _num(mean), "ci": holding([_num(lo[j]), _num(hi[j])], _num(mean)), "users": n}
    return out


def paired_comparison(a: np.ndarray, b: np.ndarray, *, resamples: int, seed: int, confidence: float,
                      factor: float = 1.0) -> dict[str, Any]:
    """Paired bootstrap of ``mean(a) - factor x mean(b)`` over the users where both are defined."""
    a = np.asarray(a, dtype=np.float64)
    b = np.asarray(b, dtype=np.float64)
    both = np.isfinite(a) & np.isfinite(b)
    a, b = a[both], b[both]
    n = int(both.sum())
    if n == 0:
        return {"users": 0, "mean_a": None, "mean_b": None, "difference": None, "ci": [None, None],
                "relative": None, "relative_ci": [None, None], "p_value": None, "factor": factor}
    draws = bootstrap_means(np.column_stack([a, b]), resamples=resamples, seed=seed)
    diff = draws[:, 0] - factor * draws[:, 1]
    with np.errstate(invalid="ignore", divide="ignore"):
        rel = np.where(draws[:, 1] > 0, draws[:, 0] / draws[:, 1] - 1.0, np.nan)
    (dlo,), (dhi,) = _interval(diff[:, None], confidence)
    (rlo,), (rhi,) = _interval(rel[:, None], confidence)
    mean_a, mean_b = float(a.mean()), float(b.mean())
    difference, relative = mean_a - factor * mean_b, (mean_a / mean_b - 1.0) if mean_b > 0 else None
    return {"users": n, "mean_a": mean_a, "mean_b": mean_b, "difference": difference,
            "ci": holding([_num(dlo), _num(dhi)], difference), "relative": relative,
            "relative_ci": holding([_num(rlo), _num(rhi)], relative), "p_value": float(np.mean(diff <= 0)),
            "factor": factor,
            "confidence": confidence, "resamples": int(resamples)}
