"""SIGTERM / Ctrl-C on ``skyrec run`` stops the run: the running job is cancelled and confirmed stopped,
no further try starts, and the command ends at once, non-zero, with one line saying so.

The path users run: the real CLI as a subprocess (real Airflow ``dag.test()``, real job processes), on a
DAG with a retry left (``selftest_sync``: retries=1, no retry delay), whose job hangs until cancelled. Before
the fix, the SIGTERM cancelled the job, the try failed on the cancelled job and was retried with a fresh
job, and the process never ended.
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import signal
import sqlite3
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import pytest

from skyrec.airflow.backends.local import group_members

pytestmark = pytest.mark.integration

ROOT = Path(__file__).resolve().parents[2]
ENV = {
    "SKYREC__JOBS__POLL_INTERVAL_SECONDS": "0.2",
    "SKYREC__JOBS__HEARTBEAT_SECONDS": "0.2",
    "SKYREC__JOBS__CANCEL_TIMEOUT_SECONDS": "3",
    "SKYREC__AIRFLOW__RETRY_DELAY_SECONDS": "0",
}
STOP_WITHIN = 30.0  # seconds from the signal to the end of the command


@pytest.fixture(scope="module")
def place(tmp_path_factory: pytest.TempPathFactory, dag_folder_home: Any) -> dict[str, Path]:
    """One SKYREC_HOME (one Airflow metadata DB, migrated once) and a DAG folder with the fault DAGs."""
    return dag_folder_home(tmp_path_factory.mktemp("run-interrupted"), Path(__file__).parent / "dags" / "fault_dags.py")


def launches(home: Path) -> list[dict[str, Any]]:
    """Every job launch recorded under this home (the local backend's records), oldest first."""
    out = [json.loads(p.read_text()) for p in (home / "state" / "jobs").glob("*/launches/*/launch.json")]
    return sorted(out, key=lambda h: h.get("started", 0))


def start(place: dict[str, Path], dag_id: str, when: str, job_params: dict[str, str]) -> subprocess.Popen[str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("AIRFLOW", "SKYREC"))}
    env.update(ENV, SKYREC_HOME=str(place["home"]), SKYREC_PROJECT_ROOT=str(ROOT), SKYREC_ENV="local",
               AIRFLOW__CORE__DAGS_FOLDER=str(place["dags"]))
    conf = json.dumps({"job_params": job_params})
    return subprocess.Popen([sys.executable, "-m", "skyrec", "run", dag_id, "--logical-date", when, "--conf", conf],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env, cwd=ROOT,
                            start_new_session=True)  # its own group: the test signals exactly this process


def wait_for_running_job(proc: subprocess.Popen[str], home: Path, timeout: float = 240.0) -> dict[str, Any]:
    """The first launch, once its process is up and beating (the job is running, mid-work)."""
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        assert proc.poll() is None, f"skyrec run ended before its job ran: {proc.communicate()}"
        for h in launches(home):
            beat = home / "state" / "jobs" / h["job_key"] / "launches" / h["launch_id"] / "heartbeat"
            if h.get("pgid") and beat.exists() and group_members(int(h["pgid"])):
                return h
        time.sleep(0.2)
    raise AssertionError("no job started in time")


def stop(proc: subprocess.Popen[str], *signals: signal.Signals, gap: float = 0.0) -> tuple[int, str, float]:
    """Send the signals (``gap`` seconds apart); (exit code, output, seconds from the first signal to the end).
    A command still running after STOP_WITHIN is killed (and the test fails)."""
    t0 = time.monotonic()
    for i, sig in enumerate(signals):
        if i:
            time.sleep(gap)
        os.kill(proc.pid, sig)
    try:
        out, err = proc.communicate(timeout=STOP_WITHIN)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)
        out, err = proc.communicate()
        pytest.fail(f"skyrec run still running {STOP_WITHIN:.0f}s after {signals[0].name}:\n{out}\n{err}")
    return proc.returncode, out + err, time.monotonic() - t0


def kill_leftovers(home: Path) -> None:
    for h in launches(home):
        if h.get("pgid") and group_members(int(h["pgid"])):
            os.killpg(int(h["pgid"]), signal.SIGKILL)


