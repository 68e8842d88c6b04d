"""Assignment: sticky, uniform, independent between experiments; resolve() applies dates, traffic and decisions."""

from __future__ import annotations

import datetime as dt
import hashlib
import re

import numpy as np
from scipy import stats

from skyrec.experiments.assign import (
    NO_OVERRIDES,
    Assignment,
    Overrides,
    assign,
    bucket,
    mint_impression_id,
    resolve,
    response_fields,
)
from skyrec.experiments.config import ExperimentConfig
from skyrec.experiments.events import IMPRESSION_ID_PATTERN

START = dt.datetime(2026, 12, 1, tzinfo=dt.UTC)
END = dt.datetime(2026, 12, 29, tzinfo=dt.UTC)
LIVE = dt.datetime(2026, 12, 10, tzinfo=dt.UTC)
N = 100_000
IDS = [f"user-{i}" for i in range(N)]


def experiment(**over) -> ExperimentConfig:
    spec = {"rail": "recommended_for_you", "salt": "rfy-2026-12", "start": START, "end": END, "traffic": 1.0,
            "default_arm": "control",
            "arms": {"control": {"variant": "recommended_for_you", "share": 0.5},
                     "treatment": {"variant": "recommended_for_you_ease", "share": 0.3},
                     "third": {"variant": "recommended_for_you_knn", "share": 0.2}},
            "primary_metric": "plays_per_impression"}
    spec.update(over)
    return ExperimentConfig.model_validate(spec)


def test_bucket_is_the_contract_formula():
    digest = hashlib.blake2b(b"rfy-2026-12\x00alice").digest()
    assert bucket("rfy-2026-12", "alice") == int.from_bytes(digest[:8], "big") / 2**64


def test_sticky_same_user_same_arm_every_time_and_every_day():
    exp = experiment()
    first = [assign(exp, "e", uid, LIVE).arm for uid in IDS[:2000]]
    later = [assign(exp, "e", uid, LIVE + dt.timedelta(days=5, hours=3)).arm for uid in IDS[:2000]]
    assert first == later


def test_arms_are_split_by_their_shares_chi_square_over_100k_ids():
    exp = experiment()
    arms = [assign(exp, "e", uid, LIVE).arm for uid in IDS]
    observed = [arms.count(a) for a in ("control", "treatment", "third")]
    expected = [N * 0.5, N * 0.3, N * 0.2]
    assert stats.chisquare(observed, expected).pvalue > 0.001, observed


def test_buckets_are_uniform_chi_square_over_100k_ids():
    b = np.array([bucket("salt-a", uid) for uid in IDS])
    counts = np.bincount((b * 20).astype(int), minlength=20)
    assert stats.chisquare(counts).pvalue > 0.001, counts
    assert b.min() >= 0 and b.max() < 1


def test_two_salts_are_independent_chi_square_contingency():
    a = np.array([bucket("experiment-one", uid) for uid in IDS])
    b = np.array([bucket("experiment-two", uid) for uid in IDS])
    table = np.zeros((4, 4))
    np.add.at(table, ((a * 4).astype(int), (b * 4).astype(int)), 1)
    assert stats.chi2_contingency(table).pvalue > 0.001, table
    assert abs(np.corrcoef(a, b)[0, 1]) < 0.02


def test_a_dependent_assignment_would_be_caught():
    """The independence test has teeth: a second 'salt' that is a function of the first is rejected."""
    a = np.array([bucket("experiment-one", uid) for uid in IDS[:20000]])
    b = (a * 2) % 1.0
    table = np.zeros((4, 4))
    np.add.at(table, ((a * 4).astype(int), (b * 4).astype(int)), 1)
    assert stats.chi2_contingency(table).pvalue < 1e-6


def test_traffic_fraction_and_changing_it_keeps_included_users_in_their_arm():
    half = experiment(traffic=0.5)
    full = experiment(traffic=1.0)
    inside = 0
    for uid in IDS[:20000]:
        a = assign(half, "e", uid, LIVE)
        if a.in_experiment:
            inside += 1
            assert a.arm == assign(full, "e", uid, LIVE).arm
        else:
            assert a.arm == "control" and a.variant == "recommended_for_you"
            assert a.logged_arm is None and a.logged_experiment is None
    assert abs(inside / 20000 - 0.5) < 0.02


