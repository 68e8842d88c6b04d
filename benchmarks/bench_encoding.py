"""Rec value encodings, ``publish.encoding`` json vs packed, in the same run (``skyrec.publish.codec``).

* **Serving memory**: the same per-user lists (k = 50 over 20k candidates; scores of the precompute
  benchmark's generated factors, exact top-K) written with each encoder compute_predictions uses, loaded
  with the socket loader into a fresh real redis-server each: Redis ``used_memory`` delta / users
  (the packed publication's item table, one field of its items hash, is counted in its delta);
* **encode cost** in the precompute: seconds per batch of 4,096 users for each encoder, extrapolated to
  3.5M users;
* **decode cost** in the API: microseconds per 50-item value (``parse_rec``) for each;
* **p99 at a fixed 1,000 req/s**: one API process per encoding (each over its own redis-server holding one
  publication of that encoding), the serve benchmark's open-loop load generator, rounds alternating
  json / packed so that background load hits both alike.

    python benchmarks/bench_encoding.py [small|reference]
"""

from __future__ import annotations

import json
import os
import signal
import statistics
import subprocess
import sys
import tempfile
import time
import timeit
from pathlib import Path
from typing import Any

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "src"))
sys.path.insert(0, str(Path(__file__).resolve().parent))

SCALES: dict[str, dict[str, Any]] = {
    "small": {"users": 100_000, "candidates": 20_000, "k": 50, "pool": 4096, "serve_users": 20_000,
              "rates": [250.0, 1000.0], "rate_duration": 8.0, "rounds": 2},
    "reference": {"users": 1_000_000, "candidates": 20_000, "k": 50, "pool": 16_384, "serve_users": 300_000,
                  "rates": [250.0, 1000.0], "rate_duration": 20.0, "rounds": 3},
}
VARIANT = "recommended_for_you"
PUB = "v1.20260301T120000-3f9a1c2e"
DECIMALS = 5
BATCH = 4096


