"""Job ``ingest_activity``: the run's data interval of raw activity -> ``activity_delta`` + ``activity_snapshot``.

For each hour of [ctx.run.start, ctx.run.end) (one hour for the hourly DAG) the Beam pipeline in
``skyrec.pipelines.activity`` reads that hour's Parquet files from the source and writes a filtered,
de-duplicated delta into a staging folder; this driver then checks the gates and commits each delta
create-only, in time order:

- all rejected: an interval whose every record (or file) was rejected fails -- never an empty delta;
- error rate: quarantined rows / rows read <= ``ingest.activity.max_error_rate``, where the rows of files
  rejected whole count as quarantined (an unreadable file's rows estimated from its size);
- volume (``gates.volume``): rows against the same hour of the previous ``lookback_runs`` days (hourly
  listening has a strong daily cycle, so "the last 7 hours" would be the wrong baseline); needs
  ``min_history`` earlier deltas. Override one run with ``--override volume``.

Then the rolling ``activity_snapshot`` ending with the last interval is built from the committed deltas of
the previous ``ingest.activity.snapshot_interval_days`` days (``0`` or ``all``: every committed delta; one
``part-YYYYMMDD.parquet`` per day, deltas concatenated in interval order -- deterministic bytes). Deltas older
than the window are counted in the snapshot's meta and the run's summary (``older_than_window``: deltas,
rows), never left out silently.

Backfills and imports of history (``volume="backfill"``) judge volume differently: historical data is bursty
and the hour a week before was built in the same run, so each hour is compared with the other hours of the
backfill itself: it fails only when it holds more than ``ingest.activity.backfill_volume_factor`` times the
largest other hour (and at least ``gates.volume.min_volume`` rows) -- a duplicated or runaway input, not a
busy evening.

A committed delta is never rebuilt (nor counted twice) unless the job is forced. Output manifest meta of a
delta: rows_in, rows_out, quarantined{reason: rows}, filtered{reason: rows}, bad_files{file: reason},
quarantined_files{reason: files}, uncounted_files, files_in, extra_columns, files, replay_inputs, catalogue,
gates, and ``invariant``: the terms of ``in = committed + quarantined + filtered`` for rows and for files
(see ``docs/ingest.md``). Replayed inputs (``skyrec quarantine replay``) are read with the source files. Snapshot meta: first_interval, last_interval, intervals, deltas, missing_intervals.
"""

from __future__ import annotations

import datetime as dt
import json
import time
from typing import Any

# Small batches (a quiet night hour, an hourly metadata sync of a few records) say little: 3 bad rows of 47
# are noise, not a broken feed. The error rate is judged over at least this many rows (ingestion jobs).
ERROR_RATE_MIN_ROWS = 500
DELTA = "activity_delta"
SNAPSHOT = "activity_snapshot"
HOUR = dt.timedelta(hours=1)


def interval_key(hour: dt.datetime) -> str:
    return hour.astimezone(dt.UTC).strftime("%Y%m%dT%H")


def parse_interval_key(key: str) -> dt.datetime:
    return dt.datetime.strptime(key, "%Y%m%dT%H").replace(tzinfo=dt.UTC)


def hours_in(start: dt.datetime, end: dt.datetime) -> list[dt.datetime]:
    """Hour starts covering [start, end) (at least the hour containing ``start``)."""
    first = start.astimezone(dt.UTC).replace(minute=0, second=0, microsecond=0)
    out = [first]
    while out[-1] + HOUR < end:
        out.append(out[-1] + HOUR)
    return out


def _source_files(ctx: Any, hour: dt.datetime) -> dict[str, int]:
    """``{path: size in bytes}`` of the hour's Parquet files in the source (sizes from the same listing)."""
    from skyrec.data.source import source_fs

    fs, root = source_fs(ctx.config)
    folder = f"{root}/{ctx.config.source.activity_prefix}/date={hour:%Y-%m-%d}/hour={hour:%H}"
    try:
        entries = fs.ls(folder, detail=True)
    except FileNotFoundError:
        return {}
    return {e["name"]: int(e.get("size") or 0) for e in sorted(entries, key=lambda e: e["name"])
            if e["name"].endswith(".parquet") and e.get("type", "file") != "directory"}


