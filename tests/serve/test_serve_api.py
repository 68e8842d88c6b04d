"""Every endpoint against a real redis-server holding publications written with the key schema."""

from __future__ import annotations

import json
import threading
from typing import Annotated
from urllib.parse import urlencode

import pytest
from fastapi import FastAPI, Query
from serve_data import PREFIX, VARIANTS, catalogue, iso, publish, publish_history, standard_set

from skyrec.publish.keys import Keys
from skyrec.serve.api.schemas import (
    HistoryOut,
    ItemDetailOut,
    RandomUserOut,
    ReadyOut,
    RecommendationsOut,
    VariantsOut,
)

V = "comedy_featured"
PUB = "v1.20261123T190000"


def ids(body: dict) -> list[str]:
    return [item["id"] for item in body["items"]]


def test_personalised_answer_shape_and_order(client, redis_client):
    standard_set(redis_client)
    r = client.get(f"/v1/recommendations/{V}/u2?limit=5")
    assert r.status_code == 200
    body = RecommendationsOut.model_validate(r.json()).model_dump()
    assert body["source"] == "personalised" and body["publication"] == PUB and body["model_version"] == "v1"
    assert ids(body) == ["p010", "p011", "p012", "p013", "p014"]
    first = body["items"][0]
    assert first == {"id": "p010", "title": "Programme 10", "brand": "Brand 0", "genres": ["Drama", "Crime"],
                     "score": pytest.approx(0.9), "origin": "personalised"}
    assert r.headers["content-type"].startswith("application/json")


def test_default_limit_and_offset_paging(client, redis_client):
    standard_set(redis_client)
    whole = ids(client.get(f"/v1/recommendations/{V}/u2?limit=20").json())
    assert len(ids(client.get(f"/v1/recommendations/{V}/u2").json())) == 10  # serve.default_limit
    page2 = client.get(f"/v1/recommendations/{V}/u2?limit=5&offset=5").json()
    assert ids(page2) == whole[5:10] and page2["offset"] == 5 and page2["limit"] == 5


def test_unknown_user_gets_the_fallback_list(client, redis_client):
    standard_set(redis_client)
    body = client.get(f"/v1/recommendations/{V}/newcomer?limit=3").json()
    assert body["source"] == "fallback"
    assert ids(body) == ["p030", "p031", "p032"]
    assert body["padded"] == 3


def test_short_list_padded_from_fallback_without_duplicates(client, redis_client):
    standard_set(redis_client)  # u1 has 4 items incl. p001, which is also in the fallback list
    body = client.get(f"/v1/recommendations/{V}/u1?limit=15").json()
    got = ids(body)
    assert got[:4] == ["p001", "p003", "p005", "p007"]
    assert got[4:] == [f"p{i:03d}" for i in range(30, 40)]  # p001 from the fallback list not repeated
    assert len(set(got)) == len(got) == 14 and body["padded"] == 10
    assert body["source"] == "personalised"


def test_items_expired_since_precompute_are_dropped_and_replaced(client, redis_client):
    items = catalogue(expired=("p003", "p031"))
    standard_set(redis_client, items=items)
    got = ids(client.get(f"/v1/recommendations/{V}/u1?limit=6").json())
    assert got == ["p001", "p005", "p007", "p030", "p032", "p033"]
    metrics = client.get("/metrics").text
    assert f'skyrec_recommendations_expired_items_total{{variant="{V}"}} 2.0' in metrics


def test_expiry_is_judged_at_serve_time(make_client, serve_config, redis_client):
    """An item whose window ends after the first answer is dropped from the next one (no stale cache)."""
    import time

    client = make_client(serve_config)
    items = catalogue()
    until = time.time() + 1.0
    items["p003"]["available_until"] = iso((until - time.time()) / 3600)
    standard_set(redis_client, items=items)
    assert "p003" in ids(client.get(f"/v1/recommendations/{V}/u1").json())
    time.sleep(max(0.0, until - time.time()) + 0.1)
    assert "p003" not in ids(client.get(f"/v1/recommendations/{V}/u1").json())


