"""The evaluation refuses models that are not finite, measures the lists the kernel serves when a product
overflows, its gate fails on figures that are not numbers, and the cold-start figure says what is true when a
model cannot score cold items or there are none."""

from __future__ import annotations

import numpy as np
import pytest
import scipy.sparse as sp

from skyrec.evaluation.compare import rescore_published
from skyrec.evaluation.gate import quality_gate
from skyrec.evaluation.offline import Scored, evaluate
from skyrec.evaluation.report import render
from skyrec.models.artefact import ModelArtefact
from skyrec.models.representations import NonFiniteError

NAN = float("nan")


@pytest.fixture(scope="module")
def split() -> tuple[sp.csr_matrix, sp.csr_matrix, np.ndarray, np.ndarray]:
    rng = np.random.default_rng(0)
    train = sp.random(80, 50, density=0.2, format="csr", random_state=1, dtype=np.float32)
    test = sp.random(80, 50, density=0.1, format="csr", random_state=2, dtype=np.float32)
    train.data[:], test.data[:] = 1.0, 1.0
    return train, test, rng.standard_normal((80, 4)).astype(np.float32), rng.standard_normal((50, 4)).astype(np.float32)


def test_evaluate_refuses_non_finite_factors_naming_the_model(split) -> None:
    """Before: measured as if the NaN items did not exist, with plausible figures and no word of it."""
    train, test, U, V = split
    bad = V.copy()
    bad[:5, 0] = np.nan
    with pytest.raises(NonFiniteError, match=r"evaluate: model 'als': non-finite values in item factors: 5 of 200 "):
        evaluate({"als": Scored(U, bad)}, train, test, k=5, resamples=10)
    # rows of items the model cannot score are ignored, and not checked
    mask = np.ones(50, bool)
    mask[:5] = False
    evaluate({"als": Scored(U, bad, mask)}, train, test, k=5, resamples=10)


def test_overflowing_scores_are_not_recommended_as_in_the_kernel(split) -> None:
    """Items whose product overflows to +inf: before, the evaluation's top-k held a -1 hole for each (its list
    lost them, while the kernel served them first); now both leave them out, so the figures equal those of the
    model with those items unscorable."""
    train, test, U, V = split
    U2 = np.hstack([np.full((80, 1), 1e20, np.float32), U])
    V2 = np.hstack([np.zeros((50, 1), np.float32), V])
    V2[[3, 7, 11], 0] = 1e20  # +inf for every user
    scorable = np.ones(50, bool)
    scorable[[3, 7, 11]] = False
    with np.errstate(over="ignore", invalid="ignore"):
        got = evaluate({"m": Scored(U2, V2)}, train, test, k=5, resamples=10)["models"]["m"]["overall"]
    want = evaluate({"m": Scored(U, V, scorable)}, train, test, k=5, resamples=10)["models"]["m"]["overall"]
    for metric in ("precision_at_k", "recall_at_k", "ndcg_at_k", "map_at_k", "coverage"):
        assert got[metric] == pytest.approx(want[metric]), metric


def test_rescoring_a_published_model_with_non_finite_factors_is_refused(split) -> None:
    train, test, U, V = split
    bad = U.copy()
    bad[2, 1] = np.inf
    art = ModelArtefact(user_ids=np.array([f"u{i}" for i in range(80)], object),
                        item_ids=np.array([f"i{j}" for j in range(50)], object), user_factors=bad, item_factors=V,
                        seen=sp.csr_matrix((80, 50), dtype=np.float32), path="models/als/v1/run=0")
    with pytest.raises(NonFiniteError, match=r"published model models/als/v1/run=0: .*user_factors: 1 of 320"):
        rescore_published(user_ids=art.user_ids, item_ids=art.item_ids, train=train, test=test, users=np.arange(80),
                          new_user_factors=U, new_item_factors=V, new_scorable=None, published=art, k=5)


def _gate(**kw):
    base = {"metric": "ndcg_at_k", "new": 0.2, "users": 500, "min_users": 100, "policy": "hold", "tolerance": 0.05,
            "baseline": None, "published": None, "must_beat_baseline": False}
    return quality_gate(**{**base, **kw})


