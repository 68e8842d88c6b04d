"""Fakes of the cloud APIs that cannot run here, at the client boundary only (the way the providers' own
tests mock ``KubernetesHook.core_v1_client`` and ``DataflowHook.get_conn``). The Flink JobManager and the
Spark standalone master are faked as real HTTP servers on 127.0.0.1 speaking their REST/JSON APIs.

Behind each fake "pod" or "Dataflow/Flink/Spark job" runs the REAL skyrec job as a local process, so
everything above the client -- operator, trigger, post-conditions on the real lake -- is exercised for
real. Beam launches run the exact command ``BeamHook`` builds (``beam_command``), pipeline options included.
"""

from __future__ import annotations

import datetime as dt
import json
import os
import signal
import subprocess
import sys
import threading
import time
import urllib.parse
import uuid
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

from kubernetes.client import models as k8s


class ApiException(Exception):
    def __init__(self, status: int, reason: str = "") -> None:
        super().__init__(f"({status}) {reason}")
        self.status = status


def _spawn(args: list[str], env: dict[str, str]) -> subprocess.Popen[bytes]:
    return subprocess.Popen([sys.executable, "-m", "skyrec.jobs.base", *args], stdout=subprocess.PIPE,
                            stderr=subprocess.STDOUT, start_new_session=True, env={**os.environ, **env})


def beam_command(runner: str, variables: dict[str, Any], py_file: str, py_options: list[str]) -> list[str]:
    """The command ``BeamHook.start_python_pipeline`` runs (``[python, *py_options, py_file, --runner, opts]``)."""
    from airflow.providers.apache.beam.hooks.beam import beam_options_to_args

    return [sys.executable, *py_options, py_file, f"--runner={runner}", *beam_options_to_args(variables)]


def _spawn_command(cmd: list[str], env: dict[str, str]) -> subprocess.Popen[bytes]:
    return subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, start_new_session=True,
                            env={**os.environ, **env})


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
            self.procs[job_id] = _spawn_command(beam_command("DataflowRunner", variables, py_file, py_options),
                                                {"SKYREC_DEPLOY_VERSION": variables["skyrec_deploy"]})
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


class _RestCluster:
    """A cluster REST API served over real HTTP on 127.0.0.1; jobs run the real skyrec job locally."""

    runner = "abstract"

    def __init__(self) -> None:
        self.lock = threading.RLock()
        self.procs: dict[str, subprocess.Popen[bytes]] = {}
        self.calls: list[str] = []
        cluster = self

        class Handler(BaseHTTPRequestHandler):
            def _answer(self, method: str) -> None:
                url = urllib.parse.urlsplit(self.path)
                query = {k: v[-1] for k, v in urllib.parse.parse_qs(url.query).items()}
                length = int(self.headers.get("Content-Length") or 0)
                if length:
                    self.rfile.read(length)
                code, body = cluster.handle(method, url.path, query)
                data = b"" if body is None else json.dumps(body).encode()
                self.send_response(code)
                if code in (301, 302):
                    self.send_header("Location", "/")
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

            def do_GET(self) -> None:
                self._answer("GET")

            def do_PATCH(self) -> None:
                self._answer("PATCH")

            def do_POST(self) -> None:
                self._answer("POST")

            def log_message(self, *args: Any) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}"
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()

    def handle(self, method: str, path: str, query: dict[str, str]) -> tuple[int, Any]:
        raise NotImplementedError

    def _spawn(self, job_id: str, variables: dict[str, Any], py_file: str, py_options: list[str]) -> None:
        self.procs[job_id] = _spawn_command(beam_command(self.runner, variables, py_file, py_options),
                                            {"SKYREC_DEPLOY_VERSION": variables["skyrec_deploy"]})

    def _kill_later(self, job_id: str, finish: Any, delay: float = 0.2) -> None:
        """Cancellation takes a moment on a real cluster: stop the process, report the end state later."""
        proc = self.procs.get(job_id)
        if proc is not None:
            _stop(proc)
        threading.Timer(delay, finish).start()

    def reset(self) -> None:
        self.close_jobs()
        self.calls.clear()

    def close_jobs(self) -> None:
        for proc in list(self.procs.values()):
            _stop(proc)
        self.procs.clear()

    def close(self) -> None:
        self.close_jobs()
        self.server.shutdown()
        self.server.server_close()


