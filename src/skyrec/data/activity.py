"""Activity filtering on Arrow tables: the vectorised core of the activity ingest (no Beam here).

The Beam pipeline (``skyrec.pipelines.activity``) calls these on whole files / batches; they work on
columns, never per record. Every row that does not end up in a delta gets exactly one reason:

The event vocabulary is configuration (``ingest.activity.events``): each kind says whether its events carry
a duration (``required``, ``optional`` or ``none``); a kind without a duration needs no ``played_seconds``.
Files without an ``event_id`` column get one derived from the row (user, item, time, kind), so re-delivered
rows still de-duplicate.

- quarantined (bad input, counted and kept in ``_quarantine/<reason>.jsonl``):
  ``missing_field`` (null/empty event_id, user_id, item_id or event_ts), ``unknown_event_type`` (a kind
  not in the vocabulary),
  ``future_ts`` (after the interval end + ``future_tolerance_minutes``), ``too_old`` (before the interval
  start - ``past_limit_days``), ``unknown_item`` (not in the latest committed catalogue),
  ``invalid_played_seconds`` (a kind whose duration is ``required``: null, NaN, infinite or negative; a kind
  whose duration is ``optional``: a present value that is NaN, infinite or negative -- a bad measurement is
  not a short play), ``duplicate_event`` (an event id seen before in the interval); whole files (every row of the
  file, see ``skyrec.pipelines.activity``): ``corrupt_file``, ``missing_column_<name>``,
  ``bad_column_type_<name>``.
- filtered (irrelevant by design, only counted): ``irrelevant_event_type`` (e.g. pause, seek),
  ``short_play`` (a kind whose duration is ``required``: 0 <= played_seconds < ``min_play_seconds``), ``replaced_by_replay`` (a row whose event id
  an operator replayed a fixed version of, see ``docs/ingest.md``).
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from skyrec.data.schemas import ACTIVITY, RAW_ACTIVITY, TS

KNOWN_EVENT_TYPES = ("play", "complete", "pause", "resume", "seek", "stop", "skip")  # the shipped vocabulary
DEFAULT_DURATIONS = {"play": "required", "complete": "required"}  # the others: optional
SHIPPED_KINDS = tuple((k, DEFAULT_DURATIONS.get(k, "optional")) for k in KNOWN_EVENT_TYPES)
REQUIRED_COLUMNS = ("user_id", "item_id", "event_type", "event_ts")  # event_id derived, played_seconds per kind
QUARANTINE_REASONS = ("missing_field", "unknown_event_type", "future_ts", "too_old", "invalid_played_seconds",
                      "unknown_item", "duplicate_event")
FILTER_REASONS = ("irrelevant_event_type", "short_play")
REPLACED = "replaced_by_replay"  # filter reason of original rows superseded by a replayed fixed version
# Valid rows carry event_id (for de-duplication) and ``drop`` (the filter reason, null = keep) until the
# interval is complete; the delta is then written with schema ACTIVITY.
KEPT = pa.schema([("event_id", pa.string()), *[(f.name, f.type) for f in ACTIVITY], ("drop", pa.string())])


class SchemaProblem(ValueError):
    """A file whose schema cannot be read as RAW_ACTIVITY; ``reason`` names the column."""

    def __init__(self, reason: str, message: str) -> None:
        super().__init__(message)
        self.reason = reason


@dataclass(frozen=True)
class ActivityRules:
    event_types: tuple[str, ...]  # kinds kept
    min_play_seconds: float
    future_tolerance_minutes: float
    past_limit_days: int
    # the vocabulary: (kind, duration) pairs, duration one of required | optional | none
    kinds: tuple[tuple[str, str], ...] = SHIPPED_KINDS

    @classmethod
    def from_config(cls, config: Any) -> ActivityRules:
        a = config.ingest.activity
        return cls(tuple(t.lower() for t in a.event_types), float(a.min_play_seconds),
                   float(a.future_tolerance_minutes), int(a.past_limit_days),
                   tuple((k, v.duration) for k, v in a.events.items()))

    @classmethod
    def from_dict(cls, r: dict[str, Any]) -> ActivityRules:
        """From the plain dict the pipeline's Spec carries (``kinds`` optional: the shipped vocabulary)."""
        kinds = r.get("kinds")
        return cls(tuple(t.lower() for t in r["event_types"]), float(r["min_play_seconds"]),
                   float(r["future_tolerance_minutes"]), int(r["past_limit_days"]),
                   tuple((k, v) for k, v in kinds.items()) if kinds else SHIPPED_KINDS)

    def as_dict(self) -> dict[str, Any]:
        return {"event_types": list(self.event_types), "min_play_seconds": self.min_play_seconds,
                "future_tolerance_minutes": self.future_tolerance_minutes, "past_limit_days": self.past_limit_days,
                "kinds": dict(self.kinds)}

    def kinds_with(self, *durations: str) -> list[str]:
        return [k for k, d in self.kinds if d in durations]

    def window(self, start: dt.datetime, end: dt.datetime) -> tuple[dt.datetime, dt.datetime]:
        """Accepted event times for the interval [start, end): late events are fine, the far past is not."""
        return (start - dt.timedelta(days=self.past_limit_days),
                end + dt.timedelta(minutes=self.future_tolerance_minutes))


