"""Fakes of the cloud APIs that cannot run here, at the client boundary only (the way the providers' own
tests mock ``KubernetesHook.core_v1_client`` and ``DataflowHook.get_conn``).

Behind each fake "pod" or "Dataflow job" runs the REAL skyrec job as a local process, so everything
above the client -- operator, trigger, post-conditions on the real lake -- is exercised for real.
"""

from __future__ import annotations

import datetime as dt
import os
import signal
import subprocess
import sys
import threading
import uuid
from typing import Any

from kubernetes.client import models as k8s


class ApiException(Exception):
    def __init__(self, status: int, reason: str = "") -> None:
        super().__init__(f"({status}) {reason}")
        self.status = status


def _spawn(args: list[str], env: dict[str, str]) -> subprocess.Popen[bytes]:
    return subprocess.Popen([sys.executable, "-m", "skyrec.jobs.base", *args], stdout=subprocess.PIPE,
                            stderr=subprocess.STDOUT, start_new_session=True, env={**os.environ, **env})


def _stop(proc: subprocess.Popen[bytes]) -> None:
    if proc.poll() is None:
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait(10)


class FakeCoreV1:
    """CoreV1Api subset: create/read/list/delete pods, read logs. A pod runs its container's args locally."""

    def __init__(self) -> None:
        self.pods: dict[str, k8s.V1Pod] = {}
        self.procs: dict[str, subprocess.Popen[bytes]] = {}
        self.logs: dict[str, bytes] = {}
        self.mutate_image: str | None = None  # an admission webhook rewriting the image
        self.calls: list[str] = []
        self.lock = threading.Lock()

    def create_namespaced_pod(self, namespace: str, body: k8s.V1Pod) -> k8s.V1Pod:
        self.calls.append("create")
        with self.lock:
            name = body.metadata.name
            if name in self.pods:
                raise ApiException(409, "AlreadyExists")
            c = body.spec.containers[0]
            if self.mutate_image:
                c.image = self.mutate_image
            body.status = k8s.V1PodStatus(phase="Pending")
            self.pods[name] = body
            env = {e.name: e.value for e in c.env or []}
            self.procs[name] = _spawn(list(c.args), env)
            return body

    def _refresh(self, name: str) -> None:
        proc = self.procs.get(name)
        pod = self.pods[name]
        if proc is None:
            return
        code = proc.poll()
        if code is None:
            pod.status.phase = "Running"
        else:
            if name not in self.logs:
                self.logs[name] = proc.stdout.read() if proc.stdout else b""
            pod.status.phase = "Succeeded" if code == 0 else "Failed"

    def read_namespaced_pod(self, name: str, namespace: str) -> k8s.V1Pod:
        with self.lock:
            if name not in self.pods:
                raise ApiException(404, "NotFound")
            self._refresh(name)
            return self.pods[name]

    def list_namespaced_pod(self, namespace: str, label_selector: str = "") -> k8s.V1PodList:
        key, _, value = label_selector.partition("=")
        with self.lock:
            items = [p for p in self.pods.values() if (p.metadata.labels or {}).get(key) == value]
            for p in items:
                self._refresh(p.metadata.name)
        return k8s.V1PodList(items=items)

    def delete_namespaced_pod(self, name: str, namespace: str, grace_period_seconds: int | None = None) -> None:
        self.calls.append(f"delete:{name}")
        with self.lock:
            if name not in self.pods:
                raise ApiException(404, "NotFound")
            proc = self.procs.pop(name, None)
            if proc is not None:
                _stop(proc)
            del self.pods[name]

    def read_namespaced_pod_log(self, name: str, namespace: str, container: str | None = None) -> str:
        with self.lock:
            if name not in self.pods:
                raise ApiException(404, "NotFound")
            self._refresh(name)
            return self.logs.get(name, b"").decode()

    def close(self) -> None:
        for proc in list(self.procs.values()):
            _stop(proc)


class _Call:
    def __init__(self, fn: Any) -> None:
        self.fn = fn

    def execute(self) -> Any:
        return self.fn()


