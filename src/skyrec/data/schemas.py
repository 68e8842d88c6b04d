"""Arrow schemas of every dataset in the lake. One place; jobs and tests import them from here."""

from __future__ import annotations

import pyarrow as pa

TS = pa.timestamp("us", tz="UTC")

# Raw activity as it lands hourly from the apps (source/activity/date=YYYY-MM-DD/hour=HH/*.parquet).
RAW_ACTIVITY = pa.schema([
    ("event_id", pa.string()),
    ("user_id", pa.string()),
    ("item_id", pa.string()),
    ("event_type", pa.string()),      # play | complete | pause | seek | ...
    ("event_ts", TS),
    ("played_seconds", pa.float32()),
    ("platform", pa.string()),
])

# Filtered activity: one delta per interval, and the rolling snapshot built from the deltas.
ACTIVITY = pa.schema([
    ("user_id", pa.string()),
    ("item_id", pa.string()),
    ("event_type", pa.string()),
    ("event_ts", TS),
    ("played_seconds", pa.float32()),
])

# The merged, up-to-date catalogue snapshot (one row per live episode).
CATALOGUE = pa.schema([
    ("item_id", pa.string()),
    ("title", pa.string()),
    ("brand_id", pa.string()),
    ("brand_title", pa.string()),
    ("series_id", pa.string()),
    ("masterbrand", pa.string()),
    ("genres", pa.list_(pa.string())),
    ("formats", pa.list_(pa.string())),
    ("release_ts", TS),
    ("duration_seconds", pa.int32()),
    ("available_from", TS),
    ("available_until", TS),          # null = no end
    ("updated_ts", TS),
])

# Items playable at the snapshot time.
AVAILABILITY = pa.schema([
    ("item_id", pa.string()),
    ("available_from", TS),
    ("available_until", TS),
])

# Popular-now lists per variant, for users without history.
COLD_START = pa.schema([
    ("variant", pa.string()),
    ("rank", pa.int32()),
    ("item_id", pa.string()),
    ("score", pa.float32()),
])

# Precomputed recommendations (the Parquet copy for analysis).
PREDICTIONS = pa.schema([
    ("user_id", pa.string()),
    ("rank", pa.int16()),
    ("item_id", pa.string()),
    ("score", pa.float32()),
])


# ---- input contracts (docs/data.md, `skyrec schema`) ---------------------------------------------------------
# One definition per input: the docs' tables, the command's JSON Schema / Arrow output and the tests are all
# derived from (or checked against) CONTRACTS. Bump CONTRACT_VERSION on any change a producer must follow.

CONTRACT_VERSION = 1

_TS_JSON = {"type": ["string", "number"],
            "description": "ISO-8601 with a UTC offset or Z (naive = UTC), or epoch seconds"}
_LIST_JSON = {"type": ["array", "string", "null"], "items": {"type": "string"}}


class FieldSpec:
    """One field of a contract: name, contract type, required, meaning, example, JSON Schema fragment."""

    def __init__(self, name: str, type_: str, required: bool, meaning: str, example: object,
                 json_schema: dict | None = None) -> None:
        self.name, self.type, self.required, self.meaning, self.example = name, type_, required, meaning, example
        self.json_schema = json_schema or {}


