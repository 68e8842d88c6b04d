"""``SkyrecJobOperator``: run one skyrec job outside the worker, exactly once per task instance.

Shaped like the Dataflow provider's operators (a backend handle stored as soon as it exists, ``on_kill``
cancelling with a bounded timeout, a deferrable mode whose ``execute_complete`` raises on error or
cancel) and built on Airflow 3.3's ``ResumableJobMixin``: the job handle goes into ``task_state_store``
right after submit. The deterministic job key closes the gap the mixin documents (worker dying between
submit and persist): ``submit_job`` first *looks the job up by key* under the backend's per-key lock and
reattaches, so a retry never starts a second job even when nothing was persisted.

Declarative at parse time: ``__init__`` only validates and stores; config is read, and the backend is
created, in ``execute``. Every constructor field is a template field, so it survives serialisation.
"""

from __future__ import annotations

import datetime as dt
import re
import time
from collections.abc import Sequence
from functools import cached_property
from typing import TYPE_CHECKING, Any

from airflow.sdk import BaseOperator
from airflow.sdk.bases.resumablejobmixin import ResumableJobMixin
from airflow.sdk.exceptions import AirflowFailException, AirflowTaskTimeout

from skyrec.airflow.backends import (
    BACKENDS,
    RUNNING,
    SUCCEEDED,
    TERMINAL,
    JobBackend,
    JobError,
    JobHandle,
    JobSpec,
    backend_for,
    deploy_version,
)
from skyrec.airflow.control import (
    check_settings,
    decide,
    estimate_cost,
    key_lock,
    outputs_committed,
    preflight_disk,
    verify_outputs,
)
from skyrec.airflow.notify import check_duration, deliver_alerts, send_alert
from skyrec.gates import UnknownGate, check_overrides
from skyrec.jobs.base import EXIT_BAD_INPUT, EXIT_GATE, RunInfo

if TYPE_CHECKING:
    from airflow.sdk import Context

    from skyrec.config import Config

_JOB_NAME = re.compile(r"^[a-z][a-z0-9_-]*$")
_GATE = re.compile(r"^[a-z][a-z0-9_]*$")


def _utc(value: Any) -> dt.datetime | None:
    if value is None:
        return None
    return dt.datetime.fromtimestamp(value.timestamp(), dt.UTC)


