"""Build the API (``create_app``) and run it on uvicorn (``run``, what ``skyrec serve`` calls).

Thin on purpose: settings come from the skyrec Config, routes live in ``api/routes``, Redis reads in
``store``. The Redis client is created inside the lifespan so its connections belong to the server's event
loop, and closed on shutdown (uvicorn stops accepting, drains in-flight requests for
``serve.graceful_shutdown_seconds``, then runs the lifespan's exit).
"""

from __future__ import annotations

import contextlib
import importlib.util
import logging
import os
from collections.abc import AsyncIterator
from typing import Any, cast

import redis
import redis.asyncio as aioredis
from fastapi import FastAPI
from fastapi.staticfiles import StaticFiles

import skyrec
from skyrec.config import Config, load_config
from skyrec.serve.api import errors
from skyrec.serve.api.responses import JSON
from skyrec.serve.api.routes import ROUTERS
from skyrec.serve.api.routes.events import install as install_experiments
from skyrec.serve.api.routes.experiments import install as install_readouts
from skyrec.serve.api.routes.explorer import STATIC
from skyrec.serve.fastget import PipelinedGet
from skyrec.serve.head import HeadAsGet
from skyrec.serve.hotpath import HotPath
from skyrec.serve.observability import MAX_PATH_BYTES, Metrics, RequestContextMiddleware, log_config
from skyrec.serve.settings import ServeSettings
from skyrec.serve.store import Store

log = logging.getLogger("skyrec.serve")


def _async_client(settings: ServeSettings, given: Any) -> tuple[aioredis.Redis, bool, PipelinedGet | None]:
    """The asyncio client to use, whether we own it (and must close it), and the hot path's pipelined GET.

    ``given`` may be an asyncio client (used as is, for everything), a sync ``redis.Redis`` (its connection
    settings are reused for an asyncio pool on this loop), or None (``serve.redis_url``).
    """
    if isinstance(given, aioredis.Redis):
        return given, False, None
    common: dict[str, Any] = {"socket_timeout": settings.redis_timeout_seconds,
                              "socket_connect_timeout": settings.redis_timeout_seconds,
                              "max_connections": settings.redis_max_connections,
                              "timeout": settings.redis_timeout_seconds}
    url: str | None
    if isinstance(given, redis.Redis):
        kw = dict(given.connection_pool.connection_kwargs)
        host, port, db = kw.get("host", "127.0.0.1"), kw.get("port", 6379), kw.get("db", 0)
        pool = aioredis.BlockingConnectionPool(host=host, port=port, db=db, username=kw.get("username"),
                                               password=kw.get("password"), **common)
        url = None if kw.get("password") else f"redis://{host}:{port}/{db}"
    else:
        url = settings.redis_url
        pool = aioredis.BlockingConnectionPool.from_url(settings.redis_url, **common)
    fast = None
    if url and settings.redis_pipelined_connections and PipelinedGet.supports(url):
        fast = PipelinedGet(url, connections=settings.redis_pipelined_connections,
                            timeout=settings.redis_timeout_seconds)
    return aioredis.Redis(connection_pool=pool), True, fast


def create_app(config: Config | None = None, redis_client: Any = None, *, hot_path: bool = True) -> FastAPI:
    """The FastAPI app over the Redis named by ``config.serve.redis_url`` (or ``redis_client``).

    ``hot_path``: answer the recommendations route ahead of FastAPI's router (``skyrec.serve.hotpath``; same
    answers, less CPU); off, every request takes FastAPI's routing (the tests compare the two).
    """
    settings = ServeSettings.from_config(config)
    metrics = Metrics()

    @contextlib.asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        client, owned, fast = _async_client(settings, redis_client)
        app.state.store = Store(redis=client, fast=fast, keys=settings.keys, variants=settings.variants,
                                pointer_ttl=settings.pointer_cache_seconds, item_cache_size=settings.item_cache_size,
                                last_good_size=settings.last_good_users)
        metrics.publications_from(app.state.store.cached_pointers)
        if fast is not None:  # connect before the first request (a connect under load can outlast a command's timeout)
            opened = await fast.connect_all(max(2.0, 4 * settings.redis_timeout_seconds))
            if not opened:
                log.warning("Redis not reachable at start-up; requests will retry", extra={"url": settings.redis_url})
        log.info("serving", extra={"variants": list(settings.variants), "key_prefix": settings.key_prefix,
                                   "admin_enabled": settings.admin_api_key is not None})
        try:
            yield
        finally:
            if fast is not None:
                await fast.aclose()
            if owned:
                await client.aclose()
            log.info("stopped")

    app = FastAPI(
        title="skyrec recommendations API",
        version=skyrec.__version__ if hasattr(skyrec, "__version__") else "0",
        description="Precomputed personalised recommendations per variant, served from Redis. "
                    "Every answer names the publication it was read from.",
        lifespan=lifespan,
        default_response_class=JSON,
        docs_url=None,  # served below from installed assets: FastAPI's defaults load Swagger UI from a CDN
        redoc_url=None,
    )
    app.state.settings = settings
    app.state.metrics = metrics
    # experiments: app.state.experiments (assignment, cached decisions, events stream writer) and POST /v1/events' schema
    install_experiments(app, config or load_config())
    install_readouts(app, config or load_config())  # GET /v1/experiments: where the readouts are
    errors.install(app)
    for router in ROUTERS:
        app.include_router(router)
    app.mount("/static", StaticFiles(directory=STATIC), name="static")
    _install_docs(app)
    _openapi_states_the_limits(app, settings)
    _refuse_unknown_query_parameters(app)
    if hot_path:  # inside the request-context middleware: ids, metrics and access log as for every route
        app.add_middleware(HotPath, fastapi_app=app)
    app.add_middleware(HeadAsGet)  # HEAD on every GET route, the hot path's too (outside it: it sees a GET)
    app.add_middleware(RequestContextMiddleware, metrics=metrics, access_log=settings.access_log)
    return app


