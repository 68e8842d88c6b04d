"""Feedback events: the shape ``POST /v1/events`` accepts, and the shape each stream entry holds.

Both sides validate with these models: the API before appending (4xx naming the event index and field), the
``ingest_feedback`` job when reading the stream back (an entry that fails is quarantined with the reason).

An event as a client sends it::

    {"event_id": "e-1", "type": "play", "impression_id": "rfy.treatment.<32 hex>", "user_id": "u1",
     "rail": "recommended_for_you", "item_ids": ["i9"], "ts": "2026-12-03T10:00:00Z", "duration_seconds": 95.0}

- ``impression``: ``item_ids`` are the items shown, in order (1 to 100, no repeats); no duration;
- ``click``: exactly one item; no duration;
- ``play``: exactly one item; ``duration_seconds`` required (seconds played, 0 to a week).

In the stream the API adds ``experiment``, ``arm``, ``variant`` (recomputed from the config and the decisions in
force, never taken from the client) and ``received_at``, and writes ``ts`` in UTC with a ``Z``.
"""

from __future__ import annotations

import datetime as dt
import json
from typing import Annotated, Any, Literal

from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    StringConstraints,
    TypeAdapter,
    ValidationError,
    field_validator,
    model_validator,
)

from skyrec.experiments.config import MAX_BATCH

ID_PATTERN = r"^[A-Za-z0-9_.:@\-]{1,128}$"           # the API's user/item id alphabet (skyrec.publish.keys)
RAIL_PATTERN = r"^[a-z][a-z0-9_]{0,63}$"
IMPRESSION_ID_PATTERN = r"^(-|[a-z0-9_]{1,64})\.(-|[a-z0-9_]{1,64})\.[0-9a-f]{32}$"
EVENT_TYPES = ("impression", "click", "play")
MAX_ITEMS = 100
MAX_DURATION_SECONDS = 7 * 24 * 3600.0

# RFC 3339 date-time, years 1970 to 2099, real calendar dates only (Feb 29 in leap years), "Z" or an offset,
# at most microseconds. Stated as a pattern (not "format: date-time") so the OpenAPI document says exactly what
# is accepted: a schema-valid time is never refused.
_YEAR = r"(19[7-9][0-9]|20[0-9]{2})"
_MONTH_DAY = (r"((0[1-9]|1[0-2])-(0[1-9]|1[0-9]|2[0-8])|(0[13-9]|1[0-2])-(29|30)|(0[13578]|1[02])-31)")
_LEAP = r"(19(7[26]|8[048]|9[26])|20([02468][048]|[13579][26]))-02-29"
TS_PATTERN = (rf"^({_YEAR}-{_MONTH_DAY}|{_LEAP})T([01][0-9]|2[0-3]):[0-5][0-9]:[0-5][0-9](\.[0-9]{{1,6}})?"
              r"(Z|[+-]([01][0-9]|2[0-3]):[0-5][0-9])$")

Id = Annotated[str, StringConstraints(pattern=ID_PATTERN)]
Rail = Annotated[str, StringConstraints(pattern=RAIL_PATTERN)]
ImpressionId = Annotated[str, StringConstraints(pattern=IMPRESSION_ID_PATTERN)]
Timestamp = Annotated[str, StringConstraints(pattern=TS_PATTERN)]


def utc_text(value: dt.datetime) -> str:
    """Aware datetime -> ``YYYY-MM-DDTHH:MM:SS[.ffffff]Z``."""
    return value.astimezone(dt.UTC).replace(tzinfo=None).isoformat() + "Z"


def parse_ts(text: str) -> dt.datetime:
    return dt.datetime.fromisoformat(text.replace("Z", "+00:00")).astimezone(dt.UTC)


