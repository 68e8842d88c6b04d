"""Dependencies as ``Annotated`` aliases: handlers declare what they need, FastAPI wires it.

Limits come from the config at runtime (``serve.max_limit``, ``serve.max_offset``), so they are checked here
and reported as 422 naming the parameter and its bound. Every dependency is ``async def``: FastAPI runs a
plain ``def`` dependency in the threadpool, a thread hop per dependency per request.
"""

from __future__ import annotations

import hmac
import re
from dataclasses import dataclass
from typing import Annotated

from fastapi import Depends, Path, Query, Request
from fastapi.security import APIKeyHeader
from pydantic import BeforeValidator
from pydantic_core import PydanticCustomError

from skyrec.publish.keys import VALID_USER_ID
from skyrec.serve.api.errors import ApiError
from skyrec.serve.observability import Metrics
from skyrec.serve.settings import ServeSettings
from skyrec.serve.store import Store

USER_ID_PATTERN = VALID_USER_ID.pattern
VARIANT_PATTERN = r"^[a-z][a-z0-9_]{0,63}$"


async def get_settings(request: Request) -> ServeSettings:
    return request.app.state.settings


async def get_store(request: Request) -> Store:
    return request.app.state.store


async def get_metrics(request: Request) -> Metrics:
    return request.app.state.metrics


SettingsDep = Annotated[ServeSettings, Depends(get_settings)]
StoreDep = Annotated[Store, Depends(get_store)]
MetricsDep = Annotated[Metrics, Depends(get_metrics)]

UserId = Annotated[str, Path(pattern=USER_ID_PATTERN, max_length=128,
                             description="a user id: letters, digits and _ . : @ - (1 to 128 characters)")]
ItemId = Annotated[str, Path(pattern=USER_ID_PATTERN, max_length=128, description="an item id")]


async def known_variant(settings: SettingsDep,
                        variant: Annotated[str, Path(pattern=VARIANT_PATTERN, description="a configured variant")]
                        ) -> str:
    return check_variant(settings, variant)


async def optional_variant(settings: SettingsDep,
                     variant: Annotated[str | None, Query(pattern=VARIANT_PATTERN,
                                                          description="a configured variant")] = None) -> str | None:
    if variant is not None and variant not in settings.variants:
        raise ApiError(404, "unknown_variant", f"unknown variant {variant!r} (known: {sorted(settings.variants)})")
    return variant


Variant = Annotated[str, Depends(known_variant)]
OptionalVariant = Annotated[str | None, Depends(optional_variant)]


@dataclass(frozen=True)
class Page:
    limit: int
    offset: int


#: how a count is written in a query: digits only. pydantic's lax int would also take "+5", " 5", "5.0" and
#: "5_0" (as 50); the hot path (``routes.recommendations``) applies the same rule with the same error
WHOLE_NUMBER = re.compile(r"[0-9]{1,18}")
WHOLE_NUMBER_MESSAGE = "Input should be a whole number written with digits only (0-9)"


def _digits_only(value: object) -> object:
    if isinstance(value, str) and not WHOLE_NUMBER.fullmatch(value):
        raise PydanticCustomError("int_parsing", WHOLE_NUMBER_MESSAGE)
    return value


Count = BeforeValidator(_digits_only)
Limit = Annotated[int | None, Query(ge=1, description="items per page (at most serve.max_limit)"), Count]
Offset = Annotated[int, Query(ge=0, description="items to skip (at most serve.max_offset)"), Count]
VariantPath = Annotated[str, Path(pattern=VARIANT_PATTERN, description="a configured variant")]


def check_variant(settings: ServeSettings, variant: str) -> str:
    if variant not in settings.variants:
        raise ApiError(404, "unknown_variant", f"unknown variant {variant!r} (known: {sorted(settings.variants)})")
    return variant


def _too_big(name: str, value: int, bound: int) -> ApiError:
    """The same 422 shape FastAPI's own validation gives (``details`` naming the parameter)."""
    msg = f"Input should be less than or equal to {bound}"
    return ApiError(422, "invalid_request", f"{name}: must be at most {bound} (got {value})",
                    details=[{"loc": ["query", name], "msg": msg, "type": "less_than_equal"}])


def check_page(settings: ServeSettings, limit: int | None, offset: int) -> Page:
    if limit is None:
        limit = settings.default_limit
    if limit > settings.max_limit:
        raise _too_big("limit", limit, settings.max_limit)
    if offset > settings.max_offset:
        raise _too_big("offset", offset, settings.max_offset)
    return Page(limit=limit, offset=offset)


async def page(settings: SettingsDep, limit: Limit = None, offset: Offset = 0) -> Page:
    return check_page(settings, limit, offset)


PageDep = Annotated[Page, Depends(page)]

_api_key = APIKeyHeader(name="X-API-Key", auto_error=False, description="admin API key (see serve.admin_api_key_env)")


async def require_admin(settings: SettingsDep, key: Annotated[str | None, Depends(_api_key)]) -> None:
    """Constant-time comparison; 503 when admin is disabled (no key configured), 401 missing, 403 wrong."""
    expected = settings.admin_api_key
    if not expected:
        raise ApiError(503, "admin_disabled",
                       f"admin endpoints are disabled: no key in environment variable {settings.admin_api_key_env}")
    if not key:
        raise ApiError(401, "unauthorized", "admin endpoints need the X-API-Key header")
    if not hmac.compare_digest(key.encode("utf-8"), expected.encode("utf-8")):
        raise ApiError(403, "forbidden", "admin API key not accepted")


Admin = Depends(require_admin)
