"""create_redis_dump with a real scratch redis-server; publish_predictions into a real serving Redis with a
reader hammering it during the switch; rollback; old publications removed; Redis down -> clean failure."""

from __future__ import annotations

import datetime as dt
import json
import threading
from pathlib import Path

import pyarrow.compute as pc
import pytest
import redis
import synth

from skyrec.jobs.base import RunInfo, execute
from skyrec.models.artefact import published_predictions_pointer
from skyrec.publish import current
from skyrec.publish.keys import Keys
from skyrec.redis_local import free_port
from skyrec.storage import Lake

VARIANT = "drama_featured"
pytestmark = pytest.mark.integration


def _run(hour: int) -> RunInfo:
    return RunInfo(dag_id="precompute_recommendations_als_drama_featured_v1", run_id=f"r{hour}",
                   task_id="compute_predictions", logical_date=synth.AT + dt.timedelta(hours=hour))


def _job(name: str, cfg, hour: int) -> dict:
    code, payload = execute(name, config=cfg, run=_run(hour), params={"variant": VARIANT})
    assert code == 0, payload.get("traceback") or payload.get("error")
    return payload["summary"]


@pytest.fixture
def cfg(config_factory, redis_server):
    overrides = {"precompute": {"k": 8, "batch_size": 64, "shard_users": 100, "threads": 1},
                 "publish": {"redis_url": redis_server.url, "keep_versions": 2, "probe_users": 10}}
    c = config_factory(overrides)
    synth.build(c, n_users=250, n_items=300)
    return c


def test_redis_dump_is_verified_and_committed(cfg, tmp_path: Path) -> None:
    _job("compute_predictions", cfg, 0)
    out = _job("create_redis_dump", cfg, 0)
    lake = Lake.from_config(cfg)
    m = lake.require(out["outputs"][0])
    pred = lake.require(m.meta["predictions"])
    assert m.meta["keys"] == pred.meta["keys"] and m.meta["probes_checked"] >= 10
    lake.verify(m)
    # the RDB restores into a fresh server with the same keys
    rdb = Path(lake.abspath(f"{m.path}/{m.file('dump.rdb').path}")).read_bytes()
    assert synth.restored_key_count(rdb, tmp_path / "restore") == pred.meta["keys"]
    # no scratch server left behind
    assert not list(Path(cfg.state_dir).rglob("redis-*.pid"))


def test_versioned_publish_switch_rollback_cleanup(cfg, redis_client) -> None:
    keys = Keys(cfg.publish.key_prefix)
    lake = Lake.from_config(cfg)
    pubs = []
    errors: list[str] = []
    stop = threading.Event()
    seen_pubs: set[str] = set()

    def reader() -> None:
        """What the API does: read the pointer, then only that publication's keys. Never missing, never mixed."""
        c = redis.Redis.from_url(cfg.publish.redis_url)
        user = "u000010"
        while not stop.is_set():
            ptr = c.get(keys.current(VARIANT))
            if ptr is None:
                continue
            pub = json.loads(ptr)["publication"]
            seen_pubs.add(pub)
            rec, fb = c.mget(keys.rec(VARIANT, pub, user), keys.fallback(VARIANT, pub))
            items = c.exists(keys.items(VARIANT, pub))
            if rec is None or fb is None or not items:
                # the only legal reason: this publication was removed after a newer one was switched in
                if json.loads(c.get(keys.current(VARIANT)))["publication"] == pub:
                    errors.append(f"missing data of current publication {pub}")
        c.close()

    for hour in range(4):
        _job("compute_predictions", cfg, hour)
        if hour == 1:
            t = threading.Thread(target=reader, daemon=True)
            t.start()
        out = _job("publish_predictions", cfg, hour)
        pubs.append(out["publication"])
        ptr = current(redis_client, keys, VARIANT)
        assert ptr["publication"] == out["publication"]
        lake_ptr = lake.read_pointer(published_predictions_pointer(VARIANT))
        assert lake_ptr["publication"] == out["publication"] and lake.committed(lake_ptr["path"])
    stop.set()
    t.join(5)
    assert not errors, errors[:3]
    assert len(seen_pubs) >= 2
    # only keep_versions (2) publications remain loaded; the older ones are gone
    for old in pubs[:2]:
        assert not redis_client.exists(keys.fallback(VARIANT, old))
        assert not list(redis_client.scan_iter(match=keys.rec_pattern(VARIANT, old), count=1000))
    assert redis_client.exists(keys.fallback(VARIANT, pubs[2]))
    # re-publishing the current one is a no-op
    assert _job("publish_predictions", cfg, 3)["note"] == "already current"
    # rollback (the job, and the core function the API calls)
    out = _job("rollback_publication", cfg, 3)
    assert (out["from"], out["to"]) == (pubs[3], pubs[2])
    assert current(redis_client, keys, VARIANT)["publication"] == pubs[2]
    assert lake.read_pointer(published_predictions_pointer(VARIANT))["publication"] == pubs[2]
    from skyrec.publish import rollback

    with pytest.raises(LookupError):
        rollback(redis_client, keys, VARIANT)  # the only older one was removed: nothing to go back to
    assert current(redis_client, keys, VARIANT)["publication"] == pubs[2]


