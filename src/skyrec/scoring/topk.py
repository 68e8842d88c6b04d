"""The top-K kernel: exact, rule-constrained top-K for a batch of users.

Problem, per user ``u`` over the candidate items ``j`` (columns of ``V``)::

    score(u, j) = U[u] @ V[j]                       (float32 GEMM through BLAS)
    eligible    = j not excluded for u (already played) and score(u, j) finite
    order       = score descending, then candidate position ascending (deterministic ties)
    result      = walk ``order``; take j when fewer than ``max_per_brand`` items of j's brand were taken;
                  stop at K.

A score that is not a finite number is *not recommendable*: NaN (a NaN factor, or inf - inf) and +inf (a
product that overflowed float32) rank nowhere, exactly as an excluded item (-inf); a user left with fewer
than K finite scores gets fewer than K items. Training and loading refuse models whose values are not finite
or whose scores can overflow (``skyrec.models.representations.NonFiniteError``), so this is the last line, and
the evaluation's ``top_k`` (``skyrec.evaluation.metrics``) applies the same rule: it scores the lists served.

The greedy walk *is* the specification: it is the exact top-K of the rule-constrained problem (the brand
cap is a partition constraint, for which greedy selection is optimal), so a user gets K items whenever K
eligible items exist -- a post-filter over a plain top-K would return fewer.

The matrix product is BLAS's; everything after it is one compiled pass per score row (Numba, ``nogil``, so
the threads of :func:`topk_threaded` run it in parallel), reading the row while it is still in cache:

1. exclusion: the user's played positions are set to -inf;
2. block maxima: the row is cut into contiguous blocks of ~``c / 8P`` columns (P = the pool wanted: K
   without a brand cap, 1.5 K with one) and each block's maximum taken (a vectorised reduction);
3. threshold: a value ``t`` reached by at least P block maxima (bisection on the block maxima, stopping
   once between P and 1.25 P of them reach it). Every item scoring >= t lies in a block whose maximum
   is >= t, so only those ~P blocks are read again; and {score >= t} is an exact *prefix* of the row's
   order, ties included, so the pool boundary is never ambiguous;
4. the pool is sorted by one integer key (score descending, position ascending) and walked with the
   brand cap. A pool that runs dry before K items passed the cap is redone with twice the pool; a row
   with too few finite scores is taken whole.

Every fallback is exact, so the result always equals :func:`reference_topk` (the brute-force
specification, kept here so that tests and benchmarks check against one definition).

Models that are not low-rank (EASE, item-kNN) give ``U`` as a sparse CSR of interaction rows with
``d = n_items`` (``skyrec.models.representations``). For EASE the product is then sparse x dense (cost: the
users' plays x candidates, not d x candidates) into the same score buffer, and everything after it is
unchanged. item-kNN's ``V_cand.T`` is a CSR of its kept neighbours too, so a user's scores are sparse: a few
hundred to a few thousand candidates touched (the plays x neighbours), every other one scoring 0.
:func:`_sparse_rows` accumulates each user's product into one zeroed row, and since the *positive* scores
precede every other candidate in the order, it sorts and walks only those (same key, same walk); when they
give K items that is the dense selection's result, exactly, at a cost that does not grow with the
candidates (at 200k candidates ~4x less than the dense row's). A row they cannot fill (few plays, a narrow
rail, a tight brand cap) goes on through the zero scores by position, as the order has it; only a row with
negative scores that even those cannot fill is selected densely like any other. One implementation of the rules (``_walk``)
for every model. Memory is bounded by the sub-batch: one ``sub_batch x c`` float32 score matrix at a time.
"""

from __future__ import annotations

import threading
from dataclasses import dataclass
from typing import Any, cast

import numba
import numpy as np
import scipy.sparse as sp

from skyrec.models.representations import Representation, as_float32, product_into

NO_BRAND = -1
_NEG = np.float32(-np.inf)
_NO_INT = np.zeros(1, dtype=np.int64)[:0]
_NO_BRANDS = np.zeros(1, dtype=np.int32)[:0]
_ZERO_BLOCK = 256  # candidates the sparse selection's zero fill gathers at a time


