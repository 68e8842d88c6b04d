"""Model quality benchmark: every skyrec model against implicit's ALS and BPR called directly.

Same data, same split, same run, same evaluator:

- data: ``skyrec generate`` (``skyrec.data.generate``: planted tastes, series, brands, diurnal activity),
  read from its hourly activity files and turned into a dataset by the create_dataset code
  (``skyrec.models.dataset.build_training_data``: event weights, recency decay, the default per-user
  temporal split); a second shape, the ratings-file shape (MovieLens-100k sizes: 943 users x 1,682
  items, ~60 positives per user, planted tastes from ``skyrec.evaluation.synthetic``), checks that the
  defaults do not only suit the generator;
- models: skyrec's configured defaults (``config/base.yaml`` ``models:``) through ``fit_on`` -- what the
  train job runs -- and, as peers, ``implicit.cpu.als.AlternatingLeastSquares`` and
  ``implicit.cpu.bpr.BayesianPersonalizedRanking`` with implicit's documented defaults (factors 100,
  regularization 0.01, ALS alpha 1.0 / 15 iterations, BPR learning rate 0.01 / 100 iterations) on the
  same training matrix (BPR binarised, as implicit's docs do for implicit feedback);
- figures: NDCG@10 and recall@10 with 95% user-bootstrap intervals (``skyrec.evaluation.offline``), a
  paired bootstrap of skyrec's best vs implicit's best on the same users, and on the generator's data the
  planted-truth recall@10 (``_truth/next_items.parquet``: the 10 items each user was most likely to play
  next; the oracle lists exactly those the user has not played yet, and the figure is given as a
  fraction of the oracle's);
- EASE and item-kNN fit time and peak RSS at 20k items (each in a fresh process), and what the memory
  guard says at 200k items.

``tune`` (``python benchmarks/bench_models.py tune``) runs the small grids the defaults were chosen from.
Run: ``python benchmarks/bench_models.py [small|reference|tune]``; prints JSON.
"""

from __future__ import annotations

import datetime as dt
import json
import multiprocessing as mp
import resource
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

SCALES: dict[str, dict[str, Any]] = {
    "small": {"users": 4000, "items": 3000, "days": 28, "events_per_user": 40.0, "resamples": 1000,
              "scale_items": 20_000, "scale_users": 50_000},
    "reference": {"users": 20_000, "items": 10_000, "days": 28, "events_per_user": 40.0, "resamples": 1000,
                  "scale_items": 20_000, "scale_users": 200_000},
}
K = 10
IMPLICIT_ALS = {"factors": 100, "regularization": 0.01, "alpha": 1.0, "iterations": 15}
IMPLICIT_BPR = {"factors": 100, "learning_rate": 0.01, "regularization": 0.01, "iterations": 100}
SKYREC_MODELS = ("als", "bpr", "ease", "knn", "popularity")


# ---- data -----------------------------------------------------------------------------------------