def test_outside_the_dates_or_stopped_everyone_gets_the_default_arm():
    exp = experiment()
    for when in (START - dt.timedelta(seconds=1), END):
        assert {assign(exp, "e", uid, when) for uid in IDS[:500]} == {
            Assignment("e", "control", "recommended_for_you", False)}
    assert assign(exp, "e", "u", START).in_experiment  # start inclusive
    assert not any(assign(exp, "e", uid, LIVE, stopped=True).in_experiment for uid in IDS[:500])


def test_a_new_salt_reshuffles():
    a = [assign(experiment(), "e", uid, LIVE).arm for uid in IDS[:5000]]
    b = [assign(experiment(salt="rfy-2027-01"), "e", uid, LIVE).arm for uid in IDS[:5000]]
    same = sum(x == y for x, y in zip(a, b, strict=True)) / 5000
    assert abs(same - (0.5**2 + 0.3**2 + 0.2**2)) < 0.03  # agreement by chance only


def test_resolve_rail_without_experiment_serves_itself():
    exps = {"e": experiment()}
    assert resolve(exps, NO_OVERRIDES, "comedy_featured", "u", LIVE) == Assignment(None, None, "comedy_featured",
                                                                                   False)


def test_resolve_applies_stop_and_promotion():
    exps = {"e": experiment()}
    live = resolve(exps, NO_OVERRIDES, "recommended_for_you", "u1", LIVE)
    assert live.in_experiment and live.experiment == "e"
    stopped = resolve(exps, Overrides(stopped=frozenset({"e"})), "recommended_for_you", "u1", LIVE)
    assert stopped == Assignment("e", "control", "recommended_for_you", False)
    promoted = Overrides(promoted={"e": ("treatment", 3)})
    for when in (LIVE, END + dt.timedelta(days=100)):  # promotion outlives the experiment's dates
        for uid in IDS[:200]:
            assert resolve(exps, promoted, "recommended_for_you", uid, when) == Assignment(
                "e", "treatment", "recommended_for_you_ease", False)


def test_resolve_between_experiments_on_one_rail():
    first = experiment()
    second = experiment(salt="next", start=END + dt.timedelta(days=10), end=END + dt.timedelta(days=20),
                        default_arm="treatment")
    exps = {"first": first, "second": second}
    before = resolve(exps, NO_OVERRIDES, "recommended_for_you", "u", START - dt.timedelta(days=1))
    assert before.experiment == "first" and before.arm == "control" and not before.in_experiment
    gap = resolve(exps, NO_OVERRIDES, "recommended_for_you", "u", END + dt.timedelta(days=1))
    assert gap.experiment == "first" and gap.arm == "control"
    during = resolve(exps, NO_OVERRIDES, "recommended_for_you", "u", END + dt.timedelta(days=11))
    assert during.experiment == "second" and during.in_experiment
    after = resolve(exps, NO_OVERRIDES, "recommended_for_you", "u", END + dt.timedelta(days=30))
    assert after.experiment == "second" and after.arm == "treatment" and not after.in_experiment
    # the first one promoted: its arm until the second runs; the second, live, assigns its users
    promoted = Overrides(promoted={"first": ("third", 1)})
    assert resolve(exps, promoted, "recommended_for_you", "u", END + dt.timedelta(days=1)).arm == "third"
    assert resolve(exps, promoted, "recommended_for_you", "u", END + dt.timedelta(days=11)).experiment == "second"


def test_the_latest_promotion_on_a_rail_wins():
    exps = {"first": experiment(), "second": experiment(salt="x", start=END, end=END + dt.timedelta(days=5))}
    o = Overrides(promoted={"first": ("third", 1), "second": ("treatment", 2)})
    assert resolve(exps, o, "recommended_for_you", "u", END + dt.timedelta(days=9)).experiment == "second"
    o = Overrides(promoted={"first": ("third", 5), "second": ("treatment", 2)})
    assert resolve(exps, o, "recommended_for_you", "u", END + dt.timedelta(days=9)).experiment == "first"


def test_impression_ids_are_unique_and_name_the_logged_arm():
    inside = Assignment("rfy", "treatment", "v", True)
    outside = Assignment("rfy", "control", "v", False)
    ids = {mint_impression_id(inside) for _ in range(10000)}
    assert len(ids) == 10000
    assert all(re.fullmatch(IMPRESSION_ID_PATTERN, i) and i.startswith("rfy.treatment.") for i in ids)
    assert mint_impression_id(outside).startswith("-.-.")
    assert response_fields(outside)["experiment"] is None and response_fields(inside)["arm"] == "treatment"
