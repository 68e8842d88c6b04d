"""The access log: one JSON line per request with the same fields whichever way it is written (formatted by the
middleware for the served logging setup, through ``logging`` otherwise), gathered and written every
``interval``, and never lost on a graceful stop (SIGTERM) of one server or of several workers. With several
workers ``/metrics`` adds up all of them."""

from __future__ import annotations

import asyncio
import io
import json
import logging
import logging.config
import os
import re
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import psutil
import pytest
from prometheus_client.parser import text_string_to_metric_families
from serve_data import standard_set

from skyrec.redis_local import free_port
from skyrec.serve.observability import ACCESS_LOGGER, BufferedStreamHandler, JsonFormatter

ROOT = Path(__file__).resolve().parents[2]
V = "comedy_featured"
ROUTE = "/v1/recommendations/{variant}/{user_id}"


@pytest.fixture
def logging_state() -> Iterator[None]:
    """Restore the skyrec loggers' handlers and propagation after a test that configures them."""
    names = ("skyrec", "skyrec.serve", ACCESS_LOGGER)
    saved = {n: (list(logging.getLogger(n).handlers), logging.getLogger(n).propagate, logging.getLogger(n).level)
             for n in names}
    yield
    for n, (handlers, propagate, level) in saved.items():
        logger = logging.getLogger(n)
        for h in logger.handlers:
            if h not in handlers:
                h.close()
        logger.handlers[:] = handlers
        logger.propagate = propagate
        logger.setLevel(level)


def _route_access_to(handler: logging.Handler) -> None:
    handler.setFormatter(JsonFormatter())
    access = logging.getLogger(ACCESS_LOGGER)
    access.handlers[:] = [handler]
    access.propagate = False
    access.setLevel(logging.INFO)


def _client(make_client: Any, config_factory: Any, redis_server: Any) -> Any:
    return make_client(config_factory({"serve": {"redis_url": redis_server.url, "access_log": True}}))


def _access(text: str) -> list[dict[str, Any]]:
    return [e for e in map(json.loads, text.splitlines()) if e.get("logger") == ACCESS_LOGGER]


def test_direct_and_logging_lines_carry_the_same_fields(make_client, config_factory, redis_server, redis_client,
                                                        logging_state):
    standard_set(redis_client)
    lines: dict[str, list[dict[str, Any]]] = {}
    for kind, handler in (("logging", logging.StreamHandler(io.StringIO())),
                          ("direct", BufferedStreamHandler(io.StringIO(), interval=0.0))):
        _route_access_to(handler)
        client = _client(make_client, config_factory, redis_server)
        assert client.get(f"/v1/recommendations/{V}/u1?limit=2", headers={"X-Request-ID": "r-1"}).status_code == 200
        assert client.get("/v1/nothing/here", headers={"X-Request-ID": "r-2"}).status_code == 404
        client.__exit__(None, None, None)  # the lifespan's end writes what is gathered
        lines[kind] = _access(handler.stream.getvalue())
    assert len(lines["direct"]) == len(lines["logging"]) == 2
    for a, b in zip(lines["direct"], lines["logging"], strict=True):
        assert list(a) == list(b)  # same fields, same order
        assert {k: v for k, v in a.items() if k not in ("ts", "duration_ms")} == \
            {k: v for k, v in b.items() if k not in ("ts", "duration_ms")}
        assert re.fullmatch(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}\+00:00", a["ts"])
        assert abs(time.time() - time.mktime(time.strptime(a["ts"][:19], "%Y-%m-%dT%H:%M:%S")) + time.timezone) < 60
    assert lines["direct"][0] | {"ts": 0, "duration_ms": 0} == {
        "ts": 0, "level": "INFO", "logger": ACCESS_LOGGER, "msg": "request", "request_id": "r-1", "method": "GET",
        "path": f"/v1/recommendations/{V}/u1", "route": ROUTE, "status": 200, "duration_ms": 0}


def test_lines_are_gathered_and_written_at_the_lifespans_end(make_client, config_factory, redis_server,
                                                             redis_client, logging_state):
    standard_set(redis_client)
    stream = io.StringIO()
    _route_access_to(BufferedStreamHandler(stream, interval=3600))
    client = _client(make_client, config_factory, redis_server)
    for i in range(5):
        client.get(f"/v1/recommendations/{V}/u1", headers={"X-Request-ID": f"g-{i}"})
    assert stream.getvalue() == ""  # gathered, not written line by line
    client.__exit__(None, None, None)
    assert [e["request_id"] for e in _access(stream.getvalue())] == [f"g-{i}" for i in range(5)]


def test_the_timer_writes_gathered_lines_and_records_keep_the_order():
    stream = io.StringIO()
    handler = BufferedStreamHandler(stream, interval=0.05)
    handler.setFormatter(JsonFormatter())
    logger = logging.getLogger("skyrec.test_buffered")
    logger.handlers[:] = [handler]
    logger.propagate = False
    try:
        async def main() -> None:
            handler.write_line('{"n": 1}')
            handler.write_line('{"n": 2}')
            assert stream.getvalue() == ""
            await asyncio.sleep(0.2)
            assert stream.getvalue() == '{"n": 1}\n{"n": 2}\n'
            handler.write_line('{"n": 3}')
            logger.warning("after three")  # a record: written at once, after the line gathered before it
            assert [json.loads(x).get("n", json.loads(x).get("msg")) for x in stream.getvalue().splitlines()] == \
                [1, 2, 3, "after three"]

        asyncio.run(main())
        handler.write_line('{"n": 4}')  # no event loop running here: written at once
        assert stream.getvalue().endswith('{"n": 4}\n')
    finally:
        logger.handlers[:] = []
        handler.close()


