"""The monitoring canary: commits a tiny output every run, proving the scheduler and workers are alive.

It also reports how old the previous canary was (``previous_age_seconds``). The monitoring DAG alerts
when that age exceeds the expected schedule interval by a margin: a gap means runs were not happening
(a stopped scheduler, no free worker, a stuck executor). The alert comes from the next run that does
happen, and an external check can watch the newest canary's age from outside Airflow as well.
"""

from __future__ import annotations

import datetime as dt
import json
from typing import Any

from skyrec.jobs.base import JobContext


def run(ctx: JobContext) -> dict[str, Any]:
    rel = ctx.path("canary")
    previous = ctx.lake.history(ctx.config, "canary", before=rel)
    previous_age = None
    if previous:
        last = dt.datetime.fromisoformat(previous[-1].committed_at)
        previous_age = round((dt.datetime.now(dt.UTC) - last).total_seconds(), 3)
    existing = ctx.committed("canary")
    if existing is not None:
        return {"outputs": [rel], "previous_age_seconds": previous_age, "note": "already committed"}
    now = dt.datetime.now(dt.UTC).isoformat()
    with ctx.stage("canary") as stage:
        with stage.open("canary.json", "wb", rows=1) as fh:
            fh.write(json.dumps({"at": now, "run_id": ctx.run.run_id}).encode())
        stage.commit(meta={"at": now})
    return {"outputs": [rel], "previous_age_seconds": previous_age}
