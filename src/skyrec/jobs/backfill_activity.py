"""Job ``backfill_activity``: rebuild the activity deltas of a date range and the snapshot at its end.

Params: ``start``, ``end`` (ISO-8601; default: the run's data interval). Every hour in [start, end) is
processed in ONE Beam pipeline run (not one per hour). Deltas already committed are reused, never
rewritten or counted twice (``--force`` rebuilds them as new manifest revisions). Hours without source
files are reported (``missing``) and skipped. Output bytes are deterministic (sorted rows, fixed Parquet
writer settings): a backfill run twice, or in another lake, gives identical files.

Volume is judged by the backfill rule (``skyrec.jobs.ingest_activity``: each hour against the other hours of
the backfill, not against the week before, which history does not follow), so a clean historical import
needs no override. Gates are checked per delta, in time order; a delta failing a gate is not committed, the others are, and
the job then fails naming the intervals (re-run with ``--override <gate>`` after checking them). The
snapshot ending with the last hour of the range is built only when every delta of the range is committed.

A range longer than ``ingest.activity.max_backfill_days`` (param ``max_days`` for one run) is refused up front as bad
input, naming the range and the limit: such a range is a wrong date (an event in the year 3000, epoch 0), and
walking its millions of empty hours would grind for minutes with nothing to show. A longer history is
backfilled in several consecutive ranges (each is idempotent; the snapshot is built at the end of each).

Returns ``{"outputs": [...deltas, snapshot], "committed", "reused", "missing", "snapshot"}``.
"""

from __future__ import annotations

import datetime as dt
import time
from typing import Any


def run(ctx: Any) -> dict[str, Any]:
    from skyrec.gates import GateFailed
    from skyrec.jobs.base import BadInput, _parse_ts
    from skyrec.jobs.ingest_activity import DELTA, HOUR, build_snapshot, hours_in, ingest_intervals, interval_key

    started = time.time()
    try:
        start = _parse_ts(ctx.params.get("start")) or ctx.run.start
        end = _parse_ts(ctx.params.get("end")) or ctx.run.end
    except ValueError as exc:
        raise BadInput(f"backfill_activity: bad start/end parameter: {exc}") from None
    if end <= start:
        end = start + (ctx.run.end - ctx.run.start if ctx.run.end > ctx.run.start else HOUR)
    limit = _max_days(ctx.params.get("max_days"), ctx.config.ingest.activity.max_backfill_days)
    if end - start > dt.timedelta(days=limit):
        span = end - start
        raise BadInput(f"backfill_activity: the range {start.isoformat()} to {end.isoformat()} is {span.days:,} days "
                       f"({span // HOUR:,} hours); a backfill covers at most {limit:,} days "
                       "(ingest.activity.max_backfill_days, or the max_days param): check the dates (an event time "
                       "far in the future or near 1970 in the source?) or backfill the history in several "
                       "consecutive ranges")
    hours = hours_in(start, end)
    result = ingest_intervals(ctx, hours, require_files=False, volume="backfill")
    deltas = [ctx.config.dataset_path(DELTA, interval_key=interval_key(h)) for h in hours]
    if result["gate_failures"]:
        names = ", ".join(f"{f['interval']} ({f['gate']}: {f['message']})" for f in result["gate_failures"][:5])
        first = result["gate_failures"][0]
        raise GateFailed(first["gate"], f"{len(result['gate_failures'])} interval(s) failed: {names}; "
                         f"{len(result['committed'])} other(s) committed", {"failures": result["gate_failures"]})
    present = [h for h in hours if interval_key(h) not in set(result["missing"])]
    if not present:
        raise BadInput(f"backfill_activity: no activity files in the source between {start} and {end}")
    snap, built, meta = build_snapshot(ctx, present[-1])
    return {"outputs": [d for d, h in zip(deltas, hours, strict=True) if h in present] + [snap],
            "committed": len(result["committed"]), "reused": len(result["reused"]), "missing": result["missing"],
            "snapshot": snap, "snapshot_built": built, "snapshot_rows": meta.get("rows"),
            "older_than_window": meta.get("older_than_window"),
            "counters": result["counters"], "seconds": round(time.time() - started, 3)}


def _max_days(value: Any, configured: int) -> int:
    from skyrec.jobs.base import BadInput

    if value in (None, ""):
        return configured
    try:
        days = int(value)
    except (TypeError, ValueError):
        days = 0
    if days < 1:
        raise BadInput(f"backfill_activity: max_days must be a whole number of days >= 1, got {value!r}")
    return days