def test_the_gate_fails_on_a_metric_that_is_not_a_number() -> None:
    """Before: ``ndcg_at_k nan on 500 users`` passed."""
    for value in (NAN, float("inf"), np.float32("nan")):
        result = _gate(new=value)
        assert not result.passed and "not a finite number" in result.message
    assert _gate(new=0.2).passed


def test_the_gate_fails_on_a_comparison_that_is_not_a_number() -> None:
    """Before: a NaN interval against the published model compared false with every bound and passed."""
    broken = {"users": 500, "mean_a": 0.2, "mean_b": NAN, "difference": NAN, "ci": [NAN, NAN], "model_version": "v1.x"}
    result = _gate(published=broken)
    assert not result.passed and "with the published model v1.x is not finite" in result.message
    result = _gate(baseline={**broken, "mean_b": 0.1}, must_beat_baseline=True)
    assert not result.passed and "with the baseline is not finite" in result.message
    fine = {**broken, "mean_b": 0.19, "difference": 0.02, "ci": [0.01, 0.03]}
    assert _gate(published=fine).passed


# ---- cold-start items ----------------------------------------------------------------------------------

def _cold_case():
    """Items 3 and 4 have no training plays (cold); users 0 and 1 play them in the test window, user 2 does not."""
    train = sp.csr_matrix(np.array([[1, 1, 0, 0, 0], [0, 1, 1, 0, 0], [1, 0, 1, 0, 0]], np.float32))
    test = sp.csr_matrix(np.array([[0, 0, 1, 1, 0], [1, 0, 0, 0, 1], [0, 1, 0, 0, 0]], np.float32))
    U = np.array([[1.0], [2.0], [1.0]], np.float32)
    V = np.array([[0.1], [0.2], [0.3], [0.5], [0.4]], np.float32)
    cold = np.array([False, False, False, True, True])
    return train, test, U, V, cold


def test_a_model_that_cannot_score_cold_items_says_so_and_counts_the_users() -> None:
    """Before: ``{"cold_item_recall_at_k": None, "users": 0}`` -- as if nobody had played a cold item."""
    train, test, U, V, cold = _cold_case()
    warm = np.array([True, True, True, False, False])
    res = evaluate({"hybrid": Scored(U, V), "als": Scored(U, V, warm)}, train, test, k=1, cold_items=cold,
                   resamples=10)
    scored, unscored = res["models"]["hybrid"]["cold_start"], res["models"]["als"]["cold_start"]
    assert scored["users"] == 2 and scored["cold_item_recall_at_k"] == pytest.approx(0.5)
    assert "not_scored" not in scored
    assert unscored["users"] == 2 and unscored["cold_item_recall_at_k"] is None
    assert unscored["not_scored"] == "als cannot score items without training plays"
    assert unscored["random_expectation"] == scored["random_expectation"] == 0.5

    html = render({"model": "als", "results": res})
    assert "als cannot score items without training plays" in html
    assert "<td>not scored</td>" in html  # the overall table's cell, not a bare dash


def test_a_model_that_scores_only_some_cold_items_says_how_many_it_cannot() -> None:
    train, test, U, V, cold = _cold_case()
    res = evaluate({"m": Scored(U, V, np.array([True, True, True, True, False]))}, train, test, k=1, cold_items=cold,
                   resamples=10)
    assert res["models"]["m"]["cold_start"]["not_scored"] == "m cannot score 1 of the 2 items without training plays"
    assert res["models"]["m"]["cold_start"]["users"] == 2


def test_no_cold_items_is_said_not_shown_as_zero_users() -> None:
    train, test, U, V, _ = _cold_case()
    for cold in (None, np.zeros(5, bool)):
        res = evaluate({"m": Scored(U, V)}, train, test, k=1, cold_items=cold, resamples=10)
        block = res["models"]["m"]["cold_start"]
        assert block["cold_item_recall_at_k"] is None and block["users"] == 0
        assert block["not_scored"].startswith("no cold items")
        html = render({"model": "m", "results": res})
        assert "no cold items: every catalogue item has training plays" in html and "<td>no cold items</td>" in html


