"""Job ``build_catalogue``: merge the metadata streams into an up-to-date catalogue snapshot, incrementally.

Inputs (committed only): the previous catalogue snapshot (its merged entity tables) and every
``raw_metadata`` sync committed after the one it consumed, up to this run. Records are parsed and
validated in bounded chunks (``chunk`` param, default 50,000 lines) and folded into per-entity "latest
version" tables -- latest ``updated`` wins, then the higher ``seq``; deletions are kept as tombstones so
a stale re-delivery can never resurrect a withdrawn episode. Genres and formats are normalised (case,
synonyms), episodes inherit brand genres/formats, brand/series/masterbrand are resolved through the
programmes stream, availability comes from the availability stream. Parsing is type-strict: records
failing validation are quarantined by reason, naming the field (``not_an_object``, ``missing_id``,
``unknown_type``, ``bad_timestamp`` (unparseable or out of range), ``bad_boolean`` (e.g. ``"deleted":
"false"``), ``bad_number``, ``bad_string``, ``bad_object``, ``bad_duration``, ``bad_genres``,
``missing_title``, ``malformed_line``; ``unresolved_parent`` for episodes whose series/brand is unknown);
one bad record never fails the build.

Invariant (meta ``invariant``): records read = applied + quarantined (by reason) + filtered
(``replaced_by_replay``: a quarantined record whose fixed version was replayed, see ``docs/ingest.md``).
Replayed records (``skyrec quarantine replay catalogue RUN_KEY --file FIXED.jsonl``) are read after the
syncs from the committed replay inputs of this output.

Output ``catalogue``::

    catalogue.parquet      schema CATALOGUE, one row per live (non-deleted, resolvable) episode, by item_id
    brands.parquet series.parquet episodes.parquet availability.parquet
                           the merged entity tables (latest version per id, incl. tombstones): the next
                           build's baseline
"""

from __future__ import annotations

import json
import time
from collections.abc import Iterator
from typing import Any

DATASET = "catalogue"
ENTITY_TYPES = {"brand": "brands", "series": "series", "episode": "episodes", "availability": "availability"}


def _schemas() -> dict[str, Any]:
    import pyarrow as pa

    from skyrec.data.schemas import TS

    common = [("id", pa.string()), ("updated_ts", TS), ("seq", pa.int32()), ("key", pa.string()),
              ("deleted", pa.bool_())]
    lst = pa.list_(pa.string())
    return {
        "brands": pa.schema(common + [("title", pa.string()), ("masterbrand", pa.string()), ("genres", lst),
                                      ("formats", lst)]),
        "series": pa.schema(common + [("brand_id", pa.string()), ("title", pa.string()), ("position", pa.int32())]),
        "episodes": pa.schema(common + [("title", pa.string()), ("parent_id", pa.string()),
                                        ("parent_type", pa.string()), ("position", pa.int32()), ("genres", lst),
                                        ("formats", lst), ("release_ts", TS), ("duration_seconds", pa.int32())]),
        "availability": pa.schema(common + [("available_from", TS), ("available_until", TS)]),
    }


INT32 = (-(2 ** 31), 2 ** 31 - 1)


class _Invalid(ValueError):
    def __init__(self, reason: str, message: str, field: str | None = None) -> None:
        super().__init__(message)
        self.reason = reason
        self.field = field


