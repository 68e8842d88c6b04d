"""Bootstrap intervals, paired comparisons, the per-user split and the quality gate's decisions."""

from __future__ import annotations

import datetime as dt

import numpy as np
import pyarrow as pa
import pytest

from skyrec.evaluation.gate import quality_gate
from skyrec.evaluation.stats import confidence_intervals, paired_comparison
from skyrec.models.dataset import build_training_data, per_user_split

BOOT = {"resamples": 400, "seed": 3, "confidence": 0.95}


def test_interval_covers_the_mean_and_narrows_with_users() -> None:
    rng = np.random.default_rng(0)
    small, large = rng.random(50), rng.random(5000)
    ci = confidence_intervals({"small": np.r_[small, [np.nan] * 4950], "large": large}, **BOOT)
    for name, values in (("small", small), ("large", large)):
        lo, hi = ci[name]["ci"]
        assert lo < values.mean() < hi
        assert ci[name]["users"] == len(values)
    width = lambda n: ci[n]["ci"][1] - ci[n]["ci"][0]  # noqa: E731
    assert width("large") < width("small") / 5  # ~ 1 / sqrt(n): 10x more users, ~10x narrower
    # uniform(0, 1): standard error 0.289 / sqrt(n); the 95% interval is about +-1.96 of it
    assert width("large") == pytest.approx(2 * 1.96 * 0.2887 / np.sqrt(5000), rel=0.2)
    again = confidence_intervals({"large": large}, **BOOT)
    assert again["large"]["ci"] == ci["large"]["ci"]  # seeded: a re-run gives the same interval


def test_paired_comparison_sees_a_small_consistent_gain_that_unpaired_intervals_miss() -> None:
    rng = np.random.default_rng(1)
    base = rng.random(300)
    better = base + 0.02  # every user gains a little: overlapping intervals, yet a clear paired gain
    single = confidence_intervals({"a": better, "b": base}, **BOOT)
    assert single["a"]["ci"][0] < single["b"]["ci"][1]  # the loose intervals overlap
    paired = paired_comparison(better, base, **BOOT)
    assert paired["users"] == 300 and paired["ci"][0] > 0.019 and paired["p_value"] == 0.0
    noise = paired_comparison(base + rng.normal(0, 0.05, 300), base, **BOOT)
    assert noise["ci"][0] < 0 < noise["ci"][1]
    # only users defined for both count
    part = paired_comparison(np.r_[better[:100], [np.nan] * 200], base, **BOOT)
    assert part["users"] == 100


def _cmp(a: np.ndarray, b: np.ndarray, factor: float = 1.0) -> dict:
    return paired_comparison(a, b, factor=factor, **BOOT)