def test_cold_items_nobody_played_in_the_test_window_are_said_so() -> None:
    train, test, U, V, cold = _cold_case()
    test = test.tolil()
    test[:, 3:] = 0
    res = evaluate({"m": Scored(U, V)}, train, sp.csr_matrix(test), k=1, cold_items=cold, resamples=10)
    block = res["models"]["m"]["cold_start"]
    assert block["users"] == 0 and block["cold_item_recall_at_k"] is None
    assert block["not_scored"] == "no evaluated user played an item without training plays in the test window"


def test_the_report_puts_the_verdict_first_in_words_and_every_figure_with_its_interval(tmp_path) -> None:
    """The gate's verdict in words before the tables (not a dump of its fields), each headline figure with its
    interval in the overall and per-rail tables and as whiskers on the charts, the level as a percentage, and
    wide tables scroll inside their box."""
    import re

    from skyrec.evaluation.report import render

    res = {"k": 10, "users_evaluated": 300, "n_items": 40, "cold_items": 0, "candidate_items": {"rail": 20},
           "bootstrap": {"confidence": 0.975, "resamples": 200, "seed": 0},
           "distributions": {}, "models": {}}
    for m, base in (("als", 0.3), ("popularity", 0.1)):
        overall = {c: base for c in ("precision_at_k", "recall_at_k", "ndcg_at_k", "map_at_k", "coverage")}
        ci = {c: [base - 0.01, base + 0.02] for c in ("precision_at_k", "recall_at_k", "ndcg_at_k", "map_at_k")}
        res["models"][m] = {"overall": {**overall, "users": 300, "ci": ci},
                            "variants": {"rail": {**overall, "users": 120, "ci": ci}},
                            "cold_start": {"cold_item_recall_at_k": None, "not_scored": "no cold items"}}
    gate = {"passed": False, "overridden": False, "insufficient_evidence": False, "metric": "ndcg_at_k",
            "new": 0.3, "users": 300, "min_users": 100, "policy": "hold", "must_beat_baseline": True,
            "tolerance": 0.05, "message": "ndcg_at_k 0.3000 is below the 0.3500 of the published model",
            "baseline_comparison": {"users": 300}}
    page = render({"model": "als", "model_version": "v1.x", "results": res, "gate": gate,
                   "split": {"kind": "per_user", "test_fraction": 0.2, "users_tested": 300}})
    assert page.index("<h2>Quality gate: failed: held, not published</h2>") < page.index("<h2>Overall</h2>")
    assert "ndcg_at_k 0.3000 is below the 0.3500 of the published model" in page
    assert "gate_" not in page and "baseline_comparison" not in page  # no dump of the gate's fields
    assert "Intervals: 97.5% confidence" in page and "0.9750" not in page
    assert page.count("300 users tested") == 1 and "300 test users" not in page
    assert page.count("0.3000<br><small>[0.2900, 0.3200]</small>") == 4 * 2  # overall and the rail: 4 metrics
    assert len(re.findall(r'<path class="ci"', page)) == 2 * 4 + 2  # overall bars (coverage has none), per rail
    assert "overflow-x:auto" in page and page.count("<div class='wide'>") >= 3
    assert "Quality gate: insufficient evidence: published with an alert" in render(
        {"model": "als", "results": res, "gate": {**gate, "passed": True, "insufficient_evidence": True}})


def test_the_reports_search_section_says_why_no_search_ran_and_what_had_no_effect() -> None:
    from skyrec.evaluation.report import _search

    search = {"model": "knn", "metric": "ndcg_at_k", "k": 10, "trials": [], "space": {"bm25_b": {}},
              "best": {"number": 0, "value": 0.2, "params": {"bm25_b": 0.3}}, "stopped": "no_validation_users",
              "note": "no search ran: no user has two or more training positives; the configured params are used",
              "not_applying": {"bm25_b": "applies only with similarity bm25 (similarity is 'cosine')"}}
    page = "".join(_search({"search": search}))
    assert "no search ran: no user has two or more training positives" in page
    assert "Chosen, but without effect here: bm25_b (applies only with similarity bm25" in page
    assert "without effect" not in "".join(_search({"search": {**search, "not_applying": {}, "note": None}}))
