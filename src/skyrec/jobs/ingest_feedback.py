"""Job ``ingest_feedback``: drain the API's event stream into the lake, exactly once -> ``feedback``.

The API appends each accepted event (impression, click, play) to the Redis Stream
``{publish.key_prefix}:events`` on the serving Redis (one field ``e``: the event as JSON; see
``docs/experiments.md``). This job reads it through the consumer group ``ingest_feedback`` and commits the
entries it read as one output per run, ``feedback`` at the run's interval key:

1. **Retry after a commit.** If this run's output is committed already, the attempt before this one died
   between its commit and its acknowledgement: the ids the output lists are acknowledged (XACK) and nothing
   is written again.
2. **Read.** The consumer name is the job key (stable across the attempts of one run), so a retry first
   re-reads its own pending entries (``XREADGROUP ... 0``: what a killed attempt read but never committed);
   then it claims the pending entries of other consumers idle for ``claim_idle_seconds`` (``XAUTOCLAIM``: a
   run that died and was never retried); then it reads new entries (``>``) up to the stream's last id at
   the start of the run (a busy stream cannot keep one run reading forever) and at most ``max_events``.
   A claimed entry that a committed output already holds (its run died after the commit, before the
   acknowledgement, and was not retried) is acknowledged without being written again.
3. **Validate.** Entries that are not a valid event (another producer's version, a hand-written XADD) are
   quarantined with a reason; a second entry with an ``event_id`` already read in this run (a client's
   retried POST) is filtered (``duplicate_event_id``). ``in = committed + quarantined + filtered``.
4. **Gates, commit.** Error rate (quarantined / read, over at least 500 entries, ``max_error_rate``) and
   all-rejected; then one Parquet file of events (with their ``stream_id``), the quarantine, and
   ``_ids/stream_ids.parquet`` (every id consumed and its outcome) are committed; the manifest meta holds
   ``first_id``, ``last_id``, ``ids`` and the invariant.
5. **Acknowledge** every id consumed, only after the commit. A failed gate commits nothing and acknowledges
   nothing: the entries stay pending for the next attempt (or an override, ``--override error_rate``).

An interval with no events commits an empty output (an empty stream is not a rejected input).
Parameters (``--param``): ``claim_idle_seconds`` (600), ``batch`` (10000), ``max_events`` (5000000),
``max_error_rate`` (0.05). Not forceable: stream entries are consumed once, a forced re-run would replace
the committed events by others.
"""

from __future__ import annotations

import os
import re
import time
from collections.abc import Iterable
from pathlib import Path
from typing import Any

DATASET = "feedback"
GROUP = "ingest_feedback"  # the consumer group (skyrec.experiments.stream.GROUP)
FIELD = b"e"
# Fault injection for the exactly-once tests: hold (sleep, to be killed) at a point of the run.
HOLD_ENV = "SKYREC_INGEST_FEEDBACK_HOLD"          # after_read | after_commit
HOLD_FILE_ENV = "SKYREC_INGEST_FEEDBACK_HOLD_FILE"  # touched when the job reaches the point


def stream_key(config: Any) -> str:
    from skyrec.experiments.stream import stream_key as key

    return key(config.publish.key_prefix)


def schema() -> Any:
    import pyarrow as pa

    ts = pa.timestamp("us", tz="UTC")
    return pa.schema([("stream_id", pa.string()), ("event_id", pa.string()), ("type", pa.string()),
                      ("impression_id", pa.string()), ("user_id", pa.string()), ("rail", pa.string()),
                      ("experiment", pa.string()), ("arm", pa.string()), ("variant", pa.string()),
                      ("item_ids", pa.list_(pa.string())), ("ts", ts), ("duration_seconds", pa.float64()),
                      ("received_at", ts)])


class Invalid(ValueError):
    def __init__(self, reason: str, message: str) -> None:
        super().__init__(message)
        self.reason = reason


def validate(fields: dict[Any, Any]) -> dict[str, Any]:
    """One stream entry -> the event row, with the API's own model (``skyrec.experiments.events``); raises
    Invalid with a short reason (``not_json``, ``extra_fields``, ``invalid_<field>``, ...)."""
    from skyrec.experiments.events import parse_stream_entry

    try:
        event = parse_stream_entry(fields)
    except ValueError as exc:
        text = str(exc)
        code, _, detail = text.partition(": ")
        if code == "invalid_event":
            where = detail.split(":", 1)[0].split(".")[0] if ":" in detail else ""
            code = f"invalid_{re.sub(r'[^a-z0-9_]+', '_', where.lower()).strip('_') or 'event'}"
        raise Invalid(code, text) from None
    return event.model_dump()


def _id_key(stream_id: str) -> tuple[int, int]:
    ms, _, seq = stream_id.partition("-")
    return int(ms), int(seq or 0)


def _hold(point: str) -> None:
    if os.environ.get(HOLD_ENV) != point:
        return
    marker = os.environ.get(HOLD_FILE_ENV)
    if marker:
        Path(marker).write_text(f"{os.getpid()} {point}\n")
    while True:  # until killed
        time.sleep(0.2)