def test_redis_down_fails_cleanly_with_pointer_unchanged(cfg, config_factory, redis_client) -> None:
    keys = Keys(cfg.publish.key_prefix)
    _job("compute_predictions", cfg, 0)
    _job("publish_predictions", cfg, 0)
    before = current(redis_client, keys, VARIANT)
    _job("compute_predictions", cfg, 1)
    down = config_factory({"precompute": {"k": 8, "batch_size": 64, "shard_users": 100, "threads": 1},
                           "publish": {"redis_url": f"redis://127.0.0.1:{free_port()}/0"}})
    code, payload = execute("publish_predictions", config=down, run=_run(1), params={"variant": VARIANT})
    assert code == 1, payload
    assert "RedisUnavailableError" in payload["error"] and "retryable" in payload["error"], payload["error"]
    assert current(redis_client, keys, VARIANT) == before
    lake = Lake.from_config(cfg)
    assert lake.read_pointer(published_predictions_pointer(VARIANT))["publication"] == before["publication"]


def test_swapdb_strategy(config_factory, redis_server, redis_client) -> None:
    overrides = {"precompute": {"k": 8, "batch_size": 64, "shard_users": 100, "threads": 1},
                 "publish": {"redis_url": redis_server.url, "strategy": "swapdb", "swapdb_spare_db": 3,
                             "history_items": 3}}
    c = config_factory(overrides)
    s = synth.build(c, n_users=120, n_items=200, activity=True)
    keys = Keys(c.publish.key_prefix)
    redis_client.set("unrelated:key", "kept")
    first = _job("compute_predictions", c, 0)
    _job("publish_predictions", c, 0)
    second = _job("compute_predictions", c, 1)
    out = _job("publish_predictions", c, 1)
    assert out["strategy"] == "swapdb" and out["previous"] == first["publication"]
    assert current(redis_client, keys, VARIANT)["publication"] == second["publication"]
    assert redis_client.get("unrelated:key") == b"kept"
    assert redis_client.exists(keys.fallback(VARIANT, first["publication"]))  # kept for rollback (keep_versions=2)
    # the histories: the spare db starts as a copy of the live one, so the second load skips them there too
    assert out["history"]["files"] == out["history"]["skipped_files"] == 2
    ptr = current(redis_client, keys, VARIANT)
    assert json.loads(redis_client.get(keys.hist(ptr["activity"], "u000007"))) == synth.expected_history(
        s.activity, "u000007", 3)


def test_dump_failure_stops_the_scratch_server(cfg) -> None:
    import psutil

    from skyrec.data.lakeio import file_url

    out = _job("compute_predictions", cfg, 0)
    lake = Lake.from_config(cfg)
    m = lake.require(out["outputs"][0])
    path = Path(file_url(lake, m, "resp/part-00000.resp"))
    data = bytearray(path.read_bytes())
    data[data.index(b"SET")] = ord("Z")  # same size, unknown command: the server answers an error
    path.write_bytes(bytes(data))
    code, payload = execute("create_redis_dump", config=cfg, run=_run(0), params={"variant": VARIANT})
    assert code == 1 and "errors" in payload["error"]
    assert not lake.committed(cfg.dataset_path("redis_dump", variant=VARIANT, version="v1", run_key=_run(0).run_key))
    state = str(Path(cfg.state_dir))
    leftovers = [p for p in psutil.process_iter(["name", "cmdline"])
                 if "redis-server" in (p.info["name"] or "") and state in " ".join(p.info["cmdline"] or [])]
    assert not leftovers