def _volume_history(ctx: Any, hour: dt.datetime) -> list[int]:
    cfg = ctx.config
    out = []
    for k in range(1, cfg.gates.volume.lookback_runs + 1):
        m = ctx.lake.manifest(cfg.dataset_path(DELTA, interval_key=interval_key(hour - dt.timedelta(days=k))))
        if m is not None:
            out.append(m.rows)
    return out


def error_rate_result(bad: int, total: int, max_error_rate: float) -> Any:
    """The error-rate gate over at least ERROR_RATE_MIN_ROWS rows (see above); the message says so."""
    from skyrec.gates import error_rate_gate

    result = error_rate_gate(bad, max(total, ERROR_RATE_MIN_ROWS), max_error_rate=max_error_rate)
    if total < ERROR_RATE_MIN_ROWS:
        result.message = (f"{bad} of {total} records quarantined; small interval, rate judged over "
                          f"{ERROR_RATE_MIN_ROWS} rows: {result.details['rate']:.2%} (allowed {max_error_rate:.2%})")
        result.details["rows"] = total
    return result


def estimated_rows(summary: dict[str, Any]) -> int:
    """Rows of the files that could not even be counted, estimated from the bytes per row of the others
    (one row per file at least): an unreadable file weighs in the error rate like the rows it held."""
    uncounted = summary.get("uncounted_files") or {}
    if not uncounted:
        return 0
    per_byte = summary["rows_in"] / summary["counted_bytes"] if summary.get("counted_bytes") else 0.0
    return sum(max(1, round((size or 0) * per_byte)) for size in uncounted.values())


def _replaced(path: str, replaces: set[str]) -> bool:
    return any(path == r or path.endswith("/" + r.lstrip("/")) for r in replaces)


def account(summary: dict[str, Any], files_in: int, files_replaced: int) -> dict[str, Any]:
    """The ingest invariant of one interval, for rows and for files (raises InvariantBroken if broken)."""
    from skyrec.gates import ingest_invariant

    bad_files: dict[str, int] = {}
    for reason in summary["bad_files"].values():
        bad_files[reason] = bad_files.get(reason, 0) + 1
    rows = ingest_invariant("rows", records_in=summary["rows_in"], committed=summary["rows_out"],
                            quarantined=summary["quarantined"], filtered=summary["filtered"])
    rows["uncounted_files"] = len(summary.get("uncounted_files") or {})
    files = ingest_invariant("files", records_in=files_in,
                             committed=len(summary["files"]) - len(summary["bad_files"]),
                             quarantined=bad_files, filtered={"replaced_by_replay": files_replaced})
    return {"rows": rows, "files": files}


def backfill_volume_result(current: int, others: list[int], *, factor: float, min_volume: int) -> Any:
    """The volume gate of a backfill: this hour against the largest other hour of the same backfill."""
    from skyrec.gates import GateResult

    largest = max(others, default=0)
    details = {"rule": "backfill", "current": current, "largest_other_hour": largest, "factor": factor,
               "hours": len(others) + 1}
    if not others:
        return GateResult("volume", True, "backfill of one hour: nothing to compare with", details=details)
    if current > factor * largest and current >= min_volume:
        return GateResult("volume", False, f"{current} rows: more than {factor:g}x the largest other hour of the "
                          f"backfill ({largest})", details=details)
    return GateResult("volume", True, f"{current} rows, largest other hour of the backfill {largest} "
                      f"(limit {factor:g}x)", details=details)


def _pipeline_batches(cfg: Any, pending: list[Any], sizes: dict[str, int]) -> list[list[Any]]:
    """The pending hours as pipeline runs: all in one on a Beam backend (one job; its workers spread it). In
    process, Beam's runner holds a run's filtered rows in memory until they are grouped by interval, so
    consecutive hours are taken into a run until their input files reach ``ingest.activity.pipeline_source_mb``
    (compressed Parquet, sizes from the listing) or ``hours_per_pipeline`` hours: a backfill's memory is one
    run's, not the whole range's, and sparse history (a few rows an hour) does not pay a pipeline start per
    handful of hours. An hour above the budget runs alone. Every hour is staged before the first run and
    gated and committed after the last, in time order, as in one run (the backfill volume rule compares the
    hours with each other)."""
    from skyrec.pipelines.runners import RUNNERS

    if cfg.jobs.backend in RUNNERS:
        return [pending] if pending else []
    a = cfg.ingest.activity
    budget = a.pipeline_source_mb * 1024 * 1024
    runs: list[list[Any]] = []
    held = 0
    for item in pending:
        size = sum(sizes.get(f, 0) for f in item[2])
        if not runs or len(runs[-1]) >= a.hours_per_pipeline or (held + size > budget and runs[-1]):
            runs.append([])
            held = 0
        runs[-1].append(item)
        held += size
    return runs


