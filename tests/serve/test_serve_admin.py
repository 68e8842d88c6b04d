"""Admin endpoints: key from the environment, constant-time check, 503 when disabled; reload and rollback."""

from __future__ import annotations

import logging

import pytest
from serve_data import catalogue, publish, standard_set

V = "comedy_featured"
KEY = "s3cret-admin-key-for-tests"


@pytest.mark.parametrize("path", [f"/v1/admin/{V}/rollback", "/v1/admin/reload"])
def test_admin_disabled_without_configured_key(make_client, serve_config, path):
    client = make_client(serve_config, admin_key=None)
    r = client.post(path, headers={"X-API-Key": "anything"})
    assert r.status_code == 503
    assert r.json()["error"] == "admin_disabled" and serve_config.serve.admin_api_key_env in r.json()["message"]


@pytest.mark.parametrize("path", [f"/v1/admin/{V}/rollback", "/v1/admin/reload"])
@pytest.mark.parametrize("headers, status", [({}, 401), ({"X-API-Key": "wrong"}, 403), ({"X-API-Key": ""}, 401),
                                             ({"X-API-Key": KEY + "x"}, 403), ({"X-API-Key": KEY[:-1]}, 403)])
def test_admin_key_missing_or_wrong(make_client, serve_config, path, headers, status):
    client = make_client(serve_config, admin_key=KEY)
    r = client.post(path, headers=headers)
    assert r.status_code == status and r.json()["error"] in {"unauthorized", "forbidden"}


def test_admin_key_never_logged(make_client, serve_config, redis_client, caplog):
    caplog.set_level(logging.DEBUG)
    client = make_client(serve_config, admin_key=KEY)
    standard_set(redis_client)
    client.post("/v1/admin/reload", headers={"X-API-Key": KEY})
    client.post("/v1/admin/reload", headers={"X-API-Key": "guess"})
    assert KEY not in caplog.text and "guess" not in caplog.text
    assert KEY not in repr(client.app.state.settings)


def test_reload_drops_cached_pointers(make_client, config_factory, redis_server, redis_client):
    config = config_factory({"serve": {"redis_url": redis_server.url, "pointer_cache_seconds": 600}})
    client = make_client(config, admin_key=KEY)
    standard_set(redis_client)
    assert client.get(f"/v1/recommendations/{V}/u1").json()["publication"] == "v1.20261123T190000"
    publish(redis_client, V, "v2.N", recs={"u1": [("p020", 1.0)]}, fallback=[], items=catalogue())
    # Still the cached pointer (10 minutes) ...
    assert client.get(f"/v1/recommendations/{V}/u1").json()["publication"] == "v1.20261123T190000"
    r = client.post("/v1/admin/reload", headers={"X-API-Key": KEY})
    assert r.status_code == 200 and r.json()["variants"][V]["publication"] == "v2.N"
    assert client.get(f"/v1/recommendations/{V}/u1").json()["publication"] == "v2.N"


def test_rollback_unknown_variant_is_404(make_client, serve_config):
    client = make_client(serve_config, admin_key=KEY)
    r = client.post("/v1/admin/nope/rollback", headers={"X-API-Key": KEY})
    assert r.status_code == 404 and r.json()["error"] == "unknown_variant"


def test_rollback_switches_back_through_the_publisher(make_client, serve_config, redis_client):
    client = make_client(serve_config, admin_key=KEY)
    standard_set(redis_client)
    publish(redis_client, V, "v2.N", recs={"u1": [("p020", 1.0)]}, fallback=[], items=catalogue())
    assert client.get(f"/v1/recommendations/{V}/u1").json()["publication"] == "v2.N"
    r = client.post(f"/v1/admin/{V}/rollback", headers={"X-API-Key": KEY})
    assert r.status_code == 200, r.text
    assert r.json()["variants"][V]["publication"] == "v1.20261123T190000"
    assert r.json()["result"]["from"] == "v2.N" and r.json()["result"]["to"] == "v1.20261123T190000"
    assert client.get(f"/v1/recommendations/{V}/u1").json()["publication"] == "v1.20261123T190000"
    # Nothing older to go back to: 409 naming why, pointer unchanged.
    r = client.post(f"/v1/admin/{V}/rollback", headers={"X-API-Key": KEY})
    assert r.status_code == 409 and r.json()["error"] == "rollback_refused" and "no previous" in r.json()["message"]
    assert client.get(f"/v1/recommendations/{V}/u1").json()["publication"] == "v1.20261123T190000"


def test_rollback_refused_when_the_previous_publication_is_gone(make_client, serve_config, redis_client):
    from skyrec.publish.keys import Keys

    client = make_client(serve_config, admin_key=KEY)
    standard_set(redis_client)
    publish(redis_client, V, "v2.N", recs={"u1": [("p020", 1.0)]}, fallback=[], items=catalogue())
    for pattern in Keys("skyrec").publication_pattern(V, "v1.20261123T190000"):
        for key in redis_client.scan_iter(match=pattern):
            redis_client.delete(key)
    r = client.post(f"/v1/admin/{V}/rollback", headers={"X-API-Key": KEY})
    assert r.status_code == 409 and "no longer loaded" in r.json()["message"]
    assert client.get(f"/v1/recommendations/{V}/u1").json()["publication"] == "v2.N"
