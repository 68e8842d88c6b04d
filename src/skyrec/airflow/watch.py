"""``skyrec watch`` / ``skyrec up --follow``: follow what the real scheduler runs, on the terminal.

The follower polls the public REST API (``/api/v2``) of the api-server that ``skyrec up`` started and
prints one line per DAG run and task instance state change -- DAG id, task id, state, duration, try -- in
the format of ``skyrec run`` (``skyrec.progress.StepLines``). When a task attempt fails it prints the
error (from the task's structured Airflow log) and, for a final failure, the last lines of its job log
(``runner.job_log_tail``, as ``skyrec run`` does) and where the full logs are. Airflow's own logs stay in
their files. Ctrl-C ends the following with a summary; the platform keeps running.

Polling: each round asks for the DAG runs and task instances *updated* since the previous round (minus an
overlap, so a row written while a round ran is not missed) and compares them with what was seen; a task
instance whose try number moved on while an attempt was not seen to end gets that attempt from its
``/tries`` history. ``--json`` writes the same events as JSON lines for scripts.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import json
import os
import re
import signal
import threading
import time
import urllib.error
import urllib.parse
import urllib.request
from collections import Counter
from collections.abc import Callable, Iterable
from dataclasses import asdict, dataclass, field
from pathlib import Path
from types import SimpleNamespace
from typing import Any, TextIO

from skyrec.config import Config

# states of one task attempt that end it (the attempt is over, whatever comes next)
ATTEMPT_ENDED = {"success", "failed", "up_for_retry", "skipped", "upstream_failed", "removed"}
FAILED = {"failed", "up_for_retry"}
RUN_ENDED = {"success", "failed"}
# shown to people by default; --all-states (and --json) show every change
QUIET_STATES = {"none", "scheduled", "queued"}
ACTIVE_TI_STATES = ("scheduled", "queued", "running", "deferred", "up_for_retry", "up_for_reschedule",
                    "restarting")
OVERLAP_S = 10.0
PAGE = 100


class WatchError(RuntimeError):
    """The follower cannot talk to Airflow's API; the message says what to do."""


# ---- the REST client ------------------------------------------------------------------------------


class AirflowAPI:
    """A small client of Airflow 3's public REST API: logs in (simple auth manager) and re-logs in on 401."""

    def __init__(self, base_url: str, auth: dict[str, str] | None = None, *, token: str | None = None,
                 timeout: float = 30.0) -> None:
        self.base_url = base_url.rstrip("/")
        self.auth = auth or {"mode": "all_admins"}
        self.token = token
        self.fixed_token = token is not None
        self.timeout = timeout

    def _login(self) -> str:
        mode = self.auth.get("mode")
        if mode == "password":
            body = json.dumps({"username": self.auth["username"], "password": self.auth["password"]}).encode()
            req = urllib.request.Request(f"{self.base_url}/auth/token", data=body, method="POST",
                                         headers={"Content-Type": "application/json"})
        elif mode == "all_admins":
            req = urllib.request.Request(f"{self.base_url}/auth/token")
        else:
            raise WatchError(f"cannot log in to the Airflow API at {self.base_url}: {self.auth.get('why')}")
        try:
            with urllib.request.urlopen(req, timeout=self.timeout) as resp:
                return str(json.loads(resp.read())["access_token"])
        except urllib.error.HTTPError as exc:
            raise WatchError(f"login to the Airflow API at {self.base_url} refused (HTTP {exc.code}): "
                             f"{exc.read()[:200].decode(errors='replace')}") from None
        except (urllib.error.URLError, OSError, ValueError, KeyError) as exc:
            raise WatchError(f"no Airflow API at {self.base_url} ({exc}): is the platform up "
                             "(`make airflow` / `skyrec up`)?") from None

    def get(self, path: str, params: Iterable[tuple[str, Any]] = ()) -> Any:
        query = urllib.parse.urlencode([(k, v) for k, v in params if v is not None])
        url = f"{self.base_url}{path}" + (f"?{query}" if query else "")
        for attempt in (1, 2):
            if self.token is None:
                self.token = self._login()
            req = urllib.request.Request(url, headers={"Authorization": f"Bearer {self.token}",
                                                       "Accept": "application/json"})
            try:
                with urllib.request.urlopen(req, timeout=self.timeout) as resp:
                    return json.loads(resp.read() or b"null")
            except urllib.error.HTTPError as exc:
                if exc.code == 401 and attempt == 1 and not self.fixed_token:
                    self.token = None  # expired: log in again once
                    continue
                raise WatchError(f"GET {path}: HTTP {exc.code} {exc.read()[:300].decode(errors='replace')}") from None
            except (urllib.error.URLError, OSError, ValueError) as exc:
                raise WatchError(f"no answer from the Airflow API at {self.base_url} ({exc})") from None
        raise WatchError(f"GET {path}: not authorised")

    def pages(self, path: str, key: str, params: Iterable[tuple[str, Any]] = ()) -> list[dict[str, Any]]:
        """Every item of a paginated list endpoint (offset paging, ``PAGE`` at a time)."""
        base = list(params)
        out: list[dict[str, Any]] = []
        while True:
            body = self.get(path, [*base, ("limit", PAGE), ("offset", len(out))]) or {}
            items = list(body.get(key) or [])
            out += items
            total = body.get("total_entries")
            if not items or len(items) < PAGE or (total is not None and len(out) >= int(total)):
                return out


