"""generate -> every DAG through Airflow (dag.test on SQLite) -> Redis -> API, at tiny scale.

Asserts what a listener would check: every recommended item is available now, in the rail's candidates,
and not something the user already played; unknown users get the rail's fallback list.
"""

from __future__ import annotations

import datetime as dt
import os
from pathlib import Path

import numpy as np
import pyarrow.parquet as pq
import pytest

from skyrec.config import load_config
from skyrec.redis_local import LocalRedis, free_port
from skyrec.storage import Lake

ROOT = Path(__file__).resolve().parents[2]
pytestmark = [pytest.mark.integration, pytest.mark.slow]


def _read_table(lake: Lake, manifest, name: str):
    return pq.read_table(lake.file_url(manifest, name), filesystem=lake.fs)


@pytest.fixture(scope="module")
def pipeline(tmp_path_factory: pytest.TempPathFactory):
    home = tmp_path_factory.mktemp("e2e")
    port = free_port()
    env = {
        "SKYREC_HOME": str(home),
        "SKYREC_PROJECT_ROOT": str(ROOT),
        "SKYREC__PUBLISH__REDIS_URL": f"redis://127.0.0.1:{port}/0",
        "SKYREC__SERVE__REDIS_URL": f"redis://127.0.0.1:{port}/0",
        "SKYREC__ALERTS__WEBHOOK_URL": "",
    }
    saved = {k: os.environ.get(k) for k in env}
    os.environ.update(env)
    redis_server = LocalRedis(port=port, dir=home / "redis").start()
    try:
        config = load_config("local", root=ROOT)
        from skyrec.airflow.factory import dag_ids
        from skyrec.airflow.runner import run_dag
        from skyrec.data.generate import generate

        end = dt.datetime(2026, 11, 20, 12, tzinfo=dt.UTC)
        generate(config, users=300, items=600, days=10, events_per_user=30.0, seed=11, end=end.isoformat(),
                 bad_rate=0.002)
        order = ["ingest_programme_metadata", "ingest_availability", "backfill_user_activity",
                 "ingest_user_activity", "ingest_cold_start", "train_model",
                 *sorted(d for d in dag_ids(config) if d.startswith("precompute_recommendations_"))]
        states = {}
        logical = end - dt.timedelta(hours=1)  # the last hour is ingested hourly, the rest backfilled
        for dag_id in order:
            conf = None
            if dag_id == "backfill_user_activity":
                conf = {"start": (end - dt.timedelta(days=10)).isoformat(), "end": logical.isoformat()}
            states[dag_id] = run_dag(dag_id, logical_date=logical.isoformat(), conf=conf)
            if states[dag_id] != "success":
                break
        yield config, states, end
    finally:
        redis_server.stop()
        for k, v in saved.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v


def test_every_dag_succeeds(pipeline) -> None:
    _, states, _ = pipeline
    assert states and all(s == "success" for s in states.values()), states
    assert any(d.startswith("precompute_recommendations_") for d in states)


def test_api_answers_are_available_candidates_not_already_played(pipeline) -> None:
    config, states, end = pipeline
    assert all(s == "success" for s in states.values()), states
    from fastapi.testclient import TestClient

    from skyrec.data.catalogue import candidate_mask
    from skyrec.models.artefact import load_published
    from skyrec.serve.main import create_app

    lake = Lake.from_config(config)
    catalogue = _read_table(lake, lake.latest(config, "catalogue"), "catalogue.parquet")
    availability = _read_table(lake, lake.latest(config, "availability"), "availability.parquet")
    available = set(availability.column("item_id").to_pylist())
    item_ids = np.asarray(catalogue.column("item_id").to_pylist(), dtype=object)

    with TestClient(create_app(config)) as client:
        assert client.get("/readyz").status_code == 200
        checked = 0
        for name, variant in config.variants.items():
            candidates = set(item_ids[candidate_mask(catalogue, variant.candidates)])
            art = load_published(lake, variant.model, variant.version)
            assert art is not None, f"no published model for {variant.model}/{variant.version}"
            for row in range(0, len(art.user_ids), max(1, len(art.user_ids) // 15)):
                user = str(art.user_ids[row])
                played = set(art.item_ids[art.seen[row].indices])
                resp = client.get(f"/v1/recommendations/{name}/{user}", params={"limit": 10})
                assert resp.status_code == 200, resp.text
                body = resp.json()
                assert body["variant"] == name and body["user_id"] == user and body["model_version"]
                for item in body["items"]:
                    assert item["id"] in candidates, (name, item)
                    assert item["id"] in available, (name, item)
                    if body["source"] == "personalised":
                        assert item["id"] not in played, (name, user, item)
                checked += body["source"] == "personalised"
        assert checked > 0

        unknown = client.get("/v1/recommendations/recommended_for_you/never-seen-user-1").json()
        assert unknown["source"] == "fallback" and unknown["items"]
        missing = client.get("/v1/recommendations/no_such_rail/u1")
        assert missing.status_code == 404 and missing.headers["content-type"].startswith("application/json")
        odd = client.get("/v1/recommendations/recommended_for_you/%00%3Cscript%3E")
        assert 400 <= odd.status_code < 500
