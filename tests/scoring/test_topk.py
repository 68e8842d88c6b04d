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
