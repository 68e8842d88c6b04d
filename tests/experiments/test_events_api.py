"""POST /v1/events against a real redis-server: validation, server-side assignment, the stream, the backlog."""

from __future__ import annotations

import datetime as dt
import json

import pytest
from fastapi.testclient import TestClient

from skyrec.experiments.assign import bucket
from skyrec.experiments.events import parse_stream_entry
from skyrec.experiments.stream import GROUP

pytestmark = pytest.mark.integration

NOW = dt.datetime.now(dt.UTC)
EXPERIMENT = {
    "rail": "recommended_for_you", "salt": "events-test", "start": (NOW - dt.timedelta(days=1)).isoformat(),
    "end": (NOW + dt.timedelta(days=30)).isoformat(), "traffic": 1.0, "default_arm": "control",
    "arms": {"control": {"variant": "recommended_for_you", "share": 0.5},
             "treatment": {"variant": "comedy_featured", "share": 0.5}},
    "primary_metric": "plays_per_impression",
}
STREAM = "skyrec:events"


@pytest.fixture
def make_app(config_factory, redis_server, redis_client):
    opened: list[TestClient] = []

    def make(**overrides) -> TestClient:
        from skyrec.serve.main import create_app

        base = {"serve": {"redis_url": redis_server.url, "pointer_cache_seconds": 0.0, "access_log": False},
                "experiments": {"rfy": EXPERIMENT}}
        base.update(overrides)
        client = TestClient(create_app(config_factory(base)))
        client.__enter__()
        opened.append(client)
        return client

    yield make
    for c in opened:
        c.__exit__(None, None, None)


def event(i: int = 0, **over) -> dict:
    e = {"event_id": f"e-{i}", "type": "impression", "impression_id": "rfy.control." + "ab" * 16,
         "user_id": f"user-{i}", "rail": "recommended_for_you", "item_ids": ["i1", "i2", "i3"],
         "ts": "2026-12-03T10:00:00+01:00"}
    e.update(over)
    return e


def stream(redis_client) -> list[dict]:
    return [json.loads(fields[b"e"]) for _, fields in redis_client.xrange(STREAM)]


def test_a_batch_lands_in_the_stream_with_the_arm_recomputed(make_app, redis_client):
    api = make_app()
    events = [event(i) for i in range(50)] + [
        event(50, type="click", item_ids=["i2"]), event(51, type="play", item_ids=["i2"], duration_seconds=93.5),
        event(52, rail="drama_featured")]
    r = api.post("/v1/events", json={"events": events})
    assert r.status_code == 202, r.text
    assert r.json() == {"accepted": 53}
    stored = stream(redis_client)
    assert [e["event_id"] for e in stored] == [e["event_id"] for e in events]
    for e in stored[:52]:
        arm = "control" if bucket("events-test", e["user_id"]) < 0.5 else "treatment"
        assert e["experiment"] == "rfy" and e["arm"] == arm  # from the hash, not the client's impression id
        assert e["variant"] == {"control": "recommended_for_you", "treatment": "comedy_featured"}[arm]
    assert stored[52]["experiment"] is None and stored[52]["arm"] is None and stored[52]["variant"] == "drama_featured"
    assert stored[0]["ts"] == "2026-12-03T09:00:00Z" and stored[0]["received_at"].endswith("Z")
    assert stored[51]["duration_seconds"] == 93.5 and stored[0]["duration_seconds"] is None
    for _, fields in redis_client.xrange(STREAM):  # the reader's model accepts every entry the API wrote
        parse_stream_entry(fields)


@pytest.mark.parametrize(("bad", "where"), [
    (event(1, type="play", item_ids=["i1"]), "events.1.duration_seconds"),
    (event(1, type="click", item_ids=["i1", "i2"]), "events.1.item_ids"),
    (event(1, item_ids=["i1", "i1"]), "events.1.item_ids"),
    (event(1, ts="2026-12-03T10:00:00"), "events.1.ts"),
    (event(1, ts="2026-02-30T10:00:00Z"), "events.1.ts"),
    (event(1, user_id="bad user"), "events.1.user_id"),
    (event(1, impression_id="nope"), "events.1.impression_id"),
    (event(1, type="like"), "events.1"),
    (event(1, experiment="rfy"), "events.1.experiment"),  # assignment is not the client's to say
    (event(1, type="play", item_ids=["i1"], duration_seconds=-1), "events.1.duration_seconds"),
])
def test_a_bad_event_is_a_422_naming_its_index_and_field(make_app, redis_client, bad, where):
    api = make_app()
    r = api.post("/v1/events", json={"events": [event(0), bad]})
    assert r.status_code == 422, r.text
    body = r.json()
    assert body["error"] == "invalid_request" and where in body["message"], body
    assert any(".".join(map(str, d["loc"][1:])).startswith(where) for d in body["details"]), body["details"]
    assert redis_client.xlen(STREAM) == 0  # nothing of a refused batch is written


def test_batch_size_content_type_and_body_bound(make_app, redis_client):
    api = make_app(events={"max_request_bytes": 65536})
    assert api.post("/v1/events", json={"events": []}).status_code == 422
    many = api.post("/v1/events", json={"events": [event(i) for i in range(501)]})
    assert many.status_code in (413, 422)  # 501 events of this size are over 64 KiB as well
    big = api.post("/v1/events", content=b'{"events": [' + b" " * 70000 + b"]}",
                   headers={"content-type": "application/json"})
    assert big.status_code == 413 and big.json()["error"] == "payload_too_large"
    chunked = api.post("/v1/events", content=iter([b'{"events": [', b" " * 70000, b"]}"]),
                       headers={"content-type": "application/json"})  # no Content-Length: counted while read
    assert chunked.status_code == 413
    assert api.post("/v1/events", content=b"x", headers={"content-type": "text/plain"}).status_code == 415
    assert api.post("/v1/events", content=b"{not json", headers={"content-type": "application/json"}).status_code == 422
    unknown = api.post("/v1/events", json={"events": [event(0), event(1, rail="no_such_rail")]})
    assert unknown.status_code == 404 and "events.1.rail" in unknown.json()["message"]
    assert redis_client.xlen(STREAM) == 0