@dataclass
class FilterResult:
    valid: pa.Table  # schema KEPT: rows that passed validation; ``drop`` says which the filters remove
    quarantined: dict[str, pa.Table] = field(default_factory=dict)
    rows_in: int = 0


def conform(table: pa.Table) -> tuple[pa.Table, list[str]]:
    """Check and cast a raw file's table to the RAW_ACTIVITY columns. Returns (table, extra columns).

    Raises SchemaProblem for a missing required column (``missing_column_<name>``) or a column that
    cannot be cast (``bad_column_type_<name>``). Extra columns are tolerated (and reported by the caller).
    """
    names = set(table.column_names)
    if "event_id" not in names and _has_required(names):
        table = table.append_column("event_id", derived_event_ids(table))
        names.add("event_id")
    for col in REQUIRED_COLUMNS:
        if col not in names:
            raise SchemaProblem(f"missing_column_{col}", f"required column {col!r} is missing "
                                f"(file has {sorted(names)})")
    extra = sorted(names - set(RAW_ACTIVITY.names))
    arrays = []
    for f in RAW_ACTIVITY:
        if f.name not in names:
            arrays.append(pa.nulls(table.num_rows, f.type))
            continue
        col = table.column(f.name)
        if col.type != f.type:
            try:
                if pa.types.is_timestamp(col.type) and col.type.tz is None and pa.types.is_timestamp(f.type):
                    col = pc.assume_timezone(col, "UTC")  # naive event times are UTC by contract
                col = col.cast(f.type)
            except (pa.ArrowInvalid, pa.ArrowNotImplementedError, pa.ArrowTypeError) as exc:
                raise SchemaProblem(f"bad_column_type_{f.name}",
                                    f"column {f.name!r} has type {col.type}, cannot read as {f.type}: {exc}") from None
        arrays.append(col)
    return pa.Table.from_arrays(arrays, schema=RAW_ACTIVITY), extra


def _has_required(names: set[str]) -> bool:
    return all(c in names for c in REQUIRED_COLUMNS)


def derived_event_ids(table: pa.Table) -> pa.ChunkedArray:
    """Event ids for a file without them: ``user|item|time in microseconds|kind`` of each row (null when a
    part is missing or unreadable -- the row is then quarantined ``missing_field`` like any id-less event)."""
    parts = []
    for name in ("user_id", "item_id", "event_ts", "event_type"):
        col = table.column(name)
        try:
            if pa.types.is_timestamp(col.type):
                col = col.cast(pa.int64())
            col = col.cast(pa.string())
        except (pa.ArrowInvalid, pa.ArrowNotImplementedError, pa.ArrowTypeError):
            col = pa.chunked_array([pa.nulls(table.num_rows, pa.string())])
        parts.append(col)
    return pc.binary_join_element_wise(*parts, "|")


def _np(mask: Any) -> np.ndarray:
    if isinstance(mask, pa.ChunkedArray):
        mask = mask.combine_chunks() if mask.num_chunks else pa.array([], pa.bool_())
    return mask.to_numpy(zero_copy_only=False).astype(bool, copy=False)


def invalid_seconds(col: Any) -> np.ndarray:
    """Rows whose played_seconds is not a duration: null, NaN, +-inf or negative."""
    finite = pc.is_finite(col).fill_null(False)
    return ~_np(finite) | _np(pc.less(col, pa.scalar(0, col.type)).fill_null(False))


