"""The Airflow layer: DAGs from config, external-job operators, triggers, alerts, sweeper, runner, deploy.

* ``factory``    -- ``build_dags(config)`` / ``dag_ids(config)``: every DAG from configuration.
* ``operators``  -- ``SkyrecJobOperator``: one skyrec job outside the worker, exactly once per task instance.
* ``backends``   -- where jobs run: local process, Kubernetes pod, Dataflow (``backend_for(config)``).
* ``control``    -- the shared policy: reattach/skip/submit, disk preflight, drift, post-conditions, cost.
* ``triggers``   -- ``SkyrecJobTrigger``: deferrable waiting that also enforces the deadline.
* ``notify``     -- webhook alerts; ``sweeper`` -- cancel orphaned jobs; ``monitoring`` -- canary callables.
* ``runner``     -- ``run_dag`` (in-process ``dag.test`` on SQLite) and ``airflow_env``; ``deploy`` -- wheel + DAGs.

Knows Airflow; knows no model maths. Nothing here runs heavy work in the worker.
"""
