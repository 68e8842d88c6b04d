"""Fault-injection DAGs for tests: one SkyrecJobOperator running the ``selftest`` job.

Job params come from the run conf (``{"job_params": {...}}``), so each test injects its own fault into
the same DAGs. ``*_once`` variants have no retries.
"""

import datetime as dt

from airflow.sdk import DAG

from skyrec.airflow.notify import failure_callback
from skyrec.airflow.operators import SkyrecJobOperator

for _name, _deferrable, _retries in [("selftest_sync", False, 1), ("selftest_deferred", True, 1),
                                     ("selftest_sync_once", False, 0), ("selftest_deferred_once", True, 0)]:
    with DAG(_name, schedule=None, start_date=dt.datetime(2026, 1, 1, tzinfo=dt.UTC), catchup=False,
             default_args={"retries": _retries, "retry_delay": dt.timedelta(seconds=0),
                           "on_failure_callback": failure_callback}) as _dag:
        SkyrecJobOperator(task_id="selftest", job="selftest", conf_params=True, deferrable=_deferrable,
                          inputs=["catalogue"])
    globals()[_name] = _dag
