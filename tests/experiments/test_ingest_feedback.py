"""ingest_feedback: the event stream lands in the lake exactly once, through a real redis-server.

The exactly-once tests kill the job process with SIGKILL (kill -9) at the two dangerous points -- after it
read entries but before its commit, and after its commit but before its acknowledgement -- and check that
the retry (or the next run) commits every entry exactly once and leaves nothing pending.
"""

from __future__ import annotations

import datetime as dt
import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pyarrow.parquet as pq
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from skyrec.experiments.events import StoredEvent
from skyrec.jobs import ingest_feedback as jf
from skyrec.jobs.base import EXIT_GATE, EXIT_OK, RunInfo, execute
from skyrec.storage import Lake

pytestmark = pytest.mark.integration
ROOT = Path(__file__).resolve().parents[2]
H0 = dt.datetime(2026, 12, 3, 10, tzinfo=dt.UTC)
FIELDS = tuple(StoredEvent.model_fields)


def event(i: int, *, kind: str = "impression", **kw: Any) -> dict[str, Any]:
    e = {"event_id": f"ev{i}", "type": kind, "impression_id": f"rfy.control.{i:032x}", "user_id": f"u{i % 7}",
         "rail": "recommended_for_you", "experiment": "rfy", "arm": "control", "variant": "recommended_for_you",
         "item_ids": ["p1", "p2", "p3"] if kind == "impression" else ["p1"],
         "ts": "2026-12-03T10:00:00Z", "duration_seconds": 120.0 if kind == "play" else None,
         "received_at": "2026-12-03T10:00:01.234Z"}
    e.update(kw)
    return e


def add(r: Any, config: Any, events: list[dict[str, Any]]) -> list[str]:
    key = jf.stream_key(config)
    return [r.xadd(key, {"e": json.dumps(e)}).decode() for e in events]


def run_info(hour: dt.datetime, try_number: int = 1, run_id: str | None = None) -> RunInfo:
    return RunInfo(dag_id="ingest_feedback", run_id=run_id or f"scheduled__{hour.isoformat()}",
                   task_id="ingest_feedback", try_number=try_number, logical_date=hour,
                   interval_start=hour, interval_end=hour + dt.timedelta(hours=1))


def committed_rows(config: Any) -> list[dict[str, Any]]:
    lake = Lake.from_config(config)
    rows: list[dict[str, Any]] = []
    for m in lake.history(config, "feedback"):
        with lake.open(m, "part-00000.parquet") as fh:
            rows += pq.read_table(fh).to_pylist()
    return rows


def pending(r: Any, config: Any) -> int:
    info = r.xpending(jf.stream_key(config), jf.GROUP)
    return int(info["pending"])


@pytest.fixture
def fb_config(config_factory, redis_server, redis_client):
    return config_factory({"serve": {"redis_url": redis_server.url}})


def job_process(config: Any, run: RunInfo, hold: str, marker: Path, params: dict[str, str] | None = None
                ) -> subprocess.Popen[bytes]:
    env = {**os.environ, "SKYREC_HOME": config.paths.home, "SKYREC_PROJECT_ROOT": str(ROOT),
           "SKYREC__SERVE__REDIS_URL": config.serve.redis_url, jf.HOLD_ENV: hold, jf.HOLD_FILE_ENV: str(marker)}
    args = [sys.executable, "-m", "skyrec.jobs.base", "ingest_feedback", *run.to_args()]
    for k, v in (params or {}).items():
        args += ["--param", f"{k}={v}"]
    return subprocess.Popen(args, env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
                            start_new_session=True)


def kill_at(proc: subprocess.Popen[bytes], marker: Path, timeout: float = 60) -> None:
    deadline = time.monotonic() + timeout
    while not marker.exists():
        if proc.poll() is not None:
            raise AssertionError(f"job ended before its hold point: {proc.stderr.read().decode()[-2000:]}")
        assert time.monotonic() < deadline, "job never reached its hold point"
        time.sleep(0.05)
    os.killpg(proc.pid, signal.SIGKILL)  # kill -9, as a lost node or the OOM killer would
    proc.wait(10)
    assert proc.returncode == -signal.SIGKILL


