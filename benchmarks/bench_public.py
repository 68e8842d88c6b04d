"""Every model on a public data set, MovieLens 100K, the way a user gets there, against implicit's.

- data: ``skyrec fetch-data movielens-100k`` (pinned, checked; cached in ``.bench/data/``), imported by
  ``skyrec import`` with the films example configuration and its atomic-layout mapping (ratings >= 4 become
  events), and made into a dataset by the create_dataset code with that configuration's weighting, recency
  and split (the default: each user's latest 20% of positives);
- models: skyrec's configured defaults (``config/examples/films``' ``models:``: ALS, EASE and item-kNN
  searched on this data set's validation split, docs/evaluation.md "Ratings data") through ``fit_on``, as
  the train job fits them, and those three with ``config/base.yaml``'s defaults (searched on the
  generator's listening data); implicit's ALS and BPR called directly with implicit's documented parameters
  (``bench_models``: the same peers and evaluator as on the generator's data);
- figures: NDCG@10 and recall@10 with 95% user-bootstrap intervals, skyrec's best against implicit's best
  paired on the same users, skyrec's BPR default against implicit's BPR, ALS against popularity, each
  searched model against base's defaults;
- the split the issue started from: the global time holdout (the last ``holdout_days`` = 7 days are the
  test) on the same data -- how many users it leaves, and what the quality gate decides on them.

Run: ``python benchmarks/bench_public.py`` (``skyrec bench --only public``); prints JSON.
``python benchmarks/bench_public.py tune [als ease knn]``: the search the films defaults were chosen with.
"""

from __future__ import annotations

import datetime as dt
import json
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(Path(__file__).resolve().parent))

import bench_models  # noqa: E402 - the benchmarks folder on the path first

DATASET = "movielens-100k"
CACHE = ROOT / ".bench" / "data" / DATASET
END = dt.datetime(1998, 4, 23, tzinfo=dt.UTC)
RESAMPLES = 1000


def _config(home: str) -> Any:
    import yaml

    from skyrec.config import load_config
    from skyrec.data.public import DATASETS

    ds = DATASETS[DATASET]
    mapping = yaml.safe_load((ROOT / ds.mapping).read_text())
    return load_config("local", overrides={"ingest": {"files": mapping}},
                       environ={"SKYREC_HOME": home, "SKYREC_CONFIG_DIR": str(ROOT / ds.config_dir)})


def imported_activity() -> tuple[Any, dict[str, Any]]:
    """(the imported activity, a summary): fetch, then ``skyrec import`` into a scratch home; events of items
    the import quarantined are left out, as ingest quarantines them (``unknown_item``)."""
    import pyarrow as pa
    import pyarrow.compute as pc
    import pyarrow.parquet as pq

    from skyrec.data.importer import run_import
    from skyrec.data.public import fetch
    from skyrec.data.schemas import ACTIVITY

    got = fetch(DATASET, CACHE, progress=lambda msg: print(msg, file=sys.stderr))
    home = tempfile.mkdtemp(prefix="skyrec-bench-public-", dir=bench_models._RUN_DIR.name)
    config = _config(home)
    t0 = time.perf_counter()
    summary = run_import(config, interactions=got["files"]["interactions"], items=got["files"]["items"])
    seconds = round(time.perf_counter() - t0, 2)
    files = sorted((Path(config.source_url) / config.source.activity_prefix).rglob("*.parquet"))
    activity = pa.concat_tables([pq.read_table(f, columns=[c for c in ACTIVITY.names
                                                           if c in pq.read_schema(f).names]) for f in files],
                                promote_options="default")
    for name in ACTIVITY.names:  # the importer leaves columns it has nothing for out of its files
        if name not in activity.column_names:
            activity = activity.append_column(name, pa.nulls(activity.num_rows, ACTIVITY.field(name).type))
    activity = activity.select(ACTIVITY.names).cast(ACTIVITY)
    # ingest quarantines events of items the catalogue does not hold (unknown_item): the same here
    episodes = Path(config.source_url) / config.source.metadata_prefix / "episodes"
    known = {json.loads(p.read_text())["id"] for p in episodes.rglob("*.json")}
    keep = pa.array([i in known for i in activity.column("item_id").to_pylist()])
    unknown = activity.num_rows - pc.sum(keep).as_py()
    activity = activity.filter(keep)
    per_file = {f["role"]: {"rows_in": f["rows_in"], "imported": f["imported"], "quarantined": f["quarantined"],
                            "filtered": f["filtered"]} for f in summary["files"]}
    return activity, {"files": per_file, "events": activity.num_rows, "events_of_unknown_items": unknown, "import_seconds": seconds,
                      "users": len(set(activity.column("user_id").to_pylist())),
                      "items": len(set(activity.column("item_id").to_pylist())), "config": config}


