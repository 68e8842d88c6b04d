"""Figures of the list a user would actually receive, rule by rule, per rail (variant).

The raw model's top-k is not what a listener gets: precompute keeps the variant's candidates (its filter),
drops what is not playable now or too old, excludes what the user already played and caps items per
brand. This module measures each step on the same users and the same relevance (the user's test
positives, all of them, so a rule that hides relevant items shows as a drop), using the precompute's own
rule code: ``skyrec.scoring.candidates.build_candidates`` (filter, availability, age rule) and the kernel
``skyrec.scoring.topk.topk_batch`` (exclusions, brand cap) -- never a second implementation.

Stages, each adding one rule to the previous one:

- ``model``: the model's top-k over every item it can score, nothing excluded;
- ``exclude_played``: minus what the user played before their split time (the offline ``overall`` list);
- ``candidates``: only the variant's candidate filter (every catalogue item counted as available);
- ``available``: plus availability at the evaluation instant and the age rule (``precompute.rules``);
- ``served``: plus the brand cap (``precompute.rules.max_per_brand``): the list precompute would publish.
"""

from __future__ import annotations

import datetime as dt
from typing import Any

import numpy as np
import pyarrow as pa
import scipy.sparse as sp

from skyrec.evaluation.metrics import METRICS, hits, per_user, tie_order, top_k
from skyrec.models.representations import Representation, as_float32
from skyrec.models.representations import scores as representation_scores

STAGES = ("model", "exclude_played", "candidates", "available", "served")


def _always_available(catalogue: pa.Table) -> pa.Table:
    ids = catalogue.column("item_id")
    ts = pa.timestamp("us", tz="UTC")
    return pa.table({"item_id": ids, "available_from": pa.array([0] * len(ids), pa.int64()).cast(ts),
                     "available_until": pa.nulls(len(ids), ts)})


def rules_figures(*, item_ids: np.ndarray, user_factors: Representation, item_factors: Representation,
                  scorable: np.ndarray | None, users: np.ndarray, train: sp.csr_matrix, relevant: sp.csr_matrix,
                  catalogue: pa.Table, availability: pa.Table | None, at: dt.datetime, candidate_filter: Any,
                  max_age_days: dict[str, float], max_per_brand: int | None, k: int,
                  batch: int = 1024) -> dict[str, Any]:
    """Per stage, per-user metrics aligned with ``users`` (dataset rows; NaN for users with no relevant
    item): ``{"values": {stage: {metric: arr}}, "candidates": {stage: counts}}``."""
    from skyrec.scoring.candidates import build_candidates
    from skyrec.scoring.engine import listeners
    from skyrec.scoring.topk import topk_batch

    train, relevant = train.tocsr(), relevant.tocsr()
    n_items = train.shape[1]
    scorable = np.ones(n_items, bool) if scorable is None else np.asarray(scorable, bool)
    model_cols = np.flatnonzero(scorable)                     # the "model items", as in an artefact
    V = as_float32(item_factors)  # dense, or CSR (item-kNN)
    seen = train.copy()
    seen.data[:] = 1.0
    seen_model = seen[:, model_cols].tocsr()
    order = listeners(seen_model)  # ties as precompute breaks them: the more played candidate first
    ties = tie_order(np.bincount(seen.indices, minlength=n_items))  # the same order for the first two stages
    cands = {
        "candidates": build_candidates(model_item_ids=np.asarray(item_ids, dtype=object)[model_cols],
                                       item_factors=V[model_cols], catalogue=catalogue,
                                       candidate_filter=candidate_filter, at=at,
                                       availability=_always_available(catalogue), max_age_days={}, tie_order=order),
        "available": build_candidates(model_item_ids=np.asarray(item_ids, dtype=object)[model_cols],
                                      item_factors=V[model_cols], catalogue=catalogue,
                                      candidate_filter=candidate_filter, at=at, availability=availability,
                                      max_age_days=max_age_days, tie_order=order),
    }
    cands["served"] = cands["available"]
    values = {s: {m: np.full(len(users), np.nan) for m in METRICS} for s in STAGES}
    U_all = as_float32(user_factors)  # dense, or the CSR of interaction rows (EASE, item-kNN)
    for start in range(0, len(users), batch):
        rows = users[start:start + batch]
        rel = relevant[rows]
        n_rel = np.diff(rel.indptr)
        who = np.flatnonzero(n_rel > 0)
        if not len(who):
            continue
        rows, rel, n_rel, pos = rows[who], rel[who], n_rel[who], start + who
        U = U_all[rows]
        scores = representation_scores(U, V)
        scores[:, ~scorable] = -np.inf
        rec, _ = top_k(scores, k, ties)
        lists = {"model": rec}
        ex = seen[rows]
        scores[np.repeat(np.arange(len(rows)), np.diff(ex.indptr)), ex.indices] = -np.inf
        lists["exclude_played"] = top_k(scores, k, ties)[0]
        for stage in ("candidates", "available", "served"):
            c = cands[stage]
            if len(c) == 0:
                lists[stage] = np.full((len(rows), k), -1, np.int64)
                continue
            res = topk_batch(U, c.item_factors_t, k, exclude=c.exclusions(seen_model, rows), brands=c.brands,
                             max_per_brand=max_per_brand if stage == "served" else None)
            ds_items = np.where(res.items >= 0, model_cols[c.positions[np.maximum(res.items, 0)]], -1)
            lists[stage] = ds_items.astype(np.int64)
        for stage, r in lists.items():
            m = per_user(hits(r, rel), n_rel, k)
            for name in METRICS:
                values[stage][name][pos] = m[name]
    counts = {s: dict(cands[s].counts) for s in ("candidates", "available")}
    return {"values": values, "candidates": counts}
