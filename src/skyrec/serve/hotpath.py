"""Dispatch of the hot path (``GET /v1/recommendations/{variant}/{user_id}``) ahead of FastAPI's router.

Why: on the reference 2-core machine the request's trip through Starlette's exception middleware, FastAPI's
exit-stack middleware, the router's matching, the query-parameter guard, ``request_response`` and the
dependency solver cost about as much CPU as building the answer itself (py-spy, BENCHMARKS.md "Serving").

What stays the same: this is an ASGI middleware placed *inside* the request-context middleware (request id,
path-length guard, latency metrics and access log apply unchanged) and it calls the one implementation of the
answer, :func:`skyrec.serve.api.routes.recommendations.answer`, which the FastAPI route calls too. Exceptions
go to the app's own exception handlers (the ones FastAPI's exception middleware would use), so errors have the
same status, body and headers; an exception without a handler propagates, as from the route. The OpenAPI
document, ``/docs`` and every other route are FastAPI's, untouched.

What it does not take (it hands the request to FastAPI as is): any other method or path shape, a path
another route registered before this one could also match, a mounted app (``root_path``), and a query
string naming parameters other than the route's or naming one more than once (FastAPI's query guard,
``skyrec.serve.main._refuse_unknown_query_parameters``, answers those with its 422: one implementation of
that refusal, the same answer on either path).
"""

from __future__ import annotations

import inspect
import logging
from typing import Any
from urllib.parse import parse_qsl

from starlette.concurrency import run_in_threadpool
from starlette.requests import Request
from starlette.routing import BaseRoute, Match, Mount, Route
from starlette.types import ASGIApp, Receive, Scope, Send

from skyrec.serve.api.routes import recommendations

log = logging.getLogger("skyrec.serve")


PREFIX = "/v1/recommendations/"
TEMPLATE = PREFIX + "{variant}/{user_id}"


def _static_prefix(route: BaseRoute) -> str | None:
    path = getattr(route, "path", None)
    if not isinstance(path, str):
        return None
    return path.split("{", 1)[0]


class HotPath:
    """ASGI middleware: answers the recommendations route directly, everything else goes to ``app``."""

    def __init__(self, app: ASGIApp, fastapi_app: Any) -> None:
        self.app = app
        self.fastapi_app = fastapi_app
        self._ready = False
        self.route: Route | None = None
        self.shadows: list[BaseRoute] = []
        self.allowed = recommendations.QUERY_NAMES
        self.handlers: dict[Any, Any] = {}

    def _prepare(self) -> None:
        """On first request (routes are complete by then): find the route, and the routes before it that could
        answer some of its paths (then those paths go through the router, which picks them as before)."""
        self._ready = True
        routes = list(self.fastapi_app.router.routes)
        for i, route in enumerate(routes):
            if isinstance(route, Route) and route.path == TEMPLATE and route.endpoint is recommendations.recommendations:
                self.route = route
                earlier = routes[:i]
                break
        else:
            log.warning("hot path disabled: the recommendations route is not registered")
            return
        for route in earlier:
            prefix = _static_prefix(route)
            if isinstance(route, Mount) or prefix is None or PREFIX.startswith(prefix) or prefix.startswith(PREFIX):
                self.shadows.append(route)
        self.handlers = {k: v for k, v in self.fastapi_app.exception_handlers.items() if k not in (500, Exception)}

    def _handler(self, exc: Exception) -> Any:
        """The handler the exception middleware would pick: the nearest class in the exception's MRO."""
        for cls in type(exc).__mro__:
            handler = self.handlers.get(cls)
            if handler is not None:
                return handler
        return None

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if not self._ready:
            self._prepare()
        path: str = scope.get("path", "")
        if (scope["type"] != "http" or scope["method"] != "GET" or not path.startswith(PREFIX)
                or self.route is None or scope.get("root_path")):
            await self.app(scope, receive, send)
            return
        rest = path[len(PREFIX):]
        variant, sep, user_id = rest.partition("/")
        if not sep or not variant or not user_id or "/" in user_id:
            await self.app(scope, receive, send)
            return
        raw_query: bytes = scope.get("query_string") or b""
        query: dict[str, str] = {}
        if raw_query:
            # the way Starlette reads it (latin-1, blank values kept)
            pairs = parse_qsl(raw_query.decode("latin-1"), keep_blank_values=True)
            query = dict(pairs)
            if len(query) != len(pairs) or not self.allowed.issuperset(query):  # FastAPI's guard refuses these
                await self.app(scope, receive, send)
                return
        if self.shadows and any(r.matches(scope)[0] is not Match.NONE for r in self.shadows):
            await self.app(scope, receive, send)
            return
        path_params = {"variant": variant, "user_id": user_id}
        scope["route"] = self.route  # what the router would set: the metrics' route template
        scope["endpoint"] = recommendations.recommendations
        scope["path_params"] = path_params
        try:
            response = await recommendations.answer(scope["app"].state, variant, user_id, query.get("limit"),
                                                    query.get("offset"))
        except Exception as exc:
            handler = self._handler(exc)
            if handler is None:
                raise
            request = Request(scope, receive)
            if inspect.iscoroutinefunction(handler):
                response = await handler(request, exc)
            else:
                response = await run_in_threadpool(handler, request, exc)
        await response(scope, receive, send)

