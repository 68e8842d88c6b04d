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

Not every play says "I follow this programme": a listener working through its back catalogue is not
waiting for the next episode. With the dataset's first-play times the context ranks each pair (the
episode was its brand's ``r``-th newest when first played: ``newest_rank``), and item-kNN weighs the term
by it (:func:`add_followed_series`): plays of episodes that were new count fully, catch-up plays a share.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import numpy as np
import scipy.sparse as sp

if TYPE_CHECKING:
    from skyrec.models.dataset import TrainingData

UNKNOWN_RELEASE = np.iinfo(np.int64).max


@dataclass(frozen=True)
class ItemContext:
    """Catalogue facts per item column of the matrix a model is fit on, and how new each of the matrix's
    pairs was when the user first played it."""

    brand: np.ndarray        # int64 [n_items]: brand code, -1 when unknown
    release_us: np.ndarray   # int64 [n_items]: release time (µs since the epoch), UNKNOWN_RELEASE when unknown
    reference_us: int        # "now" for the matrix: which episodes are released and which are the newest
    #: int32 CSR [n_users, n_items] on the matrix's pattern: the episode was its brand's ``rank``-th newest
    #: released when the user first played it (1: the newest); no entry where that is unknown (no brand,
    #: release or first-play time). None when the dataset has no first-play times (written before them).
    newest_rank: sp.csr_matrix | None = None

    def take(self, cols: np.ndarray) -> ItemContext:
        """The context of the item columns ``cols`` (in that order)."""
        cols = np.asarray(cols, dtype=np.int64)
        rank = None if self.newest_rank is None else sp.csr_matrix(self.newest_rank[:, cols])
        return ItemContext(brand=self.brand[cols], release_us=self.release_us[cols], reference_us=self.reference_us,
                           newest_rank=rank)

    def followed(self, within: int) -> sp.csr_matrix | None:
        """Binary float32 CSR [n_users, n_items]: the pairs the user first played while the episode was among
        its brand's ``within + 1`` newest (``within`` newer episodes out at most) -- listening that follows the
        programme as it comes out, not catching up on its back catalogue. None without first-play times."""
        if self.newest_rank is None:
            return None
        rank = sp.csr_matrix(self.newest_rank)  # the arrays copied: eliminate_zeros edits them in place
        out = sp.csr_matrix(((rank.data <= int(within) + 1).astype(np.float32), rank.indices.copy(),
                             rank.indptr.copy()), shape=rank.shape)
        out.eliminate_zeros()
        return out

    @property
    def usable(self) -> bool:
        return bool(((self.brand >= 0) & (self.release_us != UNKNOWN_RELEASE)).any())


