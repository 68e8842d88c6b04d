"""Run skyrec DAGs through real Airflow 3, in this process, on an embedded SQLite metadata DB.

``run_dag`` is what ``skyrec run DAG_ID`` and the demo call: it points Airflow at
``<skyrec home>/airflow`` (unless ``AIRFLOW_HOME`` is already set -- an explicit choice wins), migrates
the DB once (a marker file makes later calls instant), parses the repo's ``dags/`` folder once per
process and configuration, and runs ``dag.test()``: the real scheduler loop for one DAG run (task
dependencies, retries, deferral with the trigger run inline), without a scheduler daemon.

``run`` does the same and reports: Airflow's own output (and the tasks' logs, which ``dag.test()`` writes
in this process) goes to ``<skyrec home>/logs/airflow/<dag_id>/<logical date>.log``; an observer
(``TerminalReport`` for ``skyrec run`` and the demo) is told about each task attempt with its state,
duration, error and the tail of its job log. A logical date outside the DAG's dates (``RunRefused``) and
a run in which no task executed (``NothingRan``) are errors, never a success.

SIGTERM or SIGINT (``timeout``, Ctrl-C) stops the run instead of retrying it (``_Interrupt``): the running
task's job is cancelled through its ``on_kill``, no further task or try starts, every job of the run is
confirmed stopped, the run is marked failed and ``run`` raises ``RunInterrupted``. That is this in-process
path only: under the scheduler a worker's SIGTERM is Airflow's business, and retries apply.

``airflow_env`` gives the same environment for ``airflow standalone`` (see docs/airflow.md).
"""

from __future__ import annotations

import contextlib
import datetime as dt
import hashlib
import logging
import os
import signal
import sys
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, NoReturn

from skyrec.config import Config, ConfigError, load_config

log = logging.getLogger(__name__)
_BAGS: dict[str, dict[str, Any]] = {}


def airflow_env(config: Config) -> dict[str, str]:
    """Environment for running skyrec's DAGs with Airflow (in-process, ``airflow standalone``, a worker)."""
    root = Path(config.project_root)
    return {
        "AIRFLOW_HOME": str(Path(config.home) / "airflow"),
        "AIRFLOW__CORE__DAGS_FOLDER": str(root / "dags"),
        "AIRFLOW__CORE__LOAD_EXAMPLES": "False",
        "AIRFLOW__CORE__UNIT_TEST_MODE": "False",
        "AIRFLOW__CORE__DAGBAG_IMPORT_TIMEOUT": "120",
        "AIRFLOW__CORE__DAG_FILE_PROCESSOR_TIMEOUT": "180",
        "AIRFLOW__SCHEDULER__ENABLE_HEALTH_CHECK": "False",
        "AIRFLOW__API__EXPOSE_CONFIG": "False",
        "SKYREC_PROJECT_ROOT": str(root),
        "SKYREC_HOME": config.home,
        "SKYREC_ENV": config.env,
    }


def _apply_env(config: Config) -> str:
    env = airflow_env(config)
    for key, value in env.items():
        if key == "AIRFLOW_HOME" or key.startswith("AIRFLOW__"):
            os.environ.setdefault(key, value)
        else:
            os.environ[key] = value
    home = os.environ["AIRFLOW_HOME"]
    if "airflow.configuration" in sys.modules:
        from airflow import configuration

        if os.path.realpath(configuration.AIRFLOW_HOME) != os.path.realpath(home):
            raise ConfigError(f"Airflow was already imported with AIRFLOW_HOME={configuration.AIRFLOW_HOME}, "
                              f"not {home}: set AIRFLOW_HOME before importing airflow")
    Path(home).mkdir(parents=True, exist_ok=True)
    return home


def ensure_db(home: str) -> None:
    """``airflow db migrate`` once per Airflow version; later calls only check a marker file."""
    from airflow import __version__ as airflow_version

    marker = Path(home) / f".skyrec-db-migrated-{airflow_version}"
    if marker.exists():
        return
    from airflow.utils import db

    db.upgradedb()
    marker.write_text(dt.datetime.now(dt.UTC).isoformat())