def _compiled(fn: Any) -> Any:
    """``numba.njit(nogil=True)`` with the machine code cached on disk (next to the module, or in the user's
    cache directory, or ``NUMBA_CACHE_DIR``); where none of these is writable, compiled once per process."""
    try:
        return numba.njit(nogil=True, cache=True)(fn)
    except RuntimeError:  # numba: "cannot cache function ...: no locator available"
        return numba.njit(nogil=True)(fn)


@dataclass
class TopK:
    """Result for a batch: ``items[i, :counts[i]]`` are candidate positions best first, with ``scores``."""

    items: np.ndarray  # int32 [b, k], -1 padded
    scores: np.ndarray  # float32 [b, k], NaN padded
    counts: np.ndarray  # int32 [b]

    def __len__(self) -> int:
        return int(self.items.shape[0])


@numba.njit(inline="always")
def _max_of(row: np.ndarray, s: int, n: int) -> np.float32:  # pragma: no cover - compiled
    m = np.float32(-np.inf)
    for r in range(n):  # with n a compile-time constant at the call site this unrolls into SIMD maxima
        x = row[s + r]
        m = x if x > m else m  # NaN never wins; +inf may (``_threshold`` and the gathering pass over it)
    return m


@_compiled
def _block_maxima(row: np.ndarray, block: int, out: np.ndarray) -> int:  # pragma: no cover - compiled
    """Maximum of each contiguous ``block`` of ``row`` into ``out``; returns the number of blocks.
    Block sizes 8/16/32/64 are spelled out as constants so the compiler vectorises the reduction."""
    c = row.shape[0]
    full = c // block
    if block == 8:
        for bi in range(full):
            out[bi] = _max_of(row, bi * 8, 8)
    elif block == 16:
        for bi in range(full):
            out[bi] = _max_of(row, bi * 16, 16)
    elif block == 32:
        for bi in range(full):
            out[bi] = _max_of(row, bi * 32, 32)
    elif block == 64:
        for bi in range(full):
            out[bi] = _max_of(row, bi * 64, 64)
    else:
        for bi in range(full):
            out[bi] = _max_of(row, bi * block, block)
    if full * block < c:
        out[full] = _max_of(row, full * block, c - full * block)
        full += 1
    return full


@_compiled
def _threshold(bmax: np.ndarray, nblocks: int, p: int, hist: np.ndarray) -> float:  # pragma: no cover
    """A value ``t`` that at least ``p`` block maxima reach, and not many more: one histogram of the maxima
    over [min, max] in ``len(hist)`` buckets, counted from the top until ``p`` is reached; ``t`` is that
    bucket's lower edge, rounded down. (The count is approximate at bucket edges; nothing relies on it being
    exact -- a pool that proves too small is widened by the caller.) -inf when fewer than ``p`` blocks
    have a finite maximum. A block whose maximum is +inf (not recommendable) counts as none: the finite
    scores it holds are gathered all the same (its maximum reaches any ``t``)."""
    nbuckets = hist.shape[0]
    lo = np.float32(np.inf)
    hi = np.float32(-np.inf)
    finite = 0
    for i in range(nblocks):  # branch-free, so it vectorises
        x = bmax[i]
        ok = (x > -np.inf) & (x < np.inf)
        finite += ok
        y = x if ok else np.float32(np.inf)
        z = x if ok else np.float32(-np.inf)
        lo = y if y < lo else lo
        hi = z if z > hi else hi
    if finite < p:
        return -np.inf
    if not hi > lo:
        return float(lo)
    width = np.float64(hi) - np.float64(lo)
    scale = nbuckets / width
    hist[:] = 0
    for i in range(nblocks):
        x = bmax[i]
        if x >= lo and x <= hi:  # finite maxima only: (inf - lo) * scale is no bucket
            hist[min(nbuckets - 1, int((np.float64(x) - lo) * scale))] += 1
    acc = 0
    h = nbuckets - 1
    while h > 0 and acc + hist[h] < p:
        acc += hist[h]
        h -= 1
    if h == 0:
        return float(lo)
    edge = np.float32(lo + h * (width / nbuckets))
    return float(np.nextafter(np.nextafter(edge, np.float32(-np.inf)), np.float32(-np.inf)))