# ---- what changed ----------------------------------------------------------------------------------


@dataclass
class Change:
    """One state change of a DAG run (``task_id`` None) or of one task attempt."""

    dag_id: str
    run_id: str
    state: str
    at: str  # ISO-8601 UTC: when the change happened (Airflow's dates), or when it was seen
    task_id: str | None = None
    map_index: int = -1
    try_number: int = 0
    max_tries: int = 0  # attempts allowed in all (Airflow's max_tries + 1)
    duration: float | None = None
    previous: str | None = None
    retried: bool = False  # an attempt that ended before the task was retried (its history row)
    error: str | None = None
    job_log: str | None = None
    job_log_tail: list[str] = field(default_factory=list)
    task_log: str | None = None

    @property
    def kind(self) -> str:
        return "dag_run" if self.task_id is None else "task"

    @property
    def name(self) -> str:
        return self.dag_id if self.task_id is None else f"{self.dag_id} / {self.task_id}" + (
            f"[{self.map_index}]" if self.map_index >= 0 else "")

    def as_json(self) -> dict[str, Any]:
        return {"kind": self.kind, **asdict(self)}


def _state(value: Any) -> str:
    return "none" if value in (None, "") else str(value)


def _seconds(item: dict[str, Any]) -> float | None:
    if item.get("duration") is not None:
        return float(item["duration"])
    start, end = _parse_time(item.get("start_date")), _parse_time(item.get("end_date"))
    return (end - start).total_seconds() if start and end else None


def _parse_time(value: Any) -> dt.datetime | None:
    if not value:
        return None
    try:
        ts = dt.datetime.fromisoformat(str(value).replace("Z", "+00:00"))
    except ValueError:
        return None
    return ts if ts.tzinfo else ts.replace(tzinfo=dt.UTC)


def _when(item: dict[str, Any], state: str, now: dt.datetime, previous: str | None = None) -> str:
    """When the change happened: the end of what ended, the start of what started running; otherwise (a
    task resumed after deferral, queued, deferred, ...) Airflow keeps no date for it: when it was seen."""
    if state in ATTEMPT_ENDED | RUN_ENDED:
        ts = _parse_time(item.get("end_date"))
    elif state == "running" and previous not in {"deferred", "up_for_reschedule"}:
        ts = _parse_time(item.get("start_date"))
    else:
        ts = None
    return (ts or now).astimezone(dt.UTC).isoformat(timespec="seconds")


