"""Faults met on small hand-made data: ties broken as precompute breaks them, intervals that hold their figure."""

from __future__ import annotations

import datetime as dt

import numpy as np
import pyarrow as pa
import pytest
import scipy.sparse as sp

from skyrec.evaluation.offline import Scored, evaluate


def _tied() -> tuple[sp.csr_matrix, sp.csr_matrix, Scored]:
    """User 0 played item 0 and plays item 3 next; users 1 and 2 played item 3. Every score is 0 (an item-kNN
    user whose links run out): precompute serves the most played remaining item, item 3, not item 1."""
    train = sp.csr_matrix(np.array([[1, 0, 0, 0], [0, 0, 0, 1], [0, 0, 0, 1]], np.float32))
    test = sp.csr_matrix(np.array([[0, 0, 0, 1], [0, 0, 0, 0], [0, 0, 0, 0]], np.float32))
    return train, test, Scored(np.zeros((3, 1), np.float32), np.zeros((4, 1), np.float32))


def test_offline_figures_break_ties_as_precompute_does() -> None:
    train, test, model = _tied()
    out = evaluate({"m": model}, train, test, k=1, resamples=50)
    overall = out["models"]["m"]["overall"]
    assert overall["users"] == 1 and overall["recall_at_k"] == 1.0  # item 3 (2 listeners) before item 1 (none)
    assert overall["ci"]["recall_at_k"] == [1.0, 1.0]
    # the popularity histogram still counts the dataset's item 3, the most played: percentile 1
    hist = out["distributions"]["m"]["recommended_popularity_percentile"]
    assert hist["counts"][-1] == 1 and sum(hist["counts"]) == 1


def test_rules_stages_break_ties_as_precompute_does() -> None:
    """A rail with no filter over a catalogue holding every item adds no rule: its ``candidates`` stage (the
    precompute kernel) and the ``exclude_played`` stage are the same list, so the same figure."""
    from skyrec.data.schemas import CATALOGUE
    from skyrec.evaluation.rules import rules_figures

    at = dt.datetime(2026, 3, 1, tzinfo=dt.UTC)
    old = at - dt.timedelta(days=30)
    ids = [f"i{j}" for j in range(4)]
    catalogue = pa.table({
        "item_id": ids, "title": ids, "brand_id": ids, "brand_title": ids, "series_id": ids,
        "masterbrand": ["m"] * 4, "genres": [["Comedy"]] * 4, "formats": [[]] * 4, "release_ts": [old] * 4,
        "duration_seconds": [60] * 4, "available_from": [old] * 4, "available_until": [None] * 4,
        "updated_ts": [old] * 4}, schema=CATALOGUE)
    train, test, model = _tied()
    got = rules_figures(item_ids=np.array(ids, dtype=object), user_factors=model.user_factors,
                        item_factors=model.item_factors, scorable=None, users=np.array([0]), train=train,
                        relevant=test, catalogue=catalogue, availability=None, at=at, candidate_filter={},
                        max_age_days={}, max_per_brand=None, k=1)
    recall = {stage: float(v["recall_at_k"][0]) for stage, v in got["values"].items()}
    assert recall == {"model": 1.0, "exclude_played": 1.0, "candidates": 1.0, "available": 1.0, "served": 1.0}


def _holds(ci: list, point: float) -> bool:
    return ci[0] <= point <= ci[1]


