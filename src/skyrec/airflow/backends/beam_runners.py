"""Beam jobs on Flink and Spark clusters: launched through the apache-beam provider's ``BeamHook``
(``FlinkRunner`` / ``SparkRunner``), looked up, read back and cancelled through the cluster's own REST API.

The launcher is the one ``dataflow.py`` uses (:func:`launch_args`): ``python -m skyrec.jobs.base <job args>
<job name> --runner=... <pipeline options>``; the job entry point keeps the pipeline options it does not
know and hands them to the Beam pipelines it runs, so the cluster job carries the options set here.
A job is never identified by parsing launcher output: ``submit`` starts the launcher in a thread and
waits until the cluster lists a job of this run under the job's name.

**Flink** (JobManager REST API, ``jobs.flink.rest_url``):

* the job name is ``skyrec-<job key>?run=..&deploy=..`` (:func:`identity_name`; Beam's Flink runner names
  the Flink job after ``job_name``); ``find`` lists ``GET /jobs/overview`` by the part before ``?``, and
  run, deploy and try come from the name, so identity holds with a job server as well as in uber-jar mode;
* settings come back from ``GET /jobs/{jid}/config``: ``execution-config.job-parallelism`` and
  ``execution-config.user-config``, where Beam's Flink runner registers the pipeline options as the job's
  global job parameters (Java option names, e.g. ``environmentConfig``; both spellings are accepted);
* pinned: parallelism, environment type and config (the SDK harness image), the Beam SDK version (the
  tag of the harness image the job runs with, and the launcher's own ``apache_beam``);
* cancel: ``PATCH /jobs/{jid}?mode=cancel``, then poll ``GET /jobs/{jid}`` until CANCELED/FAILED/FINISHED.

**Spark** (standalone master, ``jobs.spark.rest_url`` = the master's web UI):

* the master's ``GET /json/`` lists ``activeapps``/``completedapps`` (id, name, state, starttime, cores
  granted, memoryperexecutor); it does not echo pipeline options, so the *application name* carries the
  identity: ``skyrec-<job key>?run=..&dag=..&task=..&deploy=..&try=..&job=..&t=..`` (URL-encoded; set with
  the ``app_name`` pipeline option, which Beam's ``SparkJobInvoker`` uses as the Spark app name);
  ``find`` matches the part before ``?``;
* pinned and read back from the master: memory per executor and that the cores granted stay within
  ``cores_max``; the deploy from the app name. The SDK harness image is *not* reported by a standalone
  master (nor by the driver's ``/api/v1/applications/{id}/environment``, which shows Spark properties,
  not Beam options): it is pinned at launch and the launcher's SDK version is checked, but it cannot be
  read back;
* cancel: ``POST /app/kill/?id=<app id>&terminate=true`` (needs ``spark.ui.killEnabled``, the default),
  then poll ``/json/`` until the app is KILLED/FINISHED/FAILED.

Neither cluster refuses a second job under the same name (Dataflow does), so after launching, the live
job of the run the cluster registered first is kept and any other cancelled: still exactly one job.
Tests fake both REST APIs as real HTTP servers on 127.0.0.1 and ``BeamHook.start_python_pipeline``.
"""

from __future__ import annotations

import sys
import threading
import time
import urllib.parse
from functools import cached_property
from typing import Any

from skyrec.airflow.backends import (
    CANCELLED,
    FAILED,
    LOST,
    RUNNING,
    SUCCEEDED,
    JobBackend,
    JobError,
    JobHandle,
    JobSpec,
)
from skyrec.pipelines.runners import runner_options


def job_name(job_key: str) -> str:
    return f"skyrec-{job_key}"[:63]


def launch_args(spec: JobSpec) -> tuple[str, list[str]]:
    """``(py_file, py_options)`` for ``BeamHook.start_python_pipeline``: the hook runs
    ``[python, *py_options, py_file, --runner=.., *options]``, so the job name is the positional last."""
    args = spec.job_args()
    return args[0], ["-m", "skyrec.jobs.base", *args[1:]]


def identity_options(spec: JobSpec) -> dict[str, Any]:
    return {"skyrec_run_id": spec.run.run_id, "skyrec_dag_id": spec.run.dag_id, "skyrec_task_id": spec.run.task_id,
            "skyrec_deploy": spec.deploy, "skyrec_job": spec.job, "skyrec_try": str(spec.run.try_number),
            "skyrec_submitted": f"{time.time():.3f}"}