TIKey = tuple[str, str, str, int]


class StateTracker:
    """Turns successive API payloads into state changes (pure: no I/O), and counts them for the summary."""

    def __init__(self) -> None:
        self.runs: dict[tuple[str, str], str] = {}
        self.tis: dict[TIKey, tuple[int, str]] = {}
        self.ended: Counter[str] = Counter()  # task attempts ended, by state
        self.failures: list[Change] = []

    def dag_runs(self, items: Iterable[dict[str, Any]], now: dt.datetime | None = None) -> list[Change]:
        now = now or dt.datetime.now(dt.UTC)
        out = []
        for item in items:
            key = (str(item["dag_id"]), str(item.get("dag_run_id") or item.get("run_id")))
            state = _state(item.get("state"))
            before = self.runs.get(key)
            if before == state:
                continue
            self.runs[key] = state
            out.append(Change(dag_id=key[0], run_id=key[1], state=state, at=_when(item, state, now, before),
                              duration=_seconds(item) if state in RUN_ENDED else None, previous=before))
        return out

    def task_instances(self, items: Iterable[dict[str, Any]], now: dt.datetime | None = None
                       ) -> tuple[list[Change], list[tuple[TIKey, int]]]:
        """(changes, missed): ``missed`` names task instances whose try ``n`` was not seen to end (the try
        number moved on first): their ``/tries`` history tells how it ended (``attempts_ended``)."""
        now = now or dt.datetime.now(dt.UTC)
        out, missed = [], []
        for item in items:
            key: TIKey = (str(item["dag_id"]), str(item.get("dag_run_id") or item.get("run_id")),
                          str(item["task_id"]), int(item.get("map_index", -1) if item.get("map_index") is not None
                                                    else -1))
            state, tries = _state(item.get("state")), int(item.get("try_number") or 0)
            before = self.tis.get(key)
            if before == (tries, state):
                continue
            if before is not None and before[0] > 0 and tries > before[0] and before[1] not in ATTEMPT_ENDED:
                missed.append((key, before[0]))
            self.tis[key] = (tries, state)
            change = Change(dag_id=key[0], run_id=key[1], task_id=key[2], map_index=key[3], state=state,
                            at=_when(item, state, now, before[1] if before else None), try_number=tries,
                            max_tries=int(item.get("max_tries") or 0) + 1,
                            duration=_seconds(item) if state in ATTEMPT_ENDED else None,
                            previous=before[1] if before else None)
            out.append(change)
        return out, missed

    def attempts_ended(self, key: TIKey, from_try: int, tries: Iterable[dict[str, Any]],
                       now: dt.datetime | None = None) -> list[Change]:
        """The ends of attempts ``from_try``.. of ``key`` that were not seen, from its ``/tries`` payload."""
        now = now or dt.datetime.now(dt.UTC)
        current = self.tis.get(key, (0, ""))[0]
        out = []
        for item in sorted(tries, key=lambda t: int(t.get("try_number") or 0)):
            n, state = int(item.get("try_number") or 0), _state(item.get("state"))
            if from_try <= n < current and state in ATTEMPT_ENDED:
                out.append(Change(dag_id=key[0], run_id=key[1], task_id=key[2], map_index=key[3], state=state,
                                  at=_when(item, state, now), try_number=n, retried=True,
                                  max_tries=int(item.get("max_tries") or 0) + 1, duration=_seconds(item)))
        return out

    def count(self, change: Change) -> None:
        if change.task_id is not None and change.state in ATTEMPT_ENDED:
            # an attempt that was retried counts as up_for_retry, however its history row names it
            self.ended["up_for_retry" if change.retried and change.state in FAILED else change.state] += 1
            if change.state == "failed" and not change.retried:
                self.failures.append(change)

    def summary(self, seconds: float) -> dict[str, Any]:
        runs = Counter(self.runs.values())
        return {"kind": "summary", "seconds": round(seconds, 1), "dag_runs": sum(runs.values()),
                "dag_runs_by_state": dict(runs), "task_attempts_ended": sum(self.ended.values()),
                "task_attempts_by_state": dict(self.ended),
                "failed_tasks": [{"dag_id": c.dag_id, "run_id": c.run_id, "task_id": c.task_id,
                                  "try_number": c.try_number} for c in self.failures]}


