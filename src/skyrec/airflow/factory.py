"""Build every skyrec DAG from configuration. The DAG file only calls ``build_dags``.

No I/O at parse time beyond reading the (already loaded) config: operators only store arguments.
Variants become precompute DAGs; the models in ``training.models`` (default: those the variants name) become
task groups of ``train_model``, sharing one ``create_dataset`` per distinct dataset definition.
Data-driven scheduling: ``ingest_user_activity`` / ``backfill_user_activity`` emit the Asset
``skyrec://activity_snapshot`` (schedules ``train_model``); each ``publish_model`` emits
``skyrec://model/<model>/<version>`` (schedules the precompute DAGs of that model version).
"""

from __future__ import annotations

import datetime as dt
import fnmatch
import re
from typing import Any

from skyrec.config import Config

FIXED_DAGS = ["ingest_programme_metadata", "ingest_user_activity", "backfill_user_activity", "ingest_availability",
              "ingest_cold_start", "train_model"]
MONITORING_DAG = "airflow_monitoring"
EXPERIMENT_DAGS = ["ingest_feedback", "evaluate_experiments"]  # only when ``experiments:`` is configured
ACTIVITY_ASSET = "skyrec://activity_snapshot"


def model_asset_uri(model: str, version: str) -> str:
    return f"skyrec://model/{model}/{version}"


def precompute_dag_id(model: str, variant: str, version: str) -> str:
    return f"precompute_recommendations_{model}_{variant}_{version}".replace(".", "_").replace("-", "_")


def dag_ids(config: Config) -> list[str]:
    """Every DAG id this configuration builds, in dependency order (no Airflow import)."""
    pre = [precompute_dag_id(v.model, name, v.version) for name, v in sorted(config.variants.items())]
    experiments = EXPERIMENT_DAGS if getattr(config, "experiments", None) else []
    return [*FIXED_DAGS, *pre, *experiments, MONITORING_DAG]


def _models(config: Config) -> dict[str, list[str]]:
    """Model name -> versions used by the configured variants."""
    out: dict[str, list[str]] = {}
    for v in config.variants.values():
        versions = out.setdefault(v.model, [])
        if v.version not in versions:
            versions.append(v.version)
    return dict(sorted(out.items()))


def schedule_interval_seconds(schedule: str | None) -> float:
    """Rough interval of a cron/preset schedule (for staleness thresholds); an hour when unknown."""
    presets = {"@hourly": 3600, "@daily": 86400, "@weekly": 7 * 86400, "@once": 86400}
    if schedule in presets:
        return float(presets[schedule])
    m = re.match(r"^\*/(\d+) \* \* \* \*$", schedule or "")
    if m:
        return float(m.group(1)) * 60
    return 3600.0


_PRESETS = {"@hourly": "0 * * * *", "@daily": "0 0 * * *", "@weekly": "0 0 * * 0", "@monthly": "0 0 1 * *"}


def interval_schedule(schedule: str | None) -> Any:
    """A data-interval timetable: the run of logical date 17:00 covers [17:00, 18:00) and starts at 18:00,
    once the hour is complete.

    Ingest jobs read their interval (``data_interval_start``/``end``), so a run must name a complete,
    non-empty interval; Airflow 3's default cron timetable gives zero-length intervals that start "now",
    which would make an hourly ingest read an hour still being written.
    """
    if schedule is None:
        return None
    from airflow.sdk import CronDataIntervalTimetable

    return CronDataIntervalTimetable(_PRESETS.get(schedule, schedule), timezone="UTC")


def deferrable_for(config: Config, dag_id: str) -> bool:
    """Whether the job tasks of ``dag_id`` wait in the triggerer (config ``airflow.deferrable``).

    ``None``: the remote backends defer (a pod or a cluster job needs no worker slot while it runs), local
    processes are watched by the worker; ``true``/``false``: every DAG; a list: DAG ids matching a pattern.
    """
    setting = config.airflow.deferrable
    if setting is None:
        return config.jobs.backend != "local"
    if isinstance(setting, bool):
        return setting
    return any(fnmatch.fnmatchcase(dag_id, pattern) for pattern in setting)


