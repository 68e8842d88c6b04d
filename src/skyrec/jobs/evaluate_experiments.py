"""Job ``evaluate_experiments``: the daily readout of every configured experiment -> ``experiment_readout``.

Per experiment that has started by the run's end (``--param experiment=NAME``: that one only):

1. the committed ``feedback`` outputs of its intervals (experiment start .. min(end, run end)), the events of
   that experiment only (pushed down into the Parquet read);
2. the catalogue snapshot (item durations for play-through, the item count for coverage) and the activity
   snapshot (users per item: the popularity novelty is measured against), each when committed;
3. the statistics of :mod:`skyrec.experiments.readout` -- metrics with intervals, the SRM check, the
   always-valid sequential test carried on from the experiment's previous readout, guardrails;
4. each arm's offline evaluation: the evaluation figures its variant's publication carries (the pointer in
   the serving Redis, as ``GET /v1/variants`` shows them); "unavailable" when Redis cannot be read;
5. commit ``readout.json`` + ``report.html`` (:mod:`skyrec.experiments.report`) through the commit protocol.

A sample-ratio mismatch or a breached guardrail is an alert (the summary's ``alerts``: the operator sends them
through the notifier); the run itself succeeds -- the readout is what tells people. A committed readout of
this run is reused unless forced. Parameters: ``experiment``, ``bootstrap`` (replicates for coverage, 200).
The SRM threshold is the experiment's ``srm_alpha`` in the config (default 0.001).
"""

from __future__ import annotations

import datetime as dt
import json
import time
import zlib
from typing import Any

DATASET = "experiment_readout"
FEEDBACK = "feedback"
COLUMNS = ["event_id", "type", "user_id", "experiment", "arm", "item_ids", "duration_seconds"]
READOUT_FILE = "readout.json"
REPORT_FILE = "report.html"


def feedback_outputs(ctx: Any, start: dt.datetime, end: dt.datetime) -> list[str]:
    """Committed feedback outputs whose interval lies in [start, end), by interval key."""
    cfg = ctx.config
    template = cfg.datasets[FEEDBACK]
    prefix, _, tail = template.rpartition("/")
    token = tail.split("{", 1)[0]
    lo, hi = start.astimezone(dt.UTC).strftime("%Y%m%dT%H"), end.astimezone(dt.UTC).strftime("%Y%m%dT%H")
    out = []
    for rel in ctx.lake.versions(prefix + "/"):
        key = rel.rsplit("/", 1)[-1][len(token):]
        if lo <= key < hi or (lo == hi and key == lo):
            out.append(rel)
    return out


def read_events(ctx: Any, rels: list[str], experiment: str) -> Any:
    import pyarrow as pa
    import pyarrow.parquet as pq

    from skyrec.jobs.ingest_feedback import schema

    tables = []
    for rel in rels:
        m = ctx.lake.require(rel)
        with ctx.lake.open(m, "part-00000.parquet") as fh:
            tables.append(pq.read_table(fh, columns=COLUMNS, filters=[("experiment", "=", experiment)]))
    if not tables:
        return schema().empty_table().select(COLUMNS)
    return pa.concat_tables(tables)


def catalogue_facts(ctx: Any) -> tuple[dict[str, float], int | None, str | None]:
    """(item -> duration seconds, catalogue items, catalogue path) from the newest catalogue, if any."""
    import pyarrow.parquet as pq

    m = ctx.as_of("catalogue", or_newest=True)
    if m is None:
        return {}, None, None
    with ctx.lake.open(m, "catalogue.parquet") as fh:
        t = pq.read_table(fh, columns=["item_id", "duration_seconds"])
    ids, secs = t["item_id"].to_pylist(), t["duration_seconds"].to_pylist()
    return {i: float(s) for i, s in zip(ids, secs, strict=True) if s}, t.num_rows, m.path


