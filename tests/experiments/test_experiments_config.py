"""``experiments:`` and ``events:`` are validated with the rest of the config; errors name the key."""

from __future__ import annotations

import copy
import datetime as dt

import pytest

from skyrec.config import ConfigError

BLOCK = {
    "rfy_knn_vs_ease": {
        "rail": "recommended_for_you", "salt": "rfy-2026-12",
        "start": "2026-12-01T00:00:00Z", "end": "2026-12-29T00:00:00Z", "traffic": 1.0, "default_arm": "control",
        "arms": {"control": {"variant": "recommended_for_you", "share": 0.5},
                 "treatment": {"variant": "comedy_featured", "share": 0.5}},
        "primary_metric": "plays_per_impression", "guardrails": {"click_through": -0.05}, "alpha": 0.05,
    }
}


def _with(**changes):
    block = copy.deepcopy(BLOCK)
    block["rfy_knn_vs_ease"].update(changes)
    return block


def test_a_valid_block_loads_with_utc_dates(config_factory):
    cfg = config_factory({"experiments": BLOCK})
    exp = cfg.experiments["rfy_knn_vs_ease"]
    assert exp.start == dt.datetime(2026, 12, 1, tzinfo=dt.UTC) and exp.end.tzinfo is not None
    assert [a for _, a, _ in exp.bounds] == ["control", "treatment"] and exp.bounds[-1][0] == pytest.approx(1.0)
    assert cfg.events.max_stream_length == 1_000_000 and cfg.events.max_backlog < cfg.events.max_stream_length


def test_the_demo_config_has_no_experiment(config):
    assert config.experiments == {}


@pytest.mark.parametrize(("changes", "key", "words"), [
    ({"arms": {"control": {"variant": "recommended_for_you", "share": 0.5},
               "treatment": {"variant": "comedy_featured", "share": 0.4}}}, "experiments.rfy_knn_vs_ease",
     "shares sum to"),
    ({"arms": {"control": {"variant": "recommended_for_you", "share": 0.5},
               "treatment": {"variant": "no_such_variant", "share": 0.5}}},
     "experiments.rfy_knn_vs_ease.arms.treatment.variant", "unknown variant 'no_such_variant'"),
    ({"default_arm": "baseline"}, "experiments.rfy_knn_vs_ease", "default_arm: 'baseline' is not an arm"),
    ({"start": "2026-12-29T00:00:00Z"}, "experiments.rfy_knn_vs_ease", "is not before end"),
    ({"primary_metric": "revenue"}, "experiments.rfy_knn_vs_ease", "metric 'revenue' unknown"),
    ({"guardrails": {"clicks": -0.1}}, "experiments.rfy_knn_vs_ease", "metric 'clicks' unknown"),
    ({"rail": "nope"}, "experiments.rfy_knn_vs_ease.rail", "not a configured variant"),
    ({"traffic": 1.5}, "experiments.rfy_knn_vs_ease.traffic", "less than or equal to 1"),
    ({"arms": {"Control": {"variant": "recommended_for_you", "share": 1.0}}}, "experiments.rfy_knn_vs_ease.arms",
     "at least 2"),
])
def test_bad_experiments_name_the_key(config_factory, changes, key, words):
    with pytest.raises(ConfigError) as err:
        config_factory({"experiments": _with(**changes)})
    assert key in str(err.value) and words in str(err.value)


def test_shares_within_tolerance_are_accepted(config_factory):
    arms = {"a": {"variant": "recommended_for_you", "share": 0.1}, "b": {"variant": "comedy_featured", "share": 0.2},
            "c": {"variant": "drama_featured", "share": 0.7}}  # 0.1 + 0.2 + 0.7 != 1.0 exactly in floats
    cfg = config_factory({"experiments": _with(arms=arms, default_arm="a")})
    assert len(cfg.experiments["rfy_knn_vs_ease"].arms) == 3


def test_two_experiments_on_one_rail_may_not_overlap(config_factory):
    second = copy.deepcopy(BLOCK["rfy_knn_vs_ease"])
    second.update(salt="other", start="2026-12-28T00:00:00Z", end="2027-01-10T00:00:00Z")
    with pytest.raises(ConfigError) as err:
        config_factory({"experiments": {**BLOCK, "rfy_next": second}})
    assert "experiments.rfy_next.start" in str(err.value) and "both run on rail 'recommended_for_you'" in str(err.value)
    second.update(start="2026-12-29T00:00:00Z")  # back to back: fine
    assert len(config_factory({"experiments": {**BLOCK, "rfy_next": second}}).experiments) == 2
    second.update(start="2026-12-10T00:00:00Z", rail="comedy_featured")  # same dates, another rail: fine
    assert len(config_factory({"experiments": {**BLOCK, "rfy_next": second}}).experiments) == 2


def test_experiment_names_are_checked(config_factory):
    with pytest.raises(ConfigError, match="experiments.Bad-Name"):
        config_factory({"experiments": {"Bad-Name": BLOCK["rfy_knn_vs_ease"]}})


def test_srm_alpha_defaults_and_is_a_probability(config_factory):
    assert config_factory({"experiments": BLOCK}).experiments["rfy_knn_vs_ease"].srm_alpha == 0.001
    assert config_factory({"experiments": _with(srm_alpha=0.01)}).experiments["rfy_knn_vs_ease"].srm_alpha == 0.01
    for bad, words in [(0, "greater than 0"), (-0.1, "greater than 0"), (1, "less than 1"), (5, "less than 1"),
                       ("often", "valid number")]:
        with pytest.raises(ConfigError) as err:
            config_factory({"experiments": _with(srm_alpha=bad)})
        assert "experiments.rfy_knn_vs_ease.srm_alpha" in str(err.value) and words in str(err.value), str(err.value)


def test_backlog_must_leave_room_below_the_stream_bound(config_factory):
    with pytest.raises(ConfigError, match="events.max_backlog"):
        config_factory({"events": {"max_stream_length": 10_000, "max_backlog": 9_800}})
    assert config_factory({"events": {"max_stream_length": 10_000, "max_backlog": 9_500}}).events.max_backlog == 9_500