def _parse_record(rec: Any) -> tuple[str, dict[str, Any]]:
    """(entity table, row) for one raw record, or raise _Invalid(reason, field).

    Type-strict: a field holds the JSON type its contract says or is absent/null -- ``"deleted": "false"``
    (a string) is not a boolean, ``"position": "3"`` not a number; a value out of range (a timestamp beyond
    year 9999, a position beyond int32) is invalid. Such a record is quarantined naming the field, never
    coerced into a different meaning and never allowed to fail the whole build.
    """
    from skyrec.data.catalogue import (
        normalise_format,
        normalise_genre,
        normalise_list,
        parse_duration,
        parse_ts,
    )

    if not isinstance(rec, dict):
        raise _Invalid("not_an_object", f"record is {type(rec).__name__}")
    rid = rec.get("id")
    if not isinstance(rid, str) or not rid.strip():
        raise _Invalid("missing_id", "record has no string 'id'", "id")
    rtype = rec.get("type")
    table = ENTITY_TYPES.get(rtype) if isinstance(rtype, str) else None
    if table is None:
        raise _Invalid("unknown_type", f"unknown record type {rtype!r}", "type")

    def ts(name: str, *, required: bool = True) -> Any:
        value = rec.get(name)
        if value is None and not required:
            return None
        try:
            return parse_ts(value)
        except ValueError as exc:
            raise _Invalid("bad_timestamp", f"{name}: {exc}", name) from None

    def boolean(name: str) -> bool:
        value = rec.get(name)
        if value is None:
            return False
        if not isinstance(value, bool):
            raise _Invalid("bad_boolean", f"{name}: expected true or false, got {value!r} "
                           f"({type(value).__name__})", name)
        return value

    def string(name: str, *, source: dict[str, Any] | None = None) -> str | None:
        value = (source if source is not None else rec).get(name)
        if value is None:
            return None
        if not isinstance(value, str):
            raise _Invalid("bad_string", f"{name}: expected a string, got {value!r} ({type(value).__name__})",
                           name)
        return value.strip() or None

    def integer(name: str) -> int | None:
        value = rec.get(name)
        if value is None:
            return None
        if isinstance(value, float) and value.is_integer():
            value = int(value)
        if isinstance(value, bool) or not isinstance(value, int):
            raise _Invalid("bad_number", f"{name}: expected an integer, got {value!r} ({type(value).__name__})",
                           name)
        if not INT32[0] <= value <= INT32[1]:
            raise _Invalid("bad_number", f"{name}: {value} out of range", name)
        return value

    def obj(name: str) -> dict[str, Any]:
        value = rec.get(name)
        if value is None:
            return {}
        if not isinstance(value, dict):
            raise _Invalid("bad_object", f"{name}: expected an object, got {type(value).__name__}", name)
        return value

    row: dict[str, Any] = {"id": rid.strip(), "updated_ts": ts("updated"), "deleted": boolean("deleted")}
    if row["deleted"]:
        return table, row

    def lists(name: str, fn: Any) -> list[str] | None:
        if name not in rec or rec[name] is None:
            return None
        value = rec[name]
        if isinstance(value, list) and not all(isinstance(v, str) for v in value):
            raise _Invalid("bad_genres", f"{name}: expected a list of strings, got {value!r}", name)
        try:
            return normalise_list(value, fn)
        except ValueError as exc:
            raise _Invalid("bad_genres", f"{name}: {exc}", name) from None

    def title() -> str:
        t = rec.get("title")
        if not isinstance(t, str) or not t.strip():
            raise _Invalid("missing_title", f"{rtype} {rid} has no title", "title")
        return t.strip()

    if table == "brands":
        mb = rec.get("masterbrand")
        if isinstance(mb, dict):
            mb_name = string("name", source=mb) or string("id", source=mb)
        else:
            mb_name = string("masterbrand")
        row.update(title=title(), masterbrand=mb_name,
                   genres=lists("genres", normalise_genre) or [], formats=lists("formats", normalise_format) or [])
    elif table == "series":
        row.update(brand_id=string("brand_id"), title=title(), position=integer("position"))
    elif table == "episodes":
        parent = obj("parent")
        try:
            duration = parse_duration(rec.get("duration")) if rec.get("duration") is not None else None
        except ValueError as exc:
            raise _Invalid("bad_duration", f"duration: {exc}", "duration") from None
        series_id, brand_id = string("series_id"), string("brand_id")
        parent_id, parent_type = string("id", source=parent), string("type", source=parent)
        row.update(title=title(), parent_id=parent_id or series_id or brand_id,
                   parent_type=parent_type or ("series" if series_id else "brand"),
                   position=integer("position"), genres=lists("genres", normalise_genre),
                   formats=lists("formats", normalise_format), release_ts=ts("release_date", required=False),
                   duration_seconds=duration)
    else:
        row["id"] = string("episode_id") or rid.strip()
        row.update(available_from=ts("available_from"), available_until=ts("available_until", required=False))
        if row["available_until"] is not None and row["available_until"] <= row["available_from"]:
            raise _Invalid("bad_timestamp", "available_until is not after available_from", "available_until")
    return table, row


