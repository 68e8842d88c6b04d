"""Every error is JSON with a reason and a message naming what was wrong; 500 only as a last resort.

Bad input gives 4xx (404 unknown variant/user/item, 422 invalid parameter, 401/403 admin key); Redis being
unreachable gives 503 (never 500); the catch-all handler logs the traceback, counts it in
``skyrec_unhandled_errors_total`` and answers a JSON 500 without internals.
"""

from __future__ import annotations

import logging
from typing import Any

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from redis.exceptions import OutOfMemoryError, RedisError
from starlette.exceptions import HTTPException as StarletteHTTPException

from skyrec.serve.api.responses import error
from skyrec.serve.store import Unavailable

log = logging.getLogger("skyrec.serve")


class ApiError(Exception):
    """An expected failure with its HTTP status, reason code and message."""

    def __init__(self, status: int, code: str, message: str, **extra: Any) -> None:
        super().__init__(message)
        self.status = status
        self.code = code
        self.message = message
        self.extra = extra


def _rid(request: Request) -> str | None:
    state = request.scope.get("state") or {}
    return state.get("request_id")


def _describe(err: dict[str, Any]) -> str:
    loc = [str(p) for p in err.get("loc", ()) if p not in ("path", "query", "body", "header")]
    where = ".".join(loc) or "request"
    return f"{where}: {err.get('msg', 'invalid')}"


_HTTP_CODES = {404: "not_found", 405: "method_not_allowed", 400: "bad_request", 414: "uri_too_long",
               401: "unauthorized", 403: "forbidden"}


def install(app: FastAPI) -> None:
    metrics = app.state.metrics

    @app.exception_handler(ApiError)
    async def _api_error(request: Request, exc: ApiError):
        return error(exc.status, exc.code, exc.message, _rid(request), **exc.extra)

    @app.exception_handler(Unavailable)
    async def _unavailable(request: Request, exc: Unavailable):
        metrics.unavailable.labels(exc.code).inc()
        resp = error(503, exc.code, str(exc), _rid(request))
        resp.headers["Retry-After"] = "1"
        return resp

    @app.exception_handler(RedisError)
    async def _redis_error(request: Request, exc: RedisError):
        if isinstance(exc, OutOfMemoryError):  # reachable, but refusing writes: say so, not "unreachable"
            code, message = "redis_full", "the serving Redis is full (maxmemory reached) and refuses writes; retry later"
        else:
            code, message = "redis_unavailable", f"Redis unreachable ({type(exc).__name__}); retry shortly"
        metrics.unavailable.labels(code).inc()
        log.warning("redis error", extra={"error": type(exc).__name__})
        resp = error(503, code, message, _rid(request))
        resp.headers["Retry-After"] = "1"
        return resp

    @app.exception_handler(RequestValidationError)
    async def _invalid(request: Request, exc: RequestValidationError):
        errs = list(exc.errors())
        details = [{"loc": [str(p) for p in e.get("loc", ())], "msg": str(e.get("msg", "")),
                    "type": str(e.get("type", ""))} for e in errs]
        message = "; ".join(_describe(e) for e in errs) or "invalid request"
        return error(422, "invalid_request", message, _rid(request), details=details)

    @app.exception_handler(StarletteHTTPException)
    async def _http(request: Request, exc: StarletteHTTPException):
        code = _HTTP_CODES.get(exc.status_code, "http_error")
        message = exc.detail if isinstance(exc.detail, str) else code
        if exc.status_code == 404 and message == "Not Found":
            message = f"no such endpoint: {request.url.path[:200]}"
        resp = error(exc.status_code, code, message, _rid(request))
        for k, v in (exc.headers or {}).items():
            resp.headers[k] = v
        return resp

    @app.exception_handler(Exception)
    async def _unhandled(request: Request, exc: Exception):
        metrics.unhandled.inc()
        log.error("unhandled error", exc_info=exc, extra={"path": request.url.path[:200]})
        resp = error(500, "internal_error", "unexpected server error (logged with this request id)", _rid(request))
        rid = _rid(request)
        if rid:
            resp.headers["X-Request-ID"] = rid
        return resp