def _config_fingerprint(config: Config) -> str:
    return hashlib.sha256(config.model_dump_json().encode()).hexdigest()[:16]


def load_dags(config: Config) -> dict[str, Any]:
    """Parse the DAG folder through Airflow's DagBag once per process and configuration."""
    folder = os.environ.get("AIRFLOW__CORE__DAGS_FOLDER") or str(Path(config.project_root) / "dags")
    key = f"{folder}:{_config_fingerprint(config)}"
    if key not in _BAGS:
        from airflow.dag_processing.dagbag import DagBag

        bag = DagBag(dag_folder=folder)
        if bag.import_errors:
            raise RuntimeError(f"DAG import errors in {folder}: {bag.import_errors}")
        _BAGS[key] = dict(bag.dags)
    return _BAGS[key]


def parse_logical_date(value: str | None) -> dt.datetime:
    """ISO-8601 (naive = UTC); default: now, truncated to the hour."""
    if not value:
        return dt.datetime.now(dt.UTC).replace(minute=0, second=0, microsecond=0)
    try:
        ts = dt.datetime.fromisoformat(value.replace("Z", "+00:00"))
    except ValueError as exc:
        raise ConfigError(f"logical date {value!r} is not ISO-8601: {exc}") from None
    return ts if ts.tzinfo else ts.replace(tzinfo=dt.UTC)


@contextlib.contextmanager
def scheduled_intervals() -> Iterator[None]:
    """Make a local run of logical date H get the data interval the *scheduler* gives it: [H, next(H)).

    For a scheduled run Airflow's logical date is the start of its data interval (the 11:00 run of an
    hourly DAG covers 11:00-12:00 and starts at 12:00), but ``dag.test()`` infers a *manual* interval,
    the period ending at H. ``run_dag`` reproduces scheduled runs, so that ``skyrec run
    ingest_user_activity --logical-date 11:00`` ingests the 11:00 hour, exactly as production does.
    Scoped to the call; the scheduler and UI-triggered runs are untouched.
    """
    from unittest import mock

    from airflow.timetables.base import DataInterval
    from airflow.timetables.interval import CronDataIntervalTimetable

    def interval(self: Any, *, run_after: Any) -> DataInterval:
        start = self._align_to_prev(run_after)
        return DataInterval(start=start, end=self._get_next(start))

    with mock.patch.object(CronDataIntervalTimetable, "infer_manual_data_interval", interval):
        yield


class RunRefused(ConfigError):
    """A run that could do nothing (its logical date is outside the DAG's dates): refused before it starts."""


class NothingRan(RuntimeError):
    """A DAG run ended without executing a single task: an error that says why, never a success."""


class RunInterrupted(RuntimeError):
    """SIGTERM/SIGINT stopped the run: the running job was cancelled, the run is failed, nothing retried.

    ``str()`` is the one line to show; ``exit_code`` is the shell's ``128 + signal``; ``result`` is the run
    as far as it went (the interrupted task failed, tasks that never ran skipped); ``left_running`` names
    any job that could not be confirmed stopped (then the message says so)."""

    def __init__(self, message: str, signum: int, result: DagRunResult | None = None,
                 left_running: list[str] | None = None) -> None:
        super().__init__(message)
        self.signum = signum
        self.exit_code = 128 + signum
        self.result = result
        self.left_running = list(left_running or [])


class _Stop(BaseException):
    """Leaves ``dag.test()``'s loop after a signal: a BaseException, since dag.test() catches Exception."""


_SIGNALS = (signal.SIGTERM, signal.SIGINT)


