"""``skyrec status``: the last committed output of every dataset and its age, each served model's figures
from the evaluation it was published on (with intervals, their confidence level and the users behind them),
a newer evaluation the gate held, and what is published."""

from __future__ import annotations

import datetime as dt
import json
import re
from typing import Any

from skyrec.config import Config
from skyrec.storage import Lake


def _age(iso: str | None) -> str:
    if not iso:
        return "-"
    then = dt.datetime.fromisoformat(iso)
    secs = (dt.datetime.now(dt.UTC) - then).total_seconds()
    for unit, size in (("d", 86400), ("h", 3600), ("m", 60)):
        if secs >= size:
            return f"{secs / size:.1f}{unit}"
    return f"{secs:.0f}s"


def _field_combos(config: Config, template: str) -> list[dict[str, str]]:
    fields = set(re.findall(r"{(\w+)}", template)) - {"run_key", "interval_key"}
    if not fields:
        return [{}]
    combos: list[dict[str, str]] = []
    if "dataset_id" in fields:  # one training dataset per definition, shared by the models that read it
        return [{"dataset_id": ds, "models": ",".join(models)} for ds, models in config.training_datasets().items()]
    if "experiment" in fields:  # one readout per configured experiment; none configured, none listed
        return [{"experiment": name} for name in sorted(config.experiments)]
    if "variant" in fields:
        combos = [{"variant": n, "model": v.model, "version": v.version} for n, v in config.variants.items()]
    else:
        seen = sorted({(v.model, v.version) for v in config.variants.values()})
        combos = [{"model": m, "version": ver} for m, ver in seen]
    return [{k: c[k] for k in fields if k in c} for c in combos]


def collect(config: Config) -> dict[str, Any]:
    lake = Lake.from_config(config)
    datasets = []
    for name, template in config.datasets.items():
        for scope in _field_combos(config, template):
            fields = {k: v for k, v in scope.items() if k != "models"}
            m = lake.latest(config, name, **fields)
            datasets.append({
                "dataset": name, **scope,
                "latest": m.path if m else None,
                "committed_at": m.committed_at if m else None,
                "age": _age(m.committed_at if m else None),
                # a catalogue's manifest also lists its brand/series/episode tables: count the items
                "rows": (m.meta.get("items", m.rows) if name == "catalogue" else m.rows) if m else None,
                "quarantined": sum(m.quarantine.values()) if m else None,
                # history left out of a rolling window is counted, never dropped silently
                **({"older_than_window": m.meta["older_than_window"]}
                   if m is not None and isinstance(m.meta.get("older_than_window"), dict) else {}),
            })
    published: list[dict[str, Any]] = []
    leftovers: dict[str, Any] = {}
    memory: dict[str, Any] = {}
    serving: dict[str, dict[str, Any]] | None = {}
    try:
        import redis

        from skyrec.publish.keys import Keys
        from skyrec.publish.publisher import memory_facts

        client = redis.Redis.from_url(config.publish.redis_url, socket_timeout=1, socket_connect_timeout=1)
        keys = Keys(config.publish.key_prefix)
        for variant in config.variants:
            raw = client.get(keys.current(variant))
            ptr = json.loads(raw) if raw else {}
            serving[variant] = ptr  # type: ignore[index]
            published.append({"variant": variant, "publication": ptr.get("publication"),
                              "model_version": ptr.get("model_version"), "published_at": ptr.get("published_at"),
                              "age": _age(ptr.get("published_at")), "users": ptr.get("users")})
        leftovers = redis_leftovers(config, client, keys)
        memory = memory_facts(client)
    except Exception as exc:  # noqa: BLE001 - status must report, not crash, when Redis is down
        published.append({"error": f"serving Redis {config.publish.redis_url} unreachable: {exc}"})
        serving = None
    models = model_evaluations(config, lake, serving)
    return {"lake": config.lake_url, "datasets": datasets, "models": models, "published": published,
            "redis_leftovers": leftovers, "redis_memory": memory}


def redis_leftovers(config: Config, client: Any, keys: Any) -> dict[str, Any]:
    """What the serving Redis holds that no configured rail serves: rails taken out of the configuration
    (``skyrec retire`` removes them) and loads nobody finished (``skyrec gc`` removes them after the grace)."""
    from skyrec.publish import removal

    grace = config.storage.gc_grace_hours * 3600.0
    rails = removal.variants(client, keys)
    return {"unconfigured_rails": [v for v in rails if v not in config.variants],
            "abandoned": {v: found for v in rails if (found := removal.abandoned(client, keys, v, grace))}}


