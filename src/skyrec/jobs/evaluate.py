"""train_model / evaluate: offline evaluation on the run's split, then the quality gate.

In one run, on the same test users of the dataset's split (``training.split``: per user by default): the
model (same class and parameters as the run's artefact, fit on the training part of the split; with
``training.fit_on_all_data: false`` the artefact is that fit and is scored as committed, ``scored`` in
``evaluation.json``) and the baseline (``training.baseline``, popularity), overall and per candidate set of every variant served by
(model, version), plus cold-start item recall. Every figure carries a bootstrap confidence interval
(``training.bootstrap_resamples``, users resampled, seeded) and the number of users it rests on.

Comparisons (``comparisons`` in ``evaluation.json``), each paired on the same users
(``skyrec.evaluation.stats.paired_comparison``): the model vs the baseline, and the model vs the last
published model of (model, version), whose artefact is *always re-scored* on this run's split (never its
recorded figures, which were measured on other data, maybe under another protocol): see
``skyrec.evaluation.compare`` for why only plays the published model has not seen count. When fewer than
``quality_gate.min_users`` users can be compared that way (it has seen their test plays: a retrain on the
same data), ``quality_gate.refit_published`` refits the published model's parameters on this split's
training part and compares on every evaluated user (``_refit_published``). When it cannot be re-scored,
the recorded figures are not used: the comparison says why, naming both protocols when they differ. Per
rail, ``rules`` holds the figures after each business rule (``skyrec.evaluation.rules``). A rail configured to
this model that serves another one now (moved to this model, or a new version) gets the same comparison
against the artefact it serves (``served``, ``_served_comparisons``), held to the same tolerance.

Output ``evaluation`` (``evaluations/{model}/{version}/run={run_key}``): ``evaluation.json`` and
``report.html``. The figures are committed whatever the gate says (an operator deciding on an override
needs them); the gate verdict is recorded in the manifest meta (``gate``) and publish_model refuses a model
whose evaluation did not pass. Gate ``quality``: ``skyrec.evaluation.gate``. Below
``quality_gate.min_users`` the result is insufficient evidence and ``quality_gate.insufficient_evidence``
decides (``hold`` or ``publish_with_alert``; the alert is in the summary's ``alerts``). Override for one
run with ``--override quality``: a re-run of a failed evaluation re-decides the gate on the committed
figures and comparisons and commits a new manifest revision with the new verdict (nothing recomputed).
"""

from __future__ import annotations

import datetime as dt
import json
import zipfile
from typing import Any

from skyrec.jobs.base import BadInput, JobContext

REPORT = "report.html"
FIGURES = "evaluation.json"


def headline(figures: dict[str, Any]) -> dict[str, Any]:
    """The overall figures of the evaluated model (what the pointer and the gate use)."""
    return {k: v for k, v in figures.items() if not isinstance(v, dict | list)}


def protocol(cfg: Any, split: dict[str, Any] | None) -> dict[str, Any]:
    """What makes two evaluations' figures comparable: the split definition (not its data), k, the
    relevance and exclusion rules, the user sample and the interval method."""
    from skyrec.config import used_split_settings

    split = {k: v for k, v in (split or {}).items() if k not in ("users_tested", "users_cut_in_a_tie", "cutoff")}
    return {"split": used_split_settings(split), "k": cfg.k, "relevance": "test positives not played in train",
            "exclusions": "items played in train", "max_users": cfg.eval_max_users,
            "interval": f"user bootstrap, {cfg.bootstrap_resamples} resamples, {cfg.confidence:.0%}"}


def canonical_protocol(recorded: Any) -> Any:
    """A recorded protocol in today's form: its split without the settings the split's kind does not use
    (evaluations before :func:`skyrec.config.used_split_settings` recorded them)."""
    from skyrec.config import used_split_settings

    if not isinstance(recorded, dict) or not isinstance(recorded.get("split"), dict):
        return recorded
    return {**recorded, "split": used_split_settings(recorded["split"])}


