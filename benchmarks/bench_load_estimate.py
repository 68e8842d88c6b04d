"""The publish job's memory pre-check: its estimate of what a load adds to Redis (``publisher.load_bytes``, from
the RESP files' bytes and keys) against what the load did add (the peer: the serving redis-server's own
``used_memory`` before and after), and the estimate before it (1 x bytes + 64 a key), in the same runs.

Each shape runs the real path (``compute_predictions -> create_redis_dump -> publish_predictions``, the plan's
calibration run: ``skyrec.plan._precompute_run``) on a generated lake of 5,000 items, into an empty real
redis-server: json and packed lists, k from 10 to 200, 5k to 150k users, with and without the users' plays,
ALS and item-kNN. A ratio below 1 is an estimate that lets a load start which Redis may refuse midway; far
above 1, one that fits is refused. ``python benchmarks/bench_load_estimate.py [small|reference]``.
"""

from __future__ import annotations

import json
import os
import sys
import tempfile
from pathlib import Path
from typing import Any

#: the 16 shapes of BENCHMARKS.md; ``small`` runs every one (41 s on this 2-core machine, a test suite running beside it)
SHAPES: list[dict[str, Any]] = [
    *({"encoding": e, "k": k, "users": 20_000} for e in ("json", "packed") for k in (10, 50, 200)),
    {"encoding": "packed", "k": 50, "users": 60_000}, {"encoding": "json", "k": 50, "users": 60_000},
    {"encoding": "packed", "k": 50, "users": 20_000, "history": True},
    {"encoding": "json", "k": 50, "users": 20_000, "history": True},
    {"encoding": "packed", "k": 50, "users": 20_000, "model": "knn"},
    {"encoding": "json", "k": 100, "users": 150_000}, {"encoding": "packed", "k": 20, "users": 150_000},
    {"encoding": "packed", "k": 50, "users": 5_000, "history": True}, {"encoding": "json", "k": 30, "users": 5_000},
    {"encoding": "json", "k": 50, "users": 40_000, "model": "knn", "history": True},
]
EARLIER_BYTES_PER_KEY = 64  # the estimate before: RESP bytes + 64 a key


def measure(shape: dict[str, Any]) -> dict[str, Any]:
    import skyrec.jobs.publish_predictions as pp
    from skyrec import plan

    seen: dict[str, int] = {}
    estimate = pp.load_estimate

    def spy(client: Any, keys: Any, pred: Any, meta: dict[str, Any], hist: list[Any], activity: str | None) -> int:
        from skyrec.publish import histories

        done = histories.loaded_files(client, keys, activity) if hist and activity else set()
        files = [pred.file(name) for name in meta["resp_files"]] + [f for f in hist if f.sha256 not in done]
        seen["resp_bytes"] = sum(int(f.size) for f in files)
        seen["keys"] = sum(int(f.rows or 0) for f in files) + int(meta.get("items") or 0)
        seen["estimate"] = estimate(client, keys, pred, meta, hist, activity)
        return seen["estimate"]

    os.environ["SKYREC__PRECOMPUTE__K"] = str(shape["k"])
    pp.load_estimate = spy
    try:
        with tempfile.TemporaryDirectory() as tmp:
            run = plan._precompute_run(Path(tmp), shape["users"], shape["encoding"], items=5000,
                                       model=shape.get("model", "als"), history=shape.get("history", False))
    finally:
        pp.load_estimate = estimate
        del os.environ["SKYREC__PRECOMPUTE__K"]
    added = int(run["redis_used_memory_delta"])
    earlier = seen["resp_bytes"] + EARLIER_BYTES_PER_KEY * seen["keys"]
    return {**shape, **seen, "used_memory_added": added, "ratio": round(seen["estimate"] / added, 3),
            "earlier_ratio": round(earlier / added, 3)}


def main(scale: str = "small") -> dict[str, Any]:
    del scale  # one set of shapes: the figures are ratios
    rows = []
    for shape in SHAPES:
        row = measure(shape)
        rows.append(row)
        print(f"  {row['encoding']:6} k={row['k']:<3} users={row['users']:>7,} "
              f"{'plays ' if row.get('history') else ''}{row.get('model', 'als')}: estimate/added {row['ratio']:.3f} "
              f"(before: {row['earlier_ratio']:.3f})", flush=True)
    ratios = [r["ratio"] for r in rows]
    earlier = [r["earlier_ratio"] for r in rows]
    return {"shapes": rows, "ratio_min": min(ratios), "ratio_max": max(ratios),
            "earlier_ratio_min": min(earlier), "earlier_ratio_max": max(earlier)}


if __name__ == "__main__":
    out = main(sys.argv[1] if len(sys.argv) > 1 else "small")
    print(json.dumps({k: v for k, v in out.items() if k != "shapes"}, indent=1))