def test_answer_follows_the_pointer_switch(client, redis_client):
    standard_set(redis_client)
    assert client.get(f"/v1/recommendations/{V}/u1").json()["publication"] == PUB
    publish(redis_client, V, "v2.20261124T000000", recs={"u1": [("p020", 5.0)]}, fallback=[("p021", 1.0)],
            items=catalogue())
    body = client.get(f"/v1/recommendations/{V}/u1?limit=2").json()
    assert body["publication"] == "v2.20261124T000000" and body["model_version"] == "v2"
    assert ids(body) == ["p020", "p021"]
    cached = client.app.state.store._pubs._data
    assert (V, PUB) not in cached and (V, "v2.20261124T000000") in cached  # superseded caches are freed


def test_never_mixes_two_publications_while_the_pointer_flips(client, redis_client):
    """Publication A holds only a-items, B only b-items; a thread flips the pointer as fast as it can."""
    items = {f"{x}{i}": {"title": f"{x}{i}", "genres": [], "available_until": None} for x in "ab" for i in range(20)}
    pa = publish(redis_client, V, "v1.A", recs={"u": [(f"a{i}", 1.0) for i in range(5)]},
                 fallback=[(f"a{i}", 0.5) for i in range(5, 20)], items=items)
    pb = publish(redis_client, V, "v1.B", recs={"u": [(f"b{i}", 1.0) for i in range(5)]},
                 fallback=[(f"b{i}", 0.5) for i in range(5, 20)], items=items)
    keys = Keys(PREFIX)
    stop = threading.Event()

    def flip() -> None:
        import redis

        r = redis.Redis(connection_pool=redis_client.connection_pool)
        n = 0
        while not stop.is_set():
            r.set(keys.current(V), json.dumps(pa if n % 2 else pb))
            n += 1

    t = threading.Thread(target=flip, daemon=True)
    t.start()
    seen = set()
    try:
        for i in range(150):
            user = "u" if i % 2 else "other"
            body = client.get(f"/v1/recommendations/{V}/{user}?limit=12").json()
            letter = body["publication"][-1].lower()
            seen.add(letter)
            assert all(item_id.startswith(letter) for item_id in ids(body)), body
            assert len(ids(body)) == 12
    finally:
        stop.set()
        t.join()
    assert seen == {"a", "b"}


def test_publication_removed_under_a_cached_pointer_rereads_the_pointer(make_client, config_factory, redis_server,
                                                                         redis_client):
    config = config_factory({"serve": {"redis_url": redis_server.url, "pointer_cache_seconds": 600}})
    client = make_client(config)
    standard_set(redis_client)
    assert client.get(f"/v1/recommendations/{V}/u1").json()["publication"] == PUB
    publish(redis_client, V, "v2.X", recs={"u1": [("p020", 5.0)]}, fallback=[("p021", 1.0)], items=catalogue())
    # The old publication is removed (keep_versions) while the API still holds the old pointer in cache.
    for pattern in Keys(PREFIX).publication_pattern(V, PUB):
        for key in redis_client.scan_iter(match=pattern):
            redis_client.delete(key)
    body = client.get(f"/v1/recommendations/{V}/u1?limit=2").json()
    assert body["publication"] == "v2.X" and ids(body) == ["p020", "p021"]


def test_not_published_variant_is_503_json(client, redis_client):
    """Every route about one rail's publication says the same of a rail with nothing published yet: 503
    ``not_published`` (come back later), with Retry-After, naming the rail."""
    for path in ("/v1/recommendations/drama_featured/u1", "/v1/variants/drama_featured/report",
                 "/v1/users/random?variant=drama_featured", "/v1/items/p001/similar?rail=drama_featured",
                 "/v1/because-you-played/drama_featured/u1"):
        r = client.get(path)
        assert r.status_code == 503, (path, r.text)
        assert r.json()["error"] == "not_published" and "drama_featured" in r.json()["message"], (path, r.json())
        assert r.headers["Retry-After"] == "1"