class SkyrecJobOperator(ResumableJobMixin, BaseOperator):
    """Run skyrec job ``job`` (``skyrec.jobs.<job>.run``) on the configured backend and prove its outputs.

    :param job: job name (``skyrec job NAME``)
    :param job_params: ``--param`` values (templated), e.g. ``{"variant": "music_mixes"}``
    :param outputs: dataset names the job must commit (checked by the post-condition)
    :param inputs: dataset names whose latest committed size estimates the disk the job needs
    :param deadline_minutes: override of config ``jobs.deadlines_minutes`` for this task
    :param deferrable: wait in the triggerer (``SkyrecJobTrigger``) instead of the worker
    :param backend: override of config ``jobs.backend``
    :param skip_if_committed: skip launching when every declared output of this run is committed already
    :param conf_params: merge ``dag_run.conf["job_params"]`` into ``job_params`` (manual/ad-hoc runs)
    :param poll_interval: override of config ``jobs.poll_interval_seconds``
    """

    template_fields: Sequence[str] = ("job", "job_params", "outputs", "inputs", "deadline_minutes", "deferrable",
                                      "backend", "skip_if_committed", "conf_params", "poll_interval")
    ui_color = "#d7e9f7"
    external_id_key = "skyrec_job_handle"

    def __init__(self, *, job: str, job_params: dict[str, Any] | None = None, outputs: Sequence[str] = (),
                 inputs: Sequence[str] = (), deadline_minutes: float | None = None, deferrable: bool = False,
                 backend: str | None = None, skip_if_committed: bool = True, conf_params: bool = False,
                 poll_interval: float | None = None, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        if not isinstance(job, str) or not _JOB_NAME.match(job):
            raise ValueError(f"{self.task_id}: job {job!r} is not a valid job name")
        params = dict(job_params or {})
        for k in params:
            if not isinstance(k, str) or not re.match(r"^[a-z][a-z0-9_]*$", k):
                raise ValueError(f"{self.task_id}: job_params key {k!r} must be lower_snake_case")
        if deadline_minutes is not None and float(deadline_minutes) <= 0:
            raise ValueError(f"{self.task_id}: deadline_minutes must be > 0, got {deadline_minutes}")
        if backend is not None and backend not in BACKENDS:
            raise ValueError(f"{self.task_id}: backend {backend!r} is not one of {', '.join(BACKENDS)}")
        self.job = job
        self.job_params = params
        self.outputs = [str(o) for o in outputs]
        self.inputs = [str(i) for i in inputs]
        self.deadline_minutes = None if deadline_minutes is None else float(deadline_minutes)
        self.deferrable = bool(deferrable)
        self.backend = backend
        self.skip_if_committed = bool(skip_if_committed)
        self.conf_params = bool(conf_params)
        self.poll_interval = None if poll_interval is None else float(poll_interval)
        self._handle: JobHandle | None = None
        self._result: dict[str, Any] | None = None
        self._spec: JobSpec | None = None
        self._max_resources: dict[str, float] = {}
        # set by on_kill: a job submitted or reattached after the kill (on_kill raced the submit) is
        # cancelled at once. Not reset per attempt: Airflow runs each attempt on a fresh copy.
        self._killed = False

    # ---- lazily built runtime state (never at parse time) --------------------------------------
    @cached_property
    def config(self) -> Config:
        from skyrec.config import load_config

        return load_config()

    @cached_property
    def job_backend(self) -> JobBackend:
        return backend_for(self.config, self.backend)

    @cached_property
    def lake(self) -> Any:
        from skyrec.storage import Lake

        return Lake.from_config(self.config)

    def deadline_seconds(self) -> float:
        if self.deadline_minutes is not None:
            return self.deadline_minutes * 60.0
        return self.config.jobs.deadline_seconds(self.job)

    def _poll(self) -> float:
        return self.poll_interval or self.config.jobs.poll_interval_seconds

    def build_spec(self, context: Context) -> JobSpec:
        ti = context["ti"]
        dag_run = context.get("dag_run")
        conf = dict(getattr(dag_run, "conf", None) or {})
        overrides = conf.get("overrides") or []
        if not isinstance(overrides, list) or not all(isinstance(g, str) and _GATE.match(g) for g in overrides):
            raise ValueError(f"dag_run.conf['overrides'] must be a list of gate names, got {overrides!r}")
        try:  # a typo (from the UI's run conf) would override nothing, silently: fail, not retried
            check_overrides(overrides, where="dag_run.conf['overrides']")
        except UnknownGate as exc:
            raise AirflowFailException(f"{exc} [bad run conf: not retried]") from None
        params = {k: str(v) for k, v in self.job_params.items() if v is not None and v != ""}
        if self.conf_params:
            extra = conf.get("job_params") or {}
            if not isinstance(extra, dict):
                raise ValueError(f"dag_run.conf['job_params'] must be a mapping, got {extra!r}")
            params.update({str(k): str(v) for k, v in extra.items()})
        logical = _utc(context.get("logical_date")) or _utc(getattr(dag_run, "run_after", None))
        run = RunInfo(dag_id=ti.dag_id, run_id=ti.run_id, task_id=ti.task_id, try_number=int(ti.try_number),
                      logical_date=logical or dt.datetime.now(dt.UTC),
                      interval_start=_utc(context.get("data_interval_start")),
                      interval_end=_utc(context.get("data_interval_end")))
        return JobSpec(job=self.job, run=run, params=params, overrides=list(overrides),
                       force=bool(conf.get("force", False)), env=self.config.env, deploy=deploy_version())

    def _owner(self, spec: JobSpec) -> dict[str, Any]:
        return {"dag_id": spec.run.dag_id, "run_id": spec.run.run_id, "task_id": spec.run.task_id,
                "try_number": spec.run.try_number}

    # ---- entry points --------------------------------------------------------------------------
    def _reset(self) -> None:
        """Fresh runtime state per attempt: never carry a config, backend or handle over from another try."""
        for name in ("config", "job_backend", "lake"):
            self.__dict__.pop(name, None)
        self._handle, self._result, self._spec, self._max_resources = None, None, None, {}

    def execute(self, context: Context) -> Any:
        self._reset()
        self._spec = self.build_spec(context)
        self.log.info("job %s key=%s backend=%s deploy=%s", self.job, self._spec.job_key,
                      self.job_backend.kind, self._spec.deploy)
        return self.execute_resumable(context)

    def execute_complete(self, context: Context, event: dict[str, Any]) -> Any:
        """Resume after the trigger: raise on failure, cancel or deadline; otherwise prove the outputs."""
        self._reset()
        self._spec = self.build_spec(context)
        handle = event.get("handle") or {}
        self._handle = handle
        status = event.get("status")
        if status == "deadline":
            raise JobError(f"{event.get('message')}; deadline {self.deadline_seconds():.0f}s")
        if status != "success":
            result = self.job_backend.result(handle) or {}
            self._raise_failure(f"job {self.job} ended {status}: {result.get('error') or event.get('message')}",
                                result)
        return self._finish(handle)

    @staticmethod
    def _raise_failure(message: str, result: dict[str, Any]) -> None:
        """A failed gate or bad input fails the same way on every attempt: fail now, without retries
        (the failure alert still goes out; an operator overrides a gate for one run via the run conf).
        Anything else (crash, kill, lost worker) is retried -- and the retry reattaches or resumes."""
        code = result.get("exit_code")
        if code == EXIT_GATE:
            raise AirflowFailException(f"{message} [gate failed: not retried]")
        if code == EXIT_BAD_INPUT:
            raise AirflowFailException(f"{message} [bad input or config: not retried]")
        raise JobError(message)

    def on_kill(self) -> None:
        """The task is being stopped: cancel the job too (bounded wait), and say whether it stopped.

        A kill that comes before the job's handle exists (mid-submit) is remembered: ``submit_job`` and the
        wait loop cancel the job as soon as they hold its handle (``_stop_if_killed``)."""
        self._killed = True
        if self._handle and not self._handle.get("skipped"):
            confirmed = self.job_backend.cancel(self._handle, self.config.jobs.cancel_timeout_seconds)
            self.log.warning("on_kill: cancelled job %s, confirmed=%s", self._handle.get("job_key"), confirmed)

    def _stop_if_killed(self, handle: JobHandle | None, spec: JobSpec) -> None:
        """After ``on_kill``: cancel the job this attempt holds (confirmed, bounded) and end the attempt."""
        if not self._killed:
            return
        confirmed = True
        if handle and not handle.get("skipped"):
            confirmed = self.job_backend.cancel(handle, self.config.jobs.cancel_timeout_seconds)
        raise JobError(f"task {spec.run.task_id} was killed: job {spec.job_key} cancelled, confirmed={confirmed}")

    # ---- ResumableJobMixin ---------------------------------------------------------------------
    def submit_job(self, context: Context) -> JobHandle:
        spec = self._spec or self.build_spec(context)
        self._stop_if_killed(None, spec)  # killed before anything was submitted: submit nothing
        backend = self.job_backend
        stored = None
        store = context.get("task_state_store")
        if store is not None:
            stored = store.get(self.external_id_key)
        with key_lock(backend, spec.job_key):
            committed = self.skip_if_committed and outputs_committed(self.config, self.lake, spec, self.outputs)
            decision = decide(backend, spec, stored=stored if isinstance(stored, dict) else None,
                              outputs_committed=committed, cancel_timeout=self.config.jobs.cancel_timeout_seconds)
            for note in decision.notes:
                self.log.warning(note) if note.startswith("not reattaching") else self.log.info(note)
            if decision.action == "skip":
                skipped: JobHandle = {"backend": backend.kind, "job_key": spec.job_key, "skipped": True,
                                      "run_id": spec.run.run_id, "deploy": spec.deploy}
                self._handle = skipped
                return skipped
            if decision.action in {"reattach", "done"} and decision.handle is not None:
                self._handle = decision.handle
                return decision.handle
            gate = preflight_disk(self.config, self.lake, backend, self.inputs, spec.overrides)
            self.log.info("disk preflight: %s", gate.get("message"))
            handle = backend.submit(spec)
            self._handle = handle
            self.log.info("submitted job %s", handle.get("launch_id") or handle.get("job_key"))
            self._stop_if_killed(handle, spec)  # on_kill ran during the submit, before the handle existed
        check_settings(backend, spec, handle)
        return handle

    def get_job_status(self, external_id: Any, context: Context) -> str:
        handle = dict(external_id) if isinstance(external_id, dict) else {}
        spec = self._spec or self.build_spec(context)
        if not handle or handle.get("skipped"):
            return "SKIPPED"
        if handle.get("run_id") != spec.run.run_id or handle.get("deploy") != spec.deploy:
            return "STALE"  # never reattach; submit_job's lookup cancels it
        if handle.get("backend") != self.job_backend.kind:
            return "OTHER_BACKEND"
        return self.job_backend.status(handle)

    def is_job_active(self, status: str) -> bool:
        return status == RUNNING

    def is_job_succeeded(self, status: str) -> bool:
        return status == SUCCEEDED

    def poll_until_complete(self, external_id: Any, context: Context) -> Any:
        handle: JobHandle = dict(external_id)
        self._handle = handle
        if handle.get("skipped"):
            return self._finish(handle)
        spec = self._spec or self.build_spec(context)
        self._stop_if_killed(handle, spec)  # never defer or wait on a job whose task was killed
        deadline_at = self.job_backend.started_at(handle) + self.deadline_seconds()
        if self.deferrable and self.job_backend.status(handle) == RUNNING:
            from skyrec.airflow.triggers import SkyrecJobTrigger

            remaining = max(1.0, deadline_at - time.time())
            self.defer(
                trigger=SkyrecJobTrigger(handle=handle, deadline_at=deadline_at, poll_interval=self._poll(),
                                         cancel_timeout=self.config.jobs.cancel_timeout_seconds,
                                         backend=self.job_backend.kind, env=self.config.env,
                                         owner=self._owner(spec)),
                method_name="execute_complete",
                timeout=dt.timedelta(seconds=remaining + 2 * self.config.jobs.cancel_timeout_seconds + 60),
            )
        status = self._wait(handle, spec, deadline_at)
        if status != SUCCEEDED:
            result = self.job_backend.result(handle) or {}
            self._raise_failure(f"job {self.job} ({spec.job_key}) ended {status}: "
                                f"{result.get('error') or 'no result recorded (killed or crashed)'}", result)
        return self._finish(handle)

    def get_job_result(self, external_id: Any, context: Context) -> Any:
        if self._result is not None:
            return self._result
        return self._finish(dict(external_id))

    # ---- internals -----------------------------------------------------------------------------
    def _wait(self, handle: JobHandle, spec: JobSpec, deadline_at: float) -> str:
        backend = self.job_backend
        offset = 0
        try:
            while True:
                self._stop_if_killed(handle, spec)
                status = backend.status(handle)
                text, offset = backend.read_log(handle, offset)
                for line in text.splitlines():
                    self.log.info("[%s] %s", self.job, line)
                if status in TERMINAL:
                    return status
                for k, v in backend.resources(handle).items():
                    self._max_resources[k] = max(v, self._max_resources.get(k, 0.0))
                backend.touch_owner(handle, {**self._owner(spec), "watcher": "worker"})
                silent = backend.silent_for(handle)
                if silent is not None and silent > self.config.jobs.heartbeat_timeout_seconds:
                    confirmed = backend.cancel(handle, self.config.jobs.cancel_timeout_seconds)
                    message = (f"job {self.job} ({spec.job_key}) sent no heartbeat for {silent:.0f}s "
                               f"(> jobs.heartbeat_timeout_seconds): cancelled, confirmed={confirmed}")
                    send_alert(self.config, "heartbeat", message, job_key=spec.job_key, confirmed=confirmed)
                    raise JobError(message)
                if time.time() >= deadline_at:
                    confirmed = backend.cancel(handle, self.config.jobs.cancel_timeout_seconds)
                    message = (f"job {self.job} ({spec.job_key}) passed its deadline of "
                               f"{self.deadline_seconds():.0f}s: cancelled, confirmed={confirmed}")
                    send_alert(self.config, "deadline", message, job_key=spec.job_key, run_id=spec.run.run_id,
                               confirmed=confirmed, deferred=False)
                    raise JobError(message)
                time.sleep(min(self._poll(), max(0.05, deadline_at - time.time())))
        except AirflowTaskTimeout:
            confirmed = backend.cancel(handle, self.config.jobs.cancel_timeout_seconds)
            send_alert(self.config, "deadline", f"task {spec.run.task_id} timed out: job {spec.job_key} cancelled, "
                       f"confirmed={confirmed}", job_key=spec.job_key, confirmed=confirmed)
            raise

    def _finish(self, handle: JobHandle) -> dict[str, Any]:
        """Post-condition, cost and duration checks; the value pushed to XCom."""
        spec = self._spec
        assert spec is not None
        if handle.get("skipped"):  # outputs were committed before: still prove them, never trust a name
            from skyrec.airflow.control import expected_outputs

            proven = []
            for rel in expected_outputs(self.config, spec, self.outputs) or []:
                m = self.lake.require(rel)
                self.lake.verify(m)
                proven.append(m.path)
            self._result = {"job_key": spec.job_key, "skipped": True, "outputs": proven}
            return self._result
        result = self.job_backend.result(handle)
        if result is None and self.job_backend.kind != "local":
            result = {"status": "success", "summary": {"outputs": []}}  # remote: declared outputs decide
        manifests = verify_outputs(self.config, self.lake, spec, result, self.outputs)
        if self.job_backend.kind != "local" and not manifests:
            from skyrec.airflow.control import expected_outputs

            for rel in expected_outputs(self.config, spec, self.outputs) or []:
                m = self.lake.require(rel)
                self.lake.verify(m)
                manifests.append(m)
        summary = (result or {}).get("summary") or {}
        # alerts a job asks for (jobs cannot reach the notifier: e.g. a model published on insufficient
        # evidence under quality_gate.insufficient_evidence: publish_with_alert)
        deliver_alerts(self.config, summary.get("alerts"), default_kind=self.job, job_key=spec.job_key)
        runtime = float((result or {}).get("duration_seconds") or (time.time() - self.job_backend.started_at(handle)))
        resources = self._max_resources or self.job_backend.resources(handle)
        cost = estimate_cost(self.config, resources, runtime)
        budget = self.config.jobs.cost.budget_per_job
        if cost > budget:
            send_alert(self.config, "cost", f"job {self.job} ({spec.job_key}) cost an estimated {cost:.6f} "
                       f"over the budget {budget}", job_key=spec.job_key, cost=cost, budget=budget,
                       runtime_seconds=runtime, resources=resources)
        same_attempt = int(handle.get("try_number") or 0) == spec.run.try_number
        if same_attempt:
            check_duration(self.config, spec.run.dag_id, spec.run.task_id, runtime)
        self.log.info("job %s proved %d output(s): %s (est. cost %.4f)", self.job, len(manifests),
                      [m.path for m in manifests], cost)
        self._result = {"job_key": spec.job_key, "outputs": [m.path for m in manifests],
                        "rows": {m.path: m.rows for m in manifests}, "cost": cost,
                        "runtime_seconds": round(runtime, 3), "summary": _small(summary)}
        return self._result


def _small(summary: dict[str, Any]) -> dict[str, Any]:
    """Keep XCom small: scalars and short lists only."""
    out: dict[str, Any] = {}
    for k, v in summary.items():
        if isinstance(v, (str, int, float, bool)) or v is None:
            out[k] = v
        elif isinstance(v, list) and len(v) <= 50:
            out[k] = v
    return out
