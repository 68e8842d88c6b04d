"""``--workers N``: ``skyrec serve`` and ``python -m skyrec.serve`` take the worker count over ``serve.workers``;
a real server started with ``--workers 2`` runs two worker processes, each with its own app (lifespan, caches,
Redis connections) and both answering."""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import httpx
import psutil
import pytest
from typer.testing import CliRunner

from skyrec.redis_local import free_port

ROOT = Path(__file__).resolve().parents[2]


def test_cli_workers_flag_reaches_run(monkeypatch):
    from skyrec.cli import app

    seen: dict[str, Any] = {}

    def fake_run(config: Any, host: Any = None, port: Any = None, workers: Any = None) -> None:
        seen.update(workers=workers, config_workers=config.serve.workers)

    monkeypatch.setattr("skyrec.serve.main.run", fake_run)
    runner = CliRunner()
    assert runner.invoke(app, ["serve", "--workers", "3"]).exit_code == 0
    assert seen == {"workers": 3, "config_workers": 1}
    assert runner.invoke(app, ["serve"]).exit_code == 0
    assert seen["workers"] is None  # the config's serve.workers applies
    bad = runner.invoke(app, ["serve", "--workers", "0"])
    assert bad.exit_code != 0 and "--workers" in bad.output


def test_module_workers_flag_is_validated():
    proc = subprocess.run([sys.executable, "-m", "skyrec.serve", "--workers", "0"], capture_output=True, text=True,
                          env={**os.environ, "PYTHONPATH": str(ROOT / "src")}, timeout=60)
    assert proc.returncode == 2 and "--workers must be at least 1" in proc.stderr


def _start(tmp_path: Path, redis_url: str, workers: int = 2, port: int | None = None,
           **env_extra: str) -> tuple[subprocess.Popen, str, Path]:
    port = port or free_port()
    env = {**os.environ, "SKYREC_HOME": str(tmp_path / "home"), "SKYREC_PROJECT_ROOT": str(ROOT),
           "SKYREC__SERVE__REDIS_URL": redis_url, "SKYREC__SERVE__WORKERS": "1", "PYTHONPATH": str(ROOT / "src"),
           **env_extra}
    log_path = tmp_path / f"api-{port}.log"
    with log_path.open("wb") as log:
        proc = subprocess.Popen([sys.executable, "-m", "skyrec.serve", "--host", "127.0.0.1", "--port", str(port),
                                 "--workers", str(workers)], env=env, stdout=log, stderr=subprocess.STDOUT,
                                start_new_session=True)
    return proc, f"http://127.0.0.1:{port}", log_path


def _logs(log_path: Path) -> list[dict[str, Any]]:
    return [json.loads(line) for line in log_path.read_text().splitlines() if line.startswith("{")]


def _wait_serving(proc: subprocess.Popen, log_path: Path, count: int) -> None:
    """Until ``count`` workers were ready as the supervisor sees them (a worker that dies before that is a
    failed start, which stops the supervisor; its app's own "serving" log comes a little earlier)."""
    deadline = time.monotonic() + 60
    while sum(1 for e in _logs(log_path) if e.get("msg") == "worker ready") < count:
        assert proc.poll() is None, log_path.read_text()[-2000:]
        assert time.monotonic() < deadline, log_path.read_text()[-2000:]
        time.sleep(0.1)


def _workers(proc: subprocess.Popen) -> list[psutil.Process]:
    return [p for p in psutil.Process(proc.pid).children() if "resource_tracker" not in " ".join(p.cmdline())]


def _stop(proc: subprocess.Popen) -> int:
    if proc.poll() is None:
        proc.send_signal(signal.SIGTERM)
    return proc.wait(timeout=40)


@pytest.mark.integration
def test_two_workers_share_the_connections_and_nothing_else(tmp_path, own_redis):
    proc, url, log_path = _start(tmp_path, own_redis)
    try:
        _wait_serving(proc, log_path, 2)
        workers = _workers(proc)
        assert len(workers) == 2, [p.cmdline() for p in workers]
        port = int(url.rsplit(":", 1)[1])
        # each worker listens on a socket of its own (not one inherited socket that both accept from)
        listening = set()
        for w in workers:
            fds = [k.fd for k in w.net_connections("tcp") if k.laddr.port == port and k.status == "LISTEN"]
            assert len(fds) == 1, fds
            listening.add(os.readlink(f"/proc/{w.pid}/fd/{fds[0]}"))
        assert len(listening) == 2, listening
        # 16 keep-alive connections opened at once (as a load balancer or wrk does): each worker gets some
        conns = [socket.create_connection(("127.0.0.1", port)) for _ in range(16)]
        try:
            for c in conns:
                c.sendall(b"GET /v1/recommendations/comedy_featured/u1?limit=2 HTTP/1.1\r\nHost: t\r\n\r\n")
            for c in conns:
                assert c.recv(65536).startswith(b"HTTP/1.1 200")
            held = [sum(1 for k in w.net_connections("tcp") if k.laddr.port == port and k.status == "ESTABLISHED")
                    for w in workers]
            assert sum(held) == 16 and min(held) >= 1, held
        finally:
            for c in conns:
                c.close()
    finally:
        assert _stop(proc) in (0, -signal.SIGTERM)
    assert [e.get("msg") for e in _logs(log_path)].count("stopped") == 2


@pytest.mark.integration
def test_a_killed_worker_is_replaced(tmp_path, own_redis):
    proc, url, log_path = _start(tmp_path, own_redis)
    try:
        _wait_serving(proc, log_path, 2)
        victim = _workers(proc)[0]
        victim.kill()
        _wait_serving(proc, log_path, 3)  # a new worker started its app
        assert len(_workers(proc)) == 2 and victim.pid not in [w.pid for w in _workers(proc)]
        assert any(e.get("msg") == "worker exited; restarting" for e in _logs(log_path))
        assert httpx.get(url + "/v1/recommendations/comedy_featured/u1").status_code == 200
    finally:
        assert _stop(proc) in (0, -signal.SIGTERM)


@pytest.mark.integration
def test_a_port_in_use_is_refused(tmp_path, own_redis):
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        proc, _, log_path = _start(tmp_path, own_redis, port=port)
        assert proc.wait(timeout=60) == 1
    assert "is already in use" in log_path.read_text()


def test_a_worker_that_cannot_start_stops_the_server():
    from skyrec.serve import workers
    from skyrec.serve.observability import log_config

    started = time.monotonic()
    status = workers.serve(2, {"host": "127.0.0.1", "port": free_port(), "app": "skyrec.serve.no_such_module:app",
                               "log_config": log_config("WARNING")})
    assert status == 1
    assert time.monotonic() - started < 60
