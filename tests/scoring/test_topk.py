"""The kernel equals the brute-force specification (float64, greedy brand walk, ties by position)."""

from __future__ import annotations

import numpy as np
import pytest
import scipy.sparse as sp

from skyrec.scoring.topk import NO_BRAND, reference_topk, select_topk, topk_batch


def _case(rng: np.random.Generator, *, integer: bool):
    b = int(rng.integers(1, 40))
    c = int(rng.choice([1, 3, 17, 64, 300, 2000]))
    d = int(rng.integers(1, 9))
    if integer:  # small integers: float32 sums are exact, so ties are frequent and must break by position
        U = rng.integers(-2, 3, size=(b, d)).astype(np.float32)
        V = rng.integers(-2, 3, size=(c, d)).astype(np.float32)
    else:
        U = rng.standard_normal((b, d)).astype(np.float32)
        V = rng.standard_normal((c, d)).astype(np.float32)
    density = float(rng.choice([0.0, 0.05, 0.5, 0.95]))
    exclude = sp.random(b, c, density=density, format="csr", random_state=int(rng.integers(1 << 30)))
    exclude.data[:] = 1
    n_brands = int(rng.integers(1, 12))
    brands = rng.integers(-1, n_brands, size=c).astype(np.int32)  # -1: no brand, never capped
    cap = None if rng.random() < 0.2 else int(rng.integers(1, 4))
    k = int(rng.choice([1, 2, 5, 10, 50, 100]))
    return U, V, k, exclude, brands, cap


def _as_lists(res) -> list[list[tuple[int, float]]]:
    return [[(int(i), float(s)) for i, s in zip(res.items[r, : res.counts[r]], res.scores[r, : res.counts[r]],
                                                 strict=True)] for r in range(len(res))]


@pytest.mark.parametrize("integer", [True, False])
def test_kernel_equals_brute_force(integer: bool) -> None:
    rng = np.random.default_rng(1234 + integer)
    for _ in range(150):
        U, V, k, exclude, brands, cap = _case(rng, integer=integer)
        got = _as_lists(topk_batch(U, np.ascontiguousarray(V.T), k, exclude=exclude, brands=brands,
                                   max_per_brand=cap, sub_batch=int(rng.integers(1, 16))))
        want = reference_topk(U, V, k, exclude=exclude, brands=brands, max_per_brand=cap)
        for g, w in zip(got, want, strict=True):
            assert [i for i, _ in g] == [i for i, _ in w]
            np.testing.assert_allclose([s for _, s in g], [s for _, s in w], rtol=1e-5, atol=1e-5)


def test_brand_cap_is_inside_the_selection() -> None:
    # 10 items of brand 0 score highest; with cap 2 the result must still hold K items when enough exist
    scores = np.array([[10, 9, 8, 7, 6, 5, 4, 3, 2, 1, 0.5, 0.4, 0.3, 0.2]], dtype=np.float32)
    brands = np.array([0] * 10 + [1, 2, 3, 4], dtype=np.int32)
    res = select_topk(scores.copy(), 5, brands=brands, max_per_brand=2)
    assert res.counts.tolist() == [5]
    assert res.items[0].tolist() == [0, 1, 10, 11, 12]


def test_ties_break_by_position_and_fewer_than_k_when_exhausted() -> None:
    scores = np.zeros((1, 8), dtype=np.float32)
    scores[0, [1, 5]] = -np.inf  # excluded
    res = select_topk(scores.copy(), 4)
    assert res.items[0].tolist() == [0, 2, 3, 4]
    brands = np.array([0, 0, 0, 0, 0, 0, 0, NO_BRAND], dtype=np.int32)
    res = select_topk(scores.copy(), 4, brands=brands, max_per_brand=1)
    assert res.counts.tolist() == [2] and res.items[0, :2].tolist() == [0, 7]
    assert np.isnan(res.scores[0, 2:]).all() and (res.items[0, 2:] == -1).all()


def test_tie_straddling_pool_boundary_on_wide_rows() -> None:
    # many equal scores spread over a wide row: the block-pruned pool must still pick the lowest positions
    rng = np.random.default_rng(7)
    c = 20000
    scores = rng.standard_normal((3, c)).astype(np.float32) - 10
    tied = np.sort(rng.choice(c, 300, replace=False))
    scores[:, tied] = 5.0
    res = select_topk(scores.copy(), 100)
    assert (res.items == tied[:100]).all()


def test_bad_shapes_are_named() -> None:
    with pytest.raises(ValueError, match="factor dimensions"):
        topk_batch(np.zeros((2, 3), np.float32), np.zeros((4, 5), np.float32), 2)
    with pytest.raises(ValueError, match="exclude matrix"):
        topk_batch(np.zeros((2, 3), np.float32), np.zeros((3, 5), np.float32), 2, exclude=sp.csr_matrix((3, 5)))