def test_a_degenerate_interval_holds_its_figure() -> None:
    """Every user with the same value: the interval is that value, never a rounding error beside it (seen on
    a data set of 120 users with one test item each: precision 0.1, 95% CI [0.09999999999999987,
    0.09999999999999995])."""
    from skyrec.evaluation.stats import paired_comparison

    rel = sp.csr_matrix((np.ones(120, np.float32), (np.arange(120), np.arange(120) % 5)), shape=(120, 5))
    train = sp.csr_matrix((np.ones(120, np.float32), (np.arange(120), 5 + np.arange(120) % 3)), shape=(120, 8))
    test = sp.hstack([rel, sp.csr_matrix((120, 3), dtype=np.float32)]).tocsr()
    perfect = Scored(sp.hstack([rel, sp.csr_matrix((120, 3), dtype=np.float32)]).tocsr(),
                     np.eye(8, dtype=np.float32))  # the user's test item scores 1, everything else 0
    out = evaluate({"m": perfect}, train, test, k=10, resamples=200)["models"]["m"]["overall"]
    assert out["users"] == 120 and out["precision_at_k"] == pytest.approx(0.1)
    for metric in ("precision_at_k", "recall_at_k", "ndcg_at_k", "map_at_k"):
        assert _holds(out["ci"][metric], out[metric]), (metric, out[metric], out["ci"][metric])
    c = paired_comparison(np.full(120, 0.3), np.full(120, 0.1), resamples=1000, seed=0, confidence=0.95)
    assert _holds(c["ci"], c["difference"]) and _holds(c["relative_ci"], c["relative"]), c


def test_no_evaluable_user_is_insufficient_evidence_not_a_crash() -> None:
    """A global holdout whose last days hold only new listeners: train and test are both non-empty, yet no
    test user has a training history. The evaluation says 0 users (it raised ``KeyError: 'precision_at_k'``)
    and the gate applies the configured policy, as below ``min_users`` (it failed under either policy)."""
    from skyrec.evaluation.gate import quality_gate

    train = sp.csr_matrix(np.array([[1, 0, 0], [0, 1, 0], [0, 0, 0]], np.float32))
    test = sp.csr_matrix(np.array([[0, 0, 0], [0, 0, 0], [1, 0, 1]], np.float32))  # only user 2, who is new
    per_user: dict = {}
    out = evaluate({"m": Scored(np.ones((3, 1), np.float32), np.ones((3, 1), np.float32))}, train, test, k=2,
                   resamples=50, per_user_out=per_user)
    overall = out["models"]["m"]["overall"]
    assert out["users_evaluated"] == 0 and overall["users"] == 0 and overall["ndcg_at_k"] is None
    assert overall["coverage"] is None and overall["novelty"] is None  # nothing was listed: no figure, not 0
    assert overall["ci"]["ndcg_at_k"] == [None, None] and len(per_user["users"]) == 0
    kw = {"metric": "ndcg_at_k", "new": None, "users": 0, "min_users": 100, "baseline": None, "published": None,
          "tolerance": 0.05, "must_beat_baseline": True}
    alert = quality_gate(policy="publish_with_alert", **kw)
    assert alert.passed and alert.details["insufficient_evidence"]
    assert "no evaluable test users" in alert.details["alert"] and "publish_with_alert" in alert.details["alert"]
    held = quality_gate(policy="hold", **kw)
    assert not held.passed and held.details["insufficient_evidence"] and "policy 'hold'" in held.message


def test_the_published_model_is_rescored_with_precompute_ties_too() -> None:
    """The gate's paired comparison with the published model (``compare.rescore_published``) scores both
    models' lists with precompute's tie-break: all scores 0, both serve item 3 (two listeners), not item 1."""
    from types import SimpleNamespace

    from skyrec.evaluation.compare import rescore_published

    train, test, model = _tied()
    ids, users = np.array([f"i{j}" for j in range(4)], dtype=object), np.array(["u0", "u1", "u2"], dtype=object)
    published = SimpleNamespace(user_ids=users, item_ids=ids, user_factors=model.user_factors,
                                item_factors=model.item_factors, seen=train)
    out = rescore_published(user_ids=users, item_ids=ids, train=train, test=test, users=np.array([0]),
                            new_user_factors=model.user_factors, new_item_factors=model.item_factors,
                            new_scorable=None, published=published, k=1)
    assert out["new"]["recall_at_k"].tolist() == [1.0] and out["published"]["recall_at_k"].tolist() == [1.0]