def image_tag(image: str | None) -> str | None:
    """``repo/name:2.77.0`` -> ``2.77.0`` (None without a tag)."""
    if not image or ":" not in image.rsplit("/", 1)[-1]:
        return None
    return image.rsplit(":", 1)[1]


def check_sdk(pinned: str, where: str) -> None:
    """The launcher builds the pipeline with its own SDK: it must be the pinned one."""
    from importlib.metadata import version

    installed = version("apache-beam")
    if installed != pinned:
        raise JobError(f"{where}.sdk_version: pinned {pinned!r} but the launcher has apache-beam {installed}")


def _cluster_order(h: JobHandle) -> tuple[float, str]:
    """The order every observer agrees on: when the *cluster* registered the job, then its id. (Not the
    submitter's clock: an observer that sees a single job of a run then always sees the earliest one, so
    two racing launches both keep the same job.)"""
    return float(h.get("registered") or h.get("started") or 0.0), str(h.get("job_id"))


class BeamClusterBackend(JobBackend):
    """Shared launcher, wait-for-lookup, confirmed cancel and result for Beam runners with a REST API."""

    runner = "abstract"
    cluster = "cluster"

    @cached_property
    def beam(self) -> Any:
        from airflow.providers.apache.beam.hooks.beam import BeamHook

        return BeamHook(runner=self.runner)

    @cached_property
    def http(self) -> Any:
        import httpx

        return httpx.Client(base_url=self.rest_url.rstrip("/"), timeout=max(5.0, self.config.jobs.poll_interval_seconds))

    ended: dict[str, str] = {}  # the cluster's terminal states

    @property
    def _cfg(self) -> Any:
        """This runner's section of ``jobs`` (``jobs.flink`` / ``jobs.spark``)."""
        return getattr(self.config.jobs, self.kind)

    @property
    def rest_url(self) -> str:
        return str(self._cfg.rest_url)

    def pipeline_options(self, spec: JobSpec) -> dict[str, Any]:
        raise NotImplementedError

    def _request_cancel(self, handle: JobHandle) -> None:
        raise NotImplementedError

    def _listing(self) -> list[dict[str, Any]]:
        """Every job/application the cluster lists (each with ``name`` and ``state``)."""
        raise NotImplementedError

    def _handle(self, job: dict[str, Any]) -> JobHandle:
        raise NotImplementedError

    def _check_sdk(self) -> None:
        """Refuse to launch with an SDK other than the pinned one."""
        check_sdk(self._cfg.sdk_version, f"jobs.{self.kind}")

    def find(self, job_key: str) -> list[JobHandle]:
        name = job_name(job_key)
        found = [self._handle(j) for j in self._listing() if parse_identity_name(str(j.get("name") or ""))[0] == name]
        for h in found:
            h["job_key"] = job_key  # the name is truncated at 63 characters; the key is the one asked for
        return sorted(found, key=_cluster_order)

    def list_all(self) -> list[JobHandle]:
        return [self._handle(j) for j in self._listing()
                if str(j.get("name", "")).startswith("skyrec-") and j.get("state") not in self.ended]

    def submit(self, spec: JobSpec) -> JobHandle:
        self._check_sdk()
        options = self.pipeline_options(spec)
        py_file, py_options = launch_args(spec)
        errors: list[BaseException] = []

        def launch() -> None:
            try:
                self.beam.start_python_pipeline(variables=options, py_file=py_file, py_options=py_options,
                                                py_interpreter=sys.executable)
            except BaseException as exc:  # noqa: BLE001 - reported by the waiting thread
                errors.append(exc)

        threading.Thread(target=launch, name=f"{self.kind}-launch-{spec.job_key}", daemon=True).start()
        end = time.monotonic() + max(60.0, self.config.jobs.heartbeat_timeout_seconds)
        while time.monotonic() < end:
            mine = [h for h in self.find(spec.job_key) if h["run_id"] == spec.run.run_id
                    and h["deploy"] == spec.deploy and self.status(h) == RUNNING]
            if mine:
                keep = mine[0]  # the earliest registered: a racing second launch is cancelled, never run twice
                for extra in mine[1:]:
                    self.cancel(extra)
                return keep
            if errors:
                raise JobError(f"{self.cluster} launch of {spec.job} failed: {errors[0]}")
            time.sleep(min(1.0, self.config.jobs.poll_interval_seconds))
        raise JobError(f"{self.cluster} job {job_name(spec.job_key)} did not appear within the startup timeout")

    def cancel(self, handle: JobHandle, timeout: float | None = None, reason: str = "cancelled") -> bool:
        return self.cancel_confirmed(handle, timeout, lambda: self._request_cancel(handle))

    def result(self, handle: JobHandle) -> dict[str, Any] | None:
        status = self.status(handle)
        if status in {FAILED, CANCELLED, LOST}:
            return {"status": "failed", "error": f"{self.cluster} job {handle.get('job_id')} ended {status}"}
        return None  # no summary on the cluster: the operator proves the declared outputs in the lake