def test_drains_validates_and_quarantines(fb_config, redis_client) -> None:
    r, cfg = redis_client, fb_config
    good = [event(i) for i in range(20)] + [event(100, kind="click"), event(101, kind="play")]
    ids = add(r, cfg, good)
    add(r, cfg, [event(3)])  # a client's retried POST: same event_id
    r.xadd(jf.stream_key(cfg), {"e": b"{not json"})
    r.xadd(jf.stream_key(cfg), {"payload": b"{}"})  # a hand-written XADD with another field
    add(r, cfg, [event(200, kind="play", duration_seconds=-3), event(201, item_ids=[]), event(202, kind="rate")])
    code, payload = execute("ingest_feedback", config=cfg, run=run_info(H0), overrides=("error_rate",))
    assert code == EXIT_OK, payload
    s = payload["summary"]
    assert s["read"] == 28 and s["committed"] == 22 and s["filtered"] == {"duplicate_event_id": 1}
    assert s["quarantined"] == {"invalid_duration_seconds": 1, "missing_field_e": 1, "invalid_item_ids": 1,
                                "not_json": 1, "invalid_type": 1}
    m = Lake.from_config(cfg).require(s["outputs"][0])
    assert m.meta["first_id"] == ids[0] and m.meta["ids"] == 28
    assert m.meta["invariant"]["entries"]["holds"] is True
    assert m.quarantine == s["quarantined"]
    rows = committed_rows(cfg)
    assert sorted(x["event_id"] for x in rows) == sorted(e["event_id"] for e in good)
    play = next(x for x in rows if x["event_id"] == "ev101")
    assert play["duration_seconds"] == 120.0 and play["item_ids"] == ["p1"] and play["arm"] == "control"
    assert pending(r, cfg) == 0
    # quarantined records keep the raw entry and the reason
    q = Path(Lake.from_config(cfg).abspath(m.path)) / next(f.path for f in m.files if "not_json" in f.path)
    assert json.loads(q.read_text().splitlines()[0])["raw"] == "{not json"


def test_error_rate_gate_commits_and_acks_nothing(fb_config, redis_client) -> None:
    r, cfg = redis_client, fb_config
    add(r, cfg, [event(i) for i in range(5)])
    for _ in range(60):  # 60 bad: over 5% even of the 500 rows a small interval is judged over
        r.xadd(jf.stream_key(cfg), {"e": b"[]"})
    code, payload = execute("ingest_feedback", config=cfg, run=run_info(H0))
    assert code == EXIT_GATE, payload
    assert Lake.from_config(cfg).manifest(cfg.dataset_path("feedback", interval_key="20261203T10")) is None
    assert pending(r, cfg) == 65  # still pending: the next attempt (or an override) takes them
    code, payload = execute("ingest_feedback", config=cfg, run=run_info(H0, 2), overrides=("error_rate",))
    assert code == EXIT_OK and payload["summary"]["committed"] == 5 and pending(r, cfg) == 0


def test_kill_between_commit_and_ack(fb_config, redis_client, tmp_path) -> None:
    r, cfg = redis_client, fb_config
    add(r, cfg, [event(i) for i in range(50)])
    proc = job_process(cfg, run_info(H0), "after_commit", tmp_path / "held")
    kill_at(proc, tmp_path / "held")
    rel = cfg.dataset_path("feedback", interval_key="20261203T10")
    assert Lake.from_config(cfg).committed(rel)
    assert pending(r, cfg) == 50  # committed, never acknowledged
    add(r, cfg, [event(i) for i in range(50, 60)])  # meanwhile the API goes on writing
    code, payload = execute("ingest_feedback", config=cfg, run=run_info(H0, 2))
    assert code == EXIT_OK, payload
    assert payload["summary"]["noop"] is True and payload["summary"]["acked"] == 50
    assert pending(r, cfg) == 0
    code, payload = execute("ingest_feedback", config=cfg, run=run_info(H0 + dt.timedelta(hours=1)))
    assert code == EXIT_OK and payload["summary"]["committed"] == 10
    ids = sorted(x["event_id"] for x in committed_rows(cfg))
    assert ids == sorted(f"ev{i}" for i in range(60))  # every event exactly once


def test_kill_between_read_and_commit(fb_config, redis_client, tmp_path) -> None:
    r, cfg = redis_client, fb_config
    add(r, cfg, [event(i) for i in range(40)])
    proc = job_process(cfg, run_info(H0), "after_read", tmp_path / "held")
    kill_at(proc, tmp_path / "held")
    assert not Lake.from_config(cfg).committed(cfg.dataset_path("feedback", interval_key="20261203T10"))
    assert pending(r, cfg) == 40  # read by the killed attempt, under its consumer name
    add(r, cfg, [event(i) for i in range(40, 45)])
    code, payload = execute("ingest_feedback", config=cfg, run=run_info(H0, 2))
    assert code == EXIT_OK, payload
    assert payload["summary"]["committed"] == 45 and pending(r, cfg) == 0
    assert sorted(x["event_id"] for x in committed_rows(cfg)) == sorted(f"ev{i}" for i in range(45))


