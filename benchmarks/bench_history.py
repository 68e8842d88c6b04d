"""The cost of exact "because you played X": the history step of one precompute shard, with the older plays
found in the users' seeds' "more like this" lists (``also_played``) against the plain last-N history (the
peer: what the step wrote before, the same scan of the same snapshot), in the same run.

A committed activity snapshot of ``users`` listeners, ~``plays`` plays each, on a catalogue of ``items``
items in 200 topics (a listener plays within two topics, and a seed's list is items of its topic: plays and
lists overlap as they do on real data, where 40-80% of the demo's users have such older plays); every item is
a candidate with a list of ``similar_k`` = 20. One shard of all the users (``precompute.shard_users`` is
262,144 by default), ``history_items`` = 10. Timed: ``read_shard_plays`` + ``also_played`` +
``encode_history_sets`` + ``encode_also_sets`` against ``read_shard_plays`` + ``encode_history_sets``, best of
2 each, and the RESP bytes written (the plays, shared by the rails of a snapshot, plus the rail's ``also``
keys, against the plays alone); the ``also`` keys as a packed publication writes them (item table positions,
the default encoding) and, not timed, as a json one does (``value_bytes.also_played_json``); and what Redis
holds of each (``redis_bytes``: each loaded into an empty real redis-server, keys named as a rail's).
``--per-count``: what Redis holds per ``also`` key with 1-40 ids, packed against JSON ids (``per_count``).
``python benchmarks/bench_history.py [small|reference]``.
"""

from __future__ import annotations

import datetime as dt
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import scipy.sparse as sp

SCALES = {"small": {"users": 200_000, "items": 20_000, "plays": 20},
          "reference": {"users": 262_144, "items": 200_000, "plays": 40}}
TOPICS = 200
SIMILAR_K = 20
HISTORY_ITEMS = 10
# key names of the lengths a rail's have (a snapshot's namespace; a rail, a publication id)
HIST_PREFIX = "skyrec:hist:@866f59b26b844159.n10:"
ALSO_PREFIX = "skyrec:also:recommended_for_you:v1.20261203T044000-3f9a1c2e:"


def _snapshot(lake: Any, users: int, items: int, plays: int, rng: np.random.Generator) -> str:
    from skyrec.data.schemas import ACTIVITY
    from skyrec.storage import Producer

    per_topic = items // TOPICS
    n = users * plays
    user = np.repeat(np.arange(users), plays)
    topics = rng.integers(0, TOPICS, size=(users, 2))
    topic = topics[user, rng.integers(0, 2, size=n)]
    item = topic * per_topic + rng.integers(0, per_topic, size=n)
    t0 = dt.datetime(2026, 11, 1, tzinfo=dt.UTC).timestamp()
    ts = (t0 + rng.integers(0, 21 * 86400, size=n)).astype("datetime64[s]").astype("datetime64[us]")
    table = pa.table({"user_id": pa.array(np.char.add("u", user.astype(str)).astype(object), pa.string()),
                      "item_id": pa.array(np.char.add("p", item.astype(str)).astype(object), pa.string()),
                      "event_type": pa.array(["play"] * n), "event_ts": pa.array(ts, pa.timestamp("us", "UTC")),
                      "played_seconds": pa.array(np.full(n, 60.0))}, schema=ACTIVITY)
    rel = "bench/activity_snapshot/20261122T000000"
    stage = lake.stage("activity_snapshot", rel, Producer(), force=True)
    with stage.open("part-0.parquet", "wb", rows=n) as fh:
        pq.write_table(table, fh)
    stage.commit({})
    return rel


