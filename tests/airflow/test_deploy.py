"""Delete-deploy of the wheel and the DAG folder to a local target."""

from __future__ import annotations

import json
import zipfile
from pathlib import Path
from typing import Any

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
    assert manifest["deploy_version"].startswith("0.1.0+g")
    wheel = target / "wheels" / manifest["wheel"]["name"]
    with zipfile.ZipFile(wheel) as zf:
        names = set(zf.namelist())
    assert "skyrec/airflow/operators.py" in names and "skyrec/jobs/base.py" in names
    assert not any("plugins" in n for n in names)
    assert json.loads((target / "deploy.json").read_text()) == manifest
    again = deploy(config, str(target))  # idempotent: nothing stale the second time
    assert again["removed"] == []
