"""Default vs searched parameters on planted-taste data (BENCHMARKS.md "Evaluation — search").

The bounded search (``skyrec.evaluation.search.run_search``) chooses a model's parameters on a validation split
carved from the training part; then the configured defaults and the search's choice are both fit on the same
training part and measured on the split's test, paired on the same users.

Usage: ``.venv/bin/python benchmarks/bench_search.py [model] [trials]`` (default: als 20); ``make bench`` runs
``main(scale)`` (small: 8 trials, reference: 20).
"""

from __future__ import annotations

import json
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

TRIALS = {"small": 8, "reference": 20}


def main(scale: str = "reference", model: str = "als", trials: int | None = None) -> dict[str, Any]:
    from skyrec.config import load_config
    from skyrec.evaluation import search
    from skyrec.evaluation.offline import Scored, evaluate
    from skyrec.evaluation.stats import paired_comparison
    from skyrec.evaluation.synthetic import planted_tables
    from skyrec.models import build_model
    from skyrec.models.dataset import build_training_data
    from skyrec.models.training import fit_on

    trials = TRIALS[scale] if trials is None else trials
    up0 = subprocess.run(["uptime"], capture_output=True, text=True).stdout.strip()
    act, cat, _ = planted_tables(n_users=3000, n_items=2000, plays_per_user=30, days=60, seed=7)
    cfg = load_config("local", root=Path.cwd(), overrides={"training": {"models": [model], "search": {
        "enabled": True, "models": [model], "n_trials": trials, "seed": 0}}})
    t = cfg.training
    data, _ = build_training_data(act, cat, weighting=dict(t.weighting), played_fraction_weight=t.played_fraction_weight,
                                  half_life_days=t.recency_half_life_days, holdout_days=t.holdout_days,
                                  split=t.split.model_dump())
    t0 = time.perf_counter()
    rec = search.run_search(cfg, model, data.train, item_features=data.item_features,
                            first_play=data.train_first_play).as_dict()
    wall = time.perf_counter() - t0
    up1 = subprocess.run(["uptime"], capture_output=True, text=True).stdout.strip()
    scored = {}
    for name, params in (("default", dict(cfg.models[model].params)), ("searched", rec["best_params"])):
        f = fit_on(build_model(cfg, model, **params), data.train, None)
        full, mask = f.full_item_factors(data.train.shape[1])
        scored[name] = Scored(f.user_factors, full, None if mask.all() else mask)
    pu: dict[str, Any] = {}
    res = evaluate(scored, data.train, data.test, k=10, resamples=1000, confidence=0.95, per_user_out=pu)
    out: dict[str, Any] = {
        "model": model, "trials": trials, "search_wall_s": round(wall, 1), "uptime_before": up0, "uptime_after": up1,
        "validation": rec["validation"], "stopped": rec["stopped"], "n_complete": rec["n_complete"],
        "n_failed": rec["n_failed"], "best": rec["best"], "configured_value": rec["configured_value"],
        "default_params": dict(cfg.models[model].params), "train_shape": list(data.train.shape),
        "train_nnz": int(data.train.nnz)}
    for name in scored:
        o = res["models"][name]["overall"]
        out[name] = {"ndcg": o["ndcg_at_k"], "ci": o["ci"]["ndcg_at_k"], "recall": o["recall_at_k"],
                     "recall_ci": o["ci"]["recall_at_k"], "users": o["users"]}
    v = pu["values"]
    out["paired_ndcg"] = paired_comparison(v["searched"]["overall"]["ndcg_at_k"], v["default"]["overall"]["ndcg_at_k"],
                                           resamples=1000, seed=0, confidence=0.95)
    return out


if __name__ == "__main__":
    print(json.dumps(main(model=sys.argv[1] if len(sys.argv) > 1 else "als",
                          trials=int(sys.argv[2]) if len(sys.argv) > 2 else None), indent=1, default=float))