class _Interrupt:
    """SIGTERM and SIGINT during an in-process run (``run``): stop the run, never retry it.

    ``dag.test()`` runs each task in this process, and Airflow's task runner installs its own SIGTERM
    handler per task (it calls the task's ``on_kill``) and never restores the previous one; SIGINT would
    raise KeyboardInterrupt in the middle of the task, without ``on_kill``. Left alone, a SIGTERM cancels
    the job, the attempt fails on the cancelled job, and ``dag.test()`` starts the next try with a fresh job.

    So for the duration of ``dag.test()`` this object owns both signals: the SIGTERM handler that Airflow
    installs is recorded as ``task_handler`` instead of being installed (``installed``). On the first signal
    it records which, and

    * inside a task, chains to ``task_handler`` -- Airflow's own, so the operator's ``on_kill`` cancels its
      job, confirmed -- and lets the attempt end on the cancelled job; the task watcher then leaves
      ``dag.test()`` (``_Stop``) instead of letting it start another try or task;
    * between tasks (``dag.test()``'s own loop, e.g. waiting out a retry delay), leaves at once.

    A second signal never interrupts the cancel in progress; after it, it stops waiting for the task to
    end. ``run`` then cancels any job of the run still running (``_stop_jobs``), with signals only noted.
    """

    def __init__(self) -> None:
        self.signum: int | None = None
        self.task_handler: Any = None  # the SIGTERM handler Airflow installed for the running task
        self.task_id: str | None = None  # the task dag.test() is running, if any
        self.interrupted_task: str | None = None  # the task running when the first signal came
        self.later: list[int] = []
        self.killing = False  # inside task_handler (the job's cancel): never interrupted
        self.stopping = False  # _Stop was raised: further signals are only noted

    @property
    def name(self) -> str:
        return signal.Signals(self.signum).name if self.signum is not None else ""

    @contextlib.contextmanager
    def installed(self) -> Iterator[None]:
        if threading.current_thread() is not threading.main_thread():  # only the main thread gets signals
            yield
            return
        from unittest import mock

        real = signal.signal
        before = {s: signal.getsignal(s) for s in _SIGNALS}

        def install(signalnum: Any, handler: Any) -> Any:
            if signalnum in _SIGNALS and threading.current_thread() is threading.main_thread():
                previous = self.task_handler if signalnum == signal.SIGTERM else None
                if signalnum == signal.SIGTERM:  # Airflow's per-task handler (on_kill): chained to
                    self.task_handler = handler
                return previous or self.handle
            return real(signalnum, handler)

        for s in _SIGNALS:
            real(s, self.handle)
        try:
            with mock.patch.object(signal, "signal", install):
                yield
        finally:
            for s, handler in before.items():
                real(s, handler)

    def task_started(self, task_id: str) -> None:
        if self.signum is not None:  # interrupted: no further task and no further try
            self._stop()
        self.task_id = task_id

    def task_ended(self) -> None:
        self.task_id, self.task_handler = None, None  # Airflow's handler would kill a finished task
        if self.signum is not None:
            self._stop()

    def _stop(self) -> NoReturn:
        self.stopping = True
        raise _Stop

    def handle(self, signum: int, frame: Any) -> None:
        if self.signum is not None:  # a second signal while stopping
            self.later.append(signum)
            log.warning("skyrec run: %s received while stopping after %s", signal.Signals(signum).name, self.name)
            if not self.killing and not self.stopping:
                self._stop()  # stop waiting for the task to end; run() then stops every job of the run
            return
        self.signum = signum
        self.interrupted_task = self.task_id
        log.warning("skyrec run: %s received: cancelling the running task's job; no further task or try "
                    "will start", self.name)
        if self.task_id is None or not callable(self.task_handler):
            self._stop()  # between tasks, or before the task's code runs: no job in it to cancel yet
        self.killing = True
        try:
            self.task_handler(signal.SIGTERM, frame)  # Airflow's handler: the operator's on_kill
        except Exception:  # run() still stops the job after dag.test()
            log.exception("skyrec run: on_kill of task %s failed", self.task_id)
        finally:
            self.killing = False
        if self.later and not self.stopping:  # signalled again during the cancel: stop now
            self._stop()


@dataclass
class TaskOutcome:
    """One attempt of one task (or, for a task that never ran, its final state)."""

    task_id: str
    state: str
    seconds: float | None = None
    try_number: int = 0
    max_tries: int = 0
    error: str | None = None
    job_log: str | None = None
    job_log_tail: list[str] = field(default_factory=list)


