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

``airflow_env`` gives the same environment for ``airflow standalone`` (see docs/airflow.md).
"""

from __future__ import annotations

import contextlib
import datetime as dt
import hashlib
import logging
import os
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

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

    def __init__(self, config: Config, dag: Any, observer: RunObserver) -> None:
        self.config, self.dag, self.observer = config, dag, observer
        self.outcomes: list[TaskOutcome] = []
        self.hooked = False

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
            self.observer.task_started(self.dag.dag_id, task_id, try_number)
            started = time.monotonic()
            result = None
            try:
                result = original(*args, **kwargs)
                return result
            finally:
                error = getattr(result, "error", None) if result is not None else sys.exc_info()[1]
                self._ended(ti, task_id, try_number, time.monotonic() - started, error)

        self.hooked = True
        with mock.patch.object(dag_module, "_run_task", run_task):
            yield

    def _ended(self, ti: Any, task_id: str, try_number: int, seconds: float, error: BaseException | None) -> None:
        state = _state(ti.state)
        task = self.dag.task_dict.get(task_id)
        outcome = TaskOutcome(task_id=task_id, state=state, seconds=seconds, try_number=try_number,
                              max_tries=int(getattr(task, "retries", 0) or 0) + 1)
        if state not in _OK_STATES:
            outcome.error = _describe(error) or "the task recorded no error (see the Airflow log file)"
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


def run(dag_id: str, logical_date: str | None = None, conf: dict[str, Any] | None = None, *,
        observer: RunObserver | None = None, log_file: Path | None = None, quiet: bool = True) -> DagRunResult:
    """Run one DAG run to completion through Airflow and report every task attempt.

    The run is the one the scheduler would create for ``logical_date`` (see ``scheduled_intervals``).
    With ``quiet`` (the default) everything Airflow and the tasks write goes to ``log_file`` (default
    ``run_log_path``), not to the terminal; ``observer`` is told about each task as it ends.
    Raises ``RunRefused`` for a logical date outside the DAG's dates and ``NothingRan`` when the run
    executed no task -- neither is ever reported as a success.
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
            watcher = _TaskWatcher(config, dag, observer)
            with scheduled_intervals(), watcher.watching():
                dr = dag.test(logical_date=when, run_conf=conf or None)
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