def _split_of(ds: Any) -> dict[str, Any]:
    """The split a training dataset records (datasets before the per-user split: the global holdout)."""
    return ds.meta.get("split") or {"kind": "global", "holdout_days": ds.meta.get("holdout_days")}


def _decide(ctx: JobContext, model: str, version: str, evaluation: dict[str, Any]):
    from skyrec.evaluation.gate import quality_gate

    cfg = ctx.config.training
    qg = cfg.quality_gate
    comparisons = evaluation.get("comparisons") or {}
    metric = evaluation.get("metric") or qg.metric
    baseline = (comparisons.get("baseline") or {}).get(metric)
    published = comparisons.get("published")
    if isinstance(published, dict) and published.get("comparable", True):
        published = {**(published.get(metric) or {}), "model_version": published.get("model_version"),
                     "refit": bool(published.get("refit"))}
    if published is not None and published.get("model_version") == evaluation.get("model_version"):
        published = {"same_model": True}  # re-deciding after this very model was published: not against itself
    served = []
    for c in comparisons.get("served") or ():  # what the rails moving to this model serve now
        about = {k: c.get(k) for k in ("rails", "model", "model_version")}
        served.append({**(c.get(metric) or {}), **about, "refit": bool(c.get("refit"))} if c.get("comparable")
                      else {**about, "comparable": False, "reason": c.get("reason")})
    return quality_gate(metric=metric, new=evaluation["overall"].get(metric),
                        users=int(evaluation["overall"].get("users") or 0), min_users=qg.min_users,
                        policy=qg.insufficient_evidence, baseline=baseline, published=published,
                        tolerance=qg.tolerance, served=served,
                        must_beat_baseline=qg.must_beat_baseline and evaluation.get("baseline") != model)


def _alerts(model: str, version: str, gate: dict[str, Any]) -> list[dict[str, Any]]:
    if not gate.get("alert"):
        return []
    return [{"kind": "quality_gate", "summary": f"{model} {version}: {gate['alert']}",
             "details": {"model": model, "version": version, "policy": gate.get("policy"),
                         "users": gate.get("users"), "min_users": gate.get("min_users")}}]


def _commit(ctx: JobContext, rel: str, evaluation: dict[str, Any], *, force: bool) -> Any:
    from skyrec.evaluation.report import render

    stage = ctx.lake.stage("evaluation", rel, ctx.producer, force=force)
    with stage:
        with stage.open(FIGURES, "wb") as fh:
            fh.write(json.dumps(evaluation, indent=1, sort_keys=True, default=float).encode())
        with stage.open(REPORT, "wb") as fh:
            fh.write(render(evaluation).encode())
        meta = {k: evaluation[k] for k in ("model", "version", "model_version", "model_output", "model_commit",
                                           "model_revision", "dataset", "baseline", "metric")}
        meta.update(overall=evaluation["overall"], baseline_overall=evaluation["baseline_overall"],
                    gate=evaluation["gate"], protocol=evaluation.get("protocol"),
                    rules=_rules_summary(evaluation))
        return stage.commit(meta)


def _rules_summary(evaluation: dict[str, Any]) -> dict[str, Any]:
    """Per variant and stage: the gate metric and its interval (what the pointer carries to the API)."""
    metric = evaluation.get("metric", "ndcg_at_k")
    out: dict[str, Any] = {}
    for variant, stages in (evaluation.get("rules") or {}).items():
        out[variant] = {stage: {metric: f.get(metric), "ci": (f.get("ci") or {}).get(metric), "users": f.get("users")}
                        for stage, f in (stages.get("stages") or {}).items()}
        if stages.get("note"):
            out[variant]["note"] = stages["note"]
    return out