def _figure(evaluation: dict[str, Any], metric: str) -> str:
    value = evaluation.get(metric)
    if value is None:
        return "-"
    lo, hi = ((evaluation.get("ci") or {}).get(metric) or [None, None])[:2]
    return f"{value:.4f} [{lo:.4f}, {hi:.4f}]" if lo is not None and hi is not None else f"{value:.4f}"


def model_evaluations(config: Config, lake: Lake,
                      serving: dict[str, dict[str, Any]] | None = None) -> list[dict[str, Any]]:
    """Per (model, version) that a rail uses, and per model version its rails serve (``serving``: each rail's
    pointer in the serving Redis; None when Redis could not be read, then the model published in the lake
    stands in, said so): the evaluation it was published on, as the publication carries it, with intervals,
    their confidence level, users and protocol. ``published``: the model version the lake's pointer names,
    which rails serving another one have not published yet (their precompute is to come or failed, or they
    were rolled back). ``held``: the newest evaluation, when its gate held it (failed, not overridden)."""
    from skyrec.models.artefact import published_model_pointer
    from skyrec.storage import CorruptPointer

    out = []
    for model, version in sorted({(v.model, v.version) for v in config.variants.values()}):
        rails = sorted(n for n, v in config.variants.items() if v.model == model and v.version == version)
        corrupt = None
        try:
            ptr = lake.read_pointer(published_model_pointer(model, version)) or {}
        except CorruptPointer as exc:
            ptr, corrupt = {}, str(exc)
        groups: dict[str | None, list[str]] = {}
        for rail in rails:
            served = ptr if serving is None else (serving.get(rail) or {})
            groups.setdefault(served.get("model_version"), []).append(rail)
        held = _held(config, lake, model, version, (ptr.get("evaluation") or {}).get("evaluation_path"))
        for model_version, on in groups.items():
            source = ptr if serving is None else (serving.get(on[0]) or {})
            row = _evaluation_row(lake, model, version, model_version, source, ptr)
            out.append({**row, "held": held, "rails": on, "serving_known": serving is not None,
                        "published": ptr.get("model_version"), "corrupt_pointer": corrupt,
                        "report_urls": [f"/v1/variants/{r}/report" for r in on] if row["report"] else []})
    return out


def _evaluation_row(lake: Lake, model: str, version: str, model_version: str | None, source: dict[str, Any],
                    ptr: dict[str, Any]) -> dict[str, Any]:
    """One row of ``model_evaluations``: the figures ``source`` (a rail's pointer, or the model's) carries."""
    from skyrec.jobs.publish_model import evaluation_confidence, gate_shown

    ev = source.get("evaluation") or {}
    if model_version is not None and not ev and ptr.get("model_version") == model_version:
        ev = ptr.get("evaluation") or {}  # a publication from before pointers carried the evaluation
    split = ((ev.get("protocol") or {}).get("split") or {})
    gate = gate_shown(ev.get("gate") or {})  # pointers published before it showed overrides as such
    confidence = ev.get("confidence")
    published_m = lake.manifest(ev["evaluation_path"]) if ev.get("evaluation_path") else None
    if confidence is None and published_m is not None:
        confidence = evaluation_confidence(lake, published_m)
    report = None  # the report's file, found through the evaluation's manifest (it lies in its attempt)
    if published_m is not None:
        try:
            report = lake.file_url(published_m, "report.html")
        except KeyError:
            report = None
    return {
        "model": model, "version": version, "model_version": model_version,
        "published_at": source.get("published_at"), "age": _age(source.get("published_at")),
        "users": ev.get("users"), "ndcg_at_k": _figure(ev, "ndcg_at_k"), "recall_at_k": _figure(ev, "recall_at_k"),
        "confidence": confidence, "baseline": ev.get("baseline"), "split": split.get("kind"),
        "insufficient_evidence": gate.get("insufficient_evidence"), "overridden": bool(gate.get("overridden")),
        "gate": gate.get("message"), "evaluation": ev.get("evaluation_path"), "report": report,
    }


def _held(config: Config, lake: Lake, model: str, version: str, published: str | None) -> dict[str, Any] | None:
    """The newest evaluation of (model, version) when it is not the published model's and its gate held it
    (failed, not overridden): its model version, figure and verdict. None otherwise."""
    newest = lake.latest(config, "evaluation", model=model, version=version)
    if newest is None or newest.path == published:
        return None
    gate = newest.meta.get("gate") or {}
    if gate.get("passed") or gate.get("overridden"):
        return None
    metric = newest.meta.get("metric") or "ndcg_at_k"
    overall = newest.meta.get("overall") or {}
    return {"evaluation": newest.path, "model_version": newest.meta.get("model_version"),
            "committed_at": newest.committed_at, "metric": metric, "figure": _figure(overall, metric),
            "users": overall.get("users"), "verdict": "held", "gate": gate.get("message")}


