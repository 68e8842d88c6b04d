"""Fixtures for the ingestion tests: sample data generated, synced and catalogued once per module."""

from __future__ import annotations

from typing import Any

import pytest
from ingest_helpers import END, make_config, ok, run_job


@pytest.fixture(scope="module")
def world(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    """Sample data (4 days, 300 users, 300 episodes, 1% bad input) synced and catalogued once per module."""
    from skyrec.data.generate import generate

    home = tmp_path_factory.mktemp("world")
    cfg = make_config(home)
    gen = generate(cfg, users=300, items=300, days=4, events_per_user=40, seed=3, end=END.isoformat(),
                   bad_rate=0.01, progress=False)
    ok(run_job(cfg, "sync_metadata"))
    ok(run_job(cfg, "build_catalogue"))
    return {"home": home, "config": cfg, "generated": gen}


@pytest.fixture
def pipeline_runs(monkeypatch: pytest.MonkeyPatch) -> list[dict[str, Any]]:
    """Every activity pipeline run of the test, in order: ``{"intervals": sorted interval keys, "files": [...]}``
    (the real pipeline runs; only its calls are recorded)."""
    import skyrec.pipelines.activity as activity_pipeline

    runs: list[dict[str, Any]] = []
    real = activity_pipeline.execute

    def recorded(spec, files, options):  # type: ignore[no-untyped-def]
        runs.append({"intervals": sorted({key for key, _ in files}), "files": [f for _, f in files]})
        return real(spec, files, options)

    monkeypatch.setattr(activity_pipeline, "execute", recorded)
    return runs
