"""Assignment on the recommendations route: the user's arm answers the rail, the answer names it, and a
decision (promote/stop) changes what is served without a config edit. Real redis-server, the app as served
(hot path on) and FastAPI's route (hot path off) alike."""

from __future__ import annotations

import datetime as dt
import sys
import time
from pathlib import Path

import pytest
from fastapi.testclient import TestClient

from skyrec.experiments.assign import NO_OVERRIDES, resolve
from skyrec.experiments.control import decide

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "serve"))
from serve_data import standard_set

pytestmark = pytest.mark.integration

NOW = dt.datetime.now(dt.UTC)
RAIL = "comedy_featured"
EXPERIMENT = {
    "rail": RAIL, "salt": "route-test", "start": (NOW - dt.timedelta(days=1)).isoformat(),
    "end": (NOW + dt.timedelta(days=30)).isoformat(), "traffic": 1.0, "default_arm": "control",
    "arms": {"control": {"variant": RAIL, "share": 0.5}, "treatment": {"variant": "drama_featured", "share": 0.5}},
    "primary_metric": "plays_per_impression",
}
USERS = [f"u{i}" for i in range(1, 41)]


@pytest.fixture
def world(config_factory, redis_server, redis_client):
    recs = {u: [("p001", 0.9), ("p003", 0.8)] for u in USERS}
    standard_set(redis_client, RAIL, "v1.20261123T190000", recs=recs)
    standard_set(redis_client, "drama_featured", "v1.20261123T190001", recs=recs)
    return config_factory({"serve": {"redis_url": redis_server.url, "pointer_cache_seconds": 0.0,
                                     "access_log": False},
                           "experiments": {"route_exp": EXPERIMENT}})


@pytest.mark.parametrize("hot_path", [True, False])
def test_the_users_arm_answers_the_rail_and_is_named(world, hot_path) -> None:
    from skyrec.serve.main import create_app

    seen = {}
    with TestClient(create_app(world, hot_path=hot_path)) as api:
        for user in USERS:
            body = api.get(f"/v1/recommendations/{RAIL}/{user}").json()
            expected = resolve(world.experiments, NO_OVERRIDES, RAIL, user, dt.datetime.now(dt.UTC))
            assert body["experiment"] == "route_exp" and body["arm"] == expected.arm, body
            assert body["variant"] == expected.variant  # the arm's variant answered (its own publication)
            assert body["publication"] == ("v1.20261123T190000" if expected.arm == "control"
                                           else "v1.20261123T190001")
            assert body["impression_id"].startswith(f"route_exp.{expected.arm}.")
            again = api.get(f"/v1/recommendations/{RAIL}/{user}").json()
            assert again["arm"] == body["arm"] and again["impression_id"] != body["impression_id"]  # sticky
            seen[user] = body["arm"]
        # a rail without an experiment: itself, nothing to log, still an impression id
        other = api.get(f"/v1/recommendations/drama_featured/{USERS[0]}").json()
        assert other["experiment"] is None and other["arm"] is None and other["variant"] == "drama_featured"
        assert other["impression_id"].startswith("-.-.")
    assert set(seen.values()) == {"control", "treatment"}


def _settled(api: TestClient, want, timeout: float = 5.0) -> None:
    """Decisions are refreshed in the background (never awaited per request): within pointer_cache_seconds
    (0 here) plus the refresh's own round trip, requests see them."""
    deadline = time.monotonic() + timeout
    while not want(api.get(f"/v1/recommendations/{RAIL}/{USERS[0]}").json()):
        assert time.monotonic() < deadline, "the decision never reached the API"
        time.sleep(0.02)


def test_a_promotion_serves_the_arm_to_everyone_without_a_config_edit(world, redis_client) -> None:
    from skyrec.serve.main import create_app

    control_user = next(u for u in USERS if resolve(world.experiments, NO_OVERRIDES, RAIL, u, NOW).arm == "control")
    with TestClient(create_app(world)) as api:
        assert api.get(f"/v1/recommendations/{RAIL}/{control_user}").json()["arm"] == "control"
        decide(world, redis_client, "route_exp", "promote", "treatment", by="test")
        _settled(api, lambda b: b["experiment"] is None)
        for user in USERS:
            body = api.get(f"/v1/recommendations/{RAIL}/{user}").json()
            assert body["variant"] == "drama_featured" and body["experiment"] is None, body
        decide(world, redis_client, "route_exp", "revert", by="test")
        _settled(api, lambda b: b["experiment"] == "route_exp")
        arms = {api.get(f"/v1/recommendations/{RAIL}/{u}").json()["arm"] for u in USERS}
        assert arms == {"control", "treatment"}  # reverted: assigned again
