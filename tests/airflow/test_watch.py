"""The follower of the real scheduler (``skyrec watch`` / ``skyrec up --follow``): state diffing and output
against payloads recorded from Airflow 3.3's REST API, and the REST client against a local HTTP server.

The follower on the path users run -- ``skyrec up --follow`` beside the real scheduler, printing the chain's
task lines and a failed task's error and job-log tail -- is tested in ``test_scheduler_platform.py``.
"""

from __future__ import annotations

import copy
import datetime as dt
import io
import json
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any
from urllib.parse import parse_qsl, urlparse

import pytest

from skyrec.airflow.watch import (
    AirflowAPI,
    Change,
    Follower,
    HumanOutput,
    JsonOutput,
    StateTracker,
    WatchError,
    error_from_log,
    parse_since,
    task_log_path,
)
from skyrec.config import load_config

RECORDED = json.loads((Path(__file__).parent / "watch_payloads.json").read_text())
NOW = dt.datetime(2026, 11, 30, 8, 0, tzinfo=dt.UTC)


def tis() -> list[dict[str, Any]]:
    return copy.deepcopy(RECORDED["task_instances"]["task_instances"])


def runs() -> list[dict[str, Any]]:
    return copy.deepcopy(RECORDED["dag_runs"]["dag_runs"])


# ---- state diffing ------------------------------------------------------------------------------------

def test_each_state_change_is_reported_once() -> None:
    tracker = StateTracker()
    first, missed = tracker.task_instances(tis(), NOW)
    assert missed == []
    assert [(c.dag_id, c.task_id, c.state, c.try_number, c.max_tries) for c in first] == [
        ("selftest_sync_once", "selftest", "failed", 1, 1),
        ("selftest_sync", "selftest", "failed", 2, 2),
        ("selftest_sync", "selftest", "failed", 2, 2)]
    assert first[0].duration == pytest.approx(23.752) and first[0].at.startswith("2026-11-30T07:22:58")
    assert tracker.task_instances(tis(), NOW) == ([], [])  # the same payload again: nothing changed
    again = tis()
    again[0].update(state="running", end_date=None, duration=None)
    (change,), _ = tracker.task_instances(again, NOW)
    assert (change.state, change.previous, change.duration) == ("running", "failed", None)

    first_runs = tracker.dag_runs(runs(), NOW)
    assert [(c.dag_id, c.state, c.task_id) for c in first_runs] == [
        ("selftest_sync_once", "failed", None), ("selftest_sync", "failed", None), ("selftest_sync", "failed", None)]
    assert first_runs[0].duration is not None and tracker.dag_runs(runs(), NOW) == []


def test_an_attempt_not_seen_to_end_comes_from_the_tries_history() -> None:
    tracker = StateTracker()
    ti = tis()[2]  # selftest_sync: try 1 failed (retried), try 2 failed
    running1 = {**ti, "try_number": 1, "state": "running", "end_date": None, "duration": None}
    tracker.task_instances([running1], NOW)
    running2 = {**ti, "try_number": 2, "state": "running", "end_date": None, "duration": None}
    (change,), missed = tracker.task_instances([running2], NOW)
    assert change.state == "running" and change.try_number == 2
    assert change.at == "2026-11-30T07:25:13+00:00"  # its start (the recorded try 2 started then)
    assert missed == [((ti["dag_id"], ti["dag_run_id"], "selftest", -1), 1)]
    ended = tracker.attempts_ended(missed[0][0], 1, RECORDED["tries"]["task_instances"], NOW)
    assert [(c.try_number, c.state, c.retried) for c in ended] == [(1, "failed", True)]  # try 2 is still current
    for c in ended:
        tracker.count(c)
    assert tracker.summary(1.0)["task_attempts_by_state"] == {"up_for_retry": 1} and tracker.failures == []
    # an attempt seen to end (up_for_retry) is not looked up again
    tracker2 = StateTracker()
    tracker2.task_instances([{**running1, "state": "up_for_retry"}], NOW)
    assert tracker2.task_instances([running2], NOW)[1] == []