def ingest_intervals(ctx: Any, hours: list[dt.datetime], *, require_files: bool = True,
                     volume: str = "hourly") -> dict[str, Any]:
    """Build and commit the deltas of ``hours`` (in pipeline runs of :func:`_pipeline_batches`). Returns
    per-interval results.

    ``volume``: ``hourly`` (against the same hour of the previous days) or ``backfill`` (against the other
    hours of this run, see the module docstring)."""
    from skyrec.data.activity import ActivityRules
    from skyrec.data.lakeio import file_url
    from skyrec.data.source import is_s3, replay_inputs, s3_storage_options
    from skyrec.gates import GateFailed, all_rejected_gate, volume_gate
    from skyrec.jobs.base import BadInput
    from skyrec.jobs.ingest_availability import latest_catalogue
    from skyrec.storage import QUARANTINE_DIR

    cfg = ctx.config
    catalogue = latest_catalogue(ctx)
    reused, missing, pending = [], [], []
    sizes: dict[str, int] = {}  # input file -> bytes, for the in-process pipeline runs' budget
    replays: dict[str, dict[str, Any]] = {}
    for hour in hours:
        rel = cfg.dataset_path(DELTA, interval_key=interval_key(hour))
        if not ctx.force and ctx.lake.committed(rel):
            reused.append(rel)
            continue
        listed = _source_files(ctx, hour)
        inputs = replay_inputs(ctx.lake, rel)
        replaces = {r for m in inputs for r in m.meta.get("replaces_files", [])}
        files = [f for f in listed if not _replaced(f, replaces)]
        replayed = {ctx.lake.abspath(f"{m.path}/{e.path}"): e.size for m in inputs for e in m.files
                    if e.path.endswith(".parquet")}
        extra = list(replayed)
        sizes.update(listed)
        sizes.update(replayed)
        replays[interval_key(hour)] = {"inputs": [m.path for m in inputs], "files_in": len(listed) + len(extra),
                                       "files_replaced": len(listed) - len(files)}
        if not files and not extra:
            missing.append(interval_key(hour))
            continue
        pending.append((hour, rel, files + extra))
    if missing and require_files:
        raise BadInput(f"no activity files in the source for interval(s) {missing} "
                       f"(under {cfg.source_url}/{cfg.source.activity_prefix}/date=.../hour=...)")
    committed: list[str] = []
    gate_failures: list[dict[str, Any]] = []
    counters: dict[str, int] = {}
    if pending:
        from skyrec.pipelines.activity import IntervalTarget, Spec, execute, pipeline_options

        stages = {interval_key(h): ctx.lake.stage(DELTA, rel, ctx.producer, force=ctx.force)
                  for h, rel, _ in pending}
        rel_keys = {rel: interval_key(h) for h, rel, _ in pending}
        a = cfg.ingest.activity
        spec = Spec(
            source_kind=cfg.source.kind, source_options=s3_storage_options(cfg) if is_s3(cfg) else {},
            lake_url=cfg.lake_url, lake_options=dict(cfg.storage.storage_options),
            catalogue_file=file_url(ctx.lake, catalogue, "catalogue.parquet"),
            rules=ActivityRules.from_config(cfg).as_dict(),
            intervals={interval_key(h): IntervalTarget((h).isoformat(), (h + HOUR).isoformat(),
                                                       stages[interval_key(h)].path(""))
                       for h, _, _ in pending},
            replay_files=sorted(f for _, _, fs in pending for f in fs if f.startswith(ctx.lake.abspath("_replay"))),
        )
        try:
            counters = {}
            for batch in _pipeline_batches(cfg, pending, sizes):
                keyed_files = [(interval_key(h), f) for h, _, fs in batch for f in fs]
                ran = execute(spec, keyed_files, pipeline_options(cfg, job_name=f"activity-{ctx.run.job_key}"))
                for name, n in ran.items():
                    counters[name] = counters.get(name, 0) + n
            rules = ActivityRules.from_config(cfg)
            volumes: dict[str, int] = {}
            if volume == "backfill":  # every hour's rows, committed earlier (reused) or built in this run
                for rel in reused:
                    m = ctx.lake.manifest(rel)
                    volumes[rel] = m.rows if m is not None else 0
                for _, rel, _ in pending:
                    stage = stages[rel_keys[rel]]
                    with stage.fs.open(stage.path("_summary.json"), "rb") as fh:
                        volumes[rel] = int(json.loads(fh.read())["rows_out"])
            for hour, rel, _ in pending:  # time order: each delta is gated against the ones before it
                key = interval_key(hour)
                stage = stages[key]
                with stage.fs.open(stage.path("_summary.json"), "rb") as fh:
                    summary = json.loads(fh.read())
                invariant = account(summary, replays[key]["files_in"], replays[key]["files_replaced"])
                stage.add("part-00000.parquet", rows=summary["rows_out"])
                for reason, n in summary["quarantine_lines"].items():
                    stage.add(f"{QUARANTINE_DIR}/{reason}.jsonl", rows=n)
                    stage.quarantine_counts[reason] = n
                estimate = estimated_rows(summary)
                results = [all_rejected_gate(summary["rows_out"], summary["bad_rows"], len(summary["bad_files"])),
                           error_rate_result(summary["bad_rows"] + estimate, summary["rows_in"] + estimate,
                                             a.max_error_rate)]
                if estimate:
                    results[1].details["estimated_rows_of_uncounted_files"] = estimate
                    results[1].message += (f" (incl. ~{estimate} estimated rows of "
                                           f"{len(summary['uncounted_files'])} unreadable file(s))")
                v = cfg.gates.volume
                if volume == "backfill":
                    results.append(backfill_volume_result(
                        summary["rows_out"], [n for r, n in volumes.items() if r != rel],
                        factor=a.backfill_volume_factor, min_volume=v.min_volume))
                else:
                    results.append(volume_gate(summary["rows_out"], _volume_history(ctx, hour),
                                               min_ratio=v.min_ratio, max_ratio=v.max_ratio,
                                               min_history=v.min_history, min_volume=v.min_volume))
                try:
                    for r in results:
                        ctx.gate(r)
                except GateFailed as exc:
                    stage.discard()
                    failed = next(r for r in results if r.gate == exc.gate)
                    gate_failures.append({"interval": key, "gate": exc.gate, "message": failed.message,
                                          "details": exc.details})
                    continue
                bad_files = invariant["files"]["quarantined"]
                meta = {**summary, "catalogue": catalogue.path, "window": [str(x) for x in rules.window(
                    hour, hour + HOUR)], "gates": [r.as_dict() for r in results], "invariant": invariant,
                    "files_in": replays[key]["files_in"], "quarantined_files": bad_files,
                    "filtered_files": invariant["files"]["filtered"], "replay_inputs": replays[key]["inputs"]}
                stage.commit(meta)
                committed.append(rel)
        finally:
            for stage in stages.values():
                stage.discard()
    return {"committed": committed, "reused": reused, "missing": missing, "gate_failures": gate_failures,
            "counters": counters}


