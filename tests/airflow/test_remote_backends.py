"""Kubernetes-pod and Dataflow backends, driven through real Airflow (dag.test) with the cloud APIs faked
at the client boundary only (``KubernetesHook.core_v1_client``, ``DataflowHook.get_conn``,
``BeamHook.start_python_pipeline``). Behind each fake pod / Dataflow job runs the real selftest job."""

from __future__ import annotations

import datetime as dt
import time
from typing import Any

import pytest
from airflow_fakes import FakeCoreV1, FakeDataflow

from skyrec.airflow.backends import JobSpec, deploy_version
from skyrec.airflow.backends.dataflow import DataflowBackend, machine_resources
from skyrec.airflow.backends.kubernetes import KubernetesPodBackend, parse_cpu, parse_memory_gb
from skyrec.airflow.sweeper import sweep
from skyrec.config import load_config
from skyrec.jobs.base import RunInfo
from skyrec.storage import Lake

pytestmark = pytest.mark.integration
WHEN = dt.datetime(2026, 3, 1, 12, tzinfo=dt.UTC)
OUT = "selftest/{tag}/run=20260301T120000"


def state(dr: Any) -> str:
    return str(getattr(dr.state, "value", dr.state))


def spec(run_dag: Any, params: dict[str, str], dag_id: str = "selftest_sync_once", deploy: str | None = None,
         task_id: str = "selftest") -> JobSpec:
    run = RunInfo(dag_id=dag_id, run_id=run_dag.run_id(), task_id=task_id, try_number=1, logical_date=WHEN,
                  interval_start=WHEN, interval_end=WHEN)
    return JobSpec(job="selftest", run=run, params=params, deploy=deploy or deploy_version(), env="local")


@pytest.fixture
def k8s(monkeypatch: pytest.MonkeyPatch) -> Any:
    from airflow.providers.cncf.kubernetes.hooks.kubernetes import KubernetesHook

    fake = FakeCoreV1()
    monkeypatch.setattr(KubernetesHook, "core_v1_client", property(lambda self: fake))
    monkeypatch.setenv("SKYREC__JOBS__BACKEND", "kubernetes")
    yield fake
    fake.close()


@pytest.fixture
def dataflow(monkeypatch: pytest.MonkeyPatch) -> Any:
    from airflow.providers.apache.beam.hooks.beam import BeamHook
    from airflow.providers.google.cloud.hooks.dataflow import DataflowHook

    fake = FakeDataflow()
    monkeypatch.setattr(DataflowHook, "get_conn", lambda self: fake)
    monkeypatch.setattr(BeamHook, "start_python_pipeline", lambda self, **kw: fake.start_python_pipeline(**kw))
    monkeypatch.setenv("SKYREC__JOBS__BACKEND", "dataflow")
    monkeypatch.setenv("SKYREC__JOBS__DATAFLOW__PROJECT", "skyrec-test")
    monkeypatch.setenv("AIRFLOW_CONN_GOOGLE_CLOUD_DEFAULT", '{"conn_type": "google_cloud_platform"}')
    yield fake
    fake.close()


def test_resource_parsing() -> None:
    assert parse_cpu("500m") == 0.5 and parse_cpu("2") == 2.0
    assert parse_memory_gb("8Gi") == 8.0 and parse_memory_gb("512Mi") == 0.5
    assert machine_resources("n2-highmem-4") == {"vcpus": 4.0, "memory_gb": 32.0}


def test_pod_runs_the_job_with_identity_labels_and_outputs_are_proven(run_dag: Any, config: Any, k8s: Any) -> None:
    dr = run_dag("selftest_sync_once", {"job_params": {"tag": "pod", "rows": "50", "chunks": "2"}})
    assert state(dr) == "success"
    (pod,) = k8s.pods.values()
    assert pod.metadata.labels["app.kubernetes.io/managed-by"] == "skyrec"
    assert pod.metadata.annotations["skyrec.io/run-id"] == run_dag.run_id()
    assert pod.spec.containers[0].image == config.jobs.kubernetes.image
    assert pod.spec.containers[0].resources.limits == dict(config.jobs.kubernetes.resources)
    assert Lake.from_config(config).require(OUT.format(tag="pod")).rows == 50


def test_retry_reattaches_to_the_live_pod(run_dag: Any, config: Any, k8s: Any) -> None:
    params = {"tag": "podretry", "rows": "40", "chunks": "4", "chunk_seconds": "0.3"}
    KubernetesPodBackend(load_config()).submit(spec(run_dag, params))  # attempt 1's pod
    assert state(run_dag("selftest_sync_once", {"job_params": params})) == "success"
    assert k8s.calls.count("create") == 1
    assert Lake.from_config(config).require(OUT.format(tag="podretry")).rows == 40


def test_pod_of_an_older_deploy_is_deleted_not_reattached(run_dag: Any, config: Any, k8s: Any) -> None:
    old = KubernetesPodBackend(load_config()).submit(spec(run_dag, {"tag": "podup", "hang": "1"},
                                                          deploy="skyrec-0.0.9"))
    dr = run_dag("selftest_sync_once", {"job_params": {"tag": "podup", "rows": "5", "chunks": "1"}})
    assert state(dr) == "success"
    assert k8s.calls == ["create", f"delete:{old['pod_name']}", "create"]  # deleted before the new one
    (pod,) = k8s.pods.values()
    assert pod.metadata.annotations["skyrec.io/deploy"] == deploy_version() != "skyrec-0.0.9"


