"""Evaluation figures reach users: train_model -> precompute -> publish -> /v1/variants, the report
endpoint and ``skyrec status``, on a small planted lake with a real redis-server."""

from __future__ import annotations

import datetime as dt
import json

import pytest

from skyrec.evaluation.synthetic import seed_lake
from skyrec.jobs.base import EXIT_OK, RunInfo, execute
from skyrec.storage import Lake

pytestmark = pytest.mark.integration
VARIANT = "comedy_featured"
MODEL = "knn"  # the shipped rails' model
END = dt.datetime(2026, 3, 1, tzinfo=dt.UTC)


def train_all(config) -> dict:
    out = {}
    run = RunInfo(dag_id="train_model", run_id="run1", task_id="train", logical_date=END + dt.timedelta(hours=1))
    for job in ("create_dataset", "train", "evaluate", "publish_model"):
        out[job] = execute(job, config=config, run=run, params={"model": MODEL})
    return out


@pytest.fixture
def published(config_factory, redis_server, redis_client):
    config = config_factory({
        "training": {"bootstrap_resamples": 200},
        "precompute": {"k": 10, "batch_size": 128, "threads": 1},
        "publish": {"redis_url": redis_server.url, "probe_users": 5},
        "serve": {"redis_url": redis_server.url, "pointer_cache_seconds": 0.0, "access_log": False}})
    lake = Lake.from_config(config)
    seed_lake(config, lake, end=END, n_users=400, n_items=300, plays_per_user=25, seed=5)
    steps = train_all(config)
    assert all(code == EXIT_OK for code, _ in steps.values()), steps
    run = RunInfo(dag_id=f"precompute_recommendations_{MODEL}_{VARIANT}_v1", run_id="p1", task_id="compute_predictions",
                  logical_date=END + dt.timedelta(hours=2))
    for job in ("compute_predictions", "publish_predictions"):
        code, payload = execute(job, config=config, run=run, params={"variant": VARIANT})
        assert code == EXIT_OK, payload.get("traceback") or payload.get("error")
    return config, lake, steps["evaluate"][1]["summary"]


def test_variants_show_the_evaluation_with_intervals_users_protocol_and_rules(make_client, published) -> None:
    config, lake, summary = published
    client = make_client(config)
    body = client.get("/v1/variants").json()
    v = next(x for x in body["variants"] if x["variant"] == VARIANT)
    assert v["published"], v
    ev = v["evaluation"]
    assert ev, "no evaluation published"
    assert ev["ndcg_at_k"] == pytest.approx(summary["ndcg_at_k"])
    lo, hi = ev["ci"]["ndcg_at_k"]
    assert lo < ev["ndcg_at_k"] < hi
    assert ev["users"] == 400 and ev["protocol"]["split"]["kind"] == "per_user"
    assert ev["gate"]["passed"] is True and ev["baseline"] < ev["ndcg_at_k"]
    # this rail's figures after each business rule, from the same users
    stages = ev["rules"]
    assert set(stages) == {"model", "exclude_played", "candidates", "available", "served"}
    assert all(s["users"] == 400 for s in stages.values())
    assert stages["candidates"]["ndcg_at_k"] <= stages["exclude_played"]["ndcg_at_k"] + 1e-12  # a filter only hides
    # the report link works
    assert v["report_url"] == f"/v1/variants/{VARIANT}/report"
    report = client.get(v["report_url"])
    assert report.status_code == 200 and "skyrec evaluation" in report.text and "confidence" in report.text


def test_status_shows_each_models_latest_evaluation(redis_client, published) -> None:
    config, _, summary = published
    from skyrec.status import collect

    info = collect(config)
    row = next(m for m in info["models"] if m["model"] == MODEL)
    assert row["model_version"] == "v1.20260301T010000" and row["users"] == 400 and row["split"] == "per_user"
    assert row["ndcg_at_k"].startswith(f"{summary['ndcg_at_k']:.4f} [")
    # the training report: its file (found through the evaluation's manifest) and where the API serves it
    from pathlib import Path

    assert row["report"] and Path(row["report"]).is_file() and "<html" in Path(row["report"]).read_text().lower()
    assert row["rails"] == [VARIANT] and row["report_urls"] == [f"/v1/variants/{VARIANT}/report"]
    # the model's other rails have published nothing yet: said so, not passed off as serving it
    rails = sorted(n for n, v in config.variants.items() if v.model == MODEL)
    (idle,) = [m for m in info["models"] if m["model"] == MODEL and m["model_version"] is None]
    assert idle["rails"] == [r for r in rails if r != VARIANT] and idle["published"] == row["model_version"]
    # the training dataset the model was fit on is found under its definition's id, with the models that read it
    (ds,) = [d for d in info["datasets"] if d["dataset"] == "training_dataset"]
    dataset_id = config.training.dataset_id(MODEL)
    assert ds["dataset_id"] == dataset_id and ds["models"] == MODEL
    assert ds["latest"] == f"training/dataset/{dataset_id}/run=20260301T010000" and ds["rows"] > 0
    # a readout per configured experiment: none configured here, none listed (no row that can only say "none")
    assert not config.experiments and not [d for d in info["datasets"] if d["dataset"] == "experiment_readout"]
    json.dumps(info, default=str)