def test_gate_decisions() -> None:
    rng = np.random.default_rng(2)
    base = rng.random(400) * 0.2
    good = base + 0.05
    kw = {"metric": "ndcg_at_k", "min_users": 100, "tolerance": 0.05, "must_beat_baseline": True}
    ok = quality_gate(new=float(good.mean()), users=400, policy="hold", baseline=_cmp(good, base), published=None,
                      **kw)
    assert ok.passed and "no published model yet" in ok.message
    tie = quality_gate(new=float(base.mean()), users=400, policy="hold",
                       baseline=_cmp(base + rng.normal(0, 0.05, 400), base), published=None, **kw)
    assert not tie.passed and "beyond noise" in tie.message
    worse = _cmp(base, good, factor=0.95)
    r = quality_gate(new=float(base.mean()), users=400, policy="publish_with_alert", baseline=None,
                     published={**worse, "model_version": "v1.old"}, **kw)
    assert not r.passed and "below the published model's" in r.message  # a verdict, not a policy matter
    within = _cmp(good * 0.97, good, factor=0.95)  # 3% worse: inside the 5% tolerance
    r = quality_gate(new=float(good.mean()), users=400, policy="hold", baseline=_cmp(good, base),
                     published={**within, "model_version": "v1.old"}, **kw)
    assert r.passed and "vs published" in r.message
    # the interval is of new - 0.95 x published, and the message names it so (not a "difference" of +5%)
    shown = f"new - 0.95 x published {within['difference']:+.4f}, 95% CI"
    assert shown in r.message and "(difference" not in r.message.split("vs published")[1], r.message
    few = quality_gate(new=0.1, users=40, policy="hold", baseline=_cmp(good[:40], base[:40]), published=None, **kw)
    assert not few.passed and few.details["insufficient_evidence"] and "only 40 evaluable users" in few.message
    alert = quality_gate(new=0.1, users=40, policy="publish_with_alert", baseline=None, published=None, **kw)
    assert alert.passed and "insufficient evidence" in alert.details["alert"]
    assert "passed for publication under policy" in alert.details["alert"]  # publish_model has not run yet
    refused = quality_gate(new=float(good.mean()), users=400, policy="hold", baseline=_cmp(good, base),
                           published={"comparable": False, "reason": "protocols differ"}, **kw)
    assert not refused.passed and "cannot be compared: protocols differ" in refused.message
    with pytest.raises(ValueError, match="insufficient_evidence"):
        quality_gate(new=0.1, users=400, policy="maybe", baseline=None, published=None, **kw)
    # no comparison with the baseline to show it is beaten: a failure, never a skipped check
    blind = quality_gate(new=float(good.mean()), users=400, policy="hold", baseline=None, published=None, **kw)
    assert not blind.passed and "no paired comparison of ndcg_at_k with the baseline" in blind.message
    assert quality_gate(new=float(good.mean()), users=400, policy="hold", baseline=None, published=None,
                        **{**kw, "must_beat_baseline": False}).passed
    missing = quality_gate(new=None, users=400, policy="hold", baseline=None, published=None, **kw)
    assert not missing.passed and "not among this evaluation's figures" in missing.message
    # evaluating again the model that is published: not "no published model yet"
    again = quality_gate(new=float(good.mean()), users=400, policy="hold", baseline=_cmp(good, base),
                         published={"same_model": True}, **kw)
    assert again.passed and "this model is the one published" in again.message
    assert "no published model yet" not in again.message


def test_per_user_split_by_hand() -> None:
    # user 0: items 0..9 first played at t=0..9 (item 3 played again at t=20); user 1: one item only
    u = np.array([0] * 11 + [1])
    i = np.array([*range(10), 3, 5])
    ts = np.array([*range(10), 20, 4])
    split, test = per_user_split(u, i, ts, test_fraction=0.2, test_items=None, min_train_items=1)
    assert split[0] == 8 and split[1] == np.iinfo(np.int64).max  # user 1 keeps its only item in train
    assert sorted(i[test].tolist()) == [8, 9]                 # the latest 20% of user 0's positives
    split, test = per_user_split(u, i, ts, test_fraction=0.2, test_items=3, min_train_items=1)
    assert sorted(i[test].tolist()) == [7, 8, 9]
    split, test = per_user_split(u, i, ts, test_fraction=0.5, test_items=None, min_train_items=8)
    assert sorted(i[test].tolist()) == [8, 9]  # at most 10 - 8 test items


def test_a_cut_inside_a_tie_of_play_times_is_counted() -> None:
    """Day-level times (a ratings file): a user whose positives share one instant is cut by the items' order
    in the activity, and the split says for how many users that happened."""
    u = np.array([0] * 5 + [1] * 5 + [2] * 5)
    i = np.array([4, 3, 2, 1, 0] * 3)
    ts = np.array([7] * 5 + [1, 2, 3, 4, 5] + [1, 2, 3, 5, 5])  # user 0: one instant; 2: a tie at the cut
    out: dict = {}
    split, test = per_user_split(u, i, ts, test_fraction=0.2, test_items=None, min_train_items=1, out=out)
    assert out == {"cut_in_a_tie": 2}  # users 0 and 2; user 1's latest item is strictly the latest
    # equal times: the higher code (the item first seen later in the activity) is the later one
    assert sorted(zip(u[test].tolist(), i[test].tolist(), strict=True)) == [(0, 4), (1, 0), (2, 1)]
    out = {}
    per_user_split(u, i, ts, test_fraction=0.2, test_items=2, min_train_items=1, out=out)
    assert out == {"cut_in_a_tie": 1}  # user 2's two latest (items 0, 1) tie with each other, not across the cut


