"""EASE and item-kNN through the real steps: create_dataset -> train -> evaluate -> precompute.

Their user side is sparse (the interaction rows, ``skyrec.models.representations``); the artefact keeps it
sparse, the evaluation scores it, and precompute's kernel ranks it under the rules (exclusions, brand cap)
exactly as the brute-force specification does.
"""

from __future__ import annotations

import datetime as dt
import json

import numpy as np
import pyarrow.parquet as pq
import pytest
import scipy.sparse as sp
from _train_helpers import END, FAST, run_job

from skyrec.jobs.base import EXIT_OK
from skyrec.models.artefact import load_artefact, load_model
from skyrec.models.representations import equal

CONFIG = {**FAST, "models": {**FAST["models"], "ease": {"params": {"regularization": 20.0}},
                             "knn": {"params": {"neighbours": 40, "series_weight": 2.0}}}}


@pytest.mark.parametrize("model", ["ease", "knn"])
def test_item_item_models_train_evaluate_and_precompute(config_factory, model: str) -> None:
    from skyrec.evaluation.synthetic import seed_lake
    from skyrec.scoring.engine import PrecomputeSpec, Scorer
    from skyrec.scoring.topk import reference_topk
    from skyrec.storage import Lake

    config = config_factory(CONFIG)
    lake = Lake.from_config(config)
    seed_lake(config, lake, end=END, n_users=400, n_items=300, plays_per_user=25, seed=5)
    for job in ("create_dataset", "train", "evaluate"):
        code, payload = run_job(config, job, params={"model": model})
        assert code == EXIT_OK, (job, payload.get("error"), payload.get("traceback"))
    run_key = (END + dt.timedelta(hours=1)).strftime("%Y%m%dT%H%M%S")

    # the artefact: sparse interaction rows x the item side, the same as the saved model's; item-kNN's rows
    # carry their followed part beside them (the series term weighted by plays of episodes when new)
    m = lake.require(f"models/{model}/v1/run={run_key}")
    art = load_artefact(lake, m)
    d = len(art.item_ids) * (2 if model == "knn" else 1)
    assert sp.isspmatrix_csr(art.user_factors) and art.user_factors.shape == (len(art.user_ids), d)
    assert art.item_factors.shape == (len(art.item_ids), d)
    assert m.meta["factors"] == d
    if model == "knn":  # the catalogue's brands, release times and first plays reached the fit via the dataset
        series = m.meta["series"]
        assert series["weight"] == 2.0 and series["entries"] > 0, series
        assert series["catch_up"] == 0.1 and 0 < series["followed_pairs"] < series["pairs"], series
        n = len(art.item_ids)
        followed = art.user_factors[:, n:]
        assert followed.nnz == series["followed_pairs"]
        assert (followed.astype(bool) > art.user_factors[:, :n].astype(bool)).nnz == 0
    saved = load_model(lake, m)
    assert equal(saved.user_representations(), art.user_factors)
    assert equal(saved.item_representations(), art.item_factors)

    # the evaluation scored it on the split, with intervals, and it beats popularity on planted tastes
    ev = lake.require(f"evaluations/{model}/v1/run={run_key}")
    figures = json.loads(lake.open(ev, "evaluation.json").read())
    overall = figures["overall"]
    assert overall["users"] >= 100 and overall["ci"]["ndcg_at_k"][0] <= overall["ndcg_at_k"]
    assert overall["ndcg_at_k"] > 1.2 * figures["baseline_overall"]["ndcg_at_k"]
    assert figures["gate"]["passed"], figures["gate"]

    # precompute: the engine scores the artefact with the kernel and the rules
    cat = lake.latest(config, "catalogue")
    spec = PrecomputeSpec(variant="recommended_for_you", publication="t.1", lake_url=config.lake_url,
                          model_path=m.path, catalogue_path=cat.path, out_dir=lake.abspath(f"scratch/{model}"),
                          at=END.isoformat(), k=10, max_per_brand=2, batch_size=64, sub_batch=16)
    scorer = Scorer.from_spec(spec)
    n = scorer.n_users
    res = scorer.run_shard(0, 0, n)
    assert res.users == n and res.rec_keys == n
    table = pq.read_table(lake.abspath(f"scratch/{model}/{res.parquet}"))
    assert table.num_rows == res.rows
    c = scorer.candidates
    rows = np.arange(0, n, 7)
    ref = reference_topk(art.user_factors[rows], art.item_factors[c.positions], 10,
                         exclude=c.exclusions(art.seen, rows), brands=c.brands, max_per_brand=2)
    got = scorer.score(rows)
    for r in range(len(rows)):
        assert got.items[r, : got.counts[r]].tolist() == [j for j, _ in ref[r]]
        seen = set(art.seen[rows[r]].indices.tolist())
        assert not seen & set(c.positions[got.items[r, : got.counts[r]]].tolist()), "recommended a played item"