@dataclass
class DagRunResult:
    dag_id: str
    logical_date: dt.datetime
    state: str
    seconds: float
    log_file: Path | None
    run_id: str | None = None
    tasks: list[TaskOutcome] = field(default_factory=list)

    def final(self) -> list[TaskOutcome]:
        """The last outcome of each task, in the order the tasks first appeared."""
        last: dict[str, TaskOutcome] = {}
        for outcome in self.tasks:
            last[outcome.task_id] = outcome
        return list(last.values())


class RunObserver:
    """Told about a run as it goes (``TerminalReport`` prints it); every method is optional."""

    def dag_started(self, dag_id: str, when: dt.datetime, log_file: Path | None) -> None: ...

    def task_started(self, dag_id: str, task_id: str, try_number: int) -> None: ...

    def task_ended(self, dag_id: str, outcome: TaskOutcome) -> None: ...

    def dag_ended(self, result: DagRunResult) -> None: ...

    def dag_aborted(self, dag_id: str, error: BaseException) -> None: ...


_OK_STATES = {"success", "skipped"}
JOB_LOG_TAIL_LINES = 20


def _state(value: Any) -> str:
    return str(getattr(value, "value", value))


def _describe(error: BaseException | None) -> str | None:
    if error is None:
        return None
    text = str(error).strip()
    return f"{type(error).__name__}: {text}" if text else type(error).__name__


def run_log_path(config: Config, dag_id: str, when: dt.datetime) -> Path:
    """Where a run's Airflow and task logs go: ``<home>/logs/airflow/<dag_id>/<logical date>.log`` (appended)."""
    return Path(config.home) / "logs" / "airflow" / dag_id / f"{when.astimezone(dt.UTC):%Y%m%dT%H%M%SZ}.log"


def job_log_tail(config: Config, task: Any, dag_id: str, run_id: str, task_id: str,
                 lines: int = JOB_LOG_TAIL_LINES) -> tuple[str | None, list[str]]:
    """(where, last lines) of the job log of the newest job launched for this task instance, if it has one."""
    if not hasattr(task, "job"):
        return None, []  # not a job task: its error is all there is
    from collections import deque

    from skyrec.airflow.backends import backend_for
    from skyrec.jobs.base import job_key

    try:
        backend = backend_for(config, getattr(task, "backend", None))
        handles = backend.find(job_key(dag_id, run_id, task_id))
        if not handles:
            return None, []
        handle = max(handles, key=lambda h: float(h.get("started") or 0))
        kept: deque[str] = deque(maxlen=lines)
        offset, partial = 0, ""
        for _ in range(4096):  # read_log pages through the log; bounded for a log that never ends
            text, offset_after = backend.read_log(handle, offset)
            if not text or offset_after == offset:
                break
            offset = offset_after
            chunk = (partial + text).split("\n")
            partial = chunk.pop()
            kept.extend(line.rstrip() for line in chunk if line.strip())
        if partial.strip():
            kept.append(partial.rstrip())
    except Exception as exc:  # noqa: BLE001 - a report helper: an unreachable backend must not hide the error
        return f"{getattr(task, 'backend', None) or config.jobs.backend} job (log unavailable: {exc})", []
    where = (str(backend.launch_dir(handle) / "job.log") if hasattr(backend, "launch_dir")
             else f"{backend.kind} job {handle.get('job_key')}")
    return where, list(kept)


