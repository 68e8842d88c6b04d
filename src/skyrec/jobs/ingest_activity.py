"""Job ``ingest_activity``: the run's data interval of raw activity -> ``activity_delta`` + ``activity_snapshot``.

For each hour of [ctx.run.start, ctx.run.end) (one hour for the hourly DAG) the Beam pipeline in
``skyrec.pipelines.activity`` reads that hour's Parquet files from the source and writes a filtered,
de-duplicated delta into a staging folder; this driver then checks the gates and commits each delta
create-only, in time order:

- error rate: quarantined rows / rows read <= ``ingest.activity.max_error_rate``;
- volume (``gates.volume``): rows against the same hour of the previous ``lookback_runs`` days (hourly
  listening has a strong daily cycle, so "the last 7 hours" would be the wrong baseline); needs
  ``min_history`` earlier deltas. Override one run with ``--override volume``.

Then the rolling ``activity_snapshot`` ending with the last interval is built from the committed deltas of
the previous ``ingest.activity.snapshot_interval_days`` days (one ``part-YYYYMMDD.parquet`` per day, deltas
concatenated in interval order -- deterministic bytes).

A committed delta is never rebuilt (nor counted twice) unless the job is forced. Output manifest meta of a
delta: rows_in, rows_out, quarantined{reason: n}, filtered{reason: n}, bad_files, extra_columns, files,
catalogue, gates. Snapshot meta: first_interval, last_interval, intervals, deltas, missing_intervals.
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


def _source_files(ctx: Any, hour: dt.datetime) -> list[str]:
    from skyrec.data.source import source_fs

    fs, root = source_fs(ctx.config)
    folder = f"{root}/{ctx.config.source.activity_prefix}/date={hour:%Y-%m-%d}/hour={hour:%H}"
    try:
        names = fs.ls(folder, detail=False)
    except FileNotFoundError:
        return []
    return sorted(n for n in names if n.endswith(".parquet"))


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


def ingest_intervals(ctx: Any, hours: list[dt.datetime], *, require_files: bool = True) -> dict[str, Any]:
    """Build and commit the deltas of ``hours`` in ONE pipeline run. Returns per-interval results."""
    from skyrec.data.activity import ActivityRules
    from skyrec.data.lakeio import file_url
    from skyrec.data.source import is_s3, s3_storage_options
    from skyrec.gates import GateFailed, volume_gate
    from skyrec.jobs.base import BadInput
    from skyrec.jobs.ingest_availability import latest_catalogue
    from skyrec.storage import QUARANTINE_DIR

    cfg = ctx.config
    catalogue = latest_catalogue(ctx)
    reused, missing, pending = [], [], []
    for hour in hours:
        rel = cfg.dataset_path(DELTA, interval_key=interval_key(hour))
        if not ctx.force and ctx.lake.committed(rel):
            reused.append(rel)
            continue
        files = _source_files(ctx, hour)
        if not files:
            missing.append(interval_key(hour))
            continue
        pending.append((hour, rel, files))
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
        a = cfg.ingest.activity
        spec = Spec(
            source_kind=cfg.source.kind, source_options=s3_storage_options(cfg) if is_s3(cfg) else {},
            lake_url=cfg.lake_url, lake_options=dict(cfg.storage.storage_options),
            catalogue_file=file_url(ctx.lake, catalogue, "catalogue.parquet"),
            rules={"event_types": list(a.event_types), "min_play_seconds": a.min_play_seconds,
                   "future_tolerance_minutes": a.future_tolerance_minutes, "past_limit_days": a.past_limit_days},
            intervals={interval_key(h): IntervalTarget((h).isoformat(), (h + HOUR).isoformat(),
                                                       stages[interval_key(h)].path(""))
                       for h, _, _ in pending},
        )
        keyed_files = [(interval_key(h), f) for h, _, fs in pending for f in fs]
        try:
            counters = execute(spec, keyed_files, pipeline_options(cfg, job_name=f"activity-{ctx.run.job_key}"))
            rules = ActivityRules.from_config(cfg)
            for hour, rel, _ in pending:  # time order: each delta is gated against the ones before it
                key = interval_key(hour)
                stage = stages[key]
                with stage.fs.open(stage.path("_summary.json"), "rb") as fh:
                    summary = json.loads(fh.read())
                stage.add("part-00000.parquet", rows=summary["rows_out"])
                for reason, n in summary["quarantined"].items():
                    stage.add(f"{QUARANTINE_DIR}/{reason}.jsonl", rows=n)
                    stage.quarantine_counts[reason] = n
                results = [error_rate_result(summary["bad_rows"], summary["rows_in"], a.max_error_rate)]
                v = cfg.gates.volume
                results.append(volume_gate(summary["rows_out"], _volume_history(ctx, hour), min_ratio=v.min_ratio,
                                           max_ratio=v.max_ratio, min_history=v.min_history,
                                           min_volume=v.min_volume))
                try:
                    for r in results:
                        ctx.gate(r)
                except GateFailed as exc:
                    stage.discard()
                    failed = next(r for r in results if r.gate == exc.gate)
                    gate_failures.append({"interval": key, "gate": exc.gate, "message": failed.message,
                                          "details": exc.details})
                    continue
                meta = {**summary, "catalogue": catalogue.path, "window": [str(x) for x in rules.window(
                    hour, hour + HOUR)], "gates": [r.as_dict() for r in results]}
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
    existing = None if ctx.force else ctx.lake.manifest(rel)
    if existing is not None:
        return rel, False, existing.meta
    n_hours = cfg.ingest.activity.snapshot_interval_days * 24
    first_key = interval_key(last - (n_hours - 1) * HOUR)
    prefix = cfg.dataset_prefix(DELTA)
    prefix = prefix.rsplit("/", 1)[0] + "/" if not prefix.endswith("/") else prefix
    token = cfg.datasets[DELTA].rsplit("/", 1)[-1].split("{", 1)[0]  # e.g. "interval="
    deltas = []
    for path in ctx.lake.versions(prefix):
        key = path.rsplit("/", 1)[-1][len(token):]
        if first_key <= key <= last_key:
            deltas.append((key, path))
    if not deltas or deltas[-1][0] != last_key:
        raise BadInput(f"activity snapshot ending {last_key}: its last delta is not committed")
    by_day: dict[str, list[str]] = {}
    for key, path in sorted(deltas):
        by_day.setdefault(key[:8], []).append(path)
    rows = 0
    with ctx.lake.stage(SNAPSHOT, rel, ctx.producer, force=ctx.force) as stage:
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
                "days": cfg.ingest.activity.snapshot_interval_days}
        stage.commit(meta)
    return rel, True, meta


def run(ctx: Any) -> dict[str, Any]:
    from skyrec.gates import GateFailed

    started = time.time()
    hours = hours_in(ctx.run.start, ctx.run.end)
    snap_rel = ctx.config.dataset_path(SNAPSHOT, interval_key=interval_key(hours[-1]))
    if not ctx.force and ctx.lake.committed(snap_rel) and all(
            ctx.lake.committed(ctx.config.dataset_path(DELTA, interval_key=interval_key(h))) for h in hours):
        return {"outputs": [ctx.config.dataset_path(DELTA, interval_key=interval_key(h)) for h in hours] + [snap_rel],
                "noop": True}
    result = ingest_intervals(ctx, hours)
    if result["gate_failures"]:
        f = result["gate_failures"][0]
        raise GateFailed(f["gate"], f"interval {f['interval']}: {f['message']}", f["details"])
    snap, built, meta = build_snapshot(ctx, hours[-1])
    deltas = [ctx.config.dataset_path(DELTA, interval_key=interval_key(h)) for h in hours]
    return {"outputs": deltas + [snap], "committed": result["committed"], "reused": result["reused"],
            "snapshot_rows": meta.get("rows"), "counters": result["counters"],
            "seconds": round(time.time() - started, 3)}
