"""Job policy, sweeper and alerts against the real local-process backend and a real HTTP receiver."""

from __future__ import annotations

import datetime as dt
import json
import threading
import time
from pathlib import Path
from typing import Any

import pytest
from scheduler_fixtures import wait_for

from skyrec.airflow.backends import RUNNING, SUCCEEDED, JobSpec, deploy_version
from skyrec.airflow.backends.local import LocalProcessBackend, group_members
from skyrec.airflow.control import decide, estimate_cost, key_lock
from skyrec.airflow.notify import check_duration, read_alerts, send_alert
from skyrec.airflow.sweeper import sweep
from skyrec.jobs.base import RunInfo

WHEN = dt.datetime(2026, 3, 1, 12, tzinfo=dt.UTC)


def spec(params: dict[str, str], *, run_id: str = "manual__r1", task_id: str = "selftest", try_number: int = 1,
         deploy: str | None = None) -> JobSpec:
    run = RunInfo(dag_id="d", run_id=run_id, task_id=task_id, try_number=try_number, logical_date=WHEN)
    return JobSpec(job="selftest", run=run, params=params, deploy=deploy or deploy_version())


def sigterm_ignored(backend: LocalProcessBackend, handle: dict[str, Any]) -> bool:
    """The job's process has SIGTERM in its ignored set (/proc/PID/status SigIgn, bit 15 - 1)."""
    backend.status(handle)  # fills in the pid once the launcher has recorded it
    if handle.get("pid") is None:
        return False
    try:
        status = Path(f"/proc/{handle['pid']}/status").read_text()
    except OSError:
        return False
    mask = next(int(line.split()[1], 16) for line in status.splitlines() if line.startswith("SigIgn:"))
    return bool(mask & (1 << (15 - 1)))


@pytest.fixture
def backend(config: Any) -> Any:
    b = LocalProcessBackend(config)
    yield b
    for h in b.list_all():
        if h.get("pgid") and group_members(int(h["pgid"])):
            b.cancel(h, 0.5)


def test_lookup_by_key_finds_a_job_whose_pid_was_never_saved(backend: Any) -> None:
    """The worker died between starting the process and saving its id: the key still finds it."""
    h = backend.submit(spec({"hang": "1", "tag": "gap"}))
    launch = backend.launch_dir(h) / "launch.json"
    rec = json.loads(launch.read_text())
    rec.update(pid=None, pgid=None, proc_start=None, state="launching")
    launch.write_text(json.dumps(rec))
    d = decide(backend, spec({"hang": "1", "tag": "gap"}, try_number=2), stored=None)
    assert d.action == "reattach"
    assert d.handle["pid"] == h["pid"] and d.handle.get("recovered") is True
    assert backend.cancel(d.handle, 0.5)


