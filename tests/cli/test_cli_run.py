"""``skyrec run`` as people run it (a subprocess, real Airflow, real job processes): what reaches the
terminal is one line per DAG run and per task with state and duration, never Airflow's own log lines
(they go to the printed log file); a failure shows the task's error and the tail of its job log; a run
that could do nothing is an error that says why."""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

pytestmark = pytest.mark.integration

ROOT = Path(__file__).resolve().parents[2]
FAST = {
    "SKYREC__JOBS__POLL_INTERVAL_SECONDS": "0.1",
    "SKYREC__JOBS__HEARTBEAT_SECONDS": "0.2",
    "SKYREC__AIRFLOW__RETRY_DELAY_SECONDS": "0",
}
# Airflow's log lines (structlog console format) and other signs of its logging
AIRFLOW_LINE = re.compile(r"^\d{4}-\d{2}-\d{2}[T ]\d{2}:\d{2}:\d{2}")
SUCCESS_LINE = re.compile(r"^\s*\S+\s+success\s", re.M)  # a run or task state line reporting success
AIRFLOW_MARKERS = ("[DAG TEST]", "[info", "[warning", "alembic", "airflow.models", "DagBag", "::group::")


@pytest.fixture(scope="module")
def place(tmp_path_factory: pytest.TempPathFactory, dag_folder_home: Any) -> dict[str, Path]:
    """One SKYREC_HOME (so one Airflow metadata DB, migrated once) and a DAG folder with the test DAGs."""
    return dag_folder_home(tmp_path_factory.mktemp("cli-run"), Path(__file__).parent / "dags" / "cli_dags.py")


def skyrec_run(place: dict[str, Path], *args: str, **env: str) -> subprocess.CompletedProcess[str]:
    base_env = {k: v for k, v in os.environ.items() if not k.startswith(("AIRFLOW", "SKYREC"))}
    base_env.update(FAST, SKYREC_HOME=str(place["home"]), SKYREC_PROJECT_ROOT=str(ROOT), SKYREC_ENV="local",
                    AIRFLOW__CORE__DAGS_FOLDER=str(place["dags"]), **env)
    return subprocess.run([sys.executable, "-m", "skyrec", "run", *args], capture_output=True, text=True,
                          env=base_env, timeout=300, cwd=ROOT)


def assert_no_airflow_lines(text: str) -> None:
    for line in text.splitlines():
        assert not AIRFLOW_LINE.match(line), f"Airflow log line on the terminal: {line!r}"
        assert not any(m in line for m in AIRFLOW_MARKERS), f"Airflow log line on the terminal: {line!r}"


def printed_log_file(text: str) -> Path:
    m = re.search(r"Airflow and task logs: (\S+\.log)", text)
    assert m, text
    return Path(m.group(1))


def test_run_prints_one_line_per_task_and_no_airflow_log_lines(place: dict[str, Path]) -> None:
    proc = skyrec_run(place, "cli_two_steps", "--logical-date", "2026-03-01T10:00:00Z")
    out = proc.stdout + proc.stderr
    assert proc.returncode == 0, out
    assert_no_airflow_lines(out)
    lines = [line for line in out.splitlines() if line.strip()]
    assert re.match(r"^cli_two_steps\s+success\s+\d+\.\ds\s+logical date 2026-03-01T10:00:00\+00:00$", lines[0]), out
    assert re.match(r"^  extract\s+success\s+\d+\.\ds$", lines[1]), out
    assert re.match(r"^  load\s+success\s+\d+\.\ds$", lines[2]), out
    assert len(lines) == 4, out  # the run, its two tasks, where the logs are
    log_file = printed_log_file(out)
    assert log_file == place["home"] / "logs" / "airflow" / "cli_two_steps" / "20260301T100000Z.log"
    logged = log_file.read_text()
    assert "[DAG TEST] starting task_id=extract" in logged and "[DAG TEST] end task task_id=load" in logged
    # and the tasks really ran their jobs: both outputs committed
    for tag in ("extract", "load"):
        assert (place["home"] / "lake" / "selftest" / tag / "run=20260301T100000" / "_manifest" / "000000.json").exists()


def test_failed_task_shows_its_error_and_the_tail_of_its_job_log(place: dict[str, Path]) -> None:
    proc = skyrec_run(place, "cli_two_steps", "--logical-date", "2026-03-01T11:00:00Z",
                      "--conf", '{"job_params": {"fail": "1"}}', SKYREC_DEBUG="1")
    out = proc.stdout + proc.stderr
    assert proc.returncode == 1, out
    assert_no_airflow_lines(out)
    assert re.search(r"^cli_two_steps\s+failed\s", out, re.M), out
    assert re.search(r"^  extract\s+success\s", out, re.M), out
    assert re.search(r"^  load\s+failed\s", out, re.M), out
    # the task's error, as the operator raised it
    assert re.search(r"^    JobError: job selftest \(load-[0-9a-f]+\) ended FAILED: RuntimeError: selftest: "
                     r"failing on request \(fail=1\)$", out, re.M), out
    # the tail of the job's own log (the job process's traceback and last line), and where that log is
    m = re.search(r"last (\d+) lines of its job log (\S+/job\.log):", out)
    assert m, out
    job_log = Path(m.group(2))
    assert job_log.is_relative_to(place["home"] / "state" / "jobs") and job_log.exists()
    tail = [line[len("    | "):] for line in out.splitlines() if line.startswith("    | ")]
    assert len(tail) == int(m.group(1)) > 1
    assert tail == [line.rstrip() for line in job_log.read_text().splitlines() if line.strip()][-len(tail):]
    assert 'raise RuntimeError("selftest: failing on request (fail=1)")' in out
    assert "skyrec job selftest: RuntimeError: selftest: failing on request (fail=1)" in tail
    assert printed_log_file(out).exists()


def test_logical_date_before_the_start_date_is_an_error_naming_it(place: dict[str, Path]) -> None:
    proc = skyrec_run(place, "cli_two_steps", "--logical-date", "2025-06-01T10:00:00Z")
    out = proc.stdout + proc.stderr
    assert proc.returncode == 2, out
    assert not SUCCESS_LINE.search(out), out
    assert ("logical date 2025-06-01T10:00:00+00:00 is before the start date 2026-01-01T00:00:00+00:00 "
            "of DAG cli_two_steps") in proc.stderr
    assert not (place["home"] / "lake" / "selftest" / "extract" / "run=20250601T100000").exists()


def test_run_in_which_no_task_executed_is_an_error_saying_why(place: dict[str, Path]) -> None:
    proc = skyrec_run(place, "cli_not_yet", "--logical-date", "2026-03-01T10:00:00Z")
    out = proc.stdout + proc.stderr
    assert proc.returncode == 1, out
    assert not SUCCESS_LINE.search(out), out
    assert "DAG cli_not_yet, logical date 2026-03-01T10:00:00+00:00: no task ran" in proc.stderr
    assert "task 'later' starts 2027-01-01T00:00:00+00:00" in proc.stderr