def _camel(name: str) -> str:
    head, *rest = name.split("_")
    return head + "".join(p[:1].upper() + p[1:] for p in rest)


class FakeFlinkCluster(_RestCluster):
    """Flink JobManager REST API: ``GET /jobs/overview``, ``GET /jobs/{jid}``, ``GET /jobs/{jid}/config``,
    ``PATCH /jobs/{jid}?mode=cancel``. A launch with the FlinkRunner registers a job whose user-config holds
    the pipeline options under their Java (camelCase) names, as Beam's Flink runner reports them."""

    runner = "FlinkRunner"

    def __init__(self) -> None:
        super().__init__()
        self.jobs: dict[str, dict[str, Any]] = {}
        self.parallelism_override: int | None = None  # the cluster's parallelism.default silently winning
        self.image_override: str | None = None
        self.drop_skyrec_options = False  # a job server (no uber jar) keeps only options Java knows

    def reset(self) -> None:
        super().reset()
        self.jobs.clear()
        self.parallelism_override = self.image_override = None
        self.drop_skyrec_options = False

    def _state(self, jid: str) -> str:
        job = self.jobs[jid]
        proc = self.procs.get(jid)
        if job["state"] == "RUNNING" and proc is not None and proc.poll() is not None:
            job["state"] = "FINISHED" if proc.returncode == 0 else "FAILED"
        return str(job["state"])

    def handle(self, method: str, path: str, query: dict[str, str]) -> tuple[int, Any]:
        parts = [p for p in path.split("/") if p]
        with self.lock:
            if method == "GET" and parts == ["jobs", "overview"]:
                return 200, {"jobs": [{"jid": j["jid"], "name": j["name"], "state": self._state(j["jid"]),
                                       "start-time": j["start-time"], "end-time": -1, "duration": 0,
                                       "last-modification": j["start-time"], "tasks": {}}
                                      for j in self.jobs.values()]}
            if len(parts) < 2 or parts[0] != "jobs" or parts[1] not in self.jobs:
                return 404, {"errors": ["Job could not be found."]}
            jid = parts[1]
            job = self.jobs[jid]
            if method == "GET" and len(parts) == 2:
                return 200, {"jid": jid, "name": job["name"], "isStoppable": False, "state": self._state(jid),
                             "start-time": job["start-time"], "end-time": -1, "duration": 0, "maxParallelism": -1,
                             "vertices": [{"id": "v1", "name": "Impulse", "parallelism": job["parallelism"],
                                           "status": self._state(jid)}]}
            if method == "GET" and parts[2:] == ["config"]:
                return 200, {"jid": jid, "name": job["name"], "execution-config": {
                    "execution-mode": "PIPELINED", "restart-strategy": "Restart deactivated.",
                    "job-parallelism": job["parallelism"], "object-reuse-mode": False,
                    "user-config": dict(job["user-config"])}}
            if method == "PATCH" and len(parts) == 2 and query.get("mode") == "cancel":
                self.calls.append(f"cancel:{jid}")
                if self._state(jid) == "RUNNING":
                    job["state"] = "CANCELLING"

                    def finish() -> None:
                        with self.lock:
                            job["state"] = "CANCELED"

                    self._kill_later(jid, finish)
                return 202, {}
        return 404, {"errors": ["Not found."]}

    def start_python_pipeline(self, variables: dict[str, Any], py_file: str, py_options: list[str],
                              **kwargs: Any) -> None:
        """The FlinkRunner launch: the job appears on the JobManager under ``job_name``."""
        with self.lock:
            self.calls.append("submit")
            jid = uuid.uuid4().hex
            options = {k: v for k, v in variables.items() if not isinstance(v, bool)
                       and not (self.drop_skyrec_options and k.startswith("skyrec_"))}
            if self.image_override:
                options["environment_config"] = self.image_override
            parallelism = self.parallelism_override or int(variables.get("parallelism") or 1)
            self.jobs[jid] = {"jid": jid, "name": variables["job_name"], "state": "RUNNING",
                              "start-time": int(time.time() * 1000), "parallelism": parallelism,
                              "user-config": {_camel(k): str(v) for k, v in options.items()}}
            self._spawn(jid, variables, py_file, py_options)