def test_history_published_with_predictions_and_served(config_factory, redis_server, redis_client) -> None:
    """compute_predictions -> create_redis_dump -> publish_predictions with an activity snapshot: every user's
    last plays are in the publication (counted in its keys), served newest first with titles; an unknown user
    gets an empty list. The plays go into the snapshot's namespace: the next publication from the same snapshot
    attaches to it and loads none of it; a new snapshot gets a new namespace, and the old one goes with its
    last publication."""
    from fastapi.testclient import TestClient

    from skyrec.serve.main import create_app

    c = config_factory({"precompute": {"k": 8, "batch_size": 64, "shard_users": 100, "threads": 1},
                        "publish": {"redis_url": redis_server.url, "keep_versions": 1, "history_items": 5},
                        "serve": {"redis_url": redis_server.url, "pointer_cache_seconds": 0.0, "access_log": False}})
    s = synth.build(c, n_users=250, n_items=300, activity=True)
    keys = Keys(c.publish.key_prefix)
    first = _job("compute_predictions", c, 0)
    users_with_plays = {u for u in s.activity["user_id"].to_pylist() if u != "bad user/id"}
    assert first["hist_keys"] == len(users_with_plays) == 248
    dump = _job("create_redis_dump", c, 0)
    assert dump["keys"] == first["keys"]  # the scratch server's DBSIZE check includes the history keys
    out = _job("publish_predictions", c, 0)
    ptr = current(redis_client, keys, VARIANT)
    assert ptr["activity"].startswith("@") and ptr["activity"].endswith(".n5")  # the snapshot's, not the rail's
    assert out["history"] == {"namespace": ptr["activity"], "files": 3, "skipped_files": 0, "skipped_keys": 0}
    user = "u000007"
    want = synth.expected_history(s.activity, user, 5)
    assert json.loads(redis_client.get(keys.hist(ptr["activity"], user))) == want
    with TestClient(create_app(c)) as api:
        body = api.get(f"/v1/users/{user}/history?variant={VARIANT}").json()
        assert [[p["id"], p["played_at"]] for p in body["plays"]] == want and body["note"] is None
        titles = {p["id"]: p["title"] for p in body["plays"]}
        assert all(titles[i] == f"Title {int(i[1:])}" for i in titles if not i.startswith("gone-"))  # played items
        assert api.get(f"/v1/users/nobody/history?variant={VARIANT}").json()["plays"] == []
        assert api.get(f"/v1/users/u000249/history?variant={VARIANT}").json()["plays"] == []  # no plays
    # the next publication from the same snapshot: same namespace, every history file already there
    _job("compute_predictions", c, 1)
    out = _job("publish_predictions", c, 1)
    assert out["history"] == {"namespace": ptr["activity"], "files": 3, "skipped_files": 3, "skipped_keys": 248}
    assert current(redis_client, keys, VARIANT)["activity"] == ptr["activity"]
    assert json.loads(redis_client.get(keys.hist(ptr["activity"], user))) == want  # the first is removed: not it
    # a new snapshot (u000007's newest play gone): a new namespace; the old one goes with its last publication
    newest = s.activity.filter(pc.and_(pc.equal(s.activity["user_id"], user),
                                       pc.equal(s.activity["event_ts"], pc.max(s.activity.filter(
                                           pc.equal(s.activity["user_id"], user))["event_ts"]))))
    newer = s.activity.filter(pc.invert(pc.is_in(s.activity["event_ts"], newest["event_ts"])))
    synth._write_parts(Lake.from_config(c), c.dataset_path("activity_snapshot", interval_key="20260301T110000"),
                       [("part-0.parquet", newer)])
    _job("compute_predictions", c, 2)
    out = _job("publish_predictions", c, 2)
    now = current(redis_client, keys, VARIANT)
    assert now["activity"] != ptr["activity"] and out["history"]["skipped_files"] == 0
    assert not list(redis_client.scan_iter(match=keys.hist_pattern(ptr["activity"]), count=1000))
    assert not redis_client.exists(keys.hist_refs(ptr["activity"]), keys.hist_files(ptr["activity"]),
                                   keys.hist_gc(ptr["activity"]))
    assert redis_client.zrange(keys.hist_registry(), 0, -1) == [now["activity"].encode()]
    assert json.loads(redis_client.get(keys.hist(now["activity"], user))) == synth.expected_history(newer, user, 5)
    assert synth.expected_history(newer, user, 5)[0] == want[1]  # its newest play is gone


