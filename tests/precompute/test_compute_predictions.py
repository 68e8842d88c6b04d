"""compute_predictions end to end on a synthetic lake: exact results under the rules, RESP shards that load
into a real redis-server and read back equal to the Parquet."""

from __future__ import annotations

import datetime as dt
import json
import re

import numpy as np
import pyarrow.parquet as pq
import pytest
import synth

from skyrec.data.lakeio import file_url
from skyrec.jobs.base import RunInfo, execute
from skyrec.publish.codec import ITEM_TABLE_FIELD, decode_value, parse_table
from skyrec.publish.keys import Keys
from skyrec.publish.resp import load_files
from skyrec.scoring.topk import reference_topk
from skyrec.storage import Lake

RUN = RunInfo(dag_id="precompute_recommendations_als_comedy_featured_v1", run_id="r1", task_id="compute_predictions",
              logical_date=synth.AT)


def _expected(s: synth.Synth, genre: str, k: int, cap: int) -> dict[str, list[str]]:
    """Independent brute force: candidates by hand (genre, available, News age rule), then the spec."""
    cand = [j for j in range(len(s.item_ids))
            if genre in s.catalogue.column("genres")[j].as_py() and s.item_ids[j] not in s.unavailable
            and not ("News" in s.catalogue.column("genres")[j].as_py() and j % 5 > 2)]
    brand_names = [s.catalogue.column("brand_id")[j].as_py() for j in cand]
    codes = {b: i for i, b in enumerate(sorted({b for b in brand_names if b}))}
    brands = np.array([codes[b] if b else -1 for b in brand_names], dtype=np.int32)
    excl = s.seen[:, cand]
    out = {}
    ref = reference_topk(s.U, s.V[cand], k, exclude=excl.tocsr(), brands=brands, max_per_brand=cap)
    for u, rec in enumerate(ref):
        if rec and s.user_ids[u] != "bad user/id":
            out[s.user_ids[u]] = [s.item_ids[cand[j]] for j, _ in rec]
    return out


def _read_scores(lake: Lake, manifest) -> dict[str, list[float]]:
    got: dict[str, list[float]] = {}
    for f in manifest.files:
        if f.path.endswith(".parquet"):
            for row in pq.read_table(lake.abspath(f"{manifest.path}/{f.path}")).sort_by(
                    [("user_id", "ascending"), ("rank", "ascending")]).to_pylist():
                got.setdefault(row["user_id"], []).append(row["score"])
    return got


def _read_predictions(lake: Lake, manifest) -> dict[str, list[str]]:
    got: dict[str, list[str]] = {}
    for f in manifest.files:
        if f.path.endswith(".parquet"):
            for row in pq.read_table(lake.abspath(f"{manifest.path}/{f.path}")).sort_by(
                    [("user_id", "ascending"), ("rank", "ascending")]).to_pylist():
                got.setdefault(row["user_id"], []).append(row["item_id"])
    return got


@pytest.mark.integration
@pytest.mark.parametrize(("engine", "encoding"), [("local", "json"), ("local", "packed"), ("beam", "packed")])
def test_compute_predictions_exact_and_loadable(config_factory, redis_client, engine: str, encoding: str) -> None:
    overrides = {"precompute": {"engine": engine, "k": 10, "batch_size": 64, "sub_batch": 16, "shard_users": 128,
                                "threads": 2, "rules": {"max_per_brand": 2, "max_age_days": {"News": 2}},
                                "direct_num_workers": 2, "direct_running_mode": "multi_processing",
                                "users_sample": 100},
                 "publish": {"encoding": encoding}}
    cfg = config_factory(overrides)
    s = synth.build(cfg)
    code, payload = execute("compute_predictions", config=cfg, run=RUN, params={"variant": "comedy_featured"})
    assert code == 0, payload
    lake = Lake.from_config(cfg)
    m = lake.require(payload["summary"]["outputs"][0])
    meta = m.meta
    assert meta["invalid_users"] == 1 and m.quarantine == {"invalid_user_id": 1}
    assert meta["encoding"] == encoding and meta["score_decimals"] == 5
    assert meta["users"] == 299 and meta["users_with_recs"] == 298  # user 5 saw everything: no key
    assert len(meta["resp_files"]) == 1 + 3  # meta + 3 shards of 128 users
    # the candidates' counts are of the catalogue's items, not of the entity tables committed beside them
    comedy = {i for i, g in zip(s.catalogue.column("item_id").to_pylist(), s.catalogue.column("genres").to_pylist(),
                                strict=True) if "Comedy" in g}
    counts = meta["candidates"]
    assert counts["catalogue_items"] == s.catalogue.num_rows == 400
    assert counts["filter_excluded"] == 400 - len(comedy) and counts["unavailable"] == len(comedy & s.unavailable)
    assert counts["not_in_model"] == 0

    want = _expected(s, "Comedy", 10, 2)
    got = _read_predictions(lake, m)
    assert got == want
    assert "u000005" not in got

    # the RESP files load into a real redis-server and read back equal to the Parquet
    pool = redis_client.connection_pool.connection_kwargs
    files = [file_url(lake, m, n) for n in meta["resp_files"]]
    res = load_files(pool["host"], pool["port"], files, expected=meta["commands"])
    assert res.commands == meta["commands"] and res.errors == 0
    assert redis_client.dbsize() == meta["keys"]
    keys = Keys(cfg.publish.key_prefix)
    pub = meta["publication"]
    assert re.fullmatch(r"v1\.20260301T120000-[0-9a-f]{8}", pub)  # run key + this attempt's nonce
    raw_table = redis_client.hget(keys.items("comedy_featured", pub), ITEM_TABLE_FIELD)
    table = parse_table(raw_table) if encoding == "packed" else None
    assert (raw_table is None) == (encoding == "json")
    scores = _read_scores(lake, m)
    for user, items in list(want.items())[:40]:
        raw = redis_client.get(keys.rec("comedy_featured", pub, user))
        assert raw[:1] == (b"\x01" if encoding == "packed" else b"[")
        value = decode_value(raw, table)
        assert [i for i, _ in value] == items
        assert [s for _, s in value] == [round(float(x), 5) for x in scores[user]]
    assert redis_client.get(keys.rec("comedy_featured", pub, "u000005")) is None
    fallback = json.loads(redis_client.get(keys.fallback("comedy_featured", pub)))
    assert fallback and all("Comedy" in json.loads(redis_client.hget(keys.items("comedy_featured", pub), i))["genres"]
                            for i, _ in fallback)
    referenced = {i for items in want.values() for i in items} | {i for i, _ in fallback}
    table_field = {ITEM_TABLE_FIELD} if encoding == "packed" else set()
    assert {k.decode() for k in redis_client.hkeys(keys.items("comedy_featured", pub))} == referenced | table_field
    # the users set (the explorer's "random user") holds precompute.users_sample users with a list
    sampled = {u.decode() for u in redis_client.smembers(keys.users("comedy_featured", pub))}
    assert len(sampled) == 100 and sampled <= set(want)

    # re-running is a no-op
    code, again = execute("compute_predictions", config=cfg, run=RUN, params={"variant": "comedy_featured"})
    assert code == 0 and again["summary"]["note"] == "already committed"