def _lists(items: int, rng: np.random.Generator) -> sp.csr_matrix:
    """Every item's list: ``SIMILAR_K`` other items of its topic (seed x candidate, all items candidates)."""
    per_topic = items // TOPICS
    seeds = np.arange(items)
    cols = (seeds // per_topic)[:, None] * per_topic + rng.integers(0, per_topic, size=(items, SIMILAR_K))
    m = sp.csr_matrix((np.ones(cols.size, np.float32), (np.repeat(seeds, SIMILAR_K), cols.ravel())),
                      shape=(items, items))
    m.setdiag(0)
    m.eliminate_zeros()
    m.data[:] = 1
    return m


def _redis_bytes(tmp: Path, plain: tuple[bytes, int], packed: tuple[bytes, int], json_ids: tuple[bytes, int]
                 ) -> dict[str, int]:
    """Redis's ``used_memory`` growth for the plays alone, and for the plays with the ``also`` keys packed and
    with them as JSON ids, each loaded into an empty real redis-server (the key names as a rail's)."""
    import redis

    from skyrec.publish.resp import load_files
    from skyrec.redis_local import temporary_redis

    out: dict[str, int] = {}
    with temporary_redis(tmp / "redis") as server:
        client = redis.Redis(host=server.host, port=server.port)
        for name, parts in (("plain", [plain]), ("also_played", [plain, packed]), ("also_played_json", [plain, json_ids])):
            client.flushall()
            base = int(client.info("memory")["used_memory"])
            for i, (data, n) in enumerate(parts):
                path = tmp / f"{name}-{i}.resp"
                path.write_bytes(data)
                load_files(server.host, server.port, [path], expected=n)
                path.unlink()
            out[name] = int(client.info("memory")["used_memory"]) - base
        client.close()
    return out


def main(scale: str = "small") -> dict[str, Any]:
    return {"benchmark": "history", "scale": scale, **measure(**SCALES[scale])}


def _cpu() -> float:
    import resource

    r = resource.getrusage(resource.RUSAGE_SELF)
    return r.ru_utime + r.ru_stime


def measure(users: int, items: int, plays: int, repeat: int = 2) -> dict[str, Any]:
    """The two history steps of one shard of ``users`` users, ``plays`` plays each, ``items`` items (wall and
    this process's CPU seconds, the best of ``repeat`` runs each; ``skyrec plan --calibrate`` reads the CPU)."""
    from skyrec.scoring.history import also_played, encode_also_sets, encode_history_sets, read_shard_plays
    from skyrec.storage import Lake

    p = {"users": users, "items": items, "plays": plays}
    rng = np.random.default_rng(11)
    with tempfile.TemporaryDirectory(prefix="skyrec-bench-history-") as tmp:
        lake = Lake(f"{tmp}/lake")
        t = time.perf_counter()
        rel = _snapshot(lake, p["users"], p["items"], p["plays"], rng)
        lists = _lists(p["items"], rng)
        setup = time.perf_counter() - t
        ids = pa.array([f"p{j}" for j in range(p["items"])], pa.string())
        user_ids = pa.array([f"u{j}" for j in range(p["users"])], pa.string())

        def plain() -> tuple[int, int]:
            plays, _ = read_shard_plays(lake, rel, user_ids, HISTORY_ITEMS)
            data, n, _ = encode_history_sets(HIST_PREFIX, plays)
            last["plain"] = (data, n)
            return len(data), 0

        def exact() -> tuple[int, int]:
            plays, played = read_shard_plays(lake, rel, user_ids, HISTORY_ITEMS, keep_items=ids)
            also = also_played(plays, played, user_ids, ids, ids, lists, np.arange(len(ids)))
            data, n, _ = encode_history_sets(HIST_PREFIX, plays)  # shared by the rails
            also_data, also_keys = encode_also_sets(ALSO_PREFIX, plays, also,  # the rail's own, packed
                                                    table_size=len(ids))
            last["json"] = (data, plays, also)  # sized after the timing, as a json publication writes them
            last["packed"] = (also_data, also_keys)
            return len(data) + len(also_data), also_keys

        runs: dict[str, list[float]] = {"plain": [], "also_played": []}
        cpu: dict[str, list[float]] = {"plain": [], "also_played": []}
        sizes: dict[str, Any] = {}
        last: dict[str, Any] = {}
        for _ in range(repeat):
            for name, fn in (("plain", plain), ("also_played", exact)):
                t, c = time.perf_counter(), _cpu()
                sizes[name] = fn()
                runs[name].append(time.perf_counter() - t)
                cpu[name].append(_cpu() - c)
        data, plays, also = last.pop("json")
        json_data, json_keys = encode_also_sets(ALSO_PREFIX, plays, also)
        sizes["json"] = len(data) + len(json_data)
        held = _redis_bytes(Path(tmp), last["plain"], last["packed"], (json_data, json_keys))
        best = {k: min(v) for k, v in runs.items()}
        return {
            "users": p["users"], "items": p["items"],
            "plays_per_user": p["plays"], "history_items": HISTORY_ITEMS, "similar_k": SIMILAR_K,
            "setup_seconds": round(setup, 1),
            "seconds": {k: round(v, 2) for k, v in best.items()},
            "runs": {k: [round(x, 2) for x in v] for k, v in runs.items()},
            "cpu_seconds": {k: round(min(v), 3) for k, v in cpu.items()},
            "ratio_also_played_over_plain": round(best["also_played"] / best["plain"], 2),
            "users_with_older_plays_named": sizes["also_played"][1],
            "value_bytes": {"plain": sizes["plain"][0], "also_played": sizes["also_played"][0],
                            "also_played_json": sizes["json"]},
            "value_bytes_ratio": round(sizes["also_played"][0] / sizes["plain"][0], 3),
            "value_bytes_ratio_json": round(sizes["json"] / sizes["plain"][0], 3),
            # what Redis holds (used_memory): the plays, and with them each form of the also keys
            "redis_bytes": held,
            "redis_bytes_ratio": round(held["also_played"] / held["plain"], 3),
            "redis_bytes_ratio_json": round(held["also_played_json"] / held["plain"], 3),
            "peer": "the plain last-N history of the same shard (same scan, same snapshot, same run)",
        }


def per_count(users: int = 50_000, counts: tuple[int, ...] = (1, 2, 3, 5, 8, 12, 20, 40)) -> dict[str, Any]:
    """What Redis holds per ``also`` key with n ids, packed and as JSON ids (``--per-count``): ``users`` keys
    named as a rail's, ids of 8 characters from a 20k-item table, each set loaded into an empty real
    redis-server; the used_memory growth per key."""
    import json

    import redis

    from skyrec.publish.codec import encode_also_values
    from skyrec.redis_local import temporary_redis

    rows = []
    with tempfile.TemporaryDirectory(prefix="skyrec-bench-history-") as tmp, \
            temporary_redis(Path(tmp) / "redis") as server:
        client = redis.Redis(host=server.host, port=server.port)
        for n in counts:
            pos = np.random.default_rng(n).integers(0, 20_000, size=(users, n))
            row: dict[str, Any] = {"ids": n}
            for form in ("json", "packed"):
                client.flushall()
                base = int(client.info("memory")["used_memory"])
                pipe = client.pipeline(transaction=False)
                for u in range(users):
                    if form == "json":
                        value: Any = json.dumps([f"p{p + 1_000_000}" for p in pos[u]], separators=(",", ":"))
                    else:
                        value = encode_also_values(np.array([0, n]), pos[u], 20_000)[0]
                    pipe.set(f"{ALSO_PREFIX}u{u + 1_000_000}", value)
                    if u % 5000 == 4999:
                        pipe.execute()
                pipe.execute()
                row[form] = round((int(client.info("memory")["used_memory"]) - base) / users, 1)
            row["packed_over_json"] = round(row["packed"] / row["json"], 3)
            rows.append(row)
        client.close()
    return {"benchmark": "history_also_per_count", "users": users, "rows": rows}


if __name__ == "__main__":
    import json

    args = [a for a in sys.argv[1:] if a != "--per-count"]
    out = per_count() if "--per-count" in sys.argv else main(args[0] if args else "small")
    print(json.dumps(out, indent=1))
