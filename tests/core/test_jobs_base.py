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


def _skyrec_job(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "skyrec", "job", *args], capture_output=True, text=True, timeout=120)


def test_cli_override_naming_no_gate_is_refused_before_the_job_runs(config, skyrec_home) -> None:
    proc = _skyrec_job("selftest", "--param", "tag=typo", "--param", "rows=10", "--param", "chunks=1",
                       "--override", "qualty")
    assert proc.returncode == 2, proc.stderr
    assert "unknown gate 'qualty'" in proc.stderr and "did you mean 'quality'" in proc.stderr
    assert "known gates: volume" in proc.stderr and "Traceback" not in proc.stderr
    assert not list(Path(config.state_dir).glob("selftest/typo.chunks"))  # nothing ran
    ok = _skyrec_job("selftest", "--param", "tag=known", "--param", "rows=10", "--param", "chunks=1",
                     "--override=selftest")
    assert ok.returncode == 0, ok.stderr


def test_cli_run_conf_override_naming_no_gate_is_refused_before_airflow_starts(skyrec_home) -> None:
    proc = subprocess.run([sys.executable, "-m", "skyrec", "run", "train_model", "--conf",
                           '{"overrides": ["volum"]}'], capture_output=True, text=True, timeout=120)
    assert proc.returncode == 2, proc.stderr
    assert "--conf overrides: unknown gate 'volum'" in proc.stderr and "did you mean 'volume'" in proc.stderr


def test_cli_job_by_hand_sends_and_records_the_alerts_it_asks_for(config, skyrec_home) -> None:
    """As the Airflow task does with a job's summary ``alerts`` (skyrec.airflow.notify.deliver_alerts): a
    model published under publish_with_alert by `skyrec job evaluate` is not an alert in printed JSON only."""
    from skyrec.airflow.notify import read_alerts

    ask = ["--param", "rows=10", "--param", "chunks=1", "--param", "alert=1"]
    proc = _skyrec_job("selftest", "--param", "tag=by-hand", *ask)
    assert proc.returncode == 0, proc.stderr
    assert json.loads(proc.stdout)["alerts"][0]["kind"] == "selftest"
    sent = [a for a in read_alerts(config) if a["kind"] == "selftest"]
    assert len(sent) == 1 and sent[0]["summary"] == "selftest by-hand: alert on request (alert=1)"
    assert sent[0]["details"]["tag"] == "by-hand" and sent[0]["details"]["job_key"].startswith("selftest-")
    assert "1 alert(s) recorded in" in proc.stderr and "alerts.jsonl" in proc.stderr
    # launched for a task (a scheduler's identity, as a Kubernetes pod runs it): its launcher delivers them
    proc = _skyrec_job("selftest", "--param", "tag=launched", *ask, "--dag-id", "selftest_sync", "--run-id", "r1")
    assert proc.returncode == 0, proc.stderr
    assert json.loads(proc.stdout)["alerts"] and len([a for a in read_alerts(config) if a["kind"] == "selftest"]) == 1