def run(ctx: JobContext) -> dict[str, Any]:
    from skyrec.gates import GateFailed
    from skyrec.jobs._model_inputs import (
        model_and_version,
        refuse_changed_settings,
        require_output,
        require_training_dataset,
    )

    model, version = model_and_version(ctx)
    rel = ctx.path("evaluation", model=model, version=version)
    done = ctx.committed("evaluation", model=model, version=version)
    if done is not None:
        model_m = require_output(ctx, "model", "model output", model=model, version=version)
        ds = require_training_dataset(ctx, model)
        cfg = ctx.config.training
        refuse_changed_settings(ctx, done, "evaluate", f"the evaluation of {model} {version}", {
            "model_output": model_m.path, "model_commit": model_m.commit_id, "dataset": ds.path,
            "baseline": cfg.baseline, "metric": cfg.quality_gate.metric, "protocol": protocol(cfg, _split_of(ds))})
        return _recheck(ctx, model, version, rel, done)

    model_m = require_output(ctx, "model", "model output", model=model, version=version)
    ds = require_training_dataset(ctx, model)
    evaluation = _evaluate(ctx, model, version, model_m, ds)
    result = _decide(ctx, model, version, evaluation)
    failure: GateFailed | None = None
    try:
        ctx.gate(result)
    except GateFailed as exc:
        failure = exc
    evaluation["gate"] = result.as_dict()
    evaluation["comparison"] = {k: result.details.get(k) for k in ("metric", "new", "users", "min_users", "policy",
                                                                   "insufficient_evidence")}
    manifest = _commit(ctx, rel, evaluation, force=ctx.force)
    if failure is not None:
        raise failure
    return {"outputs": [manifest.path], "gate": result.as_dict(), "alerts": _alerts(model, version, result.details),
            **headline(evaluation["overall"])}


def _recheck(ctx: JobContext, model: str, version: str, rel: str, done: Any) -> dict[str, Any]:
    """Evaluation committed already: a no-op when its gate passed, else re-decide (override, new config)."""
    from skyrec.gates import GateFailed

    gate = done.meta.get("gate") or {}
    if gate.get("passed") or gate.get("overridden"):
        return {"outputs": [done.path], "note": "already committed", "gate": gate}
    with ctx.lake.open(done, FIGURES) as fh:
        evaluation = json.loads(fh.read())
    _refuse_stale_comparison(ctx, evaluation)
    result = _decide(ctx, model, version, evaluation)
    ctx.gate(result)  # raises again unless it now passes or is overridden for this run
    evaluation["gate"] = {**result.as_dict(), "redecided_at": dt.datetime.now(dt.UTC).isoformat(),
                          "redecided_by": ctx.producer.job_key}
    manifest = _commit(ctx, rel, evaluation, force=True)
    if manifest is None:  # pragma: no cover - commit raises on failure
        raise GateFailed("quality", "could not record the new verdict")
    return {"outputs": [manifest.path], "gate": evaluation["gate"], "revision": manifest.revision,
            "alerts": _alerts(model, version, result.details)}


def _refuse_stale_comparison(ctx: JobContext, evaluation: dict[str, Any]) -> None:
    """Re-deciding reads the committed comparisons with the published model and with what the rails serve,
    which answer the question of the settings they were made under: whether new > (1 - tolerance) x theirs,
    and whether their parameters were refit when too few users could be compared. Under another tolerance, or
    a min_users under which the refit would now be made, the verdict would quote an interval for another
    question: refuse."""
    qg = ctx.config.training.quality_gate
    comparisons = evaluation.get("comparisons") or {}
    metric = evaluation.get("metric") or qg.metric
    evaluable = int((evaluation.get("overall") or {}).get("users") or 0)
    hint = "re-evaluate with --force to compare again under the current settings"
    held_to = [("the published model", "published", comparisons.get("published"))]
    held_to += [(f"what rails {', '.join(c.get('rails') or ())} serve", "theirs", c)
                for c in comparisons.get("served") or ()]
    for who, theirs, c in held_to:
        if not isinstance(c, dict) or not c.get("comparable"):
            continue
        figures = c.get(metric) or {}
        factor = figures.get("factor", c.get("factor"))
        if factor is not None and abs(float(factor) - (1.0 - qg.tolerance)) > 1e-9:
            raise BadInput(f"the committed comparison with {who} tested new > {float(factor):g} x {theirs} "
                           f"(tolerance {1.0 - float(factor):g}); training.quality_gate.tolerance is now "
                           f"{qg.tolerance:g}: {hint}")
        users = int(figures.get("users") or 0)
        if qg.refit_published and not c.get("refit") and users < qg.min_users <= evaluable:
            raise BadInput(f"only {users} users could be compared with {who} and its parameters were not refit on "
                           f"this split (min_users was {(evaluation.get('comparison') or {}).get('min_users')} when "
                           f"it ran; now {qg.min_users}, under which the refit is made): {hint}")


