"""The cost of removing a publication by protocol (``skyrec.publish.removal``: claim, batches that each check the
remover's lock in a script, the end) against the plain removal the publisher did before it (the peer: UNLINK
the fixed keys, then SCAN + UNLINK per pattern), in the same run on the same Redis.

One real redis-server holds two publications of one rail, ``users`` users each (a packed-sized ``rec`` value,
an ``also`` key for 40% of them, a ``sim`` key per item, the fallback, items and users keys): the served one
stays, the other is removed, as a cleanup does after a switch (the SCAN walks both). Each method removes a
freshly loaded copy, alternating, best of 2; the keys removed must match. ``python
benchmarks/bench_removal.py [small|reference]``.
"""

from __future__ import annotations

import json
import tempfile
import time
from pathlib import Path
from typing import Any

SCALES = {"small": {"users": 200_000, "items": 20_000}, "reference": {"users": 1_000_000, "items": 200_000}}
VARIANT = "bench"


def _load(client: Any, keys: Any, pub: str, users: int, items: int) -> int:
    value = b"\x01" + b"\x00" * 369  # a packed list of k = 50 is about 370 bytes
    n = 0
    for start in range(0, users, 10_000):
        pipe = client.pipeline(transaction=False)
        end = min(users, start + 10_000)
        pipe.mset({keys.rec(VARIANT, pub, f"u{u}"): value for u in range(start, end)})
        pipe.mset({keys.also(VARIANT, pub, f"u{u}"): b'["i1","i2"]' for u in range(start, end) if u % 5 < 2})
        pipe.execute()
        n += (end - start) + sum(1 for u in range(start, end) if u % 5 < 2)
    for start in range(0, items, 10_000):
        client.mset({keys.sim(VARIANT, pub, f"i{i}"): value for i in range(start, min(items, start + 10_000))})
    n += items
    client.set(keys.fallback(VARIANT, pub), b"[]")
    client.hset(keys.items(VARIANT, pub), mapping={f"i{i}": "{}" for i in range(1000)})
    client.sadd(keys.users(VARIANT, pub), *[f"u{u}" for u in range(1000)])
    client.zadd(keys.publications(VARIANT), {pub: time.time() - 10})
    return n + 3


def _plain(client: Any, keys: Any, pub: str, batch: int = 5000) -> int:
    """What the publisher did before the protocol."""
    deleted = 0
    for key in (keys.fallback(VARIANT, pub), keys.items(VARIANT, pub), keys.users(VARIANT, pub)):
        deleted += int(client.unlink(key))
    for pattern in (p for p in keys.publication_pattern(VARIANT, pub) if "*" in p):
        cursor = 0
        while True:
            cursor, found = client.scan(cursor=cursor, match=pattern, count=batch)
            if found:
                deleted += int(client.unlink(*found))
            if cursor == 0:
                break
    client.zrem(keys.publications(VARIANT), pub)
    return deleted


def main(scale: str = "small") -> dict[str, Any]:
    import redis

    from skyrec.publish import removal
    from skyrec.publish.keys import Keys
    from skyrec.redis_local import temporary_redis

    size = SCALES[scale]
    keys = Keys("skyrec")
    out: dict[str, Any] = {"benchmark": "removal", "scale": scale, **size}
    with tempfile.TemporaryDirectory(prefix="skyrec-bench-removal-") as tmp, \
            temporary_redis(Path(tmp) / "redis") as server:
        client = redis.Redis(host=server.host, port=server.port)
        _load(client, keys, "served", size["users"], size["items"])
        client.set(keys.current(VARIANT), json.dumps({"publication": "served"}))
        times: dict[str, list[float]] = {"protocol": [], "plain": []}
        for round_ in range(2):
            for name in ("plain", "protocol"):
                pub = f"old{round_}{name}"
                loaded = _load(client, keys, pub, size["users"], size["items"])
                t0 = time.perf_counter()
                deleted = removal.remove(client, keys, VARIANT, pub) if name == "protocol" else _plain(client, keys, pub)
                times[name].append(time.perf_counter() - t0)
                if deleted != loaded:
                    raise RuntimeError(f"{name}: removed {deleted} keys of {loaded}")
        out["keys_removed"] = loaded
        out["dbsize_after"] = client.dbsize()
        client.close()
    for name, seconds in times.items():
        out[name] = {"seconds": round(min(seconds), 3), "all": [round(s, 3) for s in seconds],
                     "keys_per_s": round(out["keys_removed"] / min(seconds))}
    out["ratio_protocol_vs_plain"] = round(out["protocol"]["seconds"] / out["plain"]["seconds"], 3)
    return out


if __name__ == "__main__":
    from _cli import scale_argument

    print(json.dumps(main(scale_argument(__doc__, SCALES)), indent=1))
