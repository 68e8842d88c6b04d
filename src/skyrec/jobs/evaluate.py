"""train_model / evaluate: offline evaluation on the time split, then the quality gate.

In one run, on the same sampled test users: the model (same class and parameters as the run's artefact,
fit on the training part of the split) and the baseline (``training.baseline``, popularity), overall and
per candidate set of every variant served by (model, version), plus cold-start item recall. The figures
of the last published model for (model, version) come from its pointer.

Output ``evaluation`` (``evaluations/{model}/{version}/run={run_key}``): ``evaluation.json`` and
``report.html``. The figures are committed whatever the gate says (an operator deciding on an override
needs them); the gate verdict is recorded in the manifest meta (``gate``) and publish_model refuses a model
whose evaluation did not pass. Gate ``quality`` (``training.quality_gate``): fails when the model does not
beat the baseline (``must_beat_baseline``) or is worse than the published model by more than
``tolerance`` (relative) on ``metric``. Override for one run with ``--override quality``: a re-run of a
failed evaluation re-decides the gate on the committed figures and commits a new manifest revision with
the new verdict (the figures are not recomputed).
"""

from __future__ import annotations

import datetime as dt
import json
from typing import Any

from skyrec.jobs.base import BadInput, JobContext

REPORT = "report.html"
FIGURES = "evaluation.json"


def headline(figures: dict[str, Any]) -> dict[str, Any]:
    """The overall figures of the evaluated model (what the pointer and the gate use)."""
    return {k: v for k, v in figures.items() if not isinstance(v, dict | list)}


def _published(ctx: JobContext, model: str, version: str, metric: str) -> tuple[float | None, str | None]:
    from skyrec.models.artefact import published_model_pointer

    ptr = ctx.lake.read_pointer(published_model_pointer(model, version)) or {}
    value = (ptr.get("evaluation") or {}).get(metric)
    return (float(value) if value is not None else None), ptr.get("model_version")


def _decide(ctx: JobContext, model: str, version: str, evaluation: dict[str, Any]):
    from skyrec.evaluation.gate import quality_gate

    qg = ctx.config.training.quality_gate
    published, published_version = _published(ctx, model, version, qg.metric)
    if published_version == evaluation.get("model_version"):
        published = None  # re-deciding after this very model was published: do not compare with itself
    new = evaluation["overall"].get(qg.metric)
    baseline = (evaluation.get("baseline_overall") or {}).get(qg.metric)
    return quality_gate(new, baseline, published, metric=qg.metric, tolerance=qg.tolerance,
                        must_beat_baseline=qg.must_beat_baseline and evaluation.get("baseline") != model,
                        published_version=published_version)


def _commit(ctx: JobContext, rel: str, evaluation: dict[str, Any], *, force: bool) -> Any:
    from skyrec.evaluation.report import render

    stage = ctx.lake.stage("evaluation", rel, ctx.producer, force=force)
    with stage:
        with stage.open(FIGURES, "wb") as fh:
            fh.write(json.dumps(evaluation, indent=1, sort_keys=True, default=float).encode())
        with stage.open(REPORT, "wb") as fh:
            fh.write(render(evaluation).encode())
        meta = {k: evaluation[k] for k in ("model", "version", "model_version", "model_output", "dataset",
                                           "baseline", "metric")}
        meta.update(overall=evaluation["overall"], baseline_overall=evaluation["baseline_overall"],
                    gate=evaluation["gate"])
        return stage.commit(meta)


