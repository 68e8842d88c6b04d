"""The kernel's rule for scores that are not finite: NaN and +inf are not recommendable (as if excluded), on
every path (small rows, the block-pruned pool of wide rows, the brand cap, a sparse item side), and the
evaluation's ``top_k`` applies the same rule, so the lists it measures are the lists precompute serves."""

from __future__ import annotations

import warnings

import numpy as np
import pytest
import scipy.sparse as sp

from skyrec.evaluation.metrics import top_k
from skyrec.scoring.topk import reference_topk, select_topk, topk_batch


def _with_nonfinite(rng: np.random.Generator, b: int, c: int, share: float) -> np.ndarray:
    scores = rng.standard_normal((b, c)).astype(np.float32)
    for value in (np.nan, np.inf, -np.inf):
        scores[rng.random((b, c)) < share] = value
    return scores


def _excluded(scores: np.ndarray) -> np.ndarray:
    return np.where(np.isfinite(scores), scores, -np.inf).astype(np.float32)


@pytest.mark.parametrize("c, share", [(7, 0.3), (300, 0.05), (20_000, 0.001), (20_000, 0.3)])
@pytest.mark.parametrize("cap", [None, 2])
def test_nan_and_inf_scores_are_never_selected(c: int, share: float, cap: int | None) -> None:
    rng = np.random.default_rng(c + int(share * 1000) + (cap or 0))
    scores = _with_nonfinite(rng, 6, c, share)
    scores[0, rng.choice(c, min(c, 40), replace=False)] = np.inf  # a row led by +inf entries
    brands = rng.integers(-1, 5, size=c).astype(np.int32) if cap else None
    got = select_topk(scores, 10, brands=brands, max_per_brand=cap)
    want = select_topk(_excluded(scores), 10, brands=brands, max_per_brand=cap)
    assert (got.items == want.items).all() and (got.counts == want.counts).all()
    taken = np.arange(10)[None, :] < got.counts[:, None]
    assert np.isfinite(got.scores[taken]).all()


def test_a_row_of_inf_and_nan_gives_an_empty_list() -> None:
    row = np.full((1, 3000), np.inf, np.float32)
    row[0, ::2] = np.nan
    res = select_topk(row, 5)
    assert res.counts.tolist() == [0] and (res.items == -1).all()


def test_finite_factors_whose_product_overflows_rank_nothing_and_top_k_agrees() -> None:
    """+inf from a float32 overflow: not served (before, it was served first, with a score the JSON encoding
    wrapped to a negative number and the packed one refused as "do not fit 5 decimals")."""
    rng = np.random.default_rng(3)
    U = np.abs(rng.standard_normal((5, 4))).astype(np.float32)
    U[:, 0] = 1e20
    V = rng.standard_normal((2000, 4)).astype(np.float32)
    V[:, 0] = 0.0
    V[rng.choice(2000, 30, replace=False), 0] = 1e20  # these items score +inf for every user
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        S = U @ V.T
        res = topk_batch(U, np.ascontiguousarray(V.T), 10)
    assert np.isinf(S).any(axis=1).all()
    rec, _ = top_k(S.copy(), 10)
    assert (res.items == rec).all() and not np.isin(res.items, np.flatnonzero(V[:, 0])).any()


@pytest.mark.parametrize("c", [9, 300, 20_000])
def test_evaluation_top_k_agrees_with_the_kernel_on_non_finite_scores(c: int) -> None:
    rng = np.random.default_rng(c)
    scores = _with_nonfinite(rng, 8, c, 0.2)
    scores[1, :] = np.inf
    scores[2, : c // 2] = np.nan
    kernel = select_topk(scores, 12)
    rec, vals = top_k(scores.copy(), 12)
    assert (kernel.items == rec).all()
    assert np.isfinite(vals[rec >= 0]).all() and (vals[rec < 0] == -np.inf).all()


def test_sparse_item_side_never_selects_inf() -> None:
    U = sp.random(60, 200, density=0.05, format="csr", dtype=np.float32, random_state=1)
    V = sp.random(3000, 200, density=0.03, format="csr", dtype=np.float32, random_state=2)
    V.data[::11] = np.inf
    V.data[::17] = np.nan
    V_t = sp.csr_matrix(V.T)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        dense = (U @ V_t).toarray().astype(np.float32)
        got = topk_batch(U, V_t, 15, brands=np.arange(3000, dtype=np.int32) % 40, max_per_brand=2)
    assert np.isposinf(dense).any()
    want = select_topk(_excluded(dense), 15, brands=np.arange(3000, dtype=np.int32) % 40, max_per_brand=2)
    assert (got.items == want.items).all() and (got.counts == want.counts).all()


def test_the_specification_skips_non_finite_scores() -> None:
    U = np.ones((1, 1), np.float32)
    V = np.array([[1.0], [np.nan], [3.0], [np.inf], [2.0]], np.float32)
    assert [j for j, _ in reference_topk(U, V, 4)[0]] == [2, 4, 0]
    res = topk_batch(U, np.ascontiguousarray(V.T), 4)
    assert res.items[0].tolist() == [2, 4, 0, -1]
