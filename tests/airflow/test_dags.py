"""The DAG layer: exact DAG ids, no import errors, no I/O at parse time, schedules/assets from config,
operator fields surviving Airflow's serializer, and whole DAG runs through dag.test()."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from skyrec.airflow.factory import build_dags, dag_ids
from skyrec.airflow.operators import SkyrecJobOperator
from skyrec.config import load_config

ROOT = Path(__file__).resolve().parents[2]

EXPECTED = [
    "ingest_programme_metadata", "ingest_user_activity", "backfill_user_activity", "ingest_availability",
    "ingest_cold_start", "train_model",
    "precompute_recommendations_knn_comedy_featured_v1", "precompute_recommendations_knn_drama_featured_v1",
    "precompute_recommendations_knn_gripping_stories_v1", "precompute_recommendations_knn_music_mixes_v1",
    "precompute_recommendations_knn_recommended_for_you_v1", "precompute_recommendations_knn_thought_provoking_v1",
    "airflow_monitoring",
]


def test_dagbag_has_exactly_the_configured_dags_and_no_import_errors(dagbag: Any, config: Any) -> None:
    assert dagbag.import_errors == {}
    skyrec = sorted(d for d in dagbag.dag_ids if not d.startswith("selftest_"))
    assert skyrec == sorted(EXPECTED)
    assert dag_ids(config) == EXPECTED


def test_adding_a_variant_is_a_config_change(config_factory: Any) -> None:
    cfg = config_factory({"variants": {"late_night": {"model": "knn", "version": "v2"}}})
    dags = build_dags(cfg)
    assert "precompute_recommendations_knn_late_night_v2" in dags
    train = dags["train_model"]
    publish = train.get_task("knn.publish_model")
    assert {a.uri for a in publish.outlets} == {"skyrec://model/knn/v1", "skyrec://model/knn/v2"}


def test_listed_models_are_trained_and_share_one_dataset_per_definition(config_factory: Any) -> None:
    """training.models: a model no variant uses is trained and evaluated (not published); models of one
    dataset definition read one create_dataset task and one declared output."""
    cfg = config_factory({"training": {"models": ["knn", "ease"]}})
    train = build_dags(cfg)["train_model"]
    ds_id = cfg.training.dataset_id("knn")
    assert cfg.training.dataset_id("ease") == ds_id
    creators = [t for t in train.tasks if getattr(t, "job", None) == "create_dataset"]
    assert [t.task_id for t in creators] == ["ease.create_dataset"]  # in the group of the first model by name
    assert creators[0].job_params == {"dataset_id": ds_id}
    assert train.get_task("knn.train").upstream_task_ids == {"ease.create_dataset"}
    assert train.get_task("ease.evaluate").upstream_task_ids == {"ease.train"}
    assert "ease.publish_model" not in train.task_ids  # no rail serves it: trained and evaluated only
    assert train.get_task("knn.publish_model").upstream_task_ids == {"knn.evaluate"}
    # the declared outputs/inputs resolve to the one shared dataset, from the dataset task's and the models' params
    import datetime as dt

    from skyrec.airflow.backends import JobSpec
    from skyrec.airflow.control import expected_outputs
    from skyrec.jobs.base import RunInfo
    run = RunInfo(dag_id="train_model", logical_date=dt.datetime(2026, 3, 1, 1, tzinfo=dt.UTC))
    shared = f"training/dataset/{ds_id}/run={run.run_key}"
    for params in ({"dataset_id": ds_id}, {"model": "knn"}, {"model": "ease"}):
        assert expected_outputs(cfg, JobSpec(job="x", run=run, params=params), ["training_dataset"]) == [shared]


def test_training_models_must_be_configured_models(config_factory: Any) -> None:
    from skyrec.config import ConfigError
    with pytest.raises((ConfigError, ValueError), match=r"training\.models: unknown model 'nope'"):
        config_factory({"training": {"models": ["als", "nope"]}})


def test_schedules_assets_and_task_shapes(config: Any) -> None:
    dags = build_dags(config)
    assert {d.catchup for d in dags.values()} == {False}
    assert {d.max_active_runs for d in dags.values()} == {1}
    assert dags["ingest_user_activity"].get_task("ingest_activity").outlets[0].name == "skyrec://activity_snapshot"
    assert dags["backfill_user_activity"].get_task("backfill_activity").outlets[0].name == "skyrec://activity_snapshot"
    train = dags["train_model"]
    assert [a.name for a in train.schedule] == ["skyrec://activity_snapshot"]
    assert [a.name for a in dags["precompute_recommendations_knn_music_mixes_v1"].schedule] == ["skyrec://model/knn/v1"]
    assert train.get_task("knn.train").upstream_task_ids == {"knn.create_dataset"}
    assert train.get_task("knn.publish_model").upstream_task_ids == {"knn.evaluate"}
    pre = dags["precompute_recommendations_knn_music_mixes_v1"]
    assert pre.get_task("publish_predictions").upstream_task_ids == {"create_redis_dump"}
    assert pre.get_task("compute_predictions").job_params == {"variant": "music_mixes"}
    for dag in dags.values():
        for task in dag.tasks:
            if isinstance(task, SkyrecJobOperator):
                assert task.retries == config.airflow.retries or task.task_id == "canary"
                assert task.execution_timeout.total_seconds() > config.jobs.deadline_seconds(task.job)


def test_parsing_the_dag_file_does_no_io(tmp_path: Path) -> None:
    """Parse with an unreachable lake and redis: only config is read, nothing is contacted or created."""
    env = {**os.environ, "SKYREC_HOME": str(tmp_path / "never"), "SKYREC__STORAGE__LAKE": "s3://no-such-bucket/x",
           "SKYREC__PUBLISH__REDIS_URL": "redis://192.0.2.1:1/0", "SKYREC_PROJECT_ROOT": str(ROOT)}
    code = ("import runpy, time; t=time.time(); g = runpy.run_path('dags/skyrec_dags.py'); "
            "from airflow.sdk import DAG; print(sum(isinstance(v, DAG) for v in g.values()))")
    out = subprocess.run([sys.executable, "-c", code], cwd=ROOT, env=env, capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr[-2000:]
    assert out.stdout.strip().splitlines()[-1] == str(len(EXPECTED))
    assert not (tmp_path / "never").exists()


def test_operator_fields_survive_serialisation(config: Any) -> None:
    from airflow.serialization.serialized_objects import DagSerialization

    dags = build_dags(config)
    for dag in dags.values():
        data = json.loads(json.dumps(DagSerialization.to_dict(dag)))
        back = DagSerialization.from_dict(data)
        for task in dag.tasks:
            if not isinstance(task, SkyrecJobOperator):
                continue
            restored = back.get_task(task.task_id)
            for name in SkyrecJobOperator.template_fields:
                assert getattr(restored, name) == getattr(task, name), (dag.dag_id, task.task_id, name)
            assert restored.retries == task.retries
            assert restored.execution_timeout == task.execution_timeout


def test_operator_validates_at_parse_time() -> None:
    with pytest.raises(ValueError, match="not a valid job name"):
        SkyrecJobOperator(task_id="x", job="../evil")
    with pytest.raises(ValueError, match="lower_snake_case"):
        SkyrecJobOperator(task_id="x", job="train", job_params={"Bad-Key": "1"})
    with pytest.raises(ValueError, match="deadline_minutes"):
        SkyrecJobOperator(task_id="x", job="train", deadline_minutes=0)
    with pytest.raises(ValueError, match="backend"):
        SkyrecJobOperator(task_id="x", job="train", backend="mainframe")


@pytest.mark.integration
def test_airflow_monitoring_whole_dag_run(run_dag: Any, config: Any, alerts: Any) -> None:
    dr = run_dag("airflow_monitoring")
    assert str(getattr(dr.state, "value", dr.state)) == "success"
    states = {ti.task_id: str(getattr(ti.state, "value", ti.state)) for ti in dr.get_task_instances()}
    assert states == {"canary": "success", "check_canary": "success", "sweeper": "success"}
    from skyrec.storage import Lake

    lake = Lake.from_config(config)
    assert lake.committed("monitoring/canary/run=20260301T120000")
    assert alerts.kinds() == []


@pytest.mark.integration
def test_stale_canary_alerts(run_dag: Any, config: Any, alerts: Any) -> None:
    import datetime as dt

    earlier = dt.datetime(2026, 3, 1, 11, 0, tzinfo=dt.UTC)
    assert str(run_dag("airflow_monitoring", logical_date=earlier).state) == "success"
    # backdate the previous canary's commit time: the scheduler "stopped" for a day
    from skyrec.storage import Lake

    lake = Lake.from_config(config)
    mpath = Path(lake.abspath("monitoring/canary/run=20260301T110000/_manifest/000000.json"))
    m = json.loads(mpath.read_text())
    m["committed_at"] = (dt.datetime.now(dt.UTC) - dt.timedelta(days=1)).isoformat()
    mpath.write_text(json.dumps(m))
    dr = run_dag("airflow_monitoring")
    assert str(dr.state) == "success"
    stale = [a for a in alerts.received if a["kind"] == "canary_stale"]
    assert stale and stale[0]["details"]["previous_age_seconds"] > 86000


def test_run_conf_overrides_are_passed_to_the_job(config: Any) -> None:
    """{"overrides": ["volume"]} in the run conf becomes --override volume on the job's command line."""
    import datetime as dt
    from types import SimpleNamespace

    op = SkyrecJobOperator(task_id="ingest_activity", job="ingest_activity")
    ti = SimpleNamespace(dag_id="d", run_id="r", task_id="ingest_activity", try_number=2)
    when = dt.datetime(2026, 3, 1, tzinfo=dt.UTC)
    ctx = {"ti": ti, "dag_run": SimpleNamespace(conf={"overrides": ["volume"]}, run_after=when),
           "logical_date": when, "data_interval_start": when, "data_interval_end": when}
    spec = op.build_spec(ctx)  # type: ignore[arg-type]
    args = spec.job_args()
    assert args[args.index("--override") + 1] == "volume"
    assert spec.run.try_number == 2 and spec.job_key == spec.run.job_key
    bad = {**ctx, "dag_run": SimpleNamespace(conf={"overrides": "volume; rm -rf /"}, run_after=when)}
    with pytest.raises(ValueError, match="list of gate names"):
        op.build_spec(bad)  # type: ignore[arg-type]
    # a gate name with a typo, as a run conf typed in the UI can hold: the task fails, naming it, and is not retried
    from airflow.sdk.exceptions import AirflowFailException

    typo = {**ctx, "dag_run": SimpleNamespace(conf={"overrides": ["volme"]}, run_after=when)}
    with pytest.raises(AirflowFailException, match=r"unknown gate 'volme' \(did you mean 'volume'"):
        op.build_spec(typo)  # type: ignore[arg-type]
    assert load_config().env == "local"


