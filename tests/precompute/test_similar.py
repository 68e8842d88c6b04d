""""More like this" in the precompute: every model item scored as a seed through the model contract, with the
same kernel and rules as the users (seed excluded, availability, age rule, brand cap), written as ``sim`` keys
of the same publication, counted in its key count, proven after the load, and switched with it."""

from __future__ import annotations

import datetime as dt
import json
import re

import numpy as np
import pyarrow.parquet as pq
import pytest
import redis
import scipy.sparse as sp
import synth

from skyrec.data.lakeio import file_url
from skyrec.jobs.base import RunInfo, execute
from skyrec.models.als import ALSModel
from skyrec.models.base import Recommender
from skyrec.models.ease import EASEModel
from skyrec.models.knn import ItemKNNModel
from skyrec.models.representations import scores as contract_product
from skyrec.publish import current
from skyrec.publish.codec import ITEM_TABLE_FIELD, decode_value, parse_table
from skyrec.publish.keys import Keys, parse_also
from skyrec.publish.resp import load_files
from skyrec.scoring.topk import reference_topk
from skyrec.storage import Lake

pytestmark = pytest.mark.integration
VARIANT = "comedy_featured"


def _run(hour: int = 0) -> RunInfo:
    return RunInfo(dag_id=f"precompute_recommendations_ease_{VARIANT}_v1", run_id=f"r{hour}",
                   task_id="compute_predictions", logical_date=synth.AT + dt.timedelta(hours=hour))


def _job(name: str, cfg, hour: int = 0) -> dict:
    code, payload = execute(name, config=cfg, run=_run(hour), params={"variant": VARIANT})
    assert code == 0, payload.get("traceback") or payload.get("error")
    return payload["summary"]


def _with_model_state(cfg, s: synth.Synth, kind: str = "ease") -> Recommender:
    """Re-commit the synthetic model as a real model whose model.json names its class, and publish it:
    EASE fitted on the synthetic plays, or ALS holding the synthetic factors."""
    model: Recommender
    if kind == "ease":
        model = EASEModel(regularization=20.0).fit(s.seen)
    elif kind == "knn":  # few neighbours: most seeds have fewer than k items they share a listener with
        model = ItemKNNModel(similarity="cosine", neighbours=4, series_weight=0.0, num_threads=1).fit(s.seen)
    else:
        model = ALSModel()
        model._set_factors(s.U, s.V)
    synth.publish_model(cfg, s, model)
    return model


def _expected(s: synth.Synth, model: Recommender, k: int, cap: int,
              measure: str = "dot") -> dict[str, list[tuple[str, float]]]:
    """Independent brute force: the rail's candidates by hand, then the specification over the model's
    item-item scores (EASE: its weights B, whatever the measure; ALS: V V^T, where an item is its own best
    match, or with ``cosine`` the same over the rows of V at unit length) with the seed itself excluded,
    cut at the first score that is not positive (a seed left with nothing has no list)."""
    genres = s.catalogue.column("genres").to_pylist()
    cand = [j for j in range(len(s.item_ids)) if "Comedy" in genres[j] and s.item_ids[j] not in s.unavailable
            and not ("News" in genres[j] and j % 5 > 2)]
    names = [s.catalogue.column("brand_id")[j].as_py() for j in cand]
    codes = {b: i for i, b in enumerate(sorted({b for b in names if b}))}
    brands = np.array([codes[b] if b else -1 for b in names], dtype=np.int32)
    V = model.item_representations()
    if isinstance(model, EASEModel):
        S = V.T  # S[i, j]: how much j is like i
    elif isinstance(model, ItemKNNModel):  # the contract's product: a seed's one-hot row against its neighbours
        S = np.asarray(contract_product(type(model).item_queries(V, np.arange(len(s.item_ids))), V))
    else:
        W = V / np.linalg.norm(V, axis=1, keepdims=True) if measure == "cosine" else V
        S = W @ W.T
    eye = np.eye(len(cand), dtype=np.float32)
    pos = {j: c for c, j in enumerate(cand)}
    out = {}
    for i in range(len(s.item_ids)):
        excl = np.zeros((1, len(cand)), dtype=np.int8)
        if i in pos:
            excl[0, pos[i]] = 1
        ref = reference_topk(S[i:i + 1, cand], eye, k, exclude=sp.csr_matrix(excl), brands=brands,
                             max_per_brand=cap)[0]
        ref = [(j, v) for j, v in ref if v > 0]  # only what is like the seed: a positive similarity
        if ref:
            out[s.item_ids[i]] = [(s.item_ids[cand[j]], v) for j, v in ref]
    return out