def test_a_new_event_loop_gets_its_own_timer():
    """A timer armed on a loop that closed before it fired must not stop the next loop's lines being written."""
    stream = io.StringIO()
    handler = BufferedStreamHandler(stream, interval=0.05)

    async def first() -> None:
        handler.write_line("a")  # the loop ends before the timer fires

    async def second() -> None:
        handler.write_line("b")
        await asyncio.sleep(0.2)

    asyncio.run(first())
    asyncio.run(second())
    assert stream.getvalue() == "a\nb\n"
    handler.close()


# ---- real servers ------------------------------------------------------------------------------------------

_RUN = """
import sys
from skyrec.serve import observability
observability.ACCESS_LOG_INTERVAL = 3600.0  # lines reach the file only when the server writes them on stopping
if __name__ == "__main__":
    from skyrec.serve.__main__ import main
    main(sys.argv[1:])
"""


def _start(tmp_path: Path, redis_url: str, workers: int) -> tuple[subprocess.Popen, str, Path]:
    port = free_port()
    script = tmp_path / "run_api.py"
    script.write_text(_RUN)
    env = {**os.environ, "SKYREC_HOME": str(tmp_path / "home"), "SKYREC_PROJECT_ROOT": str(ROOT),
           "SKYREC__SERVE__REDIS_URL": redis_url, "SKYREC__SERVE__ACCESS_LOG": "true",
           "SKYREC__SERVE__WORKERS": "1", "PYTHONPATH": str(ROOT / "src")}
    env.pop("PROMETHEUS_MULTIPROC_DIR", None)
    log_path = tmp_path / f"api-{port}.log"
    with log_path.open("wb") as log:
        proc = subprocess.Popen([sys.executable, str(script), "--host", "127.0.0.1", "--port", str(port),
                                 "--workers", str(workers)], env=env, stdout=log, stderr=subprocess.STDOUT,
                                start_new_session=True)
    url = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 60
    while sum(1 for e in _entries(log_path) if e.get("msg") == "serving") < workers:
        assert proc.poll() is None and time.monotonic() < deadline, log_path.read_text()[-2000:]
        time.sleep(0.1)
    return proc, url, log_path


def _entries(log_path: Path) -> list[dict[str, Any]]:
    return [json.loads(line) for line in log_path.read_text().splitlines() if line.startswith("{")]


def _requests(url: str, n: int, tag: str) -> None:
    for i in range(n):  # a new connection each: spread over the workers
        with httpx.Client() as c:
            assert c.get(f"{url}/v1/recommendations/{V}/u1", headers={"X-Request-ID": f"{tag}-{i}"}).status_code == 200


@pytest.mark.integration
@pytest.mark.parametrize("workers", [1, 2])
def test_no_access_line_is_lost_on_sigterm(tmp_path, own_redis, workers):
    proc, url, log_path = _start(tmp_path, own_redis, workers)
    try:
        _requests(url, 40, "t")
        time.sleep(0.3)
        written = [e for e in _entries(log_path) if e.get("logger") == ACCESS_LOGGER]
        assert written == [], "the lines wait to be written (a long interval in this test)"
    finally:
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(timeout=40) in (0, -signal.SIGTERM)
    access = [e for e in _entries(log_path) if e.get("logger") == ACCESS_LOGGER]
    assert sorted(e["request_id"] for e in access) == sorted(f"t-{i}" for i in range(40))
    assert all(e["status"] == 200 and e["route"] == ROUTE for e in access)


def _metric(text: str, name: str, **labels: str) -> float:
    for family in text_string_to_metric_families(text):
        for sample in family.samples:
            if sample.name == name and sample.labels == labels:
                return float(sample.value)
    return 0.0


@pytest.mark.integration
def test_metrics_add_up_every_worker(tmp_path, own_redis):
    proc, url, log_path = _start(tmp_path, own_redis, 2)
    try:
        workers = [p for p in psutil.Process(proc.pid).children()
                   if "resource_tracker" not in " ".join(p.cmdline())]
        assert len(workers) == 2
        metrics_dir = Path(workers[0].environ()["PROMETHEUS_MULTIPROC_DIR"])
        assert metrics_dir.is_dir()
        _requests(url, 40, "m")
        # both workers answered some (each writes its values to files of its own pid)
        assert {int(p.stem.rsplit("_", 1)[1]) for p in metrics_dir.glob("counter_*.db")} == {w.pid for w in workers}
        for _ in range(8):  # each scrape on a new connection: either worker may answer
            text = httpx.get(url + "/metrics").text
            assert _metric(text, "skyrec_recommendations_total", variant=V, source="personalised") == 40.0
            assert _metric(text, "skyrec_http_request_duration_seconds_count", method="GET", route=ROUTE,
                           status="200") == 40.0
            assert 'skyrec_publication_info{' in text
    finally:
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(timeout=40) in (0, -signal.SIGTERM)
    assert not metrics_dir.exists(), "each start's metrics directory is removed when the server stops"