def test_threaded_kernel_equals_single_threaded() -> None:
    from concurrent.futures import ThreadPoolExecutor

    from skyrec.scoring.topk import topk_threaded

    rng = np.random.default_rng(3)
    U = rng.standard_normal((700, 16)).astype(np.float32)
    V = rng.standard_normal((5000, 16)).astype(np.float32)
    ex = sp.random(700, 5000, density=0.01, format="csr", random_state=1)
    brands = rng.integers(-1, 300, size=5000).astype(np.int32)
    VT = np.ascontiguousarray(V.T)
    one = topk_batch(U, VT, 30, exclude=ex, brands=brands, max_per_brand=1, sub_batch=64)
    with ThreadPoolExecutor(3) as pool:
        three = topk_threaded(U, VT, 30, pool=pool, threads=3, exclude=ex, brands=brands, max_per_brand=1,
                              sub_batch=64)
    assert (one.items == three.items).all() and (one.counts == three.counts).all()
    want = reference_topk(U[:50], V, 30, exclude=ex[:50], brands=brands, max_per_brand=1)
    assert [[j for j, _ in w] for w in want] == [list(r[:c]) for r, c in zip(one.items[:50], one.counts[:50],
                                                                            strict=True)]


def test_wide_rows_with_exclusions_and_a_tight_brand_cap_equal_brute_force() -> None:
    # the compiled path at the reference shape (20k candidates: block maxima, threshold, pool, widening),
    # with few brands so that the cap binds and pools must be widened
    rng = np.random.default_rng(11)
    c, d = 20_000, 16
    U = rng.standard_normal((24, d)).astype(np.float32)
    V = rng.standard_normal((c, d)).astype(np.float32)
    U[0] *= 0  # an all-zero user: every score ties at 0.0, order is by position alone
    ex = sp.random(24, c, density=0.01, format="csr", random_state=5)
    for brands, cap, k in ((rng.integers(-1, 40, size=c).astype(np.int32), 1, 100),
                           (rng.integers(0, 3, size=c).astype(np.int32), 2, 50),
                           (rng.integers(0, 2000, size=c).astype(np.int32), 3, 100)):
        got = _as_lists(topk_batch(U, np.ascontiguousarray(V.T), k, exclude=ex, brands=brands, max_per_brand=cap,
                                   sub_batch=7))
        want = reference_topk(U, V, k, exclude=ex, brands=brands, max_per_brand=cap)
        assert [[i for i, _ in g] for g in got] == [[i for i, _ in w] for w in want]


def test_nan_scores_are_never_selected() -> None:
    rng = np.random.default_rng(2)
    scores = rng.standard_normal((4, 5000)).astype(np.float32)
    nan_at = rng.choice(5000, 500, replace=False)
    scores[:, nan_at] = np.nan
    res = select_topk(scores, 50)
    clean = np.where(np.isnan(scores), -np.inf, scores)
    want = select_topk(clean, 50)
    assert (res.items == want.items).all() and not np.isin(res.items, nan_at).any()
    assert (select_topk(np.full((1, 10), np.nan, np.float32), 3).counts == 0).all()


# ---- a sparse item side (item-kNN): scored from the sparse product, zeros and fallbacks exact -------------

def _sparse_case(rng: np.random.Generator, *, signed: bool):
    b, d = int(rng.integers(1, 60)), int(rng.integers(1, 40))
    c = int(rng.choice([1, 5, 64, 300, 3000]))
    U = sp.random(b, d, density=float(rng.choice([0.02, 0.2, 0.6])), format="csr", dtype=np.float32,
                  random_state=int(rng.integers(1 << 30)))
    V = sp.random(c, d, density=float(rng.choice([0.01, 0.1, 0.5])), format="csr", dtype=np.float32,
                  random_state=int(rng.integers(1 << 30)))
    U.data = np.ceil(U.data * 3)  # small integers: exact float32 sums, so scores tie and ties break by position
    V.data = np.ceil(V.data * 3) - (2 if signed else 0)  # signed: negative and zero entries rank below zeros
    exclude = sp.random(b, c, density=float(rng.choice([0.0, 0.05, 0.5])), format="csr",
                        random_state=int(rng.integers(1 << 30)))
    exclude.data[:] = 1
    brands = rng.integers(-1, int(rng.integers(1, 12)), size=c).astype(np.int32)
    cap = None if rng.random() < 0.3 else int(rng.integers(1, 4))
    return U, V, int(rng.choice([1, 3, 10, 50])), exclude, brands, cap


