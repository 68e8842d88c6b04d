"""Offline ranking metrics on a time split, computed the same way for every model.

Definitions (binary relevance; ``rel`` = items the user played in the test window that they had not
played in training, restricted to the candidate set; ``rec`` = the top-``k`` list, best first):

- precision@k = |rec ∩ rel| / k
- recall@k    = |rec ∩ rel| / |rel|
- NDCG@k      = DCG / IDCG with DCG = sum over hits at 0-based rank r of 1 / log2(r + 2), IDCG the same
                for min(|rel|, k) hits at the top
- MAP@k       = mean over users of AP@k = (sum over hits at rank r of precision@(r + 1)) / min(|rel|, k)
- coverage    = distinct items recommended to the evaluated users / candidate items
- novelty     = mean self-information -log2(p_i) of recommended items, p_i = (users who played i in
                training + 1) / (training users + 1)
- popularity percentile = mean percentile (0 least, 1 most popular) of recommended items by training plays

Per-user figures are averaged over users with a non-empty ``rel``. Everything is vectorised over a batch
of users: relevance lookups are a ``searchsorted`` over (row, item) keys, never a Python set per user.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np
import scipy.sparse as sp

METRICS = ("precision_at_k", "recall_at_k", "ndcg_at_k", "map_at_k")


def tie_order(listeners: np.ndarray) -> np.ndarray:
    """Column order in which precompute breaks ties (``skyrec.scoring.candidates.build_candidates`` with
    ``tie_order``): the item with more listeners first, then the lower index. A user whose item-kNN links run
    out before ``k`` is served the most played remaining items, and the evaluation must score that list, not
    items in the order of their index."""
    from skyrec.scoring.candidates import ties_first

    return ties_first(listeners)


def top_k(scores: np.ndarray, k: int, order: np.ndarray | None = None) -> tuple[np.ndarray, np.ndarray]:
    """Exact top-``k`` per row: (indices int64, scores), ties broken by lower index, or by position in
    ``order`` (a permutation of the columns, e.g. ``tie_order``) when given; -inf entries (excluded or not
    scorable) come back as index -1, after every recommendable item.

    A score that is not finite (NaN; +inf, a product that overflowed float32) is not recommendable, as in the
    top-K kernel (``skyrec.scoring.topk``): it ranks as -inf, so the lists measured are the lists served."""
    if scores.size and not np.isfinite(scores.max()):  # NaN propagates through max, +inf is the max
        scores = np.where(np.isnan(scores) | (scores == np.inf), -np.inf, scores).astype(scores.dtype, copy=False)
    if order is not None:
        idx, vals = top_k(scores[:, order], k)
        return np.where(idx >= 0, np.asarray(order, np.int64)[np.maximum(idx, 0)], -1), vals
    n = scores.shape[1]
    k_eff = min(k, n)
    if k_eff == 0:
        return np.full((scores.shape[0], k), -1, np.int64), np.full((scores.shape[0], k), -np.inf, np.float32)
    part = np.argpartition(-scores, k_eff - 1, axis=1)[:, :k_eff] if k_eff < n else \
        np.tile(np.arange(n), (scores.shape[0], 1))
    vals = np.take_along_axis(scores, part, axis=1)
    order = np.lexsort((part, -vals), axis=1)
    idx = np.take_along_axis(part, order, axis=1)
    vals = np.take_along_axis(vals, order, axis=1)
    # a tie at the partition boundary could leave out a lower index with the same score: re-check rows
    if k_eff < n:
        kth = vals[:, -1:]
        ties = (scores == kth).sum(axis=1) > (vals == kth).sum(axis=1)
        redo = np.flatnonzero(ties & np.isfinite(kth[:, 0]))
        if len(redo):  # keep everything above the k-th score, then the lowest-index ties (vectorised)
            sub, kv = scores[redo], kth[redo]
            need = k_eff - (sub > kv).sum(axis=1, keepdims=True)
            take = (sub > kv) | ((sub == kv) & (np.cumsum(sub == kv, axis=1) <= need))
            cols = np.nonzero(take)[1].reshape(len(redo), k_eff)
            cvals = np.take_along_axis(sub, cols, axis=1)
            order2 = np.lexsort((cols, -cvals), axis=1)
            idx[redo] = np.take_along_axis(cols, order2, axis=1)
            vals[redo] = np.take_along_axis(cvals, order2, axis=1)
    idx = np.where(np.isfinite(vals), idx, -1)
    if k_eff < k:
        pad = k - k_eff
        idx = np.hstack([idx, np.full((idx.shape[0], pad), -1)])
        vals = np.hstack([vals, np.full((vals.shape[0], pad), -np.inf, vals.dtype)])
    return idx.astype(np.int64), vals


def hits(rec: np.ndarray, relevant: sp.csr_matrix) -> np.ndarray:
    """Boolean [b, k]: is ``rec[u, r]`` in row ``u`` of ``relevant`` (same item index space)."""
    rel = relevant.tocsr()
    rel.sort_indices()
    n = rel.shape[1]
    rows = np.repeat(np.arange(rel.shape[0], dtype=np.int64), np.diff(rel.indptr))
    keys = rows * n + rel.indices.astype(np.int64)
    probe = np.arange(rec.shape[0], dtype=np.int64)[:, None] * n + np.maximum(rec, 0)
    pos = np.searchsorted(keys, probe)
    found = (pos < len(keys)) & (keys[np.minimum(pos, len(keys) - 1)] == probe) if len(keys) else \
        np.zeros(rec.shape, bool)
    return found & (rec >= 0)


def per_user(hit: np.ndarray, n_relevant: np.ndarray, k: int) -> dict[str, np.ndarray]:
    """Per-user precision/recall/NDCG/AP at ``k`` from a hit matrix and each user's |rel|."""
    hit = hit[:, :k].astype(np.float64)
    n_rel = np.asarray(n_relevant, dtype=np.float64)
    n_hit = hit.sum(axis=1)
    discounts = 1.0 / np.log2(np.arange(2, k + 2))
    dcg = hit @ discounts
    ideal = np.cumsum(discounts)[np.clip(np.minimum(n_rel, k).astype(int) - 1, 0, k - 1)]
    prec_at = np.cumsum(hit, axis=1) / np.arange(1, k + 1)
    denom = np.maximum(np.minimum(n_rel, k), 1)
    return {
        "precision_at_k": n_hit / k,
        "recall_at_k": n_hit / np.maximum(n_rel, 1),
        "ndcg_at_k": np.where(n_rel > 0, dcg / ideal, 0.0),
        "map_at_k": (prec_at * hit).sum(axis=1) / denom,
    }


