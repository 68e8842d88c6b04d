"""Fault injection at the network boundary, for the tests and the chaos run.

``LossyProxy`` is an HTTP proxy in front of a real server (moto's S3 server in the tests): it forwards
every request, and for the requests a rule selects it makes the failure real clients meet in production:

- ``lose_response``: the request reaches the server and takes effect, then the connection is closed
  before the response is sent (a timeout after the write). The client library retries on its own.
- ``fail_request``: the request never reaches the server; the client sees a 503 (retryable) or a
  closed connection.

Rules are consumed in order (each fires once, or ``times`` times). The proxy counts what it did, so a
test asserts the fault really happened instead of assuming it.
"""

from __future__ import annotations

import http.client
import re
import socket
import threading
from collections.abc import Callable
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import urlsplit

Matcher = Callable[[str, str], bool]


def match(method: str, path_regex: str) -> Matcher:
    """A rule selector: HTTP method (``*`` for any) and a regex searched in the request path."""
    rx = re.compile(path_regex)
    return lambda m, p: (method == "*" or m == method) and bool(rx.search(p))


@dataclass
class Rule:
    kind: str  # "lose_response" | "fail_request"
    matcher: Matcher
    times: int = 1
    fired: int = 0


@dataclass
class Counters:
    forwarded: int = 0
    lost_responses: int = 0
    failed_requests: int = 0
    events: list[tuple[str, str, str]] = field(default_factory=list)


class LossyProxy:
    """``with LossyProxy("http://127.0.0.1:5000") as proxy: proxy.url`` -> point the client at it."""

    def __init__(self, upstream: str, host: str = "127.0.0.1", port: int = 0) -> None:
        up = urlsplit(upstream)
        self._up_host, self._up_port = up.hostname or "127.0.0.1", up.port or 80
        self._rules: list[Rule] = []
        self._lock = threading.Lock()
        self.counters = Counters()
        proxy = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, format: str, *args: Any) -> None:
                return

            def _handle(self) -> None:
                proxy._forward(self)

            do_GET = do_PUT = do_POST = do_DELETE = do_HEAD = _handle

        self._server = ThreadingHTTPServer((host, port), Handler)
        self._server.daemon_threads = True
        self._thread = threading.Thread(target=self._server.serve_forever, daemon=True)

    @property
    def url(self) -> str:
        host, port = self._server.server_address[:2]
        return f"http://{host!s}:{port}"

    def lose_response(self, matcher: Matcher, times: int = 1) -> Rule:
        return self._add(Rule("lose_response", matcher, times))

    def fail_request(self, matcher: Matcher, times: int = 1) -> Rule:
        return self._add(Rule("fail_request", matcher, times))

    def clear(self) -> None:
        with self._lock:
            self._rules.clear()

    def _add(self, rule: Rule) -> Rule:
        with self._lock:
            self._rules.append(rule)
        return rule

    def _take(self, method: str, path: str) -> str | None:
        with self._lock:
            for rule in self._rules:
                if rule.fired < rule.times and rule.matcher(method, path):
                    rule.fired += 1
                    self.counters.events.append((rule.kind, method, path))
                    return rule.kind
        return None

    def _forward(self, h: BaseHTTPRequestHandler) -> None:
        length = int(h.headers.get("Content-Length") or 0)
        body = h.rfile.read(length) if length else b""
        fault = self._take(h.command, h.path)
        if fault == "fail_request":
            self.counters.failed_requests += 1
            _drop(h)
            return
        headers = {k: v for k, v in h.headers.items() if k.lower() not in ("connection", "expect")}
        conn = http.client.HTTPConnection(self._up_host, self._up_port, timeout=60)
        try:
            conn.request(h.command, h.path, body=body, headers=headers)
            resp = conn.getresponse()
            data = resp.read()
        finally:
            conn.close()
        self.counters.forwarded += 1
        if fault == "lose_response":  # the server acted on it; the client never hears back
            self.counters.lost_responses += 1
            _drop(h)
            return
        h.send_response(resp.status, resp.reason)
        head = h.command == "HEAD"
        for k, v in resp.getheaders():
            if k.lower() in ("transfer-encoding", "connection") or (k.lower() == "content-length" and not head):
                continue
            h.send_header(k, v)
        if not head:
            h.send_header("Content-Length", str(len(data)))
        h.end_headers()
        if not head:
            h.wfile.write(data)

    def __enter__(self) -> LossyProxy:
        self._thread.start()
        return self

    def __exit__(self, *exc: Any) -> None:
        self._server.shutdown()
        self._server.server_close()


def _drop(h: BaseHTTPRequestHandler) -> None:
    h.close_connection = True
    try:
        h.connection.shutdown(socket.SHUT_RDWR)
    except OSError:
        pass