# ---- identity in the cluster-side name ----------------------------------------------------------

def identity_name(spec: JobSpec, submitted: float | None = None) -> str:
    """The cluster-side job name: ``skyrec-<job key>``, then the identity (run, dag, task, deploy, try, job,
    submit time) URL-encoded. Neither cluster echoes skyrec's pipeline options reliably (a Spark master never;
    Flink only when Beam submits an uber jar), but both list job names, so the name carries the identity."""
    query = urllib.parse.urlencode({"run": spec.run.run_id, "dag": spec.run.dag_id, "task": spec.run.task_id,
                                    "deploy": spec.deploy, "job": spec.job, "try": spec.run.try_number,
                                    "t": f"{time.time() if submitted is None else submitted:.3f}"})
    return f"{job_name(spec.job_key)}?{query}"


def parse_identity_name(name: str) -> tuple[str, dict[str, str]]:
    """``(skyrec-<job key>, identity)`` from a name made by :func:`identity_name` (identity empty otherwise)."""
    base, _, query = name.partition("?")
    return base, {k: v[-1] for k, v in urllib.parse.parse_qs(query).items()}


# ---- Flink ---------------------------------------------------------------------------------------

FLINK_STATES = {"FINISHED": SUCCEEDED, "FAILED": FAILED, "CANCELED": CANCELLED}  # everything else is not over


def _user_option(user_config: dict[str, Any], name: str) -> Any:
    """A pipeline option from Flink's user-config, under its Python (snake) or Java (camel) name."""
    if name in user_config:
        return user_config[name]
    head, *rest = name.split("_")
    return user_config.get(head + "".join(p[:1].upper() + p[1:] for p in rest))


class FlinkBackend(BeamClusterBackend):
    kind = "flink"
    runner = "FlinkRunner"
    cluster = "Flink"
    ended = FLINK_STATES

    def _get(self, path: str) -> dict[str, Any] | None:
        resp = self.http.get(path)
        if resp.status_code == 404:
            return None
        resp.raise_for_status()
        return dict(resp.json())

    def _listing(self) -> list[dict[str, Any]]:
        return list((self._get("/jobs/overview") or {}).get("jobs") or [])

    def _user_config(self, jid: str) -> tuple[dict[str, Any], dict[str, Any]]:
        conf = (self._get(f"/jobs/{jid}/config") or {}).get("execution-config") or {}
        return conf, dict(conf.get("user-config") or {})

    def _handle(self, job: dict[str, Any]) -> JobHandle:
        _, opts = self._user_config(job["jid"])
        base, ident = parse_identity_name(str(job.get("name") or ""))

        def field(short: str, option: str) -> Any:  # the name first; user-config (uber-jar mode) second
            return ident.get(short) or _user_option(opts, option)

        submitted = float(field("t", "skyrec_submitted") or 0)
        return {"backend": self.kind, "job_key": base.removeprefix("skyrec-") if base.startswith("skyrec-") else None,
                "job_id": job["jid"], "job_name": base, "run_id": field("run", "skyrec_run_id"),
                "dag_id": field("dag", "skyrec_dag_id"), "task_id": field("task", "skyrec_task_id"),
                "deploy": field("deploy", "skyrec_deploy"), "job": field("job", "skyrec_job"),
                "try_number": int(field("try", "skyrec_try") or 0),
                "started": submitted or float(job.get("start-time") or 0) / 1000,
                "registered": float(job.get("start-time") or 0) / 1000}

    def pipeline_options(self, spec: JobSpec) -> dict[str, Any]:
        return {"job_name": identity_name(spec), **runner_options(self.config, self.runner), **identity_options(spec)}

    def status(self, handle: JobHandle) -> str:
        job = self._get(f"/jobs/{handle['job_id']}")
        if job is None:
            return LOST
        return FLINK_STATES.get(str(job.get("state")), RUNNING)

    def _request_cancel(self, handle: JobHandle) -> None:
        resp = self.http.patch(f"/jobs/{handle['job_id']}", params={"mode": "cancel"})
        if resp.status_code not in (200, 202, 404):
            resp.raise_for_status()

    def pinned_settings(self, spec: JobSpec, handle: JobHandle | None = None) -> dict[str, Any]:
        cfg = self._cfg
        pinned = {"parallelism": cfg.parallelism, "environment_type": cfg.environment_type,
                  "environment_config": cfg.environment_config, "deploy": spec.deploy}
        if cfg.environment_type == "DOCKER":
            pinned["sdk_version"] = cfg.sdk_version
        return pinned

    def effective_settings(self, handle: JobHandle) -> dict[str, Any]:
        conf, opts = self._user_config(handle["job_id"])
        image = _user_option(opts, "environment_config")
        name = str((self._get(f"/jobs/{handle['job_id']}") or {}).get("name") or "")
        return {"parallelism": conf.get("job-parallelism"), "environment_type": _user_option(opts, "environment_type"),
                "environment_config": image, "sdk_version": image_tag(image),
                "deploy": parse_identity_name(name)[1].get("deploy") or _user_option(opts, "skyrec_deploy")}

    def resources(self, handle: JobHandle) -> dict[str, float]:
        cfg = self._cfg
        return {"vcpus": cfg.parallelism * cfg.slot_vcpus, "memory_gb": cfg.parallelism * cfg.slot_memory_gb}