@pytest.mark.parametrize("model", ["ease", "knn"])
def test_an_item_item_model_on_a_rail_publishes_and_is_regated_against_itself(config_factory, model: str) -> None:
    """With a rail on EASE (sparse users) or item-kNN (sparse users and items): the rules figures, publish
    (post-conditions, check_model) and the next run's comparison with the published model: its artefact
    re-scored on the new split, then its parameters refit there."""
    from skyrec.airflow.control import check_model
    from skyrec.evaluation.synthetic import seed_lake
    from skyrec.models.artefact import published_model_pointer
    from skyrec.storage import Lake

    config = config_factory({**CONFIG, "variants": {
        "ease_for_you": {"model": model, "version": "v1", "candidates": {}},
        "nothing_for_you": {"model": model, "version": "v1", "candidates": {"genres": ["no-such-genre"]}}}})
    lake = Lake.from_config(config)
    seed_lake(config, lake, end=END, n_users=400, n_items=300, plays_per_user=25, seed=5)
    for job in ("create_dataset", "train", "evaluate", "publish_model"):
        code, payload = run_job(config, job, params={"model": model})
        assert code == EXIT_OK, (job, payload.get("error"), payload.get("traceback"))
    ptr = lake.read_pointer(published_model_pointer(model, "v1"))
    check_model(lake, lake.require(ptr["path"]))
    run1 = (END + dt.timedelta(hours=1)).strftime("%Y%m%dT%H%M%S")
    ev = json.loads(lake.open(lake.require(f"evaluations/{model}/v1/run={run1}"), "evaluation.json").read())
    assert set(ev["rules"]["ease_for_you"]["stages"]) == {"model", "exclude_played", "candidates", "available",
                                                          "served"}
    # a rail whose filter leaves no candidate: its zeros are said to be that, not passed off as a score
    assert "note" not in ev["rules"]["ease_for_you"]
    assert ev["rules"]["nothing_for_you"]["note"].startswith("no candidates after the candidates stage")
    assert ev["rules"]["nothing_for_you"]["stages"]["served"]["ndcg_at_k"] == 0.0
    assert ptr["evaluation"]["rules"]["nothing_for_you"]["note"] == ev["rules"]["nothing_for_you"]["note"]
    report = lake.open(lake.require(f"evaluations/{model}/v1/run={run1}"), "report.html").read().decode()
    assert "<b>nothing_for_you</b>: no candidates after the candidates stage" in report
    for job in ("create_dataset", "train", "evaluate"):
        code, payload = run_job(config, job, hour=2, params={"model": model})
    # same data: the published model has seen every test play, so its artefact (sparse users) re-scored on the
    # new split rests on no user; its parameters refit on this split decide instead, on every user, and the
    # same parameters are no worse than themselves
    assert code == EXIT_OK, payload.get("error")
    run2 = (END + dt.timedelta(hours=2)).strftime("%Y%m%dT%H%M%S")
    ev2 = json.loads(lake.open(lake.require(f"evaluations/{model}/v1/run={run2}"), "evaluation.json").read())
    published = ev2["comparisons"]["published"]
    assert published["refit"] is True and published["ndcg_at_k"]["users"] >= 100
    assert abs(published["ndcg_at_k"]["mean_a"] - published["ndcg_at_k"]["mean_b"]) < 1e-6  # deterministic fits
    assert published["artefact"]["comparable"] is True and published["artefact"]["ndcg_at_k"]["users"] == 0
    assert published["artefact"]["relevant_plays_seen_by_published"] > 0
    assert "its parameters refit on this split" in ev2["gate"]["message"]