def top_lists(pool: int, n_items: int, k: int, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """Exact top-k (positions, scores best first) of ``pool`` users over ``n_items`` candidates, factors as
    in the precompute benchmark (64 dims, N(0, 0.3^2))."""
    rng = np.random.default_rng(seed)
    U = (rng.standard_normal((pool, 64), dtype=np.float32) * 0.3).astype(np.float32)
    V = (rng.standard_normal((n_items, 64), dtype=np.float32) * 0.3).astype(np.float32)
    items = np.empty((pool, k), dtype=np.int32)
    scores = np.empty((pool, k), dtype=np.float32)
    for s in range(0, pool, 512):
        S = U[s:s + 512] @ V.T
        part = np.argpartition(-S, k, axis=1)[:, :k]
        ps = np.take_along_axis(S, part, axis=1)
        order = np.lexsort((part, -ps), axis=1)
        items[s:s + 512] = np.take_along_axis(part, order, axis=1)
        scores[s:s + 512] = np.take_along_axis(ps, order, axis=1)
    return items, scores


def write_resp(path: Path, encoding: str, users: list[str], items: np.ndarray, scores: np.ndarray,
               item_ids: list[str], key_prefix: str = "skyrec") -> tuple[int, float]:
    """Every user's SET (users cycle over the pool's lists), plus the shared keys as compute_predictions
    writes them. Returns (commands, seconds spent in the rec value encoder)."""
    from skyrec.publish.codec import ITEM_TABLE_FIELD, encode_packed_sets, table_value
    from skyrec.publish.keys import Keys
    from skyrec.publish.resp import encode_command, encode_hset, encode_rec_sets, fixed_width_fragments

    keys = Keys(key_prefix)
    prefix = keys.rec(VARIANT, PUB, "")
    pool, k = items.shape
    frags = fixed_width_fragments(item_ids) if encoding == "json" else None
    counts = np.full(BATCH, k)
    commands, encode_s = 0, 0.0
    with open(path, "wb") as fh:
        meta = {i: json.dumps({"title": f"Programme {i}", "brand": "B", "genres": ["Comedy"], "formats": ["Podcasts"],
                               "available_until": None}, separators=(",", ":")) for i in item_ids[:1000]}
        data, n = encode_hset(keys.items(VARIANT, PUB), sorted(meta.items()))
        fh.write(data)
        commands += n
        if encoding == "packed":
            data, n = encode_hset(keys.items(VARIANT, PUB), [(ITEM_TABLE_FIELD, table_value(item_ids, DECIMALS))])
            fh.write(data)
            commands += n
        fh.write(encode_command("SET", keys.fallback(VARIANT, PUB), json.dumps([[i, 1.0] for i in item_ids[:100]])))
        commands += 1
        for s in range(0, len(users), BATCH):
            batch = users[s:s + BATCH]
            rows = np.arange(s, s + len(batch)) % pool
            it, sc, ct = items[rows], scores[rows], counts[:len(batch)]
            t0 = time.perf_counter()
            if frags is not None:
                data, n = encode_rec_sets(prefix, batch, frags, it, sc, ct, DECIMALS)
            else:
                data, n = encode_packed_sets(prefix, batch, it, sc, ct, DECIMALS, len(item_ids))
            encode_s += time.perf_counter() - t0
            fh.write(data)
            commands += n
    return commands, encode_s


def memory(tmp: Path, cfg: dict[str, Any], items: np.ndarray, scores: np.ndarray,
           item_ids: list[str]) -> dict[str, Any]:
    import redis

    from skyrec.publish.codec import ITEM_TABLE_FIELD, decode_value, parse_table
    from skyrec.publish.keys import Keys
    from skyrec.publish.resp import load_files
    from skyrec.redis_local import temporary_redis

    users = [f"u{u:08d}" for u in range(cfg["users"])]
    out: dict[str, Any] = {}
    for encoding in ("json", "packed"):
        path = tmp / f"{encoding}.resp"
        commands, encode_s = write_resp(path, encoding, users, items, scores, item_ids)
        with temporary_redis(tmp / f"mem-{encoding}") as server:
            c = redis.Redis(host=server.host, port=server.port)
            before = c.info("memory")["used_memory"]
            res = load_files(server.host, server.port, [path], expected=commands)
            used = c.info("memory")["used_memory"] - before
            keys = Keys("skyrec")
            value = c.get(keys.rec(VARIANT, PUB, users[7]))
            table = parse_table(c.hget(keys.items(VARIANT, PUB), ITEM_TABLE_FIELD)) if encoding == "packed" else None
            got = decode_value(value, table)
            assert [i for i, _ in got] == [item_ids[j] for j in items[7]], "read back differs"
            assert c.dbsize() == len(users) + 2
            c.close()
        per_batch = encode_s / -(-len(users) // BATCH)
        out[encoding] = {"bytes_per_user_rail": round(used / len(users), 1), "value_bytes": len(value),
                         "used_memory_mb": round(used / 1e6, 1), "resp_file_mb": round(path.stat().st_size / 1e6, 1),
                         "load_seconds": round(res.seconds, 2), "encode_seconds": round(encode_s, 2),
                         "encode_seconds_per_batch_4096_mean": round(per_batch, 4)}
        path.unlink()
    out["memory_ratio_json_vs_packed"] = round(out["json"]["bytes_per_user_rail"] / out["packed"]["bytes_per_user_rail"], 2)
    return out


def encode_cost(items: np.ndarray, scores: np.ndarray, item_ids: list[str]) -> dict[str, Any]:
    """Seconds per precompute batch (4,096 users) of each rec value encoder, best of interleaved repeats (the
    least disturbed by other load), and what that is for 3.5M users."""
    from skyrec.publish.codec import encode_packed_sets
    from skyrec.publish.resp import encode_rec_sets, fixed_width_fragments

    rows = np.arange(BATCH) % items.shape[0]
    it, sc, ct = items[rows], scores[rows], np.full(BATCH, items.shape[1])
    users = [f"u{u:08d}" for u in range(BATCH)]
    prefix = f"skyrec:rec:{VARIANT}:{PUB}:"
    frags = fixed_width_fragments(item_ids)
    best = {"json": float("inf"), "packed": float("inf")}
    for _ in range(7):
        t = time.perf_counter()
        encode_rec_sets(prefix, users, frags, it, sc, ct, DECIMALS)
        best["json"] = min(best["json"], time.perf_counter() - t)
        t = time.perf_counter()
        encode_packed_sets(prefix, users, it, sc, ct, DECIMALS, len(item_ids))
        best["packed"] = min(best["packed"], time.perf_counter() - t)
    return {name: {"seconds_per_batch_4096": round(v, 4), "us_per_user": round(v / BATCH * 1e6, 2),
                   "seconds_at_3_5M_users": round(v / BATCH * 3.5e6, 1)} for name, v in best.items()}


def decode_cost(items: np.ndarray, scores: np.ndarray, item_ids: list[str]) -> dict[str, Any]:
    from skyrec.publish.codec import ItemTable, encode_packed_values
    from skyrec.publish.resp import encode_rec_sets, fixed_width_fragments
    from skyrec.serve.store import parse_rec

    k = items.shape[1]
    resp, _ = encode_rec_sets("x:", ["u"], fixed_width_fragments(item_ids), items[:1], scores[:1], np.array([k]),
                              DECIMALS)
    json_value = resp.split(b"\r\n")[-2]
    packed_value, _ = encode_packed_values(items[:1], scores[:1], np.array([k]), DECIMALS, len(item_ids))
    table = ItemTable(tuple(item_ids), DECIMALS)
    assert parse_rec(json_value, None) == parse_rec(packed_value, table)

    def us(fn: Any) -> float:
        return round(min(timeit.repeat(fn, number=2000, repeat=7)) / 2000 * 1e6, 2)

    return {"json_us_per_value": us(lambda: parse_rec(json_value, None)),
            "packed_us_per_value": us(lambda: parse_rec(packed_value, table)),
            "json_value_bytes": len(json_value), "packed_value_bytes": len(packed_value)}


def _start_api(tmp: Path, name: str, redis_url: str) -> tuple[subprocess.Popen, str, Any]:
    from bench_serve import start_api

    return start_api(tmp, redis_url, f"api-{name}")


def serve_p99(tmp: Path, cfg: dict[str, Any], items: np.ndarray, scores: np.ndarray,
              item_ids: list[str]) -> dict[str, Any]:
    """One API per encoding over its own Redis; alternating fixed-rate rounds with bench_serve's generator."""
    import httpx
    import redis
    from bench_serve import cpu_seconds, run_loadgen

    from skyrec.publish.keys import Keys
    from skyrec.publish.resp import load_files
    from skyrec.redis_local import temporary_redis

    users = [f"u{u}" for u in range(cfg["serve_users"])]  # the ids bench_serve's load generator asks for
    apis: dict[str, tuple[subprocess.Popen, str, Any]] = {}
    rounds: dict[tuple[float, str], list[dict[str, Any]]] = {}
    with temporary_redis(tmp / "serve-json") as rj, temporary_redis(tmp / "serve-packed") as rp:
        try:
            for encoding, server in (("json", rj), ("packed", rp)):
                path = tmp / f"serve-{encoding}.resp"
                commands, _ = write_resp(path, encoding, users, items, scores, item_ids)
                load_files(server.host, server.port, [path], expected=commands)
                c = redis.Redis(host=server.host, port=server.port)
                c.set(Keys("skyrec").current(VARIANT), json.dumps(
                    {"publication": PUB, "model": "als", "model_version": "v1", "run_key": "20260301T120000",
                     "published_at": "2026-03-01T12:00:00Z", "users": len(users), "items": len(item_ids),
                     "k": int(items.shape[1]), "evaluation": {}, "encoding": encoding}))
                c.close()
                apis[encoding] = _start_api(tmp, encoding, server.url)
                body = httpx.get(f"{apis[encoding][1]}/v1/recommendations/{VARIANT}/u1?limit=10").json()
                assert body["source"] == "personalised" and len(body["items"]) == 10, body
            a = httpx.get(f"{apis['json'][1]}/v1/recommendations/{VARIANT}/u1?limit=50").json()["items"]
            b = httpx.get(f"{apis['packed'][1]}/v1/recommendations/{VARIANT}/u1?limit=50").json()["items"]
            assert a == b, "the two encodings answer differently"
            for _api, base, _log in apis.values():  # warm-up: item metadata caches, connections
                port = int(base.rsplit(":", 1)[1])
                run_loadgen({"host": "127.0.0.1", "port": port, "users": len(users), "mode": "closed",
                             "connections": 8, "duration": 2.0})
            schedule = [(rate, encoding) for rate in cfg["rates"] for _ in range(cfg["rounds"]) for encoding in apis]
            for rate, encoding in schedule:  # json, packed, json, packed, ... at each rate
                api, base, _ = apis[encoding]
                port = int(base.rsplit(":", 1)[1])
                cpu0 = cpu_seconds(api.pid)
                res = run_loadgen({"host": "127.0.0.1", "port": port, "users": len(users), "mode": "rate",
                                   "rate": rate, "duration": cfg["rate_duration"], "connections": 64})
                res["api_cpu_ms_per_request"] = round((cpu_seconds(api.pid) - cpu0) * 1000 / res["requests"], 3)
                res["load_average_1m"] = round(os.getloadavg()[0], 2)
                rounds.setdefault((rate, encoding), []).append(res)
        finally:
            for api, _, log in apis.values():
                api.send_signal(signal.SIGTERM)
                try:
                    api.wait(timeout=15)
                except subprocess.TimeoutExpired:
                    api.kill()
                log.close()
    out: dict[str, Any] = {"seconds_per_round": cfg["rate_duration"], "users": len(users)}
    for (rate, encoding), runs in rounds.items():
        p99 = [r["p99_ms"] for r in runs]
        out.setdefault(f"{rate:g}_rps", {})[encoding] = {
            "p99_ms_rounds": p99, "p99_ms_median": round(statistics.median(p99), 3), "p99_ms_best": min(p99),
            "p50_ms_rounds": [r["p50_ms"] for r in runs],
            "api_cpu_ms_per_request": [r["api_cpu_ms_per_request"] for r in runs],
            "errors": sum(r["errors"] for r in runs), "achieved_rate": [r["achieved_rate"] for r in runs],
            "load_average_1m": [r["load_average_1m"] for r in runs]}
    return out


def main(scale: str = "small") -> dict[str, Any]:
    cfg = SCALES[scale]
    t0 = time.perf_counter()
    items, scores = top_lists(cfg["pool"], cfg["candidates"], cfg["k"])
    item_ids = [f"p{j:07d}" for j in range(cfg["candidates"])]
    result: dict[str, Any] = {"scale": scale, "cpus": os.cpu_count(), "users": cfg["users"],
                              "candidates": cfg["candidates"], "k": cfg["k"], "score_decimals": DECIMALS,
                              "lists_seconds": round(time.perf_counter() - t0, 1)}
    with tempfile.TemporaryDirectory(prefix="skyrec-bench-encoding-") as tmp:
        result["memory"] = memory(Path(tmp), cfg, items, scores, item_ids)
        result["encode"] = encode_cost(items, scores, item_ids)
        result["decode"] = decode_cost(items, scores, item_ids)
        if os.environ.get("BENCH_ENCODING_SERVE", "1") != "0":
            result["serve_fixed_rate"] = serve_p99(Path(tmp), cfg, items, scores, item_ids)
    mem = result["memory"]
    result["packed_bytes_per_user_rail"] = mem["packed"]["bytes_per_user_rail"]
    result["json_bytes_per_user_rail"] = mem["json"]["bytes_per_user_rail"]
    result["target"] = "packed <= 450 bytes per user and rail at k = 50; p99 at 1,000 req/s not above json's"
    result["packed_meets_memory_target"] = mem["packed"]["bytes_per_user_rail"] <= 450
    serve = result.get("serve_fixed_rate")
    if serve:
        for rate in cfg["rates"]:
            at = serve[f"{rate:g}_rps"]
            result[f"p99_ms_at_{rate:g}_rps"] = {e: at[e]["p99_ms_median"] for e in ("json", "packed")}
    return result


if __name__ == "__main__":
    from _cli import scale_argument

    print(json.dumps(main(scale_argument(__doc__, SCALES)), indent=1))
