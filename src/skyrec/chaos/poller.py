"""Polls the running skyrec API during the fault runs and keeps every distinct answer for the checks."""

from __future__ import annotations

import http.client
import json
import threading
import time
from collections import Counter
from typing import Any


class ApiPoller(threading.Thread):
    """GET ``/v1/recommendations/{variant}/{user}`` in a loop over ``targets`` (set with :meth:`set_targets`)."""

    def __init__(self, host: str, port: int, *, every: float = 0.02, limit: int = 10) -> None:
        super().__init__(name="chaos-api-poller", daemon=True)
        self.host, self.port, self.every, self.limit = host, port, every, limit
        self.stop_event = threading.Event()
        self._lock = threading.Lock()
        self._targets: list[tuple[str, str]] = []
        self.statuses: Counter[int] = Counter()
        self.requests = 0
        self._distinct: dict[str, dict[str, Any]] = {}
        self._errors: list[dict[str, Any]] = []
        self.transport_errors = 0

    def set_targets(self, targets: list[tuple[str, str]]) -> None:
        with self._lock:
            self._targets = list(targets)

    def take(self) -> list[dict[str, Any]]:
        """The distinct answers (200s) and the error answers (5xx) collected since the last call."""
        with self._lock:
            out = list(self._distinct.values()) + self._errors
            self._distinct, self._errors = {}, []
        return out

    def _record(self, url: str, status: int, text: str) -> None:
        with self._lock:
            self.requests += 1
            self.statuses[status] += 1
            if status == 200:
                if text not in self._distinct:
                    self._distinct[text] = {"url": url, "status": 200, "body": json.loads(text), "at": time.time()}
            elif status >= 500 and status != 503 and len(self._errors) < 100:
                self._errors.append({"url": url, "status": status, "text": text[:1000], "at": time.time()})

    def run(self) -> None:
        conn: http.client.HTTPConnection | None = None
        i = 0
        while not self.stop_event.is_set():
            with self._lock:
                targets = list(self._targets)
            if not targets:
                time.sleep(0.05)
                continue
            variant, user = targets[i % len(targets)]
            i += 1
            url = f"/v1/recommendations/{variant}/{user}?limit={self.limit}"
            try:
                if conn is None:
                    conn = http.client.HTTPConnection(self.host, self.port, timeout=5)
                conn.request("GET", url)
                resp = conn.getresponse()
                text = resp.read().decode(errors="replace")
                self._record(url, resp.status, text)
            except (OSError, http.client.HTTPException):
                self.transport_errors += 1
                if conn is not None:
                    conn.close()
                conn = None
                time.sleep(0.1)
            self.stop_event.wait(self.every)
        if conn is not None:
            conn.close()

    def stop(self) -> None:
        self.stop_event.set()
        self.join(10)
