"""Beam on Flink and Spark, driven through real Airflow (dag.test) against the clusters' REST APIs served by
real HTTP servers on 127.0.0.1 (the Flink JobManager, the Spark standalone master). Only the launch is
faked (``BeamHook.start_python_pipeline``): it runs the exact command the hook builds, i.e. the real
selftest job with the real pipeline options, and registers the job with the fake cluster."""

from __future__ import annotations

import datetime as dt
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import pytest
from airflow_fakes import FakeFlinkCluster, FakeSparkMaster

from skyrec.airflow.backends import JobSpec, deploy_version
from skyrec.airflow.backends.beam_runners import (
    FlinkBackend,
    SparkBackend,
    image_tag,
    job_name,
    launch_args,
    parse_identity_name,
)
from skyrec.airflow.sweeper import sweep
from skyrec.config import load_config
from skyrec.jobs.base import RunInfo
from skyrec.storage import Lake

pytestmark = pytest.mark.integration
WHEN = dt.datetime(2026, 3, 1, 12, tzinfo=dt.UTC)
OUT = "selftest/{tag}/run=20260301T120000"


def state(dr: Any) -> str:
    return str(getattr(dr.state, "value", dr.state))


def spec(run_dag: Any, params: dict[str, str], deploy: str | None = None, task_id: str = "selftest") -> JobSpec:
    run = RunInfo(dag_id="selftest_sync_once", run_id=run_dag.run_id(), task_id=task_id, try_number=1,
                  logical_date=WHEN, interval_start=WHEN, interval_end=WHEN)
    return JobSpec(job="selftest", run=run, params=params, deploy=deploy or deploy_version(), env="local")


@dataclass
class Cluster:
    """One fake cluster plus what the tests need to read it the same way for Flink and Spark."""

    kind: str
    fake: Any
    backend: Callable[[], Any]
    cancel_call: str  # the REST call a cancel shows up as
    cancelled: str  # the cluster's own end state for a cancelled job

    def jobs(self) -> list[dict[str, Any]]:
        return list((self.fake.jobs if self.kind == "flink" else self.fake.apps).values())

    def job_state(self, job: dict[str, Any]) -> str:
        return str(self.fake._state(job["jid"] if self.kind == "flink" else job["id"]))

    def job_id(self, job: dict[str, Any]) -> str:
        return str(job["jid"] if self.kind == "flink" else job["id"])

    def identity(self, job: dict[str, Any]) -> dict[str, str]:
        """run/deploy as the cluster reports them: in the job name (Flink job / Spark app)."""
        base, ident = parse_identity_name(job["name"])
        return {"name": base, "run": ident["run"], "deploy": ident["deploy"]}


@pytest.fixture(scope="module")
def flink_server() -> Any:
    fake = FakeFlinkCluster()
    yield fake
    fake.close()


@pytest.fixture(scope="module")
def spark_server() -> Any:
    fake = FakeSparkMaster()
    yield fake
    fake.close()


@pytest.fixture(params=["flink", "spark"])
def cluster(request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch) -> Any:
    from airflow.providers.apache.beam.hooks.beam import BeamHook

    kind = request.param
    fake = request.getfixturevalue(f"{kind}_server")
    fake.reset()

    def launch(hook: Any, **kw: Any) -> None:
        assert hook.runner == fake.runner  # the provider's hook, for the right runner
        fake.start_python_pipeline(**kw)

    monkeypatch.setattr(BeamHook, "start_python_pipeline", launch)
    monkeypatch.setenv("SKYREC__JOBS__BACKEND", kind)
    monkeypatch.setenv(f"SKYREC__JOBS__{kind.upper()}__REST_URL", fake.url)
    if kind == "flink":
        c = Cluster(kind, fake, lambda: FlinkBackend(load_config()), "cancel:", "CANCELED")
    else:
        c = Cluster(kind, fake, lambda: SparkBackend(load_config()), "kill:", "KILLED")
    yield c
    fake.close_jobs()


def test_launch_command_and_names() -> None:
    s = JobSpec(job="selftest", run=RunInfo(dag_id="d", run_id="r", task_id="t", try_number=2, logical_date=WHEN))
    py_file, py_options = launch_args(s)
    assert py_file == "selftest" and py_options[:2] == ["-m", "skyrec.jobs.base"] and "--run-id" in py_options
    assert job_name("k" * 80) == ("skyrec-" + "k" * 80)[:63]
    assert image_tag("apache/beam_python3.11_sdk:2.77.0") == "2.77.0" and image_tag("localhost:5000/img") is None