# ---- errors and logs of a failed attempt ----------------------------------------------------------


def error_from_log(entries: Iterable[Any]) -> str | None:
    """The error of a task attempt from its structured Airflow log: the last logged exception
    (``error_detail``: type and message, causes included), else the last error-level message."""
    last_exc: list[str] | None = None
    last_error: str | None = None
    for entry in entries:
        if isinstance(entry, str):
            try:
                entry = json.loads(entry)
            except ValueError:
                continue
        if not isinstance(entry, dict):
            continue
        detail = entry.get("error_detail")
        if isinstance(detail, list) and detail:
            last_exc = [f"{d.get('exc_type')}: {d.get('exc_value')}".rstrip(": ") for d in detail
                        if isinstance(d, dict)]
        elif str(entry.get("level", "")).lower() in {"error", "critical"} and entry.get("event"):
            last_error = str(entry["event"])
    if last_exc:
        return "\n".join(last_exc)
    return last_error


def task_log_path(airflow_home: Path, change: Change) -> Path:
    """Where Airflow's file task handler writes the attempt's log (its default ``log_filename_template``)."""
    mapped = f"map_index={change.map_index}/" if change.map_index >= 0 else ""
    return (airflow_home / "logs" / f"dag_id={change.dag_id}" / f"run_id={change.run_id}"
            / f"task_id={change.task_id}" / f"{mapped}attempt={change.try_number}.log")


# ---- output ---------------------------------------------------------------------------------------


def _tries(n: int, allowed: int) -> str:
    """The try note of a task line: "try 2 of 3"; nothing for a task's only try. A try past the tries the
    task allows is Airflow running it again (e.g. an attempt reset when the scheduler restarted), not one
    of the task's own retries: said so, never "try 2 of 1"."""
    if not n or (allowed <= 1 and n <= 1):
        return ""
    if n > allowed:
        return f"  try {n}, beyond the {allowed} allowed (run again by Airflow)"
    return f"  try {n} of {allowed}"


