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