def test_image_changed_by_the_cluster_is_drift(run_dag: Any, config: Any, k8s: Any) -> None:
    k8s.mutate_image = "skyrec:latest"
    dr = run_dag("selftest_sync_once", {"job_params": {"tag": "drift", "chunk_seconds": "0.5"}})
    assert state(dr) == "failed"
    assert k8s.pods == {} and any(c.startswith("delete:") for c in k8s.calls)
    assert not Lake.from_config(config).committed(OUT.format(tag="drift"))


def test_deferred_pod_past_its_deadline_is_deleted_by_the_trigger(run_dag: Any, k8s: Any, alerts: Any,
                                                                  monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("SKYREC__JOBS__DEADLINES_MINUTES__SELFTEST", "0.05")
    t0 = time.monotonic()
    dr = run_dag("selftest_deferred_once", {"job_params": {"tag": "podhang", "hang": "1"}})
    assert state(dr) == "failed" and time.monotonic() - t0 < 40
    assert k8s.pods == {}
    deadline = [a for a in alerts.received if a["kind"] == "deadline"]
    assert deadline and deadline[0]["details"]["confirmed"] is True and deadline[0]["details"]["deferred"] is True


def test_sweeper_deletes_pods_of_finished_task_instances(run_dag: Any, k8s: Any) -> None:
    cfg = load_config()
    backend = KubernetesPodBackend(cfg)
    orphan = backend.submit(spec(run_dag, {"tag": "o", "hang": "1"}, task_id="orphan"))
    backend.submit(spec(run_dag, {"tag": "k", "hang": "1"}, task_id="kept"))
    swept = sweep(cfg, lambda dag, run, task: {"orphan": "success", "kept": "deferred"}[task])
    assert [s["id"] for s in swept] == [orphan["pod_name"]] and swept[0]["confirmed"] is True
    assert list(k8s.pods) == [p for p in k8s.pods if "kept" in p]


def test_dataflow_job_runs_and_outputs_are_proven(run_dag: Any, config: Any, dataflow: Any) -> None:
    dr = run_dag("selftest_sync_once", {"job_params": {"tag": "df", "rows": "30", "chunks": "3"}})
    assert state(dr) == "success"
    (job,) = dataflow.all_jobs.values()
    assert job["name"].startswith("skyrec-selftest-") and job["labels"]["skyrec-deploy"]
    assert Lake.from_config(config).require(OUT.format(tag="df")).rows == 30


def test_dataflow_silently_changed_shuffle_mode_is_caught_and_cancelled(run_dag: Any, config: Any,
                                                                        dataflow: Any) -> None:
    dataflow.shuffle_mode_override = "VM_BASED"
    dr = run_dag("selftest_sync_once", {"job_params": {"tag": "shuffle", "chunk_seconds": "0.5"}})
    assert state(dr) == "failed"
    (job,) = dataflow.all_jobs.values()
    assert job["currentState"] == "JOB_STATE_CANCELLED"
    assert not Lake.from_config(config).committed(OUT.format(tag="shuffle"))


def test_dataflow_retry_finds_the_job_by_name_and_reattaches(run_dag: Any, config: Any, dataflow: Any) -> None:
    params = {"tag": "dfretry", "rows": "20", "chunks": "4", "chunk_seconds": "0.3"}
    DataflowBackend(load_config()).submit(spec(run_dag, params))  # the launcher died before saving the id
    assert state(run_dag("selftest_sync_once", {"job_params": params})) == "success"
    assert len(dataflow.all_jobs) == 1


def test_dataflow_job_past_its_deadline_is_cancelled(run_dag: Any, dataflow: Any, alerts: Any,
                                                     monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("SKYREC__JOBS__DEADLINES_MINUTES__SELFTEST", "0.05")
    dr = run_dag("selftest_sync_once", {"job_params": {"tag": "dfhang", "hang": "1"}})
    assert state(dr) == "failed"
    (job,) = dataflow.all_jobs.values()
    assert job["currentState"] == "JOB_STATE_CANCELLED"
    assert "deadline" in alerts.kinds()


def test_dataflow_sweeper_cancels_jobs_of_finished_task_instances(run_dag: Any, dataflow: Any) -> None:
    cfg = load_config()
    backend = DataflowBackend(cfg)
    orphan = backend.submit(spec(run_dag, {"tag": "o", "hang": "1"}, task_id="orphan"))
    kept = backend.submit(spec(run_dag, {"tag": "k", "hang": "1"}, task_id="kept"))
    swept = sweep(cfg, lambda dag, run, task: {"orphan": "failed", "kept": "running"}[task])
    assert [s["id"] for s in swept] == [orphan["job_id"]] and swept[0]["confirmed"] is True
    assert dataflow.all_jobs[orphan["job_id"]]["currentState"] == "JOB_STATE_CANCELLED"
    assert dataflow.all_jobs[kept["job_id"]]["currentState"] == "JOB_STATE_RUNNING"