class HumanOutput:
    """One ``StepLines`` line per change (``skyrec run``'s format, with the time of the change); for a
    failed attempt its error, its job log's last lines and where the full logs are."""

    def __init__(self, stream: TextIO | None = None, *, all_states: bool = False, tail: int | None = None) -> None:
        from skyrec.airflow.runner import JOB_LOG_TAIL_LINES
        from skyrec.progress import StepLines

        self.lines = StepLines(stream)
        self.all_states = all_states
        self.tail = tail or JOB_LOG_TAIL_LINES
        self.width = 60

    def start(self, info: dict[str, Any]) -> None:
        self.lines.line(f"following Airflow at {info['api']} (Ctrl-C stops following; the platform keeps running)",
                        style="bold")
        for label, path in info.get("logs", {}).items():
            self.lines.line(f"  {label:<14} {path}", style="dim")

    def note(self, text: str) -> None:
        self.lines.line(text, style="yellow")

    def change(self, c: Change) -> None:
        if c.state in QUIET_STATES and not self.all_states:
            return
        self.width = max(self.width, len(c.name) + 2)
        clock = (_parse_time(c.at) or dt.datetime.now(dt.UTC)).astimezone().strftime("%H:%M:%S")
        if c.task_id is None:
            self.lines.state_line(c.name, c.state, c.duration, note=f"{clock}  run {c.run_id}", width=self.width)
        else:
            tries = _tries(c.try_number, c.max_tries)
            self.lines.state_line(c.name, c.state, c.duration, note=f"{clock}{tries}", indent=2, width=self.width)
        final = c.state == "failed" and not c.retried
        if c.error:
            self.lines.block(f"{c.name} (try {c.try_number}){'' if final else ' - retried'}: error",
                             c.error.splitlines()[:40], style="bold red" if final else "yellow")
        if final and c.job_log:
            if c.job_log_tail:
                n = len(c.job_log_tail[-self.tail:])
                self.lines.block(f"last {n} line{'s' if n > 1 else ''} of its job log {c.job_log}:",
                                 [f"| {line}" for line in c.job_log_tail[-self.tail:]])
            else:
                self.lines.line(f"    job log: {c.job_log} (empty)")
        if c.state in FAILED and c.task_log:
            self.lines.line(f"    Airflow task log: {c.task_log}", style="dim")

    def summary(self, s: dict[str, Any]) -> None:
        from skyrec.progress import format_seconds

        def by_state(counts: dict[str, int]) -> str:
            return ", ".join(f"{n} {state}" for state, n in sorted(counts.items(), key=lambda kv: -kv[1]))

        runs = s["dag_runs_by_state"]
        ended = s["task_attempts_by_state"]
        self.lines.line(f"followed {format_seconds(s['seconds'])}: {s['dag_runs']} DAG run(s)"
                        + (f" ({by_state(runs)})" if runs else "")
                        + f", {s['task_attempts_ended']} task attempt(s) ended"
                        + (f" ({by_state(ended)})" if ended else ""),
                        style="bold red" if s["failed_tasks"] else "bold")
        for f in s["failed_tasks"]:
            self.lines.line(f"  failed: {f['dag_id']} / {f['task_id']} (try {f['try_number']}, run {f['run_id']})",
                            style="red")


class JsonOutput:
    """The same events as JSON lines (``--json``): ``start``, one per change, ``note``, ``summary``."""

    def __init__(self, stream: TextIO | None = None) -> None:
        from skyrec.progress import terminal_stream

        self.stream = stream or terminal_stream()

    def _write(self, obj: dict[str, Any]) -> None:
        self.stream.write(json.dumps(obj, default=str) + "\n")
        self.stream.flush()

    def start(self, info: dict[str, Any]) -> None:
        self._write({"kind": "start", **info})

    def note(self, text: str) -> None:
        self._write({"kind": "note", "message": text})

    def change(self, c: Change) -> None:
        self._write(c.as_json())

    def summary(self, s: dict[str, Any]) -> None:
        self._write(s)


# ---- the follower ---------------------------------------------------------------------------------