def test_variants_lists_every_configured_variant(client, redis_client, skyrec_home):
    rel = "models/als/v1/run=1/report.html"
    standard_set(redis_client, extra={"report": rel})
    body = VariantsOut.model_validate(client.get("/v1/variants").json())
    assert [v.variant for v in body.variants] == list(VARIANTS)
    comedy = body.variants[0]
    assert comedy.published and comedy.publication == PUB and comedy.model == "als" and comedy.model_version == "v1"
    assert comedy.evaluation == {"ndcg_at_k": 0.2345, "recall_at_k": 0.31}
    assert 7100 < comedy.age_seconds < 7300
    assert comedy.report_url is None  # named by the publication, not in the lake: no link to a 404
    assert not body.variants[1].published
    (skyrec_home / "lake" / rel).parent.mkdir(parents=True)
    (skyrec_home / "lake" / rel).write_text("<html><body>report</body></html>")
    assert client.get("/v1/variants").json()["variants"][0]["report_url"] == f"/v1/variants/{V}/report"


def test_variants_reads_every_pointer_in_one_round_trip(client, redis_client):
    for variant in VARIANTS:
        standard_set(redis_client, variant=variant)
    redis_client.config_resetstat()
    assert all(v["published"] for v in client.get("/v1/variants").json()["variants"])
    stats = redis_client.info("commandstats")
    assert stats["cmdstat_mget"]["calls"] == 1 and "cmdstat_get" not in stats, stats


def test_training_report_served_from_the_lake(client, redis_client, skyrec_home):
    rel = "models/als/v1/run=20261123T180000/report.html"
    path = skyrec_home / "lake" / rel
    path.parent.mkdir(parents=True)
    path.write_text("<html><body><h1>ALS training report</h1></body></html>")
    standard_set(redis_client, extra={"report": rel})
    r = client.get(f"/v1/variants/{V}/report")
    assert r.status_code == 200 and "ALS training report" in r.text
    standard_set(redis_client, pub="v1.evil", extra={"report": "../../etc/passwd"})
    r = client.get(f"/v1/variants/{V}/report")
    assert r.status_code == 404 and r.json()["error"] == "no_report"


def test_training_report_from_a_committed_evaluation_output(client, redis_client, config):
    """The publication's evaluation names the committed evaluation output; the report is read through its
    manifest (an uncommitted output is not served)."""
    from skyrec.storage import Lake, Producer

    lake = Lake.from_config(config)
    rel = "evaluation/als/v1/run=20261123T180000"
    stage = lake.stage("evaluation", rel, Producer())
    with stage.open("report.html", "wb") as fh:
        fh.write(b"<html><body><h1>Evaluation of als v1</h1></body></html>")
    evaluation = {"ndcg_at_k": 0.2, "metric": "ndcg_at_k", "evaluation_path": rel}
    standard_set(redis_client, evaluation=evaluation)
    assert client.get("/v1/variants").json()["variants"][0]["report_url"] is None  # staged, not committed yet
    assert client.get(f"/v1/variants/{V}/report").status_code == 404
    stage.commit({})
    assert client.get("/v1/variants").json()["variants"][0]["report_url"] == f"/v1/variants/{V}/report"
    r = client.get(f"/v1/variants/{V}/report")
    assert r.status_code == 200 and "Evaluation of als v1" in r.text
    assert r.headers["content-type"].startswith("text/html")