@dataclass
class Accumulator:
    """Sums of per-user metrics and recommendation counts for one (model, candidate set)."""

    n_items: int
    k: int
    sums: dict[str, float] = field(default_factory=lambda: dict.fromkeys(METRICS, 0.0))
    users: int = 0
    rec_counts: np.ndarray | None = None
    score_sample: list[np.ndarray] = field(default_factory=list)
    sample_limit: int = 20_000
    #: with ``n_positions``: per-user values [n_positions] (NaN = user not evaluated here), for intervals
    n_positions: int = 0
    values: dict[str, np.ndarray] = field(default_factory=dict)

    def __post_init__(self) -> None:  # empty arrays when no user is evaluated (a holdout of new users only)
        self.values = {name: np.full(self.n_positions, np.nan) for name in METRICS}

    def add(self, rec: np.ndarray, rec_scores: np.ndarray, relevant: sp.csr_matrix,
            positions: np.ndarray | None = None) -> None:
        """``rec`` [b, k] item indices (-1 = none) in this accumulator's item space; ``relevant`` [b, n_items];
        ``positions`` [b]: where each row's user sits in the per-user arrays (when kept)."""
        n_rel = np.diff(relevant.tocsr().indptr)
        keep = n_rel > 0
        if not keep.any():
            return
        rec, rec_scores, n_rel = rec[keep], rec_scores[keep], n_rel[keep]
        m = per_user(hits(rec, relevant.tocsr()[np.flatnonzero(keep)]), n_rel, self.k)
        for name, values in m.items():
            self.sums[name] += float(values.sum())
            if self.n_positions and positions is not None:
                self.values[name][np.asarray(positions)[keep]] = values
        self.users += int(keep.sum())
        if self.rec_counts is None:
            self.rec_counts = np.zeros(self.n_items, np.int64)
        valid = rec[rec >= 0]
        self.rec_counts += np.bincount(valid, minlength=self.n_items)
        taken = sum(len(s) for s in self.score_sample)
        if taken < self.sample_limit:
            finite = rec_scores[np.isfinite(rec_scores)]
            self.score_sample.append(finite[: self.sample_limit - taken].astype(np.float32))

    def result(self, item_users: np.ndarray, n_train_users: int) -> dict[str, float | int | None]:
        """Averages plus coverage/novelty/popularity figures; ``item_users``: training users per item."""
        out: dict[str, float | int | None] = {"users": self.users}
        for name in METRICS:
            out[name] = self.sums[name] / self.users if self.users else None
        counts = self.rec_counts if self.rec_counts is not None else np.zeros(self.n_items, np.int64)
        total = int(counts.sum())
        # no list scored (no evaluable user): no coverage figure, not a coverage of 0
        out["coverage"] = float((counts > 0).sum() / self.n_items) if self.n_items and self.users else None
        info = -np.log2((np.asarray(item_users, np.float64) + 1.0) / (n_train_users + 1.0))
        pct = popularity_percentile(item_users)
        out["novelty"] = float(counts @ info / total) if total else None
        out["popularity_percentile"] = float(counts @ pct / total) if total else None
        return out

    def scores(self) -> np.ndarray:
        return np.concatenate(self.score_sample) if self.score_sample else np.zeros(0, np.float32)


def popularity_percentile(item_users: np.ndarray) -> np.ndarray:
    """Percentile rank (0..1) of each item by training popularity; ties share their average rank."""
    pop = np.asarray(item_users, np.float64)
    if len(pop) <= 1:
        return np.ones(len(pop))
    order = np.argsort(pop, kind="stable")
    ranks = np.empty(len(pop))
    ranks[order] = np.arange(len(pop))
    # average ranks of ties so equally popular items get one percentile
    uniq, inv = np.unique(pop, return_inverse=True)
    mean_rank = np.bincount(inv, weights=ranks) / np.bincount(inv)
    return mean_rank[inv] / (len(pop) - 1)
