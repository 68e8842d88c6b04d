"""Inputs shared by the train_model jobs: which model/version a run trains, and which upstream outputs."""

from __future__ import annotations

import json
from typing import Any

from skyrec.jobs.base import BadInput, JobContext, NotReady
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
    definition: ``training.dataset_id``; a run that committed it under the id of an earlier version,
    ``training.legacy_dataset_id``, keeps reading that one)."""
    training = ctx.config.training
    legacy = training.legacy_dataset_id(model)
    if legacy != training.dataset_id(model):
        found = ctx.lake.manifest(ctx.path("training_dataset", model=model, dataset_id=training.dataset_id(model)))
        found = found or ctx.lake.manifest(ctx.path("training_dataset", model=model, dataset_id=legacy))
        if found is not None:
            return found
    return require_output(ctx, "training_dataset", "training dataset", model=model,
                          dataset_id=training.dataset_id(model))


def refuse_changed_settings(ctx: JobContext, done: Manifest, job: str, what: str, now: dict[str, Any]) -> None:
    """A committed output is a no-op on a re-run only when it was made from the settings this run has. Made
    from others (the split, the parameters, the search or the evaluation protocol changed in the config since
    this logical date ran), keeping it would report the old output as this configuration's: refuse, naming
    each difference and the two ways on (outputs are never replaced silently)."""
    committed = done.meta
    changed = []
    for key, value in now.items():
        if key not in committed:  # outputs made before this setting was recorded
            continue
        recorded = _CANONICAL.get(key, lambda v: v)(committed[key])  # recorded in an earlier form: today's
        changed += [f"{leaf}: committed {_short(a)}, now {_short(b)}"
                    for leaf, a, b in _differences(_plain(recorded), _plain(value), key)]
    if changed:
        raise BadInput(
            f"{what} of run {ctx.run.run_key} is committed already ({done.path}) from other settings than this "
            f"run's: {'; '.join(changed)}. A committed output is never replaced silently: run another logical "
            f"date, or run this one again replacing its outputs: `skyrec run train_model --logical-date "
            f"{ctx.run.logical_date.isoformat()} --conf '{{\"force\": true}}'` (this step alone: `skyrec job {job} "
            f"--param model={ctx.params.get('model')} --logical-date {ctx.run.logical_date.isoformat()} --force`)")


def _canonical_definition(value: Any) -> Any:
    from skyrec.config import canonical_dataset_definition

    return canonical_dataset_definition(value) if isinstance(value, dict) else value


def _canonical_protocol(value: Any) -> Any:
    from skyrec.jobs.evaluate import canonical_protocol

    return canonical_protocol(value)


#: settings a committed output may have recorded in an earlier form, and how to read them in today's: a
#: re-run of a date that ran before is not refused for a change of form alone
_CANONICAL = {"dataset_definition": _canonical_definition, "protocol": _canonical_protocol}

_NONE = object()


def _differences(old: Any, new: Any, prefix: str) -> list[tuple[str, Any, Any]]:
    """Where two settings differ, as (dotted key, old, new): mappings on both sides are compared key by key,
    so a change names the setting (``dataset_definition.split.kind``); anything else is compared whole (a
    search that was off, ``null``, against its settings now: one difference)."""
    if not (isinstance(old, dict) and isinstance(new, dict)):
        return [] if old == new else [(prefix, old, new)]
    out: list[tuple[str, Any, Any]] = []
    for k in sorted(set(old) | set(new)):
        out += _differences(old.get(k, _NONE), new.get(k, _NONE), f"{prefix}.{k}")
    return out


def _plain(value: Any) -> Any:
    """The value as JSON has it (tuples as lists, keys as text): what the manifest recorded."""
    return json.loads(json.dumps(value, sort_keys=True, default=str))


def _short(value: Any, limit: int = 160) -> str:
    if value is _NONE:
        return "(not set)"
    text = json.dumps(_plain(value), sort_keys=True)
    return text if len(text) <= limit else text[: limit - 3] + "..."