class _TaskWatcher:
    """Wraps the per-task step of ``dag.test()`` to time each attempt and keep its error and job log tail."""

    def __init__(self, config: Config, dag: Any, observer: RunObserver, interrupt: _Interrupt | None = None) -> None:
        self.config, self.dag, self.observer, self.interrupt = config, dag, observer, interrupt
        self.outcomes: list[TaskOutcome] = []
        self.hooked = False
        self.run_id: str | None = None

    @contextlib.contextmanager
    def watching(self) -> Iterator[None]:
        from unittest import mock

        from airflow.sdk.definitions import dag as dag_module

        original = getattr(dag_module, "_run_task", None)
        if original is None:  # another Airflow layout: the task lines come from the metadata DB afterwards
            yield
            return

        def run_task(*args: Any, **kwargs: Any) -> Any:
            ti = kwargs["ti"] if "ti" in kwargs else args[0]
            task_id, try_number = str(ti.task_id), int(ti.try_number or 0)
            self.run_id = str(ti.run_id)
            if self.interrupt is not None:
                self.interrupt.task_started(task_id)  # after SIGTERM/SIGINT: no further task or try
            self.observer.task_started(self.dag.dag_id, task_id, try_number)
            started = time.monotonic()
            result = None
            try:
                result = original(*args, **kwargs)
                return result
            finally:
                error = getattr(result, "error", None) if result is not None else sys.exc_info()[1]
                self._ended(ti, task_id, try_number, time.monotonic() - started, error)
                if self.interrupt is not None:
                    self.interrupt.task_ended()  # interrupted: leave dag.test() instead of a retry

        self.hooked = True
        with mock.patch.object(dag_module, "_run_task", run_task):
            yield

    def _ended(self, ti: Any, task_id: str, try_number: int, seconds: float, error: BaseException | None) -> None:
        state = _state(ti.state)
        task = self.dag.task_dict.get(task_id)
        outcome = TaskOutcome(task_id=task_id, state=state, seconds=seconds, try_number=try_number,
                              max_tries=int(getattr(task, "retries", 0) or 0) + 1)
        signum = self.interrupt.signum if self.interrupt is not None else None
        if state not in _OK_STATES and signum is not None:  # the run stops here: this try is the last
            state = outcome.state = "failed"
            why = _describe(error) if not isinstance(error, _Stop) else None
            outcome.error = f"interrupted by {signal.Signals(signum).name}: not retried" + (f" ({why})" if why else "")
        elif state not in _OK_STATES:
            outcome.error = _describe(error) or "the task recorded no error (see the Airflow log file)"
        if state not in _OK_STATES:
            outcome.job_log, outcome.job_log_tail = job_log_tail(self.config, task, self.dag.dag_id,
                                                                 str(ti.run_id), task_id)
        self.outcomes.append(outcome)
        self.observer.task_ended(self.dag.dag_id, outcome)


def _check_dates(config: Config, dag: Any, when: dt.datetime) -> None:
    """Refuse a logical date for which Airflow would create a run in which no task runs."""
    from skyrec.airflow.factory import dag_ids

    where = " (config airflow.start_date)" if dag.dag_id in dag_ids(config) else ""
    start, end = getattr(dag, "start_date", None), getattr(dag, "end_date", None)
    if start is not None and when < start:
        raise RunRefused(f"logical date {when.isoformat()} is before the start date {start.isoformat()} of DAG "
                         f"{dag.dag_id}{where}: Airflow would create a run in which no task runs. "
                         f"Give a logical date on or after {start.isoformat()}.")
    if end is not None and when > end:
        raise RunRefused(f"logical date {when.isoformat()} is after the end date {end.isoformat()} of DAG "
                         f"{dag.dag_id}: Airflow would create a run in which no task runs.")


def _why_nothing_ran(dag: Any, when: dt.datetime, tis: list[Any]) -> str:
    reasons = []
    if not dag.task_dict:
        reasons.append("the DAG has no tasks")
    for task in dag.task_dict.values():
        start, end = getattr(task, "start_date", None), getattr(task, "end_date", None)
        if start is not None and when < start:
            reasons.append(f"task {task.task_id!r} starts {start.isoformat()}")
        elif end is not None and when > end:
            reasons.append(f"task {task.task_id!r} has end date {end.isoformat()}")
    states = (", ".join(f"{ti.task_id}: {_state(ti.state)}" for ti in tis) if tis
              else "no task instance was created")
    why = f"; {'; '.join(reasons)}" if reasons else ""
    return (f"DAG {dag.dag_id}, logical date {when.isoformat()}: no task ran ({states}){why}. "
            "Nothing was done, so this run is not a success.")