@numba.njit(inline="always")
def _descending_key(bits: np.int32) -> np.int64:  # pragma: no cover - compiled
    """From a float32's IEEE bits, a uint32-ranged key whose ascending order is the float descending order
    (bits are monotonic for positive floats and reversed for negative ones; -0.0 is folded onto 0.0 so
    that the two zeros tie, as they do in arithmetic)."""
    v = np.int64(bits)
    if v == -2147483648:
        v = np.int64(0)
    return np.int64(0x7FFFFFFF) - (v ^ ((v >> 31) & 0x7FFFFFFF))


@numba.njit(inline="always")
def _gather_block(row: np.ndarray, s: int, n: int, t: float, pos: np.ndarray, m: int) -> int:  # pragma: no cover
    for j in range(s, s + n):  # branch-free compaction: n is a compile-time constant at most call sites
        pos[m] = j
        m += (row[j] >= t) & (row[j] < np.inf)  # +inf is not recommendable (NaN fails >= t)
    return m


@_compiled
def _sort_pool(key: np.ndarray, pos: np.ndarray, n: int, key2: np.ndarray, pos2: np.ndarray,
               count: np.ndarray, nbytes: int = 4) -> bool:  # pragma: no cover - compiled
    """Stable LSD radix sort of ``key[:n]`` (unsigned keys of ``nbytes`` bytes: 4, or 8 for a key that
    carries the position too) carrying ``pos``; bytes equal in every key are skipped. Returns True when the
    result is in ``key2``/``pos2`` (an odd number of passes)."""
    all_and = np.int64(-1)
    all_or = np.int64(0)
    for q in range(n):
        all_and &= key[q]
        all_or |= key[q]
    varying = all_and ^ all_or
    swapped = False
    src_k, src_p, dst_k, dst_p = key, pos, key2, pos2
    for shift in range(0, 8 * nbytes, 8):
        if (varying >> shift) & 0xFF == 0:
            continue
        count[:] = 0
        for q in range(n):
            count[(src_k[q] >> shift) & 0xFF] += 1
        total = 0
        for d in range(256):
            c = count[d]
            count[d] = total
            total += c
        for q in range(n):
            d = (src_k[q] >> shift) & 0xFF
            o = count[d]
            dst_k[o] = src_k[q]
            dst_p[o] = src_p[q]
            count[d] = o + 1
        src_k, src_p, dst_k, dst_p = dst_k, dst_p, src_k, src_p
        swapped = not swapped
    return swapped


@numba.njit(inline="always")
def _brand_slots(brands: np.ndarray, c: int, cap: int) -> tuple[bool, np.ndarray]:  # pragma: no cover - compiled
    """Whether the brand cap applies, and the per-brand counters of the walk (slot 0: no brand)."""
    use_cap = cap > 0 and brands.shape[0] == c
    n_brand_slots = 1
    if use_cap:
        for j in range(c):
            n_brand_slots = max(n_brand_slots, brands[j] + 2)
    return use_cap, np.zeros(n_brand_slots, dtype=np.int32)


@numba.njit(inline="always")
def _walk(row: np.ndarray, order: np.ndarray, n: int, k: int, brands: np.ndarray, use_cap: bool, cap: int,
          taken: np.ndarray, items: np.ndarray, out_scores: np.ndarray, i: int,
          got: int = 0) -> int:  # pragma: no cover - compiled
    """The rules: walk the first ``n`` candidate positions of ``order`` (best first) and take a position
    while fewer than ``cap`` of its brand were taken, up to ``k``, into row ``i`` of ``items``/``out_scores``
    (scores read from ``row``), after the ``got`` already taken. Returns how many are taken; the brand
    counters keep them (:func:`_release` sets them back to zero)."""
    if got >= k:
        return got
    for q in range(n):
        j = order[q]
        if use_cap:
            slot = brands[j] + 1  # slot 0: no brand, never capped
            if slot > 0:
                if taken[slot] >= cap:
                    continue
                taken[slot] += 1
        items[i, got] = j
        out_scores[i, got] = row[j]
        got += 1
        if got == k:
            break
    return got


