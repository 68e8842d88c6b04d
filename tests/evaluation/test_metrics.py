"""Metrics against values computed by hand on tiny cases."""

from __future__ import annotations

import math

import numpy as np
import pytest
import scipy.sparse as sp

from skyrec.evaluation.metrics import hits, per_user, popularity_percentile, top_k
from skyrec.evaluation.offline import Scored, candidate_mask, evaluate


def test_per_user_metrics_match_hand_computation() -> None:
    rec = np.array([[0, 1, 2], [3, 4, 5]])
    relevant = sp.csr_matrix(np.array([[0, 1, 0, 0, 0, 1], [0, 0, 0, 1, 1, 0]], dtype=np.float32))
    h = hits(rec, relevant)
    assert h.tolist() == [[False, True, False], [True, True, False]]
    m = per_user(h, np.array([2, 2]), 3)
    # user 0: one hit at rank 2 of 2 relevant
    assert m["precision_at_k"][0] == pytest.approx(1 / 3)
    assert m["recall_at_k"][0] == pytest.approx(1 / 2)
    idcg = 1 + 1 / math.log2(3)
    assert m["ndcg_at_k"][0] == pytest.approx((1 / math.log2(3)) / idcg)
    assert m["map_at_k"][0] == pytest.approx((1 / 2) / 2)
    # user 1: hits at ranks 1 and 2: perfect
    assert m["precision_at_k"][1] == pytest.approx(2 / 3)
    assert m["recall_at_k"][1] == pytest.approx(1.0)
    assert m["ndcg_at_k"][1] == pytest.approx(1.0)
    assert m["map_at_k"][1] == pytest.approx(1.0)


def test_top_k_breaks_ties_by_index_and_marks_excluded() -> None:
    scores = np.array([[1.0, 3.0, 3.0, -np.inf, 2.0], [0.0, 0.0, 0.0, 0.0, 0.0]], dtype=np.float32)
    idx, vals = top_k(scores, 3)
    assert idx.tolist() == [[1, 2, 4], [0, 1, 2]]
    idx, _ = top_k(np.array([[1.0, -np.inf, -np.inf]], np.float32), 3)
    assert idx.tolist() == [[0, -1, -1]]
    idx, _ = top_k(np.array([[1.0, 2.0]], np.float32), 4)  # k beyond the items: padded
    assert idx.tolist() == [[1, 0, -1, -1]]


def test_popularity_percentile_shares_ties() -> None:
    assert popularity_percentile(np.array([5, 1, 1, 9])).tolist() == pytest.approx([2 / 3, 1 / 6, 1 / 6, 1.0])


def test_evaluate_on_a_tiny_split() -> None:
    """2 users, 4 items; hand-made factors. User 0 trained on item 0, plays 1 and 2 in test; user 1 trained
    on item 3, plays item 2. The model ranks items 1 > 2 > 3 > 0 for everyone, k=2."""
    train = sp.csr_matrix(np.array([[1, 0, 0, 0], [0, 0, 0, 1]], dtype=np.float32))
    test = sp.csr_matrix(np.array([[0, 1, 1, 0], [0, 0, 1, 0]], dtype=np.float32))
    U = np.ones((2, 1), np.float32)
    V = np.array([[0.1], [0.9], [0.8], [0.5]], np.float32)
    res = evaluate({"m": Scored(U, V)}, train, test, k=2)
    o = res["models"]["m"]["overall"]
    # user 0: recs [1, 2] (0 excluded), both relevant; user 1: recs [1, 2], item 2 relevant at rank 2
    assert o["users"] == 2
    assert o["precision_at_k"] == pytest.approx((1.0 + 0.5) / 2)
    assert o["recall_at_k"] == pytest.approx((1.0 + 1.0) / 2)
    assert o["ndcg_at_k"] == pytest.approx((1.0 + 1 / math.log2(3)) / 2)
    assert o["map_at_k"] == pytest.approx((1.0 + 0.5) / 2)
    assert o["coverage"] == pytest.approx(2 / 4)
    # training users per item: [1, 0, 0, 1]; recommended items 1 and 2 twice each
    assert o["novelty"] == pytest.approx(-math.log2(1 / 3))
    # a model that cannot score item 2 loses those hits but is judged on the same relevant items
    masked = evaluate({"m": Scored(U, V, np.array([True, True, False, True]))}, train, test, k=2)
    assert masked["models"]["m"]["overall"]["recall_at_k"] == pytest.approx((0.5 + 0.0) / 2)


def test_evaluate_candidate_sets_and_cold_items() -> None:
    train = sp.csr_matrix(np.array([[1, 0, 0, 0], [1, 0, 0, 0]], dtype=np.float32))
    test = sp.csr_matrix(np.array([[0, 1, 0, 1], [0, 0, 1, 0]], dtype=np.float32))
    U = np.array([[1.0], [-1.0]], np.float32)
    V = np.array([[0.0], [1.0], [0.5], [2.0]], np.float32)
    cold = np.array([False, False, True, True])
    res = evaluate({"m": Scored(U, V)}, train, test, k=1, candidate_sets={"odd": np.array([0, 1, 0, 1], bool)},
                   cold_items=cold)
    v = res["models"]["m"]["variants"]["odd"]
    # candidates {1, 3}: user 0 gets 3 (relevant); user 1 has no relevant candidate and is not counted
    assert v["users"] == 1 and v["precision_at_k"] == 1.0
    cs = res["models"]["m"]["cold_start"]
    # cold items {2, 3}: user 0 -> 3 (hit), user 1 -> 2 (hit, since -1 * 0.5 > -1 * 2)
    assert cs["cold_item_recall_at_k"] == 1.0 and cs["users"] == 2 and cs["random_expectation"] == 0.5


def test_candidate_mask_follows_the_variant_filter() -> None:
    names = np.array(["format=Talks", "genre=Comedy", "genre=Drama", "masterbrand=r4"], dtype=object)
    f = sp.csr_matrix(np.array([[0, 1, 0, 0], [1, 1, 0, 0], [1, 0, 1, 1], [0, 0, 0, 0]], dtype=np.float32))
    assert candidate_mask(names, f).tolist() == [True, True, True, True]
    assert candidate_mask(names, f, genres=["Comedy", "Drama"]).tolist() == [True, True, True, False]
    assert candidate_mask(names, f, genres=["Comedy"], formats=["Talks"]).tolist() == [False, True, False, False]
    assert candidate_mask(names, f, masterbrands=["r4"]).tolist() == [False, False, True, False]
    assert candidate_mask(names, f, genres=["Nope"]).tolist() == [False] * 4