def test_a_task_resumed_after_deferral_is_dated_when_seen() -> None:
    tracker = StateTracker()
    deferred = {**tis()[0], "state": "deferred", "end_date": None, "duration": None}
    (d,), _ = tracker.task_instances([deferred], NOW)
    assert d.at == NOW.isoformat(timespec="seconds")  # Airflow keeps no date for it
    later = NOW + dt.timedelta(seconds=30)
    (r,), _ = tracker.task_instances([{**deferred, "state": "running"}], later)
    assert r.at == later.isoformat(timespec="seconds")  # not its first start, which was long before


def test_the_error_comes_from_the_structured_task_log() -> None:
    error = error_from_log(RECORDED["log_try2"]["content"])
    assert error is not None and error.startswith("JobError: job selftest (selftest-")
    assert "RuntimeError: selftest: failing on request (fail=1)" in error
    plain = [{"event": "started", "level": "info"}, {"event": "boom: disk full", "level": "error"}]
    assert error_from_log(plain) == "boom: disk full"
    assert error_from_log([{"event": "fine", "level": "info"}, "not json"]) is None


# ---- output -------------------------------------------------------------------------------------------

def failed_change(**kw: Any) -> Change:
    base = dict(dag_id="train_model", run_id="manual__1", task_id="als.train", state="failed",
                at="2026-11-30T07:25:22+00:00", try_number=2, max_tries=2, duration=8.11,
                error="JobError: job train ended FAILED: ValueError: no users", job_log="/state/jobs/x/job.log",
                job_log_tail=["loading dataset", "ValueError: no users"], task_log="/airflow/logs/attempt=2.log")
    base.update(kw)
    return Change(**base)  # type: ignore[arg-type]


def test_people_get_a_line_per_change_and_a_failures_error_and_job_log() -> None:
    out = io.StringIO()
    human = HumanOutput(out)
    human.change(Change(dag_id="train_model", run_id="manual__1", state="queued", at="2026-11-30T07:25:00+00:00"))
    human.change(Change(dag_id="train_model", run_id="manual__1", state="running", at="2026-11-30T07:25:01+00:00"))
    human.change(failed_change(state="failed", try_number=1, retried=True, job_log_tail=[]))
    human.change(failed_change())
    text = out.getvalue()
    lines = text.splitlines()
    assert "queued" not in text  # scheduled/queued only with --all-states
    assert lines[0].startswith("train_model ") and " running " in lines[0] and "run manual__1" in lines[0]
    assert lines[1].startswith("  train_model / als.train ") and "failed" in lines[1] and "try 1 of 2" in lines[1]
    assert lines[2] == "  train_model / als.train (try 1) - retried: error"
    assert "8.1s" in lines[5] and "try 2 of 2" in lines[5]
    assert "train_model / als.train (try 2): error" in text
    assert "    JobError: job train ended FAILED: ValueError: no users" in lines
    assert "  last 2 lines of its job log /state/jobs/x/job.log:" in lines
    assert lines.count("    | ValueError: no users") == 1 and text.count("job log") == 1  # retried: no tail
    assert text.count("Airflow task log: /airflow/logs/attempt=2.log") == 2

    all_states = io.StringIO()
    HumanOutput(all_states, all_states=True).change(
        Change(dag_id="d", run_id="r", state="queued", at="2026-11-30T07:25:00+00:00"))
    assert " queued " in all_states.getvalue()


def test_a_try_beyond_the_tasks_own_tries_is_said_so() -> None:
    """A task without retries whose attempt Airflow ran again (the scheduler restarted under it) is on try 2
    of a task that allows 1: the line says so instead of "try 2 of 1"; a task's only try has no note."""
    out = io.StringIO()
    human = HumanOutput(out)
    human.change(failed_change(state="running", try_number=1, max_tries=1, error=None, duration=None))
    human.change(failed_change(try_number=2, max_tries=1))
    human.change(failed_change(try_number=3, max_tries=3))
    lines = out.getvalue().splitlines()
    assert "try" not in lines[0]
    assert lines[1].endswith("try 2, beyond the 1 allowed (run again by Airflow)") and " of 1" not in lines[1]
    assert any(line.endswith("try 3 of 3") for line in lines[2:])


