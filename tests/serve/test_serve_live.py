"""A real uvicorn process over a real redis-server: JSON logs with request ids, graceful shutdown, several workers,
and the headless-Chromium helper (the OpenAPI contract suite is test_serve_contract.py, the explorer's states
test_explorer.py)."""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import httpx
import pytest
import redis
from serve_data import VARIANTS, publish_history, standard_set

from skyrec.redis_local import LocalRedis, free_port

pytestmark = pytest.mark.integration

ROOT = Path(__file__).resolve().parents[2]
ADMIN_KEY = "live-admin-key"


@dataclass
class LiveServer:
    url: str
    process: subprocess.Popen
    log_path: Path
    redis_url: str

    def logs(self) -> list[dict]:
        out = []
        for line in self.log_path.read_text().splitlines():
            try:
                out.append(json.loads(line))
            except ValueError:
                out.append({"raw": line})
        return out


def start_api(tmp: Path, redis_url: str, **env_extra: str) -> LiveServer:
    port = free_port()
    env = {**os.environ, "SKYREC_HOME": str(tmp / "home"), "SKYREC_PROJECT_ROOT": str(ROOT),
           "SKYREC__SERVE__REDIS_URL": redis_url, "SKYREC_ADMIN_API_KEY": ADMIN_KEY, **env_extra}
    log_path = tmp / f"api-{port}.log"
    with log_path.open("wb") as log:
        proc = subprocess.Popen([sys.executable, "-m", "skyrec.serve", "--host", "127.0.0.1", "--port", str(port)],
                                env=env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
    url = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"API exited: {log_path.read_text()[-2000:]}")
        try:
            if httpx.get(url + "/healthz", timeout=0.5).status_code == 200:
                return LiveServer(url, proc, log_path, redis_url)
        except httpx.HTTPError:
            time.sleep(0.1)
    proc.kill()
    raise RuntimeError(f"API did not start: {log_path.read_text()[-2000:]}")


def stop_api(server: LiveServer) -> int:
    if server.process.poll() is None:
        server.process.send_signal(signal.SIGTERM)
        try:
            return server.process.wait(timeout=20)
        except subprocess.TimeoutExpired:
            server.process.kill()
            return server.process.wait()
    return server.process.returncode


@pytest.fixture(scope="module")
def live(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LiveServer]:
    tmp = tmp_path_factory.mktemp("live")
    redis_server = LocalRedis(port=free_port(), dir=tmp / "redis").start()
    try:
        r = redis.Redis.from_url(redis_server.url)
        for variant in VARIANTS:
            standard_set(r, variant=variant, activity="end=20261123T18")
        publish_history(r, "end=20261123T18", "u1", [("p002", "2026-11-23T17:00:00Z"), ("p004", "2026-11-22T09:00:00Z")])
        r.close()
        server = start_api(tmp, redis_server.url)
        try:
            yield server
        finally:
            stop_api(server)
    finally:
        redis_server.stop()


def test_live_answers_and_logs_json_with_request_ids(live):
    r = httpx.get(live.url + "/v1/recommendations/comedy_featured/u1?limit=3", headers={"X-Request-ID": "live-1"})
    assert r.status_code == 200 and r.headers["x-request-id"] == "live-1"
    assert [i["id"] for i in r.json()["items"]] == ["p001", "p003", "p005"]
    assert httpx.get(live.url + "/readyz").status_code == 200
    time.sleep(0.2)
    access = [e for e in live.logs() if e.get("logger") == "skyrec.serve.access" and e.get("request_id") == "live-1"]
    assert access and access[0]["status"] == 200 and access[0]["route"] == "/v1/recommendations/{variant}/{user_id}"
    assert all("raw" not in e for e in live.logs()), "every log line is JSON"
    assert ADMIN_KEY not in live.log_path.read_text()


def test_live_head_probes_on_a_kept_alive_connection(live):
    """HEAD over the real server (uvicorn's HTTP protocol): the GET's status and Content-Length, no body, and the
    connection frames the next request right (a HEAD that sent a body would corrupt it)."""
    with httpx.Client(base_url=live.url) as client:
        for path in ("/healthz", "/readyz", "/", "/v1/variants", "/v1/recommendations/comedy_featured/u1?limit=3"):
            head = client.head(path)
            get = client.get(path)
            assert head.status_code == get.status_code == 200, path
            assert head.content == b"" and head.headers["content-type"] == get.headers["content-type"], path
            if path != "/v1/variants":  # (its ages grow between the two requests)
                assert head.headers["content-length"] == str(len(get.content)), path
        assert client.head("/v1/events").status_code == 405
        assert [i["id"] for i in client.get("/v1/recommendations/comedy_featured/u1?limit=3").json()["items"]] == \
            ["p001", "p003", "p005"]


def test_graceful_shutdown_on_sigterm(tmp_path, live):
    """SIGTERM: uvicorn stops accepting, drains, runs the lifespan exit (closes the Redis pool), then exits
    by the same signal (uvicorn re-raises it so supervisors see why it ended)."""
    server = start_api(tmp_path, live.redis_url)
    assert httpx.get(server.url + "/healthz").status_code == 200
    assert stop_api(server) in (0, -signal.SIGTERM)
    messages = [e.get("msg") for e in server.logs()]
    assert "serving" in messages and "stopped" in messages and "Application shutdown complete." in messages
    assert messages.index("Shutting down") < messages.index("stopped")


def test_several_workers_share_the_port(tmp_path, live):
    server = start_api(tmp_path, live.redis_url, SKYREC__SERVE__WORKERS="2")
    try:
        # A new connection per request: the kernel spreads them over the workers.
        bodies = [httpx.get(server.url + "/v1/recommendations/comedy_featured/u1?limit=2").json() for _ in range(20)]
        assert all([i["id"] for i in b["items"]] == ["p001", "p003"] for b in bodies)
        starts = [e for e in server.logs() if e.get("msg") == "serving"]
        assert len(starts) == 2, server.log_path.read_text()[-2000:]
    finally:
        assert stop_api(server) in (0, -signal.SIGTERM)
    assert [e.get("msg") for e in server.logs()].count("stopped") == 2


# ---- headless Chromium (the API docs pages here; the explorer's states are in test_explorer.py) ---------------


def chromium() -> str:
    for name in ("chromium", "chromium-browser", "google-chrome"):
        path = shutil.which(name)
        if path:
            return path
    pytest.fail("headless Chromium not found: `make setup` installs it (apt-get install -y chromium)")


def run_chromium(args: list[str], tmp: Path) -> subprocess.CompletedProcess:
    cmd = [chromium(), "--headless", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage",
           "--disable-background-networking", "--disable-component-update", "--disable-sync", "--no-first-run",
           "--hide-scrollbars", f"--user-data-dir={tmp / 'chromium-profile'}", "--virtual-time-budget=5000", *args]
    return subprocess.run(cmd, capture_output=True, text=True, timeout=90)
