"""compute_predictions on a Dask cluster vs DirectRunner vs the local engine, on the same shards.

One generated lake (``bench_precompute.build_lake``: users x 20k candidates, 64 factors, k = 50, ~20 plays
per user excluded), then the real ``compute_predictions`` job three times with the same ``shard_users``:

- ``local``: the local engine, the kernel's threads on every core;
- ``direct``: ``precompute.engine: beam`` on DirectRunner, multi_processing, one worker process per core;
- ``dask``: ``precompute.runner: DaskRunner`` against a cluster started here on 127.0.0.1 (``dask scheduler``
  and one ``dask worker`` process per core, one thread each, over TCP; started before the clock runs).

Each engine runs twice (once at the reference scale), interleaved, and its best run is reported. Every run's committed files are
compared (publication id normalised, ``comparable_files``): the benchmark fails unless all outputs are equal.
Figures: users/s over the job (wall) and over its scoring part, with the machine's 1-minute load average
before and after each run (other work on the machine slows every figure).
``python benchmarks/bench_dask.py [small|medium|reference]``.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

SCALES = {"tiny": 20_000, "small": 200_000, "medium": 1_000_000, "reference": 3_500_000}
SHARDS = 8
ROUNDS = {"reference": 1}  # each engine twice (once at the reference scale), interleaved; the best is reported
AT = dt.datetime(2026, 3, 1, 12, tzinfo=dt.UTC)


def _load() -> list[float]:
    return [round(x, 2) for x in os.getloadavg()]


def start_cluster(folder: Path, workers: int) -> tuple[str, list[subprocess.Popen]]:
    """A scheduler and ``workers`` single-threaded worker processes on 127.0.0.1 (no nanny)."""
    from distributed import Client

    dask = str(Path(sys.executable).parent / "dask")
    info = folder / "scheduler.json"
    with open(folder / "dask.log", "wb") as log:  # the children keep their own descriptors
        procs = [subprocess.Popen([dask, "scheduler", "--host", "127.0.0.1", "--port", "0", "--no-dashboard",
                                   "--scheduler-file", str(info)], stdout=log, stderr=subprocess.STDOUT, cwd=folder)]
        deadline = time.monotonic() + 120
        while not info.exists() or not info.read_text().strip():
            if procs[0].poll() is not None or time.monotonic() > deadline:
                stop_cluster(procs)
                raise RuntimeError(f"dask scheduler did not start (log: {folder / 'dask.log'})")
            time.sleep(0.05)
        address = json.loads(info.read_text())["address"]
        procs += [subprocess.Popen([dask, "worker", address, "--nthreads", "1", "--no-nanny", "--no-dashboard",
                                    "--host", "127.0.0.1", "--name", f"w{i}",
                                    "--local-directory", str(folder / f"w{i}")],
                                   stdout=log, stderr=subprocess.STDOUT, cwd=folder) for i in range(workers)]
    try:
        with Client(address, timeout=120) as client:
            client.wait_for_workers(workers, timeout=120)
    except Exception:
        stop_cluster(procs)
        raise
    return address, procs


def stop_cluster(procs: list[subprocess.Popen]) -> None:
    for group in (procs[1:], procs[:1]):  # workers first, then the scheduler
        for p in group:
            if p.poll() is None:
                p.terminate()
        for p in group:
            try:
                p.wait(10)
            except subprocess.TimeoutExpired:
                p.kill()
                p.wait(5)


def main(scale: str = "small") -> dict[str, Any]:
    n_users = SCALES[scale]
    cores = os.cpu_count() or 1
    saved = os.environ.get("SKYREC_HOME")
    with tempfile.TemporaryDirectory(prefix="skyrec-bench-dask-") as home:
        os.environ["SKYREC_HOME"] = home
        procs: list[subprocess.Popen] = []
        try:
            t0 = time.perf_counter()
            address, procs = start_cluster(Path(home), cores)
            cluster_start = time.perf_counter() - t0
            return _run(home, address, n_users, cores, cluster_start, scale)
        finally:
            if procs:
                stop_cluster(procs)
            if saved is None:
                os.environ.pop("SKYREC_HOME", None)
            else:
                os.environ["SKYREC_HOME"] = saved


def _run(home: str, address: str, n_users: int, cores: int, cluster_start: float, scale: str) -> dict[str, Any]:
    sys.path.insert(0, str(Path(__file__).resolve().parent))
    from bench_precompute import RAIL_ON_ALS, build_lake

    from skyrec.config import load_config
    from skyrec.jobs.base import RunInfo, execute
    from skyrec.pipelines.predictions import comparable_files
    from skyrec.storage import Lake

    shard_users = -(-n_users // SHARDS)
    common = {"shard_users": shard_users, "k": 50, "users_sample": 100}
    engines = {
        "local": {"engine": "local", "threads": 0},
        "direct": {"engine": "beam", "runner": "DirectRunner", "threads": 1, "direct_num_workers": cores,
                   "direct_running_mode": "multi_processing"},
        "dask": {"engine": "beam", "runner": "DaskRunner", "threads": 1, "dask": {"address": address}},
    }
    base = load_config("local", overrides={"precompute": common, **RAIL_ON_ALS})
    if not base.lake_url.startswith(home):
        raise RuntimeError(f"benchmark lake {base.lake_url} is not under its temporary home {home}")
    out: dict[str, Any] = {"benchmark": "dask", "scale": scale, "users": n_users, "candidates": 20_000,
                           "factors": 64, "k": 50, "shards": SHARDS, "shard_users": shard_users, "cores": cores,
                           "dask_workers": cores, "dask_cluster_start_seconds": round(cluster_start, 1),
                           **build_lake(base, n_users), "load_before": _load(), "runs": {}}
    digests: dict[str, dict[str, str]] = {}
    walls: dict[str, list[dict[str, Any]]] = {name: [] for name in engines}
    rounds = ROUNDS.get(scale, 2)
    order = [name for r in range(rounds) for name in (list(engines) if r % 2 == 0 else list(engines)[::-1])]
    for i, name in enumerate(order):  # interleaved rounds: the machine's other load falls on every engine
        cfg = load_config("local", overrides={"precompute": {**common, **engines[name]}, **RAIL_ON_ALS})
        # a run of its own (own output folder), the same scoring time ("at") for every engine
        run = RunInfo(dag_id="precompute_recommendations_als_recommended_for_you_v1", run_id=f"bench-{name}-{i}",
                      task_id="compute_predictions", logical_date=AT + dt.timedelta(minutes=i), interval_end=AT)
        load0 = _load()
        t0 = time.perf_counter()
        code, payload = execute("compute_predictions", config=cfg, run=run, params={"variant": "recommended_for_you"})
        wall = time.perf_counter() - t0
        if code != 0:
            raise RuntimeError(f"compute_predictions on {name} failed: {payload.get('error')}")
        lake = Lake.from_config(cfg)
        m = lake.require(payload["summary"]["outputs"][0])
        digests[f"{name}-{i}"] = {n: hashlib.sha256(b).hexdigest() for n, b in comparable_files(lake, m).items()}
        walls[name].append({"seconds": round(wall, 1), "scoring_seconds": m.meta["scoring_seconds"],
                            "users": m.meta["users"], "beam": m.meta.get("beam"), "load_1min": [load0[0], _load()[0]]})
    for name, rows in walls.items():
        best = min(rows, key=lambda r: r["seconds"])
        out["runs"][name] = {"best_seconds": best["seconds"], "users_per_second": round(best["users"] / best["seconds"]),
                             "scoring_users_per_second": round(best["users"] / best["scoring_seconds"]),
                             "all_seconds": [r["seconds"] for r in rows], "beam": best["beam"],
                             "load_1min_before_after": [r["load_1min"] for r in rows]}
    first = next(iter(digests.values()))
    same = all(d == first for d in digests.values())
    out.update({"load_after": _load(), "outputs_equal": same, "files": len(first),
                "dask_over_direct": round(out["runs"]["dask"]["best_seconds"] / out["runs"]["direct"]["best_seconds"], 2),
                "dask_over_local": round(out["runs"]["dask"]["best_seconds"] / out["runs"]["local"]["best_seconds"], 2)})
    if not same:
        diff = sorted(n for n in first if any(d.get(n) != first[n] for d in digests.values()))
        raise RuntimeError(f"outputs differ between engines: {diff[:10]}")
    return out


if __name__ == "__main__":
    from _cli import scale_argument

    print(json.dumps(main(scale_argument(__doc__, SCALES)), indent=1))
