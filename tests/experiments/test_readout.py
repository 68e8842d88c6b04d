"""The readout statistics on simulated event tables with known truth (no API, no Redis: fast).

- one arm truly better on the primary metric -> the sequential test finds it;
- A/A over many seeded runs, each looked at daily -> the always-valid test's false-positive rate stays within
  alpha, where a fixed-horizon test read at every look does not;
- a skewed assignment -> the SRM check trips (and the decision refuses to read the metrics);
- a guardrail metric confidently worse than tolerated -> breached, with an alert.
"""

from __future__ import annotations

import math

import numpy as np
import pyarrow as pa
import pytest

from skyrec.experiments import readout
from skyrec.experiments.simulate import synthetic_events

SHARES = {"control": 0.5, "treatment": 0.5}


def read(events, durations=None, **kw):
    agg = readout.aggregate(events, experiment="exp", arms=list(SHARES), item_duration=durations)
    defaults = {"shares": SHARES, "default_arm": "control", "primary_metric": "plays_per_impression",
                "alpha": 0.05, "bootstrap": 50}
    return agg, readout.analyse(agg, **{**defaults, **kw})


def test_a_truly_better_arm_is_found() -> None:
    events, durations = synthetic_events(6000, SHARES, play_rate={"control": 0.20, "treatment": 0.25}, seed=1)
    agg, r = read(events, durations, guardrails={"click_through": -0.05})
    assert r["decision"]["status"] == "treatment_better", r["decision"]
    test = r["comparisons"]["treatment"]["sequential_test"]
    assert test["significant"] and test["p_value"] < 0.05
    lo, hi = test["interval"]
    assert lo < 0.05 < hi and lo > 0  # the always-valid interval holds the true difference, excludes 0
    for arm, rate in (("control", 0.20), ("treatment", 0.25)):
        est = r["arms"][arm]["plays_per_impression"]
        assert est["ci"][0] < rate < est["ci"][1] or abs(est["value"] - rate) < 0.01
    assert r["srm"]["mismatch"] is False
    assert r["comparisons"]["treatment"]["guardrails"]["click_through"]["status"] == "ok"
    pt = r["arms"]["control"]["play_through"]["value"]
    assert 0.4 < pt < 0.6  # plays last Beta(2, 2) of the item: half on average
    assert r["arms"]["control"]["exposure"]["users"] + r["arms"]["treatment"]["exposure"]["users"] == 6000
    assert 0 < r["arms"]["control"]["coverage"]["value"] <= 1 and r["arms"]["control"]["coverage"]["ci"]
    assert r["arms"]["control"]["novelty"]["value"] is not None


def _naive_significant(r: dict, z: float) -> bool:
    c, t = r["arms"]["control"]["plays_per_impression"], r["arms"]["treatment"]["plays_per_impression"]
    se = math.sqrt(c["var"] + t["var"])
    return abs(t["value"] - c["value"]) > z * se


