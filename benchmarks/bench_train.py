"""Training benchmark: skyrec's ALS and item-kNN training vs calling implicit directly on the same matrix.

Each measurement runs in a fresh process (so peak RSS is that step's alone) on the same synthetic
matrix (users x items with Zipf item popularity, generated from a seed inside the process, not timed):

- ``implicit_direct``: ``implicit.cpu.als.AlternatingLeastSquares(...).fit(matrix)`` with BLAS limited to
  one thread, as implicit recommends -- the peer;
- ``skyrec_fit``: ``skyrec.models.training.fit_on(ALSModel(...), matrix)`` -- what the train job runs
  (column selection, representation checks included);
- ``implicit_knn_direct``: ``implicit.nearest_neighbours.BM25Recommender(K=70, K1=1.0, B=0.2).fit(matrix)``
  -- the peer of the shipped rails' model;
- ``skyrec_knn_fit``: ``fit_on(ItemKNNModel(), matrix)`` with its defaults (BM25, 70 neighbours; no catalogue
  here, so no series term) -- the neighbours plus the sparse user and item sides the kernel scores;
- at the small scale also ``skyrec_jobs``: the create_dataset + train jobs end to end on a planted lake
  (Parquet in, committed artefact out), for the wall time of the whole step.

Scales: ``small`` (sample scale, 20k users x 5k items, under a minute) and ``reference`` (3.5M users x
200k items, ~20 plays per user = ~70M non-zeros; 3 ALS iterations instead of 15 to bound the time --
per-iteration time is reported so the 15-iteration figure is a multiplication away).
Run: ``python benchmarks/bench_train.py [small|reference]``; prints JSON.
"""

from __future__ import annotations

import json
import multiprocessing as mp
import time
from typing import Any

from skyrec.procstat import peak_rss_mb

SCALES: dict[str, dict[str, Any]] = {
    "small": {"users": 20_000, "items": 5_000, "plays": 30, "factors": 64, "iterations": 15, "repeats": 3},
    "reference": {"users": 3_500_000, "items": 200_000, "plays": 20, "factors": 64, "iterations": 3,
                  "repeats": 1},
}


def _matrix(users: int, items: int, plays: int, seed: int = 0):
    import numpy as np
    import scipy.sparse as sp

    rng = np.random.default_rng(seed)
    counts = np.maximum(1, rng.poisson(plays, users))
    rows = np.repeat(np.arange(users, dtype=np.int32), counts)
    p = 1.0 / np.arange(1, items + 1) ** 0.8
    cols = rng.choice(items, size=len(rows), p=p / p.sum()).astype(np.int32)
    data = rng.gamma(1.0, 1.0, len(rows)).astype(np.float32)
    m = sp.csr_matrix((data, (rows, cols)), shape=(users, items), dtype=np.float32)
    m.sum_duplicates()
    return m


def _child(kind: str, spec: dict[str, Any], queue: Any) -> None:
    try:
        m = _matrix(spec["users"], spec["items"], spec["plays"])
        # imports happen before the clock starts: the figure is the fit, not Python's import time
        from implicit.cpu.als import AlternatingLeastSquares
        from implicit.nearest_neighbours import BM25Recommender
        from threadpoolctl import threadpool_limits

        from skyrec.models.als import ALSModel
        from skyrec.models.knn import ItemKNNModel
        from skyrec.models.training import fit_on

        base_mb = peak_rss_mb()
        t0 = time.perf_counter()
        if kind == "implicit_knn_direct":
            BM25Recommender(K=70, K1=1.0, B=0.2).fit(m, show_progress=False)
        elif kind == "skyrec_knn_fit":
            fit_on(ItemKNNModel(), m, None)
        elif kind == "implicit_direct":
            with threadpool_limits(1, "blas"):
                model = AlternatingLeastSquares(factors=spec["factors"], iterations=spec["iterations"],
                                                regularization=0.05, alpha=10.0, random_state=42)
                model.fit(m, show_progress=False)
        else:
            fit_on(ALSModel(factors=spec["factors"], iterations=spec["iterations"], regularization=0.05,
                            alpha=10.0, random_state=42), m, None)
        seconds = time.perf_counter() - t0
        queue.put({"seconds": seconds, "peak_mb": peak_rss_mb(), "matrix_peak_mb": base_mb, "nnz": int(m.nnz)})
    except Exception as exc:  # noqa: BLE001 - report to the parent
        queue.put({"error": f"{type(exc).__name__}: {exc}"})


def _measure(kind: str, spec: dict[str, Any]) -> dict[str, Any]:
    ctx = mp.get_context("spawn")
    q = ctx.Queue()
    p = ctx.Process(target=_child, args=(kind, spec, q))
    p.start()
    out = q.get()
    p.join()
    if "error" in out:
        raise RuntimeError(f"{kind}: {out['error']}")
    return out


