"""Request ids, structured JSON logs and Prometheus metrics for the API.

The middleware is plain ASGI (not Starlette's ``BaseHTTPMiddleware``, which costs a task and a copy per
request): at 1,000 req/s on two cores every tens of microseconds count.

**Access log.** One JSON line per request, the fields :class:`JsonFormatter` writes for any record (``ts``,
``level``, ``logger``, ``msg``, ``request_id``, then ``method``, ``path``, ``route``, ``status``,
``duration_ms``). Through ``logging`` such a line cost ~25% of the API's CPU (a ``LogRecord``, the caller's
frame lookup, ``json.dumps``, one write per line), so when the access logger's records would reach exactly one
:class:`BufferedStreamHandler` (what :func:`log_config` sets up), the middleware formats the line itself and
hands it to that handler, which gathers access lines and writes them every ``interval`` seconds (50 ms) in one
write. Every other record is written at once, after the access lines gathered before it (the stream keeps its
order). Gathered lines are written when the app's lifespan ends (after uvicorn drained the connections, before
it re-raises SIGTERM), at interpreter exit and on a full buffer; only a SIGKILL loses the last ``interval`` of
them. Any other logging setup (a test's ``caplog``, another handler) gets the records through ``logging``.

**Metrics with several workers.** Each worker process has its own metric values; with
``PROMETHEUS_MULTIPROC_DIR`` set (the worker supervisor, ``skyrec.serve.workers``, sets a fresh directory for
each start) they live in files there and ``/metrics`` adds up every worker's, whichever worker answers the
scrape (``prometheus_client`` multiprocess mode).
"""

from __future__ import annotations

import asyncio
import contextvars
import datetime as dt
import json
import logging
import os
import re
import sys
import time
import uuid
from collections.abc import Awaitable, Callable, Iterable
from typing import Any

from prometheus_client import CollectorRegistry, Counter, Histogram
from prometheus_client import values as prometheus_values
from prometheus_client.core import GaugeMetricFamily, InfoMetricFamily

from skyrec.serve.store import parse_time

request_id_var: contextvars.ContextVar[str | None] = contextvars.ContextVar("skyrec_request_id", default=None)

_REQUEST_ID = re.compile(r"^[A-Za-z0-9._:\-]{1,128}$")
MAX_PATH_BYTES = 2048
_STD_ATTRS = set(vars(logging.LogRecord("", 0, "", 0, "", None, None))) | {"message", "asctime", "color_message"}

Scope = dict[str, Any]
Receive = Callable[[], Awaitable[dict[str, Any]]]
Send = Callable[[dict[str, Any]], Awaitable[None]]


try:  # the access line's encoder (msgspec ships with the locked environment)
    import msgspec

    _ENCODER: Any = msgspec.json.Encoder()
except ImportError:  # pragma: no cover - depends on the environment
    _ENCODER = None


def _encode_line(fields: dict[str, Any]) -> str:
    if _ENCODER is not None:
        return str(_ENCODER.encode(fields).decode())
    return json.dumps(fields, default=str)  # pragma: no cover - depends on the environment

_second: tuple[int, str] = (-1, "")
ACCESS_LOGGER = "skyrec.serve.access"
ACCESS_LOG_INTERVAL = 0.05  # seconds between writes of the gathered access lines


def iso_ms(t: float) -> str:
    """``t`` (Unix time) as ISO-8601 UTC with milliseconds, e.g. ``2026-11-30T07:50:00.123+00:00``; the part
    up to the second is formatted once per second."""
    global _second
    sec = int(t)
    cached = _second
    if cached[0] != sec:
        cached = _second = (sec, dt.datetime.fromtimestamp(sec, dt.UTC).strftime("%Y-%m-%dT%H:%M:%S"))
    return f"{cached[1]}.{min(999, int((t - sec) * 1000)):03d}+00:00"


class JsonFormatter(logging.Formatter):
    """One JSON object per line: time, level, logger, message, request id and any ``extra=`` fields."""

    def format(self, record: logging.LogRecord) -> str:
        out: dict[str, Any] = {
            "ts": iso_ms(record.created),
            "level": record.levelname,
            "logger": record.name,
            "msg": record.getMessage(),
        }
        rid = request_id_var.get()
        if rid:
            out["request_id"] = rid
        for key, value in record.__dict__.items():
            if key not in _STD_ATTRS and not key.startswith("_"):
                out[key] = value
        if record.exc_info:
            out["exc"] = self.formatException(record.exc_info)
        return json.dumps(out, default=str)