DOCS_ASSETS = "/docs-assets"
_PAGE_BOUNDS = {"limit": "max_limit", "offset": "max_offset"}


def _openapi_states_the_limits(app: FastAPI, settings: ServeSettings) -> None:
    """Make the OpenAPI document say what the API enforces, where the bound is only known at runtime.

    ``limit``/``offset`` bounds come from the config (``serve.max_limit``, ``serve.max_offset``), so route
    declarations cannot carry them: they are written into every operation's parameters here. Every error
    response is documented as the one JSON error shape (a route answering HTML on success, the report,
    still answers errors in JSON).
    """
    build = app.openapi

    def openapi() -> dict[str, Any]:
        if app.openapi_schema:
            return app.openapi_schema
        spec = build()
        for ops in spec.get("paths", {}).values():
            for op in ops.values():
                for param in op.get("parameters", []):
                    # the config's page bounds, for the parameters the page check guards
                    bound = _PAGE_BOUNDS.get(param.get("name", "")) if param.get("in") == "query" else None
                    if bound:
                        _set_maximum(param.get("schema", {}), int(getattr(settings, bound)))
                op.setdefault("responses", {}).setdefault("414", {
                    "description": f"request target longer than {MAX_PATH_BYTES} bytes (every route)"})
                op["responses"].setdefault("400", {
                    "description": "malformed HTTP request: the server's HTTP parser refused the request line or "
                                   "a header (every route)"})
                for status, response in op.get("responses", {}).items():
                    if str(status)[:1] in ("4", "5"):
                        response["content"] = {"application/json": {
                            "schema": {"$ref": "#/components/schemas/ErrorOut"}}}
        app.openapi_schema = spec
        return spec

    app.openapi = openapi  # type: ignore[method-assign]


def _refuse_unknown_query_parameters(app: FastAPI) -> None:
    """A query parameter a route does not declare is a 422 naming it (``?limt=5`` is a typo, not a request for
    the default page), and so is one that takes a single value given more than once (``?limit=z&limit=6``
    would otherwise be read as ``limit=6``, the last value winning silently). Each route's allowed names are
    what its OpenAPI operation lists, so the document and the behaviour cannot drift apart; a parameter
    declared as a list (``list[str]``, or an ``array`` schema in ``openapi_extra``) may repeat."""
    from urllib.parse import parse_qsl

    from fastapi._compat import field_annotation_is_sequence
    from fastapi.dependencies.utils import get_flat_dependant
    from fastapi.exceptions import RequestValidationError
    from fastapi.routing import APIRoute

    def strict(inner: Any, allowed: frozenset[str], repeatable: frozenset[str]) -> Any:
        async def asgi(scope: Any, receive: Any, send: Any) -> None:
            raw = scope.get("query_string") or b""
            if raw:
                counts: dict[str, int] = {}
                for name, _ in parse_qsl(raw.decode("latin-1"), keep_blank_values=True):
                    if name not in allowed:
                        raise RequestValidationError([{
                            "loc": ("query", name[:100]), "msg": f"unknown query parameter (allowed: "
                            f"{', '.join(sorted(allowed)) or 'none'})", "type": "extra_forbidden"}])
                    counts[name] = counts.get(name, 0) + 1
                repeated = [(name, n) for name, n in counts.items() if n > 1 and name not in repeatable]
                if repeated:
                    raise RequestValidationError([{
                        "loc": ("query", name), "msg": f"given {n} times; this parameter takes one value",
                        "type": "repeated_parameter"} for name, n in repeated])
            await inner(scope, receive, send)

        return asgi

    for route in app.routes:
        if isinstance(route, APIRoute) and route.include_in_schema:  # pages (the explorer) read their own query
            fields = get_flat_dependant(route.dependant).query_params
            names = {p.alias for p in fields}
            # the test FastAPI itself uses to read a parameter with ``getlist`` (all its values)
            lists = {p.alias for p in fields if field_annotation_is_sequence(cast(Any, p.field_info.annotation))}
            for p in (route.openapi_extra or {}).get("parameters", []):
                if p.get("in") == "query":
                    names.add(p["name"])
                    if (p.get("schema") or {}).get("type") == "array":
                        lists.add(p["name"])
            route.app = strict(route.app, frozenset(names), frozenset(lists))