def test_two_rails_share_one_copy_of_the_plays(config_factory, redis_server, redis_client) -> None:
    """Two rails published from the same activity snapshot hold one copy of the plays: the second loads none of
    it. A rail moving on to a new snapshot never removes what the other still serves; the last one does. A
    namespace that claims files it no longer holds fails the history post-condition, not the users."""
    from fastapi.testclient import TestClient

    from skyrec.serve.main import create_app

    base = {"precompute": {"k": 8, "batch_size": 64, "shard_users": 100, "threads": 1},
            "publish": {"redis_url": redis_server.url, "keep_versions": 1, "history_items": 5},
            "serve": {"redis_url": redis_server.url, "pointer_cache_seconds": 0.0, "access_log": False}}
    model = config_factory(base).variant(VARIANT).model
    c = config_factory({**base, "variants": {"drama_copy": {"model": model, "version": "v1",
                                                            "candidates": {"genres": ["Drama"]}}}})
    s = synth.build(c, n_users=250, n_items=300, activity=True)
    keys = Keys(c.publish.key_prefix)

    def job(name: str, variant: str, hour: int) -> dict:
        code, payload = execute(name, config=c, run=_run(hour), params={"variant": variant})
        assert code == 0, payload.get("traceback") or payload.get("error")
        return payload["summary"]

    def hist_keys(activity: str) -> int:
        return sum(1 for _ in redis_client.scan_iter(match=keys.hist_pattern(activity), count=1000))

    for variant in (VARIANT, "drama_copy"):
        job("compute_predictions", variant, 0)
    first = job("publish_predictions", VARIANT, 0)["history"]
    second = job("publish_predictions", "drama_copy", 0)["history"]
    ns = first["namespace"]
    assert second == {"namespace": ns, "files": 3, "skipped_files": 3, "skipped_keys": 248}
    assert first["skipped_files"] == 0 and hist_keys(ns) == 248  # one copy, not two
    assert len(redis_client.smembers(keys.hist_refs(ns))) == 2
    # drama_featured moves on to a new snapshot: drama_copy's plays stay, and it still serves them
    user = "u000007"
    newer = s.activity.filter(pc.not_equal(s.activity["user_id"], "u000001"))
    synth._write_parts(Lake.from_config(c), c.dataset_path("activity_snapshot", interval_key="20260301T110000"),
                       [("part-0.parquet", newer)])
    job("compute_predictions", VARIANT, 1)
    moved = job("publish_predictions", VARIANT, 1)["history"]
    assert moved["namespace"] != ns and moved["skipped_files"] == 0
    assert hist_keys(ns) == 248 and hist_keys(moved["namespace"]) == 247
    with TestClient(create_app(c)) as api:
        body = api.get(f"/v1/users/{user}/history?variant=drama_copy").json()
        assert [[p["id"], p["played_at"]] for p in body["plays"]] == synth.expected_history(s.activity, user, 5)
    # the namespace claims its files while their keys are gone (a flush, an eviction): the probes fail the load
    for key in redis_client.scan_iter(match=keys.hist_pattern(moved["namespace"]), count=1000):
        redis_client.unlink(key)
    job("compute_predictions", "drama_copy", 1)
    code, payload = execute("publish_predictions", config=c, run=_run(1), params={"variant": "drama_copy"})
    assert code != 0 and "no history key for probe user" in payload["error"], payload.get("error")
    assert current(redis_client, keys, "drama_copy")["activity"] == ns  # not switched
    redis_client.delete(keys.hist_files(moved["namespace"]))  # forget the files: the next load writes them
    assert job("publish_predictions", "drama_copy", 1)["history"]["skipped_files"] == 0
    # drama_copy, the last owner of the first snapshot's plays, has moved on: they are gone
    assert hist_keys(ns) == 0 and not redis_client.exists(keys.hist_refs(ns))
    assert hist_keys(moved["namespace"]) == 247