def test_job_runs_and_outputs_are_proven(run_dag: Any, config: Any, cluster: Cluster) -> None:
    t0 = time.monotonic()
    dr = run_dag("selftest_sync_once", {"job_params": {"tag": cluster.kind, "rows": "30", "chunks": "3"}})
    assert state(dr) == "success", run_dag.states(dr)
    (job,) = cluster.jobs()
    ident = cluster.identity(job)
    assert ident["name"].startswith("skyrec-selftest") and ident["run"] == run_dag.run_id()
    assert ident["deploy"] == deploy_version()
    if cluster.kind == "flink":  # the pinned options reached the job (read back from its user-config)
        uc = job["user-config"]
        assert uc["parallelism"] == "4" and uc["environmentConfig"] == config.jobs.flink.environment_config
        assert uc["skyrecRunId"] == run_dag.run_id()  # uber-jar mode: skyrec's own options are there too
    assert Lake.from_config(config).require(OUT.format(tag=cluster.kind)).rows == 30
    assert time.monotonic() - t0 < 30


def test_retry_finds_the_live_job_by_name_and_reattaches(run_dag: Any, config: Any, cluster: Cluster) -> None:
    params = {"tag": f"{cluster.kind}retry", "rows": "20", "chunks": "4", "chunk_seconds": "0.3"}
    first = cluster.backend().submit(spec(run_dag, params))  # attempt 1 died before saving the id
    assert state(run_dag("selftest_sync_once", {"job_params": params})) == "success"
    assert cluster.fake.calls.count("submit") == 1 and len(cluster.jobs()) == 1
    assert cluster.job_id(cluster.jobs()[0]) == first["job_id"]
    assert Lake.from_config(config).require(OUT.format(tag=params["tag"])).rows == 20


def test_job_of_an_older_deploy_is_cancelled_not_reattached(run_dag: Any, cluster: Cluster) -> None:
    old = cluster.backend().submit(spec(run_dag, {"tag": f"{cluster.kind}up", "hang": "1"}, deploy="skyrec-0.0.9"))
    dr = run_dag("selftest_sync_once", {"job_params": {"tag": f"{cluster.kind}up", "rows": "5", "chunks": "1"}})
    assert state(dr) == "success"
    assert cluster.fake.calls == ["submit", cluster.cancel_call + old["job_id"], "submit"]
    old_job, new_job = cluster.jobs()
    assert cluster.job_state(old_job) == cluster.cancelled  # confirmed stopped before the new one started
    assert cluster.identity(new_job)["deploy"] == deploy_version() != "skyrec-0.0.9"


def test_silently_changed_setting_is_drift_and_the_job_is_cancelled(run_dag: Any, config: Any,
                                                                    cluster: Cluster) -> None:
    if cluster.kind == "flink":
        cluster.fake.parallelism_override = 1  # the cluster's parallelism.default wins over the pinned 4
    else:
        cluster.fake.executor_memory_mb = 4096  # the job server's Spark defaults changed under us
    dr = run_dag("selftest_sync_once", {"job_params": {"tag": f"{cluster.kind}drift", "chunk_seconds": "0.5"}})
    assert state(dr) == "failed"
    (job,) = cluster.jobs()
    assert cluster.job_state(job) == cluster.cancelled
    assert not Lake.from_config(config).committed(OUT.format(tag=f"{cluster.kind}drift"))