def _latest(table: Any) -> Any:
    """One row per id: the latest ``updated_ts``, then the highest ``seq``, then the last key."""
    import pyarrow as pa

    if table.num_rows == 0:
        return table
    from skyrec.data.arrowops import first_per_key

    t, first = first_per_key(table, "id", [("updated_ts", "descending"), ("seq", "descending"),
                                           ("key", "descending")])
    return t.filter(pa.array(first))


def _iter_lines(lake: Any, manifest: Any) -> Iterator[tuple[str, bytes]]:
    for f in sorted(manifest.files, key=lambda e: e.path.split("/", 2)[-1]):
        name = f.path.split("/", 2)[-1]
        if not (name.startswith("records/") and name.endswith(".jsonl")):
            continue
        with lake.fs.open(lake.abspath(f"{manifest.path}/{f.path}"), "rb") as fh:
            for line in fh:
                if line.strip():
                    yield manifest.path, line


def _resolve(entities: dict[str, Any]) -> tuple[Any, list[dict[str, Any]]]:
    """Join the live entities into CATALOGUE rows; returns (table, unresolved episodes)."""
    import numpy as np
    import pyarrow as pa
    import pyarrow.compute as pc

    from skyrec.data.schemas import CATALOGUE, TS

    def live(t: Any) -> Any:
        return t.filter(pc.invert(t.column("deleted").fill_null(False)))

    brands, series, episodes, avail = (live(entities[k]) for k in ("brands", "series", "episodes", "availability"))
    is_series = pc.equal(episodes.column("parent_type"), "series").fill_null(False)
    s_idx = pc.index_in(episodes.column("parent_id"), value_set=series.column("id"))
    brand_via_series = series.column("brand_id").take(s_idx.fill_null(0)) if series.num_rows else \
        pa.nulls(episodes.num_rows, pa.string())
    brand_id = pc.if_else(is_series, pc.if_else(pc.is_null(s_idx), pa.scalar(None, pa.string()), brand_via_series),
                          episodes.column("parent_id"))
    series_id = pc.if_else(pc.and_(is_series, pc.is_valid(s_idx)), episodes.column("parent_id"),
                           pa.scalar(None, pa.string()))
    b_idx = pc.index_in(brand_id, value_set=brands.column("id"))
    ok = pc.is_valid(b_idx)
    if isinstance(ok, pa.ChunkedArray):
        ok = ok.combine_chunks()
    ok_np = ok.to_numpy(zero_copy_only=False)
    bad = episodes.filter(pc.invert(ok))
    unresolved = [{"id": i, "parent_id": p, "parent_type": t, "reason": "unresolved_parent"}
                  for i, p, t in zip(bad.column("id").to_pylist(), bad.column("parent_id").to_pylist(),
                                     bad.column("parent_type").to_pylist(), strict=True)]
    keep = np.flatnonzero(ok_np)
    ep = episodes.take(pa.array(keep))
    bi = b_idx.take(pa.array(keep)) if len(keep) else pa.array([], pa.int32())
    b = brands.take(bi)
    if series.num_rows:
        si = s_idx.take(pa.array(keep))
        s_updated = series.column("updated_ts").take(si.fill_null(0))
        s_updated = pc.if_else(pc.is_null(si), pa.scalar(None, TS), s_updated)
    else:
        s_updated = pa.nulls(len(keep), TS)
    a_idx = pc.index_in(ep.column("id"), value_set=avail.column("id"))
    a_has = pc.is_valid(a_idx)
    a_take = a_idx.fill_null(0)
    if avail.num_rows:
        a_from = pc.if_else(a_has, avail.column("available_from").take(a_take), ep.column("release_ts"))
        a_until = pc.if_else(a_has, avail.column("available_until").take(a_take), pa.scalar(None, TS))
        a_upd = pc.if_else(a_has, avail.column("updated_ts").take(a_take), pa.scalar(None, TS))
    else:
        a_from, a_until, a_upd = ep.column("release_ts"), pa.nulls(len(keep), TS), pa.nulls(len(keep), TS)
    as_int = [pc.cast(c, pa.int64()) for c in (ep.column("updated_ts"), b.column("updated_ts"), s_updated, a_upd)]
    updated = pc.cast(pc.max_element_wise(*as_int, skip_nulls=True), TS)
    out = pa.table({
        "item_id": ep.column("id"), "title": ep.column("title"),
        "brand_id": brand_id.take(pa.array(keep)) if len(keep) else pa.array([], pa.string()),
        "brand_title": b.column("title"),
        "series_id": series_id.take(pa.array(keep)) if len(keep) else pa.array([], pa.string()),
        "masterbrand": b.column("masterbrand"),
        "genres": pc.coalesce(ep.column("genres"), b.column("genres")),
        "formats": pc.coalesce(ep.column("formats"), b.column("formats")),
        "release_ts": ep.column("release_ts"), "duration_seconds": ep.column("duration_seconds"),
        "available_from": a_from, "available_until": a_until, "updated_ts": updated,
    })
    return out.cast(CATALOGUE).sort_by("item_id"), unresolved