def _job_label(handle: dict[str, Any]) -> str:
    launch = handle.get("launch_id")
    return f"{handle.get('job_key')}/{launch}" if launch else str(handle.get("job_key"))


def _stop_jobs(config: Config, dag: Any, run_id: str) -> list[tuple[str, dict[str, Any], bool, bool]]:
    """Every job of the run: (task id, handle, confirmed stopped, cancelled here). One still running
    (``on_kill`` could not stop it, or a second signal cut the task short) is cancelled now."""
    from skyrec.airflow.backends import RUNNING, backend_for
    from skyrec.jobs.base import job_key

    out: list[tuple[str, dict[str, Any], bool, bool]] = []
    for task_id, task in dag.task_dict.items():
        if not hasattr(task, "job"):
            continue
        try:
            backend = backend_for(config, getattr(task, "backend", None))
            for handle in backend.find(job_key(dag.dag_id, run_id, task_id)):
                if backend.status(handle) != RUNNING:
                    out.append((task_id, handle, True, False))
                    continue
                stopped = backend.cancel(handle, config.jobs.cancel_timeout_seconds)
                log.warning("skyrec run: cancelled job %s, confirmed=%s", _job_label(handle), stopped)
                out.append((task_id, handle, stopped, True))
        except Exception as exc:  # an unknown state is not "stopped": say so
            log.exception("skyrec run: could not check the jobs of task %s", task_id)
            out.append((task_id, {"job_key": f"of task {task_id} (backend error: {exc})"}, False, False))
    return out


def _fail_run(dag_id: str, run_id: str | None, when: dt.datetime, interrupted_task: str | None) -> str | None:
    """Mark the interrupted run failed in the metadata DB: the interrupted try failed (not up for retry),
    tasks that never ran skipped (as Airflow's "mark run failed" does). Returns the run id."""
    from airflow.models.dagrun import DagRun
    from airflow.utils.session import create_session
    from airflow.utils.state import DagRunState, State, TaskInstanceState
    from sqlalchemy import select

    started = {TaskInstanceState.RUNNING, TaskInstanceState.UP_FOR_RETRY, TaskInstanceState.DEFERRED,
               TaskInstanceState.QUEUED, TaskInstanceState.UP_FOR_RESCHEDULE, TaskInstanceState.RESTARTING}
    with create_session() as session:
        session.rollback()  # the signal may have left dag.test()'s session mid-transaction
        where = DagRun.run_id == run_id if run_id else DagRun.logical_date == when
        dr = session.scalar(select(DagRun).where(DagRun.dag_id == dag_id, where))
        if dr is None:
            return None
        for ti in dr.get_task_instances(session=session):
            if ti.state in State.finished:
                continue
            ran = ti.task_id == interrupted_task or ti.state in started
            ti.set_state(TaskInstanceState.FAILED if ran else TaskInstanceState.SKIPPED, session=session)
        dr.set_state(DagRunState.FAILED)
        log.warning("skyrec run: marked run %s failed (interrupted)", dr.run_id)
        return str(dr.run_id)