def test_forced_rerun_gets_a_new_publication_id_and_is_published(cfg, redis_client) -> None:
    """A forced re-run of compute_predictions is a new revision: a new publication id (so no cache keyed by
    the id can mix the two contents), and publishing it switches to it rather than answering 'already current'."""
    keys = Keys(cfg.publish.key_prefix)
    first = _job("compute_predictions", cfg, 0)
    assert _job("publish_predictions", cfg, 0)["publication"] == first["publication"]
    code, payload = execute("compute_predictions", config=cfg, run=_run(0), params={"variant": VARIANT}, force=True)
    assert code == 0, payload.get("error")
    second = payload["summary"]
    assert second["publication"] != first["publication"]
    out = _job("publish_predictions", cfg, 0)
    assert out["publication"] == second["publication"] and out.get("note") != "already current"
    assert current(redis_client, keys, VARIANT)["publication"] == second["publication"]
    lake = Lake.from_config(cfg)
    assert lake.read_pointer(published_predictions_pointer(VARIANT))["publication"] == second["publication"]


def test_a_rebuilt_lake_never_reuses_the_served_publication_id(cfg, redis_client) -> None:
    """The same run key on a rebuilt lake (a re-created environment, a restored backup) is new content: it must
    not be taken for the publication Redis already serves."""
    import shutil

    keys = Keys(cfg.publish.key_prefix)
    first = _job("compute_predictions", cfg, 0)
    _job("publish_predictions", cfg, 0)
    shutil.rmtree(Lake.from_config(cfg).root)
    synth.build(cfg, n_users=250, n_items=300, seed=7)
    second = _job("compute_predictions", cfg, 0)
    assert second["publication"] != first["publication"]
    out = _job("publish_predictions", cfg, 0)
    assert out.get("note") != "already current"
    assert current(redis_client, keys, VARIANT)["publication"] == second["publication"]


def test_rolling_encoding_change_json_packed_and_back(config_factory, redis_server, redis_client) -> None:
    """publish.encoding changed between runs: the json publication, then a packed one (dumped and published
    by the real jobs, probes decoded with its item table), then a rollback to json: the API answers every
    publication with the Parquet's items and rounded scores; the old publication's item table is removed with
    it; a corrupted packed value fails the publish post-condition."""
    import pyarrow.parquet as pq
    from fastapi.testclient import TestClient

    from skyrec.publish.codec import ITEM_TABLE_FIELD
    from skyrec.publish.verify import VerificationError, check_probes, probe_expectations
    from skyrec.serve.main import create_app

    def conf(encoding: str):
        return config_factory({"precompute": {"k": 8, "batch_size": 64, "shard_users": 100, "threads": 1},
                               "publish": {"redis_url": redis_server.url, "keep_versions": 2, "probe_users": 10,
                                           "encoding": encoding},
                               "serve": {"redis_url": redis_server.url, "pointer_cache_seconds": 0.0,
                                         "access_log": False}})

    synth.build(conf("json"), n_users=250, n_items=300)
    keys = Keys("skyrec")
    lake = Lake.from_config(conf("json"))
    pubs: dict[str, dict] = {}
    user = "u000012"
    with TestClient(create_app(conf("json"))) as api:
        for hour, encoding in enumerate(("json", "packed", "packed")):
            c = conf(encoding)
            out = _job("compute_predictions", c, hour)
            m = lake.require(out["outputs"][0])
            assert m.meta["encoding"] == encoding
            if hour == 1:
                _job("create_redis_dump", c, hour)  # its post-condition decodes packed probes
            _job("publish_predictions", c, hour)
            want = []
            for f in m.files:
                if f.path.endswith(".parquet"):
                    rows = pq.read_table(lake.abspath(f"{m.path}/{f.path}")).to_pylist()
                    want += sorted((r["rank"], r["item_id"], round(r["score"], 5)) for r in rows
                                    if r["user_id"] == user)
            body = api.get(f"/v1/recommendations/{VARIANT}/{user}?limit=8").json()
            assert body["publication"] == out["publication"]
            assert [(i["id"], i["score"]) for i in body["items"]] == [(i, s) for _, i, s in want]
            pubs[out["publication"]] = {"encoding": encoding, "answer": body["items"]}
        first, second, third = list(pubs)
        # keep_versions=2: the json publication is gone; the first packed one keeps its item table
        assert not redis_client.exists(keys.items(VARIANT, first))
        assert redis_client.hexists(keys.items(VARIANT, second), ITEM_TABLE_FIELD)
        _job("rollback_publication", conf("packed"), 2)
        body = api.get(f"/v1/recommendations/{VARIANT}/{user}?limit=8").json()
        assert body["publication"] == second and body["items"] == pubs[second]["answer"]
    # the post-condition sees a corrupted packed value of a probe user
    m = lake.require(lake.read_pointer(published_predictions_pointer(VARIANT))["path"])
    probes = probe_expectations(lake, m, 10)
    assert check_probes(redis_client, keys, VARIANT, second, probes) == len(probes) >= 10
    victim = next(iter(probes))
    raw = redis_client.get(keys.rec(VARIANT, second, victim))
    redis_client.set(keys.rec(VARIANT, second, victim), raw[:3] + bytes([raw[3] ^ 1]) + raw[4:])
    with pytest.raises(VerificationError, match="items differ"):
        check_probes(redis_client, keys, VARIANT, second, probes)


