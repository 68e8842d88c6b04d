"""Delete-deploy of the wheel and the DAG folder to a local target and to an object store (S3 API)."""

from __future__ import annotations

import json
import re
import zipfile
from pathlib import Path
from typing import Any

import pytest

from skyrec.airflow.deploy import deploy


def test_deploy_syncs_dags_with_deletion_and_a_versioned_wheel(config: Any, tmp_path: Path) -> None:
    target = tmp_path / "composer"
    (target / "dags").mkdir(parents=True)
    (target / "dags" / "old_dag_from_last_year.py").write_text("raise SystemExit")  # stale: must go
    manifest = deploy(config, str(target))
    assert manifest["removed"] == ["old_dag_from_last_year.py"]
    assert sorted(p.name for p in (target / "dags").iterdir()) == ["skyrec_dags.py"]
    assert manifest["dags"]["skyrec_dags.py"] == __import__("hashlib").sha256(
        (Path(config.project_root) / "dags" / "skyrec_dags.py").read_bytes()).hexdigest()
    assert re.fullmatch(r"0\.1\.0\+d\d{14}\.g\w+(\.dirty)?", manifest["deploy_version"])
    wheel = target / "wheels" / manifest["wheel"]["name"]
    with zipfile.ZipFile(wheel) as zf:
        names = set(zf.namelist())
    assert "skyrec/airflow/operators.py" in names and "skyrec/jobs/base.py" in names
    assert not any("plugins" in n for n in names)
    assert json.loads((target / "deploy.json").read_text()) == manifest
    again = deploy(config, str(target))  # idempotent: nothing stale the second time
    assert again["removed"] == []


@pytest.fixture
def s3_target(monkeypatch: pytest.MonkeyPatch) -> Any:
    """An S3 endpoint over real HTTP (moto's server mode), as in tests/ingest/test_s3_sync.py."""
    import boto3
    from moto.server import ThreadedMotoServer

    from skyrec.redis_local import free_port

    port = free_port()
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=port, verbose=False)
    server.start()
    endpoint = f"http://127.0.0.1:{port}"
    for k, v in {"AWS_ACCESS_KEY_ID": "testing", "AWS_SECRET_ACCESS_KEY": "testing",
                 "AWS_DEFAULT_REGION": "us-east-1", "AWS_ENDPOINT_URL": endpoint}.items():
        monkeypatch.setenv(k, v)
    client = boto3.client("s3", endpoint_url=endpoint)
    client.create_bucket(Bucket="composer")
    yield client
    server.stop()


@pytest.mark.integration
def test_deploy_to_an_object_store_target_deletes_stale_dags(config: Any, s3_target: Any) -> None:
    """``s3://`` through fsspec/s3fs against a real HTTP endpoint; ``gs://`` takes the same fsspec path."""
    client = s3_target
    client.put_object(Bucket="composer", Key="airflow/dags/old_dag_from_last_year.py", Body=b"raise SystemExit")
    manifest = deploy(config, "s3://composer/airflow")
    keys = {o["Key"] for o in client.list_objects_v2(Bucket="composer", Prefix="airflow/")["Contents"]}
    assert manifest["removed"] == ["old_dag_from_last_year.py"]
    assert keys == {"airflow/dags/skyrec_dags.py", f"airflow/wheels/{manifest['wheel']['name']}", "airflow/deploy.json"}
    wheel = client.get_object(Bucket="composer", Key=f"airflow/wheels/{manifest['wheel']['name']}")["Body"].read()
    assert __import__("hashlib").sha256(wheel).hexdigest() == manifest["wheel"]["sha256"]
    with zipfile.ZipFile(__import__("io").BytesIO(wheel)) as zf:
        assert "skyrec/airflow/backends/beam_runners.py" in zf.namelist()
    stored = json.loads(client.get_object(Bucket="composer", Key="airflow/deploy.json")["Body"].read())
    assert stored == manifest and stored["deploy_version"].startswith("0.1.0+d")
