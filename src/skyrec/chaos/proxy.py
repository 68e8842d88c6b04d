"""An HTTP proxy in front of the object store (moto's S3 server) that injects faults at the HTTP layer.

Every request of the lake's S3 client goes through it. A :class:`Rule` armed by the harness picks one
matching request (method, path substring, after ``skip`` matching requests) and then either

* ``error``: answers it with an S3 error (``status`` and ``code``) without forwarding it -- the write or
  the commit fails (``burst`` > 1 fails the client's retries of the same path too), or
* ``lost_response``: forwards it, lets the store apply it, reads the store's answer and then closes the
  client's connection without sending that answer -- the request landed but the client saw a network
  error, so its library retries it (the ambiguous-retry case of a create-only commit).

Each fired rule is recorded (when, method, path, what) so the harness counts faults actually injected. The
proxy also keeps, per method, the requests it handled (``handled``) and the most it was handling at once
(``most_in_flight``): whether a client really sends its writes side by side, or in bulk.
"""

from __future__ import annotations

import http.client
import socket
import threading
import time
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

_HOP = {"connection", "keep-alive", "proxy-connection", "transfer-encoding", "te", "trailer", "upgrade",
        "content-length"}


@dataclass
class Rule:
    """One fault to inject into a future request."""

    action: str  # "error" | "lost_response"
    methods: frozenset[str] = frozenset({"PUT", "POST"})
    path_contains: str = ""
    skip: int = 0  # matching requests to let through first
    status: int = 500
    code: str = "InternalError"
    burst: int = 1  # for "error": how many requests to the same path fail in a row
    label: str = ""
    seen: int = 0
    fired: list[dict[str, Any]] = field(default_factory=list)
    target_path: str | None = None

    @property
    def done(self) -> bool:
        return len(self.fired) >= (self.burst if self.action == "error" else 1)


