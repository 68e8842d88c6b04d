"""The train_model jobs on a tiny planted lake: outputs, idempotence, the gate, publish post-conditions."""

from __future__ import annotations

import datetime as dt
import json
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from _train_helpers import END, FAST, run_job, train_all

from skyrec.data.schemas import ACTIVITY, CATALOGUE
from skyrec.evaluation.synthetic import commit_table
from skyrec.jobs.base import EXIT_BAD_INPUT, EXIT_ERROR, EXIT_GATE, EXIT_OK
from skyrec.models.artefact import load_artefact, load_model, load_published, published_model_pointer
from skyrec.models.dataset import load_training_data
from skyrec.storage import Lake


def test_whole_chain_commits_dataset_model_evaluation_and_pointer(seeded) -> None:
    config, lake, _ = seeded
    results = train_all(config)
    for job, (code, payload) in results.items():
        assert code == EXIT_OK, (job, payload.get("error"), payload.get("traceback"))
    run_key = (END + dt.timedelta(hours=1)).strftime("%Y%m%dT%H%M%S")

    ds = lake.require(f"training/dataset/{config.training.dataset_id('als')}/run={run_key}")
    data = load_training_data(lake, ds)
    assert data.train.nnz and data.test.nnz and data.item_features.shape[1] > 0
    assert ds.meta["activity_snapshot"].startswith("activity/snapshots/")

    model = lake.require(f"models/als/v1/run={run_key}")
    assert model.meta["model_version"] == f"v1.{run_key}" and model.meta["fit_on"] == "all"
    art = load_artefact(lake, model)
    assert art.seen.nnz > 0 and art.user_factors.shape[1] == 16
    assert np.array_equal(load_model(lake, model).user_representations(), art.user_factors)

    ev = lake.require(f"evaluations/als/v1/run={run_key}")
    figures = json.loads(lake.open(ev, "evaluation.json").read())
    assert figures["overall"]["ndcg_at_k"] > figures["baseline_overall"]["ndcg_at_k"]
    assert set(figures["results"]["models"]) == {"als", "popularity"}
    assert figures["scored"] == "refit on the split's training part"  # the artefact was fit on all data
    assert set(figures["variants"]) == set(config.variants)  # every variant uses als v1 in base config
    assert "comedy_featured" in figures["results"]["models"]["als"]["variants"]
    html = lake.open(ev, "report.html").read().decode()
    assert "<svg" in html and "Popularity bias" in html

    ptr = lake.read_pointer(published_model_pointer("als", "v1"))
    assert ptr["path"] == model.path and ptr["model_version"] == f"v1.{run_key}"
    assert ptr["evaluation"]["ndcg_at_k"] == pytest.approx(figures["overall"]["ndcg_at_k"])
    assert load_published(lake, "als", "v1").evaluation["ndcg_at_k"] == ptr["evaluation"]["ndcg_at_k"]

    # every step is a no-op the second time
    for job in ("create_dataset", "train", "evaluate", "publish_model"):
        code, payload = run_job(config, job)
        assert code == EXIT_OK and payload["summary"].get("note") in {"already committed", "already published"}


def test_models_of_one_definition_share_one_committed_dataset(seeded, config_factory) -> None:
    """Two trained models with the same dataset definition: one dataset is built and committed, the second
    creator finds it committed, and both models are trained and evaluated on it."""
    _, lake, _ = seeded
    config = config_factory({**FAST, "training": {**FAST["training"], "models": ["als", "popularity"]}})
    ds_id = config.training.dataset_id("als")
    assert config.training.dataset_id("popularity") == ds_id
    code, first = run_job(config, "create_dataset", params={"dataset_id": ds_id})
    assert code == EXIT_OK, first.get("error")
    assert first["summary"].get("note") is None  # built here
    code, second = run_job(config, "create_dataset", params={"model": "popularity"})
    assert code == EXIT_OK and second["summary"]["note"] == "already committed"
    assert second["summary"]["outputs"] == first["summary"]["outputs"]
    path = first["summary"]["outputs"][0]
    assert path.startswith(f"training/dataset/{ds_id}/run=")
    assert lake.require(path).meta["models"] == ["als", "popularity"]
    assert [m.path for m in lake.history(config, "training_dataset", dataset_id=ds_id)] == [path]
    root = Path(lake.abspath("training"))
    built = sorted(f"training/{m.parent.parent.relative_to(root)}" for m in root.rglob("_manifest/*.json"))
    assert built == [path]  # one dataset in the lake, not one per model
    for model in ("als", "popularity"):
        for job in ("train", "evaluate"):
            code, payload = run_job(config, job, params={"model": model})
            assert code == EXIT_OK, (model, job, payload.get("error"))
        trained = lake.require(f"models/{model}/v1/run={path.rsplit('=', 1)[1]}")
        assert trained.meta["dataset"] == path
    # a changed definition is a different dataset: it is not served the one above
    other = config_factory({**FAST, "training": {**FAST["training"], "recency_half_life_days": 7}})
    assert other.training.dataset_id("als") != ds_id
    code, payload = run_job(other, "train", force=True)
    assert code != EXIT_OK and "is not committed" in payload["error"]
    code, payload = run_job(config, "create_dataset", params={"dataset_id": "dnosuch"})
    assert code == EXIT_BAD_INPUT and "dnosuch" in payload["error"]