def check_stopped(place: dict[str, Path], job: dict[str, Any], first: signal.Signals, code: int, out: str,
                  dag_id: str, when: str) -> None:
    home = place["home"]
    assert code == 128 + first, f"exit code {code}:\n{out}"
    # the job process (its whole group) is gone, and its cancel was confirmed by the backend
    assert not group_members(int(job["pgid"])), f"job {job['launch_id']} still running after skyrec run ended"
    cancelled = home / "state" / "jobs" / job["job_key"] / "launches" / job["launch_id"] / "cancelled.json"
    assert "confirmed_at" in json.loads(cancelled.read_text())
    # no second try: one launch only, the first try's
    tries = [(h["task_id"], h["try_number"], h["launch_id"]) for h in launches(home)
             if (h["dag_id"], h["run_id"]) == (dag_id, job["run_id"])]
    assert tries == [("selftest", 1, job["launch_id"])], tries
    # one clear line, naming the signal, the task and the job, confirmed
    line = (f"skyrec: interrupted by {first.name}: selftest cancelled (job {job['job_key']}/{job['launch_id']} "
            "confirmed stopped); the run is failed, no retry")
    assert line in out.splitlines(), out
    assert "Traceback" not in out, out
    # Airflow's log of the run: the interruption, and no retry of the task
    logged = (home / "logs" / "airflow" / dag_id / f"{when}.log").read_text()
    assert f"{first.name} received" in logged
    assert "submitted job try2-" not in logged and "Prior job in terminal state" not in logged
    # the metadata DB: the run failed, its one try failed (not up for retry)
    assert re.search(rf"^{dag_id}\s+failed\s", out, re.M), out
    with contextlib.closing(sqlite3.connect(home / "airflow" / "airflow.db")) as db:
        run_state = db.execute("select state from dag_run where dag_id=? and run_id=?", (dag_id, job["run_id"]))
        assert run_state.fetchall() == [("failed",)]
        tis = db.execute("select task_id, state, try_number from task_instance where dag_id=? and run_id=?",
                         (dag_id, job["run_id"]))
        assert tis.fetchall() == [("selftest", "failed", 1)]


@pytest.mark.parametrize(("sig", "dag_id", "when"), [
    pytest.param(signal.SIGTERM, "selftest_sync", "2026-03-02T10:00:00Z", id="sigterm"),
    pytest.param(signal.SIGINT, "selftest_sync", "2026-03-02T11:00:00Z", id="sigint"),
    # deferrable: the job is watched by the trigger, which dag.test() runs inline
    pytest.param(signal.SIGTERM, "selftest_deferred", "2026-03-02T12:00:00Z", id="sigterm-deferred"),
])
def test_a_signal_cancels_the_job_and_ends_the_run_without_a_retry(place: dict[str, Path], sig: signal.Signals,
                                                                     dag_id: str, when: str) -> None:
    proc = start(place, dag_id, when, {"hang": "1", "tag": f"{dag_id}-{sig.name.lower()}"})
    try:
        job = wait_for_running_job(proc, place["home"])
        code, out, seconds = stop(proc, sig)
        assert seconds < STOP_WITHIN
        check_stopped(place, job, sig, code, out, dag_id, when.replace("-", "").replace(":", ""))
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
        kill_leftovers(place["home"])


def test_a_second_signal_while_the_job_is_being_cancelled_leaves_nothing_running(place: dict[str, Path]) -> None:
    """The job ignores SIGTERM, so its cancel waits ``cancel_timeout_seconds`` before the SIGKILL; a second
    SIGTERM and a Ctrl-C arrive during that wait. The cancel still completes, nothing is retried."""
    dag_id = "selftest_sync"
    proc = start(place, dag_id, "2026-03-02T13:00:00Z", {"hang": "1", "ignore_sigterm": "1", "tag": "twice"})
    try:
        job = wait_for_running_job(proc, place["home"])
        launches_before = {h["launch_id"] for h in launches(place["home"])}
        code, out, _ = stop(proc, signal.SIGTERM, signal.SIGTERM, signal.SIGINT, gap=0.5)
        new = [h for h in launches(place["home"]) if h["launch_id"] not in launches_before]
        assert not new, new
        assert code == 128 + signal.SIGTERM, out
        assert not group_members(int(job["pgid"])), "the job outlived skyrec run"
        cancelled = (place["home"] / "state" / "jobs" / job["job_key"] / "launches" / job["launch_id"]
                     / "cancelled.json")
        assert json.loads(cancelled.read_text()).get("signal") == "SIGKILL"  # it ignored SIGTERM: escalated
        assert (f"skyrec: interrupted by SIGTERM: selftest cancelled (job {job['job_key']}/{job['launch_id']} "
                "confirmed stopped); the run is failed, no retry") in out.splitlines(), out
        assert "Traceback" not in out, out
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
        kill_leftovers(place["home"])