class Contract:
    def __init__(self, name: str, kind: str, title: str, location: str, fields: list[FieldSpec],
                 arrow: pa.Schema | None = None, record_type: str | None = None) -> None:
        self.name, self.kind, self.title, self.location, self.fields = name, kind, title, location, fields
        self.arrow, self.record_type = arrow, record_type

    def json_schema(self) -> dict:
        """JSON Schema (draft 2020-12) of a metadata record; a deleted record needs only id, type, updated."""
        props = {f.name: {**f.json_schema, "description": f.meaning, "examples": [f.example]} for f in self.fields}
        required = [f.name for f in self.fields if f.required]
        always = [n for n in required if n in ("id", "type", "updated")]
        return {"$schema": "https://json-schema.org/draft/2020-12/schema",
                "$id": f"skyrec:contracts/v{CONTRACT_VERSION}/{self.name}", "title": self.title,
                "type": "object", "properties": props, "required": always,
                "if": {"properties": {"deleted": {"const": True}}, "required": ["deleted"]},
                "else": {"required": required}, "additionalProperties": True}

    def describe(self) -> dict:
        """What `skyrec schema NAME` prints: JSON Schema for metadata records, the Arrow schema otherwise."""
        out: dict = {"name": self.name, "version": CONTRACT_VERSION, "title": self.title,
                     "location": self.location, "format": self.kind}
        if self.kind == "json":
            out["json_schema"] = self.json_schema()
        else:
            assert self.arrow is not None
            by_name = {f.name: f for f in self.fields}
            out["arrow_schema"] = str(self.arrow)
            out["fields"] = [{"name": f.name, "type": str(f.type), "required": by_name[f.name].required,
                              "meaning": by_name[f.name].meaning, "example": by_name[f.name].example}
                             for f in self.arrow]
        return out


def _common(record_type: str, example_id: str) -> list[FieldSpec]:
    return [
        FieldSpec("id", "string", True, "the record's id (an item id for episodes and availability)", example_id,
                  {"type": "string", "minLength": 1}),
        FieldSpec("type", "string", True, f"the record type, here \"{record_type}\"", record_type,
                  {"const": record_type}),
        FieldSpec("updated", "timestamp", True, "when this version was made; the latest wins (then the higher "
                  "sequence number of the file name)", "2026-02-27T09:30:00+01:00", _TS_JSON),
        FieldSpec("deleted", "boolean", False, "true withdraws the record (only id, type, updated needed)", False,
                  {"type": ["boolean", "null"]}),
    ]


_METADATA_LOCATION = "{source}/{metadata_prefix}/{stream}/<any folders>/<name>-<seq>.json, one object per file"

