"""Beam jobs on Google Cloud Dataflow, through the google provider's ``DataflowHook`` (and the apache-beam
provider's ``BeamHook`` to launch the pipeline).

* The Dataflow job name is derived from the job key (``skyrec-<job key>``), and Dataflow refuses a second
  *active* job with the same name -- the per-key lock. ``find`` lists jobs by that name, so a retry finds
  the job even when the launcher died before reporting its id.
* Labels carry key, run, deploy and try; pipeline options carry the exact dag/run/task ids.
* Pinned settings from config ``jobs.dataflow`` (machine type, disk size, shuffle mode, experiments, SDK
  version) are compared with what the Dataflow API reports for the submitted job (its ``environment``
  and ``jobMetadata``): a runner or a service default that silently changed a setting is drift, and the
  job is cancelled before it writes anything.
* Cancel requests ``JOB_STATE_CANCELLED`` and confirms the job reached a terminal state.

The launcher (``beam_runners.launch_args``) runs ``python -m skyrec.jobs.base <job args> --runner=...
<pipeline options>``; the job hands the options to its Beam pipelines. Tests use a fake of
``DataflowHook.get_conn`` (the discovery ``projects.locations.jobs`` resource) and of
``BeamHook.start_python_pipeline`` -- the client boundary the providers' own tests mock. The Flink and
Spark runners (``beam_runners.py``) share the launcher but not the lookup: each has its own backend that
finds, reads back and cancels jobs through the cluster's REST API (Flink JobManager, Spark master).
"""

from __future__ import annotations

import re
import sys
import threading
import time
from functools import cached_property
from typing import Any

from skyrec.airflow.backends import (
    CANCELLED,
    FAILED,
    RUNNING,
    SUCCEEDED,
    JobBackend,
    JobError,
    JobHandle,
    JobSpec,
)

_STATES = {"JOB_STATE_DONE": SUCCEEDED, "JOB_STATE_UPDATED": SUCCEEDED, "JOB_STATE_FAILED": FAILED,
           "JOB_STATE_CANCELLED": CANCELLED, "JOB_STATE_DRAINED": CANCELLED, "JOB_STATE_STOPPED": RUNNING}
SHUFFLE_MODES = {"service": "SERVICE_BASED", "appliance": "VM_BASED"}
_MEM_PER_VCPU = {"highmem": 8.0, "standard": 4.0, "highcpu": 1.0, "megamem": 14.0, "ultramem": 24.0}


def machine_resources(machine_type: str) -> dict[str, float]:
    m = re.match(r"^[a-z0-9]+-([a-z]+)-(\d+)$", machine_type)
    if not m:
        return {"vcpus": 1.0, "memory_gb": 4.0}
    vcpus = float(m.group(2))
    return {"vcpus": vcpus, "memory_gb": vcpus * _MEM_PER_VCPU.get(m.group(1), 4.0)}


def job_name(job_key: str) -> str:
    return f"skyrec-{job_key}"[:63]