@numba.njit(inline="always")
def _release(brands: np.ndarray, use_cap: bool, taken: np.ndarray, items: np.ndarray, i: int,
             got: int) -> None:  # pragma: no cover - compiled
    """The brand counters of row ``i``'s ``got`` taken items back to zero (for the next row)."""
    if use_cap:
        for q in range(got):
            taken[brands[items[i, q]] + 1] = 0


@numba.njit(inline="always")
def _close_row(items: np.ndarray, out_scores: np.ndarray, counts: np.ndarray, i: int, got: int,
               k: int) -> None:  # pragma: no cover - compiled
    """Row ``i`` took ``got`` items: its count, and the places after them empty (-1, NaN)."""
    counts[i] = got
    for q in range(got, k):
        items[i, q] = -1
        out_scores[i, q] = np.nan


@_compiled
def _select_rows(scores: np.ndarray, indptr: np.ndarray, indices: np.ndarray, k: int, brands: np.ndarray,
                 cap: int, p0: int, items: np.ndarray, out_scores: np.ndarray,
                 counts: np.ndarray) -> None:  # pragma: no cover - compiled
    """The exact constrained top-K of every row of ``scores`` (modified: excluded entries become -inf).
    ``indptr``/``indices``: CSR of excluded positions (empty ``indptr``: none); ``cap`` 0: no brand cap."""
    b, c = scores.shape
    use_cap, taken = _brand_slots(brands, c, cap)
    bmax = np.empty(c, dtype=np.float32)
    blocks = np.empty(c, dtype=np.int64)
    hist = np.zeros(256, dtype=np.int32)
    radix = np.zeros(256, dtype=np.int64)
    pos = np.empty(c + 64, dtype=np.int64)  # + slack: compaction writes one past the kept entries
    key = np.empty(c, dtype=np.int64)
    pos2 = np.empty(c, dtype=np.int64)
    key2 = np.empty(c, dtype=np.int64)
    has_exclusions = indptr.shape[0] > 0
    for i in range(b):
        row = scores[i]
        bits = row.view(np.int32)
        if has_exclusions:
            for q in range(indptr[i], indptr[i + 1]):
                row[indices[q]] = -np.inf
        p = p0
        while True:
            # 1-2: the pool of entries >= t, reading only the blocks whose maximum reaches t
            t = -np.inf
            n = 0
            if 8 * p < c:
                block = c // (8 * p)  # ~8P blocks: a power of two from 8 up, so the reduction vectorises
                block = 64 if block >= 64 else 32 if block >= 32 else 16 if block >= 16 else 8 if block >= 8 else block
                nblocks = _block_maxima(row, block, bmax)
                t = _threshold(bmax, nblocks, p, hist)
            whole = not (t > -np.inf)
            if whole:
                for j in range(c):
                    pos[n] = j
                    n += (row[j] > -np.inf) & (row[j] < np.inf)  # NaN, +inf and -inf (excluded) never do
            else:
                nb = 0
                for bi in range(nblocks):
                    blocks[nb] = bi
                    nb += bmax[bi] >= t
                for q in range(nb):
                    s = blocks[q] * block
                    if s + block > c:
                        n = _gather_block(row, s, c - s, t, pos, n)
                    elif block == 16:
                        n = _gather_block(row, s, 16, t, pos, n)
                    elif block == 32:
                        n = _gather_block(row, s, 32, t, pos, n)
                    elif block == 64:
                        n = _gather_block(row, s, 64, t, pos, n)
                    elif block == 8:
                        n = _gather_block(row, s, 8, t, pos, n)
                    else:
                        n = _gather_block(row, s, block, t, pos, n)
            # 3: exact order of the pool (score descending; the pool is in position order and the sort is
            # stable, so ties stay by position), then the capped walk
            for q in range(n):
                key[q] = _descending_key(bits[pos[q]])
            order = pos2 if _sort_pool(key, pos, n, key2, pos2, radix) else pos
            got = _walk(row, order, n, k, brands, use_cap, cap, taken, items, out_scores, i)
            _release(brands, use_cap, taken, items, i, got)
            if got == k or whole:
                _close_row(items, out_scores, counts, i, got, k)
                break
            p *= 2


