"""Ingestion benchmarks, each against a named peer in the same run.

(a) metadata sync: N KB-sized JSON objects on a local S3 endpoint (moto server, real HTTP on 127.0.0.1).
    skyrec ``sync_metadata`` (bounded concurrency, ETag state, checkpoint) vs a plain sequential boto3
    list + get_object + write-file loop. Figure: objects/s, ratio skyrec / peer.
(b) activity ingest: E events generated with ``skyrec.data.generate`` (one day of hourly Parquet, a catalogue
    of P programmes). skyrec ``backfill_activity`` (Beam DirectRunner on Arrow batches, quarantine, gates,
    commit, snapshot) vs a plain pandas implementation of the same filter (read, filter, de-duplicate, write
    one Parquet per hour). Figures: wall time and peak RSS of each, in separate processes.

``main("small")``: 1,000 objects / ~300k events (a minute or two). ``main("reference")``: 10,000 objects /
3.5M events over 3.5M users and 225k programmes (the reference deployment's scale).
Run: ``.venv/bin/python benchmarks/bench_ingest.py [small|reference]``.
"""

from __future__ import annotations

import datetime as dt
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
SCALES = {
    "small": {"objects": 1000, "users": 100_000, "events_per_user": 3.0, "items": 20_000},
    "reference": {"objects": 10_000, "users": 3_500_000, "events_per_user": 1.0, "items": 225_000},
}
END = dt.datetime(2026, 3, 1, tzinfo=dt.UTC)


def _config(home: Path, overrides: dict[str, Any] | None = None) -> Any:
    from skyrec.config import load_config

    base: dict[str, Any] = {"storage": {"lake": f"{home}/lake", "state": f"{home}/state"},
                            "source": {"url": f"{home}/source"}}
    for k, v in (overrides or {}).items():
        base[k] = {**base.get(k, {}), **v}
    return load_config("local", root=ROOT, overrides=base, environ={**os.environ, "SKYREC_HOME": str(home)})


def _job(cfg: Any, name: str, logical: dt.datetime, params: dict[str, str] | None = None) -> dict[str, Any]:
    from skyrec.jobs.base import RunInfo, execute

    code, payload = execute(name, config=cfg, params=params, overrides=("volume",),
                            run=RunInfo(dag_id="bench", run_id=f"bench-{logical:%Y%m%dT%H}", task_id=name,
                                        logical_date=logical, interval_start=logical - dt.timedelta(hours=1),
                                        interval_end=logical))
    if code != 0:
        raise RuntimeError(f"{name}: {payload.get('error')}")
    return payload["summary"]


# ---- (a) metadata sync ---------------------------------------------------------------------------

def bench_sync(n_objects: int, work: Path) -> dict[str, Any]:
    import logging
    from concurrent.futures import ThreadPoolExecutor

    import boto3
    from moto.server import ThreadedMotoServer

    from skyrec.redis_local import free_port

    logging.getLogger("werkzeug").setLevel(logging.ERROR)  # the moto server logs every request otherwise
    os.environ.update(AWS_ACCESS_KEY_ID="bench", AWS_SECRET_ACCESS_KEY="bench", AWS_DEFAULT_REGION="us-east-1")
    port = free_port()
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=port, verbose=False)
    server.start()
    try:
        endpoint = f"http://127.0.0.1:{port}"
        client = boto3.client("s3", endpoint_url=endpoint)
        client.create_bucket(Bucket="bench")
        body = {"type": "episode", "title": "x" * 700, "genres": ["Drama"], "updated": "2026-03-01T00:00:00Z"}

        def put(i: int) -> None:
            rec = {**body, "id": f"p{i:07d}"}
            client.put_object(Bucket="bench", Key=f"src/metadata/episodes/2026/03/01/00/p{i:07d}-0.json",
                              Body=json.dumps(rec).encode())

        with ThreadPoolExecutor(16) as pool:
            list(pool.map(put, range(n_objects)))

        # peer: sequential boto3 get + write
        out = work / "peer"
        out.mkdir(parents=True)
        t0 = time.perf_counter()
        n = 0
        for page in client.get_paginator("list_objects_v2").paginate(Bucket="bench", Prefix="src/metadata/"):
            for obj in page.get("Contents", []):
                data = client.get_object(Bucket="bench", Key=obj["Key"])["Body"].read()
                (out / obj["Key"].replace("/", "_")).write_bytes(data)
                n += 1
        peer_s = time.perf_counter() - t0

        cfg = _config(work / "skyrec", {"source": {"kind": "s3", "url": "s3://bench/src", "endpoint_url": endpoint}})
        t0 = time.perf_counter()
        summary = _job(cfg, "sync_metadata", END)
        ours_s = time.perf_counter() - t0
        assert summary["fetched"] == n == n_objects
        t0 = time.perf_counter()
        again = _job(cfg, "sync_metadata", END + dt.timedelta(hours=1))
        resync_s = time.perf_counter() - t0
        assert again["fetched"] == 0
    finally:
        server.stop()
    return {"objects": n_objects, "skyrec_objects_per_s": round(n / ours_s, 1),
            "peer_sequential_boto3_objects_per_s": round(n / peer_s, 1), "ratio": round(peer_s / ours_s, 2),
            "skyrec_seconds": round(ours_s, 2), "peer_seconds": round(peer_s, 2),
            "incremental_resync_unchanged_seconds": round(resync_s, 2)}


# ---- (b) activity ingest -------------------------------------------------------------------------

