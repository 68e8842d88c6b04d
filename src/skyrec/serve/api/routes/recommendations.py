"""``GET /v1/recommendations/{variant}/{user_id}``: the hot path.

``answer`` is the one implementation of the answer; the FastAPI route below (what the OpenAPI document, the
docs and the tests see) and the hot path's dispatch ahead of FastAPI's router (``skyrec.serve.hotpath``) both
call it. ``resolve_variant`` is where a rail is mapped to the variant that answers it.
"""

from __future__ import annotations

import re
from typing import Any

from fastapi import APIRouter, Request
from fastapi.exceptions import RequestValidationError

from skyrec.experiments.assign import response_fields
from skyrec.serve.api.deps import (
    USER_ID_PATTERN,
    VARIANT_PATTERN,
    WHOLE_NUMBER,
    WHOLE_NUMBER_MESSAGE,
    check_page,
    check_variant,
)
from skyrec.serve.api.responses import JSON
from skyrec.serve.api.schemas import ERRORS, RecommendationsOut

router = APIRouter(prefix="/v1", tags=["recommendations"])

# Parameters are parsed by hand on this one route: FastAPI's per-request parameter solving costs ~75 µs of
# CPU for these four (measured: 131 µs vs 58 µs for the same route taking only ``request``), about a sixth of
# the whole request. The OpenAPI description below states the same rules the code enforces, and errors have
# the same shape as FastAPI's (422 ``invalid_request`` naming the parameter).
_VARIANT = re.compile(VARIANT_PATTERN)
_USER = re.compile(USER_ID_PATTERN)
PARAMETERS: list[dict[str, Any]] = [
    {"name": "variant", "in": "path", "required": True, "description": "a configured variant",
     "schema": {"type": "string", "pattern": VARIANT_PATTERN}},
    {"name": "user_id", "in": "path", "required": True,
     "description": "a user id: letters, digits and _ . : @ - (1 to 128 characters)",
     "schema": {"type": "string", "pattern": USER_ID_PATTERN, "maxLength": 128}},
    {"name": "limit", "in": "query", "required": False, "description": "items per page (at most serve.max_limit)",
     "schema": {"type": "integer", "minimum": 1}},
    {"name": "offset", "in": "query", "required": False, "description": "items to skip (at most serve.max_offset)",
     "schema": {"type": "integer", "minimum": 0, "default": 0}},
]


def _invalid(where: str, name: str, value: str, msg: str, kind: str) -> RequestValidationError:
    return RequestValidationError([{"loc": (where, name), "msg": msg, "type": kind, "input": value[:200]}])


def _match(where: str, name: str, value: str, pattern: re.Pattern[str]) -> str:
    # fullmatch, as the other routes' validation does: with ``match`` a pattern's ``$`` also matches before
    # a trailing newline, so "alice\n" would pass here and fail everywhere else
    if not pattern.fullmatch(value):
        raise _invalid(where, name, value, f"String should match pattern '{pattern.pattern}'",
                       "string_pattern_mismatch")
    return value


def _int(name: str, raw: str | None, minimum: int) -> int | None:
    if raw is None:
        return None
    if not WHOLE_NUMBER.fullmatch(raw):
        raise _invalid("query", name, raw, WHOLE_NUMBER_MESSAGE, "int_parsing")
    value = int(raw)
    if value < minimum:
        raise _invalid("query", name, raw, f"Input should be greater than or equal to {minimum}", "greater_than_equal")
    return value


QUERY_NAMES = frozenset(p["name"] for p in PARAMETERS if p["in"] == "query")


async def resolve_variant(state: Any, rail: str, user_id: str) -> tuple[str, dict[str, Any]]:
    """Which variant answers ``rail`` for ``user_id``, and the fields it adds to the answer's body.

    The one place where an experiment assigns a user to an arm of a rail (``skyrec.experiments``): the arm's
    variant answers, and the body names ``experiment`` and ``arm`` (null outside an experiment) and carries a
    fresh ``impression_id`` for the events the client reports. Assignment is a hash of (salt, user id) over
    the config and the decisions in force, which the API refreshes in the background: no Redis round trip
    per request.
    """
    experiments = getattr(state, "experiments", None)
    if experiments is None:
        return rail, {}
    assignment = await experiments.assign(rail, user_id)
    return assignment.variant, response_fields(assignment)


async def answer(state: Any, raw_variant: str, raw_user_id: str, raw_limit: str | None,
                 raw_offset: str | None) -> JSON:
    """The answer to ``GET /v1/recommendations/{variant}/{user_id}`` from the raw (URL-decoded) path parameters
    and query values: the one implementation, called by the FastAPI route and by the hot path's dispatch
    (``skyrec.serve.hotpath``). Raises what the app's exception handlers turn into the error answers
    (``RequestValidationError`` 422, ``ApiError`` 404/422, ``Unavailable``/``RedisError`` 503)."""
    store, metrics = state.store, state.metrics
    rail = _match("path", "variant", raw_variant, _VARIANT)
    user_id = _match("path", "user_id", raw_user_id, _USER)
    limit = _int("limit", raw_limit, 1)
    offset = _int("offset", raw_offset, 0) or 0
    check_variant(state.settings, rail)
    page = check_page(state.settings, limit, offset)
    variant, extra = await resolve_variant(state, rail, user_id)
    end = page.offset + page.limit
    found = await store.recommend(variant, user_id, end + 1)  # one more: is there a next page?
    ranked = found.ranked
    source = "personalised" if found.known_user else "fallback"
    metrics.count_answer(variant, source, ranked.padded, ranked.dropped_expired, found.stale)
    # One list, one score scale: the user's own items carry the model's scores, best first; items padded in
    # from the fallback list follow them, marked, without a score (popularity is not on the model's scale).
    # A fallback answer is the fallback list alone, with its own scores.
    items = []
    known = found.known_user
    personalised = ranked.personalised
    for position, (item_id, score, m) in enumerate(ranked.items[page.offset:end], start=page.offset):
        padding = position >= personalised
        items.append({"id": item_id, "title": m.title, "brand": m.brand, "genres": list(m.genres),
                      "score": None if padding and known else score,
                      "origin": "fallback" if padding else "personalised"})
    body = {
        "user_id": user_id,
        "variant": variant,
        "model_version": found.pointer.get("model_version"),
        "publication": found.pointer["publication"],
        "source": source,
        "items": items,
        "offset": page.offset,
        "limit": page.limit,
        "next_offset": end if len(ranked.items) > end else None,
        "padded": sum(1 for i in items if i["origin"] == "fallback"),
        "stale": found.stale,
    }
    if extra:
        body.update(extra)
    headers = {"Cache-Control": "no-store"}
    if found.stale:
        headers["Warning"] = '110 skyrec "stale: Redis unreachable"'
    return JSON(body, headers=headers)


@router.get("/recommendations/{variant}/{user_id}", response_model=RecommendationsOut, responses=ERRORS,
            summary="A user's recommendations for one variant", openapi_extra={"parameters": PARAMETERS})
async def recommendations(request: Request) -> JSON:
    """Best first. Users without a precomputed list get the variant's cold-start list (``source: fallback``).

    Items whose availability ended since the precompute are dropped, and the answer is padded from the
    fallback list (no duplicates). All keys read belong to the publication named in the answer.
    """
    params = request.path_params
    query = request.query_params
    return await answer(request.app.state, params["variant"], params["user_id"], query.get("limit"),
                        query.get("offset"))
