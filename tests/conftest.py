"""Shared fixtures. Servers are real: redis-server is started here, not faked."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import pytest

from skyrec.config import Config, load_config
from skyrec.redis_local import LocalRedis, free_port, temporary_redis

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture(scope="session")
def redis_server(tmp_path_factory: pytest.TempPathFactory):
    """A real redis-server on a free loopback port for the whole session."""
    with temporary_redis(tmp_path_factory.mktemp("redis")) as server:
        yield server


@pytest.fixture
def redis_client(redis_server: LocalRedis):
    import redis

    client = redis.Redis.from_url(redis_server.url)
    client.flushall()
    yield client
    client.close()


@pytest.fixture
def skyrec_home(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """An isolated SKYREC_HOME (lake, source, state) for one test."""
    home = tmp_path / "home"
    home.mkdir()
    monkeypatch.setenv("SKYREC_HOME", str(home))
    monkeypatch.setenv("SKYREC_PROJECT_ROOT", str(ROOT))
    return home


@pytest.fixture
def config(skyrec_home: Path, monkeypatch: pytest.MonkeyPatch) -> Config:
    """The local config with SKYREC_HOME isolated under tmp_path."""
    return load_config("local", root=ROOT, environ={**os.environ, "SKYREC_HOME": str(skyrec_home)})


@pytest.fixture
def s3(monkeypatch: pytest.MonkeyPatch) -> Any:
    """A real S3 endpoint over HTTP (moto's server) with a bucket ``lake``, behind a fault-injecting proxy:
    yields (endpoint, proxy)."""
    from moto.server import ThreadedMotoServer

    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "testing")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "testing")
    monkeypatch.setenv("AWS_DEFAULT_REGION", "us-east-1")
    port = free_port()
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=port, verbose=False)
    server.start()
    import boto3
    import requests

    endpoint = f"http://127.0.0.1:{port}"
    requests.post(f"{endpoint}/moto-api/reset", timeout=10)  # moto keeps state per process: start empty
    boto3.client("s3", endpoint_url=endpoint).create_bucket(Bucket="lake")
    from skyrec.chaos.proxy import FaultProxy

    proxy = FaultProxy("127.0.0.1", port).start()
    try:
        yield endpoint, proxy
    finally:
        proxy.stop()
        server.stop()


def shipped_rails() -> list[str]:
    """The rails of ``config/base.yaml``."""
    import yaml

    return list(yaml.safe_load((ROOT / "config" / "base.yaml").read_text())["variants"])


@pytest.fixture
def config_factory(skyrec_home: Path):
    """Build a local config with overrides (nested dict), e.g. {"publish": {"redis_url": ...}};
    ``rails="als"`` puts every shipped rail on that model (tests of a synthetic dense artefact committed as
    ``als``: the shipped rails use item-kNN).

    The API's Redis timeout is 5 s unless a test sets it: the shipped 0.5 s answers 503 when a loaded
    2-core CI machine delays one reply (seen once under the chaos test's workers); the tests of that
    503 path set their own small timeouts."""

    def make(overrides: dict | None = None, *, rails: str | None = None) -> Config:
        overrides = dict(overrides or {})
        overrides["serve"] = {"redis_timeout_seconds": 5.0, **(overrides.get("serve") or {})}
        if rails is not None:  # every shipped rail on this model (a test's own variants override win)
            own = overrides.get("variants") or {}
            on = {name: {"model": rails, **(own.get(name) or {})} for name in shipped_rails()}
            overrides["variants"] = {**own, **on}
        return load_config("local", root=ROOT, overrides=overrides,
                           environ={**os.environ, "SKYREC_HOME": str(skyrec_home)})

    return make


__all__ = ["free_port"]


@pytest.fixture(scope="session")
def dag_folder_home():
    """``make(base, dag_file)``: one SKYREC_HOME (so one Airflow metadata DB, migrated once) under ``base`` and a
    DAG folder holding ``dag_file`` (linked): the place a test runs `skyrec run` on its own DAGs."""

    def make(base: Path, dag_file: Path) -> dict[str, Path]:
        dags = base / "dags"
        dags.mkdir()
        (dags / dag_file.name).symlink_to(dag_file)
        return {"home": base / "home", "dags": dags}

    return make
