"""Run skyrec DAGs through real Airflow 3, in this process, on an embedded SQLite metadata DB.

``run_dag`` is what ``skyrec run DAG_ID`` and the demo call: it points Airflow at
``<skyrec home>/airflow`` (unless ``AIRFLOW_HOME`` is already set -- an explicit choice wins), migrates
the DB once (a marker file makes later calls instant), parses the repo's ``dags/`` folder once per
process and configuration, and runs ``dag.test()``: the real scheduler loop for one DAG run (task
dependencies, retries, deferral with the trigger run inline), without a scheduler daemon.

``airflow_env`` gives the same environment for ``airflow standalone`` (see docs/airflow.md).
"""

from __future__ import annotations

import contextlib
import datetime as dt
import hashlib
import logging
import os
import sys
from collections.abc import Iterator
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


def run_dag(dag_id: str, logical_date: str | None = None, conf: dict[str, Any] | None = None) -> str:
    """Run one DAG run to completion through Airflow; returns its final state ("success", "failed").

    The run is the one the scheduler would create for ``logical_date`` (see ``scheduled_intervals``).
    """
    config = load_config()
    home = _apply_env(config)
    ensure_db(home)
    dags = load_dags(config)
    if dag_id not in dags:
        raise ConfigError(f"unknown DAG {dag_id!r} (known: {sorted(dags)})")
    when = parse_logical_date(logical_date)
    with scheduled_intervals():
        dr = dags[dag_id].test(logical_date=when, run_conf=conf or None)
    state = getattr(dr.state, "value", dr.state)
    log.info("%s %s: %s", dag_id, when.isoformat(), state)
    return str(state)