def _stopped(config: Config, dag: Any, when: dt.datetime, interrupt: _Interrupt, watcher: _TaskWatcher,
             started: float, log_file: Path | None) -> RunInterrupted:
    """After SIGTERM/SIGINT left dag.test(): every job of the run confirmed stopped, the run marked failed."""
    assert interrupt.signum is not None
    name, task_id = interrupt.name, interrupt.interrupted_task
    run_id = watcher.run_id
    jobs = _stop_jobs(config, dag, run_id) if run_id else []  # the jobs first, then the record
    try:
        recorded = _fail_run(dag.dag_id, run_id, when, task_id)
    except Exception:
        log.exception("skyrec run: could not mark the interrupted run failed")
    else:
        if run_id is None and recorded:  # no task ran in this process: jobs left by an earlier one?
            run_id = recorded
            jobs = _stop_jobs(config, dag, run_id)
    left = [_job_label(h) for _, h, stopped, _ in jobs if not stopped]
    mine = [(h, stopped) for t, h, stopped, _ in jobs if t == task_id and stopped]
    if task_id is None:
        what = "no task was running"
    elif mine:
        newest = max(mine, key=lambda hs: float(hs[0].get("started") or 0))[0]
        what = f"{task_id} cancelled (job {_job_label(newest)} confirmed stopped)"
    else:
        what = f"{task_id} stopped" + ("" if left else " (no job of it was running)")
    also = [_job_label(h) for t, h, stopped, now in jobs if stopped and now and t != task_id]
    message = f"interrupted by {name}: {what}"
    if also:
        message += f"; also cancelled job {', '.join(also)} (confirmed stopped)"
    if left:
        message += f"; NOT confirmed stopped, may still run (and bill): job {', '.join(left)}"
    message += "; the run is failed, no retry"
    log.warning("skyrec run: %s", message)
    seen = {o.task_id for o in watcher.outcomes}
    for t in dag.task_dict:  # tasks that never ran get their line
        if t not in seen:
            watcher.outcomes.append(TaskOutcome(task_id=t, state="skipped"))
    result = DagRunResult(dag_id=dag.dag_id, logical_date=when, state="failed", seconds=time.monotonic() - started,
                          log_file=log_file, run_id=run_id, tasks=watcher.outcomes)
    return RunInterrupted(message, interrupt.signum, result, left)


def run(dag_id: str, logical_date: str | None = None, conf: dict[str, Any] | None = None, *,
        observer: RunObserver | None = None, log_file: Path | None = None, quiet: bool = True) -> DagRunResult:
    """Run one DAG run to completion through Airflow and report every task attempt.

    The run is the one the scheduler would create for ``logical_date`` (see ``scheduled_intervals``).
    With ``quiet`` (the default) everything Airflow and the tasks write goes to ``log_file`` (default
    ``run_log_path``), not to the terminal; ``observer`` is told about each task as it ends.
    Raises ``RunRefused`` for a logical date outside the DAG's dates and ``NothingRan`` when the run
    executed no task -- neither is ever reported as a success -- and ``RunInterrupted`` after SIGTERM or
    SIGINT (see ``_Interrupt``): the running job cancelled and confirmed stopped, the run failed, no retry.
    """
    from skyrec.progress import output_to_file

    config = load_config()
    when = parse_logical_date(logical_date)
    path = log_file or run_log_path(config, dag_id, when)
    observer = observer or RunObserver()
    capture: contextlib.AbstractContextManager[Any] = output_to_file(path) if quiet else contextlib.nullcontext()
    started = time.monotonic()
    announced = False
    try:
        with capture:
            print(f"==== skyrec: DAG {dag_id}, logical date {when.isoformat()}, started "
                  f"{dt.datetime.now(dt.UTC).isoformat(timespec='seconds')} (pid {os.getpid()})", flush=True)
            home = _apply_env(config)
            ensure_db(home)
            dags = load_dags(config)
            if dag_id not in dags:
                raise ConfigError(f"unknown DAG {dag_id!r} (known: {sorted(dags)})")
            dag = dags[dag_id]
            _check_dates(config, dag, when)
            observer.dag_started(dag_id, when, path if quiet else None)
            announced = True
            interrupt = _Interrupt()
            watcher = _TaskWatcher(config, dag, observer, interrupt)
            with scheduled_intervals(), watcher.watching(), interrupt.installed():
                try:
                    dr = dag.test(logical_date=when, run_conf=conf or None)
                except _Stop:  # SIGTERM/SIGINT: signals stay owned (only noted) until every job is stopped
                    raise _stopped(config, dag, when, interrupt, watcher, started,
                                   path if quiet else None) from None
            state = _state(dr.state)
            tis = list(dr.get_task_instances())
            seen = {o.task_id for o in watcher.outcomes}
            for ti in tis:  # tasks that never ran (upstream failed, skipped by a branch, ...) get a line too
                if ti.task_id not in seen:
                    outcome = TaskOutcome(task_id=str(ti.task_id), state=_state(ti.state),
                                          try_number=int(ti.try_number or 0))
                    watcher.outcomes.append(outcome)
                    observer.task_ended(dag_id, outcome)
            ran = [ti for ti in tis if int(ti.try_number or 0) > 0]
            log.info("%s %s: %s (%d of %d task instances ran)", dag_id, when.isoformat(), state, len(ran), len(tis))
            if not ran:
                raise NothingRan(_why_nothing_ran(dag, when, tis))
    except BaseException as exc:
        if announced:
            observer.dag_aborted(dag_id, exc)
        raise
    result = DagRunResult(dag_id=dag_id, logical_date=when, state=state, seconds=time.monotonic() - started,
                          log_file=path if quiet else None, run_id=str(dr.run_id), tasks=watcher.outcomes)
    observer.dag_ended(result)
    return result


