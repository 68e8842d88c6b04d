"""Events benchmark: ``POST /v1/events`` (uvicorn subprocess, one worker, real redis-server) against raw ``XADD``
in a pipeline on the same Redis, in the same run.

Figures: events appended per second, with batches of 1 and of 100 events per request (closed loop, N keep-alive
connections for T seconds, every answer checked to be a 202), and the same entries written straight to the
stream by redis-py (one MULTI pipeline of 1 or 100 ``XADD ... MAXLEN ~``, sequential); the machine's load
average (``uptime``) when each figure was taken. The load generator shares the cores with the API and Redis.

    python benchmarks/bench_events.py [seconds]
"""

from __future__ import annotations

import asyncio
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "src"))
sys.path.insert(0, str(ROOT / "benchmarks"))

CONNECTIONS = 8
MAX_LEN = 2_000_000


def _event(i: int) -> dict[str, Any]:
    return {"event_id": f"bench-{i}", "type": "impression", "impression_id": "-.-." + "0" * 32,
            "user_id": f"user-{i % 50_000}", "rail": "recommended_for_you",
            "item_ids": [f"item-{(i + j) % 5000}" for j in range(10)], "ts": "2026-12-03T10:00:00Z"}


def _load() -> str:
    return subprocess.run(["uptime"], capture_output=True, text=True, check=False).stdout.strip()


async def _post_loop(host: str, port: int, body: bytes, duration: float, counts: list[int]) -> None:
    reader, writer = await asyncio.open_connection(host, port)
    head = (f"POST /v1/events HTTP/1.1\r\nHost: {host}\r\nContent-Type: application/json\r\n"
            f"Content-Length: {len(body)}\r\n\r\n").encode()
    end = time.perf_counter() + duration
    while time.perf_counter() < end:
        writer.write(head + body)
        status = int((await reader.readline()).split()[1])
        length = 0
        while (line := await reader.readline()) not in (b"\r\n", b""):
            if line.lower().startswith(b"content-length:"):
                length = int(line.split(b":")[1])
        await reader.readexactly(length)
        if status != 202:
            raise RuntimeError(f"answer {status}")
        counts.append(1)
    writer.close()


def api_rate(host: str, port: int, batch: int, duration: float) -> dict[str, Any]:
    body = json.dumps({"events": [_event(i) for i in range(batch)]}).encode()
    counts: list[int] = []

    async def run() -> None:
        await asyncio.gather(*[_post_loop(host, port, body, duration, counts) for _ in range(CONNECTIONS)])

    started = time.perf_counter()
    asyncio.run(run())
    elapsed = time.perf_counter() - started
    return {"batch": batch, "requests": len(counts), "events_per_second": round(len(counts) * batch / elapsed),
            "requests_per_second": round(len(counts) / elapsed), "body_bytes": len(body), "uptime": _load()}


def raw_rate(url: str, batch: int, duration: float) -> dict[str, Any]:
    import redis

    client = redis.Redis.from_url(url)
    blobs = [json.dumps({**_event(i), "experiment": None, "arm": None, "variant": "recommended_for_you",
                         "duration_seconds": None, "received_at": "2026-12-03T10:00:01Z"},
                        separators=(",", ":")).encode() for i in range(batch)]
    n = 0
    started = time.perf_counter()
    end = started + duration
    while time.perf_counter() < end:
        pipe = client.pipeline(transaction=True)
        for blob in blobs:
            pipe.xadd("skyrec:events", {"e": blob}, maxlen=MAX_LEN, approximate=True)
        pipe.execute()
        n += 1
    elapsed = time.perf_counter() - started
    client.close()
    return {"batch": batch, "events_per_second": round(n * batch / elapsed), "uptime": _load()}


DURATION = {"small": 4.0, "reference": 8.0}  # seconds per measurement, by ``make bench``'s scale


def main(scale: str = "reference", duration: float | None = None) -> dict[str, Any]:
    """``scale`` as ``skyrec bench`` passes it (small: 4 s per measurement, reference: 8 s, BENCHMARKS.md's);
    ``duration`` overrides it."""
    from bench_serve import start_api

    duration = DURATION[scale] if duration is None else duration

    from skyrec.redis_local import temporary_redis

    results: dict[str, Any] = {"connections": CONNECTIONS, "seconds": duration, "cpus": os.cpu_count()}
    with tempfile.TemporaryDirectory() as tmp, temporary_redis(Path(tmp) / "redis") as rs:
        api, base, _log = start_api(Path(tmp), rs.url, "api", {
            "SKYREC__SERVE__WORKERS": "1", "SKYREC__SERVE__ACCESS_LOG": "false",
            "SKYREC__EVENTS__MAX_STREAM_LENGTH": str(MAX_LEN), "SKYREC__EVENTS__MAX_BACKLOG": str(MAX_LEN - 1000)})
        host, port = base.split("//", 1)[1].split(":")
        try:
            for batch in (1, 100):
                results[f"api_batch_{batch}"] = api_rate(host, int(port), batch, duration)
                results[f"raw_xadd_batch_{batch}"] = raw_rate(rs.url, batch, duration)
        finally:
            api.terminate()
            api.wait(timeout=30)
            _log.close()
    for batch in (1, 100):
        results[f"api_vs_raw_batch_{batch}"] = round(results[f"api_batch_{batch}"]["events_per_second"]
                                                     / results[f"raw_xadd_batch_{batch}"]["events_per_second"], 3)
    return results


if __name__ == "__main__":
    print(json.dumps(main(duration=float(sys.argv[1]) if len(sys.argv) > 1 else None), indent=1))