class DataflowBackend(JobBackend):
    kind = "dataflow"

    @cached_property
    def hook(self) -> Any:
        from airflow.providers.google.cloud.hooks.dataflow import DataflowHook

        return DataflowHook(poll_sleep=int(max(1, self.config.jobs.poll_interval_seconds)),
                            cancel_timeout=int(self.config.jobs.cancel_timeout_seconds))

    @cached_property
    def beam(self) -> Any:
        from airflow.providers.apache.beam.hooks.beam import BeamHook, BeamRunnerType

        return BeamHook(runner=BeamRunnerType.DataflowRunner)

    @property
    def _cfg(self) -> Any:
        return self.config.jobs.dataflow

    def _jobs(self) -> Any:
        return self.hook.get_conn().projects().locations().jobs()

    # ---- identity ------------------------------------------------------------------------------
    def _handle(self, job: dict[str, Any]) -> JobHandle:
        labels = job.get("labels") or {}
        opts = ((job.get("environment") or {}).get("sdkPipelineOptions") or {}).get("options") or {}
        created = job.get("createTime")
        started = float(opts.get("skyrec_submitted") or 0) or (
            time.mktime(time.strptime(created[:19], "%Y-%m-%dT%H:%M:%S")) if created else 0.0)
        return {"backend": self.kind, "job_key": labels.get("skyrec-job-key"), "job_id": job["id"],
                "job_name": job.get("name"), "run_id": opts.get("skyrec_run_id"), "dag_id": opts.get("skyrec_dag_id"),
                "task_id": opts.get("skyrec_task_id"), "deploy": opts.get("skyrec_deploy"),
                "job": opts.get("skyrec_job"), "try_number": int(labels.get("skyrec-try", "0") or 0),
                "started": started}

    def _list(self, **filters: Any) -> list[dict[str, Any]]:
        resp = self._jobs().list(projectId=self._cfg.project, location=self._cfg.region, **filters).execute()
        return list(resp.get("jobs") or [])

    def _get(self, job_id: str) -> dict[str, Any]:
        return self._jobs().get(projectId=self._cfg.project, location=self._cfg.region, jobId=job_id,
                                view="JOB_VIEW_ALL").execute()

    def find(self, job_key: str) -> list[JobHandle]:
        name = job_name(job_key)
        jobs = [self._get(j["id"]) for j in self._list() if j.get("name") == name]
        return sorted((self._handle(j) for j in jobs), key=lambda h: h["started"])

    def list_all(self) -> list[JobHandle]:
        return [self._handle(self._get(j["id"])) for j in self._list(filter="ACTIVE")
                if str(j.get("name", "")).startswith("skyrec-")]

    # ---- lifecycle -----------------------------------------------------------------------------
    def pipeline_options(self, spec: JobSpec) -> dict[str, Any]:
        from skyrec.airflow.backends.beam_runners import identity_options
        from skyrec.pipelines.runners import runner_options

        return {"runner": "DataflowRunner", "job_name": job_name(spec.job_key), "labels": spec.labels(),
                **runner_options(self.config, "DataflowRunner"), **identity_options(spec)}

    def submit(self, spec: JobSpec) -> JobHandle:
        if not self._cfg.project:
            raise JobError("jobs.dataflow.project: not set; the Dataflow backend needs a GCP project")
        from skyrec.airflow.backends.beam_runners import launch_args

        options = self.pipeline_options(spec)
        py_file, py_options = launch_args(spec)
        errors: list[BaseException] = []

        def launch() -> None:
            try:
                self.beam.start_python_pipeline(
                    variables=options, py_file=py_file, py_options=py_options,
                    py_interpreter=sys.executable, is_dataflow_job_id_exist_callback=lambda: bool(
                        [h for h in self.find(spec.job_key) if h["run_id"] == spec.run.run_id]))
            except BaseException as exc:  # noqa: BLE001 - reported by the waiting thread
                errors.append(exc)

        threading.Thread(target=launch, name=f"dataflow-launch-{spec.job_key}", daemon=True).start()
        end = time.monotonic() + max(60.0, self.config.jobs.heartbeat_timeout_seconds)
        while time.monotonic() < end:  # the job is identified by lookup, never by parsing launcher output
            mine = [h for h in self.find(spec.job_key) if h["run_id"] == spec.run.run_id and h["deploy"] == spec.deploy]
            if mine:
                return mine[-1]
            if errors:
                raise JobError(f"Dataflow launch of {spec.job} failed: {errors[0]}")
            time.sleep(min(1.0, self.config.jobs.poll_interval_seconds))
        raise JobError(f"Dataflow job {job_name(spec.job_key)} did not appear within the startup timeout")

    def status(self, handle: JobHandle) -> str:
        return _STATES.get(self._get(handle["job_id"]).get("currentState", ""), RUNNING)

    def cancel(self, handle: JobHandle, timeout: float | None = None, reason: str = "cancelled") -> bool:
        return self.cancel_confirmed(handle, timeout, lambda: self._jobs().update(
            projectId=self._cfg.project, location=self._cfg.region, jobId=handle["job_id"],
            body={"requestedState": "JOB_STATE_CANCELLED"}).execute())

    def result(self, handle: JobHandle) -> dict[str, Any] | None:
        status = self.status(handle)
        if status == SUCCEEDED:
            return None  # Dataflow keeps no summary: the operator proves the declared outputs in the lake
        if status in {FAILED, CANCELLED}:
            return {"status": "failed", "error": f"Dataflow job {handle.get('job_id')} ended {status}"}
        return None

    # ---- settings, resources ------------------------------------------------------------------
    def pinned_settings(self, spec: JobSpec, handle: JobHandle | None = None) -> dict[str, Any]:
        cfg = self._cfg
        return {"machine_type": cfg.machine_type, "disk_size_gb": cfg.disk_size_gb,
                "shuffle_mode": SHUFFLE_MODES.get(cfg.shuffle_mode, cfg.shuffle_mode),
                "experiments": sorted({*cfg.experiments}), "sdk_version": cfg.sdk_version, "deploy": spec.deploy}

    def effective_settings(self, handle: JobHandle) -> dict[str, Any]:
        job = self._get(handle["job_id"])
        env = job.get("environment") or {}
        pool = (env.get("workerPools") or [{}])[0]
        # Dataflow adds experiments of its own; drift is a pinned one missing
        present = set(self._cfg.experiments) & set(env.get("experiments") or [])
        opts = (env.get("sdkPipelineOptions") or {}).get("options") or {}
        return {"machine_type": pool.get("machineType"), "disk_size_gb": pool.get("diskSizeGb"),
                "shuffle_mode": env.get("shuffleMode"), "experiments": sorted(present),
                "sdk_version": ((job.get("jobMetadata") or {}).get("sdkVersion") or {}).get("version"),
                "deploy": opts.get("skyrec_deploy")}

    def resources(self, handle: JobHandle) -> dict[str, float]:
        per = machine_resources(self._cfg.machine_type)
        return {k: v * self._cfg.max_workers for k, v in per.items()}