def test_the_summary_counts_runs_and_attempts_and_names_the_failures() -> None:
    tracker = StateTracker()
    tracker.dag_runs(runs(), NOW)
    changes, _ = tracker.task_instances(tis(), NOW)
    for c in changes:
        tracker.count(c)
    summary = tracker.summary(75.0)
    assert summary["dag_runs_by_state"] == {"failed": 3} and summary["task_attempts_ended"] == 3
    out = io.StringIO()
    HumanOutput(out).summary(summary)
    first, *rest = out.getvalue().splitlines()
    assert first == "followed 1m15s: 3 DAG run(s) (3 failed), 3 task attempt(s) ended (3 failed)"
    assert rest[0].startswith("  failed: selftest_sync_once / selftest (try 1, run manual__")


def test_json_lines_for_scripts() -> None:
    out = io.StringIO()
    js = JsonOutput(out)
    js.start({"api": "http://x", "logs": {}})
    js.change(failed_change())
    js.summary(StateTracker().summary(1.0))
    start, change, summary = (json.loads(line) for line in out.getvalue().splitlines())
    assert start["kind"] == "start" and summary["kind"] == "summary"
    assert change["kind"] == "task" and change["state"] == "failed" and change["job_log_tail"][-1] == "ValueError: no users"


# ---- one polling round --------------------------------------------------------------------------------

class RecordedAPI:
    """Answers the follower's requests from the recorded payloads (the boundary to the API server)."""

    def __init__(self) -> None:
        self.calls: list[tuple[str, dict[str, Any]]] = []
        self.ti_items = tis()

    def pages(self, path: str, key: str, params: Any = ()) -> list[dict[str, Any]]:
        self.calls.append((path, dict(params)))
        return runs() if key == "dag_runs" else copy.deepcopy(self.ti_items)

    def get(self, path: str, params: Any = ()) -> Any:
        self.calls.append((path, dict(params)))
        if "/logs/" in path:
            return RECORDED["log_try2"]
        if path.endswith("/tries"):
            return RECORDED["tries"]
        return RECORDED["ti"]


def test_a_round_diffs_enriches_failures_and_asks_only_for_what_changed(tmp_path: Path,
                                                                         monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("SKYREC_HOME", str(tmp_path / "home"))
    config = load_config("local")
    api = RecordedAPI()
    ti = api.ti_items[0]
    log = task_log_path(tmp_path / "airflow", Change(dag_id=ti["dag_id"], run_id=ti["dag_run_id"], state="failed",
                                                     at="", task_id="selftest", try_number=1))
    log.parent.mkdir(parents=True)
    log.write_text("{}")
    out = io.StringIO()
    follower = Follower(api, config, HumanOutput(out), airflow_home=tmp_path / "airflow",  # type: ignore[arg-type]
                        since=NOW - dt.timedelta(minutes=10))
    before = dt.datetime.now(dt.UTC)
    changes = follower.poll()
    assert [c.state for c in changes if c.task_id] == ["failed", "failed", "failed"]
    failed = [c for c in changes if c.task_id][0]
    assert failed.error and "failing on request" in failed.error
    assert failed.task_log == str(log)
    assert failed.job_log is None  # no job of this task under this state dir: nothing to tail
    first_params = [p for path, p in api.calls if path.endswith("taskInstances")]
    assert first_params[0]["state"] and "updated_at_gte" in first_params[1]  # active ones, then since --since
    api.calls.clear()
    assert follower.poll() == []
    (params,) = [p for path, p in api.calls if path.endswith("taskInstances")]
    since = dt.datetime.fromisoformat(params["updated_at_gte"])  # the previous round's start, less the overlap
    assert "state" not in params and before - dt.timedelta(seconds=11) < since < dt.datetime.now(dt.UTC)


def test_since_accepts_durations_and_times() -> None:
    assert parse_since("10m", NOW) == NOW - dt.timedelta(minutes=10)
    assert parse_since("2h", NOW) == NOW - dt.timedelta(hours=2)
    assert parse_since("2026-11-30T07:00:00Z", NOW) == dt.datetime(2026, 11, 30, 7, tzinfo=dt.UTC)
    assert parse_since(None) is None
    with pytest.raises(WatchError, match="--since 'yesterday'"):
        parse_since("yesterday", NOW)


# ---- the REST client ----------------------------------------------------------------------------------

@pytest.fixture
def server() -> Iterator[dict[str, Any]]:
    """A local HTTP server speaking the parts of Airflow's API the client uses, with recorded bodies."""
    seen: dict[str, Any] = {"tokens": 0, "requests": [], "expire_next": False}

    class Handler(BaseHTTPRequestHandler):
        def log_message(self, *args: Any) -> None:
            pass

        def _send(self, code: int, body: Any) -> None:
            data = json.dumps(body).encode()
            self.send_response(code)
            self.send_header("Content-Type", "application/json")
            self.send_header("Content-Length", str(len(data)))
            self.end_headers()
            self.wfile.write(data)

        def do_POST(self) -> None:
            body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
            if body != {"username": "admin", "password": "pw"}:
                self._send(401, {"detail": "Invalid credentials"})
                return
            seen["tokens"] += 1
            self._send(201, {"access_token": f"t{seen['tokens']}"})

        def do_GET(self) -> None:
            url = urlparse(self.path)
            params = dict(parse_qsl(url.query))
            seen["requests"].append((url.path, params, self.headers.get("Authorization")))
            if self.headers.get("Authorization") != f"Bearer t{seen['tokens']}" or seen["expire_next"]:
                seen["expire_next"] = False
                self._send(401, {"detail": "token expired"})
                return
            if url.path.endswith("/taskInstances"):
                items = [dict(tis()[0], task_id=f"t{i}") for i in range(250)]
                off, lim = int(params["offset"]), int(params["limit"])
                self._send(200, {"task_instances": items[off:off + lim], "total_entries": len(items)})
                return
            self._send(404, {"detail": "Not Found"})

    httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=httpd.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)
    thread.start()
    seen["url"] = f"http://127.0.0.1:{httpd.server_address[1]}"
    try:
        yield seen
    finally:
        httpd.shutdown()
        httpd.server_close()