@pytest.mark.parametrize(("kind", "encoding", "measure"), [("ease", "packed", "dot"), ("als", "json", "dot"),
                                                         ("als", "packed", "cosine"), ("ease", "json", "cosine"),
                                                         ("knn", "packed", "dot")])
def test_similar_lists_are_exact_under_the_rules_and_load_with_the_publication(config_factory, redis_client,
                                                                                 kind: str, encoding: str,
                                                                                 measure: str) -> None:
    cfg = config_factory({"precompute": {"k": 10, "similar_k": 6, "batch_size": 64, "shard_users": 150, "threads": 2,
                                         "rules": {"max_per_brand": 2, "max_age_days": {"News": 2}},
                                         "similar_measure": measure},
                          "publish": {"encoding": encoding}})
    s = synth.build(cfg, bad_user=False)
    model = _with_model_state(cfg, s, kind)
    out = _job("compute_predictions", cfg)
    lake = Lake.from_config(cfg)
    m = lake.require(out["outputs"][0])
    meta = m.meta
    sim = meta["similar"]
    assert sim["k"] == 6 and sim["seeds"] == 400 and sim["invalid_seeds"] == 0
    assert sim["model_class"] == f"skyrec.models.{kind}:{type(model).__name__}"
    assert len(sim["resp_files"]) == 3  # 400 seeds in shards of 150
    # EASE's weights are its only measure: a configured cosine is recorded and not applied
    assert sim["measure_configured"] == measure and sim["measure"] == (measure if kind == "als" else "dot")
    want = _expected(s, model, 6, 2, sim["measure"])
    assert meta["sim_keys"] == sim["sim_keys"] == len(want) > (100 if kind == "knn" else 300)
    if kind == "knn":  # the rule is exercised: lists cut short, seeds with no list at all
        assert sum(len(v) < 6 for v in want.values()) > 50 and len(want) < 400

    # loaded as the publishers load it: the key count includes the sim keys, every value is exact
    pool = redis_client.connection_pool.connection_kwargs
    res = load_files(pool["host"], pool["port"], [file_url(lake, m, n) for n in meta["resp_files"]],
                     expected=meta["commands"])
    assert res.errors == 0 and redis_client.dbsize() == meta["keys"]
    keys = Keys(cfg.publish.key_prefix)
    pub = meta["publication"]
    table = parse_table(redis_client.hget(keys.items(VARIANT, pub), ITEM_TABLE_FIELD)) if encoding == "packed" else None
    brand_of = dict(zip(s.item_ids.tolist(), s.catalogue.column("brand_id").to_pylist(), strict=True))
    for seed, items in want.items():
        got = decode_value(redis_client.get(keys.sim(VARIANT, pub, seed)), table)
        assert [i for i, _ in got] == [i for i, _ in items], seed
        np.testing.assert_allclose([v for _, v in got], [v for _, v in items], atol=6e-6)
        assert seed not in [i for i, _ in got], "an item is never 'more like' itself"
        assert all(v > 0 for _, v in got), "only items like the seed (a positive similarity)"
        assert not {i for i, _ in got} & s.unavailable
        per_brand: dict[str, int] = {}
        for i, _ in got:
            if brand_of[i]:
                per_brand[brand_of[i]] = per_brand.get(brand_of[i], 0) + 1
        assert max(per_brand.values(), default=0) <= 2
    # the items hash names every seed (its title heads "more like X") and every similar item
    named = {k.decode() for k in redis_client.hkeys(keys.items(VARIANT, pub))}
    assert set(want) <= named and {i for items in want.values() for i, _ in items} <= named
    title_of = dict(zip(s.item_ids.tolist(), s.catalogue.column("title").to_pylist(), strict=True))
    seed = min(want)
    assert json.loads(redis_client.hget(keys.items(VARIANT, pub), seed))["title"] == title_of[seed]
    # the recorded probes are real lists of this publication
    assert sim["probes"] and all([i for i, _ in want[p]] == [i for i, _ in v] for p, v in sim["probes"].items())