def test_status_shows_what_the_rails_serve_not_only_what_the_lake_published(make_client, published,
                                                                          monkeypatch) -> None:
    """A newer model published in the lake that the rail has not published yet (its precompute is to come, or
    failed, or the rail was rolled back): status shows the model the rail serves, with the figures the API
    shows for it, and says the newer one waits."""
    config, lake, _ = published
    run = RunInfo(dag_id="train_model", run_id="run2", task_id="train", logical_date=END + dt.timedelta(hours=3))
    for job in ("create_dataset", "train", "evaluate", "publish_model"):
        code, payload = execute(job, config=config, run=run, params={"model": MODEL})
        assert code == EXIT_OK, (job, payload.get("error"))
    from skyrec.models.artefact import published_model_pointer
    from skyrec.status import collect

    newer = lake.read_pointer(published_model_pointer(MODEL, "v1"))
    assert newer["model_version"] == "v1.20260301T030000"
    row = next(m for m in collect(config)["models"] if m["rails"] == [VARIANT])
    served = next(x for x in make_client(config).get("/v1/variants").json()["variants"] if x["variant"] == VARIANT)
    assert row["model_version"] == "v1.20260301T010000" == served["model_version"]
    assert row["published"] == "v1.20260301T030000" and row["evaluation"] == served["evaluation"]["evaluation_path"]
    assert row["ndcg_at_k"].startswith(f"{served['evaluation']['ndcg_at_k']:.4f} [")
    from typer.testing import CliRunner

    import skyrec.cli

    monkeypatch.setattr(skyrec.cli, "load_config", lambda env=None, **_: config)
    out = CliRunner().invoke(skyrec.cli.app, ["status"], env={"COLUMNS": "400"})
    text = " ".join(out.output.split())
    assert out.exit_code == 0 and "models served: the evaluation each was published on" in text, out.output
    assert (f"{MODEL} v1: v1.20260301T030000 is the published model; rails {VARIANT} serve v1.20260301T010000"
            in text), out.output


def test_a_train_run_prints_its_figures_gate_and_publication(published) -> None:
    """After `skyrec run train_model` (and in `make demo`) a person reads this run's evaluation where they
    ran it: the figure with its interval and users, the split, the baseline, the gate's verdict, and whether
    the model is now the one served; a run that committed no evaluation says so."""
    config, _, summary = published
    from skyrec.status import train_run_lines

    lines = train_run_lines(config, "20260301T010000")
    assert lines[0].startswith(f"{MODEL} v1: ndcg_at_k {summary['ndcg_at_k']:.4f} [")
    assert "on 400 users (per_user split); popularity 0." in lines[0], lines
    assert lines[1].startswith("  gate passed: ndcg_at_k") and lines[-1] == "  published: v1.20260301T010000"
    assert train_run_lines(config, "20260301T020000") == [f"{MODEL} v1: no evaluation committed by this run"]
    # a search asked for a model this DAG does not train is named, not passed over in silence
    other = next(m for m in ("ease", "knn", "als") if m != MODEL and m not in config.trained_models())
    searching = config.model_copy(update={"training": config.training.model_copy(update={
        "search": config.training.search.model_copy(update={"enabled": True, "models": [other]})})})
    assert train_run_lines(searching, "20260301T020000")[0] == (
        f"search: training.search.models names {other}, which train_model does not train (it trains "
        f"{', '.join(config.trained_models())}: training.models, else the rails' models)")
    # a later run of the same date (it found the evaluation committed, or refused to replace it): not its figures
    import datetime as dt

    again = train_run_lines(config, "20260301T010000", since=dt.datetime.now(dt.UTC))
    assert again[0].endswith(": not by this run]") and "committed by an earlier run of this date" in again[0]
    assert "earlier run" not in train_run_lines(config, "20260301T010000", since=dt.datetime(2000, 1, 1,
                                                                                              tzinfo=dt.UTC))[0]
    # a run whose gate held on too few users: the verdict once, and what is still served
    from skyrec.storage import Lake, Producer

    lake = Lake.from_config(config)
    stage = lake.stage("evaluation", config.dataset_path("evaluation", model=MODEL, version="v1",
                                                         run_key="20260301T030000"), Producer())
    with stage:
        stage.commit({"metric": "ndcg_at_k", "overall": {"ndcg_at_k": 0.2, "users": 36},
                      "protocol": {"split": {"kind": "global"}},
                      "gate": {"passed": False, "insufficient_evidence": True,
                               "message": "insufficient evidence: only 36 evaluable users"}})
    held = train_run_lines(config, "20260301T030000")
    assert held == [f"{MODEL} v1: ndcg_at_k 0.2000 on 36 users (global split)",
                    "  gate: insufficient evidence: only 36 evaluable users",
                    "  not published by this run (serving v1.20260301T010000)"], held