def train_run_lines(config: Config, run_key: str, since: dt.datetime | None = None) -> list[str]:
    """What a person reads after a ``train_model`` run (``skyrec run``, ``make demo``): per trained model, this
    run's evaluation (figure with its interval, the users behind it, the split, the baseline), the gate's
    verdict, the search when one ran, and whether the model is now the published one. ``since``: when the run
    started; an evaluation committed before it (by an earlier run of the same logical date, which this one
    found committed or refused to replace) is said to be so, not passed off as this run's."""
    from skyrec.models.artefact import published_model_pointer
    from skyrec.storage import CorruptPointer

    lake = Lake.from_config(config)
    lines = []
    asked = config.training.search
    idle = sorted(set(asked.models or []) - set(config.trained_models())) if asked.enabled else []
    if idle:  # a search asked for a model this DAG does not train would otherwise pass unseen
        lines.append(f"search: training.search.models names {', '.join(idle)}, which train_model does not train "
                     f"(it trains {', '.join(config.trained_models())}: training.models, else the rails' models)")
    for model in config.trained_models():
        # every version the rails name (a rollout trains each with its own run), v1 for a model on no rail
        for ver in sorted({v.version for v in config.variants.values() if v.model == model}) or ["v1"]:
            ev_m = lake.manifest(config.dataset_path("evaluation", model=model, version=ver, run_key=run_key))
            if ev_m is None:
                lines.append(f"{model} {ver}: no evaluation committed by this run")
                continue
            meta = ev_m.meta
            metric = meta.get("metric") or "ndcg_at_k"
            overall, base = meta.get("overall") or {}, meta.get("baseline_overall") or {}
            split = ((meta.get("protocol") or {}).get("split") or {}).get("kind", "?")
            figure = _figure(overall, metric)
            line = f"{model} {ver}: {metric} {figure} on {overall.get('users', '?')} users ({split} split)"
            if base.get(metric) is not None:
                line += f"; {meta.get('baseline') or 'baseline'} {base[metric]:.4f}"
            if since is not None and dt.datetime.fromisoformat(ev_m.committed_at) < since:
                line += f" [committed by an earlier run of this date, {ev_m.committed_at[:19]}Z: not by this run]"
            lines.append(line)
            gate = meta.get("gate") or {}
            message = gate.get("message", "-")
            verdict = "passed" if gate.get("passed") else "failed, overridden" if gate.get("overridden") else "failed"
            # an insufficient-evidence verdict names itself ("insufficient evidence: only 36 evaluable users ...")
            lines.append(f"  gate: {message}" if gate.get("insufficient_evidence") and verdict != "failed, overridden"
                         else f"  gate {verdict}: {message}")
            model_m = lake.manifest(config.dataset_path("model", model=model, version=ver, run_key=run_key))
            search = (model_m.meta.get("search") if model_m is not None else None) or {}
            if search.get("trials"):
                best, configured = search.get("best") or {}, search.get("configured_value")
                which = ("the configured parameters" if best.get("number") == 0 and configured is not None
                         else ", ".join(f"{k}={v:.4g}" if isinstance(v, float) else f"{k}={v}"
                                        for k, v in (best.get("params") or {}).items()))
                gain = (f", {best['value'] / configured - 1:+.1%} over the configured"
                        if configured and best.get("value") is not None and best.get("number") != 0 else "")
                lines.append(f"  search: {search.get('n_complete', len(search['trials']))} trials in "
                             f"{search.get('seconds', 0):.1f} s, best {search.get('metric', metric)} "
                             f"{best.get('value', float('nan')):.4f} on validation: {which}{gain}")
            if search.get("note"):  # no search ran (too little data), or the configured point won from outside
                lines.append(f"  search note: {search['note']}")
            try:
                ptr = lake.read_pointer(published_model_pointer(model, ver)) or {}
            except CorruptPointer as exc:
                lines.append(f"  {exc}")
                continue
            mine = model_m is not None and ptr.get("model_version") == model_m.meta.get("model_version")
            lines.append(f"  published: {ptr.get('model_version')}" if mine else
                         f"  not published by this run (serving {ptr.get('model_version') or 'nothing'})")
    return lines