def _decode(entry_id: Any) -> str:
    return entry_id.decode() if isinstance(entry_id, bytes) else str(entry_id)


class Reader:
    """The consumer-group reads of one run (consumer = the job key)."""

    def __init__(self, r: Any, key: str, consumer: str, *, batch: int) -> None:
        self.r, self.key, self.consumer, self.batch = r, key, consumer, batch

    def ensure_group(self) -> None:
        from redis.exceptions import ResponseError

        try:
            self.r.xgroup_create(self.key, GROUP, id="0", mkstream=True)
        except ResponseError as exc:
            if "BUSYGROUP" not in str(exc):
                raise

    def own_pending(self) -> list[tuple[str, dict[bytes, bytes]]]:
        out: list[tuple[str, dict[bytes, bytes]]] = []
        last = "0"
        while True:
            resp = self.r.xreadgroup(GROUP, self.consumer, {self.key: last}, count=self.batch)
            entries = resp[0][1] if resp else []
            if not entries:
                return out
            for eid, fields in entries:
                out.append((_decode(eid), fields or {}))
            last = out[-1][0]

    def claim(self, min_idle_ms: int) -> tuple[list[tuple[str, dict[bytes, bytes]]], list[str]]:
        """Pending entries of other consumers idle >= min_idle_ms, now ours; and ids deleted while pending."""
        out: list[tuple[str, dict[bytes, bytes]]] = []
        deleted: list[str] = []
        start = "0-0"
        while True:
            resp = self.r.execute_command("XAUTOCLAIM", self.key, GROUP, self.consumer, min_idle_ms, start,
                                          "COUNT", self.batch)
            start = _decode(resp[0])
            for item in resp[1]:
                if item is None:
                    continue
                eid, flat = item
                fields = dict(zip(flat[::2], flat[1::2], strict=True)) if isinstance(flat, list) else (flat or {})
                out.append((_decode(eid), fields))
            if len(resp) > 2:
                deleted.extend(_decode(d) for d in resp[2])
            if start == "0-0":
                return out, deleted

    def new(self, until: str | None, limit: int) -> list[tuple[str, dict[bytes, bytes]]]:
        out: list[tuple[str, dict[bytes, bytes]]] = []
        if until is None:
            return out
        stop = _id_key(until)
        while len(out) < limit:
            resp = self.r.xreadgroup(GROUP, self.consumer, {self.key: ">"}, count=min(self.batch, limit - len(out)))
            entries = resp[0][1] if resp else []
            if not entries:
                break
            for eid, fields in entries:
                out.append((_decode(eid), fields or {}))
            if _id_key(out[-1][0]) >= stop:
                break
        return out

    def ack(self, ids: Iterable[str]) -> int:
        ids = list(ids)
        n = 0
        for i in range(0, len(ids), 10_000):
            n += int(self.r.xack(self.key, GROUP, *ids[i:i + 10_000]))
        return n


def committed_ids(lake: Any, manifest: Any) -> list[str]:
    """Every stream id a committed feedback output consumed (events, quarantined and filtered entries)."""
    import pyarrow.parquet as pq

    with lake.open(manifest, "stream_ids.parquet") as fh:
        return pq.read_table(fh, columns=["stream_id"])["stream_id"].to_pylist()


def already_committed(ctx: Any, ids: list[str]) -> set[str]:
    """Those of ``ids`` that a committed feedback output holds (newest outputs first, stopping at the first
    whose whole range is older than the oldest id asked about: outputs are committed in stream order)."""
    if not ids:
        return set()
    wanted = set(ids)
    oldest = min(_id_key(i) for i in ids)
    found: set[str] = set()
    for m in reversed(ctx.lake.history(ctx.config, DATASET)):
        last = m.meta.get("last_id")
        if not last:
            continue
        first = m.meta.get("first_id") or last
        if _id_key(last) < oldest:
            break
        if any(_id_key(first) <= _id_key(i) <= _id_key(last) for i in wanted):
            found |= wanted & set(committed_ids(ctx.lake, m))
    return found