def test_per_user_split_tests_quiet_users_the_global_split_leaves_out() -> None:
    end = dt.datetime(2026, 3, 1, tzinfo=dt.UTC)
    rows = []
    for user, last_day in (("active", 0), ("quiet", 20)):  # "quiet" has not played for 20 days
        for n in range(10):
            rows.append((user, f"i{n}", end - dt.timedelta(days=last_day + 10 - n)))
    table = pa.table({"user_id": [r[0] for r in rows], "item_id": [r[1] for r in rows],
                      "event_type": ["play"] * len(rows), "event_ts": [r[2] for r in rows],
                      "played_seconds": [60.0] * len(rows)})
    kw = {"weighting": {"play": 1.0}, "played_fraction_weight": 0.0, "half_life_days": 30, "holdout_days": 7}
    per_user, _ = build_training_data(table, None, split={"kind": "per_user", "test_fraction": 0.2}, **kw)
    glob, _ = build_training_data(table, None, split={"kind": "global"}, **kw)
    tested = lambda d: sorted(d.user_ids[np.diff(d.test.indptr) > 0].tolist())  # noqa: E731
    assert tested(per_user) == ["active", "quiet"] and tested(glob) == ["active"]
    assert per_user.meta["split"] == {"kind": "per_user", "test_fraction": 0.2, "test_items": None,
                                      "min_train_items": 1, "users_tested": 2, "users_cut_in_a_tie": 0,
                                      "positives": "distinct items played, dated by their first play",
                                      "tie_break": "equal first-play times: the item that appears first in "
                                                   "the activity is older"}
    assert glob.meta["split"]["kind"] == "global" and glob.meta["split"]["holdout_days"] == 7
    # per user: train and test never share a (user, item), and train is strictly before the test items
    assert per_user.train.multiply(per_user.test).nnz == 0
    assert per_user.test.nnz == 4 and per_user.train.nnz == 16


def test_rules_figures_show_the_cost_of_each_rule_with_the_precompute_code() -> None:
    """One user, scores i0 > i1 > ... > i5; played i0; relevant i2 and i5; k = 3; one item per brand."""
    import scipy.sparse as sp

    from skyrec.data.schemas import CATALOGUE
    from skyrec.evaluation.rules import rules_figures

    at = dt.datetime(2026, 3, 1, tzinfo=dt.UTC)
    old = at - dt.timedelta(days=30)
    ids = [f"i{j}" for j in range(6)]
    catalogue = pa.table({
        "item_id": ids, "title": ids, "brand_id": ["A", "A", "A", "B", "C", "D"], "brand_title": ids,
        "series_id": ids, "masterbrand": ["m"] * 6,
        "genres": [["Comedy"], ["Comedy"], ["Comedy"], ["Comedy"], ["Drama"], ["Comedy"]], "formats": [[]] * 6,
        "release_ts": [old] * 6, "duration_seconds": [60] * 6, "available_from": [old] * 6,
        "available_until": [None] * 6, "updated_ts": [old] * 6}, schema=CATALOGUE)
    availability = catalogue.select(["item_id", "available_from", "available_until"]).filter(
        pa.array([x != "i3" for x in ids]))  # i3 is not playable now
    train = sp.csr_matrix(np.array([[1, 0, 0, 0, 0, 0]], np.float32))
    relevant = sp.csr_matrix(np.array([[0, 0, 1, 0, 0, 1]], np.float32))
    got = rules_figures(item_ids=np.array(ids, dtype=object), user_factors=np.ones((1, 1), np.float32),
                        item_factors=np.arange(6, 0, -1, dtype=np.float32)[:, None], scorable=None,
                        users=np.array([0]), train=train, relevant=relevant, catalogue=catalogue,
                        availability=availability, at=at, candidate_filter={"genres": ["Comedy"]},
                        max_age_days={}, max_per_brand=1, k=3)
    recall = {stage: float(v["recall_at_k"][0]) for stage, v in got["values"].items()}
    # model [i0 i1 i2] -> i2; minus played [i1 i2 i3] -> i2; Comedy only: same; available [i1 i2 i5] -> both;
    # one per brand [i1 i5] (i2 shares i1's brand; i3 unavailable; i4 is Drama) -> i5
    assert recall == {"model": 0.5, "exclude_played": 0.5, "candidates": 0.5, "available": 1.0, "served": 0.5}
    assert got["candidates"]["available"]["unavailable"] == 1 and got["candidates"]["candidates"]["filter_excluded"] == 1