def test_a_report_unlike_its_manifest_is_not_served(client, redis_client, config):
    """The committed manifest records the report's size and sha256: a report changed since (tampered with,
    half-written over) is a 409 ``report_corrupt``, never served; an evaluation committed without a report
    gets no link and a 404."""
    from skyrec.storage import Lake, Producer

    lake = Lake.from_config(config)
    rel = "evaluation/als/v1/run=20261123T180000"
    stage = lake.stage("evaluation", rel, Producer())
    with stage.open("report.html", "wb") as fh:
        fh.write(b"<html><body><h1>Evaluation of als v1</h1></body></html>")
    manifest = stage.commit({})
    standard_set(redis_client, evaluation={"ndcg_at_k": 0.2, "evaluation_path": rel})
    assert client.get(f"/v1/variants/{V}/report").status_code == 200
    path = lake.file_url(manifest, "report.html")
    for tampered in (b"<html><body><h1>Evaluation of als v2</h1></body></html>",  # same size
                     b"<html><body><script>steal()</script></body></html>"):
        with open(path, "wb") as fh:
            fh.write(tampered)
        r = client.get(f"/v1/variants/{V}/report")
        assert r.status_code == 409 and r.json()["error"] == "report_corrupt", r.text
        assert rel in r.json()["message"] and "sha256" in r.json()["message"]
    spec = client.get("/openapi.json").json()["paths"]["/v1/variants/{variant}/report"]["get"]
    assert spec["responses"]["409"]["content"]["application/json"]["schema"]["$ref"].endswith("/ErrorOut")

    bare = "evaluation/als/v1/run=20261124T180000"
    stage = lake.stage("evaluation", bare, Producer())
    with stage.open("evaluation.json", "wb") as fh:
        fh.write(b"{}")
    stage.commit({})
    standard_set(redis_client, pub="v1.bare", evaluation={"ndcg_at_k": 0.2, "evaluation_path": bare})
    assert client.get("/v1/variants").json()["variants"][0]["report_url"] is None
    r = client.get(f"/v1/variants/{V}/report")
    assert r.status_code == 404 and r.json()["error"] == "no_report"


GET_ROUTES = ["/healthz", "/readyz", "/", "/v1/variants", f"/v1/variants/{V}/report", f"/v1/recommendations/{V}/u1",
              f"/v1/recommendations/{V}/nobody?limit=3", "/v1/recommendations/nope/u1", f"/v1/items/p001?variant={V}",
              f"/v1/items/p001/similar?rail={V}", f"/v1/because-you-played/{V}/u1", f"/v1/users/u1/history?variant={V}",
              "/v1/experiments", "/openapi.json", "/docs", "/static/explorer.js", "/no/such/route"]


@pytest.mark.parametrize("hot_path", [True, False])
def test_head_answers_every_get_route_with_its_status_and_headers(config_factory, redis_server, redis_client,
                                                                   skyrec_home, monkeypatch, hot_path):
    """Load balancers and uptime checks probe with HEAD (RFC 9110: a GET resource supports HEAD): the GET's
    status and headers, Content-Length included, and no body; a route without GET answers HEAD as GET."""
    from fastapi.testclient import TestClient

    from skyrec.serve.main import create_app

    config = config_factory({"serve": {"redis_url": redis_server.url, "pointer_cache_seconds": 0.0,
                                       "access_log": False}})
    monkeypatch.delenv(config.serve.admin_api_key_env, raising=False)
    rel = "models/als/v1/run=1/report.html"
    (skyrec_home / "lake" / rel).parent.mkdir(parents=True)
    (skyrec_home / "lake" / rel).write_text("<html><body>report</body></html>")
    for variant in VARIANTS:
        standard_set(redis_client, variant=variant, extra={"report": rel})
    with TestClient(create_app(config, hot_path=hot_path)) as client:
        for path in GET_ROUTES + ["/v1/events"]:  # (POST only: 405, as for GET)
            get, head = client.get(path), client.head(path)
            assert head.status_code == get.status_code, (path, head.status_code, get.status_code)
            assert head.content == b"", path
            drop = {"x-request-id", "date", "content-length"}
            assert [(k, v) for k, v in head.headers.multi_items() if k not in drop] == \
                [(k, v) for k, v in get.headers.multi_items() if k not in drop], path
            if path != "/v1/variants":  # (its ages grow between the two requests)
                assert head.headers["content-length"] == get.headers["content-length"] == str(len(get.content)), path
        assert client.head("/v1/variants").status_code == 200 and client.head("/v1/events").status_code == 405
        metrics = client.get("/metrics").text
    assert 'method="HEAD",route="/v1/recommendations/{variant}/{user_id}",status="200"' in metrics
    assert 'method="HEAD",route="/v1/variants",status="200"' in metrics


def test_item_endpoint(client, redis_client):
    standard_set(redis_client)
    body = ItemDetailOut.model_validate(client.get("/v1/items/p001").json())
    assert body.title == "Programme 1" and body.variant == V and body.formats == ["Podcasts"]
    r = client.get("/v1/items/p999")
    assert r.status_code == 404 and r.json()["error"] == "unknown_item"
    assert client.get("/v1/items/p001?variant=drama_featured").status_code == 404