@pytest.mark.parametrize("signed", [False, True])
def test_sparse_item_side_equals_brute_force_whichever_selection_a_row_takes(signed: bool) -> None:
    from skyrec.scoring.topk import _Plan

    rng = np.random.default_rng(77 + signed)
    ways = {"positive scores": 0, "zero fill": 0, "dense": 0}
    for _ in range(120):
        U, V, k, exclude, brands, cap = _sparse_case(rng, signed=signed)
        plan = _Plan(U, sp.csr_matrix(V.T), k, exclude, brands, cap, int(rng.integers(1, 16)))
        got = _as_lists(plan.run_serial())
        want = reference_topk(U, V, k, exclude=exclude, brands=brands, max_per_brand=cap)
        for g, w in zip(got, want, strict=True):
            assert [i for i, _ in g] == [i for i, _ in w]
            np.testing.assert_allclose([s for _, s in g], [s for _, s in w], rtol=1e-6)
        if min(k, V.shape[0]):
            dense, zeros = int(plan.dense_rows.sum()), int(plan.zero_rows.sum())
            ways["dense"] += dense
            ways["zero fill"] += zeros - dense  # a dense row tried the zeros first
            ways["positive scores"] += U.shape[0] - zeros
    # every way was taken: rows the positive scores filled, rows the zeros filled after them, and (only with
    # negative scores, which rank after the zeros) rows selected densely
    assert ways["positive scores"] > 100 and ways["zero fill"] > 100, ways
    assert (ways["dense"] > 20) if signed else (ways["dense"] == 0), ways


def test_sparse_item_side_takes_positive_scores_then_zeros_by_position() -> None:
    from skyrec.scoring.topk import _Plan

    # candidates 0..9; the user's one play links to candidates 7 (score 2) and 3 (score 1) only
    V_t = sp.csr_matrix(np.array([[0, 0, 0, 1, 0, 0, 0, 2, 0, 0]], dtype=np.float32))
    U = sp.csr_matrix(np.ones((2, 1), dtype=np.float32))
    brands = np.array([0, 0, 1, 1, 2, 2, 3, 3, 4, 4], dtype=np.int32)
    exclude = sp.csr_matrix(np.array([[0] * 10, [1, 0, 0, 0, 0, 0, 0, 1, 0, 0]], dtype=np.float32))
    plan = _Plan(U, V_t, 2, exclude, brands, 1, 64)
    res = plan.run_serial()
    assert res.items[0].tolist() == [7, 3] and res.scores[0].tolist() == [2.0, 1.0]  # positives alone fill K
    plan = _Plan(U, V_t, 4, exclude, brands, 1, 64)
    res = plan.run_serial()
    # positives first, then the zeros by position; at most one per brand; excluded 0 and 7 never
    assert res.items.tolist() == [[7, 3, 0, 4], [3, 1, 4, 6]]
    assert res.scores[1].tolist() == [1.0, 0.0, 0.0, 0.0]
    assert plan.zero_rows.sum() == 2 and plan.dense_rows.sum() == 0
    # a negative score ranks after every zero: when the zeros run out it is next (the dense selection's row)
    neg = _Plan(sp.csr_matrix(np.ones((1, 1), np.float32)), sp.csr_matrix(np.array([[0, 2, -1, 0]], np.float32)),
                4, None, None, None, 64)
    res = neg.run_serial()
    assert res.items.tolist() == [[1, 0, 3, 2]] and res.scores.tolist() == [[2.0, 0.0, 0.0, -1.0]]
    assert neg.dense_rows.sum() == 1


def test_sparse_item_side_never_selects_nan_and_threads_agree() -> None:
    from concurrent.futures import ThreadPoolExecutor

    from skyrec.scoring.topk import topk_threaded

    rng = np.random.default_rng(5)
    U = sp.random(500, 300, density=0.05, format="csr", dtype=np.float32, random_state=1)
    V = sp.random(4000, 300, density=0.03, format="csr", dtype=np.float32, random_state=2)
    V.data[::13] = np.nan
    V_t = sp.csr_matrix(V.T)
    ex = sp.random(500, 4000, density=0.01, format="csr", random_state=3)
    brands = rng.integers(-1, 200, size=4000).astype(np.int32)
    one = topk_batch(U, V_t, 20, exclude=ex, brands=brands, max_per_brand=2, sub_batch=64)
    dense = (U @ V_t).toarray().astype(np.float32)
    dense[np.isnan(dense)] = -np.inf
    dense[ex.toarray() > 0] = -np.inf
    want = select_topk(dense, 20, brands=brands, max_per_brand=2)
    assert (one.items == want.items).all() and (one.counts == want.counts).all()
    with ThreadPoolExecutor(2) as pool:
        two = topk_threaded(U, V_t, 20, pool=pool, threads=2, exclude=ex, brands=brands, max_per_brand=2,
                            sub_batch=16)
    assert (one.items == two.items).all() and (one.counts == two.counts).all()
