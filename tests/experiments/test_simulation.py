"""End to end with simulated listeners: the real API app over a real redis-server holding two published arms,
listeners with planted tastes, events through POST /v1/events, ``ingest_feedback`` into the lake,
``evaluate_experiments``'s readout, the report served by the API. One arm recommends from each listener's
favourite topic, the other ignores taste: the readout must find the better arm; a logging bug that loses
part of one arm's events must trip the SRM check.
"""

from __future__ import annotations

import datetime as dt

import pytest
from fastapi.testclient import TestClient

from skyrec.experiments.simulate import Listeners, ListenerSimulation, publish_arm
from skyrec.jobs.base import EXIT_OK, RunInfo, execute
from skyrec.serve.main import create_app

pytestmark = pytest.mark.integration
RAIL = "recommended_for_you"


def experiment_config(now: dt.datetime) -> dict:
    return {"sim_rfy": {"rail": RAIL, "salt": "sim-2026", "start": (now - dt.timedelta(days=1)).isoformat(),
                        "end": (now + dt.timedelta(days=30)).isoformat(), "default_arm": "control",
                        "arms": {"control": {"variant": RAIL, "share": 0.5},
                                 "treatment": {"variant": "thought_provoking", "share": 0.5}},
                        "primary_metric": "plays_per_impression", "guardrails": {"click_through": -0.05},
                        "alpha": 0.05}}


@pytest.fixture
def world(config_factory, redis_server, redis_client):
    now = dt.datetime.now(dt.UTC)
    cfg = config_factory({"serve": {"redis_url": redis_server.url, "pointer_cache_seconds": 0.0,
                                    "access_log": False}, "experiments": experiment_config(now)})
    listeners = Listeners.planted(500, 400, seed=7)
    items = listeners.catalogue()
    publish_arm(redis_client, cfg.publish.key_prefix, RAIL, listeners.random(), items,
                evaluation={"ndcg_at_k": 0.05, "recall_at_k": 0.04})
    publish_arm(redis_client, cfg.publish.key_prefix, "thought_provoking", listeners.tasteful(), items,
                evaluation={"ndcg_at_k": 0.31, "recall_at_k": 0.27})
    return cfg, listeners, now


def ingest_and_read_out(cfg, now: dt.datetime) -> dict:
    hour = now.replace(minute=0, second=0, microsecond=0)
    code, payload = execute("ingest_feedback", config=cfg, run=RunInfo(
        dag_id="ingest_feedback", run_id="sim", task_id="ingest_feedback", logical_date=hour,
        interval_start=hour, interval_end=hour + dt.timedelta(hours=1)))
    assert code == EXIT_OK, payload
    assert payload["summary"]["quarantined"] == {}
    code, payload = execute("evaluate_experiments", config=cfg, run=RunInfo(
        dag_id="evaluate_experiments", run_id="sim", task_id="evaluate_experiments",
        logical_date=hour + dt.timedelta(hours=1)))
    assert code == EXIT_OK, payload
    return payload["summary"]


def test_listeners_with_planted_tastes_the_readout_finds_the_better_arm(world) -> None:
    cfg, listeners, now = world
    with TestClient(create_app(cfg)) as client:
        result = ListenerSimulation(client, listeners, RAIL).run(
            visits_per_listener=2, now=now)
    assert not result.errors, result.errors[:3]
    assert set(result.by_arm) == {"control", "treatment"}
    summary = ingest_and_read_out(cfg, now)
    (one,) = summary["experiments"]
    assert one["decision"]["status"] == "treatment_better", one["decision"]
    assert summary["alerts"] == []
    with TestClient(create_app(cfg)) as client:
        listed = client.get("/v1/experiments").json()["experiments"]
        (exp,) = listed
        assert exp["name"] == "sim_rfy" and exp["latest_readout"]["decision"]["status"] == "treatment_better"
        page = client.get(exp["latest_readout"]["report_url"])
        assert page.status_code == 200 and page.headers["content-type"].startswith("text/html")
        html = page.text
        assert "<svg" in html and "treatment_better" in html and "<script" not in html and "://cdn" not in html
        assert "0.31" in html and "thought_provoking" in html  # each arm's offline evaluation
        missing = client.get("/v1/experiments/nope/report")
        assert missing.status_code == 404 and missing.json()["error"] == "unknown_experiment"


def test_lost_events_of_one_arm_trip_the_srm_check(world) -> None:
    cfg, listeners, now = world
    with TestClient(create_app(cfg)) as client:
        # every listener visits once; 35% of the treatment arm's visits never reach the stream
        result = ListenerSimulation(client, listeners, RAIL,
                                    lose={"treatment": 0.35}).run(visits_per_listener=1, now=now)
    assert not result.errors, result.errors[:3]
    summary = ingest_and_read_out(cfg, now)
    (one,) = summary["experiments"]
    assert one["decision"]["status"] == "invalid_srm", one
    assert [a["kind"] for a in summary["alerts"]][:1] == ["experiment_srm"]
