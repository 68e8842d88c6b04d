"""Production failure modes, reproduced against real Airflow (dag.test on SQLite) and real job processes.

Each test injects one fault through the ``selftest`` job (see skyrec/jobs/selftest.py) and asserts what
the system did about it. The table in docs/airflow.md maps failure -> test -> behaviour.
"""

from __future__ import annotations

import collections
import contextlib
import datetime as dt
import json
import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path
from typing import Any

import pytest

from skyrec.airflow.backends import JobSpec, deploy_version
from skyrec.airflow.backends.local import LocalProcessBackend, group_members
from skyrec.jobs.base import RunInfo
from skyrec.storage import Lake

pytestmark = pytest.mark.integration

RUN_KEY = "20260301T120000"
WHEN = dt.datetime(2026, 3, 1, 12, 0, tzinfo=dt.UTC)


# ---- helpers ------------------------------------------------------------------------------------


def launches(config: Any) -> list[dict[str, Any]]:
    root = Path(config.state_dir) / "jobs"
    out = [json.loads(p.read_text()) for p in root.glob("*/launches/*/launch.json")]
    return sorted(out, key=lambda r: r["started"])


def launch_dir(config: Any, rec: dict[str, Any]) -> Path:
    return Path(config.state_dir) / "jobs" / rec["job_key"] / "launches" / rec["launch_id"]


def result_of(config: Any, rec: dict[str, Any]) -> dict[str, Any] | None:
    p = launch_dir(config, rec) / "result.json"
    return json.loads(p.read_text()) if p.exists() else None


def chunk_counts(config: Any, tag: str) -> collections.Counter[int]:
    p = Path(config.state_dir) / "selftest" / f"{tag}.chunks"
    if not p.exists():
        return collections.Counter()
    return collections.Counter(int(line.split()[0]) for line in p.read_text().splitlines() if line.strip())


def output(config: Any, tag: str) -> tuple[Lake, str]:
    return Lake.from_config(config), f"selftest/{tag}/run={RUN_KEY}"


def read_rows(lake: Lake, rel: str) -> int:
    m = lake.require(rel)
    lake.verify(m)
    with lake.open(m, "data.csv") as fh:
        return len(fh.read().decode().splitlines()) - 1


def wait_for(pred: Any, timeout: float = 30.0, every: float = 0.05) -> Any:
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        value = pred()
        if value:
            return value
        time.sleep(every)
    raise AssertionError(f"condition not met within {timeout}s")


def live_launch(config: Any) -> dict[str, Any] | None:
    for rec in launches(config):
        if rec.get("pgid") and group_members(int(rec["pgid"])):
            return rec
    return None


def rss_mb() -> float:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return 0.0


def state(dr: Any) -> str:
    return str(getattr(dr.state, "value", dr.state))


def spec_for(run_dag: Any, params: dict[str, str], *, deploy: str | None = None, task_id: str = "selftest",
             dag_id: str = "selftest_sync", try_number: int = 1) -> JobSpec:
    """The spec the operator would build for this test's DAG run (same job key)."""
    run = RunInfo(dag_id=dag_id, run_id=run_dag.run_id(), task_id=task_id, try_number=try_number, logical_date=WHEN,
                  interval_start=WHEN, interval_end=WHEN)
    return JobSpec(job="selftest", run=run, params=params, deploy=deploy or deploy_version())


@pytest.fixture(autouse=True)
def no_leftover_jobs(config: Any) -> Any:
    """Whatever a test does, no job process outlives it (and a leftover one fails the test)."""
    yield
    leftovers = []
    for rec in launches(config):
        if rec.get("pgid") and (result_of(config, rec) or {}).get("status"):  # ended: give it time to exit
            with contextlib.suppress(AssertionError):
                wait_for(lambda r=rec: not group_members(int(r["pgid"])), timeout=10)
        if rec.get("pgid") and group_members(int(rec["pgid"])):
            leftovers.append(rec["launch_id"])
            os.killpg(int(rec["pgid"]), signal.SIGKILL)
    assert not leftovers, f"job processes left running: {leftovers}"