def test_hybrid_scores_unplayed_catalogue_items(seeded, config_factory) -> None:
    """Cold items are a property of a global time split: new episodes nobody played before the cutoff."""
    _, lake, truth = seeded
    config = config_factory({**FAST, "training": {"holdout_days": 3, "split": {"kind": "global"}}})
    results = train_all(config, model="hybrid")
    assert all(code == EXIT_OK for code, _ in results.values()), results
    art = load_published(lake, "hybrid", "v1")
    assert len(art.item_ids) == 300  # every catalogue item, played or not
    ev = json.loads(lake.open(lake.require(results["evaluate"][1]["summary"]["outputs"][0]), "evaluation.json")
                    .read())
    cold = ev["cold_start"]
    assert cold["cold_item_recall_at_k"] is not None
    assert cold["cold_item_recall_at_k"] > 2 * cold["random_expectation"]


def test_create_dataset_weighting_and_recency_by_hand(train_config) -> None:
    lake = Lake.from_config(train_config)
    ts = lambda days: END - dt.timedelta(days=days)  # noqa: E731
    activity = pa.table({
        "user_id": ["a", "a", "a", "b", "b", None],
        "item_id": ["x", "x", "y", "y", "x", "x"],
        "event_type": ["play", "complete", "play", "play", "pause", "play"],
        "event_ts": [ts(30), ts(30), ts(0), ts(10), ts(1), ts(1)],
        "played_seconds": [50.0, 100.0, 25.0, 100.0, 10.0, 5.0],
    }, schema=ACTIVITY)
    catalogue = pa.table({
        "item_id": ["x", "y", "z"], "title": ["X", "Y", "Z"], "brand_id": ["b1", "b1", "b2"],
        "brand_title": ["B1", "B1", "B2"], "series_id": ["s", "s", "s"], "masterbrand": ["r4", "r4", "r2"],
        "genres": [["Comedy"], ["Drama"], []], "formats": [["Talks"], [], []],
        "release_ts": [ts(40)] * 3, "duration_seconds": [100, 100, 100], "available_from": [ts(40)] * 3,
        "available_until": [None] * 3, "updated_ts": [ts(40)] * 3,
    }, schema=CATALOGUE)
    commit_table(lake, "activity_snapshot", train_config.dataset_path("activity_snapshot", interval_key="20260301T00"),
                 activity)
    commit_table(lake, "catalogue", train_config.dataset_path("catalogue", run_key="20260301T000000"), catalogue,
                 name="catalogue.parquet")
    code, payload = run_job(train_config, "create_dataset")
    assert code == EXIT_GATE and payload["gate"] == "error_rate"  # 1 bad event in 6 is above 5%
    code, payload = run_job(train_config, "create_dataset", overrides=("error_rate",))
    assert code == EXIT_OK, payload
    ds = lake.require(payload["summary"]["outputs"][0])
    assert ds.quarantine == {"missing_user_item_or_time": 1}
    assert ds.meta["ignored_events"] == {"pause": 1}
    data = load_training_data(lake, ds)
    users, items = list(data.user_ids), list(data.item_ids)
    assert sorted(items) == ["x", "y", "z"]  # z: catalogue only, never played
    m = data.interactions.toarray()
    a, b, x, y = users.index("a"), users.index("b"), items.index("x"), items.index("y")
    half = 0.5  # 30 days old with a 30-day half-life
    # play of half the episode: 1 x (0.5 + 0.5 x 0.5); complete: 2 x 1
    assert m[a, x] == pytest.approx((0.75 + 2.0) * half, rel=1e-5)
    assert m[a, y] == pytest.approx(1 * (0.5 + 0.5 * 0.25), rel=1e-5)
    assert m[b, y] == pytest.approx(1.0 * 2 ** (-10 / 30), rel=1e-5)
    assert m[b, x] == 0  # the pause does not count
    # split: holdout 3 days -> only a's play of y (today) is in test
    assert data.test.toarray()[a, y] == 1 and data.test.nnz == 1
    assert data.train.toarray()[a, y] == 0
    # each training pair's first play, on train's pattern (the search's "latest" validation split reads it)
    first = data.train_first_play
    assert np.array_equal(first.indptr, data.train.indptr) and np.array_equal(first.indices, data.train.indices)
    us = lambda t: int(t.timestamp() * 1_000_000)  # noqa: E731
    assert first[a, x] == us(ts(30)) and first[b, y] == us(ts(10)) and first.nnz == data.train.nnz == 2
    names = list(data.feature_names)
    assert {"genre=Comedy", "format=Talks", "brand=b1", "masterbrand=r4"} <= set(names)
    assert data.item_features.toarray()[items.index("z"), names.index("brand=b2")] == 1


