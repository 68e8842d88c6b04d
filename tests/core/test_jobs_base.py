from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

from skyrec.jobs.base import EXIT_BAD_INPUT, RunInfo, execute, job_key


def test_job_key_is_stable_across_attempts_and_differs_per_run() -> None:
    a = RunInfo(dag_id="d", run_id="r1", task_id="t", try_number=1)
    b = RunInfo(dag_id="d", run_id="r1", task_id="t", try_number=3)
    c = RunInfo(dag_id="d", run_id="r2", task_id="t", try_number=1)
    assert a.job_key == b.job_key != c.job_key
    assert job_key("d", "r1", "t") == a.job_key
    assert len(a.job_key) <= 63  # usable as a Kubernetes label value


def test_unknown_job_is_a_clear_failure_recorded_in_result_file(tmp_path: Path, config) -> None:
    result = tmp_path / "result.json"
    code, payload = execute("no_such_job", config=config, result_file=str(result))
    assert code == EXIT_BAD_INPUT
    assert "unknown job 'no_such_job'" in payload["error"]
    assert json.loads(result.read_text())["status"] == "failed"


def test_result_file_is_create_only(tmp_path: Path, config) -> None:
    result = tmp_path / "result.json"
    result.write_text(json.dumps({"status": "success", "first": True}))
    execute("no_such_job", config=config, result_file=str(result))
    assert json.loads(result.read_text())["first"] is True


def test_cli_bad_param_is_one_line(config, skyrec_home) -> None:
    proc = subprocess.run([sys.executable, "-m", "skyrec", "job", "canary", "--param", "oops"],
                          capture_output=True, text=True, timeout=60)
    assert proc.returncode == EXIT_BAD_INPUT
    assert "must be KEY=VALUE" in proc.stderr and "Traceback" not in proc.stderr


def test_bad_input_exit_code_when_run_as_the_launcher_runs_it(config, skyrec_home) -> None:
    """``python -m skyrec.jobs.base`` (the local backend's command): a job's BadInput is exit 4 (not retried),
    a missing upstream output exit 1 (retried)."""
    base = [sys.executable, "-m", "skyrec.jobs.base"]
    bad = subprocess.run([*base, "create_dataset", "--param", "model=nope"], capture_output=True, text=True, timeout=120)
    assert bad.returncode == EXIT_BAD_INPUT, bad.stderr
    assert "unknown model" in bad.stderr and "Traceback" not in bad.stderr
    early = subprocess.run([*base, "ingest_availability"], capture_output=True, text=True, timeout=120)
    assert early.returncode == 1 and "not ready" in early.stderr and "catalogue" in early.stderr, early.stderr
