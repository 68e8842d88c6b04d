"""``skyrec status``: the last committed output of every dataset and its age, each served model's latest
evaluation figures (with intervals and the users behind them), and what is published."""

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
    models = model_evaluations(config, lake)
    try:
        import redis

        from skyrec.publish.keys import Keys

        client = redis.Redis.from_url(config.publish.redis_url, socket_timeout=1, socket_connect_timeout=1)
        keys = Keys(config.publish.key_prefix)
        for variant in config.variants:
            raw = client.get(keys.current(variant))
            ptr = json.loads(raw) if raw else {}
            published.append({"variant": variant, "publication": ptr.get("publication"),
                              "model_version": ptr.get("model_version"), "published_at": ptr.get("published_at"),
                              "age": _age(ptr.get("published_at")), "users": ptr.get("users")})
    except Exception as exc:  # noqa: BLE001 - status must report, not crash, when Redis is down
        published.append({"error": f"serving Redis {config.publish.redis_url} unreachable: {exc}"})
    return {"lake": config.lake_url, "datasets": datasets, "models": models, "published": published}


def _figure(evaluation: dict[str, Any], metric: str) -> str:
    value = evaluation.get(metric)
    if value is None:
        return "-"
    lo, hi = ((evaluation.get("ci") or {}).get(metric) or [None, None])[:2]
    return f"{value:.4f} [{lo:.4f}, {hi:.4f}]" if lo is not None and hi is not None else f"{value:.4f}"


def model_evaluations(config: Config, lake: Lake) -> list[dict[str, Any]]:
    """Per (model, version) that a variant serves: the published model and its latest evaluation figures
    (from the model pointer, as the publication carries them), with intervals, users and protocol."""
    from skyrec.models.artefact import published_model_pointer

    out = []
    for model, version in sorted({(v.model, v.version) for v in config.variants.values()}):
        ptr = lake.read_pointer(published_model_pointer(model, version)) or {}
        ev = ptr.get("evaluation") or {}
        split = ((ev.get("protocol") or {}).get("split") or {})
        gate = ev.get("gate") or {}
        out.append({
            "model": model, "version": version, "model_version": ptr.get("model_version"),
            "published_at": ptr.get("published_at"), "age": _age(ptr.get("published_at")),
            "users": ev.get("users"), "ndcg_at_k": _figure(ev, "ndcg_at_k"), "recall_at_k": _figure(ev, "recall_at_k"),
            "baseline": ev.get("baseline"), "split": split.get("kind"),
            "insufficient_evidence": gate.get("insufficient_evidence"), "gate": gate.get("message"),
            "evaluation": ev.get("evaluation_path"),
        })
    return out


def train_run_lines(config: Config, run_key: str) -> list[str]:
    """What a person reads after a ``train_model`` run (``skyrec run``, ``make demo``): per trained model, this
    run's evaluation (figure with its interval, the users behind it, the split, the baseline), the gate's
    verdict, the search when one ran, and whether the model is now the published one."""
    from skyrec.models.artefact import published_model_pointer

    lake = Lake.from_config(config)
    lines = []
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
            lines.append(line)
            gate = meta.get("gate") or {}
            message = gate.get("message", "-")
            verdict = "passed" if gate.get("passed") else "failed"
            # an insufficient-evidence verdict names itself ("insufficient evidence: only 36 evaluable users ...")
            lines.append(f"  gate: {message}" if gate.get("insufficient_evidence") else f"  gate {verdict}: {message}")
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
            ptr = lake.read_pointer(published_model_pointer(model, ver)) or {}
            mine = model_m is not None and ptr.get("model_version") == model_m.meta.get("model_version")
            lines.append(f"  published: {ptr.get('model_version')}" if mine else
                         f"  not published by this run (serving {ptr.get('model_version') or 'nothing'})")
    return lines