def _jobs_small() -> dict[str, Any]:
    """create_dataset + train + evaluate end to end on a planted lake at sample scale, in a temporary
    SKYREC_HOME (this process only; restored afterwards)."""
    import os
    import tempfile

    previous = os.environ.get("SKYREC_HOME")
    with tempfile.TemporaryDirectory() as home:
        os.environ["SKYREC_HOME"] = home
        try:
            return _jobs_in(home)
        finally:
            if previous is None:
                os.environ.pop("SKYREC_HOME", None)
            else:
                os.environ["SKYREC_HOME"] = previous


def _jobs_in(home: str) -> dict[str, Any]:
    import datetime as dt

    from skyrec.config import load_config
    from skyrec.evaluation.synthetic import seed_lake
    from skyrec.jobs.base import RunInfo, execute
    from skyrec.storage import Lake

    cfg = load_config("local")
    if not cfg.lake_url.startswith(home):
        raise RuntimeError(f"benchmark lake {cfg.lake_url} is not under the temporary home {home}")
    lake = Lake.from_config(cfg)
    end = dt.datetime(2026, 3, 1, tzinfo=dt.UTC)
    seed_lake(cfg, lake, end=end, n_users=20_000, n_items=5_000, plays_per_user=30, seed=1)
    out: dict[str, Any] = {}
    for job in ("create_dataset", "train", "evaluate"):
        run = RunInfo(dag_id="train_model", run_id="bench", task_id=job, logical_date=end + dt.timedelta(hours=1))
        t0 = time.perf_counter()
        code, payload = execute(job, config=cfg, run=run, params={"model": "als"})
        out[f"{job}_seconds"] = round(time.perf_counter() - t0, 3)
        if code != 0:
            raise RuntimeError(f"{job}: {payload.get('error')}")
        if job == "create_dataset":
            out["events"] = payload["summary"]["events_used"]
        if job == "evaluate":
            out["ndcg_at_10"] = payload["summary"]["ndcg_at_k"]
            gate = payload["summary"]["gates"][0]  # the quality gate's paired comparison with the baseline
            out["baseline_ndcg_at_10"] = (gate.get("baseline_comparison") or {}).get("mean_b")
    return out


def _compare(peer: str, ours: str, spec: dict[str, Any]) -> dict[str, Any]:
    """Best of ``spec["repeats"]`` alternating fresh-process fits of implicit called directly (``peer``) and of
    skyrec's fit (``ours``) on the same matrix: seconds, peak RSS and their ratios."""
    runs: dict[str, list[dict[str, Any]]] = {peer: [], ours: []}
    for _ in range(spec["repeats"]):  # alternate so drift affects both alike
        for kind in runs:
            runs[kind].append(_measure(kind, spec))
    them, us = (min(runs[k], key=lambda r: r["seconds"]) for k in (peer, ours))
    return {"nnz": them["nnz"],
            "implicit_direct_seconds": round(them["seconds"], 3), "skyrec_fit_seconds": round(us["seconds"], 3),
            "skyrec_vs_implicit_time_ratio": round(us["seconds"] / them["seconds"], 3),
            "implicit_direct_peak_rss_mb": round(them["peak_mb"], 1), "skyrec_fit_peak_rss_mb": round(us["peak_mb"], 1),
            "skyrec_vs_implicit_peak_rss_ratio": round(us["peak_mb"] / them["peak_mb"], 3),
            "matrix_only_peak_rss_mb": round(them["matrix_peak_mb"], 1)}


def main(scale: str = "small") -> dict[str, Any]:
    if scale not in SCALES:
        raise SystemExit(f"unknown scale {scale!r} (known: {sorted(SCALES)})")
    spec = SCALES[scale]
    als = _compare("implicit_direct", "skyrec_fit", spec)
    result: dict[str, Any] = {
        "scale": scale, **{k: spec[k] for k in ("users", "items", "factors", "iterations")}, "nnz": als.pop("nnz"),
        **als, "skyrec_overhead_within_10pct": als["skyrec_vs_implicit_time_ratio"] <= 1.10,
        "seconds_per_iteration": round(als["skyrec_fit_seconds"] / spec["iterations"], 3),
    }
    knn = _compare("implicit_knn_direct", "skyrec_knn_fit", spec)
    del knn["nnz"], knn["matrix_only_peak_rss_mb"]
    result["knn"] = {"params": "BM25, 70 neighbours, k1 1.0, b 0.2 (the shipped defaults; no series term "
                               "without a catalogue)", **knn}
    if scale == "small":
        result["jobs"] = _jobs_small()
    return result


if __name__ == "__main__":
    from _cli import scale_argument

    print(json.dumps(main(scale_argument(__doc__, SCALES)), indent=1))