# ---- 1. volume spike: work outside the worker; a killed job resumes from its checkpoint -----------


def test_volume_spike_runs_outside_worker_and_resumes_after_kill(run_dag: Any, config: Any) -> None:
    params = {"tag": "spike", "rows": "200000", "chunks": "8", "cpu_seconds": "0.4", "chunk_seconds": "0.05",
              "mem_mb": "300"}
    killed: dict[str, Any] = {}
    peak = {"rss": rss_mb()}
    base_rss = peak["rss"]
    stop = threading.Event()

    def killer() -> None:
        wait_for(lambda: sum(chunk_counts(config, "spike").values()) >= 3, timeout=60)
        rec = wait_for(lambda: live_launch(config), timeout=10)
        if rec["try_number"] != 1:  # the first try's job ended some other way: kill nothing (the test fails)
            killed["other"] = rec
            return
        os.killpg(int(rec["pgid"]), signal.SIGKILL)
        killed["rec"] = rec

    cpu_samples: list[tuple[float, float]] = []

    def sampler() -> None:
        while not stop.is_set():
            peak["rss"] = max(peak["rss"], rss_mb())
            t = os.times()
            cpu_samples.append((time.time(), t.user + t.system))
            time.sleep(0.05)

    threads = [threading.Thread(target=killer, daemon=True), threading.Thread(target=sampler, daemon=True)]
    for t in threads:
        t.start()
    dr = run_dag("selftest_sync", {"job_params": params})
    stop.set()
    recs = launches(config)
    tries = [(r["try_number"], (result_of(config, r) or {}).get("error", "no result")) for r in recs]
    assert "rec" in killed, f"the first try's job was never killed mid-way; tries: {tries}"
    assert state(dr) == "success", f"tries (try number, error): {tries}"

    assert [r["try_number"] for r in recs] == [1, 2]
    assert result_of(config, recs[0]) is None  # killed: no result
    final = result_of(config, recs[1])
    assert final and final["status"] == "success"
    counts = chunk_counts(config, "spike")
    assert sorted(counts) == list(range(8)) and set(counts.values()) == {1}, counts  # no chunk computed twice
    assert final["summary"]["chunks_resumed"] >= 3
    lake, rel = output(config, "spike")
    assert read_rows(lake, rel) == 200000

    # the heavy work happened in the job process, not in the worker (this test process)
    assert final["summary"]["max_rss_mb"] > 300
    assert peak["rss"] - base_rss < 150, f"worker RSS grew by {peak['rss'] - base_rss:.0f} MB"
    assert final["summary"]["cpu_seconds"] > 2.0
    window = [c for w, c in cpu_samples if recs[1]["started"] <= w <= final["finished"]]
    worker_cpu = window[-1] - window[0]
    print(f"while the retry's job ran: worker cpu {worker_cpu:.2f}s, job cpu {final['summary']['cpu_seconds']}s; "
          f"worker rss +{peak['rss'] - base_rss:.0f} MB, job rss {final['summary']['max_rss_mb']} MB")
    assert worker_cpu < 0.5 * final["summary"]["cpu_seconds"]


# ---- 2. the first attempt's job is still running when Airflow retries -----------------------------


def test_retry_reattaches_to_the_running_job_exactly_once(run_dag: Any, config: Any) -> None:
    params = {"tag": "retry", "rows": "5000", "chunks": "5", "chunk_seconds": "0.3"}
    backend = LocalProcessBackend(config)
    first = backend.submit(spec_for(run_dag, params))  # attempt 1's job; its worker is gone
    dr = run_dag("selftest_sync", {"job_params": params})
    assert state(dr) == "success"
    recs = launches(config)
    assert [r["launch_id"] for r in recs] == [first["launch_id"]]  # reattached, never a second job
    assert set(chunk_counts(config, "retry").values()) == {1}
    lake, rel = output(config, "retry")
    assert read_rows(lake, rel) == 5000  # 1x, not 2x

    # 3. a later retry of the same run finds the finished job: no new job, artefact untouched
    m = lake.require(rel)
    before = Path(lake.file_url(m, "data.csv")).read_bytes()
    dr = run_dag("selftest_sync", {"job_params": params})
    assert state(dr) == "success"
    assert len(launches(config)) == 1
    assert lake.require(rel).revision == 0
    assert Path(lake.file_url(m, "data.csv")).read_bytes() == before