def test_history_with_titles_and_without_publication(client, redis_client):
    standard_set(redis_client)
    empty = HistoryOut.model_validate(client.get("/v1/users/u1/history").json())
    assert empty.plays == [] and "activity" in empty.note
    standard_set(redis_client, pub="v1.H", activity="end=20261123T18")
    publish_history(redis_client, "end=20261123T18", "u1", [("p002", "2026-11-23T17:00:00Z"),
                                                             ("p004", "2026-11-22T09:00:00Z")])
    body = HistoryOut.model_validate(client.get("/v1/users/u1/history?limit=1").json())
    assert [(p.id, p.title, p.played_at) for p in body.plays] == [("p002", "Programme 2", "2026-11-23T17:00:00Z")]
    none = HistoryOut.model_validate(client.get("/v1/users/nobody/history").json())
    assert none.plays == [] and none.note


def test_random_user_from_users_set_and_from_scan(client, redis_client):
    standard_set(redis_client)
    body = RandomUserOut.model_validate(client.get(f"/v1/users/random?variant={V}").json())
    assert body.user_id in {"u1", "u2"} and body.publication == PUB
    recs = {f"user{i}": [("p001", 1.0)] for i in range(30)}
    standard_set(redis_client, pub="v1.noset", recs=recs, users_set=False)
    got = {client.get(f"/v1/users/random?variant={V}").json()["user_id"] for _ in range(5)}
    assert got <= set(recs)
    assert client.get("/v1/users/random?variant=drama_featured").status_code == 503  # not_published: come back later


def test_readiness_transitions(client, redis_client):
    r = client.get("/readyz")
    assert r.status_code == 503
    body = ReadyOut.model_validate(r.json())
    assert body.redis and set(body.missing) == set(VARIANTS)
    for v in VARIANTS[:-1]:
        standard_set(redis_client, variant=v)
    body = client.get("/readyz").json()
    assert list(body["missing"]) == ["thought_provoking"]
    # A pointer naming a publication whose keys are absent is not "loaded".
    redis_client.set(Keys(PREFIX).current("thought_provoking"), json.dumps({"publication": "v1.gone"}))
    body = client.get("/readyz").json()
    assert "v1.gone" in body["missing"]["thought_provoking"]
    standard_set(redis_client, variant="thought_provoking")
    r = client.get("/readyz")
    assert r.status_code == 200 and r.json()["status"] == "ready" and r.json()["missing"] == {}
    assert client.get("/healthz").json() == {"status": "ok"}


def test_metrics_exposition(client, redis_client):
    standard_set(redis_client)
    client.get(f"/v1/recommendations/{V}/u1")
    client.get(f"/v1/recommendations/{V}/u2")
    client.get(f"/v1/recommendations/{V}/stranger")
    client.get("/v1/recommendations/nope/u1")
    text = client.get("/metrics").text
    assert f'skyrec_recommendations_total{{source="personalised",variant="{V}"}} 2.0' in text
    assert f'skyrec_recommendations_total{{source="fallback",variant="{V}"}} 1.0' in text
    assert ('skyrec_http_request_duration_seconds_count{method="GET",route="/v1/recommendations/{variant}/{user_id}",'
            'status="200"} 3.0') in text
    assert 'route="/v1/recommendations/{variant}/{user_id}",status="404"} 1.0' in text
    assert f'skyrec_publication_info{{model="als",model_version="v1",publication="{PUB}",variant="{V}"}} 1.0' in text
    age = [line for line in text.splitlines() if line.startswith(f'skyrec_publication_age_seconds{{variant="{V}"}}')]
    assert len(age) == 1 and 7100 < float(age[0].split()[-1]) < 7300
    assert "skyrec_unhandled_errors_total 0.0" in text


def test_request_id_echoed_or_generated(client, redis_client):
    r = client.get("/healthz", headers={"X-Request-ID": "abc-123"})
    assert r.headers["x-request-id"] == "abc-123"
    generated = client.get("/healthz", headers={"X-Request-ID": "bad id with spaces"}).headers["x-request-id"]
    assert generated != "bad id with spaces" and len(generated) == 32
    r = client.get("/v1/recommendations/nope/u1", headers={"X-Request-ID": "req-9"})
    assert r.json()["request_id"] == "req-9"


