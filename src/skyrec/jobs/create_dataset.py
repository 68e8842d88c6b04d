"""train_model / create_dataset: the training dataset of one dataset definition from the latest activity
snapshot and catalogue at or before the run's logical time.

A definition (``TrainingConfig.dataset_definition``: event weights, recency decay, split) is shared by every
trained model that selects it; its short digest (``training.dataset_id``) is the ``{dataset_id}`` field of the
output path, so the dataset is built once per run and read by each of those models' train/evaluate. A second
creator of the same run finds it committed and does nothing.

Output ``training_dataset`` (see ``skyrec.models.dataset`` for the files, the weighting and the split:
``training.split``, per user by default, recorded in the meta's ``split``). Events without user, item or
time are quarantined and counted; the run fails above
``ingest.activity.max_error_rate`` (gate ``error_rate``).
"""

from __future__ import annotations

from typing import Any

from skyrec.jobs.base import BadInput, JobContext, NotReady


def run(ctx: JobContext) -> dict[str, Any]:
    from skyrec.gates import error_rate_gate
    from skyrec.models.dataset import build_training_data, read_parquet_files, save_training_data

    dataset, models = _definition(ctx)
    done = ctx.committed("training_dataset", dataset_id=dataset)
    legacy = ctx.config.training.legacy_dataset_id(models[0])
    if done is None and legacy != dataset:  # this run's dataset, committed under the id of an earlier version
        done = ctx.committed("training_dataset", dataset_id=legacy)
    if done is not None:  # built by another model's task of the same definition, or an earlier try
        return {"outputs": [done.path], "note": "already committed", **done.meta}

    snapshot = ctx.as_of("activity_snapshot")
    if snapshot is None:
        raise NotReady(f"no committed activity_snapshot at or before {ctx.run.run_key}: ingest activity first")
    catalogue_m = ctx.as_of("catalogue")
    cfg = ctx.config.training
    activity = read_parquet_files(ctx.lake, snapshot, ["user_id", "item_id", "event_type", "event_ts",
                                                       "played_seconds"], dictionary=("user_id", "item_id",
                                                                                      "event_type"))
    catalogue = None
    if catalogue_m is not None:
        catalogue = read_parquet_files(ctx.lake, catalogue_m, ["item_id", "brand_id", "masterbrand", "genres",
                                                                "formats", "duration_seconds", "release_ts"],
                                       prefer="catalogue.parquet")
    try:
        data, bad = build_training_data(activity, catalogue, weighting=cfg.weighting,
                                        played_fraction_weight=cfg.played_fraction_weight,
                                        half_life_days=cfg.recency_half_life_days, holdout_days=cfg.holdout_days,
                                        split=cfg.split.model_dump())
    except ValueError as exc:
        raise BadInput(f"{snapshot.path}: {exc}") from None
    if data.train.nnz == 0 or data.test.nnz == 0:
        what = (f"the time split (holdout {cfg.holdout_days} days before {data.meta['end']})"
                if cfg.split.kind == "global" else
                f"the per-user split (training.split: {cfg.split.model_dump()})")
        raise BadInput(f"{snapshot.path}: {what} leaves {data.train.nnz} train / {data.test.nnz} test "
                       "interactions; both must be non-empty")
    data.meta.update(activity_snapshot=snapshot.path, activity_snapshot_revision=snapshot.revision,
                     catalogue=catalogue_m.path if catalogue_m else None,
                     dataset_id=dataset, definition=ctx.config.training.dataset_definition(models[0]), models=models)
    with ctx.stage("training_dataset", dataset_id=dataset) as stage:
        for reason, records in bad.items():
            stage.quarantine(reason, records)
        ctx.gate(error_rate_gate(int(data.meta["missing_ids"]), int(data.meta["events_in"]),
                                 max_error_rate=ctx.config.ingest.activity.max_error_rate))
        save_training_data(stage, data)
        manifest = stage.commit(data.meta)
    return {"outputs": [manifest.path],
            **{k: v for k, v in data.meta.items() if not isinstance(v, (dict, list))}}


def _definition(ctx: JobContext) -> tuple[str, list[str]]:
    """The dataset to build (``--param dataset_id=<id>``, or the one of ``--param model=<name>``) and the
    trained models (``training.models``) that read it."""
    shared = ctx.config.training_datasets()
    if ctx.params.get("dataset_id"):
        dataset = ctx.params["dataset_id"]
        if dataset not in shared:
            raise BadInput(f"--param dataset_id={dataset}: no trained model has this dataset definition (known: "
                           f"{shared}); was training config changed since the DAG "
                           "was parsed?")
        return dataset, shared[dataset]
    model = ctx.param("model")
    if model not in ctx.config.models:
        raise BadInput(f"--param model={model}: unknown model (known: {sorted(ctx.config.models)})")
    dataset = ctx.config.training.dataset_id(model)
    return dataset, shared.get(dataset, [model])