def test_a_full_or_evicting_redis_is_refused_before_the_load(cfg, redis_client) -> None:
    """The real job estimates what its load adds (its RESP files and the keys' own cost) and refuses, before a key
    is written, a load Redis's maxmemory has no room for (retryable: exit 1) and a Redis that may evict any key
    (a configuration to change: exit 4, not retried); the pointer stays. With room, the estimate is in the
    range of what the load did add."""
    keys = Keys(cfg.publish.key_prefix)
    _job("compute_predictions", cfg, 0)
    _job("publish_predictions", cfg, 0)
    before = current(redis_client, keys, VARIANT)
    new = _job("compute_predictions", cfg, 1)
    pub = Lake.from_config(cfg).require(new["outputs"][0]).meta["publication"]
    try:
        redis_client.config_set("maxmemory", int(redis_client.info("memory")["used_memory"]) + 20_000)
        code, payload = execute("publish_predictions", config=cfg, run=_run(1), params={"variant": VARIANT})
        assert code == 1 and "RedisMemoryError" in payload["error"] and "needs about" in payload["error"], payload
        redis_client.config_set("maxmemory", 0)
        redis_client.config_set("maxmemory-policy", "allkeys-lru")
        code, payload = execute("publish_predictions", config=cfg, run=_run(1), params={"variant": VARIANT})
        assert code == 4 and "maxmemory-policy allkeys-lru" in payload["error"], payload
        assert current(redis_client, keys, VARIANT) == before
        assert not list(redis_client.scan_iter(match=f"{cfg.publish.key_prefix}:*:{VARIANT}:{pub}*"))
        assert redis_client.zscore(keys.publications(VARIANT), pub) is None
    finally:
        redis_client.config_set("maxmemory", 0)
        redis_client.config_set("maxmemory-policy", "noeviction")
    done = _job("publish_predictions", cfg, 1)
    assert current(redis_client, keys, VARIANT)["publication"] == pub
    assert done["memory"]["checked"] and done["memory"]["maxmemory_policy"] == "noeviction"
    held = sum(redis_client.memory_usage(k)  # what Redis holds for the publication's keys (MEMORY USAGE)
               for k in redis_client.scan_iter(match=f"{cfg.publish.key_prefix}:*:{VARIANT}:{pub}*"))
    assert 0.7 * held <= done["memory"]["needed_bytes"] <= 1.5 * held, (done["memory"], held)
