"""train_model / train: fit the configured model and commit it as a model artefact.

Which data the published model is fit on: the evaluate step measures a fit on the *time split* (train on
the past, test on the last ``training.holdout_days`` days), then this artefact is fit on *all* the data of
the snapshot (``training.fit_on_all_data: true``, the default), because the last days hold the freshest
tastes and the newest episodes -- exactly what recommendations tomorrow need. The evaluated and the
published fit share the class, the parameters and the preprocessing, so the evaluation is an honest
(slightly pessimistic) estimate. With ``fit_on_all_data: false`` the artefact is the evaluated fit itself.

Hyper-parameter search (``training.search``, off by default; ``skyrec.evaluation.search``): before the fit,
the parameters of a searched model are chosen by a bounded Optuna search on a validation split carved from
the *training part* of the evaluation split (never its test, on which evaluate and the gate judge), within
``training.search.deadline_fraction`` of this job's deadline. The model is then fit as usual with the best
trial's parameters; ``meta["params"]`` holds the parameters used (so evaluate re-fits the same ones) and
``meta["search"]`` the whole search (space, budget, every trial, best).

Output ``model`` in the format of ``skyrec.models.artefact`` (meta: model, version, model_version =
"<version>.<run_key>", factors, n_users, n_items, dataset, activity_snapshot, params, class_path, ...).
Feature models also carry ``item_features.npz`` + ``features.parquet`` so new episodes can be scored later.
"""

from __future__ import annotations

import time
from typing import Any

from skyrec.config import ConfigError
from skyrec.jobs.base import BadInput, JobContext


def run(ctx: JobContext) -> dict[str, Any]:
    started = time.monotonic()
    import numpy as np

    from skyrec.evaluation import search
    from skyrec.jobs._model_inputs import model_and_version, refuse_changed_settings, require_training_dataset
    from skyrec.models import build_model
    from skyrec.models.artefact import csr_to_arrays, save_artefact, save_model, write_ids, write_npz
    from skyrec.models.dataset import load_training_data
    from skyrec.models.series import item_context
    from skyrec.models.training import fit_on

    model, version = model_and_version(ctx)
    done = ctx.committed("model", model=model, version=version)
    if done is not None:
        refuse_changed_settings(ctx, done, "train", f"model {model} {version}", settings(ctx, model))
        return {"outputs": [done.path], "note": "already committed", "model_version": done.meta.get("model_version")}
    ds = require_training_dataset(ctx, model)
    on_all = ctx.config.training.fit_on_all_data
    matrix_name = "interactions" if on_all else "train"
    searching = search.applies(ctx.config, model)
    plays = "first_play" if on_all else "train_first_play"  # the series term's "played when new"
    data = load_training_data(ctx.lake, ds, only=(matrix_name, plays, "seen", "item_features",
                                                  *(("train", "train_first_play") if searching else ())))
    record: dict[str, Any] | None = None
    params = dict(ctx.config.models[model].params)
    if searching:
        record = _search(ctx, model, data, started)
        params = record["best_params"]
    recommender = build_model(ctx.config, model, **params)
    try:
        fitted = fit_on(recommender, getattr(data, matrix_name),
                        data.item_features if recommender.uses_item_features else None,
                        item_context(data, matrix_name))
    except ValueError as exc:  # a non-finite fit (reps.NonFiniteError) too: refused, nothing is committed
        raise BadInput(f"{ds.path}: models.{model}: {exc}") from None

    cols = fitted.item_cols
    model_version = f"{version}.{ctx.run.run_key}"
    meta = {
        "model": model, "version": version, "model_version": model_version,
        "factors": int(fitted.user_factors.shape[1]), "n_users": int(fitted.user_factors.shape[0]),
        "n_items": int(len(cols)), "dataset": ds.path, "activity_snapshot": ds.meta.get("activity_snapshot"),
        "catalogue": ds.meta.get("catalogue"), "class_path": ctx.config.models[model].class_path,
        "params": params,
        "fit_seconds": round(fitted.seconds, 3), "data_end": ds.meta.get("end"), "cutoff": ds.meta.get("cutoff"),
        "uses_item_features": bool(recommender.uses_item_features),
        **settings(ctx, model, ds.path),
    }
    if getattr(recommender, "series", None) is not None:
        meta["series"] = recommender.series  # type: ignore[attr-defined]
    if record is not None:
        meta["search"] = record
    with ctx.stage("model", model=model, version=version) as stage:
        seen = data.seen[:, cols] if len(cols) < data.seen.shape[1] else data.seen
        save_artefact(stage, user_ids=data.user_ids, item_ids=np.asarray(data.item_ids)[cols],
                      user_factors=fitted.user_factors, item_factors=fitted.item_factors, seen=seen)
        save_model(stage, recommender)
        if recommender.uses_item_features:
            write_npz(stage, "item_features.npz", **csr_to_arrays(data.item_features[cols]))
            write_ids(stage, "features.parquet", "feature", data.feature_names)
        manifest = stage.commit(meta)
    summary = {k: v for k, v in meta.items() if k not in ("params", "search", "configured_params", "search_settings")}
    if record is not None:
        summary["search"] = {k: record.get(k) for k in ("stopped", "n_complete", "n_failed", "best", "configured_value",
                                                        "seconds", "metric", "note", "not_applying")}
    return {"outputs": [manifest.path], **summary}