class Follower:
    """Polls the API and hands each change, enriched on failure, to ``output``."""

    def __init__(self, api: AirflowAPI, config: Config, output: HumanOutput | JsonOutput, *,
                 airflow_home: Path | None = None, since: dt.datetime | None = None, interval: float = 2.0) -> None:
        self.api, self.config, self.output = api, config, output
        self.airflow_home = airflow_home
        self.since = since
        self.interval = interval
        self.tracker = StateTracker()
        self.last_poll: dt.datetime | None = None

    # ---- one round -----------------------------------------------------------------------------
    def poll(self) -> list[Change]:
        started = dt.datetime.now(dt.UTC)
        run_items: list[dict[str, Any]] = []
        ti_items: list[dict[str, Any]] = []
        if self.last_poll is None:  # the first round: what is active now (however old), then what changed since
            run_items += self.api.pages("/api/v2/dags/~/dagRuns", "dag_runs",
                                        [("state", "queued"), ("state", "running"), ("order_by", "id")])
            ti_items += self.api.pages("/api/v2/dags/~/dagRuns/~/taskInstances", "task_instances",
                                       [*(("state", s) for s in ACTIVE_TI_STATES), ("order_by", "id")])
        if self.last_poll is not None or self.since is not None:
            since = (self.last_poll or self.since or started) - dt.timedelta(seconds=OVERLAP_S)
            when = since.astimezone(dt.UTC).isoformat()
            run_items += self.api.pages("/api/v2/dags/~/dagRuns", "dag_runs",
                                        [("updated_at_gte", when), ("order_by", "id")])
            ti_items += self.api.pages("/api/v2/dags/~/dagRuns/~/taskInstances", "task_instances",
                                       [("updated_at_gte", when), ("order_by", "id")])
        self.last_poll = started
        changes = self.tracker.dag_runs(run_items, started)
        ti_changes, missed = self.tracker.task_instances(ti_items, started)
        for key, from_try in missed:
            with contextlib.suppress(WatchError):
                body = self.api.get(self._ti_path(key) + "/tries") or {}
                changes += self.tracker.attempts_ended(key, from_try, body.get("task_instances") or [], started)
        changes += ti_changes
        changes.sort(key=_order)
        for change in changes:
            if change.task_id is not None and change.state in FAILED and change.try_number > 0:
                self.enrich(change)
            self.tracker.count(change)
        return changes

    @staticmethod
    def _ti_path(key: TIKey) -> str:
        dag_id, run_id, task_id, map_index = (urllib.parse.quote(str(k), safe="") for k in key)
        path = f"/api/v2/dags/{dag_id}/dagRuns/{run_id}/taskInstances/{task_id}"
        return path + (f"/{map_index}" if int(key[3]) >= 0 else "")

    def enrich(self, change: Change, attempts: int = 3) -> None:
        """Error of the attempt (its Airflow log, read through the API; the log may land a moment after the
        state), and for a final failure the job log's last lines (as ``skyrec run``)."""
        from skyrec.airflow.runner import job_log_tail

        key: TIKey = (change.dag_id, change.run_id, str(change.task_id), change.map_index)
        dag_id, run_id, task_id = (urllib.parse.quote(k, safe="") for k in key[:3])
        path = f"/api/v2/dags/{dag_id}/dagRuns/{run_id}/taskInstances/{task_id}/logs/{change.try_number}"
        params = [("full_content", "true")] + ([("map_index", change.map_index)] if change.map_index >= 0 else [])
        for attempt in range(attempts):
            try:
                body = self.api.get(path, params) or {}
                change.error = error_from_log(body.get("content") or [])
            except WatchError as exc:
                change.error = None
                why = str(exc)
            else:
                why = "its Airflow log records no error"
            if change.error:
                break
            if attempt < attempts - 1:
                time.sleep(1.0)
        if not change.error:
            change.error = f"(no error found: {why})"
        if self.airflow_home is not None:
            log = task_log_path(self.airflow_home, change)
            change.task_log = str(log) if log.exists() else None
        if change.state == "failed" and not change.retried:
            # any skyrec job of this task instance: its handle is found by the job key (dag, run, task), the
            # backend named by the task's rendered ``backend`` field when Airflow recorded one
            backend = None
            with contextlib.suppress(WatchError):
                rendered = (self.api.get(self._ti_path(key)) or {}).get("rendered_fields") or {}
                backend = rendered.get("backend") or None
            task = SimpleNamespace(job=None, backend=backend)
            change.job_log, change.job_log_tail = job_log_tail(self.config, task, change.dag_id, change.run_id,
                                                               str(change.task_id))

    # ---- the loop ------------------------------------------------------------------------------
    def follow(self, *, alive: Callable[[], bool] | None = None, max_seconds: float | None = None) -> dict[str, Any]:
        """Poll until Ctrl-C (or ``max_seconds``, or ``alive()`` turning false); returns the summary (also
        written to the output)."""
        t0 = time.monotonic()
        unreachable_since: float | None = None
        previous = _sigterm_interrupts()
        try:
            while True:
                try:
                    for change in self.poll():
                        self.output.change(change)
                    if unreachable_since is not None:
                        self.output.note("the Airflow API answers again")
                    unreachable_since = None
                except WatchError as exc:
                    if unreachable_since is None:
                        unreachable_since = time.monotonic()
                        self.output.note(f"{exc}; retrying")
                    if alive is not None and not alive():
                        self.output.note("the platform was stopped (skyrec down): no more to follow")
                        break
                if max_seconds is not None and time.monotonic() - t0 >= max_seconds:
                    break
                time.sleep(self.interval)
        except KeyboardInterrupt:
            pass
        finally:
            if previous is not None:
                signal.signal(signal.SIGTERM, previous)
        summary = self.tracker.summary(time.monotonic() - t0)
        self.output.summary(summary)
        return summary