def _set_maximum(schema: dict[str, Any], bound: int) -> None:
    if schema.get("type") == "integer":
        schema.setdefault("maximum", bound)  # a bound the route declares itself stands (history: le=1000)
    for branch in schema.get("anyOf", []) + schema.get("oneOf", []):
        _set_maximum(branch, bound)


def _install_docs(app: FastAPI) -> None:
    """``/docs`` (Swagger UI) and ``/redoc`` from the assets of an installed package (``fastapi-offline``), so
    the API documents itself on a machine without internet; no page loads anything from another host."""
    from pathlib import Path

    import fastapi_offline
    from fastapi.openapi.docs import get_redoc_html, get_swagger_ui_html
    from starlette.requests import Request
    from starlette.responses import HTMLResponse

    assets = Path(fastapi_offline.__file__).parent / "static"
    app.mount(DOCS_ASSETS, StaticFiles(directory=assets), name="docs-assets")

    async def swagger(request: Request) -> HTMLResponse:
        return get_swagger_ui_html(openapi_url=app.openapi_url or "/openapi.json", title=f"{app.title} - docs",
                                   swagger_js_url=f"{DOCS_ASSETS}/swagger-ui-bundle.js",
                                   swagger_css_url=f"{DOCS_ASSETS}/swagger-ui.css",
                                   swagger_favicon_url=f"{DOCS_ASSETS}/favicon.png")

    async def redoc(request: Request) -> HTMLResponse:
        return get_redoc_html(openapi_url=app.openapi_url or "/openapi.json", title=f"{app.title} - ReDoc",
                              redoc_js_url=f"{DOCS_ASSETS}/redoc.standalone.js",
                              redoc_favicon_url=f"{DOCS_ASSETS}/favicon.png", with_google_fonts=False)

    app.add_route("/docs", swagger, include_in_schema=False)
    app.add_route("/redoc", redoc, include_in_schema=False)


def app_from_environment() -> FastAPI:
    """The app for each worker process when ``serve.workers > 1`` (uvicorn imports it by name in every
    worker): the config is loaded again from the same environment (``SKYREC_ENV`` names the one ``run`` got)."""
    return create_app(load_config(os.environ.get("SKYREC_ENV")))


def run(config: Config, host: str | None = None, port: int | None = None, workers: int | None = None) -> None:
    """Serve on uvicorn (uvloop and httptools when installed), JSON logs, graceful shutdown on SIGTERM/SIGINT.

    ``workers`` (default ``serve.workers``) > 1 starts that many processes on one socket, each with its own
    caches and Redis connections and sharing nothing but Redis: throughput grows with cores (BENCHMARKS.md
    "Serving").
    """
    import uvicorn

    settings = ServeSettings.from_config(config)
    workers = config.serve.workers if workers is None else workers
    if workers < 1:
        raise ValueError(f"workers must be at least 1 (got {workers})")
    common: dict[str, Any] = {
        "host": host or config.serve.host,
        "port": port or config.serve.port,
        "log_config": log_config(settings.log_level),
        "access_log": False,
        "timeout_graceful_shutdown": int(settings.graceful_shutdown_seconds) or None,
        "server_header": False,
        "proxy_headers": False,
    }
    if importlib.util.find_spec("httptools") is not None:  # one write per response; JSON for unparsable requests
        common["http"] = "skyrec.serve.uvicorn_http:OneWriteHttpToolsProtocol"
    else:
        common["http"] = "skyrec.serve.uvicorn_http:JsonErrorH11Protocol"
    if workers > 1:
        from skyrec.serve import workers as worker_pool

        os.environ["SKYREC_ENV"] = config.env
        if worker_pool.supports_reuse_port():  # one socket per worker: connections spread evenly (workers.py)
            status = worker_pool.serve(workers, common)
            if status:
                raise SystemExit(status)
        else:  # uvicorn's own process model (one shared socket); /metrics still sums every worker
            import shutil
            import tempfile

            metrics_dir = tempfile.mkdtemp(prefix="skyrec-metrics-")
            os.environ["PROMETHEUS_MULTIPROC_DIR"] = metrics_dir
            try:
                uvicorn.run(worker_pool.APP, factory=True, workers=workers, **common)
            finally:
                os.environ.pop("PROMETHEUS_MULTIPROC_DIR", None)
                shutil.rmtree(metrics_dir, ignore_errors=True)
    else:
        uvicorn.run(create_app(config), **common)