def build_snapshot(ctx: Any, last: dt.datetime) -> tuple[str, bool, dict[str, Any]]:
    """Commit the snapshot ending with interval ``last`` from committed deltas. Returns (path, built, meta)."""
    import pyarrow.parquet as pq

    from skyrec.data.lakeio import PARQUET_OPTIONS, parquet_files
    from skyrec.data.schemas import ACTIVITY
    from skyrec.jobs.base import BadInput

    cfg = ctx.config
    last_key = interval_key(last)
    rel = cfg.dataset_path(SNAPSHOT, interval_key=last_key)
    window_days = cfg.ingest.activity.window_days  # None: every committed delta
    prefix = cfg.dataset_prefix(DELTA)
    prefix = prefix.rsplit("/", 1)[0] + "/" if not prefix.endswith("/") else prefix
    token = cfg.datasets[DELTA].rsplit("/", 1)[-1].split("{", 1)[0]  # e.g. "interval="
    listed = sorted((path.rsplit("/", 1)[-1][len(token):], path) for path in ctx.lake.versions(prefix))
    if window_days is None:
        first_key = min((k for k, _ in listed if k <= last_key), default=last_key)
        n_hours = int((last - parse_interval_key(first_key)) / HOUR) + 1
    else:
        n_hours = window_days * 24
        first_key = interval_key(last - (n_hours - 1) * HOUR)
    deltas = [(key, path) for key, path in listed if first_key <= key <= last_key]
    inputs = snapshot_inputs(ctx.lake, deltas)
    existing = None if ctx.force else ctx.lake.manifest(rel)
    if existing is not None and existing.meta.get("inputs") == inputs:
        return rel, False, existing.meta
    # Not built yet, forced, or built from other deltas than are committed in its window now (the hourly run
    # that made it ran before a backfill filled the window): the next revision, through the commit protocol.
    rebuild = existing is not None
    # history older than the window is left out of the snapshot -- counted and reported, never silently
    older = [path for key, path in listed if key < first_key]
    older_rows = 0
    for path in older:
        m = ctx.lake.manifest(path)
        older_rows += m.rows if m is not None else 0
    if not deltas or deltas[-1][0] != last_key:
        raise BadInput(f"activity snapshot ending {last_key}: its last delta is not committed")
    by_day: dict[str, list[str]] = {}
    for key, path in sorted(deltas):
        by_day.setdefault(key[:8], []).append(path)
    rows = 0
    with ctx.lake.stage(SNAPSHOT, rel, ctx.producer, force=ctx.force or rebuild) as stage:
        for day, paths in sorted(by_day.items()):
            name = f"part-{day}.parquet"
            n = 0
            with stage.fs.open(stage.path(name), "wb") as out, pq.ParquetWriter(out, ACTIVITY,
                                                                                 **PARQUET_OPTIONS) as writer:
                for path in paths:
                    m = ctx.lake.require(path)
                    for f in parquet_files(m):
                        with ctx.lake.fs.open(ctx.lake.abspath(f"{path}/{f}"), "rb") as fh:
                            t = pq.read_table(fh).cast(ACTIVITY)
                        writer.write_table(t)
                        n += t.num_rows
            stage.add(name, rows=n)
            rows += n
        meta = {"first_interval": first_key, "last_interval": last_key, "intervals": n_hours,
                "deltas": len(deltas), "missing_intervals": n_hours - len(deltas), "rows": rows,
                "days": window_days if window_days is not None else "all",
                "older_than_window": {"deltas": len(older), "rows": older_rows},
                "inputs": inputs, "rebuilt_stale": rebuild}
        stage.commit(meta)
    return rel, True, meta


