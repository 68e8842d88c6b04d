"""The short seeded fault run (``make chaos`` runs the long one): the chain ingest -> train -> precompute ->
publish through the real job launcher, on moto's S3 server behind the fault proxy and a real redis-server,
with every fault kind injected, and every invariant checked (docs/chaos.md)."""

from __future__ import annotations

from pathlib import Path

import pytest

from skyrec.chaos.harness import KINDS, run_chaos, summary_text

pytestmark = pytest.mark.integration

SEED = 12
RUNS = 1
FAULTS_PER_RUN = len(KINDS)  # one of each kind


def test_short_fault_run_keeps_every_invariant(tmp_path: Path) -> None:
    report = run_chaos(seed=SEED, runs=RUNS, faults_per_run=FAULTS_PER_RUN, root=tmp_path,
                       report_path=tmp_path / "report.json")
    summary = summary_text(report)
    print(summary)
    assert report["runs"] == RUNS
    # the faults were really injected (a planned fault whose moment passed is not counted)
    injected = report["faults_by_kind"]
    assert sum(injected.values()) >= len(KINDS) - 2, summary
    assert injected["kill_worker"] + injected["kill_job"] >= 1, summary
    assert injected["lost_response"] + injected["storage_commit"] + injected["storage_write"] >= 2, summary
    # the API was polled while the chain published
    assert report["api"]["requests"] > 0, summary
    assert report["manifests_verified"] > 0, summary
    assert report["violations"] == 0, summary
    assert report["runs_completed"] == RUNS, summary