BAD = [
    ("/v1/recommendations/comedy_featured/u1?limit=0", 422, "limit"),
    ("/v1/recommendations/comedy_featured/u1?limit=-5", 422, "limit"),
    ("/v1/recommendations/comedy_featured/u1?limit=101", 422, "limit: must be at most 100"),
    ("/v1/recommendations/comedy_featured/u1?limit=99999999999999999999999", 422, "limit"),
    ("/v1/recommendations/comedy_featured/u1?limit=ten", 422, "limit"),
    ("/v1/recommendations/comedy_featured/u1?offset=-1", 422, "offset"),
    ("/v1/recommendations/comedy_featured/u1?offset=1001", 422, "offset: must be at most 1000"),
    ("/v1/recommendations/unknown_rail/u1", 404, "unknown variant 'unknown_rail'"),
    ("/v1/recommendations/Comedy-Featured/u1", 422, "variant"),
    ("/v1/recommendations/comedy_featured/" + "u" * 129, 422, "user_id"),
    ("/v1/recommendations/comedy_featured/u%00x", 422, "user_id"),
    ("/v1/recommendations/comedy_featured/%F0%9F%92%A5", 422, "user_id"),
    ("/v1/recommendations/comedy_featured/a%2Fb", 404, "no such endpoint"),
    ("/v1/recommendations/comedy_featured/u'%20OR%201=1", 422, "user_id"),
    ("/v1/recommendations/comedy_featured/u*", 422, "user_id"),
    ("/v1/recommendations/comedy_featured/alice%0A", 422, "user_id"),  # `$` matches before a final newline
    ("/v1/recommendations/comedy_featured/" + "u" * 128 + "%0A", 422, "user_id"),
    ("/v1/recommendations/comedy_featured%0A/u1", 422, "variant"),
    ("/v1/users/alice%0A/history", 422, "user_id"),
    ("/v1/items/p1%0A", 422, "item_id"),
    ("/v1/recommendations/" + "x" * 3000, 414, "longer than"),
    ("/v1/users/u%20x/history", 422, "user_id"),
    ("/v1/users/u1/history?limit=100000", 422, "limit"),
    ("/v1/users/random?variant=nope", 404, "unknown variant"),
    ("/v1/items/a*b", 422, "item_id"),
    ("/nothing/here", 404, "no such endpoint"),
]


@pytest.mark.parametrize("path, status, text", BAD)
def test_bad_input_is_4xx_json_naming_the_problem(make_client, serve_config, redis_client, path, status, text):
    standard_set(redis_client)
    client = make_client(serve_config, raise_server_exceptions=False)
    r = client.get(path)
    assert r.status_code == status, r.text
    body = r.json()
    assert body["error"] and text in body["message"], body


REPEATED = [  # every route taking a query parameter: a repeated one is refused, never "the last one wins"
    (f"/v1/recommendations/{V}/u1?limit=z&limit=6", "limit", 2),
    (f"/v1/recommendations/{V}/u1?offset=1&offset=1&offset=2", "offset", 3),
    (f"/v1/recommendations/{V}/u1?limit=2&%6Cimit=3", "limit", 2),  # the same name, percent-encoded
    ("/v1/users/u1/history?limit=z&limit=6", "limit", 2),
    (f"/v1/users/u1/history?variant={V}&variant=gripping_stories", "variant", 2),
    (f"/v1/users/random?variant={V}&variant={V}", "variant", 2),
    ("/v1/items/p001?variant=a&variant=b", "variant", 2),
    (f"/v1/items/p001/similar?rail={V}&rail=gripping_stories", "rail", 2),
    (f"/v1/items/p001/similar?rail={V}&limit=1&limit=2", "limit", 2),
    (f"/v1/because-you-played/{V}/u1?limit=1&limit=1", "limit", 2),
]


