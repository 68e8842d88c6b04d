"""The sweeper: cancel jobs whose task instance is no longer running.

A job outlives its worker on purpose (a retry reattaches to it). But when nobody will ever come back for
it -- the task failed for good, was marked failed/success by hand, the DAG run was deleted, the worker
died and no retry is left -- the job must not run (and bill) on. The sweeper, a task in
``airflow_monitoring``, lists every job the backend knows, asks Airflow's metadata for the state of the
owning task instance, and cancels (confirmed) every live job whose task instance is not active.
When Airflow cannot tell (an unknown task instance), the owner's own liveness decides: the worker or
triggerer watching a job refreshes ``owner.json``; one not refreshed for ``heartbeat_timeout_seconds``
means nobody is watching.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterable
from typing import Any

from skyrec.airflow.backends import RUNNING, JobBackend, backend_for
from skyrec.airflow.notify import send_alert
from skyrec.config import Config

ACTIVE_TI_STATES = frozenset({"running", "deferred", "queued", "scheduled", "up_for_retry", "up_for_reschedule",
                              "restarting", "awaiting_input"})

TiState = Callable[[str, str, str], "str | None"]


def sweep(config: Config, ti_state: TiState, *, backends: Iterable[JobBackend] | None = None,
          dry_run: bool = False) -> list[dict[str, Any]]:
    """Cancel orphaned live jobs. Returns one entry per job looked at that was (or would be) cancelled."""
    swept = []
    for backend in backends or [backend_for(config)]:
        for handle in backend.list_all():
            if backend.status(handle) != RUNNING:
                continue
            dag_id, run_id, task_id = handle.get("dag_id"), handle.get("run_id"), handle.get("task_id")
            state = ti_state(str(dag_id), str(run_id), str(task_id)) if dag_id and run_id and task_id else None
            reason = None
            if state is not None and str(state).lower() not in ACTIVE_TI_STATES:
                reason = f"task instance {dag_id}.{task_id} ({run_id}) is {state}"
            elif state is None:
                owner = getattr(backend, "owner", lambda h: None)(handle) or {}
                seen = float(owner.get("at") or handle.get("started") or 0)
                age = time.time() - seen
                if age > config.jobs.heartbeat_timeout_seconds:
                    reason = (f"no task instance known for it and its owner has not been seen for {age:.0f}s "
                              f"(> {config.jobs.heartbeat_timeout_seconds:.0f}s)")
            if reason is None:
                continue
            entry = {"job_key": handle.get("job_key"), "backend": backend.kind, "reason": reason,
                     "id": handle.get("launch_id") or handle.get("pod_name") or handle.get("job_id")}
            if not dry_run:
                entry["confirmed"] = backend.cancel(handle, config.jobs.cancel_timeout_seconds)
                send_alert(config, "sweeper", f"cancelled orphaned job {entry['job_key']}: {reason}",
                           **{k: v for k, v in entry.items() if k != "reason"})
            swept.append(entry)
    return swept


def airflow_ti_state(ti: Any) -> TiState:
    """A ``TiState`` backed by Airflow's metadata, asked through the running task's SDK client."""

    def lookup(dag_id: str, run_id: str, task_id: str) -> str | None:
        try:
            states = ti.get_task_states(dag_id=dag_id, task_ids=[task_id], run_ids=[run_id])
        except Exception:  # noqa: BLE001 - unknown DAG/run: fall back to owner liveness
            return None
        state = (states or {}).get(run_id, {}).get(task_id)
        return None if state is None else str(getattr(state, "value", state))

    return lookup