def test_create_dataset_without_activity_is_not_ready_and_retryable(train_config) -> None:
    code, payload = run_job(train_config, "create_dataset")
    assert code == EXIT_ERROR and payload["error_kind"] == "not_ready" and "activity_snapshot" in payload["error"]


def test_create_dataset_ignores_snapshots_after_the_run(seeded) -> None:
    config, lake, _ = seeded
    code, payload = run_job(config, "create_dataset", hour=-30)  # a run from before the snapshot existed
    assert code == EXIT_ERROR and payload["error_kind"] == "not_ready"


def test_two_runs_in_one_second_keep_their_own_inputs(seeded) -> None:
    """Two asset-triggered train_model runs queued in the same second (the snapshot was committed, then rebuilt
    within the second) are distinct runs: the later one builds its dataset from the rebuilt snapshot instead of
    finding the earlier run's outputs "already committed"."""
    from skyrec.jobs.base import RunInfo, execute
    from skyrec.storage import Producer

    config, lake, _ = seeded
    queued = END + dt.timedelta(hours=1)
    first, second = (RunInfo(dag_id="train_model", run_id=f"asset_triggered__{at.isoformat()}",
                             task_id="create_dataset", logical_date=at)
                     for at in (queued + dt.timedelta(microseconds=70573), queued + dt.timedelta(microseconds=742270)))
    assert first.run_key != second.run_key and first.run_key < second.run_key
    assert first.run_key.startswith(queued.strftime("%Y%m%dT%H%M%S"))
    assert RunInfo(logical_date=queued).run_key == queued.strftime("%Y%m%dT%H%M%S")  # scheduled: short form

    code, one = execute("create_dataset", config=config, run=first, params={"model": "als"})
    assert code == EXIT_OK, one.get("error")
    snap_rel = config.dataset_path("activity_snapshot", interval_key=END.strftime("%Y%m%dT%H"))
    old = lake.require(snap_rel)
    with lake.open(old, old.files[0].path) as fh:
        table = pq.read_table(fh)
    rebuilt = table.slice(0, table.num_rows // 2)  # the rebuilt snapshot: a different table at the same key
    stage = lake.stage("activity_snapshot", snap_rel, Producer(task_id="ingest_backfill"), force=True)
    with stage.open("part-0.parquet", "wb", rows=rebuilt.num_rows) as fh:
        pq.write_table(rebuilt, fh)
    new = stage.commit({})
    assert new.revision > old.revision

    code, two = execute("create_dataset", config=config, run=second, params={"model": "als"})
    assert code == EXIT_OK, two.get("error")
    assert two["summary"].get("note") != "already committed"
    assert two["summary"]["outputs"] != one["summary"]["outputs"]
    assert one["summary"]["activity_snapshot_revision"] == old.revision
    assert two["summary"]["activity_snapshot_revision"] == new.revision
    assert two["summary"]["events_in"] < one["summary"]["events_in"]


def _continue_snapshot(config, lake: Lake, days: float = 2.0, plays_per_user: float = 8.0) -> None:
    """A later activity snapshot: the seeded events plus ``days`` more of the same planted tastes, so a
    model published on the first snapshot can be compared on plays it has not seen."""
    from skyrec.evaluation.synthetic import _draw, planted_tables

    activity, _, truth = planted_tables(end=END, n_users=400, n_items=300, plays_per_user=25, seed=5)
    rng = np.random.default_rng(99)
    rows, cols = _draw(rng, truth.user_topic, truth.item_topic, np.ones(300, bool), plays_per_user, 0.85, 8)
    ts = (END.timestamp() + rng.random(len(rows)) * days * 86400) * 1e6
    extra = pa.table({"user_id": [f"u{r:06d}" for r in rows], "item_id": [f"i{c:06d}" for c in cols],
                      "event_type": ["complete"] * len(rows),
                      "event_ts": pa.array(ts.astype(np.int64), pa.int64()).cast(pa.timestamp("us", tz="UTC")),
                      "played_seconds": pa.array(np.full(len(rows), 3600.0, np.float32))}, schema=ACTIVITY)
    later = END + dt.timedelta(days=days)
    commit_table(lake, "activity_snapshot",
                 config.dataset_path("activity_snapshot", interval_key=later.strftime("%Y%m%dT%H")),
                 pa.concat_tables([activity, extra]))


def test_gate_fails_against_a_better_published_model_on_the_same_users_then_override(seeded,
                                                                                      config_factory) -> None:
    """The published artefact is re-scored on the new split's unseen plays; a much weaker model fails."""
    config, lake, _ = seeded
    assert all(c == EXIT_OK for c, _ in train_all(config, hour=1).values())
    ptr_rel = published_model_pointer("als", "v1")
    ptr = lake.read_pointer(ptr_rel)
    _continue_snapshot(config, lake)
    weak = config_factory({**FAST, "models": {"als": {"params": {"factors": 2, "iterations": 1,
                                                                  "regularization": 50.0}}},
                           "training": {"holdout_days": 3, "quality_gate": {"must_beat_baseline": False}}})
    hour = 49  # a run two days later, on the later snapshot
    train_all(weak, hour=hour, upto="train")
    code, payload = run_job(weak, "evaluate", hour=hour)
    assert code == EXIT_GATE and payload["gate"] == "quality", payload
    assert "below the published model's" in payload["error"] and "same users and split" in payload["error"]
    rel = weak.dataset_path("evaluation", model="als", version="v1", run_key="20260303T010000")
    ev = lake.require(rel)
    assert ev.meta["gate"]["passed"] is False  # the figures are committed for the operator to judge
    figures = json.loads(lake.open(ev, "evaluation.json").read())
    cmp = figures["comparisons"]["published"]
    assert cmp["comparable"] and cmp["model_version"] == ptr["model_version"]
    assert cmp["relevant_plays_seen_by_published"] >= 0
    ndcg = cmp["ndcg_at_k"]
    assert ndcg["users"] >= 100 and ndcg["ci"][1] < 0 and ndcg["mean_b"] > ndcg["mean_a"]
    assert run_job(weak, "publish_model", hour=hour)[0] == EXIT_GATE
    assert lake.read_pointer(ptr_rel)["path"] == ptr["path"]  # unchanged

    code, payload = run_job(weak, "evaluate", hour=hour, overrides=("quality",))
    assert code == EXIT_OK, payload
    ev = lake.require(ev.path)
    assert ev.revision == 1 and ev.meta["gate"]["overridden"] is True
    code, payload = run_job(weak, "publish_model", hour=hour)
    assert code == EXIT_OK and lake.read_pointer(ptr_rel)["model_version"] == "v1.20260303T010000"


def test_a_good_model_passes_against_the_published_one(seeded) -> None:
    config, lake, _ = seeded
    assert all(c == EXIT_OK for c, _ in train_all(config, hour=1).values())
    _continue_snapshot(config, lake)
    steps = train_all(config, hour=49)
    assert all(c == EXIT_OK for c, _ in steps.values()), steps
    gate = steps["evaluate"][1]["summary"]["gate"]
    assert "vs published" in gate["message"] and gate["insufficient_evidence"] is False
    assert gate["published_comparison"]["users"] >= 100


def test_insufficient_evidence_holds_or_publishes_with_an_alert(seeded, config_factory) -> None:
    """Same snapshot an hour later, no refit: the published model has seen every test play, so nothing can be
    compared -- the configured policy decides, and says so."""
    _, lake, _ = seeded
    config = config_factory({**FAST, "training": {"holdout_days": 3, "quality_gate": {"refit_published": False}}})
    assert all(c == EXIT_OK for c, _ in train_all(config, hour=1).values())
    train_all(config, hour=2, upto="train")
    code, payload = run_job(config, "evaluate", hour=2)
    assert code == EXIT_GATE and "insufficient evidence" in payload["error"] and "'hold'" in payload["error"]
    assert "plays it has not seen" in payload["error"]

    alerting = config_factory({**FAST, "training": {"holdout_days": 3,
                                                    "quality_gate": {"insufficient_evidence": "publish_with_alert",
                                                                     "refit_published": False}}})
    code, payload = run_job(alerting, "evaluate", hour=2)  # re-decided on the committed figures
    assert code == EXIT_OK, payload
    alerts = payload["summary"]["alerts"]
    assert len(alerts) == 1 and alerts[0]["kind"] == "quality_gate" and "insufficient evidence" in alerts[0]["summary"]
    assert run_job(alerting, "publish_model", hour=2)[0] == EXIT_OK
    ptr = lake.read_pointer(published_model_pointer("als", "v1"))
    assert ptr["model_version"] == "v1.20260301T020000" and ptr["evaluation"]["gate"]["insufficient_evidence"]


def test_same_data_later_compares_with_the_published_parameters_refit_on_this_split(seeded, config_factory) -> None:
    """Same snapshot an hour later (a static data set, a changed configuration): the published artefact has
    seen every test play, so its parameters are refit on this split and both are judged on every user. A much
    weaker configuration fails against it; the same configuration passes."""
    config, lake, _ = seeded
    assert all(c == EXIT_OK for c, _ in train_all(config, hour=1).values())
    ptr_rel = published_model_pointer("als", "v1")
    ptr = lake.read_pointer(ptr_rel)
    weak = config_factory({**FAST, "models": {"als": {"params": {"factors": 2, "iterations": 1,
                                                                  "regularization": 50.0}}},
                           "training": {"holdout_days": 3, "quality_gate": {"must_beat_baseline": False}}})
    train_all(weak, hour=2, upto="train")
    code, payload = run_job(weak, "evaluate", hour=2)
    assert code == EXIT_GATE and payload["gate"] == "quality", payload
    assert "below the published model's" in payload["error"] and "its parameters refit on this split" in payload["error"]
    ev = lake.require(weak.dataset_path("evaluation", model="als", version="v1", run_key="20260301T020000"))
    cmp = json.loads(lake.open(ev, "evaluation.json").read())["comparisons"]["published"]
    assert cmp["refit"] is True and cmp["model_version"] == ptr["model_version"]
    assert cmp["params"]["factors"] == dict(config.models["als"].params)["factors"]  # the published parameters
    assert cmp["artefact"]["ndcg_at_k"]["users"] < 100  # why it refit: the artefact had seen the test plays
    ndcg = cmp["ndcg_at_k"]
    assert ndcg["users"] >= 100 and ndcg["ci"][1] < 0 and ndcg["mean_b"] > ndcg["mean_a"]
    assert lake.read_pointer(ptr_rel)["path"] == ptr["path"]

    steps = train_all(config, hour=3)  # the published configuration again: no worse than itself
    assert all(c == EXIT_OK for c, _ in steps.values()), steps
    gate = steps["evaluate"][1]["summary"]["gate"]
    assert gate["insufficient_evidence"] is False and "its parameters refit on this split" in gate["message"]
    assert gate["published_comparison"]["users"] >= 100


def test_too_few_users_is_insufficient_evidence_not_a_verdict(seeded, config_factory) -> None:
    config, lake, _ = seeded
    assert all(c == EXIT_OK for c, _ in train_all(config, hour=1).values())  # a published model, same data
    strict = config_factory({**FAST, "training": {"holdout_days": 3, "eval_max_users": 100_000,
                                                  "quality_gate": {"min_users": 100_000}}})
    train_all(strict, hour=2, upto="train")
    code, payload = run_job(strict, "evaluate", hour=2)
    assert code == EXIT_GATE
    assert "insufficient evidence: only 400 evaluable users (training.quality_gate.min_users: 100000)" \
        in payload["error"]
    # too few evaluable users: refitting the published parameters could not make a verdict, so it is not done
    ev = lake.require(strict.dataset_path("evaluation", model="als", version="v1", run_key="20260301T020000"))
    published = json.loads(lake.open(ev, "evaluation.json").read())["comparisons"]["published"]
    assert published["comparable"] is True and "refit" not in published
    # re-deciding under a min_users that 400 users meet would need that refit: refused, not decided on 0 users
    code, payload = run_job(config_factory({**FAST, "training": {"holdout_days": 3, "eval_max_users": 100_000}}),
                            "evaluate", hour=2)
    assert code == EXIT_BAD_INPUT and "its parameters were not refit on this split" in payload["error"], payload


@pytest.mark.parametrize("damage", ["removed", "truncated"])
def test_refuses_recorded_figures_from_another_protocol(seeded, damage: str) -> None:
    """When the published artefact cannot be re-scored (a file gone, or cut short: not a zip any more), its
    recorded figures are not compared: the gate names both protocols and applies the policy."""
    config, lake, _ = seeded
    assert all(c == EXIT_OK for c, _ in train_all(config, hour=1).values())
    ptr_rel = published_model_pointer("als", "v1")
    ptr = lake.read_pointer(ptr_rel)
    assert ptr["evaluation"]["protocol"]["split"]["kind"] == "per_user"
    old = {**ptr["evaluation"]["protocol"], "split": {"kind": "global", "holdout_days": 30}}
    lake.write_pointer(ptr_rel, {**ptr, "evaluation": {**ptr["evaluation"], "protocol": old, "ndcg_at_k": 0.99}})
    model = lake.require(ptr["path"])
    import os

    factors = lake.file_url(model, "factors.npz")
    if damage == "removed":
        os.remove(factors)  # the artefact can no longer be re-scored
    else:
        with open(factors, "r+b") as fh:
            fh.truncate(1000)
    _continue_snapshot(config, lake)
    train_all(config, hour=49, upto="train")
    code, payload = run_job(config, "evaluate", hour=49)
    assert code == EXIT_GATE
    assert "refusing to compare figures from different protocols" in payload["error"]
    assert "'global'" in payload["error"] and "'per_user'" in payload["error"]
    assert ("BadZipFile" in payload["error"]) == (damage == "truncated")


def test_gate_fails_when_the_baseline_is_not_beaten(seeded, config_factory) -> None:
    """Swap roles: popularity trained and gated against ALS as the baseline cannot beat it."""
    _, lake, _ = seeded
    swapped = config_factory({**FAST, "training": {"holdout_days": 3, "baseline": "als"}})
    for job in ("create_dataset", "train"):
        assert run_job(swapped, job, params={"model": "popularity"})[0] == EXIT_OK
    code, payload = run_job(swapped, "evaluate", params={"model": "popularity"})
    assert code == EXIT_GATE and "does not beat the baseline" in payload["error"]
    assert run_job(swapped, "publish_model", params={"model": "popularity"})[0] == EXIT_GATE
    assert lake.read_pointer(published_model_pointer("popularity", "v1")) is None


def test_publish_refuses_a_corrupted_artefact(seeded) -> None:
    config, lake, _ = seeded
    train_all(config, upto="evaluate")
    model = lake.require(config.dataset_path("model", model="als", version="v1", run_key="20260301T010000"))
    path = lake.file_url(model, "factors.npz")
    raw = bytearray(open(path, "rb").read())
    raw[-20] ^= 0xFF
    open(path, "wb").write(bytes(raw))
    code, payload = run_job(config, "publish_model")
    assert code == EXIT_ERROR and "checksum" in payload["error"]
    assert lake.read_pointer(published_model_pointer("als", "v1")) is None


def _rewrite_committed(lake: Lake, model, name: str, data: bytes) -> None:
    """Replace a committed file and record its new size and checksum in the manifest, as a hand edit of the
    lake would: only the content can tell."""
    import hashlib

    Path(lake.file_url(model, name)).write_bytes(data)
    entry = model.file(name)
    entry.size, entry.sha256 = len(data), hashlib.sha256(data).hexdigest()
    Path(lake.abspath(f"{model.path}/_manifest/{model.revision:06d}.json")).write_text(model.to_json())


@pytest.mark.parametrize("name", ["factors.npz", "model.npz"])
def test_publish_refuses_a_non_finite_artefact_as_bad_input(seeded, name: str) -> None:
    """An artefact whose checksums match but whose factors hold NaN (``NonFiniteError`` on load) is bad input:
    failed, not retried (a retry reads the same bytes), nothing published, the loader's message kept."""
    import io

    config, lake, _ = seeded
    train_all(config, upto="evaluate")
    model = lake.require(config.dataset_path("model", model="als", version="v1", run_key="20260301T010000"))
    with np.load(lake.file_url(model, name)) as z:
        arrays = {k: z[k] for k in z.files}
    arrays["item_factors"][1, 0] = np.nan
    buf = io.BytesIO()
    np.savez(buf, **arrays)
    _rewrite_committed(lake, model, name, buf.getvalue())
    lake.verify(lake.require(model.path), checksums=True)  # the tampering is invisible to the checksums
    code, payload = run_job(config, "publish_model")
    assert code == EXIT_BAD_INPUT and payload["error_kind"] == "BadInput", (code, payload["error_kind"], payload["error"])
    assert payload["error"].startswith(f"{model.path}/{name}: non-finite values in item_factors: 1 of "), payload
    assert "refusing to load a model that would rank items on NaN" in payload["error"]
    assert lake.read_pointer(published_model_pointer("als", "v1")) is None


def test_publish_needs_the_evaluation(seeded) -> None:
    config, lake, _ = seeded
    train_all(config, upto="train")
    code, payload = run_job(config, "publish_model")
    assert code == EXIT_ERROR and payload["error_kind"] == "not_ready" and "evaluation" in payload["error"]


def test_version_must_be_known(seeded) -> None:
    config, _, _ = seeded
    code, payload = run_job(config, "train", params={"version": "v9"})
    assert code == EXIT_BAD_INPUT and "v9" in payload["error"]


def test_a_rerun_from_changed_settings_is_refused_not_passed_off_as_the_old_output(seeded, config_factory) -> None:
    """A logical date that ran is re-run after the config changed (the split, a parameter, the gate's metric):
    the committed model and evaluation are of the old settings. Returning them as "already committed" would
    print the old figures as this configuration's; the step refuses, naming what changed and the ways on. The
    same settings stay a no-op."""
    config, lake, _ = seeded
    assert all(c == EXIT_OK for c, _ in train_all(config, hour=1).values())
    assert run_job(config, "train")[1]["summary"]["note"] == "already committed"
    assert run_job(config, "evaluate")[1]["summary"]["note"] == "already committed"

    split = config_factory({**FAST, "training": {"holdout_days": 3, "split": {"kind": "global"}}})
    assert run_job(split, "create_dataset")[0] == EXIT_OK  # another definition: another dataset
    code, payload = run_job(split, "train")
    assert code == EXIT_BAD_INPUT, payload
    assert "committed already" in payload["error"] and "from other settings" in payload["error"]
    assert 'dataset_definition.split.kind: committed "per_user", now "global"' in payload["error"]
    assert "dataset: committed" in payload["error"] and '--conf \'{"force": true}\'' in payload["error"]

    searching = config_factory({**FAST, "training": {"holdout_days": 3, "search": {"enabled": True, "models": ["als"],
                                                                                  "n_trials": 2}}}, rails="als")
    code, payload = run_job(searching, "train")  # a search that was off: one difference, not one per setting
    assert code == EXIT_BAD_INPUT and "search_settings: committed null, now {" in payload["error"]
    assert "search_settings." not in payload["error"]
    threads = config_factory({**FAST, "models": {"als": {"params": {"factors": 16, "iterations": 6, "num_threads": 1}}}})
    assert run_job(threads, "train")[1]["summary"]["note"] == "already committed"  # how it runs: not a setting
    params = config_factory({**FAST, "models": {"als": {"params": {"factors": 8, "iterations": 6}}}})
    code, payload = run_job(params, "train")
    assert code == EXIT_BAD_INPUT and "configured_params.factors: committed 16, now 8" in payload["error"]

    metric = config_factory({**FAST, "training": {"holdout_days": 3, "quality_gate": {"metric": "recall_at_k"}}})
    code, payload = run_job(metric, "evaluate")
    assert code == EXIT_BAD_INPUT and 'metric: committed "ndcg_at_k", now "recall_at_k"' in payload["error"]
    code, payload = run_job(metric, "evaluate", force=True)  # the way on it names: evaluated again
    assert code == EXIT_OK and payload["summary"]["gate"]["metric"] == "recall_at_k"


def test_a_redecision_under_another_tolerance_is_refused(seeded, config_factory) -> None:
    """The committed comparison with the published model tested new > 0.95 x published; re-deciding (after a
    failed gate) under tolerance 0.9 would quote that interval for another question."""
    config, lake, _ = seeded
    assert all(c == EXIT_OK for c, _ in train_all(config, hour=1).values())
    _continue_snapshot(config, lake)
    weak = config_factory({**FAST, "models": {"als": {"params": {"factors": 2, "iterations": 1,
                                                                  "regularization": 50.0}}},
                           "training": {"holdout_days": 3, "quality_gate": {"must_beat_baseline": False}}})
    train_all(weak, hour=49, upto="train")
    assert run_job(weak, "evaluate", hour=49)[0] == EXIT_GATE
    loose = config_factory({**FAST, "models": {"als": {"params": {"factors": 2, "iterations": 1,
                                                                   "regularization": 50.0}}},
                            "training": {"holdout_days": 3, "quality_gate": {"must_beat_baseline": False,
                                                                             "tolerance": 0.9}}})
    code, payload = run_job(loose, "evaluate", hour=49)
    assert code == EXIT_BAD_INPUT, payload
    assert "tested new > 0.95 x published" in payload["error"] and "tolerance is now 0.9" in payload["error"]
    code, payload = run_job(loose, "evaluate", hour=49, force=True)  # compared again, at 0.9
    assert code == EXIT_GATE and "by more than 90%" in payload["error"] and "new - 0.1 x published" in payload["error"]


def test_a_model_trained_again_after_its_evaluation_is_not_published(seeded) -> None:
    """``train --force`` (or a search turned on) after the evaluation commits a new revision of the model at the
    same path: its figures were never measured and the gate never saw it. publish_model refuses, naming both
    revisions and the way on; evaluate, re-run without force, refuses to pass the old figures off as this
    model's; evaluated again, it publishes."""
    config, lake, _ = seeded
    assert all(c == EXIT_OK for c, _ in train_all(config, upto="evaluate").values())
    code, payload = run_job(config, "train", force=True)
    assert code == EXIT_OK, payload.get("error")
    model = lake.manifest(payload["summary"]["outputs"][0])
    assert model.revision == 1
    code, payload = run_job(config, "publish_model")
    assert code == EXIT_BAD_INPUT, payload
    assert "was trained again (revision 1" in payload["error"] and "was never evaluated" in payload["error"]
    assert "skyrec job evaluate --param model=als" in payload["error"] and "--force" in payload["error"]
    assert lake.read_pointer(published_model_pointer("als", "v1")) is None  # nothing published
    code, payload = run_job(config, "evaluate")
    assert code == EXIT_BAD_INPUT and "model_commit: committed" in payload["error"], payload
    assert run_job(config, "evaluate", force=True)[0] == EXIT_OK
    code, payload = run_job(config, "publish_model")
    assert code == EXIT_OK, payload.get("error")
    assert lake.read_pointer(published_model_pointer("als", "v1"))["path"] == model.path


def test_an_evaluation_from_before_the_commit_was_recorded_is_stale_when_the_model_is_newer(seeded) -> None:
    """Evaluations written before they recorded the model commit they measured: the model committed after the
    evaluation is a later revision, refused the same way."""
    config, lake, _ = seeded
    assert all(c == EXIT_OK for c, _ in train_all(config, upto="evaluate").values())
    evaluation_path = run_job(config, "evaluate")[1]["summary"]["outputs"][0]
    manifest_file = next(Path(lake.abspath(evaluation_path)).glob("_manifest/*.json"))
    raw = json.loads(manifest_file.read_text())
    for key in ("model_commit", "model_revision"):
        raw["meta"].pop(key)
    manifest_file.write_text(json.dumps(raw))
    assert run_job(config, "publish_model")[0] == EXIT_OK  # the evaluated revision: published
    assert run_job(config, "train", force=True)[0] == EXIT_OK
    code, payload = run_job(config, "publish_model")
    assert code == EXIT_BAD_INPUT and "(of revision before it" in payload["error"], payload


@pytest.mark.parametrize("model", ["als", "knn"])
def test_a_model_fit_on_the_split_is_evaluated_as_committed_not_fit_again(seeded, config_factory, model: str,
                                                                           monkeypatch: pytest.MonkeyPatch) -> None:
    """``fit_on_all_data: false``: the artefact is the fit on the split's training part, so evaluate scores it
    as committed (one fit fewer; what is evaluated is what would be published). The figures are a refit's:
    these fits are deterministic. Fit on all data, the model is refit on the split, as before."""
    from skyrec.jobs import evaluate

    fits: list[str] = []
    real_fit = evaluate._fit_scored
    monkeypatch.setattr(evaluate, "_fit_scored", lambda instance, data: (fits.append(instance.name),
                                                                         real_fit(instance, data))[1])
    config = config_factory({**FAST, "training": {**FAST["training"], "models": [model, "popularity"],
                                                  "fit_on_all_data": False}})
    for job in ("create_dataset", "train", "evaluate"):
        code, payload = run_job(config, job, params={"model": model})
        assert code == EXIT_OK, (job, payload.get("error"))
    _, lake, _ = seeded
    run_key = (END + dt.timedelta(hours=1)).strftime("%Y%m%dT%H%M%S")
    ev = lake.require(f"evaluations/{model}/v1/run={run_key}")
    figures = json.loads(lake.open(ev, "evaluation.json").read())
    assert figures["scored"] == "committed artefact" and fits == ["popularity"]
    trained = lake.require(f"models/{model}/v1/run={run_key}")
    assert figures["fit_seconds"][model] == pytest.approx(trained.meta["fit_seconds"])

    monkeypatch.setattr(evaluate, "_artefact_scored", lambda *a: None)  # the earlier way: fit again
    code, payload = run_job(config, "evaluate", params={"model": model}, force=True)
    assert code == EXIT_OK, payload.get("error")
    refit = json.loads(lake.open(lake.require(f"evaluations/{model}/v1/run={run_key}"), "evaluation.json").read())
    assert refit["scored"] == "refit on the split's training part" and fits == ["popularity", model, "popularity"]
    for metric in ("ndcg_at_k", "recall_at_k"):
        assert figures["overall"][metric] == pytest.approx(refit["overall"][metric], abs=1e-6)
