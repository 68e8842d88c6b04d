"""README "Your own data in ten minutes": the same commands, on small files in the classic layout."""

from __future__ import annotations

import os
import re
from pathlib import Path

import pytest
from importer_files import FILMS, ROOT, write_classic

from skyrec.redis_local import LocalRedis, free_port

pytestmark = [pytest.mark.integration, pytest.mark.slow]


def test_readme_commands_from_files_to_the_api(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from typer.testing import CliRunner

    readme = (ROOT / "README.md").read_text()
    block = readme.split("## Your own data in ten minutes", 1)[1].split("```bash", 1)[1].split("```", 1)[0]
    dags_in_readme = re.findall(r"skyrec run ([a-z_]+) ", block)
    assert dags_in_readme == ["ingest_programme_metadata", "backfill_user_activity", "ingest_availability",
                              "ingest_cold_start", "train_model"]
    assert "SKYREC_CONFIG_DIR=config/examples/films" in block

    data, item = write_classic(tmp_path / "in", users=80, items=60, ratings=4000, days=6)
    port = free_port()
    env = {"SKYREC_HOME": str(tmp_path / "home"), "SKYREC_PROJECT_ROOT": str(ROOT), "SKYREC_CONFIG_DIR": str(FILMS),
           "SKYREC__PUBLISH__REDIS_URL": f"redis://127.0.0.1:{port}/0",
           "SKYREC__SERVE__REDIS_URL": f"redis://127.0.0.1:{port}/0", "SKYREC__ALERTS__WEBHOOK_URL": "",
           "SKYREC__TRAINING__QUALITY_GATE__INSUFFICIENT_EVIDENCE": "publish_with_alert"}
    for k, v in env.items():
        monkeypatch.setenv(k, v)
    from skyrec.cli import app

    result = CliRunner().invoke(app, ["import", "--items", str(item), "--interactions", str(data)])
    assert result.exit_code == 0, result.output
    m = re.search(r"activity from (\S+) to (\S+);", result.output)
    assert m, result.output
    start, end = m.group(1), m.group(2)
    redis_server = LocalRedis(port=port, dir=tmp_path / "redis").start()
    try:
        from skyrec.airflow.factory import dag_ids
        from skyrec.airflow.runner import run_dag
        from skyrec.config import load_config

        config = load_config("local", root=ROOT)
        precompute = sorted(d for d in dag_ids(config) if d.startswith("precompute_recommendations_"))
        assert len(precompute) == 5
        for dag_id in [*dags_in_readme, *precompute]:
            conf = {"start": start, "end": end} if dag_id == "backfill_user_activity" else None
            state = run_dag(dag_id, logical_date=end, conf=conf)
            assert state == "success", (dag_id, state, os.listdir(tmp_path / "home"))
        from fastapi.testclient import TestClient

        from skyrec.serve.main import create_app

        with TestClient(create_app(config)) as client:
            assert client.get("/readyz").status_code == 200
            body = client.get("/v1/recommendations/sci_fi_and_fantasy/3", params={"limit": 5}).json()
            assert body["source"] == "personalised" and body["items"], body
    finally:
        redis_server.stop()