def test_job_claiming_success_without_artefact_fails_the_task(run_dag: Any, config: Any, alerts: Any) -> None:
    dr = run_dag("selftest_sync_once", {"job_params": {"tag": "liar", "skip_commit": "1"}})
    assert state(dr) == "failed"
    lake, rel = output(config, "liar")
    assert not lake.committed(rel)
    assert "failure" in alerts.kinds()


def test_missing_artefact_of_a_finished_job_fails_the_retry(run_dag: Any, config: Any) -> None:
    params = {"tag": "gone", "rows": "100", "chunks": "2"}
    assert state(run_dag("selftest_sync_once", {"job_params": params})) == "success"
    lake, rel = output(config, "gone")
    m = lake.require(rel)
    Path(lake.file_url(m, "data.csv")).unlink()  # the artefact disappears behind our back
    assert state(run_dag("selftest_sync_once", {"job_params": params})) == "failed"
    assert len(launches(config)) == 1  # the retry did not quietly re-run over it either


# ---- 4. after an upgrade, a retry finds an old job with matching labels -------------------------------


def test_after_upgrade_the_old_job_is_cancelled_not_reattached(run_dag: Any, config: Any) -> None:
    backend = LocalProcessBackend(config)
    old = backend.submit(spec_for(run_dag, {"tag": "upgrade", "hang": "1"}, deploy="skyrec-0.0.9+oldsha",
                                  dag_id="selftest_sync_once"))
    assert group_members(int(old["pgid"]))
    dr = run_dag("selftest_sync_once", {"job_params": {"tag": "upgrade", "rows": "10", "chunks": "1"}})
    assert state(dr) == "success"
    assert group_members(int(old["pgid"])) == []  # cancelled, and confirmed gone
    recs = launches(config)
    assert len(recs) == 2 and recs[1]["deploy"] == deploy_version() != recs[0]["deploy"]
    assert (launch_dir(config, recs[0]) / "cancelled.json").exists()


# ---- 5. the disk cannot hold the job's output -------------------------------------------------------


def test_disk_preflight_refuses_to_start(run_dag: Any, config: Any) -> None:
    lake = Lake.from_config(config)
    rel = "catalogue/snapshot=20260101T000000"
    manifest = {"dataset": "catalogue", "path": rel, "revision": 0, "committed_at": "2026-01-01T00:00:00+00:00",
                "producer": {}, "rows": 1, "meta": {}, "quarantine": {},
                "files": [{"path": "part-0.parquet", "size": 10**16, "sha256": "0" * 64, "rows": 1}]}
    assert lake.create_only(lake.abspath(f"{rel}/_manifest/000000.json"), json.dumps(manifest).encode())
    dr = run_dag("selftest_sync_once", {"job_params": {"tag": "disk"}})
    assert state(dr) == "failed"
    assert launches(config) == []  # never started
    assert not output(config, "disk")[0].committed(output(config, "disk")[1])


# ---- 6. a job never ends ----------------------------------------------------------------------------


@pytest.mark.parametrize("dag_id", ["selftest_sync_once", "selftest_deferred_once"])
def test_never_ending_job_is_cancelled_at_its_deadline(run_dag: Any, config: Any, alerts: Any,
                                                       monkeypatch: pytest.MonkeyPatch, dag_id: str) -> None:
    monkeypatch.setenv("SKYREC__JOBS__DEADLINES_MINUTES__SELFTEST", "0.05")  # 3 seconds
    t0 = time.monotonic()
    dr = run_dag(dag_id, {"job_params": {"tag": "hang", "hang": "1", "ignore_sigterm": "1"}})
    elapsed = time.monotonic() - t0
    assert state(dr) == "failed"
    assert elapsed < 40
    (rec,) = launches(config)
    assert group_members(int(rec["pgid"])) == []  # really stopped, SIGTERM ignored -> SIGKILL
    cancelled = json.loads((launch_dir(config, rec) / "cancelled.json").read_text())
    assert cancelled["signal"] == "SIGKILL"
    deadline = [a for a in alerts.received if a["kind"] == "deadline"]
    assert deadline and deadline[0]["details"]["confirmed"] is True
    assert deadline[0]["details"]["deferred"] is (dag_id == "selftest_deferred_once")
    assert "failure" in alerts.kinds()


