"""``GET /v1/experiments/{name}/report``: the latest readout's HTML report, read through its committed manifest
and served only when its bytes are the ones that manifest records (as the training report is)."""

from __future__ import annotations

import datetime as dt
from typing import Any

import pytest

NAME = "demo_rfy"
RAIL = "recommended_for_you"
PAGE = b"<html><body><h1>Readout of demo_rfy: treatment_better</h1></body></html>"


@pytest.fixture
def readout(make_client, config_factory, redis_server) -> tuple[Any, Any, Any]:
    """An app configured with one experiment, the lake it reads, and a committed readout (its manifest)."""
    from skyrec.storage import Lake, Producer

    now = dt.datetime.now(dt.UTC)
    config = config_factory({
        "serve": {"redis_url": redis_server.url, "pointer_cache_seconds": 0.0, "access_log": False},
        "experiments": {NAME: {"rail": RAIL, "salt": "demo", "start": (now - dt.timedelta(days=1)).isoformat(),
                               "end": (now + dt.timedelta(days=30)).isoformat(), "default_arm": "control",
                               "arms": {"control": {"variant": RAIL, "share": 0.5},
                                        "treatment": {"variant": "thought_provoking", "share": 0.5}},
                               "primary_metric": "plays_per_impression"}}})
    lake = Lake.from_config(config)
    rel = config.datasets["experiment_readout"].format(experiment=NAME, run_key="20261123T000000")
    stage = lake.stage("experiment_readout", rel, Producer())
    with stage.open("report.html", "wb") as fh:
        fh.write(PAGE)
    with stage.open("readout.json", "wb") as fh:
        fh.write(b"{}")
    manifest = stage.commit({"decision": {"status": "treatment_better", "message": "demo"}})
    return make_client(config), lake, manifest


def test_the_committed_readout_report_is_served(readout) -> None:
    client, _, _ = readout
    listed = client.get("/v1/experiments").json()["experiments"]
    assert listed[0]["latest_readout"]["report_url"] == f"/v1/experiments/{NAME}/report"
    r = client.get(f"/v1/experiments/{NAME}/report")
    assert r.status_code == 200 and r.content == PAGE and r.headers["content-type"].startswith("text/html")


@pytest.mark.parametrize("tampered", [
    PAGE.replace(b"treatment_better", b"treatment_worse!"),  # same size, other bytes
    b"<html><body><script>steal()</script></body></html>",  # another size
    PAGE + b"<!-- appended -->",  # the committed bytes and more: not cut to the recorded size and served
], ids=["same-size", "other-size", "grown"])
def test_a_readout_report_unlike_its_manifest_is_409_never_served(readout, tampered: bytes) -> None:
    client, lake, manifest = readout
    assert tampered != PAGE and len(PAGE.replace(b"treatment_better", b"treatment_worse!")) == len(PAGE)
    with open(lake.file_url(manifest, "report.html"), "wb") as fh:
        fh.write(tampered)
    r = client.get(f"/v1/experiments/{NAME}/report")
    assert r.status_code == 409 and r.headers["content-type"] == "application/json", r.text
    body = r.json()
    assert body["error"] == "report_corrupt" and NAME in body["message"] and "sha256" in body["message"], body
    assert manifest.path in body["message"]
    spec = client.get("/openapi.json").json()["paths"]["/v1/experiments/{name}/report"]["get"]
    assert spec["responses"]["409"]["content"]["application/json"]["schema"]["$ref"].endswith("/ErrorOut")


def test_a_readout_report_larger_than_the_api_serves_is_404_saying_so(readout, monkeypatch) -> None:
    from skyrec.serve.api import reports

    client, _, _ = readout
    monkeypatch.setattr(reports, "MAX_REPORT_BYTES", len(PAGE) - 1)
    r = client.get(f"/v1/experiments/{NAME}/report")
    assert r.status_code == 404 and r.json()["error"] == "no_report", r.text
    assert f"is {len(PAGE)} bytes, more than the {len(PAGE) - 1}" in r.json()["message"]
    monkeypatch.setattr(reports, "MAX_REPORT_BYTES", len(PAGE))  # exactly the bound: served
    assert client.get(f"/v1/experiments/{NAME}/report").content == PAGE


def test_a_readout_committed_without_a_report_is_404(readout) -> None:
    from skyrec.storage import Producer

    client, lake, manifest = readout
    rel = manifest.path.rsplit("=", 1)[0] + "=20261124T000000"  # a newer run, committed without its page
    stage = lake.stage("experiment_readout", rel, Producer())
    with stage.open("readout.json", "wb") as fh:
        fh.write(b"{}")
    stage.commit({})
    r = client.get(f"/v1/experiments/{NAME}/report")
    assert r.status_code == 404 and r.json()["error"] == "no_readout", r.text