def popularity(ctx: Any) -> tuple[dict[str, int], int, str | None]:
    """(item -> distinct users who played it, users) in the newest activity snapshot, if any."""
    import pyarrow as pa
    import pyarrow.compute as pc
    import pyarrow.parquet as pq

    from skyrec.data.lakeio import parquet_files

    m = ctx.as_of("activity_snapshot", or_newest=True)
    if m is None:
        return {}, 0, None
    parts = []
    for f in parquet_files(m):
        with ctx.lake.fs.open(ctx.lake.abspath(f"{m.path}/{f}"), "rb") as fh:
            parts.append(pq.read_table(fh, columns=["user_id", "item_id"]))
    if not parts:
        return {}, 0, m.path
    t = pa.concat_tables(parts)
    pairs = t.group_by(["item_id", "user_id"], use_threads=False).aggregate([])
    counts = pairs.group_by("item_id", use_threads=False).aggregate([("user_id", "count")])
    users = len(pc.unique(t["user_id"]))
    return dict(zip(counts["item_id"].to_pylist(), counts["user_id_count"].to_pylist(), strict=True)), users, m.path


def offline_evaluation(config: Any, variants: dict[str, str]) -> dict[str, Any]:
    """arm -> the publication and evaluation figures of its variant (from the serving pointers)."""
    import redis

    from skyrec.publish.keys import Keys

    keys = Keys(config.publish.key_prefix)
    out: dict[str, Any] = {}
    try:
        r = redis.Redis.from_url(config.serve.redis_url, socket_timeout=5, socket_connect_timeout=5)
        raw = r.mget([keys.current(v) for v in variants.values()])
    except redis.RedisError as exc:
        return {arm: {"variant": v, "available": False, "note": f"serving Redis unreadable: {type(exc).__name__}"}
                for arm, v in variants.items()}
    for (arm, variant), value in zip(variants.items(), raw, strict=True):
        pointer = json.loads(value) if value else None
        if not isinstance(pointer, dict):
            out[arm] = {"variant": variant, "available": False, "note": "not published"}
            continue
        ev = pointer.get("evaluation")
        out[arm] = {"variant": variant, "available": isinstance(ev, dict), "publication": pointer.get("publication"),
                    "model": pointer.get("model"), "model_version": pointer.get("model_version"),
                    "evaluation": ev if isinstance(ev, dict) else None}
    return out


def previous_readouts(ctx: Any, name: str, rel: str) -> list[dict[str, Any]]:
    """The experiment's earlier readouts (oldest first): the trajectory and the sequential state."""
    out = []
    for m in ctx.lake.history(ctx.config, DATASET, before=rel, experiment=name):
        out.append({"run": m.key, "sequential": m.meta.get("sequential"), "looks": m.meta.get("looks"),
                    "decision": m.meta.get("decision")})
    return out