CONTRACTS: dict[str, Contract] = {
    "brand": Contract("brand", "json", "Brand (a programme or any grouping of items)",
                      _METADATA_LOCATION.replace("{stream}", "programmes"), _common("brand", "b0001234") + [
        FieldSpec("title", "string", True, "display title", "The Curious Hour", {"type": "string", "minLength": 1}),
        FieldSpec("masterbrand", "object or string", False, "the channel/label: {\"id\", \"name\"} or a name",
                  {"id": "radio_arts", "name": "Radio Arts"}, {"type": ["object", "string", "null"]}),
        FieldSpec("genres", "list<string>", False, "genres its items inherit (the source's spelling)",
                  ["Comedy"], _LIST_JSON),
        FieldSpec("formats", "list<string>", False, "formats its items inherit", ["Podcasts"], _LIST_JSON),
    ], record_type="brand"),
    "series": Contract("series", "json", "Series (a season of a brand)",
                       _METADATA_LOCATION.replace("{stream}", "programmes"), _common("series", "s0000456") + [
        FieldSpec("brand_id", "string", False, "the brand it belongs to (episodes of a series without a "
                  "known brand are quarantined, unresolved_parent)", "b0001234", {"type": ["string", "null"]}),
        FieldSpec("title", "string", True, "display title", "Series 2", {"type": "string", "minLength": 1}),
        FieldSpec("position", "integer", False, "order within the brand", 2, {"type": ["integer", "null"]}),
    ], record_type="series"),
    "episode": Contract("episode", "json", "Episode (an item: what is recommended)",
                        _METADATA_LOCATION.replace("{stream}", "episodes"), _common("episode", "p0001234") + [
        FieldSpec("title", "string", True, "display title", "The Curious Hour: Series 2, Episode 3",
                  {"type": "string", "minLength": 1}),
        FieldSpec("parent", "object", True, "{\"id\", \"type\": \"series\"|\"brand\"}: must resolve to a brand "
                  "(or give series_id/brand_id); `skyrec import` makes an item without one its own brand",
                  {"id": "s0000456", "type": "series"}, {"type": ["object", "null"]}),
        FieldSpec("position", "integer", False, "order within its parent", 3, {"type": ["integer", "null"]}),
        FieldSpec("genres", "list<string>", False, "genres (else the brand's); kept as spelled, shipped synonyms "
                  "folded", ["Sci-Fi", "Drama"], _LIST_JSON),
        FieldSpec("formats", "list<string>", False, "formats (else the brand's)", ["Audiobooks"], _LIST_JSON),
        FieldSpec("release_date", "timestamp", False, "first release; the age rules use it",
                  "2026-02-20T18:00:00Z", {**_TS_JSON, "type": ["string", "number", "null"]}),
        FieldSpec("duration", "duration", False, "seconds, ISO-8601 (PT28M) or a clock (0:28:00); weighs how "
                  "much of it a play covered", 1680, {"type": ["number", "string", "null"]}),
    ], record_type="episode"),
    "availability": Contract("availability", "json", "Availability window of an item",
                             _METADATA_LOCATION.replace("{stream}", "availability"),
                             _common("availability", "p0001234") + [
        FieldSpec("episode_id", "string", False, "the item it applies to (default: id)", "p0001234",
                  {"type": ["string", "null"]}),
        FieldSpec("available_from", "timestamp", True, "playable from (an item without any availability "
                  "record is playable from its release_date)", "2026-02-20T18:00:00Z", _TS_JSON),
        FieldSpec("available_until", "timestamp", False, "playable until (null: no end)", None,
                  {**_TS_JSON, "type": ["string", "number", "null"]}),
    ], record_type="availability"),
    "activity": Contract("activity", "arrow", "User activity (interactions), hourly Parquet",
                         "{source}/{activity_prefix}/date=YYYY-MM-DD/hour=HH/<any name>.parquet", [
        FieldSpec("event_id", "string", False, "unique per event, for de-duplication (absent: derived from "
                  "user, item, time and kind)", "e-9f2c41"),
        FieldSpec("user_id", "string", True, "who", "u0000042"),
        FieldSpec("item_id", "string", True, "what: an episode id of the catalogue", "p0001234"),
        FieldSpec("event_type", "string", True, "the event kind: one of ingest.activity.events (case folded)",
                  "play"),
        FieldSpec("event_ts", "timestamp[us, UTC]", True, "when (naive = UTC); the file's hour folder should "
                  "hold it", "2026-02-27T08:15:02Z"),
        FieldSpec("played_seconds", "float32", False, "how long: required for kinds whose duration is "
                  "required (play, complete), optional or not read for the others", 1520.0),
        FieldSpec("platform", "string", False, "the client (informational)", "ios"),
    ], arrow=RAW_ACTIVITY),
    "popular_now": Contract("popular_now", "arrow", "Popular-now lists per rail (built by ingest_cold_start "
                            "from activity; served to users without history)", "{lake}/cold_start/at=<run>/"
                            "cold_start.parquet", [
        FieldSpec("variant", "string", True, "the rail", "recommended_for_you"),
        FieldSpec("rank", "int32", True, "1-based position", 1),
        FieldSpec("item_id", "string", True, "the item", "p0001234"),
        FieldSpec("score", "float32", True, "plays / the rail's top plays, in (0, 1]; 0 for top-ups", 1.0),
    ], arrow=COLD_START),
}


def contract_markdown(contract: Contract) -> str:
    """The field table docs/data.md shows for a contract (the docs test checks the docs hold exactly this)."""
    lines = ["| field | type | required | meaning | example |", "|---|---|---|---|---|"]
    for f in contract.fields:
        example = "null" if f.example is None else (f.example if isinstance(f.example, str) else
                                                    __import__("json").dumps(f.example))
        lines.append(f"| `{f.name}` | {f.type} | {'yes' if f.required else 'no'} | {f.meaning.replace('|', '/')} "
                     f"| `{example}` |")
    return "\n".join(lines)