def _needs_refit(qg: Any, comparison: dict[str, Any] | None, evaluable: int) -> bool:
    """Too few users compare with an artefact (it has seen their test plays) while the evaluation itself rests
    on enough of them: ``refit_published`` refits its parameters on this split (else nothing to gain)."""
    return bool(qg.refit_published and comparison and comparison.get("comparable") and evaluable >= qg.min_users
                and int((comparison.get(qg.metric) or {}).get("users") or 0) < qg.min_users)


def _published_comparison(ctx: JobContext, model: str, version: str, model_version: str | None, data: Any,
                          per_user: dict[str, Any], new: Any, this_protocol: dict[str, Any]) -> dict[str, Any] | None:
    """The new model vs the published artefact re-scored on this split (None: nothing published)."""
    from skyrec.models.artefact import load_published, published_model_pointer
    from skyrec.storage import CorruptPointer, StorageError

    try:
        ptr = ctx.lake.read_pointer(published_model_pointer(model, version))
    except CorruptPointer as exc:  # something is published, and nobody can say what: never "nothing yet"
        return {"comparable": False, "reason": f"{exc}: the published model cannot be re-scored on this split",
                "corrupt_pointer": True}
    if ptr is None:
        return None
    if ptr.get("model_version") == model_version:  # evaluating again the model that is published
        return {"comparable": False, "same_model": True, "model_version": model_version,
                "reason": "this model is the one published"}
    recorded = (ptr.get("evaluation") or {}).get("protocol")
    try:
        art = load_published(ctx.lake, model, version)
        if art is None:
            raise FileNotFoundError("pointer names no model")
    except (OSError, ValueError, KeyError, EOFError, zipfile.BadZipFile, StorageError) as exc:
        why = f"its artefact {ptr.get('path')} cannot be re-scored on this split ({type(exc).__name__}: {exc})"
        if canonical_protocol(recorded) != this_protocol:
            why += (f"; its recorded figures were measured under protocol {recorded}, this run's is "
                    f"{this_protocol}: refusing to compare figures from different protocols")
        else:
            why += "; its recorded figures come from other data and users, so no paired test is possible"
        return {"comparable": False, "reason": why, "model_version": ptr.get("model_version"),
                "recorded_protocol": recorded}
    return _rescored(ctx, art, data, per_user, new, {
        "model_version": ptr.get("model_version"), "path": ptr.get("path"), "recorded_protocol": recorded,
        "method": "published artefact re-scored on this split, on plays it has not seen"})


def _rescored(ctx: JobContext, art: Any, data: Any, per_user: dict[str, Any], new: Any,
              about: dict[str, Any]) -> dict[str, Any]:
    """The new model vs the artefact ``art`` re-scored on this split (plays it has not seen), paired per
    metric on the same users; ``about`` says which artefact it is."""
    from skyrec.evaluation.compare import rescore_published
    from skyrec.evaluation.stats import paired_comparison

    cfg = ctx.config.training
    scored = rescore_published(user_ids=data.user_ids, item_ids=data.item_ids, train=data.train, test=data.test,
                               users=per_user["users"], new_user_factors=new.user_factors,
                               new_item_factors=new.item_factors, new_scorable=new.scorable, published=art,
                               k=cfg.k)
    factor = 1.0 - cfg.quality_gate.tolerance
    out: dict[str, Any] = {"comparable": True, **about, "factor": factor, "params": art.meta.get("params"),
                           "relevant_plays_seen_by_published": scored["excluded_seen_by_published"],
                           "users_unknown_to_published": scored["users_unknown_to_published"]}
    for metric in scored["new"]:
        out[metric] = paired_comparison(scored["new"][metric], scored["published"][metric],
                                        resamples=cfg.bootstrap_resamples, seed=cfg.bootstrap_seed,
                                        confidence=cfg.confidence, factor=factor)
    return out