def _field_counts(bad: dict[str, list[dict[str, Any]]]) -> dict[str, int]:
    out: dict[str, int] = {}
    for records in bad.values():
        for r in records:
            if r.get("field"):
                out[r["field"]] = out.get(r["field"], 0) + 1
    return dict(sorted(out.items()))


def run(ctx: Any) -> dict[str, Any]:
    import pyarrow as pa
    import pyarrow.compute as pc

    from skyrec.data.lakeio import read_parquet, write_parquet
    from skyrec.gates import empty_gate, ingest_invariant
    from skyrec.jobs.base import NotReady
    from skyrec.jobs.ingest_activity import error_rate_result

    cfg = ctx.config
    rel = ctx.path(DATASET)
    done = ctx.committed(DATASET)
    if done is not None:
        return {"outputs": [done.path], "noop": True, "items": done.meta.get("items", done.rows)}
    started = time.time()
    chunk = max(1000, int(ctx.param("chunk", "50000")))
    schemas = _schemas()

    prev_hist = ctx.lake.history(cfg, DATASET, before=rel, limit=1)
    previous = prev_hist[-1] if prev_hist else None
    last_sync = previous.meta.get("last_sync") if previous else None
    raw_rel = ctx.path("raw_metadata")
    syncs = [m for m in ctx.lake.history(cfg, "raw_metadata")
             if m.path <= raw_rel and (last_sync is None or m.path > last_sync)]
    if previous is None and not syncs:
        raise NotReady(f"build_catalogue: no committed raw_metadata sync at or before {raw_rel} and no previous "
                       "catalogue (run sync_metadata first)")

    if previous is not None:
        entities = {name: read_parquet(ctx.lake, previous, f"{name}.parquet").cast(schemas[name])
                    for name in schemas}
    else:
        entities = {name: schemas[name].empty_table() for name in schemas}

    bad: dict[str, list[dict[str, Any]]] = {}
    records_read = applied = 0
    pending: dict[str, list[dict[str, Any]]] = {name: [] for name in schemas}

    def fold() -> None:
        nonlocal applied
        for name, rows in pending.items():
            if not rows:
                continue
            try:
                new = pa.Table.from_pylist(rows, schema=schemas[name])
            except (pa.ArrowInvalid, pa.ArrowTypeError, OverflowError, TypeError, ValueError):
                # a value the parser let through that Arrow cannot hold: find it, quarantine only that record
                good = []
                for row in rows:
                    try:
                        pa.Table.from_pylist([row], schema=schemas[name])
                        good.append(row)
                    except (pa.ArrowInvalid, pa.ArrowTypeError, OverflowError, TypeError, ValueError) as exc:
                        applied -= 1
                        bad.setdefault("unconvertible", []).append(
                            {"key": row.get("key"), "error": f"{type(exc).__name__}: {exc}", "record": row})
                new = pa.Table.from_pylist(good, schema=schemas[name])
            entities[name] = _latest(pa.concat_tables([entities[name], new]))
            rows.clear()

    def lines() -> Iterator[tuple[str, bytes]]:
        for manifest in syncs:
            yield from _iter_lines(ctx.lake, manifest)
        for manifest in replays:
            yield from _iter_lines(ctx.lake, manifest)

    from skyrec.data.source import replay_inputs

    replays = replay_inputs(ctx.lake, rel)
    replayed_keys: set[str] = set()
    n_pending = n_replayed = 0
    for sync_path, line in lines():
        records_read += 1
        replayed = sync_path.startswith("_replay/")
        n_replayed += replayed
        try:
            wrapper = json.loads(line)
            key, seq, rec = wrapper["key"], wrapper.get("seq", 0), wrapper["record"]
            if not isinstance(key, str):
                raise TypeError(f"'key' is {type(key).__name__}, expected a string")
            if isinstance(seq, bool) or not isinstance(seq, int) or not INT32[0] <= seq <= INT32[1]:
                raise ValueError(f"'seq' {seq!r} is not an integer in range")
        except (json.JSONDecodeError, KeyError, TypeError, ValueError) as exc:
            bad.setdefault("malformed_line", []).append({"sync": sync_path, "error": str(exc),
                                                         "line": line[:2048].decode("utf-8", "replace")})
            continue
        if replayed:
            replayed_keys.add(key)
        try:
            table, row = _parse_record(rec)
        except _Invalid as exc:
            bad.setdefault(exc.reason, []).append({"key": key, "field": exc.field, "error": str(exc),
                                                   "record": rec, **({"replayed": True} if replayed else {})})
            continue
        row.update(seq=seq, key=key)
        pending[table].append(row)
        applied += 1
        n_pending += 1
        if n_pending >= chunk:
            fold()
            n_pending = 0
    fold()
    # a quarantined record whose key was replayed (fixed) is superseded: counted, not kept as an error
    replaced = 0
    if replayed_keys:
        for reason in list(bad):
            keep = [r for r in bad[reason] if r.get("replayed") or r.get("key") not in replayed_keys]
            replaced += len(bad[reason]) - len(keep)
            bad[reason] = keep
            if not keep:
                del bad[reason]

    catalogue, unresolved = _resolve(entities)
    n_bad = sum(len(v) for v in bad.values())
    # the gates before staging: nothing is written for a catalogue that cannot be committed
    ctx.gate(error_rate_result(n_bad, records_read - replaced, cfg.ingest.metadata.max_error_rate))
    ctx.gate(empty_gate(catalogue.num_rows, name="empty_catalogue", what="programmes in the catalogue",
                        hint=f"{records_read} metadata records read, {n_bad} quarantined, "
                             f"{len(unresolved)} without their parent"))
    with ctx.stage(DATASET) as stage:
        for reason, records in sorted(bad.items()):
            stage.quarantine(reason, records)
        stage.quarantine("unresolved_parent", unresolved)
        write_parquet(stage, "catalogue.parquet", catalogue)
        for name, table in entities.items():
            write_parquet(stage, f"{name}.parquet", table.sort_by("id"))
        deleted = int(pc.sum(entities["episodes"].column("deleted")).as_py() or 0)
        invariant = {"records": ingest_invariant(
            "records", records_in=records_read, committed=applied,
            quarantined={k: len(v) for k, v in bad.items()}, filtered={"replaced_by_replay": replaced})}
        meta = {"invariant": invariant, "replay_inputs": [m.path for m in replays], "replayed": n_replayed,
                "invalid_fields": _field_counts(bad), "previous": previous.path if previous else None, "raw_syncs": [m.path for m in syncs],
                "last_sync": syncs[-1].path if syncs else last_sync, "records_read": records_read,
                "records_applied": applied, "invalid": {k: len(v) for k, v in sorted(bad.items())},
                "unresolved": len(unresolved), "items": catalogue.num_rows, "deleted_episodes": deleted,
                "brands": entities["brands"].num_rows, "series": entities["series"].num_rows,
                "seconds": round(time.time() - started, 3), "gates": [g.as_dict() for g in ctx.gate_results]}
        manifest = stage.commit(meta)
    return {"outputs": [manifest.path], "items": catalogue.num_rows, "records_read": records_read,
            "syncs": len(syncs), "invalid": meta["invalid"], "unresolved": len(unresolved)}


