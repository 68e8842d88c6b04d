"""Evaluate several models on one time split, in one pass over the same sampled test users.

Every model is given as its representations (``score = U @ V.T``; ``U`` sparse for the models whose
``d`` is the item count, see ``skyrec.models.representations``) over the dataset's full item space,
plus a mask of the items it can score at all (a pure collaborative model cannot score an item that had no
training plays; those get -inf, i.e. are never recommended, yet still count as relevant when played -- so
models are compared on the same relevance sets). Items a user played in training are excluded.

Per candidate set (``overall`` = every item, plus one per variant filter) the figures of
``skyrec.evaluation.metrics`` are computed. *Cold-start item recall@k*: for users who played, in the test
window, items with no training plays that are in the catalogue, the recall@k of those items when only such
cold items are ranked, next to the expectation of a random ranking for scale. ``users`` is always the number
of those users (the users the figure rests on); when there is no figure, ``not_scored`` says why: the model
cannot score items without training plays, or there are no cold items, or no such user.

Models must be finite: factors with NaN or +-inf are refused (``NonFiniteError``), and a score that is not
finite all the same (a product that overflowed float32) is not recommendable, as in the kernel
(``skyrec.evaluation.metrics.top_k``).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np
import scipy.sparse as sp

from skyrec.evaluation.metrics import METRICS, Accumulator, hits, per_user, popularity_percentile, tie_order, top_k
from skyrec.models.representations import Representation, check_finite
from skyrec.models.representations import scores as representation_scores


@dataclass
class Scored:
    """A model as seen by the evaluator."""

    user_factors: Representation        # [n_users, d] (dataset's user rows; CSR for EASE, item-kNN)
    item_factors: np.ndarray            # [n_items, d] (dataset's item columns; unscorable rows ignored)
    scorable: np.ndarray | None = None  # bool [n_items]; None = every item


def candidate_mask(feature_names: np.ndarray, item_features: sp.csr_matrix, *, genres: list[str] | None = None,
                   formats: list[str] | None = None, masterbrands: list[str] | None = None) -> np.ndarray:
    """Items matching any listed genre (if given) AND any listed format (if given) AND any listed
    masterbrand (if given): the variant candidate filter of ``CandidateFilter``, on the feature matrix."""
    names = np.asarray(feature_names, dtype=str)
    mask = np.ones(item_features.shape[0], dtype=bool)
    csc = item_features.tocsc()
    for kind, values in (("genre", genres), ("format", formats), ("masterbrand", masterbrands)):
        if not values:
            continue
        cols = np.flatnonzero(np.isin(names, [f"{kind}={v}" for v in values]))
        mask &= np.diff(csc[:, cols].tocsr().indptr) > 0 if len(cols) else np.zeros_like(mask)
    return mask


def evaluate(models: dict[str, Scored], train: sp.csr_matrix, test: sp.csr_matrix, *, k: int,
             candidate_sets: dict[str, np.ndarray] | None = None, cold_items: np.ndarray | None = None,
             max_users: int = 50_000, seed: int = 0, batch_cells: int = 1 << 24, resamples: int = 1000,
             confidence: float = 0.95, bootstrap_seed: int = 0,
             per_user_out: dict[str, Any] | None = None) -> dict[str, Any]:
    """Evaluate ``models`` on (train, test). Returns a JSON-ready dict (see module docstring).

    Every per-user figure gets a bootstrap interval (``skyrec.evaluation.stats``: the evaluated users
    resampled ``resamples`` times with ``bootstrap_seed``) in ``ci``: ``{metric: [low, high]}``. With
    ``per_user_out`` (a dict), it receives ``users`` (the evaluated dataset rows) and ``values``
    (``{model: {candidate set: {metric: per-user array}}}``, NaN where a user has no relevant candidate),
    for paired comparisons on the same users."""
    from skyrec.evaluation.stats import confidence_intervals, holding

    for name, model in models.items():  # the rows of items it cannot score are ignored, so not checked
        item = model.item_factors if model.scorable is None else model.item_factors[np.flatnonzero(model.scorable)]
        check_finite(f"evaluate: model {name!r}", {"user factors": model.user_factors, "item factors": item},
                     hint="refusing to measure a model that would rank items on NaN")
    train, test = train.tocsr(), test.tocsr()
    n_users, n_items = train.shape
    seen = train.copy()
    seen.data[:] = 1.0
    # Relevant = test plays not already played in training.
    relevant = (test - test.multiply(seen)).tocsr()
    relevant.eliminate_zeros()
    relevant.data[:] = 1.0
    has_train = np.diff(train.indptr) > 0
    eligible = np.flatnonzero(has_train & (np.diff(relevant.indptr) > 0))
    cold_pool = np.flatnonzero(has_train & (np.diff(test.indptr) > 0))
    rng = np.random.default_rng(seed)
    if len(eligible) > max_users:
        eligible = np.sort(rng.choice(eligible, max_users, replace=False))
    users = np.union1d(eligible, cold_pool[: max_users]) if cold_items is not None else eligible

    sets = {"overall": np.ones(n_items, dtype=bool), **(candidate_sets or {})}
    item_users = np.bincount(seen.indices, minlength=n_items)
    # each set's items in precompute's tie order (more listeners first, then index): equal scores -- an
    # item-kNN user whose links run out -- go to the items precompute would serve, not to the lower indices
    ties = tie_order(item_users)
    set_idx = {name: ties[mask[ties]] for name, mask in sets.items()}
    eligible_mask = np.zeros(n_users, bool)
    eligible_mask[eligible] = True
    n_train_users = int(has_train.sum())

    position = np.full(n_users, -1, np.int64)
    position[eligible] = np.arange(len(eligible))
    acc = {m: {s: Accumulator(n_items=len(set_idx[s]), k=k, n_positions=len(eligible)) for s in sets}
           for m in models}
    cold_idx = np.flatnonzero(cold_items) if cold_items is not None else np.zeros(0, np.int64)
    cold_sums = {m: [0.0, 0] for m in models}
    cold_ok = {m: bool(len(cold_idx)) and (s.scorable is None or bool(s.scorable[cold_idx].all()))
               for m, s in models.items()}
    cold_test = test[:, cold_idx].tocsr() if len(cold_idx) else None
    # the users a cold-start figure rests on, whichever model: scored users with test plays on cold items
    cold_users = int((np.diff(cold_test[users].indptr) > 0).sum()) if cold_test is not None else 0

    batch = max(1, min(4096, batch_cells // max(n_items, 1)))
    for start in range(0, len(users), batch):
        rows = users[start:start + batch]
        ev = eligible_mask[rows]
        ex = seen[rows]
        ex_r = np.repeat(np.arange(len(rows)), np.diff(ex.indptr))
        rel_b = relevant[rows]
        for name, model in models.items():
            scores = representation_scores(model.user_factors[rows], model.item_factors)
            if model.scorable is not None:
                scores[:, ~model.scorable] = -np.inf
            scores[ex_r, ex.indices] = -np.inf
            if ev.any():
                for sname, idx in set_idx.items():
                    rec, vals = top_k(scores[np.ix_(np.flatnonzero(ev), idx)], k)  # positions in ``idx``
                    acc[name][sname].add(rec, vals, rel_b[np.flatnonzero(ev)][:, idx], position[rows[ev]])
            if cold_ok[name] and cold_test is not None:
                ct = cold_test[rows]
                n_rel = np.diff(ct.indptr)
                who = np.flatnonzero(n_rel > 0)
                if len(who):
                    rec, _ = top_k(scores[who][:, cold_idx], k)
                    m = per_user(hits(rec, ct[who]), n_rel[who], k)
                    cold_sums[name][0] += float(m["recall_at_k"].sum())
                    cold_sums[name][1] += len(who)

    out: dict[str, Any] = {"k": k, "users_evaluated": int(len(eligible)), "n_items": int(n_items),
                           "n_train_users": n_train_users, "candidate_items": {s: int(len(i)) for s, i in
                                                                              set_idx.items()},
                           "cold_items": int(len(cold_idx)), "models": {}, "distributions": {}}
    random_cold = min(k, len(cold_idx)) / len(cold_idx) if len(cold_idx) else None
    pct = popularity_percentile(item_users)
    series = {(m, s, metric): acc[m][s].values[metric] for m in models for s in sets for metric in METRICS}
    intervals = confidence_intervals({"|".join(key): v for key, v in series.items()}, resamples=resamples,
                                     seed=bootstrap_seed, confidence=confidence)
    out["bootstrap"] = {"resamples": resamples, "seed": bootstrap_seed, "confidence": confidence,
                        "unit": "user"}
    if per_user_out is not None:
        per_user_out["users"] = eligible
        per_user_out["values"] = {m: {s: acc[m][s].values for s in sets} for m in models}
    for name in models:
        figures: dict[str, dict[str, Any]] = {s: dict(acc[name][s].result(item_users[set_idx[s]], n_train_users))
                                              for s in sets}
        for s, f in figures.items():
            f["ci"] = {metric: holding(intervals[f"{name}|{s}|{metric}"]["ci"], f[metric]) for metric in METRICS}
        cold = _cold_start(name, models[name], cold_idx, cold_ok[name], cold_sums[name], cold_users, random_cold)
        out["models"][name] = {"overall": figures["overall"],
                               "variants": {s: f for s, f in figures.items() if s != "overall"},
                               "cold_start": cold}
        a = acc[name]["overall"]
        counts = np.zeros(n_items, np.int64)  # back from tie-order positions to dataset items
        if a.rec_counts is not None:
            counts[set_idx["overall"]] = a.rec_counts
        out["distributions"][name] = {
            "top_k_scores": _histogram(a.scores()),
            "recommended_popularity_percentile": _histogram(np.repeat(pct, counts), lo=0.0, hi=1.0),
        }
    test_counts = np.diff(relevant[eligible].tocsc().indptr)
    out["distributions"]["_test_plays"] = {
        "recommended_popularity_percentile": _histogram(np.repeat(pct, test_counts), lo=0.0, hi=1.0)}
    return out


def _cold_start(name: str, model: Scored, cold_idx: np.ndarray, ok: bool, sums: list, cold_users: int,
                random_cold: float | None) -> dict[str, Any]:
    """The cold-start block of one model: the figure, the users it rests on (``cold_users``, the same for every
    model) and, when there is no figure, ``not_scored``: why."""
    total, n = sums
    out: dict[str, Any] = {"cold_item_recall_at_k": total / n if ok and n else None,
                           "users": n if ok else cold_users, "random_expectation": random_cold}
    if not len(cold_idx):
        out["not_scored"] = "no cold items: every catalogue item has training plays"
    elif not ok:
        missing = int((~np.asarray(model.scorable, bool)[cold_idx]).sum()) if model.scorable is not None else 0
        out["not_scored"] = (f"{name} cannot score items without training plays" if missing == len(cold_idx) else
                             f"{name} cannot score {missing} of the {len(cold_idx)} items without training plays")
    elif not n:
        out["not_scored"] = "no evaluated user played an item without training plays in the test window"
    return out


def _histogram(values: np.ndarray, bins: int = 20, lo: float | None = None, hi: float | None = None) -> dict:
    values = np.asarray(values, np.float64)
    values = values[np.isfinite(values)]
    if len(values) == 0:
        return {"edges": [], "counts": []}
    lo = float(values.min()) if lo is None else lo
    hi = float(values.max()) if hi is None else hi
    if hi <= lo:
        hi = lo + 1.0
    counts, edges = np.histogram(values, bins=bins, range=(lo, hi))
    return {"edges": [round(float(e), 6) for e in edges], "counts": [int(c) for c in counts]}