def test_aa_false_positive_rate_within_alpha_with_daily_looks() -> None:
    """200 seeded A/A experiments, each read at 7 daily looks (the users so far). The always-valid test
    rejects in at most alpha of them (plus binomial slack); a fixed-horizon z-test read daily does not hold."""
    runs, looks, alpha = 200, 7, 0.05
    seq_rejections = naive_rejections = 0
    z = readout.normal_quantile(1 - alpha / 2)
    for seed in range(runs):
        events, _ = synthetic_events(1400, SHARES, play_rate=0.2, click_rate=0.3, impressions_per_user=2,
                                     items_per_impression=3, items=200, seed=1000 + seed)
        whole = readout.aggregate(events, experiment="exp", arms=list(SHARES))
        state, seq_hit, naive_hit = None, False, False
        for day in range(1, looks + 1):  # the users seen by the end of each day (user numbers in arrival order)
            agg = whole.subset_users(lambda ids, d=day: np.char.lstrip(
                ids.to_numpy(zero_copy_only=False).astype(str), "u").astype(np.int64) < 1400 * d // looks)
            r = readout.analyse(agg, shares=SHARES, default_arm="control", primary_metric="plays_per_impression",
                                alpha=alpha, previous=state, bootstrap=0)
            state = r["sequential"]
            seq_hit |= r["comparisons"]["treatment"]["sequential_test"]["significant"]
            naive_hit |= _naive_significant(r, z)
        seq_rejections += seq_hit
        naive_rejections += naive_hit
    # P(Binomial(200, 0.05) > 17) < 0.1%: the allowance for sampling error of the estimate of the rate
    assert seq_rejections <= 17, f"always-valid test: {seq_rejections}/{runs} false positives"
    assert naive_rejections > seq_rejections
    assert naive_rejections / runs > alpha, f"peeking at a fixed-horizon test: {naive_rejections}/{runs}"


def test_skewed_assignment_trips_srm() -> None:
    events, _ = synthetic_events(20000, SHARES, assigned_shares={"control": 0.52, "treatment": 0.48}, seed=3,
                                 impressions_per_user=1, items_per_impression=2, items=100)
    _, r = read(events, srm_alpha=0.001, bootstrap=0)
    assert r["srm"]["mismatch"] is True and r["srm"]["p_value"] < 0.001
    assert r["decision"]["status"] == "invalid_srm"
    assert r["alerts"][0]["kind"] == "experiment_srm"
    fair, _ = synthetic_events(20000, SHARES, seed=3, impressions_per_user=1, items_per_impression=2, items=100)
    _, ok = read(fair, srm_alpha=0.001, bootstrap=0)
    assert ok["srm"]["mismatch"] is False and ok["decision"]["status"] != "invalid_srm"


def test_guardrail_breach_alerts() -> None:
    events, _ = synthetic_events(6000, SHARES, click_rate={"control": 0.30, "treatment": 0.22}, seed=4)
    _, r = read(events, guardrails={"click_through": -0.05}, bootstrap=0)
    g = r["comparisons"]["treatment"]["guardrails"]["click_through"]
    assert g["status"] == "breached" and g["relative_change"] < -0.05
    assert r["decision"]["status"] == "guardrail_breached"
    assert [a["kind"] for a in r["alerts"]] == ["experiment_guardrail"]


def test_duplicates_conflicts_and_other_experiments_are_counted() -> None:
    events, _ = synthetic_events(300, SHARES, seed=5)
    dup = events.slice(0, 10)
    other = events.slice(0, 5).set_column(3, "experiment", pa.array(["other"] * 5))
    moved = events.slice(10, 1).set_column(4, "arm", pa.array(
        ["treatment" if events["arm"][10].as_py() == "control" else "control"]))
    moved = moved.set_column(0, "event_id", pa.array(["moved-1"]))
    agg, r = read(pa.concat_tables([events, dup, other, moved]), bootstrap=0)
    assert agg.duplicates == 10 and agg.not_in_experiment == 5 and agg.conflicting_users == 1
    assert sum(a.users for a in agg.arms.values()) == 299


def test_unknown_metric_is_refused() -> None:
    events, _ = synthetic_events(50, SHARES, seed=6)
    with pytest.raises(readout.ReadoutError, match="dwell_time"):
        read(events, primary_metric="dwell_time")


def test_msprt_matches_its_confidence_sequence() -> None:
    """The always-valid p-value is below alpha exactly when 0 is outside the confidence sequence."""
    rng = np.random.default_rng(0)
    for _ in range(200):
        diff, var, tau2 = rng.normal(0, 0.05), rng.uniform(1e-5, 1e-3), rng.uniform(1e-5, 1e-2)
        p = readout.msprt(diff, var, tau2)
        lo, hi = readout.confidence_sequence(diff, var, tau2, 0.05)
        assert (p < 0.05) == (not lo <= 0 <= hi)