# ---- 7. kill -9 during commit, storage errors mid-write, concurrent commits ------------------------


def test_kill_job_during_commit_then_retry_commits_once(run_dag: Any, config: Any) -> None:
    params = {"tag": "commitkill", "rows": "3000", "chunks": "3", "commit_delay": "1.5"}
    lake, rel = output(config, "commitkill")
    killed: dict[str, Any] = {}

    def killer() -> None:
        wait_for(lambda: list(Path(lake.abspath(rel)).glob("_attempts/*/data.csv")), timeout=60)
        rec = wait_for(lambda: live_launch(config), timeout=10)
        os.killpg(int(rec["pgid"]), signal.SIGKILL)
        killed["rec"] = rec

    t = threading.Thread(target=killer, daemon=True)
    t.start()
    dr = run_dag("selftest_sync", {"job_params": params})
    assert state(dr) == "success" and "rec" in killed
    assert [r["try_number"] for r in launches(config)] == [1, 2]
    assert sorted(p.name for p in Path(lake.abspath(f"{rel}/_manifest")).iterdir()) == ["000000.json"]
    assert read_rows(lake, rel) == 3000


def test_kill_worker_during_commit_job_finishes_and_retry_adopts_it(run_dag: Any, config: Any) -> None:
    params = {"tag": "workerkill", "rows": "2000", "chunks": "2", "commit_delay": "2"}
    lake, rel = output(config, "workerkill")
    script = (
        "import datetime as dt, json, os, sys\n"
        "from airflow.dag_processing.dagbag import DagBag\n"
        "bag = DagBag(dag_folder=os.environ['AIRFLOW__CORE__DAGS_FOLDER'])\n"
        "when = dt.datetime(2026, 3, 1, 12, tzinfo=dt.UTC)\n"
        "bag.get_dag('selftest_sync_once').test(logical_date=when, run_after=when, run_conf=json.loads(sys.argv[1]))\n"
    )
    worker = subprocess.Popen([sys.executable, "-c", script, json.dumps({"job_params": params})],
                              stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        wait_for(lambda: list(Path(lake.abspath(rel)).glob("_attempts/*/data.csv")), timeout=90)
        worker.send_signal(signal.SIGKILL)  # kill -9 the worker in the middle of the job's commit
        worker.wait(10)
    finally:
        if worker.poll() is None:
            worker.kill()
    (rec,) = launches(config)
    assert group_members(int(rec["pgid"]))  # the job survived its worker
    wait_for(lambda: lake.committed(rel), timeout=30)
    dr = run_dag("selftest_sync_once", {"job_params": params})  # Airflow's retry of the same run
    assert state(dr) == "success"
    assert len(launches(config)) == 1  # adopted the finished job, started nothing
    assert read_rows(lake, rel) == 2000


def test_storage_error_mid_write_commits_nothing_then_retry_succeeds(run_dag: Any, config: Any) -> None:
    params = {"tag": "storage", "rows": "1000", "chunks": "4", "fail_once": "1"}
    dr = run_dag("selftest_sync", {"job_params": params})
    assert state(dr) == "success"
    recs = launches(config)
    assert [r["try_number"] for r in recs] == [1, 2]
    assert "injected storage error" in (result_of(config, recs[0]) or {}).get("error", "")
    lake, rel = output(config, "storage")
    assert lake.require(rel).revision == 0 and read_rows(lake, rel) == 1000
    assert not list(Path(lake.abspath(rel)).glob("_attempts/try1*"))  # the failed attempt's staging is gone


def test_concurrent_attempts_committing_the_same_output(run_dag: Any, config: Any) -> None:
    """Two jobs (different keys) race to commit one output; readers only ever see one complete output."""
    backend = LocalProcessBackend(config)
    params = {"tag": "race", "rows": "4000", "chunks": "2", "commit_delay": "0.5"}
    lake, rel = output(config, "race")
    seen: list[int] = []
    stop = threading.Event()

    errors: list[Exception] = []

    def reader() -> None:
        while not stop.is_set():
            try:
                if lake.committed(rel):
                    seen.append(read_rows(lake, rel))
            except Exception as exc:  # noqa: BLE001 - a reader that fails mid-commit is the failure this test looks for
                errors.append(exc)
                return
            time.sleep(0.02)

    t = threading.Thread(target=reader, daemon=True)
    t.start()
    handles = [backend.submit(spec_for(run_dag, params, task_id=f"racer_{i}")) for i in range(2)]
    wait_for(lambda: all(backend.status(h) != "RUNNING" for h in handles), timeout=60)
    # On a loaded machine both jobs can finish between two of the reader's polls: keep it reading until it
    # has seen the committed output at least once, so the last assertion always has something to judge.
    wait_for(lambda: seen or errors, timeout=10)
    stop.set()
    t.join(5)
    results = [backend.result(h) for h in handles]
    assert all(r and r["status"] == "success" for r in results)
    assert sum("committed by another attempt" in json.dumps(r) for r in results) == 1
    assert sorted(p.name for p in Path(lake.abspath(f"{rel}/_manifest")).iterdir()) == ["000000.json"]
    assert not errors, errors
    assert set(seen) == {4000}


@pytest.mark.parametrize("dag_id", ["selftest_sync_once", "selftest_deferred_once"])
def test_frozen_job_without_heartbeat_is_cancelled(run_dag: Any, config: Any, alerts: Any, dag_id: str,
                                                   monkeypatch: pytest.MonkeyPatch) -> None:
    """A job process that is alive but frozen (SIGSTOP: no progress, no heartbeat) is cancelled long before
    its deadline, and the cancel is confirmed (SIGKILL reaches a stopped process)."""
    monkeypatch.setenv("SKYREC__JOBS__HEARTBEAT_TIMEOUT_SECONDS", "3")
    def freezer() -> None:
        rec = wait_for(lambda: live_launch(config), timeout=60)
        wait_for(lambda: (launch_dir(config, rec) / "heartbeat").exists(), timeout=30)
        os.killpg(int(rec["pgid"]), signal.SIGSTOP)

    t = threading.Thread(target=freezer, daemon=True)
    t.start()
    t0 = time.monotonic()
    dr = run_dag(dag_id, {"job_params": {"tag": "frozen", "hang": "1"}})
    assert state(dr) == "failed" and time.monotonic() - t0 < 40  # deadline is 60 min: the heartbeat decided
    (rec,) = launches(config)
    assert group_members(int(rec["pgid"])) == []
    assert "heartbeat" in alerts.kinds()


def test_failed_gate_fails_without_retries_and_commits_nothing_until_overridden(run_dag: Any, config: Any,
                                                                                alerts: Any) -> None:
    params = {"tag": "gated", "rows": "100", "chunks": "2", "gate": "1"}
    dr = run_dag("selftest_sync", {"job_params": params})  # this DAG has retries=1
    assert state(dr) == "failed"
    assert len(launches(config)) == 1  # a gate fails the same way every time: not retried
    lake, rel = output(config, "gated")
    assert not lake.committed(rel)
    assert "failure" in alerts.kinds()
    dr = run_dag("selftest_sync", {"job_params": params, "overrides": ["selftest"]}, logical_date=None)
    assert state(dr) == "success"
    m = lake.require(rel)
    assert m.rows == 100


def test_alerts_a_job_asks_for_are_delivered(run_dag: Any, config: Any, alerts: Any) -> None:
    """Jobs cannot reach the notifier (no Airflow import): the operator delivers the alerts in their summary,
    e.g. a model published on insufficient evidence under quality_gate.insufficient_evidence: publish_with_alert."""
    dr = run_dag("selftest_sync", {"job_params": {"tag": "alerting", "rows": "10", "chunks": "1", "alert": "1"}})
    assert state(dr) == "success"
    assert "selftest" in alerts.kinds()