def test_concurrent_attempts_start_exactly_one_job(backend: Any) -> None:
    started: list[str] = []
    barrier = threading.Barrier(4)

    def attempt(i: int) -> None:
        s = spec({"chunk_seconds": "0.3", "chunks": "3", "tag": "conc"}, try_number=i + 1)
        barrier.wait()
        with key_lock(backend, s.job_key):
            d = decide(backend, s)
            if d.action == "submit":
                started.append(backend.submit(s)["launch_id"])

    threads = [threading.Thread(target=attempt, args=(i,)) for i in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert len(started) == 1
    assert len(backend.find(spec({}).job_key)) == 1


def test_never_reattaches_to_a_job_of_another_run(backend: Any) -> None:
    other = backend.submit(spec({"hang": "1", "tag": "other"}, run_id="manual__other"))
    mine = spec({"tag": "other"}, run_id="manual__mine")
    d = decide(backend, mine, stored=other, cancel_timeout=0.5)  # a stale handle pointing at another run's job
    assert d.action == "submit"
    assert any("belongs to run 'manual__other'" in n for n in d.notes)
    assert backend.status(other) != RUNNING and not group_members(int(other["pgid"]))


def test_failed_job_of_an_earlier_attempt_is_not_adopted(backend: Any) -> None:
    first = backend.submit(spec({"fail": "1", "tag": "f", "rows": "5", "chunks": "1"}))
    deadline = time.monotonic() + 30
    while backend.status(first) == RUNNING and time.monotonic() < deadline:
        time.sleep(0.05)
    assert backend.status(first) == "FAILED"
    assert decide(backend, spec({"tag": "f"}, try_number=2)).action == "submit"


def test_cancel_escalates_to_sigkill_and_confirms(backend: Any) -> None:
    h = backend.submit(spec({"hang": "1", "ignore_sigterm": "1", "tag": "stubborn"}))
    # wait until the job really ignores SIGTERM (its start takes ~1 s, longer on a loaded machine)
    wait_for(lambda: sigterm_ignored(backend, h), 30, "the job to ignore SIGTERM", interval=0.05)
    t0 = time.monotonic()
    assert backend.cancel(h, timeout=0.5) is True
    assert time.monotonic() - t0 < 10
    assert group_members(int(h["pgid"])) == []
    assert json.loads((backend.launch_dir(h) / "cancelled.json").read_text())["signal"] == "SIGKILL"
    assert backend.status(h) == "CANCELLED"


def test_sweeper_cancels_jobs_whose_task_instance_is_not_running(backend: Any, config: Any, alerts: Any) -> None:
    orphan = backend.submit(spec({"hang": "1", "tag": "orphan"}, task_id="orphan"))
    kept = backend.submit(spec({"hang": "1", "tag": "kept"}, task_id="kept"))
    from skyrec.config import load_config

    states = {"orphan": "failed", "kept": "running"}
    swept = sweep(load_config("local"), lambda dag, run, task: states[task])  # config with the webhook set
    assert [s["job_key"] for s in swept] == [orphan["job_key"]]
    assert swept[0]["confirmed"] is True and "is failed" in swept[0]["reason"]
    assert backend.status(orphan) == "CANCELLED" and backend.status(kept) == RUNNING
    assert "sweeper" in alerts.kinds()


def test_sweeper_falls_back_to_owner_liveness(backend: Any, config: Any, monkeypatch: pytest.MonkeyPatch) -> None:
    h = backend.submit(spec({"hang": "1", "tag": "unknown"}))
    backend.touch_owner(h, {"watcher": "worker"})
    assert sweep(config, lambda *a: None) == []  # owner seen just now
    owner = backend.launch_dir(h) / "owner.json"
    rec = json.loads(owner.read_text())
    rec["at"] = time.time() - 3600
    owner.write_text(json.dumps(rec))
    swept = sweep(config, lambda *a: None)
    assert len(swept) == 1 and "owner has not been seen" in swept[0]["reason"]


def test_alerts_reach_a_real_webhook_and_the_local_trail(config_factory: Any, alerts: Any) -> None:
    from skyrec.config import load_config

    cfg = load_config("local")
    assert send_alert(cfg, "failure", "x failed", dag_id="d") is True
    assert alerts.received[0]["kind"] == "failure" and alerts.received[0]["details"]["dag_id"] == "d"
    assert read_alerts(cfg)[-1]["delivered"] is True


def test_unreachable_webhook_never_raises(config_factory: Any) -> None:
    cfg = config_factory({"alerts": {"webhook_url": "http://127.0.0.1:9/nothing"}})
    assert send_alert(cfg, "cost", "too expensive") is False
    assert read_alerts(cfg)[-1]["delivered"] is False


def test_duration_anomaly_alert(config: Any, alerts: Any) -> None:
    from skyrec.config import load_config

    cfg = load_config("local")
    for seconds in (10, 11, 9, 10):
        assert check_duration(cfg, "train_model", "als.train", seconds) is None
    anomaly = check_duration(cfg, "train_model", "als.train", 45)
    assert anomaly and anomaly["median"] == 10
    assert alerts.kinds() == ["duration_anomaly"]


@pytest.mark.integration
def test_cost_estimate_and_budget_alert_in_every_environment(run_dag: Any, alerts: Any,
                                                             monkeypatch: pytest.MonkeyPatch) -> None:
    from skyrec.config import load_config

    cfg = load_config("local")
    assert estimate_cost(cfg, {"vcpus": 4, "memory_gb": 16}, 3600) == pytest.approx(4 * 0.056 + 16 * 0.0035)
    monkeypatch.setenv("SKYREC__JOBS__COST__BUDGET_PER_JOB", "0")
    dr = run_dag("selftest_sync_once", {"job_params": {"tag": "cost", "rows": "10", "chunks": "1"}})
    assert str(getattr(dr.state, "value", dr.state)) == "success"
    cost = [a for a in alerts.received if a["kind"] == "cost"]
    assert cost and cost[0]["details"]["budget"] == 0


def test_result_of_a_succeeded_job(backend: Any) -> None:
    h = backend.submit(spec({"tag": "ok", "rows": "10", "chunks": "2"}))
    deadline = time.monotonic() + 30
    while backend.status(h) == RUNNING and time.monotonic() < deadline:
        time.sleep(0.05)
    assert backend.status(h) == SUCCEEDED
    assert backend.result(h)["summary"]["rows"] == 10
    text, offset = backend.read_log(h, 0)
    assert '"rows": 10' in text and offset == len(text.encode())
    assert Path(backend.launch_dir(h) / "heartbeat").exists()


def test_post_condition_checks_that_a_model_loads(config: Any) -> None:
    import numpy as np
    import scipy.sparse as sp

    from skyrec.airflow.backends import JobError
    from skyrec.airflow.control import check_model, verify_outputs
    from skyrec.models.artefact import save_artefact
    from skyrec.storage import Lake, Producer

    lake = Lake.from_config(config)

    def commit(rel: str, n_users: int, n_items: int, d_user: int = 4) -> Any:
        with lake.stage("model", rel, Producer()) as stage:
            save_artefact(stage, user_ids=np.arange(n_users), item_ids=np.arange(n_items),
                          user_factors=np.ones((n_users, d_user), np.float32),
                          item_factors=np.ones((n_items, 4), np.float32), seen=sp.csr_matrix((n_users, n_items)))
            return stage.commit()

    good = commit("models/als/v1/run=20260301T120000", 5, 7)
    check_model(lake, good)
    s = spec({"model": "als"})
    result = {"status": "success", "summary": {"outputs": [good.path]}}
    assert [m.path for m in verify_outputs(config, lake, s, result, ["model"])] == [good.path]
    with pytest.raises(JobError, match="committed no 'training_dataset'"):
        verify_outputs(config, lake, s, result, ["training_dataset"])
    bad = commit("models/als/v1/run=20260301T130000", 5, 7, d_user=3)
    with pytest.raises(JobError, match="factor shapes"):
        check_model(lake, bad)
    with pytest.raises(JobError, match="no committed manifest"):
        verify_outputs(config, lake, s, {"status": "success", "summary": {"outputs": ["models/als/v1/run=x"]}})
    with pytest.raises(JobError, match="without a result file"):
        verify_outputs(config, lake, s, None)


def test_local_settings_drift_is_caught_at_submit(backend: Any, monkeypatch: pytest.MonkeyPatch) -> None:
    """Something between us and the process (a wrapper, a changed PATH) alters what runs: caught, cancelled."""
    from skyrec.airflow.backends import SettingsDrift
    from skyrec.airflow.control import check_settings

    original = LocalProcessBackend.command
    monkeypatch.setattr(LocalProcessBackend, "command", lambda self, s, launch: [
        "/usr/bin/env", "SKYREC_DEPLOY_VERSION=tampered", *original(self, s, launch)])
    s = spec({"hang": "1", "tag": "tamper"})
    h = backend.submit(s)
    # until /usr/bin/env has exec'd the job, the process is env itself (longer than 0.5 s on a loaded machine)
    wait_for(lambda: backend.effective_settings(h).get("deploy") == "tampered", 30, "the wrapper's exec",
             interval=0.05)
    with pytest.raises(SettingsDrift, match="deploy: pinned"):
        check_settings(backend, s, h)
    assert backend.status(h) == "CANCELLED" and group_members(int(h["pgid"])) == []


def test_on_kill_cancels_the_job(backend: Any) -> None:
    from skyrec.airflow.operators import SkyrecJobOperator

    h = backend.submit(spec({"hang": "1", "tag": "killed"}))
    op = SkyrecJobOperator(task_id="selftest", job="selftest")
    op._handle = h
    op.on_kill()
    assert group_members(int(h["pgid"])) == [] and backend.status(h) == "CANCELLED"


@pytest.mark.integration
def test_sweeper_task_asks_airflow_for_task_states(run_dag: Any, config: Any) -> None:
    """A job whose task instance Airflow has marked failed is cancelled by airflow_monitoring's sweeper."""
    dr = run_dag("selftest_sync_once", {"job_params": {"tag": "swept", "fail": "1", "rows": "2", "chunks": "1"}})
    assert str(getattr(dr.state, "value", dr.state)) == "failed"
    b = LocalProcessBackend(config)
    orphan_run = RunInfo(dag_id="selftest_sync_once", run_id=run_dag.run_id(), task_id="selftest", try_number=1,
                         logical_date=WHEN)
    orphan = b.submit(JobSpec(job="selftest", run=orphan_run, params={"hang": "1", "tag": "swept2"}))
    later = dt.datetime(2026, 3, 1, 12, 5, tzinfo=dt.UTC)
    dr = run_dag("airflow_monitoring", logical_date=later)
    assert str(getattr(dr.state, "value", dr.state)) == "success"
    assert b.status(orphan) == "CANCELLED" and group_members(int(orphan["pgid"])) == []
    swept = [a for a in read_alerts(config) if a["kind"] == "sweeper"]
    assert swept and "task instance selftest_sync_once.selftest" in swept[0]["summary"]
    assert "is failed" in swept[0]["summary"]  # decided from Airflow's metadata, not the owner fallback


OLD_DEPLOY = "0.1.0+d20261120090000.gaaaaaaaaaaaa"
NEW_DEPLOY = "0.1.0+d20261130090000.gbbbbbbbbbbbb"


def test_deploy_order_by_deploy_time_then_package_version() -> None:
    from skyrec.airflow.backends import deploy_order

    assert deploy_order(NEW_DEPLOY, OLD_DEPLOY) == 1 and deploy_order(OLD_DEPLOY, NEW_DEPLOY) == -1
    # a rollback to older code is a later deploy: newer
    assert deploy_order("0.0.9+d20261201000000.gcccc", NEW_DEPLOY) == 1
    assert deploy_order("skyrec-0.2.0", "skyrec-0.1.0") == 1
    assert deploy_order("0.1.0+gaaaa", "0.1.0+gbbbb") is None  # two builds of one version: no order
    assert deploy_order(NEW_DEPLOY, NEW_DEPLOY) == 0


def test_an_older_deploy_never_cancels_a_newer_deploys_job(backend: Any) -> None:
    from skyrec.airflow.backends import JobError

    newer = backend.submit(spec({"hang": "1", "tag": "order"}, deploy=NEW_DEPLOY))
    stale_worker = spec({"hang": "1", "tag": "order"}, try_number=2, deploy=OLD_DEPLOY)
    with pytest.raises(JobError, match="not older than this deploy"):
        decide(backend, stale_worker, cancel_timeout=0.5)
    assert backend.status(newer) == RUNNING  # untouched
    unordered = spec({"hang": "1", "tag": "order"}, try_number=3, deploy="0.1.0+gdev")
    with pytest.raises(JobError, match="not older"):
        decide(backend, unordered, cancel_timeout=0.5)
    assert backend.status(newer) == RUNNING
    # the newer deploy's own retry reattaches; an even newer deploy replaces it
    assert decide(backend, spec({"hang": "1", "tag": "order"}, try_number=4, deploy=NEW_DEPLOY)).action == "reattach"
    newest = spec({"hang": "1", "tag": "order"}, try_number=5, deploy="0.1.0+d20261201000000.gcccc")
    d = decide(backend, newest, cancel_timeout=0.5)
    assert d.action == "submit" and backend.status(newer) != RUNNING
