"""Jobs as Kubernetes pods, through the cncf-kubernetes provider's ``KubernetesHook`` client.

Identity lives on the pod, so a lookup by key finds it whatever the worker managed to save:

* name ``<job key>-<n>`` (n = 1 + pods already under the key): creating it is the per-key lock -- of two
  attempts racing, the API answers 409 to the second, which then looks up and reattaches;
* labels ``skyrec-job-key``, ``skyrec-run``, ``skyrec-deploy``, ``skyrec-try`` (label-safe), and
  annotations with the exact dag id, run id, task id and deploy version (never reattach to another run or
  another deploy's pod);
* pinned image and resources from config ``jobs.kubernetes``, read back from the created pod (an
  admission webhook or a mutating controller that swaps the image is caught as drift).

The job prints its summary as the last JSON line of its log; that is the pod's result.
Cancel deletes the pod with a grace period of ``cancel_timeout``, then force-deletes, and confirms the
pod is gone (404). Tests use a fake of ``KubernetesHook.core_v1_client`` (the CoreV1Api boundary), the way
the provider's own tests mock it; nothing else is faked.
"""

from __future__ import annotations

import json
import re
import time
from functools import cached_property
from typing import Any

from skyrec.airflow.backends import (
    FAILED,
    LOST,
    RUNNING,
    SUCCEEDED,
    JobBackend,
    JobError,
    JobHandle,
    JobSpec,
)

MANAGED_BY = "skyrec"
_ANN = "skyrec.io/"


def _api_status(exc: Exception) -> int | None:
    return getattr(exc, "status", None)


def parse_cpu(value: str) -> float:
    v = str(value)
    return float(v[:-1]) / 1000 if v.endswith("m") else float(v)


def parse_memory_gb(value: str) -> float:
    m = re.match(r"^([0-9.]+)\s*([KMGT]i?)?$", str(value))
    if not m:
        raise JobError(f"jobs.kubernetes.resources: cannot read memory {value!r}")
    scale = {"Ki": 2**10, "Mi": 2**20, "Gi": 2**30, "Ti": 2**40, "K": 1e3, "M": 1e6, "G": 1e9, "T": 1e12, None: 1}
    return float(m.group(1)) * scale[m.group(2)] / 2**30


