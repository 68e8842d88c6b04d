"""``/healthz`` (alive), ``/readyz`` (Redis reachable and every variant published) and ``/metrics``."""

from __future__ import annotations

from fastapi import APIRouter
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest
from redis.exceptions import RedisError
from starlette.responses import Response

from skyrec.serve.api.deps import MetricsDep, SettingsDep, StoreDep
from skyrec.serve.api.responses import JSON
from skyrec.serve.api.schemas import ReadyOut
from skyrec.serve.store import Unavailable

router = APIRouter(tags=["operations"])


@router.get("/healthz", summary="The process is alive")
async def healthz() -> JSON:
    return JSON({"status": "ok"})


@router.get("/readyz", response_model=ReadyOut, responses={503: {"model": ReadyOut}},
            summary="Ready: Redis reachable and every configured variant has a published set loaded")
async def readyz(settings: SettingsDep, store: StoreDep) -> JSON:
    redis_ok = await store.ping()
    loaded: dict[str, str] = {}
    missing: dict[str, str] = {}
    for variant in settings.variants:
        if not redis_ok:
            missing[variant] = "Redis unreachable"
            continue
        try:
            pointer, stale = await store.pointer(variant, fresh=True)
            if pointer is None:
                missing[variant] = "no current pointer (nothing published)"
            elif not await store.publication_present(variant, pointer["publication"]):
                missing[variant] = f"publication {pointer['publication']} named by the pointer has no keys"
            else:
                loaded[variant] = pointer["publication"]
        except (RedisError, Unavailable) as exc:
            missing[variant] = f"Redis error: {type(exc).__name__}"
    ready = redis_ok and not missing
    return JSON({"status": "ready" if ready else "not_ready", "redis": redis_ok, "variants": loaded,
                 "missing": missing}, status_code=200 if ready else 503)


@router.get("/metrics", response_class=Response, summary="Prometheus metrics (text exposition)")
async def metrics(settings: SettingsDep, store: StoreDep, m: MetricsDep) -> Response:
    try:  # refresh publication gauges (pointer cache: at most one MGET of the pointers per second)
        await store.pointers(settings.variants)
    except Unavailable:
        pass
    return Response(generate_latest(m.registry), media_type=CONTENT_TYPE_LATEST)