class FakeDataflow:
    """The discovery resource ``projects().locations().jobs()`` (list/get/update) plus a launcher that
    creates the job like ``BeamHook.start_python_pipeline`` with the DataflowRunner would."""

    def __init__(self) -> None:
        self.all_jobs: dict[str, dict[str, Any]] = {}
        self.procs: dict[str, subprocess.Popen[bytes]] = {}
        self.shuffle_mode_override: str | None = None  # the service silently changing a setting
        self.lock = threading.Lock()

    # resource chain
    def projects(self) -> FakeDataflow:
        return self

    def locations(self) -> FakeDataflow:
        return self

    def jobs(self) -> FakeDataflow:
        return self

    def _state(self, job_id: str) -> str:
        job = self.all_jobs[job_id]
        proc = self.procs.get(job_id)
        if job["currentState"] in {"JOB_STATE_CANCELLED", "JOB_STATE_DONE", "JOB_STATE_FAILED"}:
            return job["currentState"]
        if proc is not None and proc.poll() is not None:
            job["currentState"] = "JOB_STATE_DONE" if proc.returncode == 0 else "JOB_STATE_FAILED"
        return job["currentState"]

    def list(self, projectId: str, location: str, filter: str | None = None) -> _Call:
        def run() -> dict[str, Any]:
            with self.lock:
                jobs = [{"id": j["id"], "name": j["name"], "currentState": self._state(j["id"])}
                        for j in self.all_jobs.values()]
            if filter == "ACTIVE":
                jobs = [j for j in jobs if j["currentState"] in {"JOB_STATE_RUNNING", "JOB_STATE_PENDING"}]
            return {"jobs": jobs}

        return _Call(run)

    def get(self, projectId: str, location: str, jobId: str, view: str | None = None) -> _Call:
        def run() -> dict[str, Any]:
            with self.lock:
                if jobId not in self.all_jobs:
                    raise ApiException(404, "job not found")
                self._state(jobId)
                return dict(self.all_jobs[jobId])

        return _Call(run)

    def update(self, projectId: str, location: str, jobId: str, body: dict[str, Any]) -> _Call:
        def run() -> dict[str, Any]:
            with self.lock:
                if body.get("requestedState") == "JOB_STATE_CANCELLED":
                    proc = self.procs.get(jobId)
                    if proc is not None:
                        _stop(proc)
                    self.all_jobs[jobId]["currentState"] = "JOB_STATE_CANCELLED"
                return dict(self.all_jobs[jobId])

        return _Call(run)

    def start_python_pipeline(self, variables: dict[str, Any], py_file: str, py_options: list[str],
                              **kwargs: Any) -> None:
        """What the DataflowRunner launcher does: create the job (refusing a duplicate active name)."""
        with self.lock:
            name = variables["job_name"]
            for j in self.all_jobs.values():
                if j["name"] == name and self._state(j["id"]) in {"JOB_STATE_RUNNING", "JOB_STATE_PENDING"}:
                    raise RuntimeError(f"There is already an active job named {name}")
            job_id = f"2026-{uuid.uuid4().hex[:12]}"
            args = list(py_options[1:])
            self.procs[job_id] = _spawn(args, {"SKYREC_DEPLOY_VERSION": variables["skyrec_deploy"]})
            shuffle = self.shuffle_mode_override or {"service": "SERVICE_BASED"}.get(
                next(e.split("=", 1)[1] for e in variables["experiments"] if e.startswith("shuffle_mode=")), "VM_BASED")
            self.all_jobs[job_id] = {
                "id": job_id, "name": name, "labels": dict(variables["labels"]), "currentState": "JOB_STATE_RUNNING",
                "createTime": dt.datetime.now(dt.UTC).strftime("%Y-%m-%dT%H:%M:%S.000000Z"),
                "environment": {
                    "workerPools": [{"machineType": variables["worker_machine_type"],
                                     "diskSizeGb": variables["disk_size_gb"]}],
                    "experiments": [*variables["experiments"], "use_multiple_sdk_containers"],
                    "shuffleMode": shuffle,
                    "sdkPipelineOptions": {"options": {k: v for k, v in variables.items() if k.startswith("skyrec_")}},
                },
                "jobMetadata": {"sdkVersion": {"version": "2.77.0"}},
            }

    def close(self) -> None:
        for proc in list(self.procs.values()):
            _stop(proc)