class KubernetesPodBackend(JobBackend):
    kind = "kubernetes"

    @cached_property
    def hook(self) -> Any:
        from airflow.providers.cncf.kubernetes.hooks.kubernetes import KubernetesHook

        return KubernetesHook()

    @property
    def client(self) -> Any:
        return self.hook.core_v1_client

    @property
    def namespace(self) -> str:
        return self.config.jobs.kubernetes.namespace

    # ---- identity ------------------------------------------------------------------------------
    def _handle(self, pod: Any) -> JobHandle:
        meta = pod.metadata
        ann = meta.annotations or {}
        labels = meta.labels or {}
        return {"backend": self.kind, "job_key": labels.get("skyrec-job-key"), "pod_name": meta.name,
                "namespace": meta.namespace or self.namespace, "run_id": ann.get(_ANN + "run-id"),
                "dag_id": ann.get(_ANN + "dag-id"), "task_id": ann.get(_ANN + "task-id"),
                "deploy": ann.get(_ANN + "deploy"), "job": ann.get(_ANN + "job"),
                "try_number": int(labels.get("skyrec-try", "0") or 0),
                "started": float(ann.get(_ANN + "submitted", "0") or 0)}

    def find(self, job_key: str) -> list[JobHandle]:
        pods = self.client.list_namespaced_pod(self.namespace, label_selector=f"skyrec-job-key={job_key}").items
        return sorted((self._handle(p) for p in pods), key=lambda h: h["started"])

    def list_all(self) -> list[JobHandle]:
        pods = self.client.list_namespaced_pod(self.namespace,
                                               label_selector=f"app.kubernetes.io/managed-by={MANAGED_BY}").items
        return [self._handle(p) for p in pods]

    # ---- lifecycle -----------------------------------------------------------------------------
    def pod_manifest(self, spec: JobSpec, name: str) -> Any:
        from kubernetes.client import models as k8s

        cfg = self.config.jobs.kubernetes
        labels = {**spec.labels(), "app.kubernetes.io/managed-by": MANAGED_BY, "app.kubernetes.io/name": "skyrec-job"}
        annotations = {_ANN + "run-id": spec.run.run_id, _ANN + "dag-id": spec.run.dag_id,
                       _ANN + "task-id": spec.run.task_id, _ANN + "deploy": spec.deploy, _ANN + "job": spec.job,
                       _ANN + "submitted": f"{time.time():.3f}"}
        resources = dict(cfg.resources)
        container = k8s.V1Container(
            name="job", image=cfg.image, command=["skyrec", "job"], args=spec.job_args(),
            env=[k8s.V1EnvVar(name="SKYREC_DEPLOY_VERSION", value=spec.deploy),
                 k8s.V1EnvVar(name="SKYREC_ENV", value=spec.env or self.config.env),
                 # the compiled top-K kernel caches its machine code; site-packages may be read-only in the image
                 k8s.V1EnvVar(name="NUMBA_CACHE_DIR", value="/tmp/skyrec-numba-cache")],
            resources=k8s.V1ResourceRequirements(requests=resources, limits=resources))
        return k8s.V1Pod(
            metadata=k8s.V1ObjectMeta(name=name, namespace=self.namespace, labels=labels, annotations=annotations),
            spec=k8s.V1PodSpec(containers=[container], restart_policy="Never"))

    def submit(self, spec: JobSpec) -> JobHandle:
        for _ in range(5):
            n = len(self.find(spec.job_key)) + 1
            name = f"{spec.job_key}-{n}"[:63]
            try:
                pod = self.client.create_namespaced_pod(self.namespace, self.pod_manifest(spec, name))
            except Exception as exc:
                if _api_status(exc) == 409:  # another attempt created it first: never a second job
                    mine = [h for h in self.find(spec.job_key) if h["pod_name"] == name]
                    if mine and mine[0]["run_id"] == spec.run.run_id and mine[0]["deploy"] == spec.deploy:
                        return mine[0]
                    continue
                raise JobError(f"could not create pod {name}: {exc}") from exc
            return self._handle(pod)
        raise JobError(f"could not create a pod for {spec.job_key}: name conflicts kept happening")

    def _read(self, handle: JobHandle) -> Any | None:
        try:
            return self.client.read_namespaced_pod(handle["pod_name"], handle.get("namespace") or self.namespace)
        except Exception as exc:
            if _api_status(exc) == 404:
                return None
            raise

    def status(self, handle: JobHandle) -> str:
        pod = self._read(handle)
        if pod is None:
            return LOST
        if pod.metadata.deletion_timestamp is not None:
            return RUNNING  # terminating: not gone until the API says 404
        phase = (pod.status.phase if pod.status else None) or "Pending"
        return {"Pending": RUNNING, "Running": RUNNING, "Succeeded": SUCCEEDED, "Failed": FAILED}.get(phase, RUNNING)

    def cancel(self, handle: JobHandle, timeout: float | None = None, reason: str = "cancelled") -> bool:
        timeout = self.config.jobs.cancel_timeout_seconds if timeout is None else timeout
        name, ns = handle["pod_name"], handle.get("namespace") or self.namespace
        for grace in (int(timeout), 0):
            try:
                self.client.delete_namespaced_pod(name, ns, grace_period_seconds=grace)
            except Exception as exc:
                if _api_status(exc) == 404:
                    return True
                raise
            end = time.monotonic() + max(1.0, timeout) + 5
            while time.monotonic() < end:
                if self._read(handle) is None:
                    return True
                time.sleep(min(0.5, self.config.jobs.poll_interval_seconds))
        return self._read(handle) is None

    def result(self, handle: JobHandle) -> dict[str, Any] | None:
        status = self.status(handle)
        if status not in {SUCCEEDED, FAILED}:
            return None
        logs = self._logs(handle)
        if status == FAILED:
            return {"status": "failed", "error": (logs.strip().splitlines() or ["pod failed"])[-1]}
        for line in reversed(logs.strip().splitlines()):
            try:
                summary = json.loads(line)
            except ValueError:
                continue
            if isinstance(summary, dict):
                return {"status": "success", "summary": summary}
        return {"status": "success", "summary": {"outputs": []}}

    def _logs(self, handle: JobHandle) -> str:
        try:
            out = self.client.read_namespaced_pod_log(handle["pod_name"], handle.get("namespace") or self.namespace,
                                                      container="job")
        except Exception as exc:
            if _api_status(exc) in {400, 404}:
                return ""
            raise
        return out.decode() if isinstance(out, bytes) else str(out)

    def read_log(self, handle: JobHandle, offset: int) -> tuple[str, int]:
        text = self._logs(handle)
        return text[offset:], len(text)

    # ---- settings, resources ------------------------------------------------------------------
    def pinned_settings(self, spec: JobSpec, handle: JobHandle | None = None) -> dict[str, Any]:
        cfg = self.config.jobs.kubernetes
        return {"image": cfg.image, "resources": dict(cfg.resources), "deploy": spec.deploy}

    def effective_settings(self, handle: JobHandle) -> dict[str, Any]:
        pod = self._read(handle)
        if pod is None:
            return {}
        c = next((c for c in pod.spec.containers if c.name == "job"), pod.spec.containers[0])
        limits = dict((c.resources.limits or {}) if c.resources else {})
        env = {e.name: e.value for e in (c.env or [])}
        return {"image": c.image, "resources": limits, "deploy": env.get("SKYREC_DEPLOY_VERSION")}

    def resources(self, handle: JobHandle) -> dict[str, float]:
        res = self.config.jobs.kubernetes.resources
        return {"vcpus": parse_cpu(res.get("cpu", "1")), "memory_gb": parse_memory_gb(res.get("memory", "1Gi"))}