def _served_comparisons(ctx: JobContext, model: str, version: str, variants: list[str], data: Any,
                        per_user: dict[str, Any], new: Any, evaluable: int) -> list[dict[str, Any]]:
    """The rails configured to serve (model, version) that serve another model now (their published
    predictions, ``pointers/published/<rail>.json``, were computed with it: a rail moved to this model, or a
    new version): this model vs the artefact each of them serves, re-scored on this split like the published
    model (its parameters refit when too few users can be compared). One comparison per artefact, naming its
    rails. A rail whose serving artefact cannot be found or read: not comparable, said why."""
    from skyrec.models.artefact import load_artefact, published_predictions_pointer
    from skyrec.storage import CorruptPointer, StorageError

    groups: dict[str, dict[str, Any]] = {}
    for rail in variants:
        try:
            ptr = ctx.lake.read_pointer(published_predictions_pointer(rail))
        except CorruptPointer as exc:
            groups[f"corrupt:{rail}"] = {"rails": [rail], "comparable": False, "reason": str(exc)}
            continue
        pred = ctx.lake.manifest(ptr["path"]) if ptr else None
        if pred is None:
            continue  # nothing published for the rail yet (or its predictions were collected)
        meta = pred.meta
        if (meta.get("model"), meta.get("version")) == (model, version):
            continue  # it serves this (model, version): the published comparison covers it
        path = str(meta.get("model_path") or "")
        group = groups.setdefault(path, {"rails": [], "model": meta.get("model"), "version": meta.get("version"),
                                         "model_version": meta.get("model_version"), "path": path})
        group["rails"].append(rail)
    cfg = ctx.config.training
    out = []
    for group in groups.values():
        if "comparable" in group:
            out.append(group)
            continue
        what = f"the artefact rails {', '.join(group['rails'])} serve ({group['model']} {group['model_version']})"
        try:
            art = load_artefact(ctx.lake, ctx.lake.require(group["path"]))
        except (OSError, ValueError, KeyError, EOFError, zipfile.BadZipFile, StorageError) as exc:
            out.append({**group, "comparable": False,
                        "reason": f"{what}, {group['path']}, cannot be re-scored on this split "
                                  f"({type(exc).__name__}: {exc})"})
            continue
        comparison = _rescored(ctx, art, data, per_user, new, {
            **group, "method": f"{what} re-scored on this split, on plays it has not seen"})
        if _needs_refit(cfg.quality_gate, comparison, evaluable):
            comparison = {**_refit_published(ctx, str(group["model"]), data, new, comparison),
                          "rails": group["rails"], "model": group["model"], "version": group["version"]}
        out.append(comparison)
    return out


