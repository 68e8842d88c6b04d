"""Airflow test harness: one SQLite metadata DB per session, a DAG folder holding the real skyrec DAGs
and the fault-injection DAGs, fast poll/cancel settings, and a real local HTTP alert receiver.

AIRFLOW_HOME must be set before anything imports airflow, hence at conftest import time.
"""

from __future__ import annotations

import atexit
import datetime as dt
import json
import os
import shutil
import tempfile
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest

ROOT = Path(__file__).resolve().parents[2]
_AF = Path(tempfile.mkdtemp(prefix="skyrec-airflow-tests-"))
atexit.register(shutil.rmtree, _AF, ignore_errors=True)  # the session's Airflow home and DAG folder
_DAGS = _AF / "dags"
_DAGS.mkdir()
(_DAGS / "skyrec_dags.py").symlink_to(ROOT / "dags" / "skyrec_dags.py")
(_DAGS / "fault_dags.py").symlink_to(Path(__file__).parent / "dags" / "fault_dags.py")
os.environ["AIRFLOW_HOME"] = str(_AF / "home")
os.environ["AIRFLOW__CORE__DAGS_FOLDER"] = str(_DAGS)
os.environ["AIRFLOW__CORE__LOAD_EXAMPLES"] = "False"
os.environ["AIRFLOW__CORE__UNIT_TEST_MODE"] = "False"
os.environ.setdefault("SKYREC_PROJECT_ROOT", str(ROOT))

FAST = {
    "SKYREC__JOBS__POLL_INTERVAL_SECONDS": "0.1",
    "SKYREC__JOBS__HEARTBEAT_SECONDS": "0.2",
    "SKYREC__JOBS__CANCEL_TIMEOUT_SECONDS": "1.5",
    # the heartbeat timeout stays the shipped 30 s: a job starting or working on a loaded CI machine can be
    # silent for a few seconds, and a shorter timeout there cancels healthy jobs. The test of the timeout
    # itself (test_frozen_job_without_heartbeat_is_cancelled) sets a short one.
    "SKYREC__AIRFLOW__RETRY_DELAY_SECONDS": "0",
}


@pytest.fixture(scope="session")
def airflow_db() -> str:
    from skyrec.airflow.runner import ensure_db

    home = os.environ["AIRFLOW_HOME"]
    Path(home).mkdir(parents=True, exist_ok=True)
    ensure_db(home)
    return home


@pytest.fixture(autouse=True)
def fast_jobs(monkeypatch: pytest.MonkeyPatch, skyrec_home: Path) -> Path:
    for k, v in FAST.items():
        monkeypatch.setenv(k, v)
    monkeypatch.delenv("SKYREC_DEPLOY_VERSION", raising=False)
    return skyrec_home


@pytest.fixture(scope="session")
def dagbag(airflow_db: str) -> Any:
    """The DAG folder parsed once per session (real skyrec DAGs + fault DAGs)."""
    from airflow.dag_processing.dagbag import DagBag

    saved = {k: os.environ.get(k) for k in FAST}
    os.environ.update(FAST)  # parse with the fast settings (retry delay 0): session fixtures precede autouse ones
    try:
        return DagBag(dag_folder=str(_DAGS))
    finally:
        for k, v in saved.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v


class AlertReceiver:
    """A real HTTP server on 127.0.0.1 collecting posted JSON alerts."""

    def __init__(self) -> None:
        received: list[dict[str, Any]] = []
        self.received = received

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                body = self.rfile.read(int(self.headers.get("Content-Length", 0)))
                received.append(json.loads(body))
                self.send_response(204)
                self.end_headers()

            def log_message(self, *args: Any) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}/alerts"
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()

    def kinds(self) -> list[str]:
        return [a["kind"] for a in self.received]

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


@pytest.fixture
def alerts(monkeypatch: pytest.MonkeyPatch) -> Any:
    receiver = AlertReceiver()
    monkeypatch.setenv("SKYREC__ALERTS__WEBHOOK_URL", receiver.url)
    yield receiver
    receiver.close()


WHEN = dt.datetime(2026, 3, 1, 12, 0, tzinfo=dt.UTC)


class DagRunner:
    """dag.test() with a fixed run_after, so calling again with the same date re-runs (retries) that run."""

    def __init__(self, dagbag: Any) -> None:
        self.dagbag = dagbag

    def __call__(self, dag_id: str, conf: dict[str, Any] | None = None, logical_date: dt.datetime | None = None) -> Any:
        from skyrec.airflow.runner import scheduled_intervals

        when = logical_date or WHEN
        with scheduled_intervals():
            return self.dagbag.get_dag(dag_id).test(logical_date=when, run_after=when, run_conf=conf)

    @staticmethod
    def run_id(logical_date: dt.datetime | None = None) -> str:
        from airflow.models.dagrun import DagRun
        from airflow.utils.types import DagRunType

        when = logical_date or WHEN
        return DagRun.generate_run_id(run_type=DagRunType.MANUAL, logical_date=when, run_after=when)

    @staticmethod
    def states(dr: Any) -> dict[str, str]:
        return {ti.task_id: str(getattr(ti.state, "value", ti.state)) for ti in dr.get_task_instances()}


@pytest.fixture
def run_dag(dagbag: Any) -> DagRunner:
    return DagRunner(dagbag)