def snapshot_inputs(lake: Any, deltas: list[tuple[str, str]]) -> str:
    """What a snapshot is built from, as one digest: every delta in its window and that delta's revision."""
    import hashlib

    h = hashlib.sha256()
    for key, path in deltas:
        revs = lake.revisions(path)
        h.update(f"{key}:{revs[-1] if revs else -1};".encode())
    return f"{len(deltas)}:{h.hexdigest()[:32]}"


def run(ctx: Any) -> dict[str, Any]:
    from skyrec.gates import GateFailed

    started = time.time()
    hours = hours_in(ctx.run.start, ctx.run.end)
    snap_rel = ctx.config.dataset_path(SNAPSHOT, interval_key=interval_key(hours[-1]))
    if not ctx.force and ctx.lake.committed(snap_rel) and all(
            ctx.lake.committed(ctx.config.dataset_path(DELTA, interval_key=interval_key(h))) for h in hours):
        snap, built, _ = build_snapshot(ctx, hours[-1])  # reused unless its window's deltas changed
        return {"outputs": [ctx.config.dataset_path(DELTA, interval_key=interval_key(h)) for h in hours] + [snap],
                "noop": not built, "snapshot_rebuilt": built}
    result = ingest_intervals(ctx, hours)
    if result["gate_failures"]:
        f = result["gate_failures"][0]
        raise GateFailed(f["gate"], f"interval {f['interval']}: {f['message']}", f["details"])
    snap, built, meta = build_snapshot(ctx, hours[-1])
    deltas = [ctx.config.dataset_path(DELTA, interval_key=interval_key(h)) for h in hours]
    return {"outputs": deltas + [snap], "committed": result["committed"], "reused": result["reused"],
            "snapshot_rows": meta.get("rows"), "older_than_window": meta.get("older_than_window"),
            "counters": result["counters"],
            "seconds": round(time.time() - started, 3)}