def replay(config: Any, run_key: str, records: str, *, overrides: tuple[str, ...] = ()) -> tuple[int, dict[str, Any]]:
    """Replay fixed metadata records into the catalogue of run ``run_key`` (``YYYYMMDDTHHMMSS``).

    ``records`` is JSON lines of ``{"key": ..., "record": {...}}`` (the quarantine's own format, fixed; other
    keys are ignored). They are committed as a replay input of that catalogue output, then this job runs for
    the run, forced: a new revision through the commit protocol. A quarantined record with a replayed key is
    counted as filtered ``replaced_by_replay``. Returns (exit code, payload).
    """
    import datetime as dt

    from skyrec.data.source import add_replay_input
    from skyrec.jobs.base import EXIT_BAD_INPUT, RunInfo, execute
    from skyrec.storage import Lake, Producer

    try:
        logical = dt.datetime.strptime(run_key, "%Y%m%dT%H%M%S").replace(tzinfo=dt.UTC)
    except ValueError:
        return EXIT_BAD_INPUT, {"status": "failed", "error": f"run key {run_key!r} is not YYYYMMDDTHHMMSS"}
    lines = []
    with open(records, "rb") as fh:
        for n, raw in enumerate(fh, 1):
            if not raw.strip():
                continue
            try:
                rec = json.loads(raw)
            except json.JSONDecodeError as exc:
                return EXIT_BAD_INPUT, {"status": "failed", "error": f"{records}:{n}: not JSON: {exc}"}
            if not isinstance(rec, dict) or not isinstance(rec.get("key"), str) or "record" not in rec:
                return EXIT_BAD_INPUT, {"status": "failed",
                                        "error": f"{records}:{n}: expected {{\"key\": ..., \"record\": ...}}"}
            seq = rec.get("seq", 0)
            lines.append(json.dumps({"key": rec["key"], "seq": seq if isinstance(seq, int) else 0,
                                     "record": rec["record"]}, separators=(",", ":")) + "\n")
    if not lines:
        return EXIT_BAD_INPUT, {"status": "failed", "error": f"{records}: no records to replay"}
    lake = Lake.from_config(config)
    rel = config.dataset_path(DATASET, run_key=run_key)
    token = f"replay-{run_key}-{int(time.time())}"
    manifest = add_replay_input(lake, rel, Producer(dag_id="quarantine_replay", run_id=token, task_id=DATASET),
                                {"records/replay.jsonl": "".join(lines).encode()},
                                {"rows": len(lines), "from_file": records})
    run = RunInfo(dag_id="quarantine_replay", run_id=token, task_id="build_catalogue", logical_date=logical)
    code, payload = execute("build_catalogue", config=config, run=run, force=True, overrides=overrides)
    payload["replay_input"] = manifest.path
    return code, payload