@pytest.mark.parametrize("path, name, times", REPEATED)
def test_a_repeated_query_parameter_is_422_naming_it(make_client, serve_config, redis_client, path, name, times):
    standard_set(redis_client)
    client = make_client(serve_config, raise_server_exceptions=False)
    r = client.get(path)
    assert r.status_code == 422, r.text
    body = r.json()
    assert body["error"] == "invalid_request" and f"{name}: given {times} times" in body["message"], body
    assert body["details"] == [{"loc": ["query", name], "msg": f"given {times} times; this parameter takes one "
                                "value", "type": "repeated_parameter"}]


def test_every_repeated_single_value_parameter_is_named(client, redis_client):
    standard_set(redis_client)
    r = client.get(f"/v1/recommendations/{V}/u1?limit=1&offset=0&limit=2&offset=1")
    assert r.status_code == 422 and [d["loc"] for d in r.json()["details"]] == [["query", "limit"],
                                                                              ["query", "offset"]]
    assert client.get(f"/v1/recommendations/{V}/u1?limit=1&offset=0").status_code == 200  # once each: fine
    # an unknown name is refused as before, repeated or not
    assert "unknown query parameter" in client.get(f"/v1/recommendations/{V}/u1?x=1&x=2").json()["message"]


def test_every_operation_with_query_parameters_refuses_them_repeated(client, redis_client):
    """No route (present or added later) takes the last of a repeated value: each GET operation's first query
    parameter, given twice with values the schema allows, is refused."""
    standard_set(redis_client)
    spec = client.get("/openapi.json").json()
    samples = {"variant": V, "rail": V, "user_id": "u1", "item_id": "p001", "name": "demo", "limit": "1",
               "offset": "0"}
    checked = []
    for path, ops in spec["paths"].items():
        op = ops.get("get")
        query = [p for p in (op or {}).get("parameters", []) if p["in"] == "query"]
        if not query:
            continue
        assert all(p.get("schema", {}).get("type") != "array" for p in query), path  # none takes a list today
        name = query[0]["name"]
        url = path.format(**samples) + f"?{name}={samples[name]}&{name}={samples[name]}"
        r = client.get(url)
        assert r.status_code == 422 and r.json()["details"][0]["loc"] == ["query", name], (url, r.text)
        checked.append(path)
    assert len(checked) >= 5, checked


def test_a_list_valued_query_parameter_may_repeat():
    """A route declaring a list parameter still gets all its values; its single-value neighbours do not."""
    from fastapi.testclient import TestClient

    from skyrec.serve.main import _refuse_unknown_query_parameters

    app = FastAPI()

    @app.get("/tags")
    async def tags(tag: Annotated[list[str], Query()], limit: int = 1) -> dict:
        return {"tag": tag, "limit": limit}

    _refuse_unknown_query_parameters(app)
    with TestClient(app) as c:
        assert c.get("/tags?tag=a&tag=b").json() == {"tag": ["a", "b"], "limit": 1}
        r = c.get("/tags?tag=a&limit=1&limit=2")
        assert r.status_code == 422 and r.json()["detail"][0]["loc"] == ["query", "limit"]


def test_wrong_method_is_405_json(client):
    r = client.post("/v1/variants")
    assert r.status_code == 405 and r.json()["error"] == "method_not_allowed"


def test_openapi_and_docs(client):
    spec = client.get("/openapi.json").json()
    assert "/v1/recommendations/{variant}/{user_id}" in spec["paths"]
    assert "/v1/admin/{variant}/rollback" in spec["paths"]
    assert client.get("/docs").status_code == 200


def test_app_over_a_given_sync_client(config_factory, redis_client):
    """``create_app(redis_client=...)`` reuses the client's connection settings (here: the URL in config is
    wrong on purpose, so answers prove the given client's server is the one read)."""
    from fastapi.testclient import TestClient

    from skyrec.serve.main import create_app

    standard_set(redis_client)
    config = config_factory({"serve": {"redis_url": "redis://127.0.0.1:1/0"}})
    with TestClient(create_app(config, redis_client=redis_client)) as client:
        body = client.get(f"/v1/recommendations/{V}/u1?limit=2").json()
        assert body["publication"] == PUB and ids(body) == ["p001", "p003"]
        assert client.get("/v1/variants").json()["variants"][0]["publication"] == PUB


