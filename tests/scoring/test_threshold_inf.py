"""Blocks whose maximum is +inf (a score that overflowed float32: not recommendable).

``_threshold`` counts only *finite* block maxima: a +inf maximum neither counts towards the ``p`` blocks it
needs nor stretches the histogram's range (before, ``hi`` became +inf, the bucket width inf, every finite
maximum fell into bucket 0, ``t`` degenerated to the smallest maximum -- the whole row gathered -- and each
+inf maximum was counted at ``int((inf - lo) * 0) = int(NaN)``, a write just past the histogram). The
selection's results were right either way (every pool is an exact prefix of the order and a short pool is
widened), so only the direct tests of ``_threshold`` below tell the two apart; the kernel tests pin the
results on rows built so that +inf block maxima decide which path a row takes.
"""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor

import numpy as np
import pytest
import scipy.sparse as sp

from skyrec.scoring.topk import _threshold, reference_topk, select_topk, topk_threaded

_INF = np.float32(np.inf)


def _threshold_of(bmax: np.ndarray, p: int) -> tuple[float, np.ndarray]:
    """``_threshold`` over ``bmax`` with a 256-bucket histogram that is a view into a larger buffer, so a
    write past the histogram shows up in the returned tail (initially all 7)."""
    buf = np.full(256 + 16, 7, dtype=np.int32)
    t = _threshold(np.ascontiguousarray(bmax, dtype=np.float32), len(bmax), p, buf[:256])
    return t, buf[256:]


def _finite_maxima(rng: np.random.Generator) -> np.ndarray:
    return rng.uniform(-3.0, 3.0, size=200).astype(np.float32)


def test_inf_block_maxima_do_not_move_the_threshold() -> None:
    finite = _finite_maxima(np.random.default_rng(0))
    want, _ = _threshold_of(finite, 10)
    assert np.isfinite(want) and 10 <= int((finite >= want).sum()) < len(finite)
    with_inf = finite.copy()
    with_inf[::7] = _INF  # 29 of the blocks hold an overflowed score as their maximum
    with_inf[3::11] = -_INF  # and a few hold nothing recommendable (excluded or NaN only)
    kept = with_inf[np.isfinite(with_inf)]
    t, _ = _threshold_of(with_inf, 10)
    assert t == _threshold_of(kept, 10)[0], "a +inf block maximum moved the threshold"
    reached = int((kept >= t).sum())
    assert 10 <= reached < len(kept) // 2, f"threshold {t} reached by {reached} of {len(kept)} finite maxima"


@pytest.mark.parametrize("n_finite", [0, 1, 9])
def test_threshold_is_minus_inf_when_fewer_than_p_block_maxima_are_finite(n_finite: int) -> None:
    bmax = np.full(50, _INF)  # far more than p blocks, but their maxima are +inf
    bmax[:n_finite] = np.linspace(-1.0, 1.0, n_finite, dtype=np.float32) if n_finite > 1 else 0.5
    bmax[45:] = -_INF
    t, _ = _threshold_of(bmax, 10)
    assert t == -np.inf, f"{n_finite} finite block maxima for p=10 gave threshold {t} (the row is taken whole)"


def test_threshold_never_writes_past_its_histogram() -> None:
    bmax = _finite_maxima(np.random.default_rng(1))
    bmax[::5] = _INF
    _, tail = _threshold_of(bmax, 10)
    assert (tail == 7).all(), f"memory after the histogram was written: {tail.tolist()}"


# --- the kernel: rows whose +inf scores make +inf block maxima (any block size from 8 up) --------------------

C = 4096  # a multiple of 64: every block size the kernel picks (8..64) tiles the row


def _row(rng: np.random.Generator, shape: str) -> np.ndarray:
    row = rng.standard_normal(C).astype(np.float32)
    row[rng.random(C) < 0.05] = np.nan
    row[rng.random(C) < 0.05] = -_INF
    if shape == "every block led by +inf":
        row[::8] = _INF
    elif shape == "the best finite scores in +inf blocks":
        half = C // 2
        row[:half:8] = _INF
        best = rng.choice(np.setdiff1d(np.arange(half), np.arange(0, half, 8)), 25, replace=False)
        row[best] = rng.uniform(5.0, 6.0, size=25).astype(np.float32)
    elif shape == "finite scores in fewer blocks than the pool":
        row[16:] = np.where(rng.random(C - 16) < 0.5, np.nan, -_INF).astype(np.float32)
        row[16::8] = _INF
    elif shape == "fewer finite scores than k":
        row[:] = np.where(rng.random(C) < 0.5, np.nan, -_INF).astype(np.float32)
        row[::8] = _INF
        row[rng.choice(np.arange(1, C, 8), 6, replace=False)] = rng.standard_normal(6).astype(np.float32)
    else:
        raise AssertionError(shape)
    return row


@pytest.mark.parametrize("shape", ["every block led by +inf", "the best finite scores in +inf blocks",
                                   "finite scores in fewer blocks than the pool", "fewer finite scores than k"])
@pytest.mark.parametrize("cap", [None, 2])
def test_the_kernel_serves_only_finite_scores_in_order(shape: str, cap: int | None) -> None:
    rng = np.random.default_rng(len(shape) + (cap or 0))
    k = 10
    v = _row(rng, shape)
    U = np.array([[1.0], [2.0], [0.5]], np.float32)  # powers of two: every score is exact in float32 and float64
    V = v[:, None]
    brands = rng.integers(-1, 5, size=C).astype(np.int32) if cap else None
    finite = np.flatnonzero(np.isfinite(v))
    top = finite[np.argmax(v[finite])]
    exclude = sp.csr_matrix((np.ones(3), ([0, 1, 2], [top, 0, 8])), shape=(3, C))  # a best item; two +inf ones
    want = reference_topk(U, V, k, exclude=exclude, brands=brands, max_per_brand=cap)
    with ThreadPoolExecutor(2) as pool:
        got = topk_threaded(U, np.ascontiguousarray(V.T), k, pool=pool, threads=2, exclude=exclude,
                            brands=brands, max_per_brand=cap, sub_batch=1)
    scores = U @ V.T
    scores[exclude.nonzero()] = -np.inf
    dense = select_topk(scores, k, brands=brands, max_per_brand=cap)
    for res in (got, dense):
        assert res.counts.tolist() == [len(w) for w in want]
        for i, w in enumerate(want):
            n = len(w)
            assert res.items[i, :n].tolist() == [j for j, _ in w], f"user {i}: {shape}"
            assert res.scores[i, :n].tolist() == [s for _, s in w]
            assert (res.items[i, n:] == -1).all() and np.isnan(res.scores[i, n:]).all()
    if shape == "fewer finite scores than k":
        assert got.counts.tolist() == [5, 6, 6]  # user 0 excluded one of the six
    if shape == "the best finite scores in +inf blocks" and cap is None:
        assert (v[got.items[1]] >= 5.0).all()  # user 1 excluded no finite item: all ten from the +inf blocks