def _artefact_scored(ctx: JobContext, model_m: Any, ds: Any, data: Any) -> Any | None:
    """With ``training.fit_on_all_data: false`` the committed artefact *is* the fit on this split's training
    part: it is scored as committed (what is evaluated is what would be published), not fit a second time.
    None when it is not that fit (fit on all data, another dataset, rows or items not the dataset's)."""
    import numpy as np

    from skyrec.evaluation.offline import Scored
    from skyrec.models import representations as reps
    from skyrec.models.artefact import load_artefact

    if model_m.meta.get("fit_on") != "train_split" or model_m.meta.get("dataset") != ds.path:
        return None
    art = load_artefact(ctx.lake, model_m)
    if len(art.user_ids) != len(data.user_ids) or not np.array_equal(np.asarray(art.user_ids, dtype=str),
                                                                      np.asarray(data.user_ids, dtype=str)):
        return None
    column = {item: k for k, item in enumerate(np.asarray(data.item_ids, dtype=str).tolist())}
    found = [column.get(item) for item in np.asarray(art.item_ids, dtype=str).tolist()]
    if any(c is None for c in found):
        return None
    cols = np.asarray(found, dtype=np.int64)
    n_items = len(data.item_ids)
    full = reps.expand_rows(art.item_factors, cols, n_items)
    mask = np.zeros(n_items, bool)
    mask[cols] = True
    return Scored(art.user_factors, full, None if mask.all() else mask)


def _fit_scored(instance: Any, data: Any) -> tuple[Any, float]:
    """``instance`` fit on the split's training part as the train job fits it, scored over every dataset
    item (items it was not fit on unscorable): ``(Scored, fit seconds)``."""
    from skyrec.evaluation.offline import Scored
    from skyrec.models.series import item_context
    from skyrec.models.training import fit_on

    fitted = fit_on(instance, data.train, data.item_features if instance.uses_item_features else None,
                    item_context(data, "train"))
    full, mask = fitted.full_item_factors(data.train.shape[1])
    return Scored(fitted.user_factors, full, None if mask.all() else mask), fitted.seconds


def _refit_published(ctx: JobContext, model: str, data: Any, new: Any, rescored: dict[str, Any]) -> dict[str, Any]:
    """When too few users can be compared with the published artefact (it has seen their test plays): its
    parameters refit on this split's training part, both models scored on every evaluated user, paired.
    ``rescored`` (the artefact's comparison) is kept under ``artefact``; it is returned unchanged when the
    artefact records no parameters or they do not fit the configured model class."""
    import time

    from skyrec.evaluation.offline import evaluate
    from skyrec.evaluation.stats import paired_comparison
    from skyrec.models import model_class

    cfg = ctx.config.training
    params = rescored.get("params")
    if not isinstance(params, dict):
        return {**rescored, "refit_skipped": "the published artefact records no parameters"}
    t0 = time.perf_counter()
    try:  # ValueError: a ConfigError too (a model no longer configured, parameters its rules now refuse)
        published, _ = _fit_scored(model_class(ctx.config, model)(**params), data)
    except (TypeError, ValueError) as exc:
        return {**rescored, "refit_skipped": f"its parameters {params} cannot be refit: {exc}"}
    per_user: dict[str, Any] = {}
    # the same users as the run's evaluation (same sample size and seed); only the per-user values are used
    evaluate({"new": new, "published": published}, data.train, data.test, k=cfg.k, max_users=cfg.eval_max_users,
             seed=0, resamples=1, confidence=cfg.confidence, bootstrap_seed=cfg.bootstrap_seed, per_user_out=per_user)
    a, b = per_user["values"]["new"]["overall"], per_user["values"]["published"]["overall"]
    artefact_users = (rescored.get(cfg.quality_gate.metric) or {}).get("users")
    out: dict[str, Any] = {
        "comparable": True, "refit": True, "model_version": rescored.get("model_version"),
        "path": rescored.get("path"), "params": params, "factor": rescored["factor"],
        "method": f"the published model's parameters refit on this split's training part (only "
                  f"{artefact_users} users could be compared with its artefact, which had seen the others' "
                  f"test plays)",
        "refit_seconds": round(time.perf_counter() - t0, 3), "recorded_protocol": rescored.get("recorded_protocol"),
        "artefact": {k: v for k, v in rescored.items() if k != "params"}}
    for metric in a:
        out[metric] = paired_comparison(a[metric], b[metric], resamples=cfg.bootstrap_resamples,
                                        seed=cfg.bootstrap_seed, confidence=cfg.confidence, factor=rescored["factor"])
    return out


