"""The top-K kernel: exact, rule-constrained top-K for a batch of users.

Problem, per user ``u`` over the candidate items ``j`` (columns of ``V``)::

    score(u, j) = U[u] @ V[j]                       (float32 GEMM through BLAS)
    eligible    = j not excluded for u (already played)
    order       = score descending, then candidate position ascending (deterministic ties)
    result      = walk ``order``; take j when fewer than ``max_per_brand`` items of j's brand were taken;
                  stop at K.

The greedy walk *is* the specification: it is the exact top-K of the rule-constrained problem (the brand
cap is a partition constraint, for which greedy selection is optimal), so a user gets K items whenever K
eligible items exist -- a post-filter over a plain top-K would return fewer.

Speed comes from never sorting a whole row. For each row we need only a *pool* of the P best items
(P = K without a brand cap, a few times K with one):

1. block maxima: the row is cut into blocks of ``block`` columns; the blocks holding the P best items are
   exactly the P blocks with the largest maxima, so one cheap reduction and a partition over
   ``c / block`` numbers prune ~90% of the row;
2. ``argpartition`` over the gathered blocks gives the pool, which is then sorted exactly by
   (score desc, position asc) and walked with the brand cap, vectorised over the batch;
3. rows whose pool ran out before K items passed the cap are redone with a doubled pool; rows with a
   score tie straddling the pool boundary (where the choice by position matters) are redone exactly.

Both fallbacks are exact, so the result always equals :func:`reference_topk` (the brute-force
specification, kept here so that tests and benchmarks check against one definition).
Memory is bounded by the sub-batch: one ``sub_batch x c`` float32 score matrix at a time.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np
import scipy.sparse as sp

NO_BRAND = -1


@dataclass
class TopK:
    """Result for a batch: ``items[i, :counts[i]]`` are candidate positions best first, with ``scores``."""

    items: np.ndarray  # int32 [b, k], -1 padded
    scores: np.ndarray  # float32 [b, k], NaN padded
    counts: np.ndarray  # int32 [b]

    def __len__(self) -> int:
        return int(self.items.shape[0])


def _exclude(scores: np.ndarray, exclude: sp.csr_matrix | None) -> None:
    """Set excluded (row, candidate position) entries to -inf, in place."""
    if exclude is None or exclude.nnz == 0:
        return
    rows = np.repeat(np.arange(exclude.shape[0]), np.diff(exclude.indptr))
    scores[rows, exclude.indices] = -np.inf


def _bits(n: int) -> int:
    return max(1, int(n - 1).bit_length())


def _descending_key(values: np.ndarray) -> np.ndarray:
    """uint32-ranged int64 keys whose ascending order is the float32 ``values`` descending order.
    (IEEE bits of a float are monotonic for positives and reversed for negatives; -0.0 is folded onto 0.0
    so that the two zeros tie, as they do in arithmetic.)"""
    bits = (values + np.float32(0.0)).view(np.int32).astype(np.int64)
    monotonic = bits ^ ((bits >> 31) & 0x7FFFFFFF)  # signed order == float order
    return np.int64(0x7FFFFFFF) - monotonic  # in [0, 2**32)


def _select_flat(scores: np.ndarray, rows: np.ndarray, cols: np.ndarray, k: int, brands: np.ndarray | None,
                 cap: int | None, out: TopK, row_ids: np.ndarray) -> np.ndarray:
    """Greedy brand-capped walk over the listed (row, col) entries of ``scores``, which must hold, per row,
    a prefix of the row's order. Writes results of rows ``row_ids[r]`` into ``out``; returns the kept count
    per row (in ``row_ids`` order). Everything is one-dimensional over the entries: one sort orders them by
    (row, score desc, col asc), a second counts brand occurrences."""
    b, c = scores.shape
    rbits, cbits = _bits(b), _bits(c)
    vals = scores.reshape(-1).take(rows * c + cols)
    key = (rows << (32 + cbits)) | (_descending_key(vals) << cbits) | cols
    key.sort()
    rows_s = key >> (32 + cbits)
    cols_s = key & ((1 << cbits) - 1)
    n = key.size
    per_row = np.bincount(rows_s, minlength=b)
    starts = np.zeros(b, dtype=np.int64)
    np.cumsum(per_row[:-1], out=starts[1:])
    vals_s = scores.reshape(-1).take(rows_s * c + cols_s)
    keep = np.isfinite(vals_s)
    if cap is not None and brands is not None and n:
        br = brands.astype(np.int64)[cols_s] + 1  # 0 = no brand, never capped
        pos = np.arange(n, dtype=np.int64) - starts[rows_s]
        bbits, pbits = _bits(int(br.max()) + 1), _bits(int(pos.max()) + 1)
        if rbits + bbits + pbits > 63:
            raise ValueError("brand-cap keys overflow 63 bits: use a smaller sub-batch")
        key2 = (rows_s << (bbits + pbits)) | (br << pbits) | pos
        key2.sort()
        group = key2 >> pbits
        i = np.arange(n, dtype=np.int64)
        first = np.ones(n, dtype=bool)
        first[1:] = group[1:] != group[:-1]
        occ_sorted = i - np.maximum.accumulate(np.where(first, i, 0))
        occ = np.empty(n, dtype=np.int64)
        occ[starts[group >> bbits] + (key2 & ((1 << pbits) - 1))] = occ_sorted  # back to entry order
        keep &= (occ < cap) | (br == 0)
    cum = np.cumsum(keep)
    before_row = np.concatenate([[0], cum])[starts]  # kept entries in earlier rows
    rank = cum - 1 - before_row[rows_s]
    sel = keep & (rank < k)
    r_sel = row_ids[rows_s[sel]]
    out.items[r_sel, rank[sel]] = cols_s[sel]
    out.scores[r_sel, rank[sel]] = vals_s[sel]
    kept = np.bincount(rows_s, weights=keep, minlength=b).astype(np.int64)
    out.counts[row_ids] = np.minimum(kept, k)
    return kept


def _threshold(scores: np.ndarray, p: int) -> np.ndarray:
    """Per row a threshold ``t`` with at least P items scoring >= t, found without sorting the row.

    The row is cut into ~8P strided blocks (block j = columns j, j+nb, j+2nb, ...: the reduction is then a
    SIMD maximum of contiguous vectors); the P-th largest block max is reached by P blocks, so at least P
    items score >= it. The set {score >= t} is an exact prefix of the row's order, ties included, so the
    boundary is never ambiguous."""
    b, c = scores.shape
    nb = max(p, c // max(1, c // (8 * p)))
    block = c // nb
    main = nb * block
    bmax = scores[:, :main].reshape(b, block, nb).max(axis=1)
    if main < c:  # ragged tail: each leftover column is a block of its own
        bmax = np.concatenate([bmax, scores[:, main:]], axis=1)
    nblocks = bmax.shape[1]
    return np.partition(bmax, nblocks - p, axis=1)[:, nblocks - p]


def select_topk(scores: np.ndarray, k: int, *, brands: np.ndarray | None = None, max_per_brand: int | None = None,
                widen: float = 1.5) -> TopK:
    """Exact rule-constrained top-K over a score matrix (-inf = excluded)."""
    b, c = scores.shape
    if k < 1:
        raise ValueError(f"k must be >= 1, got {k}")
    cap = max_per_brand if (max_per_brand is not None and brands is not None) else None
    if cap is not None and brands is not None and len(brands) != c:
        raise ValueError(f"brands has {len(brands)} entries for {c} candidates")
    out = TopK(np.full((b, k), -1, dtype=np.int32), np.full((b, k), np.nan, dtype=np.float32),
               np.zeros(b, dtype=np.int32))
    if b == 0 or c == 0:
        return out
    if _bits(b) + 32 + _bits(c) > 63:  # keys would overflow: halve the batch
        h = b // 2
        top, bottom = (select_topk(scores[s], k, brands=brands, max_per_brand=max_per_brand, widen=widen)
                       for s in (slice(0, h), slice(h, b)))
        return TopK(*(np.concatenate([x, y]) for x, y in ((top.items, bottom.items), (top.scores, bottom.scores),
                                                           (top.counts, bottom.counts))))
    todo = np.arange(b)
    p = max(1, int(k * widen) if cap is not None else k)
    while todo.size:
        sub = scores[todo] if todo.size < b else scores
        if 16 * p >= c:  # small candidate sets: take whole rows
            rows, cols = np.divmod(np.arange(sub.size, dtype=np.int64), c)
            _select_flat(sub, rows, cols, k, brands, cap, out, todo)
            break
        t = _threshold(sub, p)
        rows, cols = np.divmod(np.flatnonzero(sub >= t[:, None]), c)
        kept = _select_flat(sub, rows, cols, k, brands, cap, out, todo)
        # a prefix that ran dry is final only if the threshold let every item through
        todo = todo[(kept < k) & np.isfinite(t)]
        p *= 2
    return out


def topk_batch(user_factors: np.ndarray, item_factors_t: np.ndarray, k: int, *,
               exclude: sp.csr_matrix | None = None, brands: np.ndarray | None = None,
               max_per_brand: int | None = None, sub_batch: int = 512, out: np.ndarray | None = None) -> TopK:
    """Score a batch of users against the candidates and select the exact constrained top-K.

    ``item_factors_t`` is ``V_cand.T`` (d x c, C-contiguous: the GEMM's preferred layout, prepared once per
    model); ``exclude`` is a CSR (users of this batch x candidate positions). Works in sub-batches of
    ``sub_batch`` users so that the score matrix (``sub_batch x c`` float32) stays small and cache-friendly.
    """
    b = user_factors.shape[0]
    c = item_factors_t.shape[1]
    if user_factors.shape[1] != item_factors_t.shape[0]:
        raise ValueError(f"factor dimensions differ: users {user_factors.shape}, items.T {item_factors_t.shape}")
    if exclude is not None and exclude.shape != (b, c):
        raise ValueError(f"exclude matrix {exclude.shape} != ({b}, {c})")
    kk = min(k, c) if c else 0
    items = np.full((b, k), -1, dtype=np.int32)
    scores = np.full((b, k), np.nan, dtype=np.float32)
    counts = np.zeros(b, dtype=np.int32)
    if b == 0 or kk == 0:
        return TopK(items, scores, counts)
    step = max(1, sub_batch)
    buf = out if out is not None and out.shape[0] >= min(step, b) and out.shape[1] == c else None
    uf = np.ascontiguousarray(user_factors, dtype=np.float32)
    for s in range(0, b, step):
        e = min(b, s + step)
        S = np.matmul(uf[s:e], item_factors_t, out=buf[: e - s] if buf is not None else None)
        if exclude is not None:
            _exclude(S, exclude[s:e])
        r = select_topk(S, kk, brands=brands, max_per_brand=max_per_brand)
        items[s:e, :kk], scores[s:e, :kk], counts[s:e] = r.items, r.scores, r.counts
    return TopK(items, scores, counts)


def topk_threaded(user_factors: np.ndarray, item_factors_t: np.ndarray, k: int, *, pool: Any | None,
                  threads: int, exclude: sp.csr_matrix | None = None, brands: np.ndarray | None = None,
                  max_per_brand: int | None = None, sub_batch: int = 256) -> TopK:
    """``topk_batch`` over ``threads`` slices of the users in a thread pool, with BLAS single-threaded inside
    each (NumPy releases the GIL in the GEMM, the partitions, sorts and reductions, so the cores stay busy
    with the whole kernel, not only with the matrix product; two levels of threads would oversubscribe)."""
    b = user_factors.shape[0]
    if pool is None or threads <= 1 or b < 2 * sub_batch:
        return topk_batch(user_factors, item_factors_t, k, exclude=exclude, brands=brands,
                          max_per_brand=max_per_brand, sub_batch=sub_batch)
    from threadpoolctl import threadpool_limits

    bounds = np.linspace(0, b, threads + 1).astype(int)

    def part(i: int) -> TopK:
        s, e = bounds[i], bounds[i + 1]
        return topk_batch(user_factors[s:e], item_factors_t, k, exclude=None if exclude is None else exclude[s:e],
                          brands=brands, max_per_brand=max_per_brand, sub_batch=sub_batch)

    with threadpool_limits(1, user_api="blas"):
        parts = list(pool.map(part, range(threads)))
    return TopK(np.concatenate([p.items for p in parts]), np.concatenate([p.scores for p in parts]),
                np.concatenate([p.counts for p in parts]))


def reference_topk(user_factors: np.ndarray, item_factors: np.ndarray, k: int, *,
                   exclude: sp.csr_matrix | None = None, brands: np.ndarray | None = None,
                   max_per_brand: int | None = None) -> list[list[tuple[int, float]]]:
    """The specification, brute force in float64: per user the greedy walk described in the module doc."""
    S = np.asarray(user_factors, dtype=np.float64) @ np.asarray(item_factors, dtype=np.float64).T
    out = []
    for u in range(S.shape[0]):
        banned = set(exclude[u].indices.tolist()) if exclude is not None else set()
        row = S[u]
        order = sorted(range(S.shape[1]), key=lambda j: (-float(row[j]), j))
        taken: dict[int, int] = {}
        res: list[tuple[int, float]] = []
        for j in order:
            if len(res) == k:
                break
            if j in banned:
                continue
            if max_per_brand is not None and brands is not None and brands[j] != NO_BRAND:
                if taken.get(int(brands[j]), 0) >= max_per_brand:
                    continue
                taken[int(brands[j])] = taken.get(int(brands[j]), 0) + 1
            res.append((j, float(S[u, j])))
        out.append(res)
    return out