def _sigterm_interrupts() -> Any:
    """SIGTERM ends the following like Ctrl-C (with the summary); returns the handler it replaced."""
    if threading.current_thread() is not threading.main_thread():
        return None

    def stop(signum: int, frame: Any) -> None:
        raise KeyboardInterrupt

    return signal.signal(signal.SIGTERM, stop)


def _order(change: Change) -> tuple[str, int, int]:
    # a run's start before its tasks, its end after them
    rank = 0 if change.task_id is None and change.state not in RUN_ENDED else (
        2 if change.task_id is None else 1)
    return (change.at, rank, change.try_number)


# ---- wiring for the CLI ---------------------------------------------------------------------------


def parse_since(value: str | None, now: dt.datetime | None = None) -> dt.datetime | None:
    """``10m``, ``2h``, ``90s``, ``1d`` ago, or an ISO-8601 time; None/empty: from now."""
    if not value:
        return None
    now = now or dt.datetime.now(dt.UTC)
    m = re.fullmatch(r"\s*(\d+(?:\.\d+)?)\s*([smhd])\s*", value)
    if m:
        unit = {"s": 1, "m": 60, "h": 3600, "d": 86400}[m.group(2)]
        return now - dt.timedelta(seconds=float(m.group(1)) * unit)
    ts = _parse_time(value)
    if ts is None:
        raise WatchError(f"--since {value!r}: give a duration (10m, 2h, 1d) or an ISO-8601 time")
    return ts


def follow_platform(platform: Any, *, since: dt.datetime | None = None, as_json: bool = False,
                    all_states: bool = False, interval: float = 2.0, api_url: str | None = None,
                    stream: TextIO | None = None, max_seconds: float | None = None) -> dict[str, Any]:
    """Follow the scheduler of ``platform`` (a ``skyrec.airflow.platform.Platform``): its api-server's port
    as recorded by ``skyrec up`` (else the configured one), its simple-auth login (or the bearer token in
    ``$SKYREC_AIRFLOW_TOKEN``). Prints where Airflow's logs are once, then the changes."""
    running = platform.running()
    if api_url is None and "api-server" not in running:
        raise WatchError(f"no Airflow api-server that `skyrec up` started is running for {platform.run_dir}: start "
                         "the platform with `make airflow` (skyrec up), or name another with --api-url")
    env = platform.env()
    state = platform.state()
    port = (state.get("ports") or {}).get("api_server") if "api-server" in running else None
    url = api_url or f"http://127.0.0.1:{port or platform.api_port}"
    airflow_home = Path(state.get("airflow_home") or env["AIRFLOW_HOME"])
    token = os.environ.get("SKYREC_AIRFLOW_TOKEN") or None
    api = AirflowAPI(url, None if token else platform.api_auth(env), token=token)
    api.get("/api/v2/version")  # fail early, with a clear message, when nothing answers or the login fails
    output: HumanOutput | JsonOutput = JsonOutput(stream) if as_json else HumanOutput(stream, all_states=all_states)
    output.start({"api": url, "logs": {
        "process logs": str(platform.log_dir),
        "task logs": str(airflow_home / "logs"),
        "job logs": str(Path(platform.config.state_dir) / "jobs"),
    }})
    follower = Follower(api, platform.config, output, airflow_home=airflow_home, since=since, interval=interval)

    def alive() -> bool:
        return api_url is not None or "api-server" in platform.running()

    return follower.follow(alive=alive, max_seconds=max_seconds)