def _rules(ctx: JobContext, variants: list[str], data: Any, ds: Any, per_user: dict[str, Any], new: Any,
           relevant: Any) -> dict[str, Any]:
    """Per variant: the figures after each business rule (``skyrec.evaluation.rules``), with intervals."""
    from skyrec.evaluation.rules import rules_figures
    from skyrec.evaluation.stats import confidence_intervals
    from skyrec.scoring.engine import read_catalogue, read_table

    cfg, rules = ctx.config.training, ctx.config.precompute.rules
    if not variants or not ds.meta.get("catalogue"):
        return {}
    catalogue = read_catalogue(ctx.lake, ds.meta["catalogue"])
    availability_m = ctx.as_of("availability")
    availability = read_table(ctx.lake, availability_m.path) if availability_m else None
    at = dt.datetime.fromisoformat(ds.meta["end"])
    out: dict[str, Any] = {}
    for v in variants:
        vc = ctx.config.variants[v]
        got = rules_figures(item_ids=data.item_ids, user_factors=new.user_factors, item_factors=new.item_factors,
                            scorable=new.scorable, users=per_user["users"], train=data.train, relevant=relevant,
                            catalogue=catalogue, availability=availability, at=at, candidate_filter=vc.candidates,
                            max_age_days=dict(rules.max_age_days), max_per_brand=rules.max_per_brand, k=cfg.k)
        series = {f"{stage}|{m}": arr for stage, ms in got["values"].items() for m, arr in ms.items()}
        ci = confidence_intervals(series, resamples=cfg.bootstrap_resamples, seed=cfg.bootstrap_seed,
                                  confidence=cfg.confidence)
        stages = {}
        for stage, ms in got["values"].items():
            stages[stage] = {m: ci[f"{stage}|{m}"]["mean"] for m in ms}
            stages[stage]["ci"] = {m: ci[f"{stage}|{m}"]["ci"] for m in ms}
            stages[stage]["users"] = ci[f"{stage}|{next(iter(ms))}"]["users"]
        out[v] = {"stages": stages, "candidates": got["candidates"], "at": at.isoformat(),
                  "availability": availability_m.path if availability_m else None}
        empty = [stage for stage, counts in got["candidates"].items() if not counts.get("candidates")]
        if empty:  # its figures are zeros with a [0, 0] interval: say why, rather than let them pass for a score
            out[v]["note"] = (f"no candidates after the {empty[0]} stage: the rail's candidate filter and rules "
                              f"leave no item of the model at {at.isoformat()} ({got['candidates'][empty[0]]}); "
                              "it would publish only its fallback list")
    return out