def dataset(activity: Any, config: Any, split: dict[str, Any]) -> Any:
    from skyrec.models.dataset import build_training_data

    t = config.training
    data, _ = build_training_data(activity, None, weighting=dict(t.weighting),
                                  played_fraction_weight=t.played_fraction_weight,
                                  half_life_days=t.recency_half_life_days, holdout_days=t.holdout_days, end=END,
                                  split=split)
    return data


#: models whose films defaults were searched on this data set; each is also measured with ``config/base.yaml``'s
#: defaults (searched on the generator's listening data) to show what those cost on ratings data
SEARCHED_HERE = ("als", "ease", "knn")


def models(config: Any) -> dict[str, tuple[str, dict[str, Any]]]:
    """The films configuration's models, and base's defaults of those searched here (``<name>_base``)."""
    from skyrec.config import load_config

    out = {name: (name, dict(config.models[name].params)) for name in bench_models.SKYREC_MODELS}
    base = load_config("local", environ={"SKYREC_HOME": tempfile.mkdtemp(dir=bench_models._RUN_DIR.name)})
    for name in SEARCHED_HERE:
        out[f"{name}_base"] = (name, dict(base.models[name].params))
    return out


def global_holdout(activity: Any, config: Any) -> dict[str, Any]:
    """The global time holdout on the same data: the users it leaves, and the quality gate's verdict on them
    for the films rails' model (ALS) against the baseline, paired, as the evaluate job decides."""
    from skyrec.evaluation.gate import quality_gate
    from skyrec.evaluation.offline import evaluate
    from skyrec.evaluation.stats import paired_comparison

    t = config.training
    data = dataset(activity, config, {"kind": "global"})
    scored, _ = bench_models._fit_scored({"als": ("als", dict(config.models["als"].params)),
                                          "popularity": ("popularity", {})}, data.train, peers=False)
    per_user: dict[str, Any] = {}
    res = evaluate(scored, data.train, data.test, k=bench_models.K, resamples=RESAMPLES, per_user_out=per_user)
    values = per_user["values"]
    base = paired_comparison(values["als"]["overall"]["ndcg_at_k"], values["popularity"]["overall"]["ndcg_at_k"],
                             resamples=RESAMPLES, seed=0, confidence=0.95)
    q = t.quality_gate
    users = res["users_evaluated"]
    verdicts = {}
    for policy in ("hold", "publish_with_alert"):
        g = quality_gate(metric="ndcg_at_k", new=res["models"]["als"]["overall"]["ndcg_at_k"], users=users,
                         min_users=q.min_users, policy=policy, baseline=base, published=None,
                         tolerance=q.tolerance, must_beat_baseline=q.must_beat_baseline)
        verdicts[policy] = {"passed": g.passed, "message": g.message}
    return {"holdout_days": t.holdout_days, "users": users, "test_pairs": int(data.test.nnz),
            "als_ndcg_at_10": round(res["models"]["als"]["overall"]["ndcg_at_k"], 4),
            "als_ndcg_ci": [round(x, 4) for x in res["models"]["als"]["overall"]["ci"]["ndcg_at_k"]],
            "popularity_ndcg_at_10": round(res["models"]["popularity"]["overall"]["ndcg_at_k"], 4),
            "als_vs_popularity": {"relative": base["relative"], "relative_ci": base["relative_ci"]},
            "min_users": q.min_users, "gate": verdicts}