class BufferedStreamHandler(logging.StreamHandler):  # type: ignore[type-arg]
    """A ``StreamHandler`` that also takes pre-formatted access lines (:meth:`write_line`) and writes those
    gathered within ``interval`` seconds in one write. Records (:meth:`emit`) are written at once, after the
    lines gathered before them. Lines given outside an event loop, or past ``max_bytes`` gathered, are written
    at once too. :meth:`flush` writes what is gathered (the lifespan's end, ``logging.shutdown`` at exit)."""

    def __init__(self, stream: Any = None, interval: float | None = None, max_bytes: int = 256 * 1024) -> None:
        super().__init__(stream)
        self.interval = ACCESS_LOG_INTERVAL if interval is None else interval
        self.max_bytes = max_bytes
        self._lines: list[str] = []
        self._size = 0
        self._timer: asyncio.TimerHandle | None = None
        self._timer_loop: asyncio.AbstractEventLoop | None = None

    def write_line(self, line: str) -> None:
        with self.lock:  # type: ignore[union-attr]
            self._lines.append(line)
            self._size += len(line)
            if self._size >= self.max_bytes:
                self.flush()
                return
            try:
                loop = asyncio.get_running_loop()
            except RuntimeError:
                self.flush()
                return
            if self._timer is None or self._timer_loop is not loop:  # (a loop that closed never fires its timer)
                self._timer_loop = loop
                self._timer = loop.call_later(self.interval, self._on_timer)

    def _on_timer(self) -> None:
        self._timer = None
        self.flush()

    def emit(self, record: logging.LogRecord) -> None:
        try:
            line = self.format(record)
        except Exception:  # noqa: BLE001 - logging's contract: an unformattable record is reported, not raised
            self.handleError(record)
            return
        with self.lock:  # type: ignore[union-attr]
            self._lines.append(line)
            self.flush()

    def flush(self) -> None:
        with self.lock:  # type: ignore[union-attr]
            lines, self._lines, self._size = self._lines, [], 0
            stream = self.stream
            try:
                if lines:
                    lines.append("")
                    stream.write(self.terminator.join(lines))
                if stream and hasattr(stream, "flush"):
                    stream.flush()
            except (OSError, ValueError) as exc:  # a closed or broken stream: say so where it can be seen
                if lines and sys.__stderr__ is not None and stream is not sys.__stderr__:
                    print(f"skyrec: {len(lines) - 1} log lines could not be written: {exc}", file=sys.__stderr__)

    def close(self) -> None:
        with self.lock:  # type: ignore[union-attr]
            if self._timer is not None:
                self._timer.cancel()
                self._timer = None
        super().close()  # (StreamHandler.close flushes)


def flush_access_log() -> None:
    """Write the access lines gathered so far (every :class:`BufferedStreamHandler` of the access logger)."""
    logger: logging.Logger | None = logging.getLogger(ACCESS_LOGGER)
    while logger is not None:
        for handler in logger.handlers:
            if isinstance(handler, BufferedStreamHandler):
                handler.flush()
        logger = logger.parent if logger.propagate else None


def _direct_handler(logger: logging.Logger) -> BufferedStreamHandler | None:
    """The handler the access logger's records would reach when it is the only one, a
    :class:`BufferedStreamHandler` with a :class:`JsonFormatter`, no filters and a level that lets INFO through
    (then the middleware writes the line itself); else None (the record goes through ``logging``)."""
    found: logging.Handler | None = None
    current: logging.Logger | None = logger
    while current is not None:
        for handler in current.handlers:
            if found is not None:
                return None
            found = handler
        current = current.parent if current.propagate else None
    if (isinstance(found, BufferedStreamHandler) and not found.filters and found.level <= logging.INFO
            and type(found.formatter) is JsonFormatter and not logger.filters):
        return found
    return None


