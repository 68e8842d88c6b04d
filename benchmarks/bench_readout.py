"""Readout benchmark: ``evaluate_experiments`` over N synthetic feedback events (default 10M).

The events (``skyrec.experiments.simulate.synthetic_events``: two arms, 10 items per impression, per-user
heterogeneity) are committed as 24 hourly ``feedback`` outputs in a temporary lake (not timed); then the job
runs as in production -- Parquet read with the experiment pushed down, aggregation, statistics (coverage
bootstrap with 200 replicates), report -- and its wall time is measured. Prints the machine load (``uptime``).

    python benchmarks/bench_readout.py [events]
"""

from __future__ import annotations

import datetime as dt
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "src"))


EVENTS = {"small": 1_000_000, "reference": 10_000_000}  # by ``make bench``'s scale (BENCHMARKS.md: reference)


def main(scale: str = "reference", n_events: int | None = None) -> dict[str, Any]:
    """The readout of ``n_events`` synthetic events (default by ``scale``); returns the figures it prints."""
    import numpy as np
    import pyarrow as pa
    import pyarrow.parquet as pq

    from skyrec.config import load_config
    from skyrec.experiments.simulate import synthetic_events
    from skyrec.jobs.base import RunInfo, execute
    from skyrec.storage import Lake, Producer

    n_events = EVENTS[scale] if n_events is None else n_events
    per_user = 3 * (1 + 0.3 + 0.2)  # impressions per user x (1 + clicks + plays per impression)
    users = int(n_events / per_user)
    t0 = time.time()
    events, _ = synthetic_events(users, {"control": 0.5, "treatment": 0.5}, experiment="bench",
                                 play_rate={"control": 0.2, "treatment": 0.21}, impressions_per_user=3, seed=0)
    print(f"generated {events.num_rows:,} events of {users:,} users in {time.time() - t0:.1f} s", flush=True)
    start = dt.datetime(2026, 12, 1, tzinfo=dt.UTC)
    with tempfile.TemporaryDirectory() as home:
        exp = {"bench": {"rail": "recommended_for_you", "salt": "b", "start": start.isoformat(),
                         "end": (start + dt.timedelta(days=28)).isoformat(), "default_arm": "control",
                         "arms": {"control": {"variant": "recommended_for_you", "share": 0.5},
                                  "treatment": {"variant": "thought_provoking", "share": 0.5}},
                         "primary_metric": "plays_per_impression", "guardrails": {"click_through": -0.05}}}
        cfg = load_config("local", root=ROOT, environ={**os.environ, "SKYREC_HOME": home},
                          overrides={"experiments": exp, "serve": {"redis_url": "redis://127.0.0.1:1/0"}})
        lake = Lake.from_config(cfg)
        n = events.num_rows
        cuts = np.linspace(0, n, 25).astype(int)
        full = events.append_column("stream_id", pa.array(np.char.add("1-", np.arange(n).astype(str))))
        for h in range(24):
            rel = cfg.dataset_path("feedback", interval_key=(start + dt.timedelta(hours=h)).strftime("%Y%m%dT%H"))
            part = full.slice(cuts[h], cuts[h + 1] - cuts[h])
            with lake.stage("feedback", rel, Producer(task_id="bench")) as stage:
                with stage.fs.open(stage.path("part-00000.parquet"), "wb") as fh:
                    pq.write_table(part, fh)
                stage.add("part-00000.parquet", rows=part.num_rows)
                stage.commit({"first_id": part["stream_id"][0].as_py(), "last_id": part["stream_id"][-1].as_py()})
        del full, events
        load = subprocess.run(["uptime"], capture_output=True, text=True).stdout.strip()
        t0 = time.time()
        code, payload = execute("evaluate_experiments", config=cfg, run=RunInfo(
            dag_id="evaluate_experiments", run_id="bench", task_id="evaluate_experiments",
            logical_date=start + dt.timedelta(days=1)))
        seconds = time.time() - t0
        assert code == 0, payload
        (one,) = payload["summary"]["experiments"]
        print(f"readout of {n:,} events ({users:,} users): {seconds:.1f} s wall "
              f"(statistics {one['seconds']:.1f} s of it); decision {one['decision']['status']}")
        after = subprocess.run(["uptime"], capture_output=True, text=True).stdout.strip()
        print(f"load before: {load}")
        print(f"load after:  {after}")
    return {"events": n, "users": users, "seconds": round(seconds, 1), "statistics_seconds": round(one["seconds"], 1),
            "decision": one["decision"]["status"], "uptime_before": load, "uptime_after": after}


if __name__ == "__main__":
    main(n_events=int(sys.argv[1]) if len(sys.argv) > 1 else None)