def newest_rank(first_play: sp.csr_matrix, brand: np.ndarray, release_us: np.ndarray) -> sp.csr_matrix:
    """For each pair of ``first_play`` (µs, users x items): 1 + how many episodes of the item's brand were
    released after it and by the pair's first play, as an int32 CSR on the same pattern (pairs whose item has
    no brand or release time left out). Times compared to the second."""
    fp = sp.csr_matrix(first_play, copy=True)
    fp.sort_indices()
    brand = np.asarray(brand, dtype=np.int64)
    release = np.asarray(release_us, dtype=np.int64)
    known = (brand >= 0) & (release != UNKNOWN_RELEASE)

    def key(b: np.ndarray, us: np.ndarray) -> np.ndarray:  # (brand, second) in one int64: brand << 32 | second
        return (b << 32) | np.clip(us // 1_000_000, 0, (1 << 32) - 1)

    episodes = np.sort(key(brand[known], release[known]))
    cols = fp.indices.astype(np.int64)
    ok = known[cols]
    b, r, t = brand[cols[ok]], release[cols[ok]], np.asarray(fp.data, dtype=np.int64)[ok]
    newer = np.searchsorted(episodes, key(b, t), side="right") - np.searchsorted(episodes, key(b, r), side="right")
    values = np.zeros(fp.nnz, dtype=np.int32)
    values[ok] = 1 + np.maximum(newer, 0)
    out = sp.csr_matrix((values, fp.indices, fp.indptr), shape=fp.shape)
    out.eliminate_zeros()
    return out


def item_context(data: TrainingData, matrix: str = "interactions") -> ItemContext | None:
    """The context of ``data``'s items for a fit on ``matrix`` (``interactions`` or ``train``), or None
    when the dataset has no brands or release times.

    The reference time is the end of the data for ``interactions``; for ``train`` it is the split's cutoff
    under the global split. Under the per-user split every user has their own split time and one matrix
    cannot hold them all: the end of the data is used, so the evaluated fit knows which episodes were
    released by then (catalogue facts, not plays) -- docs/evaluation.md says so. The first-play times of the
    matrix's pairs (``first_play`` / ``train_first_play``) give each pair's ``newest_rank`` against the whole
    catalogue, when the dataset has them."""
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
    release = np.asarray(release, dtype=np.int64)
    first_play = getattr(data, "first_play" if matrix == "interactions" else "train_first_play", None)
    rank = newest_rank(first_play, brand, release) if first_play is not None else None
    ctx = ItemContext(brand=brand, release_us=release, reference_us=reference, newest_rank=rank)
    return ctx if ctx.usable else None


#: the parameters of the term, as models that take it name them, and their defaults when off
PARAMS = ("series_weight", "series_depth", "series_decay")
#: item-kNN's parameters of "followed" listening (:func:`add_followed_series`)
FOLLOW_PARAMS = ("series_catch_up", "series_follow_within")


def checked_params(model: str, weight: float, depth: int, decay: float) -> dict[str, float | int]:
    """The term's parameters as ``add_followed_series`` / ``add_series_dense`` take them; a ValueError naming
    the model when out of range (a NaN or infinite weight too: ``NaN < 0`` is false). The models check each
    value by its rule first (``skyrec.models.params``), naming the parameter."""
    if not (math.isfinite(float(weight)) and float(weight) >= 0) or int(depth) < 1 or not 0 < float(decay) <= 1:
        raise ValueError(f"{model}: series_weight must be >= 0, series_depth >= 1 and series_decay in (0, 1], "
                         f"got {weight}, {depth}, {decay}")
    return {"weight": float(weight), "depth": int(depth), "decay": float(decay)}


def checked_follow(model: str, catch_up: float, within: int) -> dict[str, float | int]:
    """:func:`add_followed_series`'s parameters; a ValueError naming the model when out of range (NaN too)."""
    if not 0 <= float(catch_up) <= 1 or int(within) < 0:
        raise ValueError(f"{model}: series_catch_up must be in [0, 1] and series_follow_within >= 0, "
                         f"got {catch_up}, {within}")
    return {"catch_up": float(catch_up), "within": int(within)}


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


def add_followed_series(S: sp.csr_matrix, X: sp.csr_matrix, context: ItemContext | None, *, weight: float,
                        depth: int, decay: float, user_items: float, catch_up: float, within: int
                        ) -> tuple[sp.csr_matrix, sp.csr_matrix | None, sp.csr_matrix | None, dict[str, Any]]:
    """The term for item-kNN, weighted by how the user listens to each programme: ``(S + c w T, X∘F, (1 - c) w T,
    record)`` so that the model scores

        score(u, .) = x_u @ (S + c w T) + (x_u ∘ f_u) @ ((1 - c) w T)

    -- a play counts fully towards its brand's newest episodes when the user first played the episode while it
    was new (``f_uj = 1``: ``context.followed(within)``), and ``c`` (``catch_up``) of that when they caught up
    on it later. Someone who works through a programme's back catalogue is not waiting for its next episode;
    someone who plays each episode as it comes out is. ``catch_up = 1`` is the unweighted term (every play
    alike); so is a context without first-play times (a dataset written before them), said in the record.
    The second and third parts are None when the term or the weighting is off."""
    S = sp.csr_matrix(S, dtype=np.float32)
    row_max = S.max(axis=1).toarray().ravel() if S.nnz else np.zeros(S.shape[0], np.float32)
    term, record = scaled_term(row_max, context, weight=weight, depth=depth, decay=decay, user_items=user_items)
    if term is None:
        return S, None, None, record
    followed = context.followed(within) if context is not None and catch_up < 1 else None
    if followed is None:
        note = "every play alike (series_catch_up 1)" if catch_up >= 1 else \
            "every play alike: the dataset has no first-play times (written before first_play.npz)"
        return sp.csr_matrix(S + term, dtype=np.float32), None, None, {**record, "follow": note}
    X = sp.csr_matrix(X, dtype=np.float32)
    if followed.shape != X.shape:
        raise ValueError(f"series: first-play ranks cover {followed.shape}, the matrix is {X.shape}")
    XF = sp.csr_matrix(X.multiply(followed), dtype=np.float32)
    XF.eliminate_zeros()
    shared = term.copy()
    shared.data = shared.data * np.float32(catch_up)
    extra = term.tocsr()
    extra.data = extra.data * np.float32(1.0 - catch_up)
    record = {**record, "catch_up": float(catch_up), "follow_within": int(within),
              "pairs": int(X.nnz), "followed_pairs": int(XF.nnz)}
    return sp.csr_matrix(S + shared, dtype=np.float32), XF, extra, record
