""""New in a series you follow": the catalogue's series structure as an item-item term.

Much of a radio and podcast audience's listening is the newest episode of a programme it follows. A
collaborative model only learns an episode once people have played it, so the newest episodes -- the ones
such a listener wants -- are the ones it ranks worst (docs/evaluation.md, "planted truth"). The catalogue
already knows what the model is missing: which brand (programme) an episode belongs to and when it was
released. This module turns that into the term

    series(u, i) = fresh(i) x sum over the user's items j of the same brand as i of x_uj

with ``fresh(i) = decay ** k`` for the ``k``-th newest episode of its brand released by the reference time
(``k < depth``; older episodes and unreleased ones 0) and ``x_uj`` the user's weighted, recency-decayed
interactions -- so a brand the user listened to recently and much lifts that brand's newest episodes.

It is an items x items matrix ``T[j, i] = fresh(i) x [brand(j) == brand(i)]``, so a ``d = n_items`` model
(item-kNN's ``S``, EASE's ``B``) adds it to its own item-item weights: ``score(u, .) = x_u @ (S + w T)``. Nothing downstream
changes (the kernel, evaluation, the business rules and "more like this" score the combined matrix like
the model's own), and the artefact is the model's usual one. ``T`` has at most ``depth`` entries per item.

The term needs each item's brand and release time: ``ItemContext``, built from a training dataset by
:func:`item_context` (brand from the ``brand=`` item features, release from the catalogue's ``release_ts``).
A dataset without them (no catalogue, or one without brands) gives no context and the term is simply off.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

import numpy as np
import scipy.sparse as sp

if TYPE_CHECKING:
    from skyrec.models.dataset import TrainingData

UNKNOWN_RELEASE = np.iinfo(np.int64).max


@dataclass(frozen=True)
class ItemContext:
    """Catalogue facts per item column of the matrix a model is fit on."""

    brand: np.ndarray        # int64 [n_items]: brand code, -1 when unknown
    release_us: np.ndarray   # int64 [n_items]: release time (µs since the epoch), UNKNOWN_RELEASE when unknown
    reference_us: int        # "now" for the matrix: which episodes are released and which are the newest

    def take(self, cols: np.ndarray) -> ItemContext:
        """The context of the item columns ``cols`` (in that order)."""
        cols = np.asarray(cols, dtype=np.int64)
        return ItemContext(brand=self.brand[cols], release_us=self.release_us[cols], reference_us=self.reference_us)

    @property
    def usable(self) -> bool:
        return bool(((self.brand >= 0) & (self.release_us != UNKNOWN_RELEASE)).any())


def item_context(data: TrainingData, matrix: str = "interactions") -> ItemContext | None:
    """The context of ``data``'s items for a fit on ``matrix`` (``interactions`` or ``train``), or None
    when the dataset has no brands or release times.

    The reference time is the end of the data for ``interactions``; for ``train`` it is the split's cutoff
    under the global split. Under the per-user split every user has their own split time and one matrix
    cannot hold them all: the end of the data is used, so the evaluated fit knows which episodes were
    released by then (catalogue facts, not plays) -- docs/evaluation.md says so."""
    import datetime as dt

    release = getattr(data, "item_release_us", None)
    if release is None or len(release) != len(data.item_ids):
        return None
    names = np.asarray(data.feature_names, dtype=object)
    is_brand = np.array([str(n).startswith("brand=") for n in names], dtype=bool)
    if not is_brand.any():
        return None
    brand_cols = np.flatnonzero(is_brand)
    features = sp.csr_matrix(data.item_features)[:, brand_cols].tocsr()
    brand = np.full(len(data.item_ids), -1, dtype=np.int64)
    has = np.diff(features.indptr) > 0
    brand[has] = features.indices[features.indptr[:-1][has]]  # one brand per item (the first if several)

    def us(iso: str | None) -> int | None:
        return int(dt.datetime.fromisoformat(iso).timestamp() * 1_000_000) if iso else None

    end = us(data.meta.get("end"))
    if end is None:
        return None
    reference = end
    if matrix == "train" and (data.meta.get("split") or {}).get("kind", "global") == "global":
        reference = us(data.meta.get("cutoff")) or end
    ctx = ItemContext(brand=brand, release_us=np.asarray(release, dtype=np.int64), reference_us=reference)
    return ctx if ctx.usable else None


#: the parameters of the term, as models that take it name them, and their defaults when off
PARAMS = ("series_weight", "series_depth", "series_decay")


def checked_params(model: str, weight: float, depth: int, decay: float) -> dict[str, float | int]:
    """The term's parameters as ``add_series`` takes them; a ValueError naming the model when out of range."""
    if float(weight) < 0 or int(depth) < 1 or not 0 < float(decay) <= 1:
        raise ValueError(f"{model}: series_weight must be >= 0, series_depth >= 1 and series_decay in (0, 1], "
                         f"got {weight}, {depth}, {decay}")
    return {"weight": float(weight), "depth": int(depth), "decay": float(decay)}


