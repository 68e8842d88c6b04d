"""Redis going away while serving: last good answers (flagged stale) or 503 JSON; never a 500, never mixed."""

from __future__ import annotations

import redis
from serve_data import VARIANTS, standard_set

from skyrec.redis_local import LocalRedis, free_port

V = "comedy_featured"


def test_redis_down_then_back(make_client, config_factory, tmp_path):
    server = LocalRedis(port=free_port(), dir=tmp_path / "redis").start()
    try:
        config = config_factory({"serve": {"redis_url": server.url, "pointer_cache_seconds": 0.0,
                                           "redis_timeout_seconds": 0.3}})
        client = make_client(config, raise_server_exceptions=False)
        r = redis.Redis.from_url(server.url)
        for v in VARIANTS:
            standard_set(r, variant=v, activity="end=20261123T18")
        before_u1 = client.get(f"/v1/recommendations/{V}/u1?limit=8").json()
        before_new = client.get(f"/v1/recommendations/{V}/newcomer?limit=3").json()
        assert client.get("/readyz").status_code == 200
        r.close()

        server.stop()

        # Users answered recently: same answer, same publication, flagged stale.
        again = client.get(f"/v1/recommendations/{V}/u1?limit=8")
        assert again.status_code == 200
        body = again.json()
        assert body["stale"] is True and body["items"] == before_u1["items"]
        assert body["publication"] == before_u1["publication"]
        assert "stale" in again.headers["warning"]
        assert client.get(f"/v1/recommendations/{V}/newcomer?limit=3").json()["items"] == before_new["items"]
        # A page needing more than was cached is still served from the cached lists (same publication).
        assert client.get(f"/v1/recommendations/{V}/u1?limit=5&offset=3").status_code == 200
        # Users never answered: 503 JSON, with Retry-After.
        miss = client.get(f"/v1/recommendations/{V}/u2")
        assert miss.status_code == 503 and miss.json()["error"] == "redis_unavailable"
        assert miss.headers["retry-after"] == "1"
        # A variant never read: 503 too.
        assert client.get("/v1/recommendations/drama_featured/u1").status_code == 503
        for path in ["/v1/items/p001", "/v1/users/random", "/v1/users/u1/history"]:
            resp = client.get(path)
            assert resp.status_code == 503 and resp.json()["error"] == "redis_unavailable", (path, resp.text)
        ready = client.get("/readyz")
        assert ready.status_code == 503 and ready.json()["redis"] is False
        assert client.get("/healthz").status_code == 200
        variants = client.get("/v1/variants").json()["variants"]
        assert variants[0]["stale"] is True and variants[0]["publication"] == before_u1["publication"]
        assert client.get("/metrics").status_code == 200
        assert "skyrec_unhandled_errors_total 0.0" in client.get("/metrics").text

        server.start()  # same port, empty: nothing published yet
        ready = client.get("/readyz")
        assert ready.status_code == 503 and ready.json()["redis"] is True
        r = redis.Redis.from_url(server.url)
        for v in VARIANTS:
            standard_set(r, variant=v)
        r.close()
        assert client.get("/readyz").status_code == 200
        fresh = client.get(f"/v1/recommendations/{V}/u2").json()
        assert fresh["stale"] is False and fresh["source"] == "personalised"
    finally:
        server.stop()


def test_redis_unreachable_from_the_start(make_client, config_factory):
    config = config_factory({"serve": {"redis_url": f"redis://127.0.0.1:{free_port()}/0",
                                       "redis_timeout_seconds": 0.2}})
    client = make_client(config, raise_server_exceptions=False)
    r = client.get(f"/v1/recommendations/{V}/u1")
    assert r.status_code == 503 and r.json()["error"] == "redis_unavailable"
    assert client.get("/v1/variants").status_code == 503
    assert client.get("/readyz").status_code == 503
    assert client.get("/healthz").status_code == 200
