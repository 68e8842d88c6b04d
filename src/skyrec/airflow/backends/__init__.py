"""Where a heavy job runs: a local process, a Kubernetes pod, or a Beam job on Dataflow, Flink or Spark.

Every backend answers the same questions, so the operator, the trigger and the sweeper hold one policy:

* ``find(job_key)``: every job this backend knows under the deterministic key -- by *lookup*, never only
  by a stored id, so a job whose id was never persisted (the worker died between submit and save) is
  still found;
* ``submit(spec)``: start one; the backend makes the key unique (a lock, a pod name, an active job name)
  so two attempts racing cannot both start one;
* ``status(handle)``, ``cancel(handle, timeout)`` (returns True only once the job is confirmed stopped),
  ``result(handle)`` (the job's own summary when it has one), ``effective_settings`` (read back from the
  running job, compared against ``pinned_settings``) and ``resources`` (for the cost estimate).

A ``JobHandle`` is a plain JSON dict, so it goes into ``task_state_store``, XCom and trigger kwargs.
"""

from __future__ import annotations

import datetime as dt
import os
import re
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from skyrec import __version__
from skyrec.config import Config
from skyrec.jobs.base import RunInfo

RUNNING, SUCCEEDED, FAILED, CANCELLED, LOST = "RUNNING", "SUCCEEDED", "FAILED", "CANCELLED", "LOST"
TERMINAL = {SUCCEEDED, FAILED, CANCELLED, LOST}
BACKENDS = ("local", "kubernetes", "dataflow", "flink", "spark")

JobHandle = dict[str, Any]


class JobError(RuntimeError):
    """A job failed, was cancelled, or cannot be started; the message says which and why."""


class SettingsDrift(JobError):
    """The submitted job's effective settings differ from the pinned configuration."""


def deploy_version() -> str:
    """The version of the code that submits jobs. A job submitted by another version is never reattached.

    ``SKYREC_DEPLOY_VERSION`` is set by a deployment (the wheel version plus git sha, see ``deploy.py``);
    without it, the package version.
    """
    return os.environ.get("SKYREC_DEPLOY_VERSION") or f"skyrec-{__version__}"


_DEPLOYED_AT = re.compile(r"\+(?:[a-z0-9]+\.)*d(\d{14})(?:\.|$)")


def deploy_order(a: str | None, b: str | None) -> int | None:
    """Which of two deploy versions is newer: 1 if ``a`` is, -1 if ``b`` is, 0 if equal, None if unknown.

    ``skyrec deploy`` stamps each deploy with its time (``<version>+d<YYYYMMDDHHMMSS>.g<sha>``): the later
    deploy is the newer one, whatever the package versions say (a rollback is a new deploy). Without stamps
    the package versions decide; two different builds of one version have no order.
    """
    if a == b:
        return 0
    if not a or not b:
        return None
    ta, tb = _DEPLOYED_AT.search(a), _DEPLOYED_AT.search(b)
    if ta and tb:
        return (ta.group(1) > tb.group(1)) - (ta.group(1) < tb.group(1)) or None
    from packaging.version import InvalidVersion, Version

    try:
        va = Version(a.removeprefix("skyrec-").split("+", 1)[0])
        vb = Version(b.removeprefix("skyrec-").split("+", 1)[0])
    except InvalidVersion:
        return None
    return (va > vb) - (va < vb) or None


@dataclass
class JobSpec:
    """Everything needed to start one job for one task instance (never the attempt in the key)."""

    job: str
    run: RunInfo
    params: dict[str, str] = field(default_factory=dict)
    overrides: list[str] = field(default_factory=list)
    force: bool = False
    env: str | None = None
    deploy: str = field(default_factory=deploy_version)

    @property
    def job_key(self) -> str:
        return self.run.job_key

    def job_args(self) -> list[str]:
        """Arguments after ``skyrec job``: name, run identity, params, overrides."""
        args = [self.job, *self.run.to_args()]
        if self.env:
            args += ["--env", self.env]
        for k, v in sorted(self.params.items()):
            args += ["--param", f"{k}={v}"]
        for gate in self.overrides:
            args += ["--override", gate]
        if self.force:
            args.append("--force")
        return args

    def labels(self) -> dict[str, str]:
        """Identity labels put on pods / Dataflow jobs (values safe for both label syntaxes)."""
        return {"skyrec-job-key": self.job_key, "skyrec-run": _label(self.run.run_id),
                "skyrec-deploy": _label(self.deploy), "skyrec-try": str(self.run.try_number)}

    def as_dict(self) -> dict[str, Any]:
        return {"job": self.job, "run": self.run.as_dict(), "params": dict(self.params),
                "overrides": list(self.overrides), "force": self.force, "env": self.env, "deploy": self.deploy}

    @classmethod
    def from_dict(cls, d: dict[str, Any]) -> JobSpec:
        r = dict(d["run"])
        for k in ("logical_date", "interval_start", "interval_end"):
            if r.get(k):
                r[k] = dt.datetime.fromisoformat(r[k])
        return cls(job=d["job"], run=RunInfo(**r), params=dict(d.get("params") or {}),
                   overrides=list(d.get("overrides") or []), force=bool(d.get("force")), env=d.get("env"),
                   deploy=d.get("deploy") or deploy_version())