@_compiled
def _sparse_rows(u_data: np.ndarray, u_indices: np.ndarray, u_indptr: np.ndarray, v_data: np.ndarray,
                 v_indices: np.ndarray, v_indptr: np.ndarray, ex_indptr: np.ndarray, ex_indices: np.ndarray,
                 row0: int, k: int, brands: np.ndarray, cap: int, p0: int, acc: np.ndarray, stamp: np.ndarray,
                 spill: np.ndarray, items: np.ndarray, out_scores: np.ndarray,
                 counts: np.ndarray) -> tuple[int, int]:  # pragma: no cover - compiled
    """Score and select every row of a sparse user side against a sparse item side (item-kNN's neighbour
    rows), ``u @ v`` (CSR ``u`` rows x CSR ``v`` = ``V_cand.T``, d x c); returns how many rows took the
    dense selection, and how many were filled with zeros.

    Each row's product is accumulated into ``acc`` (float32 [c], all zeros on entry and on return) with the
    list of candidates it touched, skipping the row's excluded candidates; every other candidate scores 0.
    The order (score descending, position ascending) is then: the row's *positive* scores, the zeros (untouched
    candidates, and touched ones scoring exactly 0) by position, the negative scores; NaN never. So the
    positive scores alone are sorted (one key: score, then position) and walked with the rules; a walk they
    do not fill goes on through the zeros by position, gathered a block at a time; either way the result is
    the dense selection's, exactly. Only a row that even the zeros cannot fill and that holds negative scores
    is copied into ``spill`` (a scratch score row) and selected densely by :func:`_select_rows`. ``stamp`` (int32 [c]) marks the excluded
    candidates of row ``r = row0 + i`` with ``2 r`` and the touched ones with ``2 r + 1`` (one array, so the
    accumulation reads one mark per entry; never reset: the next call passes a later ``row0``).
    Exclusions: CSR ``ex_indptr`` (empty: none; offsets into ``ex_indices``)."""
    b = u_indptr.shape[0] - 1
    c = acc.shape[0]
    use_cap, taken = _brand_slots(brands, c, cap)
    width = 1
    for i in range(b):  # the most candidates a row can touch
        m = 0
        for q in range(u_indptr[i], u_indptr[i + 1]):
            j = u_indices[q]
            m += v_indptr[j + 1] - v_indptr[j]
        width = max(width, min(m, c))
    touched = np.empty(width, dtype=np.int64)
    pos = np.empty(width, dtype=np.int64)
    key = np.empty(width, dtype=np.int64)
    pos2 = np.empty(width, dtype=np.int64)
    key2 = np.empty(width, dtype=np.int64)
    radix = np.zeros(256, dtype=np.int64)
    acc_bits = acc.view(np.int32)
    has_exclusions = ex_indptr.shape[0] > 0
    n_spilled = 0
    n_zeros = 0
    zero = np.empty(_ZERO_BLOCK, dtype=np.int64)
    for i in range(b):
        excluded = np.int32(2 * (row0 + i))
        mark = excluded + 1
        if has_exclusions:
            for q in range(ex_indptr[i], ex_indptr[i + 1]):
                stamp[ex_indices[q]] = excluded
        nt = 0
        for q in range(u_indptr[i], u_indptr[i + 1]):  # 1: the sparse product into acc
            w = u_data[q]
            j = u_indices[q]
            for r in range(v_indptr[j], v_indptr[j + 1]):
                t = v_indices[r]
                m = stamp[t]
                if m != mark:
                    if m == excluded:
                        continue
                    stamp[t] = mark
                    touched[nt] = t
                    nt += 1
                acc[t] += w * v_data[r]
        n = 0
        negative = 0
        for q in range(nt):  # 2: the pool of positive scores, one key each (score, then position)
            t = touched[q]
            pos[n] = t
            key[n] = (_descending_key(acc_bits[t]) << 32) | t
            n += (acc[t] > 0) & (acc[t] < np.inf)  # NaN and +inf never rank (not recommendable)
            negative += (acc[t] < 0) & (acc[t] > -np.inf)  # zeros come next, negative scores after them
        got = 0
        if n:
            order = pos2 if _sort_pool(key, pos, n, key2, pos2, radix, 8) else pos
            got = _walk(acc, order, n, k, brands, use_cap, cap, taken, items, out_scores, i)
        if got < k:  # 3: the zeros, tied, by position: untouched or scoring exactly 0, not excluded
            n_zeros += 1
            s = 0
            while got < k and s < c:
                nz = 0
                for j in range(s, min(s + _ZERO_BLOCK, c)):
                    m = stamp[j]
                    zero[nz] = j
                    nz += (m != excluded) & ((m != mark) | (acc[j] == 0))
                got = _walk(acc, zero, nz, k, brands, use_cap, cap, taken, items, out_scores, i, got)
                s += _ZERO_BLOCK
        _release(brands, use_cap, taken, items, i, got)
        if got == k or not negative:
            _close_row(items, out_scores, counts, i, got, k)
        else:  # 4: negative scores would be next: the dense selection of this row (rare: kNN's are never negative)
            spill[0, :] = acc
            _select_rows(spill[:1], ex_indptr[i:i + 2] if has_exclusions else ex_indptr, ex_indices, k, brands, cap,
                         p0, items[i:i + 1], out_scores[i:i + 1], counts[i:i + 1])
            n_spilled += 1
        for q in range(nt):
            acc[touched[q]] = 0.0
    return n_spilled, n_zeros