def test_one_swap_switches_both_and_the_load_is_proven(config_factory, redis_server) -> None:
    cfg = config_factory({"precompute": {"k": 8, "similar_k": 5, "batch_size": 64, "shard_users": 200, "threads": 1},
                          "publish": {"redis_url": redis_server.url, "probe_users": 10}})
    s = synth.build(cfg, n_users=120, n_items=200, bad_user=False)
    _with_model_state(cfg, s)
    _job("compute_predictions", cfg)
    dump = _job("create_redis_dump", cfg)
    lake = Lake.from_config(cfg)
    dm = lake.require(dump["outputs"][0])
    assert dm.meta["similar_probes_checked"] >= 4 and dm.meta["sim_keys"] > 150
    _job("publish_predictions", cfg)
    r = redis.Redis.from_url(redis_server.url)
    try:
        keys = Keys(cfg.publish.key_prefix)
        ptr = current(r, keys, VARIANT)
        pred = lake.require(dm.meta["predictions"])
        assert ptr["similar"] == {"k": 5, "items": pred.meta["sim_keys"]}
        assert len(list(r.scan_iter(keys.sim_pattern(VARIANT, ptr["publication"]), count=1000))) == ptr["similar"]["items"]
        first = ptr["publication"]
        # a second publication switches rec and sim together; the first one's sim keys go with it
        # (keep_versions: 1 removes it at the switch)
        cfg2 = config_factory({"precompute": {"k": 8, "similar_k": 5, "batch_size": 64, "shard_users": 200,
                                              "threads": 1},
                               "publish": {"redis_url": redis_server.url, "probe_users": 10, "keep_versions": 1}})
        _job("compute_predictions", cfg2, 1)
        _job("publish_predictions", cfg2, 1)
        second = current(r, keys, VARIANT)["publication"]
        assert second != first
        assert not list(r.scan_iter(keys.sim_pattern(VARIANT, first), count=1000)), "old sim keys left behind"
        assert list(r.scan_iter(keys.sim_pattern(VARIANT, second), count=1000))
    finally:
        for key in r.scan_iter(f"{cfg.publish.key_prefix}:*", count=1000):
            r.unlink(key)
        r.close()


def test_a_sim_key_that_differs_from_the_precompute_fails_the_load(config_factory, redis_server, monkeypatch) -> None:
    """The post-condition reads probe seeds back: a wrong list in the loaded data is refused, not published."""
    from skyrec.redis_local import LocalRedis

    cfg = config_factory({"precompute": {"k": 8, "similar_k": 5, "batch_size": 64, "threads": 1},
                          "publish": {"redis_url": redis_server.url}})
    s = synth.build(cfg, n_users=60, n_items=120, bad_user=False)
    _with_model_state(cfg, s)
    _job("compute_predictions", cfg)
    real = LocalRedis.start

    def tampering(self, **kw):  # the scratch server that checks the dump: its similar lists altered once loaded
        res = real(self, **kw)
        c = redis.Redis(host=self.host, port=self.port)
        for key in c.scan_iter(match=f"{cfg.publish.key_prefix}:sim:*", count=1000):
            c.set(key, b"[]" if cfg.publish.encoding == "json" else c.get(key)[:-1])
        c.close()
        return res

    monkeypatch.setattr(LocalRedis, "start", tampering)
    code, payload = execute("create_redis_dump", config=cfg, run=_run(), params={"variant": VARIANT})
    assert code != 0 and "sim" in payload["error"], payload.get("error")


def test_disabled_or_without_a_model_class_nothing_is_written_and_the_manifest_says_why(config_factory) -> None:
    cfg = config_factory({"precompute": {"k": 5, "similar_k": 4, "threads": 1}})
    s = synth.build(cfg, n_users=50, n_items=80, bad_user=False)  # a bare artefact: no model.json
    meta = Lake.from_config(cfg).require(_job("compute_predictions", cfg)["outputs"][0]).meta
    assert meta["sim_keys"] == 0 and "no model.json" in meta["similar"]["note"]
    assert not any(f.startswith("sim/") for f in meta["resp_files"])
    _with_model_state(cfg, s)
    cfg0 = config_factory({"precompute": {"k": 5, "similar_k": 4, "threads": 1},
                           "variants": {VARIANT: {"similar_k": 0}}})
    meta0 = Lake.from_config(cfg0).require(_job("compute_predictions", cfg0, 2)["outputs"][0]).meta
    assert meta0["sim_keys"] == 0 and meta0["similar"]["note"].startswith("disabled")
    meta1 = Lake.from_config(cfg).require(_job("compute_predictions", cfg, 3)["outputs"][0]).meta
    # same users and shared keys; the differences are the sim keys and the seeds' metadata in the items hash
    assert meta1["sim_keys"] > 0 and meta1["keys"] == meta0["keys"] + meta1["sim_keys"]