@pytest.mark.parametrize("user", ["user:123@example.org", "a.b-c_d", "x" * 128, "-", "1"])
def test_every_valid_user_id_shape_is_served(client, redis_client, user):
    standard_set(redis_client, recs={user: [("p002", 1.0)]})
    body = client.get(f"/v1/recommendations/{V}/{user}?limit=1").json()
    assert body.get("user_id") == user and body["source"] == "personalised" and ids(body) == ["p002"], body


def test_a_user_key_deleted_in_place_is_not_served_from_cache(client, redis_client):
    """Redis stays the source of truth while it is up (e.g. an erasure request deletes one user's key)."""
    standard_set(redis_client)
    assert client.get(f"/v1/recommendations/{V}/u1").json()["source"] == "personalised"
    redis_client.delete(Keys(PREFIX).rec(V, PUB, "u1"))
    assert client.get(f"/v1/recommendations/{V}/u1").json()["source"] == "fallback"


def test_one_list_one_score_scale_padding_marked_and_last(client, redis_client):
    standard_set(redis_client)  # u1: 4 own items, then padded from the fallback list
    body = client.get(f"/v1/recommendations/{V}/u1?limit=15").json()
    origins = [i["origin"] for i in body["items"]]
    assert origins == ["personalised"] * 4 + ["fallback"] * 10
    scored = [i["score"] for i in body["items"] if i["origin"] == "personalised"]
    assert all(isinstance(s, float) for s in scored) and scored == sorted(scored, reverse=True)
    assert all(i["score"] is None for i in body["items"] if i["origin"] == "fallback")
    assert body["padded"] == 10
    # the fallback answer is one list with its own scores, in order
    fb = client.get(f"/v1/recommendations/{V}/newcomer?limit=5").json()
    scores = [i["score"] for i in fb["items"]]
    assert all(isinstance(s, float) for s in scores) and scores == sorted(scores, reverse=True)
    assert {i["origin"] for i in fb["items"]} == {"fallback"} and fb["padded"] == 5


def test_paging_walks_the_list_and_ends_cleanly(client, redis_client):
    standard_set(redis_client)
    whole = client.get(f"/v1/recommendations/{V}/u1?limit=100").json()
    assert whole["next_offset"] is None
    n = len(whole["items"])
    walked, offset = [], 0
    while offset is not None:
        page = client.get(f"/v1/recommendations/{V}/u1?limit=3&offset={offset}").json()
        assert page["padded"] == sum(i["origin"] == "fallback" for i in page["items"])
        walked += [i["id"] for i in page["items"]]
        offset = page["next_offset"]
    assert walked == [i["id"] for i in whole["items"]] and len(walked) == n
    past = client.get(f"/v1/recommendations/{V}/u1?limit=5&offset=1000").json()
    assert past["items"] == [] and past["padded"] == 0 and past["next_offset"] is None
    exact = client.get(f"/v1/recommendations/{V}/u1?limit={n}").json()
    assert len(exact["items"]) == n and exact["next_offset"] is None


@pytest.mark.parametrize("value", ["+5", "5.0", " 5", "5_0", "-0", "1e1", "٥"])
def test_a_count_is_digits_only_on_every_route(client, redis_client, value):
    """``limit`` and ``offset`` are written with digits only: pydantic's lax int would take "+5", "5.0" and "5_0"
    (as 50). Every route that takes a count says so in the one 422 shape naming it."""
    standard_set(redis_client)
    for path in (f"/v1/recommendations/{V}/u1", f"/v1/items/p001/similar?rail={V}",
                 f"/v1/because-you-played/{V}/u1", "/v1/users/u1/history"):
        r = client.get(path + ("&" if "?" in path else "?") + urlencode({"limit": value}))
        assert r.status_code == 422, (path, value, r.text)
        body = r.json()
        assert body["error"] == "invalid_request" and body["message"].startswith("limit: "), body
        assert body["details"][0]["type"] == "int_parsing", body
    r = client.get(f"/v1/recommendations/{V}/u1", params={"limit": "0002", "offset": "01"})
    assert r.status_code == 200 and r.json()["limit"] == 2 and r.json()["offset"] == 1