def _rules(c: int, k: int, brands: np.ndarray | None, max_per_brand: int | None,
           widen: float) -> tuple[np.ndarray, int, int]:
    """(brands as int32, cap (0: none), initial pool size) for the compiled selection, validated."""
    if k < 1:
        raise ValueError(f"k must be >= 1, got {k}")
    if brands is not None and len(brands) != c:
        raise ValueError(f"brands has {len(brands)} entries for {c} candidates")
    if max_per_brand is not None and max_per_brand < 1:
        raise ValueError(f"max_per_brand must be >= 1, got {max_per_brand}")
    cap = int(max_per_brand) if (max_per_brand is not None and brands is not None) else 0
    br = np.ascontiguousarray(brands, dtype=np.int32) if cap else _NO_BRANDS
    return br, cap, max(1, int(k * widen) if cap else k)


def _csr_parts(exclude: sp.csr_matrix | None) -> tuple[np.ndarray, np.ndarray]:
    if exclude is None or exclude.nnz == 0:
        return _NO_INT, _NO_INT
    return exclude.indptr.astype(np.int64, copy=False), exclude.indices.astype(np.int64, copy=False)


def select_topk(scores: np.ndarray, k: int, *, brands: np.ndarray | None = None, max_per_brand: int | None = None,
                widen: float = 1.5) -> TopK:
    """Exact rule-constrained top-K over a score matrix (-inf = excluded). ``scores`` is not modified."""
    b, c = scores.shape
    br, cap, p0 = _rules(c, k, brands, max_per_brand, widen)
    out = TopK(np.full((b, k), -1, dtype=np.int32), np.full((b, k), np.nan, dtype=np.float32),
               np.zeros(b, dtype=np.int32))
    if b and c:
        work = np.array(scores, dtype=np.float32, order="C", copy=True)
        _select_rows(work, _NO_INT, _NO_INT, k, br, cap, p0, out.items, out.scores, out.counts)
    return out