def _label(value: str) -> str:
    """Kubernetes/GCP label values: <=63 chars of [a-z0-9_.-]; a long run id keeps a hash suffix."""
    import hashlib
    import re

    v = re.sub(r"[^a-z0-9_.-]+", "-", value.lower()).strip("-_.")
    if len(v) > 63:
        v = f"{v[:46]}-{hashlib.sha256(value.encode()).hexdigest()[:16]}"
    return v or "none"


class JobBackend:
    """Interface; see the module docstring. ``kind`` names it in handles and records."""

    kind = "abstract"

    def __init__(self, config: Config) -> None:
        self.config = config

    # lookup and lifecycle
    def find(self, job_key: str) -> list[JobHandle]:
        raise NotImplementedError

    def submit(self, spec: JobSpec) -> JobHandle:
        raise NotImplementedError

    def status(self, handle: JobHandle) -> str:
        raise NotImplementedError

    def cancel(self, handle: JobHandle, timeout: float | None = None) -> bool:
        raise NotImplementedError

    def cancel_confirmed(self, handle: JobHandle, timeout: float | None, request: Callable[[], Any]) -> bool:
        """Send the backend's cancel ``request`` for a running job, then poll until it is no longer RUNNING;
        True only once it is confirmed stopped (within ``timeout``, default ``jobs.cancel_timeout_seconds``)."""
        timeout = self.config.jobs.cancel_timeout_seconds if timeout is None else timeout
        if self.status(handle) != RUNNING:
            return True
        request()
        end = time.monotonic() + max(1.0, timeout)
        while time.monotonic() < end:
            if self.status(handle) != RUNNING:
                return True
            time.sleep(min(0.5, self.config.jobs.poll_interval_seconds))
        return self.status(handle) != RUNNING

    def result(self, handle: JobHandle) -> dict[str, Any] | None:
        """The job's own result payload (``status``, ``summary``/``error``) once it ended, else None."""
        return None

    def list_all(self) -> list[JobHandle]:
        """Every job this backend knows (for the sweeper)."""
        raise NotImplementedError

    # settings, resources, logs
    def pinned_settings(self, spec: JobSpec, handle: JobHandle | None = None) -> dict[str, Any]:
        """Settings the job must run with (``handle``: what was submitted, for launch-specific values)."""
        raise NotImplementedError

    def effective_settings(self, handle: JobHandle) -> dict[str, Any]:
        raise NotImplementedError

    def resources(self, handle: JobHandle) -> dict[str, float]:
        """``{"vcpus": .., "memory_gb": ..}`` the job holds (for the cost estimate)."""
        return {"vcpus": 1.0, "memory_gb": 1.0}

    def read_log(self, handle: JobHandle, offset: int) -> tuple[str, int]:
        return "", offset

    def silent_for(self, handle: JobHandle) -> float | None:
        """Seconds since the running job last showed it is alive (heartbeat), None when not tracked."""
        return None

    def free_bytes(self) -> int | None:
        """Space available to a job (for the disk preflight); None when the backend cannot tell."""
        return None

    def touch_owner(self, handle: JobHandle, owner: dict[str, Any] | None = None) -> None:
        """Record that the owning task (or trigger) is alive and watching this job (sweeper fallback)."""

    @staticmethod
    def started_at(handle: JobHandle) -> float:
        return float(handle.get("started") or 0.0)


def check_drift(pinned: dict[str, Any], effective: dict[str, Any]) -> list[str]:
    """Names and values of every pinned setting the running job does not have."""
    out = []
    for key, want in pinned.items():
        got = effective.get(key)
        if got != want:
            out.append(f"{key}: pinned {want!r}, job has {got!r}")
    return out


def backend_for(config: Config, kind: str | None = None) -> JobBackend:
    kind = kind or config.jobs.backend
    if kind == "local":
        from skyrec.airflow.backends.local import LocalProcessBackend

        return LocalProcessBackend(config)
    if kind == "kubernetes":
        from skyrec.airflow.backends.kubernetes import KubernetesPodBackend

        return KubernetesPodBackend(config)
    if kind == "dataflow":
        from skyrec.airflow.backends.dataflow import DataflowBackend

        return DataflowBackend(config)
    if kind == "flink":
        from skyrec.airflow.backends.beam_runners import FlinkBackend

        return FlinkBackend(config)
    if kind == "spark":
        from skyrec.airflow.backends.beam_runners import SparkBackend

        return SparkBackend(config)
    raise JobError(f"jobs.backend: unknown backend {kind!r} ({', '.join(BACKENDS)})")