class _Event(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    event_id: Id = Field(description="the client's id for this event (retries keep it: ingest keeps one copy)")
    impression_id: ImpressionId = Field(description="from the recommendations response the event belongs to")
    user_id: Id
    rail: Rail = Field(description="the rail requested (the {variant} of /v1/recommendations/{variant}/{user_id})")
    ts: Timestamp = Field(description="when it happened on the client: RFC 3339, Z or an offset, 1970 to 2099")

    @field_validator("ts")
    @classmethod
    def _utc(cls, v: str) -> str:
        return utc_text(parse_ts(v))


def _unique(v: list[str]) -> list[str]:
    if len(set(v)) != len(v):
        seen: set[str] = set()
        dup = next(i for i in v if i in seen or seen.add(i))  # type: ignore[func-returns-value]
        raise ValueError(f"item {dup!r} listed twice")
    return v


class ImpressionIn(_Event):
    type: Literal["impression"]
    item_ids: list[Id] = Field(min_length=1, max_length=MAX_ITEMS, description="the items shown, in order",
                               json_schema_extra={"uniqueItems": True})
    duration_seconds: None = None

    @field_validator("item_ids")
    @classmethod
    def _unique_items(cls, v: list[str]) -> list[str]:
        return _unique(v)


class ClickIn(_Event):
    type: Literal["click"]
    item_ids: list[Id] = Field(min_length=1, max_length=1, description="the item clicked")
    duration_seconds: None = None


class PlayIn(_Event):
    type: Literal["play"]
    item_ids: list[Id] = Field(min_length=1, max_length=1, description="the item played")
    duration_seconds: float = Field(ge=0, le=MAX_DURATION_SECONDS, allow_inf_nan=False,
                                    description="seconds played")


EventIn = Annotated[ImpressionIn | ClickIn | PlayIn, Field(discriminator="type")]


class EventBatch(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    events: list[EventIn] = Field(min_length=1, max_length=MAX_BATCH)


_BATCH = TypeAdapter(EventBatch)


class BatchError(ValueError):
    """A refused batch: ``errors`` are pydantic-style dicts (loc, msg, type) with locs like ("events", 3, "ts")."""

    def __init__(self, errors: list[dict[str, Any]]) -> None:
        super().__init__("; ".join(f"{'.'.join(map(str, e['loc']))}: {e['msg']}" for e in errors))
        self.errors = errors


MAX_REPORTED_ERRORS = 20


def _clean(errors: list[Any]) -> list[dict[str, Any]]:
    """Error locations without the union's tag (``events.3.play.duration_seconds`` -> ``events.3.duration_seconds``),
    at most MAX_REPORTED_ERRORS of them, without the (possibly huge) input values."""
    out = []
    for e in errors[:MAX_REPORTED_ERRORS]:
        loc = list(e.get("loc", ()))
        if len(loc) >= 3 and loc[0] == "events" and loc[2] in EVENT_TYPES:
            del loc[2]
        msg = str(e.get("msg", "invalid"))
        if e.get("type") == "string_pattern_mismatch" and loc and loc[-1] == "ts":
            msg = "not an RFC 3339 time from 1970 to 2099 with Z or an offset (e.g. 2026-12-03T10:00:00Z)"
        out.append({"loc": loc, "msg": msg, "type": str(e.get("type", "value_error"))})
    return out


def parse_batch(body: bytes, rails: frozenset[str] | set[str]) -> list[ImpressionIn | ClickIn | PlayIn]:
    """The events of one request body, or BatchError naming each bad field with its event index."""
    try:
        batch = _BATCH.validate_json(body)
    except ValidationError as exc:
        raise BatchError(_clean(exc.errors(include_url=False, include_input=False))) from None
    unknown = [{"loc": ["events", i, "rail"], "msg": f"unknown rail {e.rail!r} (known: {sorted(rails)})",
                "type": "unknown_rail"} for i, e in enumerate(batch.events) if e.rail not in rails]
    if unknown:
        raise BatchError(unknown[:MAX_REPORTED_ERRORS])
    return list(batch.events)


def request_schema() -> dict[str, Any]:
    """The request body's JSON schema, inline (no refs: it sits in the OpenAPI operation itself)."""
    schema = EventBatch.model_json_schema()
    defs = schema.pop("$defs", {})

    def inline(node: Any) -> Any:
        if isinstance(node, dict):
            if "$ref" in node:
                return inline(defs[node["$ref"].rsplit("/", 1)[-1]])
            return {k: inline(v) for k, v in node.items() if k != "discriminator"}
        if isinstance(node, list):
            return [inline(v) for v in node]
        return node

    out: dict[str, Any] = inline(schema)
    return out


# ---- the stream side -------------------------------------------------------------------------------------------


class StoredEvent(BaseModel):
    """One stream entry's ``e`` field, as the API wrote it (docs/experiments.md, "The stream")."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    event_id: Id
    type: Literal["impression", "click", "play"]
    impression_id: ImpressionId
    user_id: Id
    rail: Rail
    experiment: Annotated[str, StringConstraints(pattern=r"^[a-z0-9_]{1,64}$")] | None
    arm: Annotated[str, StringConstraints(pattern=r"^[a-z0-9_]{1,64}$")] | None
    variant: Rail
    item_ids: list[Id] = Field(min_length=1, max_length=MAX_ITEMS)
    ts: dt.datetime
    duration_seconds: float | None = Field(ge=0, le=MAX_DURATION_SECONDS, allow_inf_nan=False)
    received_at: dt.datetime

    @field_validator("ts", "received_at")
    @classmethod
    def _aware(cls, v: dt.datetime) -> dt.datetime:
        if v.tzinfo is None:
            raise ValueError("must carry a timezone")
        return v.astimezone(dt.UTC)

    @field_validator("item_ids")
    @classmethod
    def _items(cls, v: list[str]) -> list[str]:
        return _unique(v)

    @model_validator(mode="after")
    def _by_type(self) -> StoredEvent:
        if (self.experiment is None) != (self.arm is None):
            raise ValueError("experiment and arm are both set or both null")
        if self.type == "play":
            if self.duration_seconds is None:
                raise ValueError("duration_seconds: required for a play")
        elif self.duration_seconds is not None:
            raise ValueError(f"duration_seconds: must be null for a {self.type}")
        if self.type != "impression" and len(self.item_ids) != 1:
            raise ValueError(f"item_ids: a {self.type} names exactly one item")
        return self


def stream_record(event: ImpressionIn | ClickIn | PlayIn, experiment: str | None, arm: str | None, variant: str,
                  received_at: str) -> dict[str, Any]:
    """The JSON object one stream entry holds (field ``e``)."""
    return {"event_id": event.event_id, "type": event.type, "impression_id": event.impression_id,
            "user_id": event.user_id, "rail": event.rail, "experiment": experiment, "arm": arm, "variant": variant,
            "item_ids": list(event.item_ids), "ts": event.ts, "duration_seconds": event.duration_seconds,
            "received_at": received_at}


def parse_stream_entry(fields: dict[Any, Any]) -> StoredEvent:
    """A stream entry's fields (as redis-py returns them) -> StoredEvent; ValueError with the reason otherwise.

    Reasons are short codes the reader can count by: ``missing_field_e``, ``extra_fields``, ``not_utf8``,
    ``not_json``, ``invalid_event: <first error>``.
    """
    keys = {k.decode() if isinstance(k, bytes) else str(k) for k in fields}
    if "e" not in keys:
        raise ValueError("missing_field_e")
    if keys != {"e"}:
        raise ValueError("extra_fields")
    raw = fields.get(b"e", fields.get("e"))
    if isinstance(raw, bytes):
        try:
            raw = raw.decode("utf-8")
        except UnicodeDecodeError:
            raise ValueError("not_utf8") from None
    if not isinstance(raw, str):
        raise ValueError("not_json")
    try:
        data = json.loads(raw)
    except ValueError:
        raise ValueError("not_json") from None
    try:
        return StoredEvent.model_validate(data)
    except ValidationError as exc:
        first = exc.errors(include_url=False, include_input=False)[0]
        where = ".".join(str(p) for p in first.get("loc", ())) or "event"
        raise ValueError(f"invalid_event: {where}: {first.get('msg')}") from None
