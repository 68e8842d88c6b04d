"""S3-compatible source through a real HTTP endpoint (moto server on 127.0.0.1): incremental re-sync and
resume after a simulated kill from the checkpoint."""

from __future__ import annotations

import datetime as dt
import json
from pathlib import Path
from typing import Any

import pytest
from ingest_helpers import END, make_config, ok, run_job

from skyrec.redis_local import free_port

pytestmark = pytest.mark.integration
H = dt.timedelta(hours=1)


@pytest.fixture
def s3(monkeypatch: pytest.MonkeyPatch) -> Any:
    from moto.server import ThreadedMotoServer

    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "testing")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "testing")
    monkeypatch.setenv("AWS_SESSION_TOKEN", "sts-session-token")  # STS-style credentials are passed through
    monkeypatch.setenv("AWS_DEFAULT_REGION", "us-east-1")
    port = free_port()
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=port, verbose=False)
    server.start()
    import boto3

    endpoint = f"http://127.0.0.1:{port}"
    client = boto3.client("s3", endpoint_url=endpoint)
    client.create_bucket(Bucket="source")
    yield endpoint, client
    server.stop()


def test_s3_incremental_sync_and_resume_after_kill(s3: Any, tmp_path: Path) -> None:

    from skyrec.data.generate import generate
    from skyrec.jobs import sync_metadata
    from skyrec.storage import Lake

    endpoint, client = s3
    cfg = make_config(tmp_path, {"source": {"kind": "s3", "url": "s3://source/feed", "endpoint_url": endpoint},
                                 "ingest": {"metadata": {"concurrency": 4}}})
    gen = generate(cfg, users=10, items=40, days=1, events_per_user=3, seed=2, end=END.isoformat(), bad_rate=0.0,
                   progress=False)
    n_objects = sum(gen["metadata_objects"].values())
    first = ok(run_job(cfg, "sync_metadata"))
    assert first["fetched"] == first["listed"] == n_objects
    ok(run_job(cfg, "build_catalogue"))

    # incremental: change 2 objects, add 3 -- the next sync fetches exactly those
    keys = sorted(o["Key"] for o in client.list_objects_v2(Bucket="source", Prefix="feed/metadata/episodes/")["Contents"])
    for key in keys[:2]:
        body = json.loads(client.get_object(Bucket="source", Key=key)["Body"].read())
        body["title"] = "Changed"
        body["updated"] = "2026-03-01T00:30:00Z"
        client.put_object(Bucket="source", Key=key, Body=json.dumps(body).encode())
    client.put_object(Bucket="source", Key=keys[2], Body=client.get_object(Bucket="source", Key=keys[2])["Body"].read())
    for i in range(3):
        client.put_object(Bucket="source", Key=f"feed/metadata/programmes/2026/03/01/00/bnew{i}-0.json",
                          Body=json.dumps({"id": f"bnew{i}", "type": "brand", "title": "New",
                                           "updated": "2026-03-01T00:00:00Z"}).encode())
    second = ok(run_job(cfg, "sync_metadata", END + H))
    assert second["fetched"] == 5 and second["unchanged"] == n_objects - 2  # same bytes, same ETag: not refetched
    built = ok(run_job(cfg, "build_catalogue", END + H))
    assert built["records_read"] == 5

    # resume: a run killed after 2 batches continues from its checkpoint on the next attempt
    for i in range(25):
        client.put_object(Bucket="source", Key=f"feed/metadata/programmes/2026/03/01/01/bmore{i:02d}-0.json",
                          Body=json.dumps({"id": f"bmore{i}", "type": "brand", "title": "More",
                                           "updated": "2026-03-01T01:00:00Z"}).encode())

    def kill(batch: int) -> None:
        if batch == 1:
            raise KeyboardInterrupt("simulated kill")

    sync_metadata.after_batch = kill
    try:
        with pytest.raises(KeyboardInterrupt):
            sync_metadata.run(_ctx(cfg, END + 2 * H, try_number=1))
    finally:
        sync_metadata.after_batch = None
    lake = Lake.from_config(cfg)
    assert not lake.committed("raw/metadata/sync=20260301T020000")
    resumed = ok(run_job(cfg, "sync_metadata", END + 2 * H, params={"batch_size": "10"}, try_number=2,
                         run_id="resume"))
    assert resumed["fetched"] == 25
    assert resumed["resumed_from_checkpoint"] == 20 and resumed["fetched_this_attempt"] == 5


def _ctx(cfg: Any, logical: dt.datetime, *, try_number: int) -> Any:
    from skyrec.jobs.base import JobContext, RunInfo
    from skyrec.storage import Lake

    run = RunInfo(dag_id="test", run_id="resume", task_id="sync_metadata", try_number=try_number,
                  logical_date=logical, interval_start=logical - H, interval_end=logical)
    return JobContext(config=cfg, lake=Lake.from_config(cfg), run=run, params={"batch_size": "10"})


def test_s3_activity_backfill_reads_the_bucket_and_cuts_its_pipelines_by_the_listed_sizes(
        s3: Any, tmp_path: Path, pipeline_runs: list[dict[str, Any]]) -> None:
    """Activity files in an S3-compatible bucket: the backfill lists each hour through the endpoint and cuts
    its in-process pipelines by the sizes in that listing (a budget below one hour's files: one hour a run;
    the default: one run); both commit the same deltas."""
    from skyrec.data.generate import generate
    from skyrec.storage import Lake

    endpoint, client = s3
    source = {"kind": "s3", "url": "s3://source/feed", "endpoint_url": endpoint}
    cfg = make_config(tmp_path, {"source": source, "ingest": {"activity": {"pipeline_source_mb": 1e-6}}})
    gen = generate(cfg, users=30, items=40, days=1, events_per_user=8, seed=4, end=END.isoformat(), bad_rate=0.0,
                   progress=False)
    hours_with_files = {k["Key"].split("/date=")[1][:10] + k["Key"].split("/hour=")[1][:2]
                        for k in client.list_objects_v2(Bucket="source", Prefix="feed/activity/")["Contents"]}
    assert len(hours_with_files) > 3
    ok(run_job(cfg, "sync_metadata"))
    ok(run_job(cfg, "build_catalogue"))
    window = {"start": (END - 24 * H).isoformat(), "end": END.isoformat()}
    alone = ok(run_job(cfg, "backfill_activity", params=window))
    runs = [len(r["intervals"]) for r in pipeline_runs]
    assert all(f.startswith("source/feed/activity/") for r in pipeline_runs for f in r["files"])  # bucket/key
    assert alone["committed"] == len(hours_with_files) == len(runs) and set(runs) == {1}
    assert sum(Lake.from_config(cfg).manifest(p).rows for p in alone["outputs"] if "deltas" in p) \
        == alone["snapshot_rows"] > 0
    pipeline_runs.clear()
    one_run = make_config(tmp_path, {"source": source})
    again = ok(run_job(one_run, "backfill_activity", params=window, force=True, run_id="one-run"))
    assert [len(r["intervals"]) for r in pipeline_runs] == [len(hours_with_files)]
    assert again["snapshot_rows"] == alone["snapshot_rows"]
    assert gen["activity_rows"] >= alone["snapshot_rows"]