def test_backlog_without_consumer_group_is_the_stream_length_then_503(make_app, redis_client):
    api = make_app(events={"max_stream_length": 2000, "max_backlog": 1000, "backlog_check_seconds": 0.001,
                           "retry_after_seconds": 7})
    for b in range(10):
        assert api.post("/v1/events", json={"events": [event(b * 100 + i) for i in range(100)]}).status_code == 202
    r = api.post("/v1/events", json={"events": [event(i) for i in range(100)]})  # 1000 in: the measure says full
    assert r.status_code == 202
    r = api.post("/v1/events", json={"events": [event(9999)]})
    assert r.status_code == 503 and r.headers["Retry-After"] == "7" and r.json()["error"] == "events_backlog"
    assert redis_client.xlen(STREAM) == 1100
    # the consumer catches up: a group that has read and acknowledged everything -> accepted again
    redis_client.xgroup_create(STREAM, GROUP, id="0")
    ids = [i for _, entries in redis_client.xreadgroup(GROUP, "c", {STREAM: ">"}, count=5000) for i, _ in entries]
    assert len(ids) == 1100
    r = api.post("/v1/events", json={"events": [event(1)]})
    assert r.status_code == 503  # read but not acknowledged: still pending
    redis_client.xack(STREAM, GROUP, *ids)
    assert api.post("/v1/events", json={"events": [event(2)]}).status_code == 202


def test_the_stream_is_bounded_by_maxlen(make_app, redis_client):
    api = make_app(events={"max_stream_length": 1000, "max_backlog": 500, "backlog_check_seconds": 0.001})
    redis_client.xgroup_create(STREAM, GROUP, id="$", mkstream=True)
    for b in range(30):
        assert api.post("/v1/events", json={"events": [event(b * 100 + i) for i in range(100)]}).status_code == 202
        for _, entries in redis_client.xreadgroup(GROUP, "c", {STREAM: ">"}, count=1000) or []:
            redis_client.xack(STREAM, GROUP, *[i for i, _ in entries])
    assert 1000 <= redis_client.xlen(STREAM) < 1300  # MAXLEN ~ trims whole nodes: about, never far above


def test_redis_down_is_a_503_not_a_500(make_app, redis_client, redis_server):
    from skyrec.redis_local import free_port

    api = make_app(serve={"redis_url": f"redis://127.0.0.1:{free_port()}/0", "access_log": False,
                          "redis_timeout_seconds": 0.2})
    r = api.post("/v1/events", json={"events": [event(0)]})
    assert r.status_code == 503 and r.json()["error"] == "redis_unavailable" and r.headers["Retry-After"]


def test_a_full_redis_is_a_503_that_says_so(make_app, redis_client):
    """Redis reachable but at its maxmemory (noeviction): the events cannot be stored; a 503 naming that, never a
    500, and nothing is half-written (the batch is one transaction)."""
    api = make_app()
    assert api.post("/v1/events", json={"events": [event(0)]}).status_code == 202
    try:
        redis_client.config_set("maxmemory", int(redis_client.info("memory")["used_memory"]) - 100_000)
        r = api.post("/v1/events", json={"events": [event(i) for i in range(3)]})
        assert r.status_code == 503 and r.json()["error"] == "redis_full", r.text
        assert "full" in r.json()["message"] and r.headers["Retry-After"]
        assert redis_client.xlen(STREAM) == 1
    finally:
        redis_client.config_set("maxmemory", 0)
    assert api.post("/v1/events", json={"events": [event(0)]}).status_code == 202
    assert redis_client.xlen(STREAM) == 2


def test_the_operation_is_in_the_openapi_document(make_app):
    spec = make_app().get("/openapi.json").json()
    op = spec["paths"]["/v1/events"]["post"]
    assert set(op["responses"]) >= {"202", "404", "413", "415", "422", "503"}
    schema = op["requestBody"]["content"]["application/json"]["schema"]
    assert schema["properties"]["events"]["maxItems"] == 500
    assert {v["properties"]["type"]["const"] for v in schema["properties"]["events"]["items"]["oneOf"]} == {
        "impression", "click", "play"}
    for variant in schema["properties"]["events"]["items"]["oneOf"]:  # the configured rails, exactly
        assert variant["properties"]["rail"]["enum"] == sorted(
            ["comedy_featured", "drama_featured", "gripping_stories", "music_mixes", "recommended_for_you",
             "thought_provoking"])


def test_schema_valid_events_are_accepted(make_app, redis_client):
    """Every event the OpenAPI document allows is accepted (hypothesis, from the document's own schema)."""
    import schemathesis
    from hypothesis import HealthCheck, given, settings

    api = make_app()
    op = schemathesis.openapi.from_dict(api.get("/openapi.json").json())["/v1/events"]["POST"]

    @given(case=op.as_strategy())
    @settings(max_examples=40, deadline=None, database=None, suppress_health_check=list(HealthCheck))
    def check(case) -> None:
        r = api.post("/v1/events", json=case.body)
        assert r.status_code == 202, (case.body, r.text)
        assert r.json()["accepted"] == len(case.body["events"])

    check()