def evaluate_one(ctx: Any, name: str, exp: Any, *, facts: dict[str, Any]) -> dict[str, Any]:
    from skyrec.experiments import readout, report

    rel = ctx.path(DATASET, experiment=name)
    existing = ctx.committed(DATASET, experiment=name)
    if existing is not None:
        return {"experiment": name, "output": rel, "reused": True, "decision": existing.meta.get("decision"),
                "alerts": []}
    started = time.time()
    end = min(exp.end, ctx.run.end)
    rels = feedback_outputs(ctx, exp.start, end)
    events = read_events(ctx, rels, name)
    arms = list(exp.arms)
    agg = readout.aggregate(events, experiment=name, arms=arms, item_duration=facts["durations"],
                            item_users=facts["item_users"], popularity_users=facts["popularity_users"],
                            catalogue_items=facts["catalogue_items"])
    history = previous_readouts(ctx, name, rel)
    last = history[-1]["sequential"] if history else None
    srm_alpha = float(exp.srm_alpha)  # experiments.<name>.srm_alpha (default 0.001)
    seed = zlib.crc32(f"{name}\x00{ctx.run.run_key}".encode())
    result = readout.analyse(agg, shares={a: s.share for a, s in exp.arms.items()}, default_arm=exp.default_arm,
                             primary_metric=exp.primary_metric, guardrails=exp.guardrails, alpha=exp.alpha,
                             srm_alpha=srm_alpha, previous=last, bootstrap=int(ctx.param("bootstrap", "200")),
                             seed=seed)
    result.update(
        experiment=name, run=ctx.run.run_key, window={"start": exp.start.isoformat(), "end": end.isoformat()},
        rail=exp.rail, arms_config={a: {"variant": s.variant, "share": s.share} for a, s in exp.arms.items()},
        feedback_outputs=len(rels), offline=offline_evaluation(ctx.config, {a: s.variant for a, s in exp.arms.items()}),
        references={"catalogue": facts["catalogue"], "popularity": facts["popularity"]},
        seconds=round(time.time() - started, 3))
    trajectory = [{"run": h["run"], **(h.get("looks") or {})} for h in history]
    trajectory.append({"run": ctx.run.run_key, **looks_of(result)})
    result["trajectory"] = trajectory
    alerts = [{**a, "summary": f"experiment {name}: {a['summary']}", "details": {"experiment": name,
                                                                                 **a.get("details", {})}}
              for a in result.pop("alerts")]
    result["alerts"] = [a["summary"] for a in alerts]
    html = report.render(result)
    with ctx.stage(DATASET, rel) as stage:
        with stage.open(READOUT_FILE) as fh:
            fh.write(json.dumps(result, indent=1, sort_keys=True, default=_json).encode())
        with stage.open(REPORT_FILE) as fh:
            fh.write(html.encode())
        stage.commit({"experiment": name, "decision": result["decision"], "srm": result["srm"],
                      "sequential": result["sequential"], "looks": looks_of(result),
                      "events_used": agg.events_used, "feedback_outputs": len(rels),
                      "users": {a: agg.arms[a].users for a in arms}})
    return {"experiment": name, "output": rel, "reused": False, "decision": result["decision"],
            "users": {a: agg.arms[a].users for a in arms}, "events_used": agg.events_used,
            "seconds": result["seconds"], "alerts": alerts}


def looks_of(result: dict[str, Any]) -> dict[str, Any]:
    """What one look adds to the trajectory plot: per treatment arm the always-valid p and the difference."""
    out = {}
    for arm, comp in result["comparisons"].items():
        t = comp["sequential_test"]
        out[arm] = {"p_value": t.get("p_value"), "difference": t.get("difference"), "interval": t.get("interval")}
    return out


def _json(v: Any) -> Any:
    if hasattr(v, "item"):
        return v.item()
    if isinstance(v, dt.datetime):
        return v.isoformat()
    return str(v)


def run(ctx: Any) -> dict[str, Any]:
    from skyrec.jobs.base import BadInput

    experiments = dict(getattr(ctx.config, "experiments", None) or {})
    only = ctx.params.get("experiment")
    if only is not None:
        if only not in experiments:
            raise BadInput(f"experiment {only!r} is not configured (known: {sorted(experiments)})")
        experiments = {only: experiments[only]}
    for needed in (FEEDBACK, DATASET):
        if experiments and needed not in ctx.config.datasets:
            raise BadInput(f"datasets.{needed}: not declared in config")
    started = [(n, e) for n, e in sorted(experiments.items()) if e.start < ctx.run.end]
    if not started:
        return {"outputs": [], "note": "no experiment has started yet" if experiments else "no experiments configured"}
    durations, n_items, cat_path = catalogue_facts(ctx)
    item_users, pop_users, pop_path = popularity(ctx)
    facts = {"durations": durations, "catalogue_items": n_items, "catalogue": cat_path, "item_users": item_users,
             "popularity_users": pop_users, "popularity": pop_path}
    results = [evaluate_one(ctx, n, e, facts=facts) for n, e in started]
    alerts = [a for r in results for a in r.pop("alerts")]
    return {"outputs": [r["output"] for r in results], "experiments": results, "alerts": alerts}