def log_config(level: str = "INFO") -> dict[str, Any]:
    """A ``logging.config.dictConfig`` for uvicorn and skyrec: JSON to stderr; uvicorn's own access log off
    (the middleware writes one with the request id, gathered and written every 50 ms: module docstring)."""
    return {
        "version": 1,
        "disable_existing_loggers": False,
        "formatters": {"json": {"()": JsonFormatter}},
        "handlers": {"stderr": {"()": BufferedStreamHandler, "formatter": "json", "stream": "ext://sys.stderr"}},
        "loggers": {
            "skyrec": {"handlers": ["stderr"], "level": level, "propagate": False},
            "uvicorn": {"handlers": ["stderr"], "level": level, "propagate": False},
            "uvicorn.error": {"handlers": ["stderr"], "level": level, "propagate": False},
            "uvicorn.access": {"handlers": [], "level": "WARNING", "propagate": False},
        },
    }


def multiprocess_dir() -> str | None:
    """The directory of ``prometheus_client``'s multiprocess mode when this process uses it: the environment
    names one and the metric values live in files (the variable was set before ``prometheus_client`` was
    imported, as in a worker the supervisor started)."""
    path = os.environ.get("PROMETHEUS_MULTIPROC_DIR")
    if path and getattr(prometheus_values.ValueClass, "__name__", "") == "MmapedValue":
        return path
    return None


class Metrics:
    """The app's own registry (several apps in one process, e.g. tests, never collide). In multiprocess mode
    (:func:`multiprocess_dir`) the exposed registry reads every worker's values from the directory; the
    metric objects write this process's values there."""

    def __init__(self) -> None:
        shared = multiprocess_dir()
        self.registry = CollectorRegistry(auto_describe=True)
        own: CollectorRegistry | None = self.registry
        if shared is not None:
            from prometheus_client.multiprocess import MultiProcessCollector

            MultiProcessCollector(self.registry, path=shared)
            own = None  # registered here, they would expose this process's values only, next to the sum
        self.latency = Histogram(
            "skyrec_http_request_duration_seconds", "HTTP request latency by route template",
            ["method", "route", "status"], registry=own,
            buckets=(0.0005, 0.001, 0.0025, 0.005, 0.0075, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5),
        )
        self.recommendations = Counter(
            "skyrec_recommendations_total", "Recommendation answers by variant and source "
            "(personalised = the user had a precomputed list; fallback = cold-start list)",
            ["variant", "source"], registry=own,
        )
        self.padded = Counter("skyrec_recommendations_padded_items_total",
                              "Items taken from the fallback list to fill short answers", ["variant"],
                              registry=own)
        self.expired = Counter("skyrec_recommendations_expired_items_total",
                               "Items dropped at serve time because their availability ended", ["variant"],
                               registry=own)
        self.stale = Counter("skyrec_stale_answers_total", "Answers served from cache while Redis was unreachable",
                             ["variant"], registry=own)
        self.unavailable = Counter("skyrec_unavailable_total", "503 answers by reason", ["reason"],
                                   registry=own)
        self.unhandled = Counter("skyrec_unhandled_errors_total", "Requests that ended in an unexpected error",
                                 registry=own)
        self._pointers: Callable[[], dict[str, dict[str, Any]]] = dict
        self.registry.register(_PublicationCollector(self))
        self._children: dict[tuple[Any, ...], Any] = {}

    def _child(self, metric: Any, *labels: str) -> Any:
        """``metric.labels(...)`` memoised: label lookup costs microseconds, paid on every request otherwise.
        Label values are bounded (route templates, configured variants, status codes)."""
        key = (id(metric), *labels)
        child = self._children.get(key)
        if child is None:
            child = self._children[key] = metric.labels(*labels)
        return child

    def observe_request(self, method: str, route: str, status: int, seconds: float) -> None:
        self._child(self.latency, method, route, str(status)).observe(seconds)

    def count_answer(self, variant: str, source: str, padded: int, expired: int, stale: bool) -> None:
        self._child(self.recommendations, variant, source).inc()
        if padded:
            self._child(self.padded, variant).inc(padded)
        if expired:
            self._child(self.expired, variant).inc(expired)
        if stale:
            self._child(self.stale, variant).inc()

    def publications_from(self, source: Callable[[], dict[str, dict[str, Any]]]) -> None:
        self._pointers = source