def similar_measures(data: Any, config: Any, names: tuple[str, ...] = ("als", "bpr")) -> dict[str, Any]:
    """"Because you played X" on this data, per ``precompute.similar_measure``: each test user's latest
    training positive (by first play) is the seed; the model's top 10 most similar items (the seed and the
    user's training items left out, as precompute leaves out played items) against the user's test positives:
    recall@10, the mean popularity percentile of the listed items (1 = the most played) and how many distinct
    items all the lists use. Models fit on the training part with the films defaults."""
    import numpy as np

    from skyrec.models import model_class
    from skyrec.models.series import item_context
    from skyrec.models.training import fit_on

    train, test, first = data.train.tocsr(), data.test.tocsr(), data.train_first_play.tocsr()
    plays = np.bincount(train.indices, minlength=train.shape[1])
    percentile = plays.argsort(kind="stable").argsort() / max(1, train.shape[1] - 1)
    users = np.flatnonzero((np.diff(test.indptr) > 0) & (np.diff(train.indptr) > 0))
    seeds = np.array([first.indices[first.indptr[u]:first.indptr[u + 1]][
        np.argmax(first.data[first.indptr[u]:first.indptr[u + 1]])] for u in users])
    out: dict[str, Any] = {"users": int(users.size), "k": 10}
    for name in names:
        fitted = fit_on(model_class(config, name)(**dict(config.models[name].params)), train, None,
                        item_context(data, "train"))
        cols = fitted.item_cols
        pos = np.full(train.shape[1], -1)
        pos[cols] = np.arange(cols.size)
        ok = pos[seeds] >= 0
        exclude = train[users[ok]][:, cols]
        for measure in type(fitted.model).similar_measures:
            idx, _ = fitted.model.similar_items(pos[seeds[ok]], 10, exclude=exclude, measure=measure)
            listed = cols[idx]
            hits = [len(set(listed[r].tolist()) & set(test.indices[test.indptr[u]:test.indptr[u + 1]].tolist()))
                    / min(10, test.indptr[u + 1] - test.indptr[u]) for r, u in enumerate(users[ok])]
            out[f"{name}_{measure}"] = {"recall_at_10": round(float(np.mean(hits)), 4),
                                        "popularity_percentile": round(float(percentile[listed].mean()), 3),
                                        "distinct_items": int(np.unique(listed).size), "seeds": int(ok.sum())}
    return out


#: the rounded forms of the search's choices measured on validation beside it (the films defaults are the
#: best of these by validation NDCG@10, the test never deciding)
ROUNDED = {
    "als": {"256_30_8": {"factors": 256, "regularization": 30.0, "alpha": 8.0},
            "224_30_8": {"factors": 224, "regularization": 30.0, "alpha": 8.0},
            "256_20_6": {"factors": 256, "regularization": 20.0, "alpha": 6.0},
            "128_30_8": {"factors": 128, "regularization": 30.0, "alpha": 8.0}},
    "ease": {"150": {"regularization": 150.0}, "200": {"regularization": 200.0}},
    "knn": {"cosine_250": {"similarity": "cosine", "neighbours": 250},
            "cosine_200": {"similarity": "cosine", "neighbours": 200},
            "bm25_250": {"similarity": "bm25", "neighbours": 250}},
}


