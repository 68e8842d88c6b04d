"""The deferrable half of ``SkyrecJobOperator``: wait for a job in the triggerer, enforcing its deadline.

Airflow does not call ``on_kill`` when a *deferred* task times out, so a deadline that only the worker
enforces would let a deferred job run (and bill) forever. This trigger therefore owns the deadline
while the task is deferred: when it passes, the trigger cancels the job itself, waits until the backend
confirms it stopped, records an alert, and only then emits the ``deadline`` event that fails the task.
It also marks the job's owner as alive (the sweeper's liveness signal while no worker holds the task).
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator
from typing import Any

from airflow.triggers.base import BaseTrigger, TriggerEvent

from skyrec.airflow.backends import CANCELLED, FAILED, LOST, RUNNING, SUCCEEDED, JobHandle, backend_for

_EVENT_STATUS = {SUCCEEDED: "success", FAILED: "failed", CANCELLED: "cancelled", LOST: "lost"}


class SkyrecJobTrigger(BaseTrigger):
    """Polls the job (local record/heartbeat, pod phase, Dataflow job state) until it ends or its deadline."""

    def __init__(self, handle: JobHandle, deadline_at: float, poll_interval: float = 1.0,
                 cancel_timeout: float = 30.0, backend: str | None = None, env: str | None = None,
                 owner: dict[str, Any] | None = None) -> None:
        super().__init__()
        self.handle = dict(handle)
        self.deadline_at = float(deadline_at)
        self.poll_interval = float(poll_interval)
        self.cancel_timeout = float(cancel_timeout)
        self.backend = backend or handle.get("backend")
        self.env = env
        self.owner = dict(owner or {})

    def serialize(self) -> tuple[str, dict[str, Any]]:
        return (f"{type(self).__module__}.{type(self).__qualname__}",
                {"handle": self.handle, "deadline_at": self.deadline_at, "poll_interval": self.poll_interval,
                 "cancel_timeout": self.cancel_timeout, "backend": self.backend, "env": self.env,
                 "owner": self.owner})

    def _backend(self) -> Any:
        from skyrec.config import load_config

        return backend_for(load_config(self.env), self.backend)

    async def run(self) -> AsyncIterator[TriggerEvent]:
        backend = await asyncio.to_thread(self._backend)
        while True:
            status = await asyncio.to_thread(backend.status, self.handle)
            if status != RUNNING:
                yield TriggerEvent({"status": _EVENT_STATUS.get(status, "failed"), "handle": self.handle,
                                    "message": f"job ended: {status}"})
                return
            if time.time() >= self.deadline_at:
                yield TriggerEvent(await asyncio.to_thread(self._cancel_at_deadline, backend))
                return
            silent = await asyncio.to_thread(backend.silent_for, self.handle)
            if silent is not None and silent > backend.config.jobs.heartbeat_timeout_seconds:
                confirmed = await asyncio.to_thread(backend.cancel, self.handle, self.cancel_timeout)
                message = (f"job {self.handle.get('job')} ({self.handle.get('job_key')}) sent no heartbeat for "
                           f"{silent:.0f}s while deferred: cancelled, confirmed={confirmed}")
                await asyncio.to_thread(self._alert, backend, "heartbeat", message, confirmed)
                yield TriggerEvent({"status": "lost", "handle": self.handle, "cancel_confirmed": confirmed,
                                    "message": message})
                return
            await asyncio.to_thread(backend.touch_owner, self.handle, {**self.owner, "watcher": "triggerer"})
            await asyncio.sleep(min(self.poll_interval, max(0.05, self.deadline_at - time.time())))

    def _alert(self, backend: Any, kind: str, message: str, confirmed: bool) -> None:
        from skyrec.airflow.notify import send_alert

        send_alert(backend.config, kind, message, job_key=self.handle.get("job_key"), run_id=self.handle.get("run_id"),
                   confirmed=confirmed, deferred=True)

    def _cancel_at_deadline(self, backend: Any) -> dict[str, Any]:
        from skyrec.airflow.notify import send_alert

        confirmed = backend.cancel(self.handle, self.cancel_timeout)
        late = round(time.time() - self.deadline_at, 3)
        message = (f"job {self.handle.get('job')} ({self.handle.get('job_key')}) passed its deadline while "
                   f"deferred: cancelled, confirmed={confirmed}")
        send_alert(backend.config, "deadline", message, job_key=self.handle.get("job_key"),
                   run_id=self.handle.get("run_id"), confirmed=confirmed, deferred=True, late_seconds=late)
        return {"status": "deadline", "handle": self.handle, "message": message, "cancel_confirmed": confirmed}

    async def cleanup(self) -> None:
        """Nothing to release: the job is owned by its key, not by this trigger instance."""