def filter_activity(table: pa.Table, *, rules: ActivityRules, known_items: pa.Array | None,
                    start: dt.datetime, end: dt.datetime) -> FilterResult:
    """Split a RAW_ACTIVITY table into valid rows (schema KEPT, with their filter reason) and quarantined rows.

    Filtering ("irrelevant by design") is only marked here, not applied, so that duplicates are detected
    over every valid event of the interval first (``dedupe``), then filters apply (``apply_filters``).
    """
    n = table.num_rows
    remaining = np.ones(n, dtype=bool)
    drop = np.zeros(n, dtype=np.int64)  # 0 = keep, k = FILTER_REASONS[k - 1]
    result = FilterResult(valid=KEPT.empty_table(), rows_in=n)
    lo, hi = rules.window(start, end)
    etype = pc.utf8_lower(pc.utf8_trim_whitespace(table.column("event_type")))
    ts = table.column("event_ts")

    def blank(col: str) -> np.ndarray:
        c = table.column(col)
        null = _np(pc.is_null(c))
        if pa.types.is_string(c.type):
            null |= _np(pc.equal(pc.utf8_trim_whitespace(c), "").fill_null(True))
        return null

    def of_kinds(*durations: str) -> np.ndarray:
        kinds = rules.kinds_with(*durations)
        if not kinds:
            return np.zeros(n, dtype=bool)
        return _np(pc.is_in(etype, value_set=pa.array(kinds, pa.string())).fill_null(False))

    secs = table.column("played_seconds")
    bad_secs = invalid_seconds(secs)
    present = ~_np(pc.is_null(secs))
    needs, may, without = of_kinds("required"), of_kinds("optional"), of_kinds("none")
    checks: list[tuple[str, np.ndarray, bool]] = [
        ("missing_field", blank("event_id") | blank("user_id") | blank("item_id") | _np(pc.is_null(ts)), True),
        ("unknown_event_type", ~_np(pc.is_in(etype, value_set=pa.array([k for k, _ in rules.kinds], pa.string()))
                                    .fill_null(False)), True),
        ("future_ts", _np(pc.greater(ts, pa.scalar(hi, TS)).fill_null(False)), True),
        ("too_old", _np(pc.less(ts, pa.scalar(lo, TS)).fill_null(False)), True),
        ("invalid_played_seconds", bad_secs & (needs | (may & present)), True),
    ]
    if known_items is not None:
        checks.append(("unknown_item", ~_np(pc.is_in(table.column("item_id"), value_set=known_items)
                                            .fill_null(False)), True))
    checks += [
        ("irrelevant_event_type", ~_np(pc.is_in(etype, value_set=pa.array(rules.event_types)).fill_null(False)),
         False),
        ("short_play", needs & _np(pc.less(secs, pa.scalar(rules.min_play_seconds, pa.float32())).fill_null(False)),
         False),
    ]
    unmarked = np.ones(n, dtype=bool)
    for reason, bad, quarantine in checks:
        if quarantine:
            hit = bad & remaining
            if hit.any():
                result.quarantined[reason] = table.filter(pa.array(hit))
                remaining &= ~hit
        else:
            hit = bad & remaining & unmarked
            drop[hit] = FILTER_REASONS.index(reason) + 1
            unmarked &= ~hit
    mask = pa.array(remaining)
    valid = table.filter(mask)
    result.valid = pa.Table.from_arrays(
        [valid.column("event_id"), valid.column("user_id"), valid.column("item_id"),
         pc.utf8_lower(pc.utf8_trim_whitespace(valid.column("event_type"))), valid.column("event_ts"),
         pc.if_else(pa.array(without[remaining]), pa.scalar(None, pa.float32()), valid.column("played_seconds"))
         if without.any() else valid.column("played_seconds"),
         pa.array([None, *FILTER_REASONS], pa.string()).take(pa.array(drop[remaining]))], schema=KEPT)
    return result


def apply_filters(unique: pa.Table) -> tuple[pa.Table, dict[str, int]]:
    """(rows to keep, counts of rows filtered by reason) from de-duplicated valid rows."""
    drop = unique.column("drop")
    counts = {}
    if drop.null_count < len(drop):
        vc = pc.value_counts(drop.combine_chunks() if isinstance(drop, pa.ChunkedArray) else drop)
        counts = {v["values"].as_py(): v["counts"].as_py() for v in vc if v["values"].is_valid}
    return unique.filter(pc.is_null(drop)), dict(sorted(counts.items()))


def dedupe(kept: pa.Table) -> tuple[pa.Table, pa.Table]:
    """(unique rows, duplicates): the first occurrence of an event id (by event time, then user/item) wins."""
    if kept.num_rows == 0:
        return kept, kept.slice(0, 0)
    from skyrec.data.arrowops import first_per_key

    t, first = first_per_key(kept, "event_id", [("event_ts", "ascending"), ("user_id", "ascending"),
                                                ("item_id", "ascending")])
    return t.filter(pa.array(first)), t.filter(pa.array(~first))


def finalise(unique: pa.Table) -> pa.Table:
    """The delta: schema ACTIVITY, sorted deterministically (user, time, item, type, seconds)."""
    out = unique.select(ACTIVITY.names).cast(ACTIVITY)
    return out.sort_by([("user_id", "ascending"), ("event_ts", "ascending"), ("item_id", "ascending"),
                        ("event_type", "ascending"), ("played_seconds", "ascending")])