def run(ctx: Any) -> dict[str, Any]:
    import pyarrow as pa
    import pyarrow.parquet as pq
    import redis

    from skyrec.data.lakeio import PARQUET_OPTIONS
    from skyrec.gates import all_rejected_gate, ingest_invariant
    from skyrec.jobs.base import BadInput
    from skyrec.jobs.ingest_activity import error_rate_result

    started = time.time()
    cfg = ctx.config
    if DATASET not in cfg.datasets:
        raise BadInput(f"datasets.{DATASET}: not declared in config (e.g. \"feedback/events/interval={{interval_key}}\")")
    if ctx.force:
        raise BadInput("ingest_feedback cannot be forced: stream entries are consumed once, a forced re-run would "
                       "replace the committed events by other ones")
    rel = ctx.path(DATASET)
    key = stream_key(cfg)
    batch = int(ctx.param("batch", "10000"))
    r = redis.Redis.from_url(cfg.serve.redis_url, socket_timeout=30)
    reader = Reader(r, key, ctx.run.job_key, batch=batch)
    existing = ctx.lake.manifest(rel)
    if existing is not None:  # the attempt before died between commit and acknowledgement
        ids = committed_ids(ctx.lake, existing)
        acked = reader.ack(ids)
        return {"outputs": [rel], "noop": True, "acked": acked, "ids": len(ids), "stream": key}
    reader.ensure_group()
    last_entry = r.xrevrange(key, count=1)
    until = _decode(last_entry[0][0]) if last_entry else None
    own = reader.own_pending()
    claimed, deleted = reader.claim(int(float(ctx.param("claim_idle_seconds", "600")) * 1000))
    known_there = already_committed(ctx, [i for i, _ in claimed])
    claimed_new = [(i, f) for i, f in claimed if i not in known_there]
    fresh = reader.new(until, max(0, int(ctx.param("max_events", "5000000")) - len(own) - len(claimed_new)))
    entries = sorted(own + claimed_new + fresh, key=lambda e: _id_key(e[0]))
    _hold("after_read")

    rows: list[dict[str, Any]] = []
    quarantine: dict[str, list[dict[str, Any]]] = {}
    filtered: dict[str, int] = {}
    outcome: list[tuple[str, str]] = []
    seen: set[str] = set()
    for eid, fields in entries:
        try:
            event = validate(fields)
        except Invalid as exc:
            raw = fields.get(FIELD, b"") if isinstance(fields, dict) else b""
            quarantine.setdefault(exc.reason, []).append(
                {"stream_id": eid, "reason": exc.reason, "error": str(exc),
                 "fields": {_decode(k): v.decode(errors="replace") for k, v in fields.items()} if fields else {},
                 "raw": raw.decode(errors="replace") if isinstance(raw, bytes) else str(raw)})
            outcome.append((eid, f"quarantined:{exc.reason}"))
            continue
        if event["event_id"] in seen:
            filtered["duplicate_event_id"] = filtered.get("duplicate_event_id", 0) + 1
            outcome.append((eid, "filtered:duplicate_event_id"))
            continue
        seen.add(event["event_id"])
        rows.append({"stream_id": eid, **event})
        outcome.append((eid, "committed"))
    n_bad = sum(len(v) for v in quarantine.values())
    invariant = ingest_invariant("stream entries", records_in=len(entries), committed=len(rows),
                                 quarantined={k: len(v) for k, v in quarantine.items()}, filtered=filtered)
    results = [all_rejected_gate(len(rows), n_bad),
               error_rate_result(n_bad, len(entries), float(ctx.param("max_error_rate", "0.05")))]
    for res in results:
        ctx.gate(res)  # a failed gate raises: nothing committed, nothing acknowledged

    with ctx.stage(DATASET, rel) as stage:
        table = pa.Table.from_pylist(rows, schema=schema())
        with stage.fs.open(stage.path("part-00000.parquet"), "wb") as fh:
            pq.write_table(table, fh, **PARQUET_OPTIONS)
        stage.add("part-00000.parquet", rows=table.num_rows)
        ids = pa.table({"stream_id": pa.array([i for i, _ in outcome], pa.string()),
                        "outcome": pa.array([o for _, o in outcome], pa.string())})
        with stage.fs.open(stage.path("stream_ids.parquet"), "wb") as fh:
            pq.write_table(ids, fh, **PARQUET_OPTIONS)
        stage.add("stream_ids.parquet")
        for reason, recs in sorted(quarantine.items()):
            stage.quarantine(reason, recs)
        meta = {"stream": key, "group": GROUP, "consumer": ctx.run.job_key,
                "first_id": entries[0][0] if entries else None, "last_id": entries[-1][0] if entries else None,
                "ids": len(entries), "own_pending": len(own), "claimed": len(claimed_new), "new": len(fresh),
                "claimed_already_committed": len(known_there), "deleted_while_pending": len(deleted),
                "rows_in": len(entries), "rows_out": len(rows), "quarantined": invariant["quarantined"],
                "filtered": invariant["filtered"], "invariant": {"entries": invariant},
                "gates": [g.as_dict() for g in results]}
        manifest = stage.commit(meta)
    _hold("after_commit")
    acked = reader.ack([i for i, _ in outcome] + sorted(known_there))
    summary: dict[str, Any] = {
        "outputs": [manifest.path], "stream": key, "read": len(entries), "committed": len(rows),
        "quarantined": invariant["quarantined"], "filtered": invariant["filtered"], "acked": acked,
        "claimed": len(claimed_new), "claimed_already_committed": len(known_there),
        "first_id": meta["first_id"], "last_id": meta["last_id"], "seconds": round(time.time() - started, 3)}
    if deleted:
        summary["alerts"] = [{"kind": "feedback_lost", "summary": (
            f"{len(deleted)} event(s) were trimmed from {key} (MAXLEN) while pending, before ingest could "
            "commit them: raise events.max_stream_length or run ingest_feedback more often"),
            "details": {"ids": deleted[:100]}}]
    return summary
