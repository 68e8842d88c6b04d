"""skyrec under the REAL Airflow scheduler, started the way users start it (``skyrec up``).

One platform for the module: a throwaway Postgres metadata DB, LocalExecutor, and Airflow's scheduler,
dag-processor, triggerer and api-server as separate processes, plus the serving redis-server and the
skyrec API, all started by ``skyrec.airflow.platform.Platform.up``. The DAG folder holds the real skyrec
DAGs and the fault-injection DAGs. One chain runs, triggered as the README says (the backfill through
``airflow dags trigger``); while it runs, the driver injects the faults at the moments they matter:

* the triggerer is killed (-9) while a deferred ``selftest`` job (that never ends) waits, then restarted;
* the scheduler is killed (-9, its whole process group: executor workers and running tasks) while
  ``train_model``'s ``train`` job runs, then restarted;
* the worker process of ``compute_predictions`` (music_mixes, the one precompute DAG left synchronous) is
  killed (-9) while it watches its job.

Beside it runs the follower a person sees in ``make airflow`` (``skyrec up --follow``, a subprocess), and
a ``selftest`` job that fails on request, so that its output can be checked: the chain's task lines, and
a failed task's error and job-log tail.

The tests then check what each fault must not break. Small data (300 users, 10 days).
"""

from __future__ import annotations

import datetime as dt
import json
import os
import re
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path
from typing import Any

import pytest
from scheduler_fixtures import LocalPostgres, launches, manifests, read_json, wait_for

from skyrec.airflow.platform import Platform, PortBusy, is_ours, proc_start
from skyrec.config import load_config
from skyrec.jobs.base import RunInfo
from skyrec.redis_local import free_port

pytestmark = [pytest.mark.integration, pytest.mark.slow]

ROOT = Path(__file__).resolve().parents[2]
VARIANTS = ["comedy_featured", "drama_featured", "gripping_stories", "music_mixes", "recommended_for_you",
            "thought_provoking"]
SYNC_VARIANT = "music_mixes"  # its compute_predictions is watched by the worker (the worker-kill case)
SELFTEST_DEADLINE_S = 75.0
FAILING = {"job_params": {"fail": "1", "tag": "follower"}}  # selftest_sync_once: its job fails after its work


MODEL = "knn"  # the shipped rails' model (config/base.yaml variants)


def pre(variant: str) -> str:
    return f"precompute_recommendations_{MODEL}_{variant}_v1"


def _get(url: str, timeout: float = 3.0) -> tuple[int, Any]:
    try:
        with urllib.request.urlopen(url, timeout=timeout) as resp:
            return resp.status, json.loads(resp.read())
    except urllib.error.HTTPError as exc:
        return exc.code, None
    except (OSError, ValueError):
        return 0, None


def start_follower(platform: Platform, env: dict[str, str], out: Path) -> subprocess.Popen[bytes]:
    """What ``make airflow`` runs: ``skyrec up --follow`` (everything is up already, so it follows at once).
    Ctrl-C is given back its default action in the child: a suite started as a background job (``cmd &``
    from a script, as CI runners may) inherits SIGINT ignored, and the follower would never see the Ctrl-C
    this test sends."""
    with open(out, "wb") as fh:
        return subprocess.Popen([sys.executable, "-m", "skyrec", "up", "--follow", "--api-port", str(platform.api_port),
                                 "--serve-port", str(platform.serve_port), "--redis-port", str(platform.redis_port)],
                                env=env, stdout=fh, stderr=subprocess.STDOUT, cwd=ROOT,
                                preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL))


def stop_follower(proc: subprocess.Popen[bytes], out: Path) -> dict[str, Any]:
    """Let the follower print the chain's end (it polls every 2 s), then Ctrl-C it: it prints its summary."""
    ends = [rf"^{pre(v)}\s+success\s" for v in VARIANTS] + [r"^selftest_sync_once\s+failed\s",
                                                            r"^selftest_deferred_once\s+failed\s"]

    def caught_up() -> bool:
        text = out.read_text(errors="replace")
        return all(re.search(p, text, re.MULTILINE) for p in ends)

    try:
        wait_for(caught_up, 60, "the follower to print the end of the chain", interval=1)
    except AssertionError:
        pass  # the follower test says what is missing
    proc.send_signal(signal.SIGINT)
    try:
        rc = proc.wait(30)
    except subprocess.TimeoutExpired:
        proc.kill()
        rc = proc.wait()
    return {"rc": rc, "text": out.read_text(errors="replace"), "path": str(out)}