def tune(names: tuple[str, ...] = SEARCHED_HERE, trials: int = bench_models.TUNE_TRIALS) -> dict[str, Any]:
    """How the films defaults were chosen: ``run_search`` (TPE, seed 0, ``trials`` trials, the spaces of
    ``bench_models.TUNE_SPACES``, trial 0 = base's defaults) on the validation split carved from the training
    part (the test positives never seen); then the search's choice, its rounded forms, base's and the films
    defaults on that validation split, and all of them on the test, paired against base's defaults."""
    from skyrec.evaluation.search import run_search, validation_metrics, validation_split
    from skyrec.models import model_class
    from skyrec.models.series import item_context
    from skyrec.models.training import fit_on

    activity, info = imported_activity()
    films = info.pop("config")
    t = films.training
    data = dataset(activity, films, {"kind": "per_user", **t.split.model_dump(exclude={"kind"})})
    out: dict[str, Any] = {"trials": trials, "models": {}}
    for name in names:
        config = bench_models._search_config(name, trials)  # base's defaults as trial 0
        base = dict(config.models[name].params)
        t0 = time.perf_counter()
        rec = run_search(config, name, data.train, context=item_context(data, "train"),
                         first_play=data.train_first_play).as_dict()
        seconds = round(time.perf_counter() - t0, 1)
        candidates = {"base": base, "films": dict(films.models[name].params),
                      "searched": {**base, **rec["best_params"]},
                      **{f"rounded_{k}": {**base, **v} for k, v in ROUNDED.get(name, {}).items()}}
        s = config.training.search
        split = validation_split(data.train, fraction=s.validation_fraction, max_users=s.validation_max_users,
                                 seed=s.seed, first_play=data.train_first_play, method=s.validation_method)
        validation = {}
        for label, params in candidates.items():
            fitted = fit_on(model_class(config, name)(**params), split.fit, None, item_context(data, "train"))
            validation[label] = round(validation_metrics(fitted, split, k=config.training.k)["ndcg_at_k"], 4)
        test = bench_models._paired_test(data, {k: (name, v) for k, v in candidates.items()},
                                         [(k, "base") for k in candidates if k != "base"], resamples=RESAMPLES)
        out["models"][name] = {"best_params": rec["best_params"], "search_seconds": seconds,
                               "validation_ndcg": validation, "test": test}
        print(json.dumps({name: out["models"][name]}, default=str), file=sys.stderr, flush=True)
    return out


def main(scale: str = "small") -> dict[str, Any]:
    if scale == "tune":
        return tune(tuple(sys.argv[2:]) or SEARCHED_HERE)
    import subprocess

    from skyrec.evaluation.stats import paired_comparison  # noqa: F401 - imported early: fail before the fits

    uptime_before = subprocess.run(["uptime"], capture_output=True, text=True).stdout.strip()
    t0 = time.perf_counter()
    activity, info = imported_activity()
    config = info.pop("config")
    t = config.training
    split = {"kind": "per_user", **t.split.model_dump(exclude={"kind"})}
    data = dataset(activity, config, split)
    chosen = models(config)
    pairs = (("bpr", "implicit_bpr"), ("als", "popularity"), ("knn", "als"), ("ease", "als"),
             *((name, f"{name}_base") for name in SEARCHED_HERE))
    figures = bench_models.score_models(data, chosen, resamples=RESAMPLES, pairs=pairs)
    out: dict[str, Any] = {
        "dataset": DATASET, "import": info, "k": bench_models.K,
        "split": f"per_user (latest {t.split.test_fraction:.0%} of each user's positives)",
        "weighting": dict(t.weighting), "recency_half_life_days": t.recency_half_life_days,
        "skyrec_params": {k: v[1] for k, v in chosen.items()},
        "implicit_als": bench_models.IMPLICIT_ALS, "implicit_bpr": bench_models.IMPLICIT_BPR,
        "figures": figures, "global_holdout": global_holdout(activity, config),
        "similar_measures": similar_measures(data, config),
        "seconds": round(time.perf_counter() - t0, 1),
        "uptime": {"before": uptime_before,
                   "after": subprocess.run(["uptime"], capture_output=True, text=True).stdout.strip()}}
    return out


if __name__ == "__main__":
    print(json.dumps(main(sys.argv[1] if len(sys.argv) > 1 else "small"), indent=1, default=str))
