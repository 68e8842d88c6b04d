"""A snapshot is rebuilt, as its next revision, when the deltas committed in its window are not those it was
built from -- the hourly run that first built it ran before a backfill filled the window (the order DAGs start
in under the scheduler). Otherwise it is reused, never committed twice."""

from __future__ import annotations

import datetime as dt
from typing import Any

import pytest
from ingest_helpers import END, ok, run_job

from skyrec.storage import Lake

pytestmark = pytest.mark.integration
H = dt.timedelta(hours=1)


def test_hourly_before_backfill_then_the_backfill_rebuilds_the_snapshot(world: dict[str, Any]) -> None:
    cfg = world["config"]
    lake = Lake.from_config(cfg)
    ok(run_job(cfg, "ingest_activity", END))  # the hour [END-1h, END): a snapshot of that hour alone
    snap = lake.latest(cfg, "activity_snapshot")
    assert snap.meta["deltas"] == 1 and snap.revision == 0
    hourly_rows = snap.rows
    out = ok(run_job(cfg, "backfill_activity", params={"start": (END - 48 * H).isoformat(), "end": END.isoformat()},
                     run_id="backfill"))
    assert out["committed"] == 47  # the hour ingested already is reused
    rebuilt = lake.require(snap.path)
    assert rebuilt.revision == 1 and rebuilt.meta["deltas"] == 48 and rebuilt.meta["rebuilt_stale"] is True
    assert rebuilt.rows > hourly_rows
    lake.verify(rebuilt)
    # the same hour again, and the backfill again: current, reused, no third revision
    again = ok(run_job(cfg, "ingest_activity", END, run_id="again"))
    assert again["noop"] is True and again["snapshot_rebuilt"] is False
    ok(run_job(cfg, "backfill_activity", params={"start": (END - 48 * H).isoformat(), "end": END.isoformat()},
               run_id="backfill-again"))
    assert lake.revisions(snap.path) == [0, 1]
