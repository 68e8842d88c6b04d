"""Jobs as local OS processes (the embedded default).

``python -m skyrec.jobs.base NAME ...`` runs in its own process group (``start_new_session``), so it
survives the Airflow task process dying, and a cancel signals the whole group. Its record lives in
``<state>/jobs/<job key>/``::

    .lock                       flock held while looking up / launching (two attempts cannot both launch)
    job.json                    the current launch: key, run, try, deploy, command, pid, pgid, process start
                                time and boot id (so a reused pid is never mistaken for our job)
    launches/<launch id>/       result.json (written by the job, create-only), heartbeat, job.log, owner.json

``job.json`` is written *before* the process starts (state ``launching``) and again with the pid right
after; if the launcher dies in between, ``find`` still finds the process by scanning ``/proc`` for the
launch folder in its command line -- the key, not a saved pid, is what identifies the job.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
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
from skyrec.procstat import vm_hwm_kb

_CHILDREN: dict[int, subprocess.Popen[bytes]] = {}  # processes this interpreter started (to reap them)
LAUNCH_GRACE_SECONDS = 15.0


def _boot_id() -> str:
    try:
        return Path("/proc/sys/kernel/random/boot_id").read_text().strip()
    except OSError:
        return "unknown"


def _proc_stat(pid: int) -> tuple[str, int, int] | None:
    """(state, process group, start time in clock ticks since boot) of ``pid``, or None if it is gone."""
    try:
        raw = Path(f"/proc/{pid}/stat").read_text()
    except (OSError, ValueError):
        return None
    rest = raw[raw.rindex(")") + 2:].split()
    return rest[0], int(rest[2]), int(rest[19])


def _reap() -> None:
    for pid, proc in list(_CHILDREN.items()):
        if proc.poll() is not None:
            _CHILDREN.pop(pid, None)


def _alive(pid: int, proc_start: int | None) -> bool:
    _reap()
    st = _proc_stat(pid)
    if st is None or st[0] in {"Z", "X"}:
        return False
    return proc_start is None or st[2] == proc_start


def group_members(pgid: int) -> list[int]:
    """Live (non-zombie) processes in process group ``pgid``."""
    _reap()
    out = []
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        st = _proc_stat(int(entry))
        if st and st[1] == pgid and st[0] not in {"Z", "X"}:
            out.append(int(entry))
    return out


def _find_by_cmdline(marker: str) -> int | None:
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            cmd = Path(f"/proc/{entry}/cmdline").read_bytes()
        except OSError:
            continue
        if marker.encode() in cmd:
            st = _proc_stat(int(entry))
            if st and st[0] not in {"Z", "X"}:
                return int(entry)
    return None


def _write_json(path: Path, payload: dict[str, Any]) -> None:
    tmp = path.with_name(f".{path.name}.{uuid.uuid4().hex[:8]}")
    with open(tmp, "w") as fh:
        json.dump(payload, fh, indent=1, sort_keys=True)
        fh.flush()
        os.fsync(fh.fileno())
    os.replace(tmp, path)


def _read_json(path: Path) -> dict[str, Any] | None:
    try:
        return json.loads(path.read_text())
    except (OSError, ValueError):
        return None


class LocalProcessBackend(JobBackend):
    kind = "local"

    def __init__(self, config: Any) -> None:
        super().__init__(config)
        self.root = Path(config.state_dir) / "jobs"

    # ---- records -------------------------------------------------------------------------------
    def job_dir(self, job_key: str) -> Path:
        return self.root / job_key

    def launch_dir(self, handle: JobHandle) -> Path:
        return self.job_dir(handle["job_key"]) / "launches" / handle["launch_id"]

    @contextlib.contextmanager
    def lock(self, job_key: str) -> Iterator[None]:
        """Exclusive per job key across processes: lookup-then-launch is one step."""
        d = self.job_dir(job_key)
        d.mkdir(parents=True, exist_ok=True)
        with open(d / ".lock", "a+") as fh:
            fcntl.flock(fh, fcntl.LOCK_EX)
            try:
                yield
            finally:
                fcntl.flock(fh, fcntl.LOCK_UN)

    def _records(self, job_key: str) -> list[JobHandle]:
        launches = self.job_dir(job_key) / "launches"
        out = []
        if launches.is_dir():
            for d in sorted(launches.iterdir()):
                rec = _read_json(d / "launch.json")
                if rec:
                    out.append(self._recover(rec))
        return sorted(out, key=lambda h: h.get("started", 0))

    def _recover(self, rec: JobHandle) -> JobHandle:
        """Fill in the pid of a launch whose launcher died before saving it (found by command line)."""
        if rec.get("pid") is None:
            pid = _find_by_cmdline(str(self.launch_dir(rec)))
            if pid is not None:
                st = _proc_stat(pid)
                rec = {**rec, "pid": pid, "pgid": st[1] if st else pid, "proc_start": st[2] if st else None,
                       "recovered": True}
        return rec

    def find(self, job_key: str) -> list[JobHandle]:
        return self._records(job_key)

    def list_all(self) -> list[JobHandle]:
        if not self.root.is_dir():
            return []
        out: list[JobHandle] = []
        for d in sorted(self.root.iterdir()):
            if d.is_dir():
                out.extend(self._records(d.name))
        return out

    # ---- lifecycle -----------------------------------------------------------------------------
    def command(self, spec: JobSpec, launch: Path) -> list[str]:
        return [sys.executable, "-m", "skyrec.jobs.base", *spec.job_args(),
                "--heartbeat-file", str(launch / "heartbeat"), "--result-file", str(launch / "result.json")]

    def submit(self, spec: JobSpec) -> JobHandle:
        launch_id = f"try{spec.run.try_number}-{uuid.uuid4().hex[:10]}"
        handle: JobHandle = {
            "backend": self.kind, "job_key": spec.job_key, "launch_id": launch_id, "job": spec.job,
            "dag_id": spec.run.dag_id, "run_id": spec.run.run_id, "task_id": spec.run.task_id,
            "try_number": spec.run.try_number, "deploy": spec.deploy, "boot_id": _boot_id(),
            "host": socket.gethostname(), "started": time.time(), "state": "launching", "pid": None,
            "pgid": None, "proc_start": None, "python": os.path.realpath(sys.executable),
            "spec": spec.as_dict(),
        }
        launch = self.launch_dir(handle)
        launch.mkdir(parents=True, exist_ok=True)
        cmd = self.command(spec, launch)
        handle["command"] = cmd
        _write_json(launch / "launch.json", handle)  # the record exists before the process does
        env = {**os.environ, "SKYREC_DEPLOY_VERSION": spec.deploy, "PYTHONUNBUFFERED": "1"}
        env.pop("AIRFLOW_CTX_DAG_ID", None)
        with open(launch / "job.log", "ab") as log:
            try:
                proc = subprocess.Popen(cmd, stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT,
                                        start_new_session=True, env=env, close_fds=True)
            except OSError as exc:
                handle["state"] = "failed_to_start"
                _write_json(launch / "launch.json", handle)
                raise JobError(f"could not start job {spec.job}: {exc}") from exc
        _CHILDREN[proc.pid] = proc
        st = _proc_stat(proc.pid)
        handle.update(state="launched", pid=proc.pid, pgid=proc.pid, proc_start=st[2] if st else None)
        _write_json(launch / "launch.json", handle)
        _write_json(self.job_dir(spec.job_key) / "job.json", handle)
        return handle

    def status(self, handle: JobHandle) -> str:
        launch = self.launch_dir(handle)
        if (launch / "cancelled.json").exists() and not (launch / "result.json").exists():
            return CANCELLED if not self._running(handle) else RUNNING
        result = _read_json(launch / "result.json")
        if result is not None:
            if (launch / "cancelled.json").exists() and result.get("status") != "success":
                return CANCELLED
            return SUCCEEDED if result.get("status") == "success" else FAILED
        if self._running(handle):
            return RUNNING
        if (launch / "result.json").exists():  # written between our two reads
            return self.status(handle)
        if handle.get("pid") is None and time.time() - float(handle.get("started", 0)) < LAUNCH_GRACE_SECONDS:
            return RUNNING  # launcher saved the record but not yet the pid
        return LOST

    def _running(self, handle: JobHandle) -> bool:
        handle.update({k: v for k, v in self._recover(handle).items() if k in {"pid", "pgid", "proc_start"}})
        pid = handle.get("pid")
        if pid is None:
            return False
        if handle.get("boot_id") not in (None, _boot_id()):
            return False  # the machine rebooted: that pid is someone else's
        return _alive(int(pid), handle.get("proc_start"))

    def cancel(self, handle: JobHandle, timeout: float | None = None, reason: str = "cancelled") -> bool:
        """SIGTERM the job's process group, SIGKILL after ``timeout``; True once no member is left."""
        timeout = self.config.jobs.cancel_timeout_seconds if timeout is None else timeout
        launch = self.launch_dir(handle)
        self._running(handle)
        pgid = handle.get("pgid")
        if not (launch / "cancelled.json").exists():
            _write_json(launch / "cancelled.json", {"reason": reason, "at": time.time(), "by_pid": os.getpid()})
        if pgid is None:
            return not self._running(handle)
        if handle.get("boot_id") not in (None, _boot_id()):
            return True
        for sig, wait in ((signal.SIGTERM, timeout), (signal.SIGKILL, max(5.0, timeout))):
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.killpg(int(pgid), sig)
            deadline = time.monotonic() + wait
            while time.monotonic() < deadline:
                if not group_members(int(pgid)):
                    self._note(launch, sig)
                    return True
                time.sleep(0.05)
        return not group_members(int(pgid))

    @staticmethod
    def _note(launch: Path, sig: int) -> None:
        rec = _read_json(launch / "cancelled.json") or {}
        rec.update(confirmed_at=time.time(), signal=signal.Signals(sig).name)
        _write_json(launch / "cancelled.json", rec)

    def result(self, handle: JobHandle) -> dict[str, Any] | None:
        return _read_json(self.launch_dir(handle) / "result.json")

    def silent_for(self, handle: JobHandle) -> float | None:
        """Age of the job's heartbeat file (written by a thread of the job every ``heartbeat_seconds``);
        a process that is alive but silent is frozen (stopped, swapped out, stuck in the kernel)."""
        try:
            return time.time() - (self.launch_dir(handle) / "heartbeat").stat().st_mtime
        except OSError:
            return time.time() - float(handle.get("started") or time.time())

    # ---- settings, resources, logs -------------------------------------------------------------
    def pinned_settings(self, spec: JobSpec, handle: JobHandle | None = None) -> dict[str, Any]:
        pinned: dict[str, Any] = {"interpreter": os.path.realpath(sys.executable), "deploy": spec.deploy}
        if handle and handle.get("command"):
            pinned["command"] = list(handle["command"])
        return pinned

    def effective_settings(self, handle: JobHandle) -> dict[str, Any]:
        """Read back from the running process: its executable, command line and deploy version."""
        pid = handle.get("pid")
        out: dict[str, Any] = {}
        if pid is None or not self._running(handle):
            return out
        with contextlib.suppress(OSError):
            out["interpreter"] = os.path.realpath(f"/proc/{pid}/exe")
        with contextlib.suppress(OSError):
            out["command"] = Path(f"/proc/{pid}/cmdline").read_bytes().decode().rstrip("\0").split("\0")
        with contextlib.suppress(OSError):
            env = dict(e.split("=", 1) for e in Path(f"/proc/{pid}/environ").read_bytes().decode(
                errors="replace").split("\0") if "=" in e)
            out["deploy"] = env.get("SKYREC_DEPLOY_VERSION")
        if not self._running(handle):
            return {}  # it ended while we read: nothing to compare
        return out

    def resources(self, handle: JobHandle) -> dict[str, float]:
        mem_kb = 0
        pgid = handle.get("pgid")
        if pgid is not None:
            for pid in group_members(int(pgid)):
                mem_kb += vm_hwm_kb(pid) or 0
        return {"vcpus": 1.0, "memory_gb": mem_kb / 1024 / 1024}

    def read_log(self, handle: JobHandle, offset: int) -> tuple[str, int]:
        path = self.launch_dir(handle) / "job.log"
        try:
            with open(path, "rb") as fh:
                fh.seek(offset)
                data = fh.read(1 << 20)
        except OSError:
            return "", offset
        return data.decode(errors="replace"), offset + len(data)

    def free_bytes(self) -> int | None:
        self.root.mkdir(parents=True, exist_ok=True)
        return shutil.disk_usage(self.root).free

    def touch_owner(self, handle: JobHandle, owner: dict[str, Any] | None = None) -> None:
        launch = self.launch_dir(handle)
        if launch.is_dir():
            _write_json(launch / "owner.json", {"host": socket.gethostname(), "pid": os.getpid(),
                                                "at": time.time(), **(owner or {})})

    def owner(self, handle: JobHandle) -> dict[str, Any] | None:
        return _read_json(self.launch_dir(handle) / "owner.json")


__all__ = ["FAILED", "LocalProcessBackend", "group_members"]