class FaultProxy:
    """A threaded HTTP proxy on 127.0.0.1 forwarding to ``upstream`` (host, port)."""

    def __init__(self, upstream_host: str, upstream_port: int) -> None:
        self.upstream = (upstream_host, upstream_port)
        self._lock = threading.Lock()
        self._rules: list[Rule] = []
        self.requests = 0
        self.in_flight: dict[str, int] = {}  # per method: requests being handled now, and the most at once
        self.most_in_flight: dict[str, int] = {}
        self.handled: dict[str, int] = {}  # per method: requests handled in all
        proxy = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, *args: Any) -> None:
                pass

            def setup(self) -> None:
                super().setup()  # headers and body go out in separate writes: no Nagle delay between them
                self.connection.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)

            def _body(self) -> bytes:
                length = self.headers.get("Content-Length")
                if length is not None:
                    return self.rfile.read(int(length))
                if "chunked" in (self.headers.get("Transfer-Encoding") or "").lower():
                    parts = []
                    while True:
                        size = int(self.rfile.readline().split(b";")[0].strip() or b"0", 16)
                        if size == 0:
                            while self.rfile.readline() not in (b"\r\n", b"\n", b""):
                                pass
                            break
                        parts.append(self.rfile.read(size))
                        self.rfile.readline()
                    return b"".join(parts)
                return b""

            def _upstream(self, path: str, body: bytes,
                          headers: dict[str, str]) -> tuple[int, str, list[tuple[str, str]], bytes]:
                """Forward on a fresh connection: never resend a request that may have landed."""
                conn = http.client.HTTPConnection(*proxy.upstream, timeout=60)
                try:
                    conn.request(self.command, path, body=body, headers=headers)
                    resp = conn.getresponse()
                    return resp.status, resp.reason, resp.getheaders(), resp.read()
                finally:
                    conn.close()

            def _handle(self) -> None:
                body = self._body()
                path = self.path
                rule = proxy._match(self.command, path)
                if rule is not None and rule.action == "error":
                    proxy._fired(rule, self.command, path, "error", rule.status)
                    payload = (f"<?xml version=\"1.0\" encoding=\"UTF-8\"?><Error><Code>{rule.code}</Code>"
                               f"<Message>injected by the chaos proxy</Message><Resource>{path}</Resource>"
                               "</Error>").encode()
                    self.send_response(rule.status)
                    self.send_header("Content-Type", "application/xml")
                    self.send_header("Content-Length", str(len(payload)))
                    self.end_headers()
                    if self.command != "HEAD":
                        self.wfile.write(payload)
                    return
                headers = {k: v for k, v in self.headers.items() if k.lower() not in _HOP}
                headers["Content-Length"] = str(len(body))
                try:
                    status, reason, resp_headers, data = self._upstream(path, body, headers)
                except (OSError, http.client.HTTPException):  # the store is down: a gateway error
                    self.send_error(502, "object store unreachable")
                    return
                if rule is not None and rule.action == "lost_response":
                    proxy._fired(rule, self.command, path, "lost_response", status)
                    self.close_connection = True
                    try:  # the store applied the request; the client never hears about it
                        self.connection.shutdown(socket.SHUT_RDWR)
                    except OSError:
                        pass
                    return
                self.send_response(status, reason)
                for k, v in resp_headers:
                    if k.lower() not in _HOP or (self.command == "HEAD" and k.lower() == "content-length"):
                        self.send_header(k, v)
                if self.command != "HEAD":
                    self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                if self.command != "HEAD":
                    self.wfile.write(data)

            def _counted(self) -> None:
                with proxy._lock:
                    now = proxy.in_flight[self.command] = proxy.in_flight.get(self.command, 0) + 1
                    proxy.most_in_flight[self.command] = max(now, proxy.most_in_flight.get(self.command, 0))
                    proxy.handled[self.command] = proxy.handled.get(self.command, 0) + 1
                try:
                    self._handle()
                finally:
                    with proxy._lock:
                        proxy.in_flight[self.command] -= 1

            do_GET = do_PUT = do_POST = do_DELETE = do_HEAD = _counted

        class Server(ThreadingHTTPServer):
            def handle_error(self, request: Any, client_address: Any) -> None:
                pass  # clients that reset the connection (dropped on purpose, or killed with their job)

        self.server = Server(("127.0.0.1", 0), Handler)
        self.server.daemon_threads = True
        self.port = int(self.server.server_address[1])
        self.url = f"http://127.0.0.1:{self.port}"
        self._thread = threading.Thread(target=self.server.serve_forever, name="chaos-proxy", daemon=True)

    def start(self) -> FaultProxy:
        self._thread.start()
        return self

    def stop(self) -> None:
        self.server.shutdown()
        self.server.server_close()

    # ---- rules ---------------------------------------------------------------------------------
    def arm(self, rule: Rule) -> Rule:
        with self._lock:
            self._rules.append(rule)
        return rule

    def disarm(self, rule: Rule) -> None:
        with self._lock:
            if rule in self._rules:
                self._rules.remove(rule)

    def disarm_all(self) -> None:
        with self._lock:
            self._rules.clear()

    def _match(self, method: str, path: str) -> Rule | None:
        with self._lock:
            self.requests += 1
            for rule in list(self._rules):
                if rule.done:
                    continue
                if rule.target_path is not None:  # a burst: the client's retries of the same request
                    if method in rule.methods and path.split("?")[0] == rule.target_path:
                        return rule
                    continue
                if method not in rule.methods or rule.path_contains not in path:
                    continue
                rule.seen += 1
                if rule.seen <= rule.skip:
                    continue
                rule.target_path = path.split("?")[0]
                return rule
        return None

    def _fired(self, rule: Rule, method: str, path: str, what: str, status: int) -> None:
        with self._lock:
            rule.fired.append({"at": time.time(), "method": method, "path": path.split("?")[0], "what": what,
                               "status": status})