def test_the_client_logs_in_pages_and_logs_in_again_when_the_token_expires(server: dict[str, Any]) -> None:
    api = AirflowAPI(server["url"], {"mode": "password", "username": "admin", "password": "pw"}, timeout=5)
    items = api.pages("/api/v2/dags/~/dagRuns/~/taskInstances", "task_instances", [("updated_at_gte", "x")])
    assert [i["task_id"] for i in items] == [f"t{i}" for i in range(250)]
    assert [r[1]["offset"] for r in server["requests"]] == ["0", "100", "200"]
    assert all(r[1]["updated_at_gte"] == "x" and r[2] == "Bearer t1" for r in server["requests"])
    server["expire_next"] = True
    api.get("/api/v2/dags/~/dagRuns/~/taskInstances", [("limit", 1), ("offset", 0)])
    assert server["tokens"] == 2  # a 401 made it log in again, once
    with pytest.raises(WatchError, match=r"HTTP 404"):
        api.get("/api/v2/nothing")


def test_the_client_says_what_is_wrong(server: dict[str, Any]) -> None:
    bad = AirflowAPI(server["url"], {"mode": "password", "username": "admin", "password": "wrong"}, timeout=5)
    with pytest.raises(WatchError, match=r"login to the Airflow API at http://127.0.0.1:\d+ refused \(HTTP 401\)"):
        bad.get("/api/v2/version")
    none = AirflowAPI(server["url"], {"mode": "none", "why": "no password in /x/passwords.json"})
    with pytest.raises(WatchError, match="no password in /x/passwords.json"):
        none.get("/api/v2/version")
    gone = AirflowAPI("http://127.0.0.1:9", {"mode": "password", "username": "a", "password": "b"}, timeout=2)
    with pytest.raises(WatchError, match=r"no Airflow API at http://127.0.0.1:9 .*skyrec up"):
        gone.get("/api/v2/version")


def test_watch_without_a_platform_says_how_to_start_one(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from skyrec.airflow.platform import Platform
    from skyrec.airflow.watch import follow_platform

    monkeypatch.setenv("SKYREC_HOME", str(tmp_path / "home"))
    platform = Platform(load_config("local"))
    with pytest.raises(WatchError, match=r"no Airflow api-server that `skyrec up` started .*make airflow"):
        follow_platform(platform, stream=io.StringIO())
    assert not (tmp_path / "home" / "run").exists()  # nothing written for a platform that is not there