class _PublicationCollector:
    """Published version and age per variant, computed at scrape time from the pointers the app holds."""

    def __init__(self, metrics: Metrics) -> None:
        self.metrics = metrics

    def describe(self) -> Iterable[Any]:
        return []

    def collect(self) -> Iterable[Any]:
        info = InfoMetricFamily("skyrec_publication", "The publication currently served per variant",
                                labels=["variant"])
        age = GaugeMetricFamily("skyrec_publication_age_seconds", "Seconds since the served publication was "
                                "published", labels=["variant"])
        stamp = GaugeMetricFamily("skyrec_publication_published_timestamp_seconds",
                                  "When the served publication was published (Unix time)", labels=["variant"])
        now = time.time()
        for variant, pointer in sorted(self.metrics._pointers().items()):
            info.add_metric([variant], {"publication": str(pointer.get("publication", "")),
                                        "model": str(pointer.get("model", "")),
                                        "model_version": str(pointer.get("model_version", ""))})
            try:
                published = parse_time(pointer.get("published_at"))
            except ValueError:
                published = None
            if published is not None:
                stamp.add_metric([variant], published)
                age.add_metric([variant], max(0.0, now - published))
        yield info
        yield age
        yield stamp


def _json_error(status: int, error: str, message: str, request_id: str) -> tuple[dict[str, Any], bytes]:
    body = json.dumps({"error": error, "message": message, "request_id": request_id}).encode()
    start = {"type": "http.response.start", "status": status,
             "headers": [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode()),
                         (b"x-request-id", request_id.encode())]}
    return start, body


class RequestContextMiddleware:
    """X-Request-ID in/out, path length guard, latency histogram and one access-log line per request."""

    def __init__(self, app: Callable[[Scope, Receive, Send], Awaitable[None]], metrics: Metrics,
                 access_log: bool = True) -> None:
        self.app = app
        self.metrics = metrics
        self.access_log = access_log
        self.log = logging.getLogger(ACCESS_LOGGER)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            if scope["type"] == "lifespan":
                await self.app(scope, receive, self._flush_at_shutdown(send))
            else:
                await self.app(scope, receive, send)
            return
        started = time.perf_counter()
        rid = None
        for name, value in scope.get("headers", ()):
            if name == b"x-request-id":
                candidate = value.decode("latin-1")
                rid = candidate if _REQUEST_ID.match(candidate) else None
                break
        rid = rid or uuid.uuid4().hex
        token = request_id_var.set(rid)
        scope.setdefault("state", {})["request_id"] = rid
        status = 500
        raw_id = rid.encode()

        async def send_wrapper(message: dict[str, Any]) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
                message["headers"] = [*message.get("headers", ()), (b"x-request-id", raw_id)]
            await send(message)

        try:
            raw_path = scope.get("raw_path") or scope.get("path", "").encode()
            if len(raw_path) + len(scope.get("query_string", b"")) > MAX_PATH_BYTES:
                start, body = _json_error(414, "uri_too_long", f"request target longer than {MAX_PATH_BYTES} bytes",
                                          rid)
                status = 414
                await send(start)
                await send({"type": "http.response.body", "body": body})
                return
            await self.app(scope, receive, send_wrapper)
        finally:
            elapsed = time.perf_counter() - started
            route = scope.get("route")
            template = getattr(route, "path", None) or ("<unmatched>" if status == 404 else "<other>")
            self.metrics.observe_request(scope.get("method", ""), template, status, elapsed)
            if self.access_log and self.log.isEnabledFor(logging.INFO):
                fields = {"method": scope.get("method"), "path": scope.get("path"), "route": template,
                          "status": status, "duration_ms": round(elapsed * 1000, 3)}
                handler = _direct_handler(self.log)
                if handler is None:
                    self.log.info("request", extra=fields)
                else:
                    handler.write_line(_encode_line({"ts": iso_ms(time.time()), "level": "INFO", "logger": ACCESS_LOGGER,
                                                     "msg": "request", "request_id": rid, **fields}))
            request_id_var.reset(token)

    @staticmethod
    def _flush_at_shutdown(send: Send) -> Send:
        """The lifespan's ``send``, writing the gathered access lines when the app has shut down: uvicorn has
        drained every connection by then, and may re-raise SIGTERM (no interpreter exit handlers) after."""

        async def lifespan_send(message: dict[str, Any]) -> None:
            if message["type"] in ("lifespan.shutdown.complete", "lifespan.shutdown.failed"):
                flush_access_log()
            await send(message)

        return lifespan_send