def run_dag(dag_id: str, logical_date: str | None = None, conf: dict[str, Any] | None = None) -> str:
    """Run one DAG run to completion through Airflow; returns its final state ("success", "failed").

    Airflow's output goes to ``run_log_path``; see ``run`` for the errors it raises.
    """
    return run(dag_id, logical_date, conf).state


class TerminalReport(RunObserver):
    """What ``skyrec run`` and ``make demo`` print: per DAG run, one line with its state and duration and one
    line per task attempt; for a failed task its error and the last lines of its job log; where the
    Airflow log file is. On a terminal, a spinner shows the task running meanwhile."""

    def __init__(self, lines: Any = None, *, show_log_file: bool = True, tail: int = JOB_LOG_TAIL_LINES) -> None:
        from skyrec.progress import StepLines

        self.lines = lines or StepLines()
        self.show_log_file = show_log_file
        self.tail = tail

    def dag_started(self, dag_id: str, when: dt.datetime, log_file: Path | None) -> None:
        self.lines.running(dag_id, f"{dag_id}  (logical date {when.isoformat()})")

    def task_started(self, dag_id: str, task_id: str, try_number: int) -> None:
        self.lines.running(f"{dag_id}.{task_id}", f"  {task_id}" + (f" (try {try_number})" if try_number > 1 else ""))

    def task_ended(self, dag_id: str, outcome: TaskOutcome) -> None:
        self.lines.done(f"{dag_id}.{outcome.task_id}", f"  {outcome.task_id}: {outcome.state}")

    def dag_aborted(self, dag_id: str, error: BaseException) -> None:
        self.lines.stop_live()
        if isinstance(error, RunInterrupted) and error.result is not None:  # the run as far as it went
            self.dag_ended(error.result)

    def dag_ended(self, result: DagRunResult) -> None:
        lines = self.lines
        lines.stop_live()
        width = max([26, len(result.dag_id) - 2, *(len(o.task_id) for o in result.tasks)]) + 2
        lines.state_line(result.dag_id, result.state, result.seconds,
                         note=f"logical date {result.logical_date.isoformat()}", width=width)
        for o in result.tasks:
            retrying = o.try_number > 1 or o.state not in _OK_STATES
            note = f"try {o.try_number} of {o.max_tries}" if retrying and o.max_tries > 1 and o.try_number else ""
            lines.state_line(o.task_id, o.state, o.seconds, note=note, indent=2, width=width)
        final = {id(o) for o in result.final()}
        for o in result.tasks:
            if not o.error:
                continue
            retried = id(o) not in final
            lines.block(f"{o.task_id} (try {o.try_number}){' - retried' if retried else ''}: error",
                        o.error.splitlines()[:40], style="yellow" if retried else "bold red")
            if not retried and o.job_log:
                if o.job_log_tail:
                    n = len(o.job_log_tail[-self.tail:])
                    lines.block(f"last {n} line{'s' if n > 1 else ''} of its job log {o.job_log}:",
                                [f"| {line}" for line in o.job_log_tail[-self.tail:]])
                else:
                    lines.line(f"    job log: {o.job_log} (empty)")
        if result.log_file is not None and (self.show_log_file or result.state != "success"):
            lines.line(f"  Airflow and task logs: {result.log_file}", style="dim")