def series_matrix(context: ItemContext, *, depth: int, decay: float) -> sp.csr_matrix:
    """``T[j, i] = decay ** k(i)`` when items ``j`` and ``i`` share a brand and ``i`` is that brand's ``k``-th
    newest episode released by ``context.reference_us`` (``k < depth``); float32 CSR [n_items, n_items].

    Ties in release time go to the item column order, so the matrix is deterministic."""
    brand, release = context.brand, context.release_us
    n = len(brand)
    if depth < 1 or n == 0:
        return sp.csr_matrix((n, n), dtype=np.float32)
    released = (brand >= 0) & (release <= context.reference_us)
    cand = np.flatnonzero(released)
    # newest first within each brand (ties: lower column first)
    order = cand[np.lexsort((cand, -release[cand], brand[cand]))]
    ob = brand[order]
    starts = np.flatnonzero(np.r_[True, ob[1:] != ob[:-1]])
    rank = np.arange(len(order)) - np.repeat(starts, np.diff(np.r_[starts, len(order)]))
    keep = rank < depth
    fresh_items, fresh_brand = order[keep], ob[keep]
    fresh_value = (float(decay) ** rank[keep]).astype(np.float32)
    # every item j of a brand gets that brand's fresh items as its row
    members = np.flatnonzero(brand >= 0)
    mb = brand[members]
    by_brand = np.argsort(fresh_brand, kind="stable")
    fb_sorted = fresh_brand[by_brand]
    lo = np.searchsorted(fb_sorted, mb, side="left")
    hi = np.searchsorted(fb_sorted, mb, side="right")
    counts = hi - lo
    rows = np.repeat(members, counts)
    offsets = np.arange(int(counts.sum())) - np.repeat(np.cumsum(counts) - counts, counts)
    picks = by_brand[np.repeat(lo, counts) + offsets]
    t = sp.csr_matrix((fresh_value[picks], (rows, fresh_items[picks])), shape=(n, n), dtype=np.float32)
    t.sum_duplicates()
    return t


def scaled_term(row_max: np.ndarray, context: ItemContext | None, *, weight: float, depth: int, decay: float,
                user_items: float = 1.0) -> tuple[sp.coo_matrix | None, dict[str, float | int]]:
    """``w T`` for a model whose item-item matrix has row maxima ``row_max`` (None when the term is off), with
    ``w = weight x`` the mean of the positive row maxima ``x user_items``: the scale of the model's own scores,
    so that ``weight`` means the same whatever the scale of its weights (BM25 similarities run in the hundreds,
    cosines below 1) and, for a model whose score sums one link per item the user played (item-kNN:
    ``user_items`` the median number of items per user, see :func:`typical_user_items`), whatever how much
    its users listen. Also the record of what is added (for the model artefact and the report)."""
    if context is None or weight <= 0 or not context.usable:
        return None, {"weight": 0.0, "entries": 0}
    if len(context.brand) != len(row_max):
        raise ValueError(f"series: item context has {len(context.brand)} items, the model {len(row_max)}")
    T = series_matrix(context, depth=depth, decay=decay).tocoo()
    positive = row_max[row_max > 0]
    scale = (float(positive.mean()) if positive.size else 1.0) * float(user_items)
    T.data *= np.float32(weight * scale)
    return T, {"weight": float(weight), "scale": scale, "user_items": float(user_items), "entries": int(T.nnz),
               "depth": int(depth), "decay": float(decay)}


def typical_user_items(interactions: sp.csr_matrix) -> float:
    """The median number of items a user with any has in ``interactions`` (1 when nobody has any): how many
    links a typical item-kNN score sums."""
    counts = np.diff(sp.csr_matrix(interactions).indptr)
    counts = counts[counts > 0]
    return float(np.median(counts)) if counts.size else 1.0


def add_series_dense(B: np.ndarray, context: ItemContext | None, *, weight: float, depth: int, decay: float
                     ) -> dict[str, float | int]:
    """The term added to a dense item-item matrix (EASE's ``B``), in place: ``B += w T``."""
    row_max = B.max(axis=1) if B.size else np.zeros(B.shape[0], np.float32)
    term, record = scaled_term(row_max, context, weight=weight, depth=depth, decay=decay)
    if term is not None:
        B[term.row, term.col] += term.data
    return record


def add_series(S: sp.csr_matrix, context: ItemContext | None, *, weight: float, depth: int, decay: float,
               user_items: float = 1.0) -> tuple[sp.csr_matrix, dict[str, float | int]]:
    """``S + w T`` for a sparse item-item matrix (item-kNN's ``S``), and the record (:func:`scaled_term`)."""
    S = sp.csr_matrix(S, dtype=np.float32)
    row_max = S.max(axis=1).toarray().ravel() if S.nnz else np.zeros(S.shape[0], np.float32)
    term, record = scaled_term(row_max, context, weight=weight, depth=depth, decay=decay, user_items=user_items)
    if term is not None:
        S = sp.csr_matrix(S + term, dtype=np.float32)
    return S, record