def test_users_whose_item_knn_links_run_out_get_the_most_played_candidates(config_factory) -> None:
    """item-kNN scores only the items linked to a user's plays; a user with fewer linked candidates than K gets
    the rest at score 0. Those come in the order of their listeners (most played first, then item index):
    the candidates' tie order, the same in the evaluation of the rules -- not the order of their index."""
    cfg = config_factory({"precompute": {"k": 10, "similar_k": 0, "batch_size": 64, "shard_users": 150, "threads": 2,
                                         "rules": {"max_per_brand": 2, "max_age_days": {"News": 2}}}})
    s = synth.build(cfg, bad_user=False)
    _with_model_state(cfg, s, "knn")
    out = _job("compute_predictions", cfg)
    lake = Lake.from_config(cfg)
    m = lake.require(out["outputs"][0])
    rows: dict[str, list[tuple[str, float]]] = {}
    for f in m.files:
        if f.path.endswith(".parquet"):
            for r in pq.read_table(lake.abspath(f"{m.path}/{f.path}")).sort_by(
                    [("user_id", "ascending"), ("rank", "ascending")]).to_pylist():
                rows.setdefault(r["user_id"], []).append((r["item_id"], r["score"]))
    listeners = np.bincount(s.seen.indices, minlength=len(s.item_ids))
    index = {item: j for j, item in enumerate(s.item_ids.tolist())}
    tails = 0
    for user, lst in rows.items():
        zero = [index[i] for i, v in lst if v == 0]
        assert all(v > 0 for _, v in lst[: len(lst) - len(zero)]), "the linked items come first"
        if len(zero) > 1:
            tails += 1
            keys = [(-int(listeners[j]), j) for j in zero]
            assert keys == sorted(keys), (user, keys)
    assert tails > 20  # the rule is exercised


@pytest.mark.parametrize(("engine", "encoding"), [("local", "packed"), ("beam", "packed"), ("local", "json")])
def test_because_you_played_never_offers_an_item_the_user_played(config_factory, redis_server, engine: str,
                                                                 encoding: str) -> None:
    """Only a user's last plays are published (``history_items``), but "because you played X" leaves out
    everything they played: the precompute computes the lists first and names, in each history value, the
    older plays found in the lists of the recent ones, in a key of the rail's (the Beam workers read them from
    ``sim/lists.npz``), in the publication's encoding (packed: item table positions).
    Checked through the API for every user against the whole activity snapshot."""
    from fastapi.testclient import TestClient

    from skyrec.serve.main import create_app

    cfg = config_factory({"precompute": {"k": 8, "similar_k": 8, "batch_size": 64, "shard_users": 100, "threads": 1,
                                         "engine": engine},
                          "publish": {"redis_url": redis_server.url, "history_items": 3, "encoding": encoding},
                          "serve": {"redis_url": redis_server.url, "pointer_cache_seconds": 0.0,
                                    "access_log": False}})
    s = synth.build(cfg, n_users=200, n_items=150, bad_user=False, activity=True)
    _with_model_state(cfg, s)
    out = _job("compute_predictions", cfg)
    meta = Lake.from_config(cfg).require(out["outputs"][0]).meta
    assert meta["also_played"]["users"] > 30 and meta["also_played"]["lists_file"] == "sim/lists.npz"
    # the plan of this lake takes the rail's also term at the share of its users the run named
    from skyrec.plan_lake import rails_from_lake

    rail = next(r for r in rails_from_lake(cfg) if r.name == VARIANT)
    assert rail.inputs.also_share == pytest.approx(meta["also_played"]["users"] / meta["users"], abs=1e-4)
    _job("create_redis_dump", cfg)
    _job("publish_predictions", cfg)
    played: dict[str, set[str]] = {}
    for r in s.activity.to_pylist():
        played.setdefault(r["user_id"], set()).add(r["item_id"])
    older_in_lists = answered = 0
    r = redis.Redis.from_url(redis_server.url)
    try:
        keys = Keys(cfg.publish.key_prefix)
        ptr = current(r, keys, VARIANT)
        with TestClient(create_app(cfg)) as api:
            for user, mine in sorted(played.items()):
                body = api.get(f"/v1/because-you-played/{VARIANT}/{user}?limit=50").json()
                got = {i["id"] for i in body["items"]}
                assert not got & mine, (user, body["seed"], got & mine)
                answered += bool(got)
                plays = json.loads(r.get(keys.hist(ptr["activity"], user)))
                assert isinstance(plays, list)  # the plays alone: the rails of the snapshot share them
                also = r.get(keys.also(VARIANT, ptr["publication"], user))
                if also is not None:  # the older plays its seeds' lists hold, and only those: the rail's own key
                    recent = {i for i, _ in plays}
                    lists = set()
                    for seed in recent:
                        raw = r.get(keys.sim(VARIANT, ptr["publication"], seed))
                        lists |= {i for i, _ in decode_value(raw, _table(r, keys, ptr))} if raw else set()
                    assert (also[:1] == b"\x02") == (encoding == "packed"), also  # ids or item table positions
                    assert parse_also(also, _table(r, keys, ptr)) == (lists & mine) - recent, user
                    older_in_lists += 1
        assert answered > 150 and older_in_lists == meta["also_played"]["users"]
    finally:
        for key in r.scan_iter(f"{cfg.publish.key_prefix}:*", count=1000):
            r.unlink(key)
        r.close()