def run(ctx: JobContext) -> dict[str, Any]:
    from skyrec.gates import GateFailed
    from skyrec.jobs._model_inputs import model_and_version, require_output

    model, version = model_and_version(ctx)
    rel = ctx.path("evaluation", model=model, version=version)
    done = ctx.committed("evaluation", model=model, version=version)
    if done is not None:
        return _recheck(ctx, model, version, rel, done)

    model_m = require_output(ctx, "model", "model output", model=model, version=version)
    ds = require_output(ctx, "training_dataset", "training dataset", model=model)
    evaluation = _evaluate(ctx, model, version, model_m, ds)
    result = _decide(ctx, model, version, evaluation)
    failure: GateFailed | None = None
    try:
        ctx.gate(result)
    except GateFailed as exc:
        failure = exc
    evaluation["gate"] = result.as_dict()
    evaluation["comparison"] = {k: result.details.get(k) for k in ("metric", "new", "baseline", "published",
                                                                   "published_model_version")}
    manifest = _commit(ctx, rel, evaluation, force=ctx.force)
    if failure is not None:
        raise failure
    return {"outputs": [manifest.path], "gate": result.as_dict(), **headline(evaluation["overall"])}


def _recheck(ctx: JobContext, model: str, version: str, rel: str, done: Any) -> dict[str, Any]:
    """Evaluation committed already: a no-op when its gate passed, else re-decide (override, new pointer)."""
    from skyrec.gates import GateFailed

    gate = done.meta.get("gate") or {}
    if gate.get("passed") or gate.get("overridden"):
        return {"outputs": [done.path], "note": "already committed", "gate": gate}
    with ctx.lake.open(done, FIGURES) as fh:
        evaluation = json.loads(fh.read())
    result = _decide(ctx, model, version, evaluation)
    ctx.gate(result)  # raises again unless it now passes or is overridden for this run
    evaluation["gate"] = {**result.as_dict(), "redecided_at": dt.datetime.now(dt.UTC).isoformat(),
                          "redecided_by": ctx.producer.job_key}
    manifest = _commit(ctx, rel, evaluation, force=True)
    if manifest is None:  # pragma: no cover - commit raises on failure
        raise GateFailed("quality", "could not record the new verdict")
    return {"outputs": [manifest.path], "gate": evaluation["gate"], "revision": manifest.revision}


def _evaluate(ctx: JobContext, model: str, version: str, model_m: Any, ds: Any) -> dict[str, Any]:

    from skyrec.evaluation.offline import Scored, candidate_mask, evaluate
    from skyrec.models import build_model, model_class, variants_of
    from skyrec.models.dataset import load_training_data
    from skyrec.models.training import fit_on

    cfg = ctx.config.training
    if cfg.baseline not in ctx.config.models:
        raise BadInput(f"training.baseline: {cfg.baseline!r} is not a configured model")
    data = load_training_data(ctx.lake, ds, only=("train", "test", "item_features"))
    n_items = data.train.shape[1]
    params = dict(model_m.meta.get("params", ctx.config.models[model].params))
    scored: dict[str, Scored] = {}
    fit_seconds: dict[str, float] = {}
    for name, instance in ((model, model_class(ctx.config, model)(**params)),
                           (cfg.baseline, build_model(ctx.config, cfg.baseline))):
        if name in scored:
            continue
        try:
            fitted = fit_on(instance, data.train, data.item_features if instance.uses_item_features else None)
        except ValueError as exc:
            raise BadInput(f"{ds.path}: {name}: {exc}") from None
        full, mask = fitted.full_item_factors(n_items)
        scored[name] = Scored(fitted.user_factors, full, None if mask.all() else mask)
        fit_seconds[name] = round(fitted.seconds, 3)

    variants = variants_of(ctx.config, model, version)
    candidate_sets = {}
    for v in variants:
        c = ctx.config.variants[v].candidates
        if c.genres or c.formats or c.masterbrands:
            candidate_sets[v] = candidate_mask(data.feature_names, data.item_features, genres=c.genres,
                                               formats=c.formats, masterbrands=c.masterbrands)
    cold = (data.train_item_plays == 0) & data.in_catalogue
    results = evaluate(scored, data.train, data.test, k=cfg.k, candidate_sets=candidate_sets,
                       cold_items=cold if cold.any() else None, max_users=cfg.eval_max_users,
                       seed=0)
    truth = _truth_figures(ctx, model_m, cfg.baseline, cfg.k)
    return {
        "truth": truth,
        "model": model, "version": version, "model_version": model_m.meta.get("model_version"),
        "model_output": model_m.path, "dataset": ds.path, "baseline": cfg.baseline,
        "metric": cfg.quality_gate.metric, "k": cfg.k, "cutoff": ds.meta.get("cutoff"), "end": ds.meta.get("end"),
        "holdout_days": cfg.holdout_days, "variants": variants, "fit_seconds": fit_seconds,
        "overall": results["models"][model]["overall"],
        "cold_start": results["models"][model]["cold_start"],
        "baseline_overall": results["models"][cfg.baseline]["overall"],
        "results": results, "evaluated_at": dt.datetime.now(dt.UTC).isoformat(),
    }


