"""DAGs for the ``skyrec run`` terminal tests: two real jobs in a chain, and a DAG whose only task starts
after the logical date the tests use (a run in which no task executes).

``load`` takes extra job params from the run conf (``{"job_params": {"fail": "1"}}`` makes it fail).
"""

import datetime as dt

from airflow.providers.standard.operators.empty import EmptyOperator
from airflow.sdk import DAG

from skyrec.airflow.operators import SkyrecJobOperator

START = dt.datetime(2026, 1, 1, tzinfo=dt.UTC)

with DAG("cli_two_steps", schedule=None, start_date=START, catchup=False,
         default_args={"retries": 0}) as cli_two_steps:
    extract = SkyrecJobOperator(task_id="extract", job="selftest",
                                job_params={"tag": "extract", "rows": "10", "chunks": "1"})
    load = SkyrecJobOperator(task_id="load", job="selftest", conf_params=True,
                             job_params={"tag": "load", "rows": "10", "chunks": "2"})
    extract >> load

with DAG("cli_not_yet", schedule=None, start_date=START, catchup=False) as cli_not_yet:
    EmptyOperator(task_id="later", start_date=dt.datetime(2027, 1, 1, tzinfo=dt.UTC))
