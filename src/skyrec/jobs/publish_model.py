"""train_model / publish_model: prove the run's model artefact, then point (model, version) at it.

Proof, in order (any failure publishes nothing): the model output is committed; every file matches its
manifest (size and sha256: ``Lake.verify``); the artefact loads and validates (shapes, finite float32);
the saved model restores without pickle and its representations equal the artefact's factors; a probe
batch of users scores finite; the run's evaluation is committed, names this very model output, and its
quality gate passed (or was overridden). A verified artefact that fails to load or validate (NaN or +-inf
in its factors: ``NonFiniteError``) is ``BadInput``, not retried: a retry would read the same bytes.

Then the pointer ``pointers/models/<model>/<version>.json`` is replaced atomically with
``{"path", "model", "version", "model_version", "run_key", "evaluation": <figures: pointer_evaluation>,
"published_at", "published_by"}``. The pointer only ever names committed, verified outputs (``write_pointer``
refuses anything else), so concurrent training runs can never leave it at a missing or partial model. An
older run never replaces a newer run's published model (unless forced): the read-compare-replace runs
under a file lock on the local state folder, which covers concurrent publishers on one machine.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import fcntl
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from skyrec.jobs.base import BadInput, JobContext, NotReady
from skyrec.storage import CorruptPointer

PROBE_USERS = 256


@contextlib.contextmanager
def _pointer_lock(ctx: JobContext, model: str, version: str) -> Iterator[None]:
    folder = Path(ctx.config.state_dir) / "locks"
    folder.mkdir(parents=True, exist_ok=True)
    with open(folder / f"model-pointer.{model}.{version}.lock", "a+") as fh:
        fcntl.flock(fh.fileno(), fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(fh.fileno(), fcntl.LOCK_UN)


def prove(ctx: JobContext, model_rel: str, eval_rel: str) -> tuple[Any, Any]:
    """Post-conditions of training: returns (model manifest, evaluation manifest) or raises."""
    import numpy as np

    from skyrec.gates import GateFailed
    from skyrec.models import representations as reps
    from skyrec.models.artefact import load_artefact, load_model

    manifest = ctx.lake.manifest(model_rel)
    if manifest is None:
        raise NotReady(f"model output {model_rel} is not committed: nothing to publish")
    ctx.lake.verify(manifest, checksums=True)
    # The files now match their committed checksums, so a retry reads the same bytes: an artefact that does not
    # load or validate (``reps.NonFiniteError`` for NaN or +-inf, shapes, dtypes, a class not configured) is
    # bad input, failed and not retried, with the loader's message (which names the file) kept.
    try:
        art = load_artefact(ctx.lake, manifest)
        allowed = {spec.class_path for spec in ctx.config.models.values()}
        recommender = load_model(ctx.lake, manifest, allowed=allowed)
    except ValueError as exc:
        raise BadInput(str(exc)) from exc
    if not (reps.equal(recommender.user_representations(), art.user_factors)
            and reps.equal(recommender.item_representations(), art.item_factors)):
        raise BadInput(f"{model_rel}: the saved model's representations differ from factors.npz")
    probe = np.linspace(0, len(art.user_ids) - 1, num=min(PROBE_USERS, len(art.user_ids))).astype(np.int64)
    scores = reps.scores(art.user_factors[probe], art.item_factors)
    if scores.shape != (len(probe), len(art.item_ids)) or not np.isfinite(scores).all():
        raise BadInput(f"{model_rel}: probe scores are not finite")

    evaluation = ctx.lake.manifest(eval_rel)
    if evaluation is None:
        raise NotReady(f"evaluation {eval_rel} is not committed: run evaluate first")
    ctx.lake.verify(evaluation, checksums=True)
    if evaluation.meta.get("model_output") != manifest.path:
        raise BadInput(f"evaluation {eval_rel} evaluated {evaluation.meta.get('model_output')}, not {manifest.path}")
    _refuse_unevaluated_revision(ctx, manifest, evaluation)
    gate = evaluation.meta.get("gate") or {}
    if not (gate.get("passed") or gate.get("overridden")):
        raise GateFailed("quality", f"evaluation {eval_rel} did not pass: {gate.get('message', 'no verdict')}",
                         gate, hint=_override_hint(ctx))
    return manifest, evaluation


def _refuse_unevaluated_revision(ctx: JobContext, manifest: Any, evaluation: Any) -> None:
    """The evaluation measured this very commit of the model output, not an earlier one at the same path: a
    model trained again (``--force``, a search turned on) after its evaluation has figures nobody measured,
    and the gate never saw it. Evaluations record the commit they measured; one from before that record is
    stale when the model was committed after it."""
    recorded = evaluation.meta.get("model_commit")
    stale = (recorded != manifest.commit_id if recorded is not None
             else str(manifest.committed_at) > str(evaluation.committed_at))
    if not stale:
        return
    was = evaluation.meta.get("model_revision")
    params = " ".join(f"--param {k}={ctx.params[k]}" for k in ("model", "version") if ctx.params.get(k))
    raise BadInput(
        f"{manifest.path} was trained again (revision {manifest.revision}, committed {manifest.committed_at}) after "
        f"its evaluation {evaluation.path} (of revision {was if was is not None else 'before it'}, committed "
        f"{evaluation.committed_at}): the model to publish was never evaluated, and the quality gate never saw "
        f"it. Evaluate it first: skyrec job evaluate {params} --logical-date {ctx.run.logical_date.isoformat()} "
        "--force; then run publish_model again")


def _override_hint(ctx: JobContext) -> str:
    """What publishing a held model takes: publish_model follows the evaluation's recorded verdict, so the
    quality override belongs on the evaluate step, which re-decides and records the new verdict."""
    params = " ".join(f"--param {k}={ctx.params[k]}" for k in ("model", "version") if ctx.params.get(k))
    ignored = ("--override quality does not apply to publish_model, which publishes only what the evaluation's "
               "verdict allows; " if "quality" in ctx.overrides else "")
    return (f"{ignored}to publish it anyway, override the gate on the evaluate step, which re-decides and records "
            f"the new verdict: skyrec job evaluate {params} --logical-date {ctx.run.logical_date.isoformat()} "
            "--override quality; then run publish_model again")


def gate_shown(gate: dict[str, Any]) -> dict[str, Any]:
    """The verdict as a publication shows it. A model published by an override of a failed gate says so, with
    the gate's own verdict kept under ``verdict`` (its text may read "policy 'hold': not published", which
    the override undid)."""
    shown = {"passed": gate.get("passed"), "overridden": gate.get("overridden"), "message": gate.get("message"),
             "insufficient_evidence": gate.get("insufficient_evidence"),
             **{k: gate[k] for k in ("redecided_by", "redecided_at", "verdict") if gate.get(k)}}
    if gate.get("overridden") and not gate.get("passed") and "verdict" not in gate:  # not shown so already
        by = " ".join(f"{k.removeprefix('redecided_')} {gate[k]}" for k in ("redecided_by", "redecided_at")
                      if gate.get(k))
        shown["verdict"] = gate.get("message")
        shown["message"] = (f"published by an override of the failed quality gate{' (re-decided ' + by + ')' if by else ''}"
                            f"; the gate's verdict was: {shown['verdict']}")
    return shown


def evaluation_confidence(lake: Any, evaluation: Any) -> float | None:
    """The confidence level of an evaluation's intervals (``training.confidence`` when it ran): from its
    ``evaluation.json``, else from the paired comparisons or the protocol its manifest records."""
    import json
    import re

    try:
        with lake.open(evaluation, "evaluation.json") as fh:
            value = ((json.loads(fh.read()).get("results") or {}).get("bootstrap") or {}).get("confidence")
        if value is not None:
            return float(value)
    except (OSError, KeyError, ValueError):
        pass
    meta = evaluation.meta
    baseline = (meta.get("gate") or {}).get("baseline_comparison")
    if isinstance(baseline, dict) and baseline.get("confidence") is not None:
        return float(baseline["confidence"])
    found = re.search(r"([\d.]+)%", str((meta.get("protocol") or {}).get("interval") or ""))
    return float(found.group(1)) / 100 if found else None


def pointer_evaluation(evaluation: Any, confidence: float | None = None) -> dict[str, Any]:
    """What the pointer (and from it the predictions meta, the serving pointer and ``/v1/variants``) says
    about the model's evaluation: the headline figures with their intervals (at ``confidence``), the users
    they rest on, the protocol, the gate's verdict (``gate_shown``), the per-rail figures after the business
    rules, and the evaluation output (whose ``report.html`` the API serves)."""
    meta = evaluation.meta
    metric = meta.get("metric")
    overall = dict(meta.get("overall") or {})
    base = meta.get("baseline_overall") or {}
    return {**{k: v for k, v in overall.items() if not isinstance(v, dict | list)},
            "ci": overall.get("ci") or {}, "confidence": confidence, "metric": metric,
            "evaluation_path": evaluation.path, "baseline_model": meta.get("baseline"), "baseline": base.get(metric),
            "baseline_ci": (base.get("ci") or {}).get(metric), "protocol": meta.get("protocol"),
            "gate": gate_shown(meta.get("gate") or {}), "rules": meta.get("rules") or {}}


def run(ctx: JobContext) -> dict[str, Any]:
    from skyrec.jobs._model_inputs import model_and_version
    from skyrec.models.artefact import published_model_pointer

    model, version = model_and_version(ctx)
    model_rel = ctx.path("model", model=model, version=version)
    eval_rel = ctx.path("evaluation", model=model, version=version)
    ptr_rel = published_model_pointer(model, version)
    manifest, evaluation = prove(ctx, model_rel, eval_rel)
    run_key = ctx.run.run_key
    payload = {
        "path": manifest.path, "model": model, "version": version,
        "model_version": manifest.meta.get("model_version"), "run_key": run_key,
        "evaluation": pointer_evaluation(evaluation, evaluation_confidence(ctx.lake, evaluation)),
        "published_at": dt.datetime.now(dt.UTC).isoformat(), "published_by": ctx.producer.job_key,
    }
    with _pointer_lock(ctx, model, version):
        replaced = None
        try:
            current = ctx.lake.read_pointer(ptr_rel) or {}
        except CorruptPointer as exc:  # the gate could not compare with it either (it said so): replace it
            current, replaced = {}, str(exc)
        if current.get("path") == manifest.path:
            return {"outputs": [manifest.path], "pointer": ptr_rel, "note": "already published",
                    "model_version": payload["model_version"]}
        if current.get("run_key", "") > run_key and not ctx.force:
            return {"outputs": [manifest.path], "pointer": ptr_rel, "published": False,
                    "note": f"a newer model {current.get('model_version')} is published; not replacing it",
                    "model_version": payload["model_version"]}
        ctx.lake.write_pointer(ptr_rel, payload)
        check = ctx.lake.read_pointer(ptr_rel) or {}
        if check.get("path") != manifest.path:
            raise RuntimeError(f"{ptr_rel}: pointer reads back {check.get('path')!r}, expected {manifest.path}")
    return {"outputs": [manifest.path], "pointer": ptr_rel, "published": True,
            "model_version": payload["model_version"], "evaluation": payload["evaluation"],
            **({"replaced_corrupt_pointer": replaced} if replaced else {})}