class _Plan:
    """One batch's scoring, cut into sub-batches that any thread may take: the product into the thread's own
    score buffer, then the compiled selection straight into the batch's result arrays (no per-thread
    results to concatenate, no CSR slicing: ``indptr[s:e+1]`` still indexes the whole ``indices``). A
    sparse item side is scored and selected row by row in one compiled pass (``_sparse_rows``);
    ``dense_rows`` / ``zero_rows`` count, per sub-batch, the rows of it that needed the dense selection / that
    the positive scores did not fill and zero scores did."""

    def __init__(self, user_factors: Representation, item_factors_t: Representation, k: int,
                 exclude: sp.csr_matrix | None, brands: np.ndarray | None, max_per_brand: int | None,
                 sub_batch: int) -> None:
        b = user_factors.shape[0]
        c = item_factors_t.shape[1]
        if user_factors.shape[1] != item_factors_t.shape[0]:
            raise ValueError(f"factor dimensions differ: users {user_factors.shape}, items.T {item_factors_t.shape}")
        if exclude is not None and exclude.shape != (b, c):
            raise ValueError(f"exclude matrix {exclude.shape} != ({b}, {c})")
        self.b, self.c, self.k = b, c, k
        self.kk = min(k, c) if c else 0
        self.items = np.full((b, self.kk), -1, dtype=np.int32)
        self.scores = np.full((b, self.kk), np.nan, dtype=np.float32)
        self.counts = np.zeros(b, dtype=np.int32)
        self.step = max(1, min(sub_batch, b)) if b else 1
        self.n_chunks = (b + self.step - 1) // self.step if self.kk else 0
        # a sparse item side (item-kNN) is scored row by row from the sparse product (``_sparse_rows``)
        self.sparse = bool(sp.issparse(item_factors_t))
        if self.sparse and b >= 1 << 30:  # the int32 marks of the sparse selection number rows as 2 r + 1
            raise ValueError(f"{b:,} users in one batch: score a sparse item side in batches below 2^30 users")
        self.dense_rows = np.zeros(self.n_chunks, dtype=np.int64)  # rows the sparse path selected densely
        self.zero_rows = np.zeros(self.n_chunks, dtype=np.int64)  # rows it filled with zero scores
        if self.n_chunks:
            self.rules = _rules(c, self.kk, brands, max_per_brand, 1.5)
            self.indptr, self.indices = _csr_parts(exclude)
            self.uf = as_float32(sp.csr_matrix(user_factors) if self.sparse else user_factors)
            self.vt = as_float32(item_factors_t) if self.sparse else item_factors_t

    def buffer(self) -> tuple[np.ndarray, ...]:
        """One thread's scratch: the sub-batch's score matrix; for a sparse item side also the score row the
        product accumulates into (kept at zero between rows) and the excluded / touched marks (stamped from
        the row's number in the batch, so never reset)."""
        scores = np.empty((self.step, self.c), dtype=np.float32)
        if not self.sparse:
            return (scores,)
        return scores, np.zeros(self.c, np.float32), np.full(self.c, -1, np.int32)

    def run(self, chunk: int, buf: tuple[np.ndarray, ...]) -> None:
        s = chunk * self.step
        e = min(self.b, s + self.step)
        br, cap, p0 = self.rules
        ex_indptr = self.indptr[s:e + 1] if self.indptr.size else self.indptr
        if not self.sparse:
            S = product_into(self.uf[s:e], self.vt, buf[0][: e - s])
            _select_rows(S, ex_indptr, self.indices, self.kk, br, cap, p0, self.items[s:e], self.scores[s:e],
                         self.counts[s:e])
            return
        u, v = cast(sp.csr_matrix, self.uf), cast(sp.csr_matrix, self.vt)
        lo, hi = u.indptr[s], u.indptr[e]
        self.dense_rows[chunk], self.zero_rows[chunk] = _sparse_rows(
            u.data[lo:hi], u.indices[lo:hi], u.indptr[s:e + 1] - lo, v.data, v.indices, v.indptr,
            ex_indptr, self.indices, s, self.kk, br, cap, p0, buf[1], buf[2], buf[0], self.items[s:e],
            self.scores[s:e], self.counts[s:e])

    def run_serial(self) -> TopK:
        """Every sub-batch in this thread, one score buffer."""
        if self.n_chunks:
            buf = self.buffer()
            for chunk in range(self.n_chunks):
                self.run(chunk, buf)
        return self.result()

    def result(self) -> TopK:
        items, scores = self.items, self.scores
        if self.kk < self.k:  # fewer candidates than K: pad to the K columns callers expect
            items = np.pad(items, ((0, 0), (0, self.k - self.kk)), constant_values=-1)
            scores = np.pad(scores, ((0, 0), (0, self.k - self.kk)), constant_values=np.nan)
        return TopK(items, scores, self.counts)


