"""The world one fault run works on: moto's S3 server (the lake's object store) behind the fault proxy, a
real redis-server (serving), the skyrec API as its own process, and tiny generated data.

Everything is configured through the environment (``SKYREC_HOME``, ``SKYREC__*``), so the workers, the
job processes and the API all read the same configuration the way a deployment would. The lake is
``s3://lake/lake`` reached through the proxy; the harness reads it for its checks through a direct
connection to moto (checks are never faulted). Logs of the servers go to ``<dir>/logs``.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import json
import os
import subprocess
import sys
import time
import urllib.request
from pathlib import Path
from typing import Any

from skyrec.chaos.proxy import FaultProxy
from skyrec.redis_local import LocalRedis, free_port, ping

BUCKET = "lake"
VARIANTS = ("recommended_for_you", "comedy_featured")


def _wait(pred: Any, timeout: float, what: str) -> None:
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        if pred():
            return
        time.sleep(0.05)
    raise RuntimeError(f"{what} did not come up within {timeout:.0f}s")


def _http_ok(url: str) -> bool:
    try:
        with urllib.request.urlopen(url, timeout=1) as resp:
            return bool(resp.status < 500)
    except OSError:
        return False


class World:
    """Start with :meth:`start`, stop with :meth:`stop` (or use as a context manager)."""

    def __init__(self, root: Path, *, seed: int, days: int = 2, users: int = 80, items: int = 150,
                 events_per_user: float = 24.0) -> None:
        self.root = Path(root)
        self.home = self.root / "home"
        self.logs = self.root / "logs"
        self.seed = seed
        self.days, self.users, self.items, self.events_per_user = days, users, items, events_per_user
        self.moto: subprocess.Popen[bytes] | None = None
        self.proxy: FaultProxy | None = None
        self.redis: LocalRedis | None = None
        self.api: subprocess.Popen[bytes] | None = None
        self.api_port = 0
        self.moto_port = 0
        self.end = dt.datetime(2026, 3, 1, tzinfo=dt.UTC) + dt.timedelta(days=days)
        self.env: dict[str, str] = {}
        self._saved_env: dict[str, str | None] = {}

    # ---- lifecycle -----------------------------------------------------------------------------
    def start(self) -> World:
        self.home.mkdir(parents=True, exist_ok=True)
        self.logs.mkdir(parents=True, exist_ok=True)
        self.moto_port = free_port()
        with open(self.logs / "moto.log", "ab") as log:
            self.moto = subprocess.Popen([sys.executable, "-m", "moto.server", "-H", "127.0.0.1", "-p",
                                          str(self.moto_port)], stdout=log, stderr=subprocess.STDOUT,
                                         start_new_session=True)
        _wait(lambda: _http_ok(f"http://127.0.0.1:{self.moto_port}/moto-api/"), 30, "moto server")
        self.proxy = FaultProxy("127.0.0.1", self.moto_port).start()
        self.redis = LocalRedis(port=free_port(), dir=self.home / "redis")
        self.redis.start(persist=True)
        self.api_port = free_port()
        self.env = {
            "AWS_ACCESS_KEY_ID": "chaos", "AWS_SECRET_ACCESS_KEY": "chaos", "AWS_DEFAULT_REGION": "us-east-1",
            "SKYREC_HOME": str(self.home),
            "SKYREC_ENV": "local",
            "AIRFLOW_HOME": str(self.root / "airflow"),
            "SKYREC__STORAGE__LAKE": f"s3://{BUCKET}/lake",
            "SKYREC__STORAGE__STORAGE_OPTIONS": json.dumps({"client_kwargs": {"endpoint_url": self.proxy.url}}),
            "SKYREC__PUBLISH__REDIS_URL": self.redis.url,
            "SKYREC__SERVE__REDIS_URL": self.redis.url,
            "SKYREC__PUBLISH__SCRATCH_REDIS_PORT": str(free_port()),
            "SKYREC__SERVE__PORT": str(self.api_port),
            "SKYREC__SERVE__ACCESS_LOG": "false",
            "SKYREC__ALERTS__WEBHOOK_URL": "",
            "SKYREC__JOBS__POLL_INTERVAL_SECONDS": "0.1",
            "SKYREC__JOBS__HEARTBEAT_SECONDS": "0.2",
            "SKYREC__JOBS__CANCEL_TIMEOUT_SECONDS": "1.5",
            "SKYREC__JOBS__HEARTBEAT_TIMEOUT_SECONDS": "10",
            "SKYREC__TRAINING__HOLDOUT_DAYS": "1",
            "SKYREC__TRAINING__QUALITY_GATE__TOLERANCE": "1.0",
            "SKYREC__TRAINING__QUALITY_GATE__MUST_BEAT_BASELINE": "false",
            "SKYREC__PRECOMPUTE__K": "10",
            "SKYREC__PRECOMPUTE__THREADS": "1",
            "PYTHONUNBUFFERED": "1",
        }
        self._saved_env = {k: os.environ.get(k) for k in self.env}
        os.environ.update(self.env)
        import boto3

        boto3.client("s3", endpoint_url=self.direct_endpoint).create_bucket(Bucket=BUCKET)
        return self

    def own_pids(self) -> set[int]:
        """The world's own long-running servers (moto, the serving Redis, the API), which may name the home."""
        procs = [self.moto, self.api, self.redis.process if self.redis is not None else None]
        return {p.pid for p in procs if p is not None and p.poll() is None}

    def stop(self) -> None:
        self.stop_api()
        if self.redis is not None:
            self.redis.stop()
        if self.proxy is not None:
            self.proxy.stop()
        if self.moto is not None and self.moto.poll() is None:
            self.moto.terminate()
            with contextlib.suppress(subprocess.TimeoutExpired):
                self.moto.wait(10)
            if self.moto.poll() is None:
                self.moto.kill()
        for k, v in self._saved_env.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v

    def __enter__(self) -> World:
        return self.start()

    def __exit__(self, *exc: Any) -> None:
        self.stop()

    # ---- parts ---------------------------------------------------------------------------------
    @property
    def direct_endpoint(self) -> str:
        return f"http://127.0.0.1:{self.moto_port}"

    def config(self, *, direct: bool = False) -> Any:
        """The configuration every process of the run reads; ``direct``: the lake without the fault proxy."""
        from skyrec.config import load_config

        if not direct:
            return load_config("local")
        options = json.dumps({"client_kwargs": {"endpoint_url": self.direct_endpoint}})
        return load_config("local", environ={**os.environ, "SKYREC__STORAGE__STORAGE_OPTIONS": options})

    def check_lake(self) -> Any:
        """The lake as the harness reads it: straight to moto (never through the fault proxy), no caches."""
        from skyrec.storage import Lake

        return Lake(f"s3://{BUCKET}/lake", {"client_kwargs": {"endpoint_url": self.direct_endpoint},
                                            "skip_instance_cache": True, "use_listings_cache": False})

    def start_api(self) -> None:
        with open(self.logs / "api.log", "ab") as log:
            self.api = subprocess.Popen([sys.executable, "-m", "skyrec.serve", "--port", str(self.api_port)],
                                        stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
        _wait(lambda: _http_ok(f"{self.api_url}/healthz"), 60, "skyrec API")

    def stop_api(self) -> None:
        if self.api is not None and self.api.poll() is None:
            self.api.terminate()
            with contextlib.suppress(subprocess.TimeoutExpired):
                self.api.wait(15)
            if self.api.poll() is None:
                self.api.kill()
                self.api.wait(5)

    @property
    def api_url(self) -> str:
        return f"http://127.0.0.1:{self.api_port}"

    def kill_redis(self) -> None:
        """kill -9 the serving redis-server (what was not saved is lost, as in a crash)."""
        assert self.redis is not None
        proc = self.redis.process
        if proc is not None and proc.poll() is None:
            proc.kill()
            proc.wait(10)

    def restart_redis(self) -> None:
        assert self.redis is not None
        if not ping(self.redis.host, self.redis.port):
            self.redis.start(persist=True)

    # ---- data ----------------------------------------------------------------------------------
    def generate(self) -> dict[str, Any]:
        from skyrec.data.generate import generate

        return generate(self.config(), users=self.users, items=self.items, days=self.days,
                        events_per_user=self.events_per_user, seed=self.seed, end=self.end.isoformat(),
                        bad_rate=0.01, progress=False)

    def hours(self) -> list[dt.datetime]:
        """Hours of generated activity, oldest first."""
        first = self.end - dt.timedelta(days=self.days)
        return [first + dt.timedelta(hours=h) for h in range(self.days * 24)]