def _truth_figures(ctx: JobContext, model_m: Any, baseline: str, k: int) -> dict[str, Any] | None:
    """How close the published artefact gets to the planted truth, when the data is the sample generator's.

    ``skyrec generate`` writes ``{source}/_truth/next_items.parquet``: per user the 10 items with the
    highest planted probability of being played next at the end of the data. Figure: recall@k of those
    items in the artefact's top-k (played items excluded, as precompute does), next to the same figure
    for the baseline fit on the same data. None when there is no truth file (real data).
    """
    import fsspec
    import numpy as np
    import pyarrow.parquet as pq

    from skyrec.evaluation.metrics import hits, per_user, top_k
    from skyrec.models import build_model
    from skyrec.models.artefact import load_artefact

    url = f"{ctx.config.source_url.rstrip('/')}/_truth/next_items.parquet"
    try:
        fs, path = fsspec.core.url_to_fs(url, **({"endpoint_url": ctx.config.source.endpoint_url}
                                                  if ctx.config.source.endpoint_url else {}))
        if not fs.exists(path):
            return None
        with fs.open(path, "rb") as fh:
            table = pq.read_table(fh, columns=["user_id", "item_id"])
    except (OSError, ValueError, ImportError):
        return None
    import scipy.sparse as sp

    art = load_artefact(ctx.lake, model_m)
    u_index = {u: i for i, u in enumerate(art.user_ids)}
    i_index = {x: j for j, x in enumerate(art.item_ids)}
    users = table.column("user_id").to_pylist()
    items = table.column("item_id").to_pylist()
    pairs = [(u_index[u], i_index.get(x, -1)) for u, x in zip(users, items, strict=True) if u in u_index]
    if not pairs:
        return None
    rows = np.array(sorted({r for r, _ in pairs}), dtype=np.int64)
    pos = {r: n for n, r in enumerate(rows)}
    known = [(pos[r], c) for r, c in pairs if c >= 0]
    n_truth = np.bincount([pos[r] for r, _ in pairs], minlength=len(rows))
    rel = sp.csr_matrix((np.ones(len(known), np.float32), ([a for a, _ in known], [b for _, b in known])),
                        shape=(len(rows), len(art.item_ids)))
    ds = ctx.lake.require(model_m.meta["dataset"])
    from skyrec.models.dataset import load_training_data

    data = load_training_data(ctx.lake, ds, only=("interactions",))
    item_pos = {x: j for j, x in enumerate(data.item_ids)}
    cols = np.array([item_pos[x] for x in art.item_ids], dtype=np.int64)
    base = build_model(ctx.config, baseline)
    base.fit(data.interactions[:, cols])
    out: dict[str, Any] = {"users": int(len(rows)), "k": k}
    for name, U, V in (("model", art.user_factors, art.item_factors),
                       ("baseline", base.user_representations(), base.item_representations())):
        total = 0.0
        for start in range(0, len(rows), 2048):
            b = rows[start:start + 2048]
            scores = np.asarray(U[b] @ V.T, np.float32)
            ex = art.seen[b]
            scores[np.repeat(np.arange(len(b)), np.diff(ex.indptr)), ex.indices] = -np.inf
            rec, _ = top_k(scores, k)
            m = per_user(hits(rec, rel[start:start + 2048]), n_truth[start:start + 2048], k)
            total += float(m["recall_at_k"].sum())
        out[f"{name}_truth_recall_at_k"] = total / len(rows)
    return out
