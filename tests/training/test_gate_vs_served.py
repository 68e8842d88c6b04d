"""A rail moved to another model: the gate compares the new model with what the rail serves now (the artefact
its published predictions were computed with), re-scored on the same users and split, held to the same
tolerance as the published model of its own kind. Without it, a rail switching model would be judged against
the baseline only ("no published model yet") and could get worse unseen."""

from __future__ import annotations

import datetime as dt
import re

import pytest

from skyrec.evaluation.synthetic import seed_lake
from skyrec.jobs.base import EXIT_GATE, EXIT_OK, RunInfo, execute
from skyrec.storage import Lake

pytestmark = pytest.mark.integration
RAIL = "comedy_featured"
END = dt.datetime(2026, 3, 1, tzinfo=dt.UTC)


def _train(config, model: str, hour: int) -> dict:
    run = RunInfo(dag_id="train_model", run_id=f"run{hour}", task_id="train",
                  logical_date=END + dt.timedelta(hours=hour))
    return {job: execute(job, config=config, run=run, params={"model": model})
            for job in ("create_dataset", "train", "evaluate", "publish_model")}


@pytest.fixture
def serving_knn(config_factory, redis_server, redis_client):
    """The rail serves item-kNN (trained, published, precomputed and published into a real Redis)."""
    base = {"training": {"bootstrap_resamples": 200},
            "precompute": {"k": 10, "batch_size": 128, "threads": 1},
            "publish": {"redis_url": redis_server.url, "probe_users": 5},
            "serve": {"redis_url": redis_server.url}}
    config = config_factory(base)
    lake = Lake.from_config(config)
    seed_lake(config, lake, end=END, n_users=400, n_items=300, plays_per_user=25, seed=5)
    steps = _train(config, "knn", 1)
    assert all(code == EXIT_OK for code, _ in steps.values()), steps
    run = RunInfo(dag_id=f"precompute_recommendations_knn_{RAIL}_v1", run_id="p1", task_id="compute_predictions",
                  logical_date=END + dt.timedelta(hours=2))
    for job in ("compute_predictions", "publish_predictions"):
        code, payload = execute(job, config=config, run=run, params={"variant": RAIL})
        assert code == EXIT_OK, payload.get("error")
    return base, lake


def _moved_to(config_factory, base: dict, model: str):
    return config_factory({**base, "variants": {RAIL: {"model": model}}})


def test_a_rail_moved_to_a_worse_model_is_held(serving_knn, config_factory) -> None:
    base, lake = serving_knn
    config = _moved_to(config_factory, base, "popularity")
    steps = _train(config, "popularity", 3)
    code, payload = steps["evaluate"]
    assert code == EXIT_GATE, payload
    error = payload["error"]
    assert "is below the" in error and f"of what rails {RAIL} serve now (knn v1.20260301T010000" in error, error
    assert "same users and split" in error and "no published model yet" not in error
    served = payload["details"]["served_comparisons"]
    assert [s["rails"] for s in served] == [[RAIL]] and served[0]["users"] >= 100
    assert steps["publish_model"][0] == EXIT_GATE  # and nothing reaches the rail


def test_a_rail_moved_to_a_model_as_good_is_compared_and_passes(serving_knn, config_factory) -> None:
    base, lake = serving_knn
    config = _moved_to(config_factory, base, "ease")
    steps = _train(config, "ease", 3)
    code, payload = steps["evaluate"]
    evaluation = lake.manifest(payload["summary"]["outputs"][0] if code == EXIT_OK else
                               config.dataset_path("evaluation", model="ease", version="v1",
                                                   run_key="20260301T030000"))
    assert evaluation is not None
    import json

    with lake.open(evaluation, "evaluation.json") as fh:
        figures = json.loads(fh.read())
    (served,) = figures["comparisons"]["served"]
    assert served["rails"] == [RAIL] and served["model"] == "knn" and served["comparable"]
    assert served["ndcg_at_k"]["users"] >= 100 and served["factor"] == pytest.approx(0.95)
    gate = figures["gate"]  # as good as kNN within the tolerance on this (seeded) data: passes, and says so
    assert code == EXIT_OK and gate["passed"], gate
    assert re.search(rf"vs knn v1\.20260301T010000(, its parameters refit on this split)?, which rails {RAIL} "
                     r"serve now, 0\.\d{4} on the same users", gate["message"]), gate["message"]
    with lake.open(evaluation, "report.html") as fh:  # and in the report, beside the other comparisons
        assert f"served by {RAIL}: knn v1.20260301T010000" in fh.read().decode()


def test_a_held_verdict_is_not_redecided_under_another_tolerance(serving_knn, config_factory) -> None:
    """Re-deciding reads the committed comparison with what the rail serves, made under the old tolerance: it
    would quote an interval for another question, so it is refused (as for the published model)."""
    base, _ = serving_knn
    assert _train(_moved_to(config_factory, base, "popularity"), "popularity", 3)["evaluate"][0] == EXIT_GATE
    looser = config_factory({**base, "variants": {RAIL: {"model": "popularity"}},
                             "training": {**base["training"], "quality_gate": {"tolerance": 0.5}}})
    run = RunInfo(dag_id="train_model", run_id="run3", task_id="evaluate", logical_date=END + dt.timedelta(hours=3))
    code, payload = execute("evaluate", config=looser, run=run, params={"model": "popularity"},
                            overrides=("quality",))
    assert code == 4, payload
    assert (f"the committed comparison with what rails {RAIL} serve tested new > 0.95 x theirs (tolerance 0.05); "
            "training.quality_gate.tolerance is now 0.5") in payload["error"]