def _table(r: redis.Redis, keys: Keys, ptr: dict):
    raw = r.hget(keys.items(VARIANT, ptr["publication"]), ITEM_TABLE_FIELD)
    return parse_table(raw) if raw else None


def test_several_shards_take_their_histories_from_one_scan(config_factory, monkeypatch) -> None:
    """The local engine scores its shards in one process: it reads every shard's users' recent plays (and the
    listed items they played) in one scan of the activity snapshot, not one scan per shard (whose cost grows as
    shards x snapshot rows), and each shard writes exactly the history values a scan of its own would give."""
    from skyrec.scoring import engine, history

    cfg = config_factory({"precompute": {"k": 8, "similar_k": 8, "batch_size": 32, "shard_users": 45, "threads": 1},
                          "publish": {"history_items": 3}})
    s = synth.build(cfg, n_users=200, n_items=150, bad_user=True, activity=True)
    _with_model_state(cfg, s)
    scans: list[int] = []
    written: dict[str, dict[int, bytes]] = {"one scan": {}, "a scan per shard": {}}
    real_read, real_history = history.read_shard_plays, engine.Scorer._shard_history

    def read(lake, path, user_ids, n, keep_items=None):
        scans.append(len(user_ids))
        return real_read(lake, path, user_ids, n, keep_items=keep_items)

    def shard_history(self, start, end):
        data, also, counts = real_history(self, start, end)
        # the plays are in the snapshot's namespace: the same keys in both runs; the also keys are the
        # publication's, whose id differs between the runs, and so the keys' length
        written[mode][start] = data + re.sub(rb"\$\d+\r\n" + re.escape(self.also_prefix.encode()), b"<key>", also)
        return data, also, counts

    monkeypatch.setattr(history, "read_shard_plays", read)
    monkeypatch.setattr(engine.Scorer, "_shard_history", shard_history)
    mode = "one scan"
    first = _job("compute_predictions", cfg)
    assert len(scans) == 1 and scans[0] == 199  # every valid user (one id is not a valid key component)
    monkeypatch.setattr(engine.Scorer, "read_histories", lambda self, shards: None)
    mode, scans[:] = "a scan per shard", []
    code, payload = execute("compute_predictions", config=cfg, run=_run(0), params={"variant": VARIANT}, force=True)
    assert code == 0, payload.get("error")  # the same run again, its inputs the same
    assert len(scans) == 5  # 200 users in shards of 45
    assert first["hist_keys"] > 150 and written["one scan"] == written["a scan per shard"]
    assert sum(b"<key>" in v for v in written["one scan"].values()) > 0  # with older plays named
