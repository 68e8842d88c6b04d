"""The hot path's dispatch ahead of FastAPI's router (``skyrec.serve.hotpath``) answers exactly as the FastAPI
route does: same status, body and headers for good requests, bad ones, Redis down and an unexpected error; it
really takes the requests it claims; the metrics still name the route; a route registered before it keeps its
paths."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest
from fastapi.testclient import TestClient
from serve_data import standard_set
from starlette.responses import JSONResponse
from starlette.routing import Route

from skyrec.redis_local import free_port
from skyrec.serve.main import create_app

BASE = "/v1/recommendations/comedy_featured/"
CASES = [
    BASE + "u1", BASE + "u1?limit=2", BASE + "u1?limit=2&offset=2", BASE + "u1?offset=3",
    BASE + "u1?offset=1000&limit=5", BASE + "u2?limit=25", BASE + "nobody", BASE + "nobody?limit=3&offset=1",
    BASE + "u%31?limit=2",  # percent-encoded "u1"
    BASE + "u1?limit=2&limit=3", BASE + "u1?limit=z&limit=6", BASE + "u1?limit=2&%6Cimit=3",  # repeated: 422
    BASE + "u1?offset=1&limit=2&offset=1", BASE + "u1?limit=1&offset=0&limit=1&offset=0&x=1",
    BASE + "u1?limit=0", BASE + "u1?limit=abc", BASE + "u1?limit=", BASE + "u1?limit=101", BASE + "u1?offset=1001",
    BASE + "u1?offset=-1", BASE + "u1?limit=%2B3", BASE + "u1?limt=5", BASE + "u1?limit=2&x=1",
    BASE + "u1?limit=5.0", BASE + "u1?limit=5_0", BASE + "u1?limit=%205", BASE + "u1?offset=1e1",
    BASE + "u1?limit=0005", BASE + "u1?limit=" + "9" * 19,  # counts: digits only, on both paths
    BASE + "u%0A", BASE + "u1%0A", BASE + "u%20x", BASE + "u" * 129, BASE + "u1/", BASE + "u1/x",
    "/v1/recommendations/nope/u1", "/v1/recommendations/Bad-Variant/u1", "/v1/recommendations/comedy_featured/",
    "/v1/recommendations//u1", "/v1/recommendations/drama_featured/u1",  # configured, never published: 503
]


def _pair(config: Any) -> Iterator[tuple[TestClient, TestClient]]:
    fast = TestClient(create_app(config), raise_server_exceptions=False)
    plain = TestClient(create_app(config, hot_path=False), raise_server_exceptions=False)
    with fast, plain:
        yield fast, plain


@pytest.fixture
def pair(serve_config, redis_client) -> Iterator[tuple[TestClient, TestClient]]:
    standard_set(redis_client)
    yield from _pair(serve_config)


def _same(a: Any, b: Any) -> None:
    assert a.status_code == b.status_code, (a.text, b.text)
    drop = {"x-request-id"}
    assert [(k, v) for k, v in a.headers.multi_items() if k not in drop] == \
        [(k, v) for k, v in b.headers.multi_items() if k not in drop]
    if a.content and a.headers.get("content-type") == "application/json":
        ja, jb = a.json(), b.json()
        for j in (ja, jb):
            j.pop("request_id", None)
            if "impression_id" in j:  # one per answer (random): same shape, never the same value
                assert j["impression_id"].startswith("-.-.") and len(j.pop("impression_id")) == 36
        assert ja == jb
    else:
        assert a.content == b.content


@pytest.mark.parametrize("path", CASES)
def test_same_answer_as_the_fastapi_route(pair, path):
    fast, plain = pair
    _same(fast.get(path), plain.get(path))


def test_same_answer_for_head_and_other_methods(pair):
    fast, plain = pair
    for method in ("HEAD", "POST", "DELETE"):
        _same(fast.request(method, BASE + "u1"), plain.request(method, BASE + "u1"))
    # HEAD is the GET without its body, on either path
    for client in pair:
        head = client.head(BASE + "u1")
        assert head.status_code == 200 and head.content == b""
        assert head.headers["content-length"] == str(len(client.get(BASE + "u1").content))


def test_same_answer_when_redis_is_unreachable(config_factory):
    config = config_factory({"serve": {"redis_url": f"redis://127.0.0.1:{free_port()}/0", "access_log": False,
                                       "redis_timeout_seconds": 0.2}})
    for fast, plain in _pair(config):
        a, b = fast.get(BASE + "u1"), plain.get(BASE + "u1")
        assert a.status_code == 503 and a.headers["retry-after"] == "1"
        _same(a, b)


def test_same_answer_for_an_unexpected_error(pair, monkeypatch):
    fast, plain = pair

    async def broken(*args: Any, **kwargs: Any) -> Any:
        raise RuntimeError("boom")

    for client in (fast, plain):
        monkeypatch.setattr(client.app.state.store, "recommend", broken)
    a, b = fast.get(BASE + "u1"), plain.get(BASE + "u1")
    assert a.status_code == 500 and a.json()["error"] == "internal_error"
    _same(a, b)


def _hot(app: Any) -> Any:
    layer = app.middleware_stack
    while layer is not None and type(layer).__name__ != "HotPath":
        layer = getattr(layer, "app", None)
    assert layer is not None, "no HotPath in the middleware stack"
    return layer


def test_the_hot_path_answers_without_the_router(pair):
    fast, _ = pair
    fast.get("/healthz")  # builds the middleware stack
    hot = _hot(fast.app)
    passed: list[str] = []
    inner = hot.app

    async def spy(scope: Any, receive: Any, send: Any) -> None:
        passed.append(scope["path"])
        await inner(scope, receive, send)

    hot.app = spy
    assert fast.get(BASE + "u1?limit=2").status_code == 200
    assert fast.get(BASE + "nobody").status_code == 200
    assert fast.get(BASE + "u1?limit=101").status_code == 422
    assert passed == []
    # what it does not take reaches the router
    assert fast.get(BASE + "u1?limt=2").status_code == 422
    assert fast.get(BASE + "u1?limit=2&limit=3").status_code == 422
    assert fast.get("/v1/variants").status_code == 200
    assert passed == [BASE + "u1", BASE + "u1", "/v1/variants"]


@pytest.mark.parametrize("query, name, times", [("limit=z&limit=6", "limit", 2), ("offset=1&offset=2&offset=3",
                                                                                  "offset", 3)])
def test_a_repeated_query_parameter_is_refused_on_both_paths(pair, query, name, times):
    """Never "the last value wins": both paths refuse it, naming the parameter and how often it came."""
    for client in pair:
        r = client.get(BASE + "u1?" + query)
        assert r.status_code == 422, r.text
        body = r.json()
        assert body["error"] == "invalid_request" and body["message"] == (
            f"{name}: given {times} times; this parameter takes one value"), body
        assert body["details"][0]["loc"] == ["query", name]


def test_metrics_name_the_route_template(pair):
    fast, _ = pair
    assert fast.get(BASE + "u1").status_code == 200
    assert fast.get(BASE + "u1?limit=0").status_code == 422
    text = fast.get("/metrics").text
    template = 'route="/v1/recommendations/{variant}/{user_id}"'
    assert any(template in line and 'status="200"' in line and line.startswith(
        "skyrec_http_request_duration_seconds_count") for line in text.splitlines()), text[:2000]
    assert any(template in line and 'status="422"' in line for line in text.splitlines())
    assert 'skyrec_recommendations_total{source="personalised",variant="comedy_featured"} 1.0' in text


def test_a_route_registered_before_keeps_its_paths(serve_config, redis_client):
    standard_set(redis_client)

    async def special(request: Any) -> JSONResponse:
        return JSONResponse({"special": request.path_params["user_id"]})

    app = create_app(serve_config)
    app.router.routes.insert(0, Route("/v1/recommendations/comedy_featured/{user_id}", special))
    with TestClient(app) as client:
        assert client.get(BASE + "u1").json() == {"special": "u1"}
        assert client.get("/v1/recommendations/gripping_stories/u1").status_code in (200, 503)
        assert "special" not in client.get("/v1/recommendations/gripping_stories/u1").json()
