"""Re-score the published model's artefact on this run's split, paired with the new model.

The published artefact was fit on an earlier snapshot (all of it, by default), so it has seen some of the
plays this run holds out as test: scoring it on them would reward it for remembering its training data.
Both models are therefore compared on what the published model has *not* seen: per user, the relevant
items are this split's test positives minus everything in the artefact's ``seen`` matrix, and both models
exclude the user's train plays and the artefact's seen plays. Users must exist in both (the published
model cannot score a user it never met); items the artefact does not know it cannot recommend (-inf), yet
they stay relevant, as in ``skyrec.evaluation.offline``. The result is one per-user series per model on
exactly the same users, relevance and exclusions, for ``skyrec.evaluation.stats.paired_comparison``. A
published artefact with NaN or +-inf factors is refused (``NonFiniteError``; ``load_artefact`` refuses it
first), and scores that are not finite are not recommendable (``skyrec.evaluation.metrics.top_k``).
"""

from __future__ import annotations

from typing import Any

import numpy as np
import scipy.sparse as sp

from skyrec.evaluation.metrics import hits, per_user, tie_order, top_k
from skyrec.models.representations import Representation, as_float32, check_finite, expand_rows
from skyrec.models.representations import scores as representation_scores


def _index(ids: np.ndarray, lookup: np.ndarray) -> np.ndarray:
    """Position of each of ``lookup`` in ``ids`` (-1 when absent)."""
    pos = {x: i for i, x in enumerate(ids.tolist())}
    return np.fromiter((pos.get(x, -1) for x in lookup.tolist()), dtype=np.int64, count=len(lookup))


def rescore_published(*, user_ids: np.ndarray, item_ids: np.ndarray, train: sp.csr_matrix, test: sp.csr_matrix,
                      users: np.ndarray, new_user_factors: Representation, new_item_factors: Representation,
                      new_scorable: np.ndarray | None, published: Any, k: int,
                      batch: int = 1024) -> dict[str, Any]:
    """Per-user metrics of the new model and of the published artefact (``ModelArtefact``) for the
    dataset rows ``users`` (the evaluated users): ``{"users": rows, "new": {metric: arr},
    "published": {metric: arr}, "excluded_seen_by_published": n}`` (NaN where a user cannot be compared)."""
    check_finite(f"published model {getattr(published, 'path', '') or ''}".rstrip(),
                 {"user_factors": published.user_factors, "item_factors": published.item_factors},
                 hint="refusing to compare with a model that would rank items on NaN")
    train, test = train.tocsr(), test.tocsr()
    n_items = train.shape[1]
    art_rows = _index(np.asarray(published.user_ids, dtype=object), np.asarray(user_ids, dtype=object)[users])
    art_col = _index(np.asarray(published.item_ids, dtype=object), np.asarray(item_ids, dtype=object))
    ds_of_art = np.full(len(published.item_ids), -1, np.int64)
    ds_of_art[art_col[art_col >= 0]] = np.flatnonzero(art_col >= 0)
    pub_scorable = art_col >= 0
    pub_V = expand_rows(as_float32(published.item_factors)[art_col[pub_scorable]], np.flatnonzero(pub_scorable),
                        n_items)
    new_V = as_float32(new_item_factors)
    new_U, pub_U = as_float32(new_user_factors), as_float32(published.user_factors)  # dense or CSR
    out_new = {m: np.full(len(users), np.nan) for m in ("precision_at_k", "recall_at_k", "ndcg_at_k", "map_at_k")}
    out_pub = {m: np.full(len(users), np.nan) for m in out_new}
    removed = 0
    pub_seen = published.seen.tocsr()
    ties = tie_order(np.diff(train.tocsc().indptr))  # precompute's tie-break (more listeners first), as offline
    for start in range(0, len(users), batch):
        rows = users[start:start + batch]
        ar = art_rows[start:start + batch]
        known = np.flatnonzero(ar >= 0)
        if not len(known):
            continue
        rows, ar, pos = rows[known], ar[known], start + known
        # the artefact's seen plays of these users, in the dataset's item space
        ps = pub_seen[ar].tocoo()
        cols = ds_of_art[ps.col]
        ok = cols >= 0
        seen_pub = sp.csr_matrix((np.ones(int(ok.sum()), np.float32), (ps.row[ok], cols[ok])),
                                 shape=(len(rows), n_items))
        seen_pub.data[:] = 1.0
        tr = train[rows].copy()
        tr.data[:] = 1.0
        rel = test[rows].copy()
        rel.data[:] = 1.0
        rel = rel - rel.multiply(tr)           # relevant: test positives not played in train ...
        before = rel.sum()
        rel = (rel - rel.multiply(seen_pub)).tocsr()  # ... and not seen by the published model
        rel.eliminate_zeros()
        removed += int(before - rel.sum())
        exclude = (tr + seen_pub).tocsr()
        ex_r = np.repeat(np.arange(len(rows)), np.diff(exclude.indptr))
        n_rel = np.diff(rel.indptr)
        who = np.flatnonzero(n_rel > 0)
        if not len(who):
            continue
        for U, V, scorable, out in ((new_U[rows], new_V, new_scorable, out_new),
                                    (pub_U[ar], pub_V, pub_scorable, out_pub)):
            scores = representation_scores(U, V)
            if scorable is not None:
                scores[:, ~scorable] = -np.inf
            scores[ex_r, exclude.indices] = -np.inf
            rec, _ = top_k(scores[who], k, ties)
            m = per_user(hits(rec, rel[who]), n_rel[who], k)
            for name, values in m.items():
                out[name][pos[who]] = values
    return {"users": users, "new": out_new, "published": out_pub, "excluded_seen_by_published": removed,
            "users_unknown_to_published": int((art_rows < 0).sum())}
