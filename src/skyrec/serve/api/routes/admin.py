"""Admin: roll a variant back to its previous publication; drop the API's caches.

Both need the key from the environment variable named by ``serve.admin_api_key_env`` (``X-API-Key`` header,
compared in constant time). The rollback itself belongs to the publisher (``skyrec.publish.rollback``), so
there is one implementation of "switch the pointer"; it is imported when called.
"""

from __future__ import annotations

import logging
from typing import Any

from fastapi import APIRouter
from redis.exceptions import RedisError
from starlette.concurrency import run_in_threadpool

from skyrec.serve.api.deps import Admin, SettingsDep, StoreDep, Variant
from skyrec.serve.api.errors import ApiError
from skyrec.serve.api.responses import JSON
from skyrec.serve.api.routes.variants import describe_all
from skyrec.serve.api.schemas import ERRORS, AdminOut

router = APIRouter(prefix="/v1/admin", tags=["admin"], dependencies=[Admin])
log = logging.getLogger("skyrec.serve.admin")

_ADMIN_ERRORS = {**ERRORS, 401: ERRORS[422] | {"description": "X-API-Key header missing"},
                 403: ERRORS[422] | {"description": "X-API-Key not accepted"},
                 409: ERRORS[422] | {"description": "nothing to roll back to"},
                 501: ERRORS[422] | {"description": "the publisher's rollback is not available"}}


@router.post("/{variant}/rollback", response_model=AdminOut, responses=_ADMIN_ERRORS,
             summary="Switch a variant back to its previous publication")
async def rollback(variant: Variant, settings: SettingsDep, store: StoreDep) -> JSON:
    try:
        from skyrec.publish import rollback as publish_rollback
    except ImportError:
        raise ApiError(501, "not_implemented", "rollback is not available: skyrec.publish.rollback is missing "
                       "in this build") from None

    def call() -> Any:
        import redis

        client = redis.Redis.from_url(settings.redis_url, socket_timeout=5, socket_connect_timeout=2)
        try:
            return publish_rollback(client, settings.keys, variant)
        finally:
            client.close()

    try:
        result = await run_in_threadpool(call)
    except RedisError:
        raise
    except (LookupError, ValueError, RuntimeError) as exc:
        raise ApiError(409, "rollback_refused", f"rollback of {variant!r} refused: {exc}") from None
    store.invalidate()
    pointer, stale = await store.pointer(variant, fresh=True)
    log.warning("rollback", extra={"variant": variant, "publication": (pointer or {}).get("publication")})
    return JSON({"action": "rollback", "variants": await describe_all(settings, {variant: (pointer, stale)}),
                 "result": result if isinstance(result, dict | list | str | None) else str(result)})


@router.post("/reload", response_model=AdminOut, responses=_ADMIN_ERRORS,
             summary="Drop the API's caches and re-read every variant's pointer")
async def reload(settings: SettingsDep, store: StoreDep) -> JSON:
    store.clear()
    pointers = {}
    for variant in settings.variants:
        pointers[variant] = await store.pointer(variant, fresh=True)
    out = await describe_all(settings, pointers)
    log.warning("reload", extra={"variants": {v: d.get("publication") for v, d in out.items()}})
    return JSON({"action": "reload", "variants": out})
