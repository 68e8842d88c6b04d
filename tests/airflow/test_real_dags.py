"""The real skyrec DAGs (the other areas' jobs) through Airflow, and Redis failing during publish."""

from __future__ import annotations

import datetime as dt
import json
from pathlib import Path
from typing import Any

import pytest

from skyrec.config import load_config
from skyrec.redis_local import LocalRedis, free_port

pytestmark = [pytest.mark.integration, pytest.mark.slow]


def state(dr: Any) -> str:
    return str(getattr(dr.state, "value", dr.state))


def launches_of(config: Any, task_id: str) -> list[dict[str, Any]]:
    root = Path(config.state_dir) / "jobs"
    return [json.loads(p.read_text()) for p in root.glob("*/launches/*/launch.json")
            if json.loads(p.read_text())["task_id"] == task_id]


def test_publish_fails_cleanly_while_redis_is_down_and_the_retry_succeeds(
        run_dag: Any, skyrec_home: Path, monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    port = free_port()
    monkeypatch.setenv("SKYREC__PUBLISH__REDIS_URL", f"redis://127.0.0.1:{port}/0")
    monkeypatch.setenv("SKYREC__SERVE__REDIS_URL", f"redis://127.0.0.1:{port}/0")
    monkeypatch.setenv("SKYREC__PUBLISH__SCRATCH_REDIS_PORT", str(free_port()))
    config = load_config("local")
    from skyrec.data.generate import generate

    end = dt.datetime(2026, 11, 20, 12, tzinfo=dt.UTC)
    generate(config, users=300, items=600, days=10, events_per_user=30.0, seed=11, end=end.isoformat())
    logical = end - dt.timedelta(hours=1)
    # tiny data has spiky night hours: the operator overrides the volume gate for this one run
    backfill = {"start": (end - dt.timedelta(days=10)).isoformat(), "end": logical.isoformat(),
                "overrides": ["volume"]}
    for dag_id, conf in [("ingest_programme_metadata", None), ("ingest_availability", None),
                         ("backfill_user_activity", backfill), ("ingest_user_activity", None),
                         ("ingest_cold_start", None), ("train_model", None)]:
        dr = run_dag(dag_id, conf, logical_date=logical)
        assert state(dr) == "success", (dag_id, run_dag.states(dr))
    from skyrec.storage import Lake

    # the hourly run of logical date 11:00 covered [11:00, 12:00), the last hour, as the scheduler's would
    delta = Lake.from_config(config).require("activity/deltas/interval=20261120T11")
    assert delta.producer["dag_id"] == "ingest_user_activity" and delta.rows > 0

    pre = "precompute_recommendations_knn_music_mixes_v1"  # the shipped rails' model
    dr = run_dag(pre, logical_date=logical)  # nothing listens on the serving Redis port
    assert state(dr) == "failed"
    assert run_dag.states(dr) == {"compute_predictions": "success", "create_redis_dump": "success",
                                  "publish_predictions": "failed"}
    server = LocalRedis(port=port, dir=tmp_path / "redis").start()
    try:
        dr = run_dag(pre, logical_date=logical)  # Airflow's retry of the same run, Redis back
        assert state(dr) == "success", run_dag.states(dr)
        assert len(launches_of(config, "compute_predictions")) == 1  # the committed predictions were adopted
        import redis

        assert redis.Redis(port=port).dbsize() > 0
    finally:
        server.stop()