# ---- Spark ---------------------------------------------------------------------------------------

SPARK_STATES = {"FINISHED": SUCCEEDED, "FAILED": FAILED, "KILLED": CANCELLED, "UNKNOWN": LOST}
_APP_FIELDS = {"run": "run_id", "dag": "dag_id", "task": "task_id", "deploy": "deploy", "job": "job"}


class SparkBackend(BeamClusterBackend):
    kind = "spark"
    runner = "SparkRunner"
    cluster = "Spark"
    ended = SPARK_STATES

    def _listing(self) -> list[dict[str, Any]]:
        resp = self.http.get("/json/")
        resp.raise_for_status()
        state = resp.json()
        return [*(state.get("activeapps") or []), *(state.get("completedapps") or [])]

    def _app(self, app_id: str) -> dict[str, Any] | None:
        return next((a for a in self._listing() if a.get("id") == app_id), None)

    def _handle(self, app: dict[str, Any]) -> JobHandle:
        base, ident = parse_identity_name(str(app.get("name") or ""))
        handle: JobHandle = {"backend": self.kind, "job_key": base.removeprefix("skyrec-"),
                             "job_id": app["id"], "job_name": base,
                             "try_number": int(ident.get("try") or 0),
                             "started": float(ident.get("t") or 0) or float(app.get("starttime") or 0) / 1000,
                             "registered": float(app.get("starttime") or 0) / 1000}
        handle.update({key: ident.get(short) for short, key in _APP_FIELDS.items()})
        return handle

    def pipeline_options(self, spec: JobSpec) -> dict[str, Any]:
        return {"job_name": job_name(spec.job_key), "app_name": identity_name(spec),
                **runner_options(self.config, self.runner), **identity_options(spec)}

    def status(self, handle: JobHandle) -> str:
        app = self._app(handle["job_id"])
        if app is None:
            return LOST
        return SPARK_STATES.get(str(app.get("state")), RUNNING)  # WAITING, RUNNING

    def _request_cancel(self, handle: JobHandle) -> None:
        resp = self.http.post("/app/kill/", params={"id": handle["job_id"], "terminate": "true"})
        if resp.status_code >= 400 and resp.status_code != 404:
            resp.raise_for_status()

    def pinned_settings(self, spec: JobSpec, handle: JobHandle | None = None) -> dict[str, Any]:
        return {"executor_memory_mb": self._cfg.executor_memory_mb, "cores_within_max": True, "deploy": spec.deploy}

    def effective_settings(self, handle: JobHandle) -> dict[str, Any]:
        app = self._app(handle["job_id"]) or {}
        memory = app.get("memoryperexecutor", app.get("memoryperslave"))
        cores = int(app.get("cores") or 0)
        return {"executor_memory_mb": None if memory is None else int(memory),
                "cores_within_max": cores <= self._cfg.cores_max, "deploy": handle.get("deploy")}

    def resources(self, handle: JobHandle) -> dict[str, float]:
        cfg = self._cfg
        executors = max(1, cfg.cores_max // cfg.executor_cores)
        return {"vcpus": float(cfg.cores_max), "memory_gb": executors * cfg.executor_memory_mb / 1024}