@pytest.mark.integration
def test_run_dag_runs_several_dags_repeatedly_in_one_process(airflow_db: str, config: Any) -> None:
    from skyrec.airflow.runner import run_dag
    from skyrec.config import ConfigError

    assert run_dag("airflow_monitoring", logical_date="2026-03-02T10:00:00") == "success"
    assert run_dag("airflow_monitoring", logical_date="2026-03-02T10:05:00Z") == "success"
    assert run_dag("selftest_sync_once", logical_date="2026-03-02T10:00:00",
                   conf={"job_params": {"tag": "runner", "rows": "3", "chunks": "1"}}) == "success"
    with pytest.raises(ConfigError, match="unknown DAG 'nope'"):
        run_dag("nope")
    with pytest.raises(ConfigError, match="not ISO-8601"):
        run_dag("airflow_monitoring", logical_date="yesterday")


def test_airflow_env_for_standalone(config: Any) -> None:
    from skyrec.airflow.runner import airflow_env

    env = airflow_env(config)
    assert env["AIRFLOW_HOME"] == str(Path(config.home) / "airflow")
    assert env["AIRFLOW__CORE__DAGS_FOLDER"] == str(ROOT / "dags")
    assert env["AIRFLOW__CORE__LOAD_EXAMPLES"] == "False" and env["SKYREC_HOME"] == config.home


def test_trigger_serialises_and_rebuilds() -> None:
    from skyrec.airflow.triggers import SkyrecJobTrigger

    t = SkyrecJobTrigger(handle={"backend": "local", "job_key": "k", "launch_id": "try1-x"}, deadline_at=123.5,
                         poll_interval=0.5, cancel_timeout=3, env="local", owner={"dag_id": "d"})
    path, kwargs = t.serialize()
    assert path == "skyrec.airflow.triggers.SkyrecJobTrigger"
    again = SkyrecJobTrigger(**json.loads(json.dumps(kwargs)))
    assert again.serialize() == (path, kwargs)
