"""``POST /v1/events``: impressions, clicks and plays, appended to the feedback stream (docs/experiments.md).

The body is read with a size bound before parsing, validated in one pass (``skyrec.experiments.events``), and
each event's experiment, arm and variant are recomputed from the config and the decisions in force (the client's
word is not taken). The batch goes into the Redis Stream atomically; 503 with ``Retry-After`` while the
``ingest_feedback`` consumer is behind.
"""

from __future__ import annotations

import copy
import datetime as dt
from typing import Any

import msgspec
from fastapi import APIRouter, FastAPI, Request
from fastapi.exceptions import RequestValidationError
from pydantic import BaseModel, Field

from skyrec.config import Config
from skyrec.experiments.config import MAX_BATCH
from skyrec.experiments.events import BatchError, parse_batch, request_schema, stream_record, utc_text
from skyrec.experiments.runtime import ExperimentsRuntime
from skyrec.experiments.stream import Backlogged
from skyrec.serve.api.errors import ApiError
from skyrec.serve.api.responses import JSON
from skyrec.serve.api.schemas import ErrorOut

router = APIRouter(prefix="/v1", tags=["events"])
_encode = msgspec.json.encode


class EventsAcceptedOut(BaseModel):
    accepted: int = Field(description="events appended to the stream (all of the batch: a batch is never split)")


RESPONSES: dict[int | str, dict[str, Any]] = {
    404: {"model": ErrorOut, "description": "an event names a rail that is not a configured variant"},
    413: {"model": ErrorOut, "description": "body larger than events.max_request_bytes"},
    415: {"model": ErrorOut, "description": "body is not application/json"},
    422: {"model": ErrorOut, "description": "invalid event (the message names the event index and the field)"},
    503: {"model": ErrorOut, "description": "the feedback consumer is behind (Retry-After), or Redis unreachable"},
}
BODY = {"requestBody": {"required": True, "description": f"1 to {MAX_BATCH} events",
                        "content": {"application/json": {"schema": request_schema()}}}}


def install(app: FastAPI, config: Config) -> None:
    """Give the app its experiments runtime (``app.state.experiments``) and state the configured rails in the
    OpenAPI document's event schema (``rail`` is an enum there: a schema-valid event is never refused)."""
    app.state.experiments = ExperimentsRuntime.from_config(config, lambda: app.state.store.redis)
    rails = sorted(config.variants)
    build = app.openapi

    def openapi() -> dict[str, Any]:
        if app.openapi_schema:
            return app.openapi_schema
        spec = build()
        op = spec.get("paths", {}).get("/v1/events", {}).get("post")
        if op is not None:
            op["requestBody"] = copy.deepcopy(op["requestBody"])  # FastAPI shares openapi_extra between apps
            schema = op["requestBody"]["content"]["application/json"]["schema"]
            for event in schema["properties"]["events"]["items"]["oneOf"]:
                rail = event["properties"]["rail"]
                rail.pop("pattern", None)
                rail["enum"] = rails
        app.openapi_schema = spec
        return spec

    app.openapi = openapi  # type: ignore[method-assign]


async def _read(request: Request, limit: int) -> bytes:
    declared = request.headers.get("content-length")
    if declared is not None and declared.isdigit() and int(declared) > limit:
        raise ApiError(413, "payload_too_large", f"body of {int(declared):,} bytes; at most {limit:,} "
                                                 f"(events.max_request_bytes): send fewer events per request")
    chunks, size = [], 0
    async for chunk in request.stream():
        size += len(chunk)
        if size > limit:
            raise ApiError(413, "payload_too_large", f"body larger than {limit:,} bytes "
                                                     f"(events.max_request_bytes): send fewer events per request")
        chunks.append(chunk)
    return b"".join(chunks)


@router.post("/events", status_code=202, response_model=EventsAcceptedOut, responses=RESPONSES,
             summary="Report impressions, clicks and plays", openapi_extra=BODY)
async def post_events(request: Request) -> JSON:
    """A batch of 1 to 500 events: ``impression`` (the items shown, from one recommendations answer), ``click`` and
    ``play`` (one item; a play carries ``duration_seconds``). Each names the ``impression_id`` of the answer it
    belongs to. The experiment and arm are recomputed here from the configuration; the client does not send them.
    """
    runtime: ExperimentsRuntime = request.app.state.experiments
    content_type = request.headers.get("content-type", "")
    if content_type.split(";", 1)[0].strip().lower() != "application/json":
        raise ApiError(415, "unsupported_media_type",
                       f"body must be application/json (got {content_type[:100] or 'no content type'})")
    body = await _read(request, runtime.events.max_request_bytes)
    try:
        events = parse_batch(body, runtime.rails)
    except BatchError as exc:
        if all(e["type"] == "unknown_rail" for e in exc.errors):
            raise ApiError(404, "unknown_rail", str(exc), details=exc.errors) from None
        raise RequestValidationError([{**e, "loc": ["body", *e["loc"]]} for e in exc.errors]) from None
    now = dt.datetime.now(dt.UTC)
    received_at = utc_text(now)
    entries = []
    for event in events:
        a = await runtime.assign(event.rail, event.user_id, now)
        entries.append(_encode(stream_record(event, a.logged_experiment, a.logged_arm, a.variant, received_at)))
    try:
        await runtime.writer.append(runtime.redis, entries)
    except Backlogged as exc:
        request.app.state.metrics.unavailable.labels("events_backlog").inc()
        resp = JSON({"error": "events_backlog", "message": str(exc),
                     "request_id": (request.scope.get("state") or {}).get("request_id")}, status_code=503)
        resp.headers["Retry-After"] = str(exc.retry_after)
        return resp
    return JSON({"accepted": len(entries)}, status_code=202)