class FakeSparkMaster(_RestCluster):
    """Spark standalone master web UI: ``GET /json/`` (activeapps/completedapps) and
    ``POST /app/kill/?id=..&terminate=true``. The app name is the ``app_name`` pipeline option; memory per
    executor and cores come from the job server's Spark defaults, not from the pipeline options."""

    runner = "SparkRunner"

    def __init__(self) -> None:
        super().__init__()
        self.apps: dict[str, dict[str, Any]] = {}
        self.executor_memory_mb = 8192  # spark-defaults.conf of the job server
        self.cores = 8

    def reset(self) -> None:
        super().reset()
        self.apps.clear()
        self.executor_memory_mb, self.cores = 8192, 8

    def _state(self, app_id: str) -> str:
        app = self.apps[app_id]
        proc = self.procs.get(app_id)
        if app["state"] == "RUNNING" and not app.get("killing") and proc is not None and proc.poll() is not None:
            app["state"] = "FINISHED" if proc.returncode == 0 else "FAILED"
        return str(app["state"])

    def _json(self, app: dict[str, Any]) -> dict[str, Any]:
        return {"id": app["id"], "starttime": app["starttime"], "name": app["name"], "cores": app["cores"],
                "user": "spark", "memoryperexecutor": app["memory"], "memoryperslave": app["memory"],
                "resourcesperexecutor": [], "resourcesperslave": [], "submitdate": "Sun Mar 01 12:00:00 UTC 2026",
                "state": self._state(app["id"]), "duration": 0}

    def handle(self, method: str, path: str, query: dict[str, str]) -> tuple[int, Any]:
        with self.lock:
            if method == "GET" and path in ("/json", "/json/"):
                apps = [self._json(a) for a in self.apps.values()]
                return 200, {"url": "spark://127.0.0.1:7077", "workers": [], "aliveworkers": 1, "cores": 16,
                             "coresused": sum(a["cores"] for a in apps if a["state"] == "RUNNING"),
                             "memory": 65536, "memoryused": 0, "resources": [], "resourcesused": [],
                             "activeapps": [a for a in apps if a["state"] in ("RUNNING", "WAITING")],
                             "completedapps": [a for a in apps if a["state"] not in ("RUNNING", "WAITING")],
                             "activedrivers": [], "completeddrivers": [], "status": "ALIVE"}
            if method == "POST" and path.rstrip("/") == "/app/kill":
                app_id = query.get("id", "")
                self.calls.append(f"kill:{app_id}")
                if app_id in self.apps and query.get("terminate") == "true" and self._state(app_id) == "RUNNING":
                    app = self.apps[app_id]
                    app["killing"] = True  # still listed as RUNNING until the master has removed it

                    def finish() -> None:
                        with self.lock:
                            app["state"] = "KILLED"

                    self._kill_later(app_id, finish)
                return 302, None
        return 404, {"error": "not found"}

    def start_python_pipeline(self, variables: dict[str, Any], py_file: str, py_options: list[str],
                              **kwargs: Any) -> None:
        """The SparkRunner launch: an application named after ``app_name`` registers with the master."""
        with self.lock:
            self.calls.append("submit")
            app_id = f"app-20260301120000-{len(self.apps):04d}"
            self.apps[app_id] = {"id": app_id, "name": variables.get("app_name") or variables["job_name"],
                                 "starttime": int(time.time() * 1000), "state": "RUNNING", "cores": self.cores,
                                 "memory": self.executor_memory_mb}
            self._spawn(app_id, variables, py_file, py_options)