def test_deferred_job_past_its_deadline_is_cancelled_by_the_trigger(run_dag: Any, cluster: Cluster, alerts: Any,
                                                                    monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("SKYREC__JOBS__DEADLINES_MINUTES__SELFTEST", "0.05")
    t0 = time.monotonic()
    dr = run_dag("selftest_deferred_once", {"job_params": {"tag": f"{cluster.kind}hang", "hang": "1"}})
    assert state(dr) == "failed" and time.monotonic() - t0 < 40
    (job,) = cluster.jobs()
    assert cluster.job_state(job) == cluster.cancelled
    deadline = [a for a in alerts.received if a["kind"] == "deadline"]
    assert deadline and deadline[0]["details"]["confirmed"] is True and deadline[0]["details"]["deferred"] is True


def test_sweeper_cancels_jobs_of_finished_task_instances(run_dag: Any, cluster: Cluster) -> None:
    backend = cluster.backend()
    orphan = backend.submit(spec(run_dag, {"tag": "o", "hang": "1"}, task_id="orphan"))
    kept = backend.submit(spec(run_dag, {"tag": "k", "hang": "1"}, task_id="kept"))
    swept = sweep(load_config(), lambda dag, run, task: {"orphan": "success", "kept": "deferred"}[task])
    assert [s["id"] for s in swept] == [orphan["job_id"]] and swept[0]["confirmed"] is True
    assert backend.status(orphan) == "CANCELLED" and backend.status(kept) == "RUNNING"


def test_job_entry_point_hands_launcher_options_to_its_pipelines(config: Any, monkeypatch: pytest.MonkeyPatch) -> None:
    from skyrec.jobs.base import main
    from skyrec.pipelines import BEAM_OPTIONS_ENV, launcher_options
    from skyrec.pipelines.predictions import pipeline_args

    monkeypatch.setenv(BEAM_OPTIONS_ENV, "")  # main() sets it in this process: restored (unset) afterwards
    assert launcher_options() is None and pipeline_args(config, "x")[0] == "--runner=FnApiRunner"
    beam = ["--runner=FlinkRunner", "--job_name=skyrec-k", "--parallelism=4", "--flink_submit_uber_jar"]
    assert main(["--param", "tag=opts", "--param", "rows=3", "--param", "chunks=1", "selftest", *beam]) == 0
    assert launcher_options() == beam and pipeline_args(config, "x") == beam
    with pytest.raises(SystemExit):  # anything that is not a launcher's --option is still refused
        main(["selftest", "stray"])


def test_operator_and_config_accept_the_beam_cluster_backends(config: Any) -> None:
    from skyrec.airflow.backends import backend_for
    from skyrec.airflow.operators import SkyrecJobOperator

    assert isinstance(backend_for(config, "flink"), FlinkBackend)
    assert isinstance(backend_for(config, "spark"), SparkBackend)
    assert SkyrecJobOperator(task_id="t", job="selftest", backend="spark").backend == "spark"
    with pytest.raises(ValueError, match="flink, spark"):
        SkyrecJobOperator(task_id="t", job="selftest", backend="yarn")


def test_two_racing_launches_leave_exactly_one_job_and_both_keep_it(run_dag: Any, cluster: Cluster) -> None:
    # neither cluster refuses a second job under the same name and no lock spans the two submitters
    # (e.g. a zombie attempt and its retry on different workers): both launch, then agree on one job
    from concurrent.futures import ThreadPoolExecutor

    from skyrec.airflow.control import decide

    s = spec(run_dag, {"tag": f"{cluster.kind}race", "hang": "1"})
    with ThreadPoolExecutor(2) as pool:
        kept = list(pool.map(lambda _: cluster.backend().submit(s), range(2)))
    assert cluster.fake.calls.count("submit") == 2  # both really launched
    assert kept[0]["job_id"] == kept[1]["job_id"]
    live = [j for j in cluster.jobs() if cluster.job_state(j) not in {cluster.cancelled, "FINISHED", "FAILED"}]
    assert [cluster.job_id(j) for j in live] == [kept[0]["job_id"]]
    # a later attempt reattaches to that same job
    d = decide(cluster.backend(), s)
    assert d.action == "reattach" and d.handle is not None and d.handle["job_id"] == kept[0]["job_id"]


def test_flink_job_is_identified_by_its_name_without_skyrec_options_in_user_config(run_dag: Any, config: Any,
                                                                                     flink_server: Any,
                                                                                     monkeypatch: pytest.MonkeyPatch) -> None:
    # with a job server (no uber jar) Beam drops options the Java side does not know, skyrec_* included:
    # the job is still found by name, its run/deploy read from the name, and a retry reattaches to it
    from airflow.providers.apache.beam.hooks.beam import BeamHook

    flink_server.reset()
    flink_server.drop_skyrec_options = True
    monkeypatch.setattr(BeamHook, "start_python_pipeline", lambda hook, **kw: flink_server.start_python_pipeline(**kw))
    monkeypatch.setenv("SKYREC__JOBS__BACKEND", "flink")
    monkeypatch.setenv("SKYREC__JOBS__FLINK__REST_URL", flink_server.url)
    try:
        params = {"tag": "jobserver", "rows": "10", "chunks": "2", "chunk_seconds": "0.3"}
        first = FlinkBackend(load_config()).submit(spec(run_dag, params))
        (job,) = flink_server.jobs.values()
        assert not any(k.startswith("skyrec") for k in job["user-config"])
        assert first["run_id"] == run_dag.run_id() and first["deploy"] == deploy_version()
        assert state(run_dag("selftest_sync_once", {"job_params": params})) == "success"
        assert flink_server.calls.count("submit") == 1
        assert Lake.from_config(config).require(OUT.format(tag="jobserver")).rows == 10
    finally:
        flink_server.drop_skyrec_options = False
        flink_server.close_jobs()