def _kill_group(record: dict[str, Any]) -> None:
    assert is_ours(record), record
    os.killpg(int(record["pid"]), signal.SIGKILL)
    wait_for(lambda: not is_ours(record), 10, f"pid {record['pid']} to die")


class Chain:
    def __init__(self, platform: Platform, env: dict[str, str], pg: LocalPostgres, hour: dt.datetime) -> None:
        self.platform = platform
        self.env = env
        self.pg = pg
        self.hour = hour
        self.config = load_config("local", environ=env)
        self.state_dir = Path(self.config.state_dir)
        self.lake = Path(self.config.lake_url)
        self.obs: dict[str, Any] = {}
        from skyrec.airflow.backends.local import LocalProcessBackend

        self.backend = LocalProcessBackend(self.config)

    def trigger(self, dag_id: str, conf: dict[str, Any]) -> subprocess.Popen[bytes]:
        """As the README does: ``airflow dags trigger DAG --conf JSON`` in the platform's environment."""
        return subprocess.Popen([sys.executable, "-m", "airflow", "dags", "trigger", dag_id, "--conf",
                                 json.dumps(conf)], env=self.platform.env(), stdout=subprocess.DEVNULL,
                                stderr=subprocess.DEVNULL)

    def runs(self, dag_like: str) -> list[tuple[str, str, str]]:
        return [tuple(r) for r in self.pg.query(  # type: ignore[misc]
            "select dag_id, run_id, state from dag_run where dag_id like %s order by id", dag_like)]

    def tis(self, dag_like: str, task_id: str | None = None) -> list[dict[str, Any]]:
        rows = self.pg.query("select dag_id, run_id, task_id, state, try_number, start_date, end_date "
                             "from task_instance where dag_id like %s", dag_like)
        keys = ("dag_id", "run_id", "task_id", "state", "try_number", "start_date", "end_date")
        out = [dict(zip(keys, r, strict=True)) for r in rows]
        return [t for t in out if task_id is None or t["task_id"] == task_id]

    def task_log(self, dag_id: str, run_id: str, task_id: str, attempt: int) -> str:
        path = (Path(self.env["AIRFLOW_HOME"]) / "logs" / f"dag_id={dag_id}" / f"run_id={run_id}"
                / f"task_id={task_id}" / f"attempt={attempt}.log")
        return path.read_text(errors="replace") if path.exists() else ""

    def alerts(self) -> list[dict[str, Any]]:
        path = self.state_dir / "alerts.jsonl"
        return [json.loads(x) for x in path.read_text().splitlines() if x.strip()] if path.exists() else []

    # ---- the scenario --------------------------------------------------------------------------
    def drive(self, timeout: float = 480.0) -> None:
        obs = self.obs
        start = self.hour - dt.timedelta(days=10)
        t0 = time.monotonic()
        unpause = subprocess.Popen([sys.executable, "-m", "airflow", "dags", "unpause", "--treat-dag-id-as-regex", "-y",
                                    "^selftest_(deferred|sync)_once$"],
                                   env=self.platform.env(), stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        procs = [unpause, self.trigger("selftest_deferred_once", {"job_params": {"hang": "1", "tag": "triggerer_kill"}}),
                 self.trigger("selftest_sync_once", FAILING),
                 self.trigger("backfill_user_activity", {"start": start.isoformat(), "end": self.hour.isoformat()})]
        for p in procs:  # each is an Airflow CLI start-up: slow on a busy 2-core machine
            assert p.wait(120) == 0
        obs["triggered_after_s"] = time.monotonic() - t0
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            self._triggerer_fault()
            self._scheduler_fault()
            self._worker_fault()
            if self._done():
                obs["chain_seconds"] = time.monotonic() - t0
                return
            time.sleep(0.2)
        raise AssertionError(f"the chain did not finish in {timeout:.0f}s: {self.runs('%')}; observed {obs}")

    def _triggerer_fault(self) -> None:
        obs = self.obs
        st = launches(self.state_dir, dag_id="selftest_deferred_once")
        if not st:
            return
        owner = read_json(Path(st[0]["_dir"]) / "owner.json") or {}
        if "triggerer_killed_at" not in obs:
            if owner.get("watcher") != "triggerer":
                return
            obs["owner_before"] = owner
            obs["selftest_job"] = st[0]
            obs["old_triggerer"] = self.platform.running()["triggerer"]
            _kill_group(obs["old_triggerer"])
            obs["triggerer_killed_at"] = time.time()
            obs["job_status_after_triggerer_kill"] = self.backend.status(st[0])
            self.platform.up()
            obs["triggerer_restarted_at"] = time.time()
            obs["new_triggerer"] = self.platform.running()["triggerer"]
        elif "owner_after" not in obs and owner.get("watcher") == "triggerer" \
                and owner.get("at", 0) > obs["triggerer_restarted_at"] and owner.get("pid") != obs["owner_before"]["pid"]:
            obs["owner_after"] = owner

    def _scheduler_fault(self) -> None:
        obs = self.obs
        if "scheduler_killed_at" in obs:
            return
        train = [x for x in launches(self.state_dir, dag_id="train_model") if x["task_id"].endswith(".train")]
        if not train or self.backend.status(train[-1]) != "RUNNING":
            return
        obs["train_job"] = train[-1]
        obs["old_scheduler"] = self.platform.running()["scheduler"]
        _kill_group(obs["old_scheduler"])
        obs["scheduler_killed_at"] = time.time()
        obs["train_status_at_kill"] = self.backend.status(train[-1])
        self.platform.up()
        obs["new_scheduler"] = self.platform.running()["scheduler"]

    def _worker_fault(self) -> None:
        obs = self.obs
        if "worker_killed_at" in obs:
            return
        cp = launches(self.state_dir, dag_id=pre(SYNC_VARIANT), task_id="compute_predictions")
        if not cp:
            return
        owner = read_json(Path(cp[0]["_dir"]) / "owner.json") or {}
        if owner.get("watcher") != "worker":
            return
        pid = int(owner["pid"])
        obs["worker_pid"], obs["compute_job"] = pid, cp[0]
        obs["worker_cmdline"] = Path(f"/proc/{pid}/cmdline").read_bytes().replace(b"\0", b" ").decode()[:200]
        os.kill(pid, signal.SIGKILL)
        obs["worker_killed_at"] = time.time()
        obs["compute_status_at_kill"] = self.backend.status(cp[0])

    def _done(self) -> bool:
        runs = self.runs("precompute_recommendations_%") + self.runs("selftest_%_once")
        finished = {d for d, _, s in runs if s in {"success", "failed"}}
        if not {pre(v) for v in VARIANTS} | {"selftest_deferred_once", "selftest_sync_once"} <= finished:
            return False
        if any(s in {"running", "queued"} for _, _, s in runs):
            return False
        code, body = _get(f"{self.platform.api_url}/readyz")
        self.obs["last_readyz"] = (code, body)  # in the timeout's message when the API never became ready
        return code == 200 and set((body or {}).get("variants", {})) == set(VARIANTS)


@pytest.fixture(scope="module")
def chain(tmp_path_factory: pytest.TempPathFactory) -> Any:
    from skyrec.data.generate import generate

    pg = LocalPostgres().start()
    base = tmp_path_factory.mktemp("scheduler")
    dags = base / "dags"
    dags.mkdir()
    (dags / "skyrec_dags.py").symlink_to(ROOT / "dags" / "skyrec_dags.py")
    (dags / "fault_dags.py").symlink_to(Path(__file__).parent / "dags" / "fault_dags.py")
    deferred = [pre(v) for v in VARIANTS if v != SYNC_VARIANT]
    env = {k: v for k, v in os.environ.items()
           if not (k.startswith(("AIRFLOW", "SKYREC_")) or k == "PYTEST_CURRENT_TEST")}
    env.update({
        "SKYREC_HOME": str(base / "home"), "SKYREC_PROJECT_ROOT": str(ROOT), "SKYREC_ENV": "local",
        "AIRFLOW_HOME": str(base / "airflow"),
        "AIRFLOW__DATABASE__SQL_ALCHEMY_CONN": pg.url,
        "AIRFLOW__CORE__DAGS_FOLDER": str(dags),
        # a killed scheduler's running tasks are found (and retried) in seconds, not Airflow's 5 minutes
        "AIRFLOW__SCHEDULER__TASK_INSTANCE_HEARTBEAT_TIMEOUT": "20",
        # (the health-check threshold stays Airflow's 30 s: lower, a busy 2-core scheduler resets its own tasks)
        "AIRFLOW__SCHEDULER__ORPHANED_TASKS_CHECK_INTERVAL": "30",
        "AIRFLOW__TRIGGERER__TRIGGERER_HEALTH_CHECK_THRESHOLD": "10",
        "SKYREC__AIRFLOW__DEFERRABLE": json.dumps(deferred),
        "SKYREC__AIRFLOW__RETRY_DELAY_SECONDS": "2",
        "SKYREC__JOBS__POLL_INTERVAL_SECONDS": "0.5",
        "SKYREC__JOBS__CANCEL_TIMEOUT_SECONDS": "3",
        "SKYREC__JOBS__DEADLINES_MINUTES__SELFTEST": str(SELFTEST_DEADLINE_S / 60),
        "SKYREC__GATES__VOLUME__MIN_VOLUME": "1000000",  # 300 users: hourly volumes are noise, not judged
        # 300 users give ~150 evaluable ones: whether the model beats popularity beyond the bootstrap interval there
        # depends on the draw, and this test is about the scheduler, not model quality (tests/evaluation is)
        "SKYREC__TRAINING__QUALITY_GATE__MUST_BEAT_BASELINE": "false",
        "SKYREC__PUBLISH__SCRATCH_REDIS_PORT": str(free_port()),
        "SKYREC__ALERTS__WEBHOOK_URL": "",
    })
    config = load_config("local", environ=env)
    hour = dt.datetime.now(dt.UTC).replace(minute=0, second=0, microsecond=0)
    generate(config, users=300, items=600, days=10, events_per_user=30.0, seed=11, end=hour.isoformat())
    platform = Platform(config, api_port=free_port(), serve_port=free_port(), redis_port=free_port(), environ=env)
    t0 = time.monotonic()
    follower = None
    try:
        up = platform.up(timeout=300)
        ch = Chain(platform, env, pg, hour)
        ch.obs["up"], ch.obs["up_seconds"] = up, time.monotonic() - t0
        follower = start_follower(platform, env, base / "follow.out")
        ch.drive()
        ch.obs["follow"] = stop_follower(follower, base / "follow.out")
        yield ch
    finally:
        if follower is not None and follower.poll() is None:
            follower.kill()
            follower.wait()
        platform.down(timeout=20)
        from skyrec.airflow.backends.local import LocalProcessBackend

        backend = LocalProcessBackend(config)
        for h in backend.list_all():  # jobs run in their own process groups: never leave one behind
            if backend.status(h) == "RUNNING":
                backend.cancel(h, 5)
        pg.stop()
        print(f"\nscheduler chain: up {ch.obs.get('up_seconds', 0):.0f}s, chain {ch.obs.get('chain_seconds', 0):.0f}s"
              if "ch" in locals() else "")


def test_chain_runs_by_itself_and_the_api_serves_the_new_publication(chain: Chain) -> None:
    runs = chain.runs("%")
    ok = {(d, s) for d, _, s in runs}
    for v in VARIANTS:
        assert (pre(v), "success") in ok and (pre(v), "failed") not in ok, runs
    assert ("train_model", "success") in ok
    assert any(r.startswith("asset_triggered__") for d, r, s in runs if d == "train_model" and s == "success")
    # several DAGs' tasks really ran at the same time (LocalExecutor on Postgres)
    spans = [(t["start_date"], t["end_date"], t["dag_id"]) for t in chain.tis("precompute_recommendations_%")
             if t["start_date"] and t["end_date"]]
    assert any(a[0] < b[1] and b[0] < a[1] and a[2] != b[2] for a in spans for b in spans), spans
    # the API serves, for every rail, the publication this chain committed
    code, ready = _get(f"{chain.platform.api_url}/readyz")
    assert code == 200, ready
    for v in VARIANTS:
        committed = [read_json(Path(m)) for m in chain.lake.glob(f"predictions/{v}/v1/*/_manifest/*.json")]
        pubs = {(m or {}).get("meta", {}).get("publication") for m in committed}
        assert ready["variants"][v] in pubs, (v, ready["variants"][v], pubs)
    from skyrec.models.artefact import published_model_pointer, read_ids
    from skyrec.storage import Lake

    lake = Lake.from_config(chain.config)
    ptr = lake.read_pointer(published_model_pointer(MODEL, "v1"))
    users = read_ids(lake, lake.require(ptr["path"]), "users.parquet", "user_id")
    code, body = _get(f"{chain.platform.api_url}/v1/recommendations/recommended_for_you/{users[0]}?limit=5")
    assert code == 200 and body["source"] == "personalised" and body["items"], body
    assert body["model_version"] == ready["variants"]["recommended_for_you"] or body["model_version"]
    # deferrable under the real triggerer: the five configured precompute DAGs deferred, music_mixes did not
    for v in VARIANTS:
        (run_id,) = [r for d, r, s in runs if d == pre(v) and s == "success"][:1]
        log = chain.task_log(pre(v), run_id, "compute_predictions", 1)
        assert ("Pausing task as DEFERRED" in log) == (v != SYNC_VARIANT), (v, log[-500:])


def test_kill_of_the_worker_during_compute_predictions_reattaches_one_job_one_commit(chain: Chain) -> None:
    obs = chain.obs
    assert "worker_killed_at" in obs, obs
    job = obs["compute_job"]
    assert obs["worker_pid"] != job["pid"]  # the worker (task process), not the job
    assert obs["compute_status_at_kill"] in {"RUNNING", "SUCCEEDED"}, obs
    same_run = [x for x in launches(chain.state_dir, dag_id=pre(SYNC_VARIANT), task_id="compute_predictions")
                if x["run_id"] == job["run_id"]]
    assert len(same_run) == 1 and same_run[0]["job_key"] == job["job_key"], same_run  # exactly one job launch
    (ti,) = [t for t in chain.tis(pre(SYNC_VARIANT), "compute_predictions") if t["run_id"] == job["run_id"]]
    assert ti["state"] == "success" and ti["try_number"] >= 2, ti  # the kill failed attempt 1; a retry finished
    retry_log = chain.task_log(pre(SYNC_VARIANT), job["run_id"], "compute_predictions", ti["try_number"])
    adopted = ("reattaching to live job", "already succeeded", "outputs already committed",  # skyrec's decide
               "Job already completed successfully, skipping resubmission")  # Airflow's ResumableJobMixin
    assert any(m in retry_log for m in adopted), retry_log[-1500:]
    assert "submitted job" not in retry_log
    committed = manifests(chain.lake, f"predictions/{SYNC_VARIANT}")
    run_key = RunInfo(logical_date=dt.datetime.fromisoformat(job["spec"]["run"]["logical_date"])).run_key
    mine = {k: v for k, v in committed.items() if k.endswith(f"run={run_key}")}
    assert len(mine) == 1 and all(revs == ["000000.json"] for revs in mine.values()), committed


def test_kill_of_the_triggerer_keeps_the_deferred_job_tracked_and_its_deadline(chain: Chain) -> None:
    obs = chain.obs
    assert "triggerer_killed_at" in obs, obs
    job = obs["selftest_job"]
    assert obs["job_status_after_triggerer_kill"] == "RUNNING"  # the job outlived the triggerer
    assert not is_ours(obs["old_triggerer"]) and obs["new_triggerer"]["pid"] != obs["old_triggerer"]["pid"]
    # still tracked: the restarted triggerer's trigger watched the job (its owner record is refreshed)
    assert "owner_after" in obs, obs
    assert obs["owner_after"]["at"] > obs["triggerer_restarted_at"]
    # the deadline cancelled it (confirmed), measured from the job's start, while deferred
    all_launches = launches(chain.state_dir, dag_id="selftest_deferred_once")
    assert len(all_launches) == 1, all_launches  # no second job
    cancelled = read_json(Path(job["_dir"]) / "cancelled.json")
    assert cancelled and cancelled.get("confirmed_at"), cancelled
    late = cancelled["at"] - (job["started"] + SELFTEST_DEADLINE_S)
    assert -1.0 <= late < 30.0, late
    assert chain.backend.status(job) == "CANCELLED"
    assert proc_start(int(job["pid"])) is None  # the job's process is gone
    (ti,) = chain.tis("selftest_deferred_once", "selftest")
    assert ti["state"] == "failed", ti
    deadline_alerts = [a for a in chain.alerts() if a["kind"] == "deadline"
                       and a["details"].get("job_key") == job["job_key"]]
    assert deadline_alerts and deadline_alerts[0]["details"].get("deferred") is True, chain.alerts()


def test_restart_of_the_scheduler_mid_chain_commits_nothing_twice(chain: Chain) -> None:
    obs = chain.obs
    assert "scheduler_killed_at" in obs, obs
    assert obs["new_scheduler"]["pid"] != obs["old_scheduler"]["pid"]
    train = obs["train_job"]
    # the train task's process died with the scheduler's group; its job survived and was not launched again
    assert len([x for x in launches(chain.state_dir, dag_id="train_model") if x["job_key"] == train["job_key"]]) == 1
    # the train task of that run finished on the restarted scheduler (its DAG run may still fail later on
    # purpose: a train_model run started by the start-up hourly snapshot has too few users for the quality
    # gate, whose policy 'hold' fails it), and the chain went on to succeed
    trains = [t for t in chain.tis("train_model", f"{MODEL}.train") if t["run_id"] == train["run_id"]]
    assert [t["state"] for t in trains] == ["success"], trains
    assert any(state == "success" for _, _, state in chain.runs("train_model")), chain.runs("train_model")
    # nothing committed twice: one manifest revision per output. The one exception is on purpose: an
    # activity snapshot the start-up hourly run built from its hour alone is rebuilt, as its next revision,
    # once the backfill has committed the rest of its window (it says so, and its inputs differ)
    seen = 0
    for prefix in ("models", "training", "predictions", "publish", "evaluations", "catalogue", "availability",
                   "activity"):
        for path, revs in manifests(chain.lake, prefix).items():
            seen += 1
            if len(revs) == 1:
                continue
            chain_of = [read_json(chain.lake / path / "_manifest" / r) or {} for r in revs]
            assert path.startswith("activity/snapshots/"), (path, revs)
            for before, after in zip(chain_of, chain_of[1:], strict=False):
                meta = after.get("meta", {})
                assert meta.get("rebuilt_stale") is True, (path, meta)
                assert meta.get("inputs") != before.get("meta", {}).get("inputs"), path
    assert seen > 20


def test_the_follower_prints_the_chains_task_lines_and_a_failed_tasks_error_and_job_log(chain: Chain) -> None:
    """``skyrec up --follow`` (``make airflow``): one line per DAG run / task state change with state,
    duration and try; for a failed task its error, the last lines of its job log and where the logs are;
    a summary on Ctrl-C; none of Airflow's own log lines."""
    follow = chain.obs["follow"]
    text, lines = follow["text"], follow["text"].splitlines()
    where = f"(follower output: {follow['path']})\n{text[-4000:]}"
    assert follow["rc"] == 0, where

    def line(name: str, state: str, rest: str = "") -> list[str]:
        return [x for x in lines if re.match(rf"^\s*{re.escape(name)}\s+{state}\s{rest}", x)]

    assert text.count("following Airflow at") == 1 and f"process logs   {chain.platform.log_dir}" in text, where
    assert not [x for x in lines if '"logger":' in x or '"level":' in x], where  # Airflow's logs stay in files
    took = r"\s*(\d+\.\ds|\d+m\d\ds)\s"  # a duration
    for v in VARIANTS:
        assert line(pre(v), "success", took), (v, where)
        for task in ("compute_predictions", "create_redis_dump", "publish_predictions"):
            assert line(f"{pre(v)} / {task}", "success", took), (v, task, where)
    assert line(f"train_model / {MODEL}.train", "success", took) and line("train_model", "success"), where
    assert line("backfill_user_activity / backfill_activity", "success", took), where
    # the worker killed during music_mixes' compute_predictions: its first attempt ended, a later one succeeded
    compute = f"{pre(SYNC_VARIANT)} / compute_predictions"
    assert line(compute, "(failed|up_for_retry)", r".*try 1 of \d"), where
    assert line(compute, "success", r".*try [2-9]( of \d|, beyond the \d allowed)"), where
    # the deferred selftest's deadline: its error
    (deadline,) = line("selftest_deferred_once / selftest", "failed")
    after = lines[lines.index(deadline) + 1:lines.index(deadline) + 4]
    assert after[0] == "  selftest_deferred_once / selftest (try 1): error" and "passed its deadline" in after[1], where
    # the failing job: its error, the last lines of its job log, where the logs are. A try that was running
    # when the scheduler's process group was killed (timing: the kill waits for train_model's job) ended
    # with it and was retried: its line says so; the last try is the job's own failure
    *killed, failed = line("selftest_sync_once / selftest", "failed", took)
    for earlier in killed:
        assert re.match(r"^  selftest_sync_once / selftest \(try \d+\) - retried: ", lines[lines.index(earlier) + 1]), where
    block = lines[lines.index(failed) + 1:lines.index(failed) + 30]
    final = re.match(r"^  selftest_sync_once / selftest \(try (\d+)\): error$", block[0])
    assert final and int(final.group(1)) == len(killed) + 1, where
    assert "JobError" in block[1] and "RuntimeError: selftest: failing on request (fail=1)" in block[1], where
    task_log = next((x for x in block if "Airflow task log: " in x), "").split("Airflow task log: ")[-1]
    assert task_log and Path(task_log).is_file(), where
    summary = [x for x in lines if x.startswith("followed ")]
    assert summary and re.match(r"followed \S+: \d+ DAG run\(s\) \(.*\d+ success.*\), \d+ task attempt\(s\) "
                                r"ended", summary[0]), where
    assert f"  failed: selftest_sync_once / selftest (try {final.group(1)}, run " in text, where
    job_log = next((re.match(r"^  last \d+ lines? of its job log (\S+):$", x) for x in block
                    if x.startswith("  last ")), None)
    assert job_log and Path(job_log.group(1)).is_file(), where
    assert Path(job_log.group(1)).is_relative_to(chain.state_dir / "jobs"), where
    tail = [x for x in block if x.startswith("    | ")]
    assert any("failing on request (fail=1)" in x for x in tail), where


def test_up_is_idempotent_prints_login_and_refuses_a_busy_port(chain: Chain) -> None:
    again = chain.platform.up()
    assert again.started == [] and set(again.running) == set(chain.platform.running())
    text = "\n".join(again.lines)
    passwords = json.loads((Path(chain.env["AIRFLOW_HOME"]) / "simple_auth_manager_passwords.json.generated")
                           .read_text())
    assert chain.platform.ui_url in text and f"admin / {passwords['admin']}" in text, text
    for name in ("scheduler", "triggerer", "dag-processor", "api-server"):
        log = chain.platform.log_path(name)
        assert str(log) in text and log.stat().st_size > 0
    with socket.socket() as s:  # a server that is not ours, on the port asked for
        s.bind(("127.0.0.1", 0))
        s.listen()
        port = s.getsockname()[1]
        other = Platform(load_config("local", environ={**chain.env, "SKYREC_HOME": chain.env["SKYREC_HOME"] + "-2"}),
                         api_port=port, serve_port=free_port(), redis_port=free_port(), environ=chain.env)
        with pytest.raises(PortBusy, match=rf"port {port} .*airflow.api_port"):
            other.up()
        assert other.running() == {}


def test_down_stops_what_up_started_and_nothing_else(chain: Chain) -> None:
    decoy = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"], start_new_session=True)
    try:
        recs = chain.platform.running()
        assert set(recs) == {"redis", "api-server", "scheduler", "dag-processor", "triggerer", "api"}
        # a stale record whose pid now belongs to another process (start time differs): never signalled
        state = chain.platform.state()
        state["components"]["stale"] = {**recs["api"], "pid": decoy.pid}
        chain.platform._save(state)
        lines = chain.platform.down(timeout=20)
        assert any(line.startswith("stale: not running") for line in lines), lines
        assert decoy.poll() is None  # not ours: left alone
        for rec in recs.values():
            assert not is_ours(rec)
        assert chain.platform.running() == {}
    finally:
        decoy.kill()
        decoy.wait()
