"""Inputs shared by the train_model jobs: which model/version a run trains, and which upstream outputs."""

from __future__ import annotations

from skyrec.jobs.base import JobContext, NotReady
from skyrec.models import resolve_version
from skyrec.storage import Manifest


def model_and_version(ctx: JobContext) -> tuple[str, str]:
    model = ctx.param("model")
    return model, resolve_version(ctx.config, model, ctx.params.get("version") or None)


def require_output(ctx: JobContext, dataset: str, what: str, **fields: str) -> Manifest:
    rel = ctx.path(dataset, **fields)
    manifest = ctx.lake.manifest(rel)
    if manifest is None:
        raise NotReady(f"{what} {rel} is not committed: run the upstream step first")
    return manifest


def require_training_dataset(ctx: JobContext, model: str) -> Manifest:
    """This run's training dataset of ``model``'s dataset definition (shared by the models of that
    definition: ``training.dataset_id``)."""
    return require_output(ctx, "training_dataset", "training dataset", model=model,
                          dataset_id=ctx.config.training.dataset_id(model))
