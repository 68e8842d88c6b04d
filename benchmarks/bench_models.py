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
  planted-truth recall@10 (``_truth/next_items.parquet``: the generator's own top 10 by planted probability
  of being played next at the end; not sampled). References: the oracle lists exactly the truth items the
  user has not played yet -- which is also the Bayes ranking (all items by planted probability, played
  ones excluded) over the items anybody played -- and the oracle over the items with training plays (the
  most a fit on the training part can score); and the ceiling, the Bayes decision from the activity under
  the generator's own model (``truth_ceiling.py``: what no estimator can beat in expectation). Models are
  measured fit on the training part and fit on all the data (what the train job publishes), the latter
  also by the truth items' release age;
- EASE and item-kNN fit time and peak RSS at 20k items (each in a fresh process), and what the memory
  guard says at 200k items.

``tune`` (``python benchmarks/bench_models.py tune``) runs the bounded search the defaults were chosen with
(``skyrec.evaluation.search`` on a validation split carved from each shape's training part).
``ceiling`` (``python benchmarks/bench_models.py ceiling [factor ...]``, ~10 min) measures the models and the
ceiling at 1, 3 and 10 x the listening per user: whether more data makes "0.9 of the oracle" reachable.
``kernels`` (~3 min) measures only the scoring figures: precompute's kernel on ALS and item-kNN, and EASE /
item-kNN at 20k and 200k items (fit, memory, item-kNN's kernel against implicit's ``recommend``).
Run: ``python benchmarks/bench_models.py [small|reference|tune|ceiling|kernels]``; prints JSON.
"""

from __future__ import annotations

import datetime as dt
import json
import multiprocessing as mp
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
#: every folder this run writes (generated data, model homes) lives under one temporary folder, removed when
#: the process exits (a spawned child has its own)
_RUN_DIR = tempfile.TemporaryDirectory(prefix="skyrec-bench-models-")


def _scratch(prefix: str) -> str:
    return tempfile.mkdtemp(prefix=prefix, dir=_RUN_DIR.name)


IMPLICIT_ALS = {"factors": 100, "regularization": 0.01, "alpha": 1.0, "iterations": 15}
IMPLICIT_BPR = {"factors": 100, "learning_rate": 0.01, "regularization": 0.01, "iterations": 100}
SKYREC_MODELS = ("als", "bpr", "ease", "knn", "popularity")


# ---- data -----------------------------------------------------------------------------------------

def generator_data(users: int, items: int, days: int, events_per_user: float, seed: int = 7) -> tuple[Any, Any]:
    """(TrainingData with the default per-user split, truth table) from ``skyrec generate``'s files."""
    import pyarrow as pa
    import pyarrow.compute as pc
    import pyarrow.parquet as pq

    from skyrec.config import load_config
    from skyrec.data.generate import generate
    from skyrec.data.schemas import ACTIVITY, CATALOGUE
    from skyrec.models.dataset import build_training_data

    home = Path(_scratch("generated-"))
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
    # the generator's catalogue (brands, release times: what the series term reads), for the played items
    # only, so the item universe -- and the oracle -- stay those of the activity
    played = pa.array(sorted(set(activity.column("item_id").to_pylist())), pa.string())
    catalogue = pq.read_table(source / "_truth" / "catalogue.parquet", columns=CATALOGUE.names).cast(CATALOGUE)
    catalogue = catalogue.filter(pc.is_in(catalogue.column("item_id"), value_set=played))
    t = config.training
    data, _ = build_training_data(activity, catalogue, weighting=dict(t.weighting),
                                  played_fraction_weight=t.played_fraction_weight,
                                  half_life_days=t.recency_half_life_days, holdout_days=t.holdout_days, end=end,
                                  split={"kind": "per_user", **t.split.model_dump(exclude={"kind"})})
    truth = pq.read_table(source / "_truth" / "next_items.parquet", columns=["user_id", "item_id"])
    released = pq.read_table(source / "_truth" / "catalogue.parquet", columns=["item_id", "release_ts"])
    ages = {i: (end - ts).total_seconds() / 86400.0 for i, ts in zip(released.column("item_id").to_pylist(),
                                                                    released.column("release_ts").to_pylist(),
                                                                    strict=True)}
    truth = truth.append_column("age_days", pa.array([ages.get(i, float("nan"))
                                                      for i in truth.column("item_id").to_pylist()], pa.float64()))
    return data, truth.replace_schema_metadata({"source": str(source), "end": end.isoformat(), "seed": str(seed),
                                                 "users": str(users), "items": str(items), "days": str(days)})


def ratings_data(seed: int = 3) -> Any:
    """The ratings-file shape: 943 users x 1,682 items, ~60 positives each, over 215 days, per-user split."""
    from skyrec.config import load_config
    from skyrec.evaluation.synthetic import planted_tables
    from skyrec.models.dataset import build_training_data

    config = load_config("local", environ={"SKYREC_HOME": _scratch("ratings-")})
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


def _fit_scored(models: dict[str, tuple[str, dict[str, Any]]], matrix: Any, *, peers: bool,
                context: Any = None) -> tuple[dict[str, Any], dict[str, float]]:
    """Fit every model (and implicit's peers) on ``matrix``: ``({label: Scored}, {label: fit seconds})``;
    ``context``: the items' brands and release times (``skyrec.models.series.item_context``) as the train
    job passes them."""
    import numpy as np
    import scipy.sparse as sp

    from skyrec.config import load_config
    from skyrec.evaluation.offline import Scored
    from skyrec.models import model_class
    from skyrec.models.training import fit_on

    config = load_config("local", environ={"SKYREC_HOME": _scratch("config-")})
    n_items = matrix.shape[1]
    scored: dict[str, Scored] = {}
    fit_seconds: dict[str, float] = {}
    for label, (name, params) in models.items():
        fitted = fit_on(model_class(config, name)(**params), matrix, None, context)
        full, mask = fitted.full_item_factors(n_items)
        scored[label] = Scored(fitted.user_factors, full, None if mask.all() else mask)
        fit_seconds[label] = round(fitted.seconds, 2)
    if peers:
        played = np.bincount(sp.csr_matrix(matrix).indices, minlength=n_items) > 0
        for kind, params in (("als", IMPLICIT_ALS), ("bpr", IMPLICIT_BPR)):
            U, V, seconds = _implicit(kind, matrix, params)
            scored[f"implicit_{kind}"] = Scored(np.asarray(U, np.float32), np.asarray(V, np.float32),
                                                None if played.all() else played)
            fit_seconds[f"implicit_{kind}"] = round(seconds, 2)
    return scored, fit_seconds


def score_models(data: Any, models: dict[str, tuple[str, dict[str, Any]]], *, resamples: int,
                 truth: Any = None, peers: bool = True, pairs: tuple[tuple[str, str], ...] = ()) -> dict[str, Any]:
    """Fit ``{label: (skyrec model name, params)}`` (and implicit's peers) on ``data.train``; evaluate all.
    With ``truth``: the planted-truth figures, of these fits and of fits on all the data (``interactions``:
    what the train job publishes with ``training.fit_on_all_data``, the default). ``pairs``: paired NDCG@10
    comparisons ``(a, b)`` on the same users (``out["paired"]["a vs b"]``)."""
    import numpy as np

    from skyrec.evaluation.offline import evaluate
    from skyrec.evaluation.stats import paired_comparison
    from skyrec.models.series import item_context

    n_items = data.train.shape[1]
    scored, fit_seconds = _fit_scored(models, data.train, peers=peers, context=item_context(data, "train"))
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
        trained = np.bincount(data.train.indices, minlength=n_items) > 0
        oracle = _truth_recall(data, None, truth)
        oracle_trained = _truth_recall(data, None, truth, scorable=trained)
        out["truth_users"] = _truth_users(data, truth)
        out["truth_oracle_recall_at_10"] = round(oracle, 4)
        out["truth_oracle_trained_items_recall_at_10"] = round(oracle_trained, 4)
        published, _ = _fit_scored(models, data.interactions, peers=peers,
                                   context=item_context(data, "interactions"))
        for label in scored:
            got = _truth_recall(data, scored[label], truth)
            pub = _truth_recall(data, published[label], truth)
            m = out["models"][label]
            m["truth_recall_at_10"] = round(got, 4)
            m["truth_fraction_of_oracle"] = round(got / oracle, 4) if oracle else None
            m["truth_fraction_of_oracle_trained_items"] = round(got / oracle_trained, 4) if oracle_trained else None
            m["truth_recall_at_10_all_data_fit"] = round(pub, 4)
            m["truth_fraction_of_oracle_all_data_fit"] = round(pub / oracle, 4) if oracle else None
            by_age, by_brand = _truth_hits(data, published[label], truth)
            m["truth_hits_by_release_age_all_data_fit"] = by_age
            m["truth_hits_by_brand_all_data_fit"] = by_brand
    values = per_user["values"]
    out["paired"] = {}
    for a, b in pairs:
        c = paired_comparison(values[a]["overall"]["ndcg_at_k"], values[b]["overall"]["ndcg_at_k"],
                              resamples=resamples, seed=0, confidence=0.95)
        out["paired"][f"{a} vs {b}"] = {"relative": c["relative"], "relative_ci": c["relative_ci"],
                                        "p_value": c["p_value"]}
    if peers:
        ours = max((m for m in out["models"] if not m.startswith("implicit_") and m != "popularity"),
                   key=lambda m: out["models"][m]["ndcg_at_10"])
        theirs = max(("implicit_als", "implicit_bpr"), key=lambda m: out["models"][m]["ndcg_at_10"])
        cmp = paired_comparison(values[ours]["overall"]["ndcg_at_k"], values[theirs]["overall"]["ndcg_at_k"],
                                resamples=resamples, seed=0, confidence=0.95)
        out["best"] = {"skyrec": ours, "implicit": theirs, "ndcg_paired": cmp,
                       "ndcg_ratio": round(out["models"][ours]["ndcg_at_10"]
                                           / max(out["models"][theirs]["ndcg_at_10"], 1e-12), 3)}
    return out


AGE_BUCKETS = ((0.0, 2.0, "released < 2 days before the end"), (2.0, 7.0, "2-7 days"),
               (7.0, float("inf"), ">= 7 days"))


def _top_unplayed(s: Any, rows: Any, seen: Any) -> Any:
    """The model's top K for the user ``rows``: scorable items only, each user's played items excluded (as
    precompute does)."""
    import numpy as np

    from skyrec.evaluation.metrics import top_k
    from skyrec.models.representations import scores

    sc = scores(s.user_factors[rows], s.item_factors)
    if s.scorable is not None:
        sc[:, ~s.scorable] = -np.inf
    ex = seen[rows]
    sc[np.repeat(np.arange(len(rows)), np.diff(ex.indptr)), ex.indices] = -np.inf
    return top_k(sc, K)[0]


BRAND_BUCKETS = ("a programme (brand) the user has played", "a programme the user has never played")


def _truth_hits(data: Any, s: Any, truth: Any) -> tuple[dict[str, Any], dict[str, Any]]:
    """Of the truth pairs the oracle lists (not yet played by the user, played by somebody), the share in
    the model's top 10, by how long before the end the item was released, and by whether the item's brand is
    one the user has played (the catalogue's brands, ``item_context``)."""
    import numpy as np

    from skyrec.models.series import item_context

    ctx = item_context(data, "interactions")
    brand = ctx.brand if ctx is not None else np.full(len(data.item_ids), -1)

    u_index = {u: i for i, u in enumerate(data.user_ids.tolist())}
    i_index = {x: j for j, x in enumerate(data.item_ids.tolist())}
    seen = (data.train + data.test).tocsr()
    pairs: dict[int, list[tuple[int, float]]] = {}
    for u, x, age in zip(truth.column("user_id").to_pylist(), truth.column("item_id").to_pylist(),
                         truth.column("age_days").to_pylist(), strict=True):
        if u in u_index and x in i_index:
            pairs.setdefault(u_index[u], []).append((i_index[x], age))
    rows = np.array(sorted(pairs), dtype=np.int64)
    n = dict.fromkeys([label for *_, label in AGE_BUCKETS] + list(BRAND_BUCKETS), 0)
    hit = dict.fromkeys(n, 0)
    for start in range(0, len(rows), 1024):
        b = rows[start:start + 1024]
        rec = _top_unplayed(s, b, seen)
        for r, user in enumerate(b):
            played = seen[int(user)].indices
            followed = set(brand[played].tolist()) - {-1}
            played_set, top = set(played.tolist()), set(rec[r].tolist())
            for j, age in pairs[int(user)]:
                if j in played_set:
                    continue
                age_label = next((lb for lo, hi, lb in AGE_BUCKETS if lo <= age < hi), AGE_BUCKETS[-1][2])
                for label in (age_label, BRAND_BUCKETS[0] if brand[j] in followed else BRAND_BUCKETS[1]):
                    n[label] += 1
                    hit[label] += j in top
    out = {label: {"pairs": n[label], "in_top_10": round(hit[label] / n[label], 4) if n[label] else None}
           for label in n}
    return ({lb: out[lb] for *_, lb in AGE_BUCKETS}, {lb: out[lb] for lb in BRAND_BUCKETS})


def _truth_users(data: Any, truth: Any) -> dict[str, Any]:
    """How many truth items a user has, how many of them nobody played, how many the user already played."""
    import numpy as np

    u_index = {u: i for i, u in enumerate(data.user_ids.tolist())}
    i_index = {x: j for j, x in enumerate(data.item_ids.tolist())}
    seen = (data.train + data.test).tocsr()
    trained = np.bincount(data.train.indices, minlength=len(i_index)) > 0
    n = unknown = played = untrained = 0
    users = set()
    for u, x in zip(truth.column("user_id").to_pylist(), truth.column("item_id").to_pylist(), strict=True):
        if u not in u_index:
            continue
        users.add(u)
        n += 1
        if x not in i_index:
            unknown += 1
        elif i_index[x] in set(seen[u_index[u]].indices.tolist()):
            played += 1
        elif not trained[i_index[x]]:
            untrained += 1
    return {"users": len(users), "truth_pairs": n, "nobody_played": unknown, "already_played_by_the_user": played,
            "fresh_without_training_plays": untrained, "fresh_with_training_plays": n - unknown - played - untrained}


def _truth_recall(data: Any, s: Any, truth: Any, *, scorable: Any = None) -> float:
    """Recall@10 of each user's 10 most likely next items (played ones excluded, as precompute does).
    ``s`` None: the oracle, which lists exactly the truth items the user has not played yet (the truth file
    is the generator's own top 10 by planted probability, so this is also the Bayes ranking -- all items by
    planted probability, played ones excluded -- over the items anybody played); with ``scorable`` (a mask
    of items), only those of them a model fit on that data could score."""
    import numpy as np


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
                if scorable is not None:
                    fresh = {j for j in fresh if scorable[j]}
                total += min(K, len(fresh)) / min(K, n_truth[int(user)])
            continue
        rec = _top_unplayed(s, b, seen)
        for r, user in enumerate(b):
            total += len(want.get(int(user), set()) & set(rec[r].tolist())) / min(K, n_truth[int(user)])
    return total / max(len(rows), 1)


def _truth_source(truth: Any) -> tuple[Path, int, list[dict[str, Any]]]:
    """The generator's folder behind ``truth``, the end of its data (µs) and its catalogue's rows."""
    import pyarrow.parquet as pq

    meta = {k.decode(): v.decode() for k, v in (truth.schema.metadata or {}).items()}
    source = Path(meta["source"])
    end_us = int(dt.datetime.fromisoformat(meta["end"]).timestamp() * 1_000_000)
    return source, end_us, pq.read_table(source / "_truth" / "catalogue.parquet").to_pylist()


def _generator_form(data: Any, cat: list[dict[str, Any]], end_us: int) -> tuple[Any, Any, Any, dict[str, int],
                                                                          dict[str, int]]:
    """The generator's next-item scoring form over ``data``'s items, one column per brand (its six newest
    episodes released by the cold window, 0.55 x 0.45^k), per genre (its 20 most popular available items, by
    share) and one for the 20 most popular overall: ``(V, item brand codes, item genre codes, brand codes,
    genre codes)``. A user's row of mode weights times ``V.T`` is their planted next-item probability."""
    import numpy as np

    i_index = {x: j for j, x in enumerate(data.item_ids.tolist())}
    n = len(i_index)
    brands = sorted({r["brand_id"] for r in cat})
    genres = sorted({r["genres"][0] for r in cat if r["genres"]})
    b_code, g_code = {b: k for k, b in enumerate(brands)}, {g: k for k, g in enumerate(genres)}
    brand, genre = np.full(n, -1), np.full(n, -1)
    release, weight = np.zeros(n, np.int64), np.zeros(n)
    hour_us = 3_600_000_000
    cutoff, now = end_us - 6 * hour_us, end_us - hour_us  # the generator's cold window; its last hour's sampler
    for r in cat:
        j = i_index.get(r["item_id"])
        if j is None:
            continue
        brand[j] = b_code[r["brand_id"]]
        genre[j] = g_code[r["genres"][0]] if r["genres"] else -1
        us = lambda t: int(t.timestamp() * 1_000_000)  # noqa: E731
        release[j] = us(r["release_ts"])
        until = r["available_until"]
        available = (release[j] <= now and us(r["available_from"]) <= now and (until is None or us(until) > now)
                     and not r["cold_start"])
        weight[j] = float(r["popularity"]) if available else 0.0
    nb, ng = len(brands), len(genres)
    V = np.zeros((n, nb + ng + 1), np.float32)
    for b in range(nb):
        m = np.flatnonzero((brand == b) & (release <= cutoff))
        m = m[np.argsort(-release[m], kind="stable")][:6]
        V[m, b] = 0.55 * 0.45 ** np.arange(len(m))
    for g in range(ng):
        m = np.flatnonzero(genre == g)
        top = m[np.argsort(-weight[m], kind="stable")[:20]]
        if weight[m].sum() > 0:
            V[top, nb + g] = weight[top] / weight[m].sum()
    top = np.argsort(-weight, kind="stable")[:20]
    V[top, -1] = weight[top] / weight.sum()
    return V, brand, genre, b_code, g_code


def plug_in_references(data: Any, truth: Any) -> dict[str, Any]:
    """Planted-truth recall (as a fraction of the oracle) of the generator's own scoring form -- the newest
    six released episodes of a user's brands (0.55 x 0.45^k), the 20 most popular available items of their
    genres, the 20 most popular overall, mixed by the user's mode probabilities -- fed (a) the user's true
    planted tastes (``_truth/user_tastes.parquet``: checks the form, ~1.0) and (b) tastes *estimated from the
    user's plays*: brand and genre shares of their played items, the genre and popular terms weighted
    ``genre_weight`` and ``popular_weight`` (the best of a small grid is reported, so it flatters the
    estimate). Popularity and availability are the generator's own, known to neither skyrec nor implicit.
    (b) is what a model that knows exactly how the data were made can reach from this much listening."""
    import numpy as np
    import pyarrow.parquet as pq
    import scipy.sparse as sp

    from skyrec.evaluation.offline import Scored

    source, end_us, cat = _truth_source(truth)
    tastes = pq.read_table(source / "_truth" / "user_tastes.parquet").to_pylist()
    V, brand, genre, b_code, g_code = _generator_form(data, cat, end_us)
    n, nb, ng = len(brand), len(b_code), len(g_code)
    u_index = {u: i for i, u in enumerate(data.user_ids.tolist())}
    U_true = np.zeros((len(u_index), nb + ng + 1), np.float32)
    for r in tastes:
        u = u_index.get(r["user_id"])
        if u is None:
            continue
        for b, w in zip(r["brands"], r["brand_weights"], strict=True):
            U_true[u, b_code[b]] += r["p_brand"] * w
        for g, w in zip(r["genres"], r["genre_weights"], strict=True):
            U_true[u, nb + g_code[g]] += r["p_genre"] * w
        U_true[u, -1] = r["p_popular"]
    played = sp.csr_matrix(data.seen, dtype=np.float32)
    per_user = np.maximum(np.asarray(played.sum(axis=1)).ravel(), 1.0)[:, None]
    onehot = lambda codes, k: sp.csr_matrix((np.ones(n), (np.arange(n), np.maximum(codes, 0))),  # noqa: E731
                                            shape=(n, k)).multiply((codes >= 0)[:, None]).tocsr()
    brand_share = (played @ onehot(brand, nb)).toarray() / per_user
    genre_share = (played @ onehot(genre, ng)).toarray() / per_user
    oracle = _truth_recall(data, None, truth)
    out: dict[str, Any] = {"true_tastes": round(_truth_recall(data, Scored(U_true, V, None), truth) / oracle, 4)}
    best = None
    for gw, pw in ((0.5, 0.1), (1.0, 0.2), (1.0, 0.5), (2.0, 0.5)):
        U = np.hstack([brand_share, gw * genre_share, np.full((len(u_index), 1), pw)]).astype(np.float32)
        got = round(_truth_recall(data, Scored(U, V, None), truth) / oracle, 4)
        if best is None or got > best[0]:
            best = (got, gw, pw)
    assert best is not None
    out["estimated_tastes"] = {"fraction_of_oracle": best[0], "genre_weight": best[1], "popular_weight": best[2]}
    return out


def bayes_references(data: Any, truth: Any) -> dict[str, Any]:
    """Planted-truth recall (fraction of the oracle) of the Bayes decision under the generator's own model
    (``truth_ceiling.bayes_ceiling``): from the activity alone (``bayes``: what no estimator can beat in
    expectation) and told each user's planted brands and genres (``bayes_true_brands_and_genres``: more than
    any model can know; also the sampler's check)."""
    sys.path.insert(0, str(Path(__file__).parent))
    from truth_ceiling import bayes_ceiling

    return bayes_ceiling(data, truth)


def density_check(spec: dict[str, Any], factor: float = 10.0, reference_items: float = 13.0) -> dict[str, Any]:
    """item-kNN's defaults on the generator's data with ``factor`` x the listening per user: the default (its
    series term scaled with the median items per user) against the same weight held at the strength it has
    at the default density (``reference_items``: the median items per user of the default's training part),
    as the term was before that scale. NDCG@10 on the test split (paired) and planted truth."""
    import numpy as np

    from skyrec.models.series import typical_user_items

    data, truth = generator_data(spec["users"], spec["items"], spec["days"], spec["events_per_user"] * factor)
    knn = default_models()["knn"]
    items = typical_user_items(data.train)
    held = ("knn", {**knn[1], "series_weight": float(np.round(knn[1]["series_weight"] * reference_items / items, 4))})
    candidates = {"knn": knn, "knn_weight_not_rescaled": held}
    figures = score_models(data, candidates, resamples=spec["resamples"], truth=truth, peers=False,
                           pairs=(("knn", "knn_weight_not_rescaled"),))
    return {"events_per_user": spec["events_per_user"] * factor, "median_items_per_user_train": items,
            "not_rescaled_weight": held[1]["series_weight"],
            "models": {label: {k: m[k] for k in ("ndcg_at_10", "ndcg_ci", "truth_fraction_of_oracle_all_data_fit")}
                       for label, m in figures["models"].items()},
            "paired": figures["paired"]["knn vs knn_weight_not_rescaled"]}


def ceiling_by_density(factors: tuple[float, ...] = (1.0, 3.0, 10.0), resamples: int = 200) -> dict[str, Any]:
    """Does more listening per user make "0.9 of the oracle" reachable? For each density ``factor`` (x the
    small scale's events per user, same generator and seed): the planted-truth recall of item-kNN, EASE and
    ALS with their defaults (all-data fit) and of the Bayes decision from the activity (``bayes_references``'
    first chain), each as a fraction of the oracle, and the best model as a fraction of that ceiling. The
    oracle itself moves with the density (more of the truth is already played)."""
    import subprocess

    sys.path.insert(0, str(Path(__file__).parent))
    from truth_ceiling import bayes_ceiling

    spec = SCALES["small"]
    out: dict[str, Any] = {"uptime_before": subprocess.run(["uptime"], capture_output=True, text=True).stdout.strip(),
                           "densities": {}}
    models = {k: v for k, v in default_models().items() if k in ("knn", "ease", "als")}
    for factor in factors:
        t0 = time.perf_counter()
        data, truth = generator_data(spec["users"], spec["items"], spec["days"], spec["events_per_user"] * factor)
        figures = score_models(data, models, resamples=resamples, truth=truth, peers=False)
        row = {label: m["truth_fraction_of_oracle_all_data_fit"] for label, m in figures["models"].items()}
        ceiling = bayes_ceiling(data, truth, chains=("bayes",))["bayes"]
        best = max(row, key=lambda k: row[k] or 0.0)
        out["densities"][f"x{factor:g}"] = {
            "events_per_user": spec["events_per_user"] * factor, "truth_fraction_of_oracle": row,
            "oracle_recall_at_10": figures["truth_oracle_recall_at_10"],
            "ceiling_fraction_of_oracle": ceiling["fraction_of_oracle"], "ceiling": ceiling,
            "best": best, "best_fraction_of_ceiling": round(row[best] / ceiling["fraction_of_oracle"], 3),
            "seconds": round(time.perf_counter() - t0, 1)}
        print(json.dumps({f"x{factor:g}": out["densities"][f"x{factor:g}"]}, default=str), file=sys.stderr, flush=True)
    out["uptime_after"] = subprocess.run(["uptime"], capture_output=True, text=True).stdout.strip()
    return out


def default_models() -> dict[str, tuple[str, dict[str, Any]]]:
    from skyrec.config import load_config

    config = load_config("local", environ={"SKYREC_HOME": _scratch("config-")})
    out = {name: (name, dict(config.models[name].params)) for name in SKYREC_MODELS}
    out["knn_cosine"] = ("knn", {**config.models["knn"].params, "similarity": "cosine"})
    out["knn_without_series"] = ("knn", {**config.models["knn"].params, "series_weight": 0.0})
    # the series term without the "followed" weighting: every play alike, at its own tuned weight (the default
    # before the weighting)
    out["knn_every_play_alike"] = ("knn", {**config.models["knn"].params, "series_weight": 0.27,
                                           "series_catch_up": 1.0})
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

        params = default_models()[kind][1]  # the shipped defaults (memory limit included)
        model = EASEModel(**params) if kind == "ease" else ItemKNNModel(**params)
        t0 = time.perf_counter()
        try:
            model.fit(m)
        except MemoryGuardError as exc:
            queue.put({"refused": str(exc), "seconds": round(time.perf_counter() - t0, 3)})
            return
        seconds = time.perf_counter() - t0
        from skyrec.procstat import peak_rss_mb  # not ru_maxrss: that carries this launcher's size into the child

        out = {"fit_seconds": round(seconds, 2), "peak_rss_mb": round(peak_rss_mb()), "users": users,
               "items": items, "nnz": int(m.nnz)}
        if kind == "knn":
            out["scoring"] = _knn_scoring(model, m, params)
        queue.put(out)
    except Exception as exc:  # noqa: BLE001 - reported in the figures
        queue.put({"error": repr(exc)})


def _knn_scoring(model: Any, m: Any, params: dict[str, Any], n: int = 2000) -> dict[str, Any]:
    """Top-10 of ``n`` users over every item: skyrec's kernel on the sparse ``V = S.T`` (own plays excluded)
    against implicit's own ``recommend`` of the same neighbourhood (``filter_already_liked_items``), fit
    here on the same matrix; same users, same machine, one thread each."""
    import numpy as np
    from implicit.nearest_neighbours import BM25Recommender, CosineRecommender

    from skyrec.models import representations as reps
    from skyrec.scoring.topk import topk_batch

    rows = np.arange(min(n, m.shape[0]))
    U, Vt = model.user_representations(), reps.transposed(model.item_representations())
    topk_batch(U[rows[:8]], Vt, K, exclude=m[rows[:8]])  # warm: the compiled selection loads once per process
    t0 = time.perf_counter()
    ours = topk_batch(U[rows], Vt, K, exclude=m[rows], sub_batch=64)
    skyrec_s = time.perf_counter() - t0
    k = int(params["neighbours"])
    peer = (BM25Recommender(K=k, K1=float(params["bm25_k1"]), B=float(params["bm25_b"]), num_threads=1)
            if params["similarity"] == "bm25" else CosineRecommender(K=k, num_threads=1))
    peer.fit(m, show_progress=False)
    peer.recommend(rows[:8], m[rows[:8]], N=K, filter_already_liked_items=True)
    t0 = time.perf_counter()
    ids, _ = peer.recommend(rows, m[rows], N=K, filter_already_liked_items=True)
    implicit_s = time.perf_counter() - t0
    same = np.mean([len(set(ids[r]) & set(ours.items[r, : ours.counts[r]])) / K for r in range(len(rows))])
    return {"users": int(len(rows)), "skyrec_kernel_seconds": round(skyrec_s, 3),
            "implicit_recommend_seconds": round(implicit_s, 3),
            "skyrec_vs_implicit_time": round(skyrec_s / implicit_s, 2) if implicit_s else None,
            "v_mb": round(reps.nbytes(model.item_representations()) / 1e6, 1),
            "top10_overlap_with_implicit": round(float(same), 3),
            "note": "the series term is off here (no catalogue), so both score the same neighbourhood"}


def kernel_cost(users: int, items: int, rounds: int = 2, models: tuple[str, ...] = ("als", "knn"),
                brand_fraction: float = 1.0) -> dict[str, Any]:
    """Users/s of precompute's top-K kernel (``skyrec.scoring.topk.topk_threaded``: all cores, 4,096-user
    batches, 64-user sub-batches, k = 50, played items excluded, at most 3 per brand) scoring the ALS default
    (dense, 128 factors) and the item-kNN default (sparse, with its followed block) fit on the same generated
    data (``users`` x ``items``, 28 days, 40 events per user): whether moving a rail from ALS to kNN costs
    precompute time. Best of ``rounds`` interleaved rounds (``skyrec.plan.time_kernel``, no warm-up round), wall (users/s) and process CPU time (core-us per
    user); for a sparse item side also the sparse product's multiply-adds per user (``products_per_user``: the
    entries of the item rows of a user's non-zeros), what ``skyrec plan``'s item-kNN kernel is a plane in, and
    the shares of users whose list the positive scores did not fill (filled with zero scores by position) and
    of those selected over every candidate.
    ``brand_fraction`` < 1: the candidates are the items of that share of the brands (seeded), the shape of a
    genre rail, whose candidates hold few of a user's neighbours."""
    import os

    import numpy as np
    import scipy.sparse as sp

    from skyrec.config import load_config
    from skyrec.models import model_class
    from skyrec.models import representations as reps
    from skyrec.models.series import item_context
    from skyrec.models.training import fit_on
    from skyrec.plan import time_kernel
    from skyrec.scoring.topk import _Plan

    data, _ = generator_data(users, items, 28, 40.0)
    config = load_config("local", environ={"SKYREC_HOME": _scratch("config-")})
    ctx = item_context(data, "interactions")
    threads = os.cpu_count() or 1
    prepared, model_items, played = {}, {}, {}
    for name in models:
        fitted = fit_on(model_class(config, name)(**config.models[name].params), data.interactions, None, ctx)
        model_items[name] = len(fitted.item_cols)  # the candidates are these, or a genre rail's share of them
        brands = (np.asarray(ctx.brand, np.int32)[fitted.item_cols] if ctx is not None
                  else np.zeros(len(fitted.item_cols), np.int32))
        VT, seen = reps.transposed(fitted.item_factors), sp.csr_matrix(data.seen[:, fitted.item_cols])
        played[name] = seen.getnnz() / seen.shape[0]  # of every model item, whatever the candidates
        if brand_fraction < 1:  # the same brands for every model: the brand ids and the seed are the data's
            chosen = np.random.default_rng(0).random(int(brands.max()) + 1) < brand_fraction
            cols = np.flatnonzero(chosen[np.maximum(brands, 0)])
            VT, seen, brands = VT[:, cols], seen[:, cols], brands[cols]
        prepared[name] = (fitted.user_factors, VT, seen, brands, int(fitted.user_factors.shape[1]))
    timed = time_kernel({name: (U, VT, seen, brands, 50) for name, (U, VT, seen, brands, _d) in prepared.items()},
                        repeat=rounds, warmup=False)
    best = {name: wall for name, (wall, _) in timed.items()}
    cpu = {name: c for name, (_, c) in timed.items()}
    n = data.interactions.shape[0]
    out: dict[str, Any] = {"users": n, "items": int(data.interactions.shape[1]), "threads": threads,
                           "candidates": int(prepared[models[0]][1].shape[1]), "models": {}}
    for name, t in best.items():
        U, VT, seen = prepared[name][:3]
        rec = {"d": prepared[name][4], "users_per_s": round(n / t), "cpu_us_per_user": round(cpu[name] / n * 1e6, 3),
               "model_items": model_items[name]}
        if sp.issparse(VT):
            VT = sp.csr_matrix(VT)
            row_nnz = np.diff(VT.indptr).astype(np.float64)
            rec["products_per_user"] = round(float(((sp.csr_matrix(U) != 0) @ row_nnz).mean()), 1)
            rec["played_items_per_user"] = round(float(played[name]), 2)
            rec["played_candidates_per_user"] = round(float(seen.getnnz() / n), 2)
            outputs = 0  # the product's result entries (its merge, sort and scatter pay for them)
            for s in range(0, n, 4096):
                part = sp.csr_matrix(sp.csr_matrix(U[s:s + 4096]) @ VT)
                part.sum_duplicates()
                outputs += part.getnnz()
            rec["outputs_per_user"] = round(outputs / n, 1)
            dense = zeros = 0
            for s in range(0, n, 4096):
                plan = _Plan(U[s:s + 4096], VT, 50, seen[s:s + 4096], prepared[name][3], 3, 64)
                plan.run_serial()
                dense, zeros = dense + int(plan.dense_rows.sum()), zeros + int(plan.zero_rows.sum())
            rec["zero_fill_share"] = round((zeros - dense) / n, 4)
            rec["dense_rows_share"] = round(dense / n, 4)
        out["models"][name] = rec
    if {"als", "knn"} <= set(best):
        out["knn_vs_als_time"] = round(best["knn"] / best["als"], 2)
    return out


def at_scale(kind: str, users: int, items: int) -> dict[str, Any]:
    ctx = mp.get_context("spawn")
    queue = ctx.Queue()
    p = ctx.Process(target=_scale_child, args=(kind, users, items, queue))
    p.start()
    p.join()
    return queue.get() if not queue.empty() else {"error": f"exit code {p.exitcode}"}


# ---- how the defaults were chosen: the bounded search on a validation split of the training part ----------

#: the spaces searched (wider than the shipped ``training.search.spaces``: the defaults' neighbourhood and
#: the BM25 weighting too); every other parameter keeps its configured value
TUNE_SPACES: dict[str, dict[str, dict[str, Any]]] = {
    "knn": {"neighbours": {"int": [10, 1000], "log": True}, "similarity": {"choice": ["cosine", "bm25"]},
            "bm25_k1": {"float": [0.1, 5.0], "log": True}, "bm25_b": {"float": [0.0, 1.0]},
            "series_weight": {"float": [0.0, 1.2]}, "series_depth": {"int": [1, 20]},
            "series_decay": {"float": [0.2, 1.0]}, "series_catch_up": {"float": [0.0, 1.0]},
            "series_follow_within": {"int": [0, 4]}},
    "ease": {"regularization": {"float": [1.0, 10000.0], "log": True}, "binary": {"choice": [True, False]},
             "series_weight": {"float": [0.0, 16.0]}, "series_depth": {"int": [1, 20]},
             "series_decay": {"float": [0.2, 1.0]}},
    "als": {"factors": {"int": [16, 256], "log": True}, "regularization": {"float": [0.01, 100.0], "log": True},
            "alpha": {"float": [0.1, 50.0], "log": True}},
    "bpr": {"factors": {"int": [16, 256], "log": True}, "learning_rate": {"float": [0.001, 0.1], "log": True},
            "regularization": {"float": [0.00001, 0.1], "log": True}},
}
TUNE_TRIALS = 40
#: the searched values rounded for shipping (and, for ALS, the same at 64 factors: precompute's cost grows
#: with the factors), checked beside the search's own choice on both shapes' validation splits and tests.
#: kNN's series weights are in the units of its scale with the median items per user (13 on the generator's
#: training part): the 2.0 and 3.5 chosen before that scale are 0.15 and 0.27 here
ROUNDED: dict[str, dict[str, dict[str, Any]]] = {
    "ease": {"rounded": {"regularization": 1000.0, "binary": False, "series_weight": 2.0, "series_depth": 16,
                         "series_decay": 0.75},
             "rounded_depth_6": {"regularization": 1000.0, "binary": False, "series_weight": 2.0, "series_depth": 6,
                                 "series_decay": 0.75}},
    "bpr": {"rounded": {"factors": 64, "learning_rate": 0.007, "regularization": 0.004}},
    "knn": {"rounded": {"similarity": "bm25", "neighbours": 40, "bm25_k1": 1.0, "bm25_b": 0.1, "series_weight": 0.15,
                        "series_depth": 6, "series_decay": 0.75, "series_catch_up": 1.0},
            "rounded_without_series": {"similarity": "bm25", "neighbours": 40, "bm25_k1": 1.0, "bm25_b": 0.1,
                                       "series_weight": 0.0},
            "previous_with_series": {"similarity": "bm25", "neighbours": 500, "bm25_k1": 2.0, "bm25_b": 0.6,
                                     "series_weight": 0.15, "series_depth": 6, "series_decay": 0.75,
                                     "series_catch_up": 1.0},
            "rounded_latest": {"similarity": "bm25", "neighbours": 70, "bm25_k1": 1.0, "bm25_b": 0.2,
                               "series_weight": 0.27, "series_depth": 5, "series_decay": 0.75, "series_catch_up": 1.0},
            "rounded_followed": {"similarity": "bm25", "neighbours": 70, "bm25_k1": 1.0, "bm25_b": 0.2,
                                 "series_weight": 0.54, "series_depth": 5, "series_decay": 0.75,
                                 "series_catch_up": 0.1, "series_follow_within": 1}},
    "als": {"rounded": {"factors": 128, "regularization": 6.0, "alpha": 0.4},
            "rounded_64_factors": {"factors": 64, "regularization": 6.0, "alpha": 0.4}},
}


def _search_config(model: str, trials: int) -> Any:
    from skyrec.config import load_config

    return load_config("local", environ={"SKYREC_HOME": _scratch("config-")},
                       overrides={"training": {"models": [model],
                                               "search": {"enabled": True, "models": [model], "n_trials": trials,
                                                          "timeout_seconds": None, "seed": 0,
                                                          "spaces": {model: TUNE_SPACES[model]}}}})


def _paired_test(data: Any, candidates: dict[str, tuple[str, dict[str, Any]]], pairs: list[tuple[str, str]],
                 resamples: int) -> dict[str, Any]:
    """Test-split NDCG@10 of ``candidates`` (fit on the training part) and paired a-vs-b comparisons."""
    from skyrec.config import load_config
    from skyrec.evaluation.offline import Scored, evaluate
    from skyrec.evaluation.stats import paired_comparison
    from skyrec.models import model_class
    from skyrec.models.series import item_context
    from skyrec.models.training import fit_on

    config = load_config("local", environ={"SKYREC_HOME": _scratch("config-")})
    scored = {}
    for label, (name, params) in candidates.items():
        fitted = fit_on(model_class(config, name)(**params), data.train, None, item_context(data, "train"))
        full, mask = fitted.full_item_factors(data.train.shape[1])
        scored[label] = Scored(fitted.user_factors, full, None if mask.all() else mask)
    per_user: dict[str, Any] = {}
    res = evaluate(scored, data.train, data.test, k=K, resamples=resamples, per_user_out=per_user)
    out: dict[str, Any] = {label: {"ndcg_at_10": round(r["overall"]["ndcg_at_k"], 4),
                                   "ndcg_ci": [round(x, 4) for x in r["overall"]["ci"]["ndcg_at_k"]]}
                           for label, r in res["models"].items()}
    v = per_user["values"]
    for a, b in pairs:
        c = paired_comparison(v[a]["overall"]["ndcg_at_k"], v[b]["overall"]["ndcg_at_k"], resamples=resamples,
                              seed=0, confidence=0.95)
        out[f"{a} vs {b}"] = {"relative": c["relative"], "relative_ci": c["relative_ci"], "p_value": c["p_value"]}
    return out


def tune(models: tuple[str, ...] = ("knn", "ease", "als"), trials: int = TUNE_TRIALS) -> dict[str, Any]:
    """``skyrec.evaluation.search.run_search`` (TPE, ``trials`` trials, trial 0 = the configured defaults) on
    a validation split carved from the TRAINING part of each shape (``small``'s generator data and the
    ratings shape); the test positives are never seen. Then the generator's choice is cross-checked on the
    ratings shape's validation split, and both (defaults and choice) are reported on each shape's test."""
    import subprocess

    from skyrec.evaluation.search import run_search, validation_metrics, validation_split
    from skyrec.models import model_class
    from skyrec.models.series import item_context
    from skyrec.models.training import fit_on

    spec = SCALES["small"]
    shapes = {"generator": generator_data(spec["users"], spec["items"], spec["days"], spec["events_per_user"])[0],
              "ratings": ratings_data()}
    out: dict[str, Any] = {"uptime_before": subprocess.run(["uptime"], capture_output=True, text=True).stdout.strip(),
                           "trials": trials, "spaces": {m: TUNE_SPACES[m] for m in models}, "models": {}}
    for model in models:
        config = _search_config(model, trials)
        configured = dict(config.models[model].params)
        row: dict[str, Any] = {"configured": configured}
        for shape, data in shapes.items():
            t0 = time.perf_counter()
            rec = run_search(config, model, data.train, context=item_context(data, "train"),
                             first_play=data.train_first_play).as_dict()
            top = sorted((t for t in rec["trials"] if t["state"] == "complete"), key=lambda t: -t["value"])[:5]
            row[shape] = {"best_params": rec["best_params"], "best_value": rec["best"]["value"] if rec["best"] else None,
                          "configured_value": rec["configured_value"], "n_failed": rec["n_failed"],
                          "stopped": rec["stopped"], "validation": rec["validation"],
                          "top5": [(round(t["value"], 4), t["params"]) for t in top],
                          "seconds": round(time.perf_counter() - t0, 1)}
        # the generator's choice on the ratings shape's validation split (the same carving as the search's)
        s = config.training.search
        candidates = {"configured": configured, "generator_choice": row["generator"]["best_params"],
                      "ratings_choice": row["ratings"]["best_params"]}
        for label, params in ROUNDED.get(model, {}).items():
            candidates[label] = {**configured, **params}
        checks: dict[str, Any] = {}
        for shape, data in shapes.items():
            split = validation_split(data.train, fraction=s.validation_fraction, max_users=s.validation_max_users,
                                     seed=s.seed, first_play=data.train_first_play, method=s.validation_method)
            checks[shape] = {}
            for label, params in candidates.items():
                fitted = fit_on(model_class(config, model)(**params), split.fit, None, item_context(data, "train"))
                checks[shape][label] = round(validation_metrics(fitted, split, k=config.training.k)["ndcg_at_k"], 4)
        row["validation_ndcg"] = checks
        tested = {k: (model, v) for k, v in candidates.items() if k != "ratings_choice"}
        row["test"] = {shape: _paired_test(data, tested, [(k, "configured") for k in tested if k != "configured"],
                                           resamples=1000)
                       for shape, data in shapes.items()}
        out["models"][model] = row
        print(json.dumps({model: row}, default=str), file=sys.stderr, flush=True)
    out["uptime_after"] = subprocess.run(["uptime"], capture_output=True, text=True).stdout.strip()
    return out


def main(scale: str = "small") -> dict[str, Any]:
    if scale == "tune":
        return tune(tuple(sys.argv[2:]) or ("knn", "ease", "als"))
    if scale == "ceiling":
        return ceiling_by_density(tuple(float(f) for f in sys.argv[2:]) or (1.0, 3.0, 10.0))
    import subprocess

    if scale == "kernels":  # the kernel and at-scale figures alone (minutes): precompute_kernel and scale below
        before = subprocess.run(["uptime"], capture_output=True, text=True).stdout.strip()
        spec = SCALES["small"]
        return {"precompute_kernel": {**{f"{items}_items": kernel_cost(30_000, items) for items in (20_000, 100_000)},
                                      "20000_items_eighth_of_the_brands": kernel_cost(30_000, 20_000,
                                                                                      brand_fraction=0.125)},
                "scale": {kind: {f"{spec['scale_items']}_items": at_scale(kind, spec["scale_users"], spec["scale_items"]),
                                 "200000_items": at_scale(kind, spec["scale_users"], 200_000)} for kind in ("ease", "knn")},
                "uptime": {"before": before,
                           "after": subprocess.run(["uptime"], capture_output=True, text=True).stdout.strip()}}
    spec = SCALES[scale]
    uptime_before = subprocess.run(["uptime"], capture_output=True, text=True).stdout.strip()
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
    out["generator_figures"]["truth_plug_in_references"] = plug_in_references(data, truth)
    out["generator_figures"]["truth_bayes_references"] = bayes_references(data, truth)
    out["density"] = density_check(spec)
    out["ratings_figures"] = score_models(ratings_data(), models, resamples=spec["resamples"])
    out["precompute_kernel"] = {f"{items}_items": kernel_cost(30_000, items) for items in (20_000, 100_000)}
    out["scale"] = {kind: {f"{spec['scale_items']}_items": at_scale(kind, spec["scale_users"], spec["scale_items"]),
                           "200000_items": at_scale(kind, spec["scale_users"], 200_000)} for kind in ("ease", "knn")}
    out["uptime"] = {"before": uptime_before,
                     "after": subprocess.run(["uptime"], capture_output=True, text=True).stdout.strip()}
    return out


if __name__ == "__main__":
    print(json.dumps(main(sys.argv[1] if len(sys.argv) > 1 else "small"), indent=1, default=str))