def _evaluate(ctx: JobContext, model: str, version: str, model_m: Any, ds: Any) -> dict[str, Any]:
    from skyrec.evaluation.offline import Scored, candidate_mask, evaluate
    from skyrec.evaluation.stats import paired_comparison
    from skyrec.models import build_model, model_class, variants_of
    from skyrec.models.dataset import load_training_data

    cfg = ctx.config.training
    if cfg.baseline not in ctx.config.models:
        raise BadInput(f"training.baseline: {cfg.baseline!r} is not a configured model")
    data = load_training_data(ctx.lake, ds, only=("train", "train_first_play", "test", "item_features"))
    params = dict(model_m.meta.get("params", ctx.config.models[model].params))
    scored: dict[str, Scored] = {}
    fit_seconds: dict[str, float] = {}
    committed = _artefact_scored(ctx, model_m, ds, data)
    if committed is not None:  # the artefact is this split's fit: scored as committed, not fit again
        scored[model] = committed
        fit_seconds[model] = float(model_m.meta.get("fit_seconds") or 0.0)
    for name, instance in ((model, model_class(ctx.config, model)(**params)),
                           (cfg.baseline, build_model(ctx.config, cfg.baseline))):
        if name in scored:
            continue
        try:
            scored[name], seconds = _fit_scored(instance, data)
        except ValueError as exc:
            raise BadInput(f"{ds.path}: {name}: {exc}") from None
        fit_seconds[name] = round(seconds, 3)

    variants = variants_of(ctx.config, model, version)
    candidate_sets = {}
    for v in variants:
        c = ctx.config.variants[v].candidates
        if c.genres or c.formats or c.masterbrands:
            candidate_sets[v] = candidate_mask(data.feature_names, data.item_features, genres=c.genres,
                                               formats=c.formats, masterbrands=c.masterbrands)
    cold = (data.train_item_plays == 0) & data.in_catalogue
    per_user: dict[str, Any] = {}
    results = evaluate(scored, data.train, data.test, k=cfg.k, candidate_sets=candidate_sets,
                       cold_items=cold if cold.any() else None, max_users=cfg.eval_max_users,
                       seed=0, resamples=cfg.bootstrap_resamples, confidence=cfg.confidence,
                       bootstrap_seed=cfg.bootstrap_seed, per_user_out=per_user)
    this_protocol = protocol(cfg, _split_of(ds))
    comparisons: dict[str, Any] = {}
    if cfg.baseline != model:
        new_v, base_v = per_user["values"][model]["overall"], per_user["values"][cfg.baseline]["overall"]
        comparisons["baseline"] = {m: paired_comparison(new_v[m], base_v[m], resamples=cfg.bootstrap_resamples,
                                                        seed=cfg.bootstrap_seed, confidence=cfg.confidence)
                                   for m in new_v}
    comparisons["published"] = _published_comparison(ctx, model, version, model_m.meta.get("model_version"), data,
                                                      per_user, scored[model], this_protocol)
    pub, qg = comparisons["published"], cfg.quality_gate
    evaluable = int(results["models"][model]["overall"].get("users") or 0)
    if _needs_refit(qg, pub, evaluable):
        comparisons["published"] = _refit_published(ctx, model, data, scored[model], pub)
    served = _served_comparisons(ctx, model, version, variants, data, per_user, scored[model], evaluable)
    if served:
        comparisons["served"] = served
    train_seen = data.train.copy()
    train_seen.data[:] = 1.0
    relevant = (data.test - data.test.multiply(train_seen)).tocsr()
    relevant.eliminate_zeros()
    rules = _rules(ctx, variants, data, ds, per_user, scored[model], relevant)
    truth = _truth_figures(ctx, model_m, cfg.baseline, cfg.k)
    return {
        "truth": truth,
        "model": model, "version": version, "model_version": model_m.meta.get("model_version"),
        "model_output": model_m.path, "model_commit": model_m.commit_id, "model_revision": model_m.revision,
        "dataset": ds.path, "baseline": cfg.baseline, "metric": cfg.quality_gate.metric, "k": cfg.k, "cutoff": ds.meta.get("cutoff"), "end": ds.meta.get("end"),
        "holdout_days": cfg.holdout_days, "split": ds.meta.get("split"), "protocol": this_protocol,
        "search": model_m.meta.get("search"),  # the train job's hyper-parameter search, when it ran
        "variants": variants, "fit_seconds": fit_seconds,
        "scored": "committed artefact" if committed is not None else "refit on the split's training part",
        "overall": results["models"][model]["overall"],
        "cold_start": results["models"][model]["cold_start"],
        "baseline_overall": results["models"][cfg.baseline]["overall"],
        "comparisons": comparisons, "rules": rules,
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

    from skyrec.models import representations as reps

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
            scores = reps.scores(U[b], V)
            ex = art.seen[b]
            scores[np.repeat(np.arange(len(b)), np.diff(ex.indptr)), ex.indices] = -np.inf
            rec, _ = top_k(scores, k)
            m = per_user(hits(rec, rel[start:start + 2048]), n_truth[start:start + 2048], k)
            total += float(m["recall_at_k"].sum())
        out[f"{name}_truth_recall_at_k"] = total / len(rows)
    return out