@pytest.mark.parametrize("hold", ["after_read", "after_commit"])
def test_a_dead_run_never_retried_is_reclaimed_by_the_next(fb_config, redis_client, tmp_path, hold) -> None:
    """The run of hour H died for good (no retry left); the run of H+1 claims its pending entries
    (XAUTOCLAIM) and lands each of them exactly once: written if H never committed them, only
    acknowledged if H had."""
    r, cfg = redis_client, fb_config
    add(r, cfg, [event(i) for i in range(30)])
    proc = job_process(cfg, run_info(H0), hold, tmp_path / "held")
    kill_at(proc, tmp_path / "held")
    add(r, cfg, [event(i) for i in range(30, 33)])
    code, payload = execute("ingest_feedback", config=cfg, run=run_info(H0 + dt.timedelta(hours=1)),
                            params={"claim_idle_seconds": "0"})
    assert code == EXIT_OK, payload
    s = payload["summary"]
    if hold == "after_read":
        assert s["claimed"] == 30 and s["committed"] == 33
    else:
        assert s["claimed_already_committed"] == 30 and s["committed"] == 3
    assert pending(r, cfg) == 0
    assert sorted(x["event_id"] for x in committed_rows(cfg)) == sorted(f"ev{i}" for i in range(33))


def test_empty_stream_commits_an_empty_interval(fb_config, redis_client) -> None:
    code, payload = execute("ingest_feedback", config=fb_config, run=run_info(H0))
    assert code == EXIT_OK and payload["summary"]["read"] == 0
    m = Lake.from_config(fb_config).require(payload["summary"]["outputs"][0])
    assert m.rows == 0 and m.meta["first_id"] is None


_json = st.recursive(st.none() | st.booleans() | st.integers() | st.floats(allow_nan=True) | st.text(max_size=8),
                     lambda c: st.lists(c, max_size=3) | st.dictionaries(st.text(max_size=6), c, max_size=3),
                     max_leaves=6)
_mutation = st.one_of(
    st.just(None),  # a valid event
    st.tuples(st.sampled_from(FIELDS), _json),  # one field replaced by anything
    st.sampled_from(FIELDS),  # one field removed
    st.binary(max_size=20),  # raw bytes instead of JSON
)


@settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(st.lists(st.tuples(st.integers(0, 15), _mutation), min_size=1, max_size=25))
def test_property_every_entry_is_accounted_for(fb_config, redis_client, entries) -> None:
    """Any mix of valid, malformed and duplicated entries: in = committed + quarantined + filtered, every id
    is acknowledged, and what was committed validates again."""
    r, cfg = redis_client, fb_config
    r.flushall()
    shutil.rmtree(Lake.from_config(cfg).abspath("feedback"), ignore_errors=True)
    key = jf.stream_key(cfg)
    for i, mutation in entries:
        e = event(i, kind=["impression", "click", "play"][i % 3])
        if isinstance(mutation, bytes):
            r.xadd(key, {"e": mutation})
            continue
        if isinstance(mutation, tuple):
            e[mutation[0]] = mutation[1]
        elif isinstance(mutation, str):
            e.pop(mutation)
        r.xadd(key, {"e": json.dumps(e, allow_nan=True)})
    code, payload = execute("ingest_feedback", config=cfg, run=run_info(H0),
                            overrides=("error_rate", "all_rejected"))
    assert code == EXIT_OK, payload
    s = payload["summary"]
    assert s["read"] == len(entries)
    assert s["committed"] + sum(s["quarantined"].values()) + sum(s["filtered"].values()) == len(entries)
    assert s["acked"] == len(entries) and pending(r, cfg) == 0
    for row in committed_rows(cfg):
        row.pop("stream_id")
        for f in ("ts", "received_at"):
            row[f] = row[f].isoformat()
        jf.validate({b"e": json.dumps(row).encode()})


def test_experiment_dags_exist_only_with_experiments(config_factory) -> None:
    from skyrec.airflow.factory import build_dags, dag_ids

    plain = config_factory()
    assert "ingest_feedback" not in dag_ids(plain) and "evaluate_experiments" not in dag_ids(plain)
    exp = {"e1": {"rail": "recommended_for_you", "salt": "s", "start": "2026-12-01T00:00:00Z",
                  "end": "2026-12-29T00:00:00Z", "default_arm": "control",
                  "arms": {"control": {"variant": "recommended_for_you", "share": 0.5},
                           "treatment": {"variant": "thought_provoking", "share": 0.5}},
                  "primary_metric": "plays_per_impression"}}
    cfg = config_factory({"experiments": exp})
    ids = dag_ids(cfg)
    assert ids[-3:] == ["ingest_feedback", "evaluate_experiments", "airflow_monitoring"]
    dags = build_dags(cfg)
    ingest, readout = dags["ingest_feedback"], dags["evaluate_experiments"]
    assert [t.task_id for t in ingest.tasks] == ["ingest_feedback"]
    assert ingest.tasks[0].skip_if_committed is False  # a retry after the commit must run to acknowledge
    assert [t.task_id for t in readout.tasks] == ["evaluate_experiments"]
    assert ingest.timetable.expression == "0 * * * *" and readout.timetable.expression == "0 0 * * *"