#: parameters that say how a fit runs, not what it fits: a change of them is not a change of settings
RESOURCE_PARAMS = frozenset({"num_threads", "memory_limit_gb"})


def settings(ctx: JobContext, model: str, dataset: str | None = None) -> dict[str, Any]:
    """What a model output is made from besides the run's inputs, as its manifest records it: a re-run of a
    committed run compares these with its own (``refuse_changed_settings``). The dataset's path carries its
    definition (split, weights: ``training.dataset_id``)."""
    from skyrec.evaluation import search
    from skyrec.jobs._model_inputs import require_training_dataset

    cfg = ctx.config
    searching = search.applies(cfg, model)
    return {"dataset": dataset or require_training_dataset(ctx, model).path,
            "dataset_definition": cfg.training.dataset_definition(model),
            "class_path": cfg.models[model].class_path,
            "configured_params": {k: v for k, v in cfg.models[model].params.items() if k not in RESOURCE_PARAMS},
            "fit_on": "all" if cfg.training.fit_on_all_data else "train_split",
            "search_settings": ({**cfg.training.search.model_dump(mode="json", exclude={"spaces"}),
                                 "space": cfg.training.search.model_dump(mode="json")["spaces"].get(model)}
                                if searching else None)}


def _search(ctx: JobContext, model: str, data: Any, started: float) -> dict[str, Any]:
    """The hyper-parameter search (``skyrec.evaluation.search``) on the training part of the split only,
    within ``training.search.deadline_fraction`` of this job's deadline counted from its start."""
    from skyrec.evaluation import search
    from skyrec.models.series import item_context

    cfg = ctx.config.training.search
    cap = cfg.deadline_fraction * ctx.config.jobs.deadline_seconds("train") - (time.monotonic() - started)
    try:  # data.train only: the search must never see the split's test (the evaluate step judges on it)
        record = search.run_search(ctx.config, model, data.train, item_features=data.item_features,
                                   context=item_context(data, "train"), first_play=data.train_first_play,
                                   time_cap_seconds=max(cap, 0.0))
    except ValueError as exc:
        if isinstance(exc, ConfigError):
            raise
        raise BadInput(f"training.search for {model}: {exc}") from None
    out = record.as_dict()
    search.log.info("search %s: %d trials complete, %d failed, stopped by %s after %.1f s; best %s; configured %s",
                    model, out["n_complete"], out["n_failed"], out["stopped"], out["seconds"], out["best"],
                    out["configured_value"])
    return out
