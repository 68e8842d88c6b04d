"""Serve-area fixtures: a config pointing the API at the session's real redis-server, and app clients."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest
from fastapi.testclient import TestClient


@pytest.fixture
def serve_config(config_factory, redis_server):
    return config_factory({"serve": {"redis_url": redis_server.url, "pointer_cache_seconds": 0.0,
                                     "access_log": False}})


@pytest.fixture
def make_client(redis_client, monkeypatch) -> Iterator[Any]:
    """Build an app from a config and enter its lifespan; closed at teardown."""
    from skyrec.serve.main import create_app

    opened: list[TestClient] = []

    def make(config, *, admin_key: str | None = None, raise_server_exceptions: bool = True) -> TestClient:
        if admin_key is None:
            monkeypatch.delenv(config.serve.admin_api_key_env, raising=False)
        else:
            monkeypatch.setenv(config.serve.admin_api_key_env, admin_key)
        client = TestClient(create_app(config), raise_server_exceptions=raise_server_exceptions)
        client.__enter__()
        opened.append(client)
        return client

    yield make
    for client in opened:
        client.__exit__(None, None, None)


@pytest.fixture
def client(make_client, serve_config) -> TestClient:
    return make_client(serve_config)


@pytest.fixture
def own_redis(tmp_path) -> Iterator[str]:
    """A redis-server of this test's own, holding the standard publication (``serve_data.standard_set``): for
    tests that start API processes and must not share the session's server; its URL."""
    import redis
    from serve_data import standard_set

    from skyrec.redis_local import LocalRedis, free_port

    server = LocalRedis(port=free_port(), dir=tmp_path / "redis").start()
    try:
        r = redis.Redis.from_url(server.url)
        standard_set(r)
        r.close()
        yield server.url
    finally:
        server.stop()