def topk_batch(user_factors: Representation, item_factors_t: Representation, k: int, *,
               exclude: sp.csr_matrix | None = None, brands: np.ndarray | None = None,
               max_per_brand: int | None = None, sub_batch: int = 64) -> TopK:
    """Score a batch of users against the candidates and select the exact constrained top-K.

    ``item_factors_t`` is ``V_cand.T`` (d x c, ``representations.transposed``: C-contiguous, the GEMM's
    preferred layout, or CSR for a sparse item side; prepared once per model); ``exclude`` is a CSR (users of this batch x candidate positions). Works in sub-batches of
    ``sub_batch`` users so that the score matrix (``sub_batch x c`` float32, reused) stays in cache between
    the product and the selection.
    """
    return _Plan(user_factors, item_factors_t, k, exclude, brands, max_per_brand, sub_batch).run_serial()


_BLAS: Any = None


def _one_blas_thread() -> Any:
    """A context limiting BLAS to one thread (the controller is built once: building it scans the libraries)."""
    global _BLAS
    if _BLAS is None:
        from threadpoolctl import ThreadpoolController

        _BLAS = ThreadpoolController()
    return _BLAS.limit(limits=1, user_api="blas")


def topk_threaded(user_factors: Representation, item_factors_t: Representation, k: int, *, pool: Any | None,
                  threads: int, exclude: sp.csr_matrix | None = None, brands: np.ndarray | None = None,
                  max_per_brand: int | None = None, sub_batch: int = 64) -> TopK:
    """``topk_batch`` with ``threads`` workers of a thread pool taking sub-batches from one queue (so a
    slow sub-batch never leaves a core idle), BLAS single-threaded inside each: the product and the compiled
    selection both release the GIL, so the cores stay busy with the whole kernel, not only the product;
    two levels of threads would oversubscribe."""
    plan = _Plan(user_factors, item_factors_t, k, exclude, brands, max_per_brand, sub_batch)
    workers = min(threads, plan.n_chunks)
    if pool is None or workers <= 1:
        if threads <= 1:  # one thread asked for: BLAS must not start its own (they would take the other cores)
            with _one_blas_thread():
                return plan.run_serial()
        return plan.run_serial()
    chunks = iter(range(plan.n_chunks))
    take = threading.Lock()

    def worker(_: int) -> None:
        buf = plan.buffer()
        while True:
            with take:
                chunk = next(chunks, None)
            if chunk is None:
                return
            plan.run(chunk, buf)

    with _one_blas_thread():
        list(pool.map(worker, range(workers)))
    return plan.result()


def reference_topk(user_factors: Representation, item_factors: Representation, k: int, *,
                   exclude: sp.csr_matrix | None = None, brands: np.ndarray | None = None,
                   max_per_brand: int | None = None) -> list[list[tuple[int, float]]]:
    """The specification, brute force in float64: per user the greedy walk described in the module doc (a
    score that is not finite in float64 is not recommendable; one that only float32 overflows is, here)."""
    U = sp.csr_matrix(user_factors).toarray() if sp.issparse(user_factors) else user_factors
    V = sp.csr_matrix(item_factors).toarray() if sp.issparse(item_factors) else item_factors
    S = np.asarray(U, dtype=np.float64) @ np.asarray(V, dtype=np.float64).T
    out = []
    for u in range(S.shape[0]):
        banned = set(exclude[u].indices.tolist()) if exclude is not None else set()
        row = np.where(np.isfinite(S[u]), S[u], -np.inf)  # NaN would break the sort; -inf: never taken
        order = sorted(range(S.shape[1]), key=lambda j: (-float(row[j]), j))
        taken: dict[int, int] = {}
        res: list[tuple[int, float]] = []
        for j in order:
            if len(res) == k:
                break
            if j in banned or not np.isfinite(row[j]):
                continue
            if max_per_brand is not None and brands is not None and brands[j] != NO_BRAND:
                if taken.get(int(brands[j]), 0) >= max_per_brand:
                    continue
                taken[int(brands[j])] = taken.get(int(brands[j]), 0) + 1
            res.append((j, float(S[u, j])))
        out.append(res)
    return out