_SKYREC = r"""
import json, resource, sys, time, datetime as dt
sys.path.insert(0, {bench_dir!r})
import bench_ingest as b
import skyrec.pipelines.activity as pipeline
runs = []
real = pipeline.execute
def counted(spec, files, options):
    runs.append(len({{key for key, _ in files}}))
    return real(spec, files, options)
pipeline.execute = counted
cfg = b._config(__import__("pathlib").Path({home!r}))
t0 = time.perf_counter()
s = b._job(cfg, "backfill_activity", b.END, params={{"start": {start!r}, "end": {end!r}}})
print(json.dumps({{"seconds": time.perf_counter() - t0, "rows_out": s["snapshot_rows"],
                  "rss_mb": __import__("skyrec.procstat").procstat.peak_rss_mb(), "pipeline_hours": runs}}))
"""

_PANDAS = r"""
import glob, json, resource, time, datetime as dt
import pandas as pd
t0 = time.perf_counter()
items = set(pd.read_parquet({catalogue!r}, columns=["item_id"])["item_id"])
rows = 0
for path in sorted(glob.glob({pattern!r})):
    hour = pd.Timestamp(path.split("date=")[1][:10] + " " + path.split("hour=")[1][:2] + ":00", tz="UTC")
    df = pd.read_parquet(path)
    et = df["event_type"].str.strip().str.lower()
    ok = (df["event_id"].notna() & df["user_id"].notna() & df["item_id"].notna()
          & et.isin(["play", "complete", "pause", "resume", "seek", "stop", "skip"])
          & (df["event_ts"] <= hour + pd.Timedelta(minutes=70)) & (df["event_ts"] >= hour - pd.Timedelta(days=400))
          & df["item_id"].isin(items))
    df = df[ok].drop_duplicates("event_id")
    df["event_type"] = et[df.index]
    df = df[df["event_type"].isin(["play", "complete"]) & (df["played_seconds"] >= 30)]
    df = df.sort_values(["user_id", "event_ts", "item_id"])
    df[["user_id", "item_id", "event_type", "event_ts", "played_seconds"]].to_parquet(
        {out!r} + "/" + hour.strftime("%Y%m%dT%H") + ".parquet", index=False)
    rows += len(df)
print(json.dumps({{"seconds": time.perf_counter() - t0, "rows_out": rows,
                  "rss_mb": __import__("skyrec.procstat").procstat.peak_rss_mb()}}))
"""


def _measure(code: str) -> dict[str, Any]:
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, cwd=ROOT,
                          env={**os.environ, "SKYREC_PROJECT_ROOT": str(ROOT)})
    if proc.returncode != 0:
        raise RuntimeError(proc.stderr[-3000:])
    return json.loads(proc.stdout.strip().splitlines()[-1])


def bench_activity(scale: dict[str, Any], work: Path) -> dict[str, Any]:
    from skyrec.data.generate import generate
    from skyrec.data.lakeio import write_parquet
    from skyrec.data.schemas import CATALOGUE
    from skyrec.storage import Lake, Producer

    home = work / "activity"
    cfg = _config(home)
    t0 = time.perf_counter()
    gen = generate(cfg, users=scale["users"], items=scale["items"], days=1, events_per_user=scale["events_per_user"],
                   seed=11, end=END.isoformat(), progress=False, metadata=False)
    gen_s = time.perf_counter() - t0
    # the ingest checks items against a committed catalogue: commit the planted one directly
    import pyarrow.parquet as pq

    truth = pq.read_table(f"{cfg.source_url}/_truth/catalogue.parquet").select(CATALOGUE.names)
    lake = Lake.from_config(cfg)
    with lake.stage("catalogue", cfg.dataset_path("catalogue", run_key="20260301T000000"), Producer()) as stage:
        write_parquet(stage, "catalogue.parquet", truth)
        stage.commit({})
    start = (END - dt.timedelta(days=1)).isoformat()
    ours = _measure(_SKYREC.format(bench_dir=str(Path(__file__).parent), home=str(home), start=start,
                                   end=END.isoformat()))
    out = work / "pandas_out"
    out.mkdir()
    peer = _measure(_PANDAS.format(catalogue=f"{cfg.source_url}/_truth/catalogue.parquet",
                                   pattern=f"{cfg.source_url}/activity/date=*/hour=*/*.parquet", out=str(out)))
    source_mb = sum(f.stat().st_size for f in Path(cfg.source_url, cfg.source.activity_prefix).rglob("*.parquet"))
    return {"events": gen["activity_rows"], "users": scale["users"], "programmes": scale["items"],
            "generate_seconds": round(gen_s, 1), "source_mb": round(source_mb / 2**20, 1),
            "skyrec_pipeline_runs_hours": ours["pipeline_hours"],
            "skyrec_seconds": round(ours["seconds"], 2), "skyrec_peak_rss_mb": round(ours["rss_mb"]),
            "pandas_seconds": round(peer["seconds"], 2), "pandas_peak_rss_mb": round(peer["rss_mb"]),
            "time_ratio_skyrec_over_pandas": round(ours["seconds"] / peer["seconds"], 2),
            "rss_ratio_skyrec_over_pandas": round(ours["rss_mb"] / peer["rss_mb"], 2),
            "rows_out_skyrec": ours["rows_out"], "rows_out_pandas": peer["rows_out"]}


def main(scale: str = "small") -> dict[str, Any]:
    if scale not in SCALES:
        raise SystemExit(f"scale must be one of {sorted(SCALES)}")
    s = SCALES[scale]
    with tempfile.TemporaryDirectory(prefix="skyrec-bench-ingest-") as tmp:
        work = Path(tmp)
        return {"scale": scale, "metadata_sync": bench_sync(s["objects"], work / "sync"),
                "activity_ingest": bench_activity(s, work)}


if __name__ == "__main__":
    from _cli import scale_argument

    print(json.dumps(main(scale_argument(__doc__, SCALES)), indent=1))