def build_dags(config: Config) -> dict[str, Any]:
    """DAG id -> DAG for this configuration."""
    from airflow.providers.standard.operators.python import PythonOperator
    from airflow.sdk import DAG, Asset, TaskGroup

    from skyrec.airflow import monitoring
    from skyrec.airflow.notify import failure_callback
    from skyrec.airflow.operators import SkyrecJobOperator

    af = config.airflow
    start = dt.datetime.fromisoformat(af.start_date)
    default_args = {"owner": "skyrec", "retries": af.retries,
                    "retry_delay": dt.timedelta(seconds=af.retry_delay_seconds),
                    "on_failure_callback": failure_callback}
    backend = config.jobs.backend

    def timeout(job: str) -> dt.timedelta:
        """Backstop behind the job deadline (the job's own deadline is enforced first, from its start)."""
        return dt.timedelta(seconds=config.jobs.deadline_seconds(job) + 2 * config.jobs.cancel_timeout_seconds + 120)

    defer = {"current": backend != "local"}  # set by dag() for the job tasks built inside it

    def job(task_id: str, job_name: str | None = None, **kw: Any) -> SkyrecJobOperator:
        name = job_name or task_id
        return SkyrecJobOperator(task_id=task_id, job=name, execution_timeout=timeout(name),
                                 deferrable=defer["current"], **kw)

    def dag(dag_id: str, schedule: Any, doc: str, **kw: Any) -> DAG:
        defer["current"] = deferrable_for(config, dag_id)
        return DAG(dag_id=dag_id, schedule=schedule, start_date=start, catchup=False, max_active_runs=1,
                   default_args=default_args, tags=["skyrec"], doc_md=doc,
                   is_paused_upon_creation=not af.unpaused, **kw)

    sched = af.schedules
    activity_asset = Asset(ACTIVITY_ASSET)
    dags: dict[str, Any] = {}

    with dag("ingest_programme_metadata", interval_schedule(sched.get("ingest_programme_metadata", "@hourly")),
             "Sync metadata objects from the source, then build the catalogue snapshot.") as d:
        job("sync_metadata", outputs=["raw_metadata"]) >> job("build_catalogue", outputs=["catalogue"],
                                                              inputs=["raw_metadata"])
    dags[d.dag_id] = d

    with dag("ingest_user_activity", interval_schedule(sched.get("ingest_user_activity", "@hourly")),
             "The interval's activity delta and the rolling snapshot.") as d:
        job("ingest_activity", outputs=["activity_delta", "activity_snapshot"], outlets=[activity_asset])
    dags[d.dag_id] = d

    with dag("backfill_user_activity", interval_schedule(sched.get("backfill_user_activity", "@daily")),
             "Rebuild deltas and snapshots for a range: conf {\"start\": ISO, \"end\": ISO} "
             "(default: the run's data interval).") as d:
        job("backfill_activity", outputs=["activity_snapshot"], skip_if_committed=False, outlets=[activity_asset],
            job_params={"start": "{{ dag_run.conf.get('start') or data_interval_start.isoformat() }}",
                        "end": "{{ dag_run.conf.get('end') or data_interval_end.isoformat() }}"})
    dags[d.dag_id] = d

    with dag("ingest_availability", interval_schedule(sched.get("ingest_availability", "@hourly")),
             "Which items are playable now.") as d:
        job("ingest_availability", outputs=["availability"])
    dags[d.dag_id] = d

    with dag("ingest_cold_start", interval_schedule(sched.get("ingest_cold_start", "@hourly")),
             "Popular-now lists for users without history.") as d:
        job("ingest_cold_start", outputs=["cold_start"], inputs=["activity_snapshot"])
    dags[d.dag_id] = d

    with dag("train_model", [activity_asset],
             "Per model in training.models (default: those a variant uses): train -> evaluate (quality gate) "
             "[-> publish_model when a variant uses it], after the create_dataset of its dataset definition "
             "(one per distinct definition, in the group of the first model that reads it).") as d:
        used = _models(config)
        dataset_task: dict[str, Any] = {}
        for model in config.trained_models():
            ds = config.training.dataset_id(model)
            with TaskGroup(group_id=model):
                if ds not in dataset_task:
                    dataset_task[ds] = job("create_dataset", job_params={"dataset_id": ds},
                                           outputs=["training_dataset"], inputs=["activity_snapshot"])
                p = {"model": model}
                chain = (dataset_task[ds] >> job("train", job_params=p, outputs=["model"], inputs=["training_dataset"])
                         >> job("evaluate", job_params=p))
                if model in used:
                    chain >> job("publish_model", job_params=p,
                                 outlets=[Asset(model_asset_uri(model, v)) for v in used[model]])
    dags[d.dag_id] = d

    for name, variant in sorted(config.variants.items()):
        dag_id = precompute_dag_id(variant.model, name, variant.version)
        with dag(dag_id, [Asset(model_asset_uri(variant.model, variant.version))],
                 f"Precompute, dump and publish the {name!r} rail ({variant.model} {variant.version}).") as d:
            p = {"variant": name}
            (job("compute_predictions", job_params=p, outputs=["predictions"], inputs=["model"])
             >> job("create_redis_dump", job_params=p, outputs=["redis_dump"], inputs=["predictions"])
             >> job("publish_predictions", job_params=p, inputs=["redis_dump"]))
        dags[d.dag_id] = d

    if getattr(config, "experiments", None):  # online experiments (docs/experiments.md)
        with dag("ingest_feedback", interval_schedule(sched.get("ingest_feedback", "@hourly")),
                 "Drain the API's event stream into the lake, exactly once (acknowledged after the commit).") as d:
            # runs even when its output is committed: a retry after a commit acknowledges the entries
            job("ingest_feedback", outputs=["feedback"], skip_if_committed=False)
        dags[d.dag_id] = d
        with dag("evaluate_experiments", interval_schedule(sched.get("evaluate_experiments", "@daily")),
                 "Per-arm online metrics with intervals, SRM check, sequential test, HTML report.") as d:
            job("evaluate_experiments", inputs=["feedback"])
        dags[d.dag_id] = d

    monitoring_schedule = sched.get(MONITORING_DAG, "*/5 * * * *")
    with dag(MONITORING_DAG, monitoring_schedule,
             "Canary (scheduler and workers alive) and the sweeper (cancel orphaned jobs).") as d:
        canary = job("canary", outputs=["canary"], retries=0)
        check_canary = PythonOperator(
            task_id="check_canary", python_callable=monitoring.check_canary,
            op_kwargs={"max_age_seconds": 3 * schedule_interval_seconds(monitoring_schedule)})
        canary >> check_canary
        PythonOperator(task_id="sweeper", python_callable=monitoring.run_sweeper, retries=0)
    dags[d.dag_id] = d

    missing = set(dag_ids(config)) ^ set(dags)
    if missing:  # dag_ids() and build_dags() must agree: the CLI and tests rely on dag_ids
        raise RuntimeError(f"dag_ids/build_dags disagree on {sorted(missing)}")
    return dags
