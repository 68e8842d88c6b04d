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