def generator_data(users: int, items: int, days: int, events_per_user: float, seed: int = 7) -> tuple[Any, Any]:
    """(TrainingData with the default per-user split, truth table) from ``skyrec generate``'s files."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    from skyrec.config import load_config
    from skyrec.data.generate import generate
    from skyrec.data.schemas import ACTIVITY
    from skyrec.models.dataset import build_training_data

    home = Path(tempfile.mkdtemp(prefix="skyrec-bench-models-"))
    config = load_config("local", environ={"SKYREC_HOME": str(home)})
    end = dt.datetime(2026, 3, 1, tzinfo=dt.UTC)
    generate(config, users=users, items=items, days=days, events_per_user=events_per_user, seed=seed,
             end=end.isoformat(), bad_rate=0.0, progress=False, metadata=False)
    source = Path(config.source_url)
    files = sorted((source / config.source.activity_prefix).rglob("*.parquet"))
    tables = [pq.read_table(f, columns=ACTIVITY.names) for f in files]
    activity = pa.concat_tables([t.cast(ACTIVITY) for t in tables])
    events = set(config.ingest.activity.event_types)
    activity = activity.filter(pa.array([e in events for e in activity.column("event_type").to_pylist()]))
    t = config.training
    data, _ = build_training_data(activity, None, weighting=dict(t.weighting),
                                  played_fraction_weight=t.played_fraction_weight,
                                  half_life_days=t.recency_half_life_days, holdout_days=t.holdout_days, end=end,
                                  split={"kind": "per_user", **t.split.model_dump(exclude={"kind"})})
    truth = pq.read_table(source / "_truth" / "next_items.parquet", columns=["user_id", "item_id"])
    return data, truth


def ratings_data(seed: int = 3) -> Any:
    """The ratings-file shape: 943 users x 1,682 items, ~60 positives each, over 215 days, per-user split."""
    from skyrec.config import load_config
    from skyrec.evaluation.synthetic import planted_tables
    from skyrec.models.dataset import build_training_data

    config = load_config("local", environ={"SKYREC_HOME": tempfile.mkdtemp(prefix="skyrec-bench-ratings-")})
    end = dt.datetime(1998, 4, 23, tzinfo=dt.UTC)
    activity, _, _ = planted_tables(n_users=943, n_items=1682, n_topics=18, plays_per_user=60, purity=0.7,
                                    days=215, new_days=20, new_fraction=0.05, end=end, seed=seed)
    t = config.training
    data, _ = build_training_data(activity, None, weighting={"play": 1.0, "complete": 1.0},
                                  played_fraction_weight=0.0, half_life_days=10_000.0,
                                  holdout_days=t.holdout_days, end=end,
                                  split={"kind": "per_user", **t.split.model_dump(exclude={"kind"})})
    return data


# ---- fitting and scoring ---------------------------------------------------------------------------

def _implicit(kind: str, train: Any, params: dict[str, Any]) -> tuple[Any, Any, float]:
    import numpy as np
    import scipy.sparse as sp
    from threadpoolctl import threadpool_limits

    m = sp.csr_matrix(train, dtype=np.float32)
    if kind == "bpr":
        m = m.copy()
        m.data[:] = 1.0
    with threadpool_limits(1, "blas"):
        if kind == "als":
            from implicit.cpu.als import AlternatingLeastSquares
            model: Any = AlternatingLeastSquares(random_state=42, **params)
        else:
            from implicit.cpu.bpr import BayesianPersonalizedRanking
            model = BayesianPersonalizedRanking(random_state=42, **params)
        t0 = time.perf_counter()
        model.fit(m, show_progress=False)
        seconds = time.perf_counter() - t0
    return model.user_factors, model.item_factors, seconds


def score_models(data: Any, models: dict[str, tuple[str, dict[str, Any]]], *, resamples: int,
                 truth: Any = None, peers: bool = True) -> dict[str, Any]:
    """Fit ``{label: (skyrec model name, params)}`` (and implicit's peers) on ``data.train``; evaluate all."""
    import numpy as np

    from skyrec.config import load_config
    from skyrec.evaluation.offline import Scored, evaluate
    from skyrec.evaluation.stats import paired_comparison
    from skyrec.models import model_class
    from skyrec.models.training import fit_on

    config = load_config("local", environ={"SKYREC_HOME": tempfile.mkdtemp(prefix="skyrec-bench-cfg-")})
    n_items = data.train.shape[1]
    scored: dict[str, Scored] = {}
    fit_seconds: dict[str, float] = {}
    for label, (name, params) in models.items():
        fitted = fit_on(model_class(config, name)(**params), data.train, None)
        full, mask = fitted.full_item_factors(n_items)
        scored[label] = Scored(fitted.user_factors, full, None if mask.all() else mask)
        fit_seconds[label] = round(fitted.seconds, 2)
    if peers:
        played = np.bincount(data.train.indices, minlength=n_items) > 0
        for kind, params in (("als", IMPLICIT_ALS), ("bpr", IMPLICIT_BPR)):
            U, V, seconds = _implicit(kind, data.train, params)
            scored[f"implicit_{kind}"] = Scored(np.asarray(U, np.float32), np.asarray(V, np.float32),
                                                None if played.all() else played)
            fit_seconds[f"implicit_{kind}"] = round(seconds, 2)
    per_user: dict[str, Any] = {}
    res = evaluate(scored, data.train, data.test, k=K, resamples=resamples, per_user_out=per_user)
    out: dict[str, Any] = {"users": res["users_evaluated"], "items": n_items, "train_nnz": int(data.train.nnz),
                           "models": {}}
    for label, r in res["models"].items():
        o = r["overall"]
        out["models"][label] = {"ndcg_at_10": round(o["ndcg_at_k"], 4),
                                "ndcg_ci": [round(x, 4) for x in o["ci"]["ndcg_at_k"]],
                                "recall_at_10": round(o["recall_at_k"], 4),
                                "recall_ci": [round(x, 4) for x in o["ci"]["recall_at_k"]],
                                "fit_seconds": fit_seconds[label]}
    if truth is not None:
        oracle = _truth_recall(data, None, truth)
        out["truth_oracle_recall_at_10"] = round(oracle, 4)
        for label, s in scored.items():
            got = _truth_recall(data, s, truth)
            out["models"][label]["truth_recall_at_10"] = round(got, 4)
            out["models"][label]["truth_fraction_of_oracle"] = round(got / oracle, 4) if oracle else None
    if peers:
        ours = max((m for m in out["models"] if not m.startswith("implicit_") and m != "popularity"),
                   key=lambda m: out["models"][m]["ndcg_at_10"])
        theirs = max(("implicit_als", "implicit_bpr"), key=lambda m: out["models"][m]["ndcg_at_10"])
        values = per_user["values"]
        cmp = paired_comparison(values[ours]["overall"]["ndcg_at_k"], values[theirs]["overall"]["ndcg_at_k"],
                                resamples=resamples, seed=0, confidence=0.95)
        out["best"] = {"skyrec": ours, "implicit": theirs, "ndcg_paired": cmp,
                       "ndcg_ratio": round(out["models"][ours]["ndcg_at_10"]
                                           / max(out["models"][theirs]["ndcg_at_10"], 1e-12), 3)}
    return out


def _truth_recall(data: Any, s: Any, truth: Any) -> float:
    """Recall@10 of each user's 10 most likely next items (played ones excluded, as precompute does).
    ``s`` None: the oracle, which lists exactly the truth items the user has not played yet."""
    import numpy as np

    from skyrec.evaluation.metrics import top_k
    from skyrec.models.representations import scores

    u_index = {u: i for i, u in enumerate(data.user_ids.tolist())}
    i_index = {x: j for j, x in enumerate(data.item_ids.tolist())}
    want: dict[int, set[int]] = {}
    n_truth: dict[int, int] = {}
    for u, x in zip(truth.column("user_id").to_pylist(), truth.column("item_id").to_pylist(), strict=True):
        if u in u_index:
            r = u_index[u]
            n_truth[r] = n_truth.get(r, 0) + 1
            if x in i_index:
                want.setdefault(r, set()).add(i_index[x])
    rows = np.array(sorted(n_truth), dtype=np.int64)
    seen = (data.train + data.test).tocsr()
    total = 0.0
    for start in range(0, len(rows), 1024):
        b = rows[start:start + 1024]
        if s is None:
            for user in b:
                fresh = want.get(int(user), set()) - set(seen[int(user)].indices.tolist())
                total += min(K, len(fresh)) / min(K, n_truth[int(user)])
            continue
        sc = scores(s.user_factors[b], s.item_factors)
        if s.scorable is not None:
            sc[:, ~s.scorable] = -np.inf
        ex = seen[b]
        sc[np.repeat(np.arange(len(b)), np.diff(ex.indptr)), ex.indices] = -np.inf
        rec, _ = top_k(sc, K)
        for r, user in enumerate(b):
            total += len(want.get(int(user), set()) & set(rec[r].tolist())) / min(K, n_truth[int(user)])
    return total / max(len(rows), 1)


def default_models() -> dict[str, tuple[str, dict[str, Any]]]:
    from skyrec.config import load_config

    config = load_config("local", environ={"SKYREC_HOME": tempfile.mkdtemp(prefix="skyrec-bench-cfg-")})
    out = {name: (name, dict(config.models[name].params)) for name in SKYREC_MODELS}
    out["knn_cosine"] = ("knn", {**config.models["knn"].params, "similarity": "cosine"})
    return out


# ---- EASE / kNN at scale, one fresh process each -----------------------------------------------------

def _scale_child(kind: str, users: int, items: int, queue: Any) -> None:
    try:
        sys.path.insert(0, str(Path(__file__).parent))
        from bench_train import _matrix

        m = _matrix(users, items, 30)
        from skyrec.models.ease import EASEModel
        from skyrec.models.knn import ItemKNNModel
        from skyrec.models.representations import MemoryGuardError

        model = EASEModel() if kind == "ease" else ItemKNNModel()  # the shipped memory limit
        t0 = time.perf_counter()
        try:
            model.fit(m)
        except MemoryGuardError as exc:
            queue.put({"refused": str(exc), "seconds": round(time.perf_counter() - t0, 3)})
            return
        seconds = time.perf_counter() - t0
        queue.put({"fit_seconds": round(seconds, 2), "peak_rss_mb": round(resource.getrusage(
            resource.RUSAGE_SELF).ru_maxrss / 1024.0), "users": users, "items": items, "nnz": int(m.nnz)})
    except Exception as exc:  # noqa: BLE001 - reported in the figures
        queue.put({"error": repr(exc)})


def at_scale(kind: str, users: int, items: int) -> dict[str, Any]:
    ctx = mp.get_context("spawn")
    queue = ctx.Queue()
    p = ctx.Process(target=_scale_child, args=(kind, users, items, queue))
    p.start()
    p.join()
    return queue.get() if not queue.empty() else {"error": f"exit code {p.exitcode}"}


# ---- tuning grids (how the defaults were chosen) ------------------------------------------------------

GRIDS: dict[str, list[dict[str, Any]]] = {
    "als": [{"factors": f, "regularization": r, "alpha": a, "iterations": 15}
            for f in (32, 64, 128) for r in (0.05, 1.0) for a in (0.5, 1.0, 2.0, 4.0, 10.0, 40.0)],
    "bpr": [{"factors": f, "learning_rate": lr, "regularization": r, "iterations": 100}
            for f in (64, 128) for lr in (0.005, 0.01, 0.02, 0.05) for r in (0.001, 0.01)]
    + [{"factors": 64, "learning_rate": 0.01, "regularization": 0.001, "iterations": it} for it in (200, 400)],
    "ease": [{"regularization": r, "binary": b} for r in (50.0, 100.0, 200.0, 300.0, 500.0, 1000.0)
             for b in (True, False)],
    "knn": [{"similarity": s, "neighbours": n} for s in ("cosine", "bm25") for n in (50, 100, 200)],
}


def tune(shapes: tuple[str, ...] = ("generator", "ratings")) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for shape in shapes:
        data = generator_data(3000, 2000, 28, 40.0)[0] if shape == "generator" else ratings_data()
        rows = {}
        for name, grid in GRIDS.items():
            models = {f"{name}:{json.dumps(p, sort_keys=True)}": (name, p) for p in grid}
            res = score_models(data, models, resamples=200, peers=False)
            rows[name] = sorted(((m["ndcg_at_10"], label) for label, m in res["models"].items()), reverse=True)
        out[shape] = rows
    return out


def main(scale: str = "small") -> dict[str, Any]:
    if scale == "tune":
        return tune()
    spec = SCALES[scale]
    t0 = time.perf_counter()
    data, truth = generator_data(spec["users"], spec["items"], spec["days"], spec["events_per_user"])
    generated = round(time.perf_counter() - t0, 1)
    out: dict[str, Any] = {"scale": scale, "k": K, "split": "per_user (latest 20% of each user's positives)",
                           "implicit_als": IMPLICIT_ALS, "implicit_bpr": IMPLICIT_BPR,
                           "generator": {"users": spec["users"], "items": spec["items"], "days": spec["days"],
                                         "events_per_user": spec["events_per_user"], "seconds": generated}}
    models = default_models()
    out["skyrec_params"] = {k: v[1] for k, v in models.items()}
    out["generator_figures"] = score_models(data, models, resamples=spec["resamples"], truth=truth)
    out["ratings_figures"] = score_models(ratings_data(), models, resamples=spec["resamples"])
    out["scale"] = {kind: {f"{spec['scale_items']}_items": at_scale(kind, spec["scale_users"], spec["scale_items"]),
                           "200000_items": at_scale(kind, 1000, 200_000)} for kind in ("ease", "knn")}
    return out


if __name__ == "__main__":
    print(json.dumps(main(sys.argv[1] if len(sys.argv) > 1 else "small"), indent=1, default=str))