def test_a_run_reads_the_inputs_of_its_own_time(config_factory) -> None:
    """A lake holding a later data set too (the sample data of `make demo`, dated today, beside a user's own
    files dated years before; or a re-run of an old run): each run reads the newest catalogue, availability
    and cold start at or before its logical time, never a later run's."""
    import pyarrow as pa

    from skyrec.data.schemas import AVAILABILITY, COLD_START

    cfg = config_factory({"precompute": {"k": 5, "threads": 1,
                                         "rules": {"max_per_brand": 2, "max_age_days": {"News": 2}}}})
    s = synth.build(cfg, bad_user=False)
    later_key = "20261202T020000"
    later = s.catalogue.set_column(s.catalogue.schema.get_field_index("genres"), "genres",
                                   pa.array([["Science"]] * s.catalogue.num_rows, type=s.catalogue["genres"].type))
    lake = Lake.from_config(cfg)
    synth._write(lake, "catalogue", cfg.dataset_path("catalogue", run_key=later_key), "catalogue.parquet", later,
                 beside=synth.entity_tables(later))
    synth._write(lake, "availability", cfg.dataset_path("availability", run_key=later_key), "availability.parquet",
                 pa.table({"item_id": s.item_ids[:1].tolist(), "available_from": [synth.AT],
                           "available_until": [None]}, schema=AVAILABILITY))
    synth._write(lake, "cold_start", cfg.dataset_path("cold_start", run_key=later_key), "cold_start.parquet",
                 pa.table({"variant": ["comedy_featured"], "rank": [0], "item_id": ["i00001"], "score": [1.0]},
                          schema=COLD_START))

    code, payload = execute("compute_predictions", config=cfg, run=RUN, params={"variant": "comedy_featured"})
    assert code == 0, payload
    m = lake.require(payload["summary"]["outputs"][0])
    assert m.meta["candidates"]["catalogue_items"] == 400 and m.meta["candidates"]["candidates"] > 0
    assert _read_predictions(lake, m) == _expected(s, "Comedy", 5, 2)

    # a run after the later data set reads it: no Comedy there, a clear error naming the variant's candidates
    after = RunInfo(dag_id=RUN.dag_id, run_id="r2", task_id=RUN.task_id,
                    logical_date=dt.datetime(2026, 12, 2, 3, tzinfo=dt.UTC))
    code, payload = execute("compute_predictions", config=cfg, run=after, params={"variant": "comedy_featured"})
    assert code != 0 and "no candidates" in payload["error"], payload


def test_missing_model_is_not_ready_yet(config_factory) -> None:
    """Upstream not committed yet (DAGs start in any order under the scheduler): a retryable failure."""
    cfg = config_factory()
    code, payload = execute("compute_predictions", config=cfg, run=RUN, params={"variant": "comedy_featured"})
    assert code == 1 and payload["error_kind"] == "not_ready" and "no published model" in payload["error"]


def test_batches_bound_memory(config_factory) -> None:
    """Peak memory of a shard does not grow with the number of users (it is set by the batch size)."""
    import tracemalloc

    from skyrec.scoring.engine import PrecomputeSpec, Scorer

    cfg = config_factory()
    lake = Lake.from_config(cfg)
    peaks = []
    for n_users in (400, 3200):
        s = synth.build(cfg, n_users=n_users, n_items=3000, version=f"m{n_users}", bad_user=False)
        out = lake.abspath(f"scratch/{n_users}")
        spec = PrecomputeSpec(variant="recommended_for_you", publication="m.1", lake_url=cfg.lake_url,
                              model_path=s.model_path, catalogue_path="catalogue/snapshot=20260301T100000",
                              out_dir=out, at=dt.datetime(2026, 3, 1, 12, tzinfo=dt.UTC).isoformat(),
                              k=20, max_per_brand=2, batch_size=200, sub_batch=50)
        scorer = Scorer.from_spec(spec)
        tracemalloc.start()
        res = scorer.run_shard(0, 0, n_users)
        peaks.append(tracemalloc.get_traced_memory()[1])
        tracemalloc.stop()
        assert res.users == n_users
    full_matrix = 3200 * 3000 * 4
    assert peaks[1] < 2 * peaks[0] + (1 << 20), peaks
    assert peaks[1] < full_matrix / 4, peaks