def load_records(path: str) -> Any:
    """Fixed records for a replay: a Parquet file, or JSON lines (the quarantine's own format) -> Arrow table.

    Bookkeeping keys of the quarantine (``_file``) are dropped; anything else is left to the job, which
    checks it like any input. Raises BadInput naming the file (and line) when it cannot be read.
    """
    import pyarrow as pa
    import pyarrow.parquet as pq

    from skyrec.jobs.base import BadInput

    if path.endswith(".parquet"):
        try:
            return pq.read_table(path)
        except Exception as exc:  # noqa: BLE001 - any unreadable file: say which and why
            raise BadInput(f"{path}: not a readable Parquet file: {type(exc).__name__}: {exc}") from None
    rows = []
    with open(path, "rb") as fh:
        for n, line in enumerate(fh, 1):
            if not line.strip():
                continue
            try:
                rec = json.loads(line)
            except json.JSONDecodeError as exc:
                raise BadInput(f"{path}:{n}: not JSON: {exc}") from None
            if not isinstance(rec, dict) or "event_id" not in rec:
                raise BadInput(f"{path}:{n}: expected an activity record (an object with 'event_id'); "
                               "a whole-file reject is replayed as a fixed Parquet file with --replaces")
            rows.append({k: v for k, v in rec.items() if not k.startswith("_")})
    if not rows:
        raise BadInput(f"{path}: no records to replay")
    try:
        return pa.Table.from_pylist(rows)
    except (pa.ArrowInvalid, pa.ArrowTypeError) as exc:
        raise BadInput(f"{path}: records do not form a table (mixed types in a field?): {exc}") from None


def replay(config: Any, key: str, records: str, *, replaces: tuple[str, ...] = (),
           overrides: tuple[str, ...] = ()) -> tuple[int, dict[str, Any]]:
    """Replay fixed records into interval ``key`` (``YYYYMMDDTHH``): commit them as a replay input of the
    interval's delta, then run this job for the interval, forced -- a new revision through the commit
    protocol (the earlier revision stays as it was). Original rows with a replayed event id, and source
    files named in ``replaces``, are counted as filtered ``replaced_by_replay``. Returns (exit code, payload).
    """
    import io

    import pyarrow.parquet as pq

    from skyrec.data.lakeio import PARQUET_OPTIONS
    from skyrec.data.source import add_replay_input
    from skyrec.jobs.base import EXIT_BAD_INPUT, BadInput, RunInfo, execute
    from skyrec.storage import Lake, Producer

    try:
        hour = parse_interval_key(key)
    except ValueError:
        return EXIT_BAD_INPUT, {"status": "failed", "error": f"interval key {key!r} is not YYYYMMDDTHH"}
    try:
        table = load_records(records)
    except BadInput as exc:
        return EXIT_BAD_INPUT, {"status": "failed", "error": str(exc)}
    buf = io.BytesIO()
    pq.write_table(table, buf, **PARQUET_OPTIONS)
    lake = Lake.from_config(config)
    rel = config.dataset_path(DELTA, interval_key=key)
    token = f"replay-{key}-{int(time.time())}"
    producer = Producer(dag_id="quarantine_replay", run_id=token, task_id="ingest_activity")
    manifest = add_replay_input(lake, rel, producer, {"records.parquet": buf.getvalue()},
                                {"rows": table.num_rows, "from_file": records, "replaces_files": list(replaces)})
    run = RunInfo(dag_id="quarantine_replay", run_id=token, task_id="ingest_activity", logical_date=hour + HOUR,
                  interval_start=hour, interval_end=hour + HOUR)
    code, payload = execute("ingest_activity", config=config, run=run, force=True, overrides=overrides)
    payload["replay_input"] = manifest.path
    return code, payload
