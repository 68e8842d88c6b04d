"""Job ``compute_predictions`` (param ``variant``): every user's top-K for one variant.

Inputs (committed outputs only): the published model of the variant's (model, version), the latest
``catalogue``, ``availability`` (optional: the catalogue's windows otherwise) and ``cold_start``.
Output ``predictions``: Parquet shards (schema PREDICTIONS) and RESP mass-insertion shards
(``resp/part-NNNNN.resp`` per-user ``rec`` keys, ``resp/meta.resp`` with the fallback list, the items hash
of every referenced item and a sample users set), keys namespaced by the publication id. The ``rec`` values
are in ``publish.encoding`` (``skyrec.publish.codec``), which the meta names (``"encoding"``); ``packed``
values are positions into the candidates, whose ordered ids (the item table) go into the items hash. With
``publish.history_items > 0`` and a committed ``activity_snapshot``, each shard also writes its users' last
plays (``hist/part-NNNNN.resp``: ``hist`` keys in the namespace every rail of that snapshot shares,
``Keys.shared_hist_namespace``, which the pointer names as ``activity``; the meta lists them as
``hist_files``, apart from the publication's own ``resp_files``), and the items hash covers the played items
too, so the API shows titles. The "more like this" lists are computed first: the users whose older plays are
in the lists of their recent plays get an ``also`` key of the rail's (``also_played``,
``skyrec.scoring.history``; the lists go to the workers as ``sim/lists.npz``), which "because you played X"
leaves out.
With ``similar_k > 0`` (``variants.<name>.similar_k``, else ``precompute.similar_k``) every model item is
also scored as a seed, through the model contract's ``item_queries`` and the same kernel and rules
(``sim/part-NNNNN.resp``: ``sim`` keys, in the same encoding; counted in ``keys``/``commands``; the meta's
``similar`` says what was computed, or why nothing was); the items hash then covers the seeds too.

``precompute.engine``: ``local`` scores the shards in this process (no runner start-up: the small demo
stays fast, and one 2-core machine is fully used by the kernel's threads); ``beam`` runs the same shard
function in the Beam pipeline (DirectRunner locally, Dataflow/Flink/Spark by config) to scale out.
"""

from __future__ import annotations

import dataclasses
import json
import time
from typing import Any

from skyrec.jobs.base import BadInput, JobContext, NotReady

#: the "more like this" lists as a seed x candidate matrix (npz), for the workers that write the histories
SIMILAR_LISTS = "sim/lists.npz"


def _fields(ctx: JobContext) -> tuple[str, Any, dict[str, str]]:
    variant = ctx.param("variant")
    v = ctx.config.variant(variant)
    return variant, v, {"variant": variant, "version": v.version}


def history_namespace(snapshot: Any, history_items: int) -> str:
    """The shared history namespace of a committed activity snapshot (``Keys.shared_hist_namespace``): unique per
    commit, also across rebuilt lakes (the manifest's ``commit_id``; older manifests: their path, revision and
    commit time), so two snapshots never share keys."""
    import hashlib

    from skyrec.publish.keys import Keys

    commit = snapshot.commit_id.rsplit(".", 1)[-1] if snapshot.commit_id else ""
    token = commit[:16] or hashlib.sha256(
        f"{snapshot.path}|{snapshot.revision}|{snapshot.committed_at}".encode()).hexdigest()[:16]
    return Keys.shared_hist_namespace(token, history_items)


def precompute_spec(cfg: Any, variant: str, *, model_path: str, catalogue_path: str, availability_path: str | None,
                    activity_path: str | None, at: str, publication: str, out_dir: str,
                    history_namespace: str | None = None) -> Any:
    """The ``PrecomputeSpec`` of one variant's run (its inputs, rules and kernel settings from ``cfg``); the
    precompute benchmark times the bare kernel on exactly this spec."""
    from skyrec.scoring.engine import PrecomputeSpec, default_threads

    v, pc = cfg.variant(variant), cfg.precompute
    return PrecomputeSpec(
        variant=variant, publication=publication, lake_url=cfg.lake_url,
        storage_options=dict(cfg.storage.storage_options), model_path=model_path, catalogue_path=catalogue_path,
        availability_path=availability_path, out_dir=out_dir, at=at, candidate_filter=v.candidates.model_dump(),
        key_prefix=cfg.publish.key_prefix, k=v.k or pc.k, max_per_brand=pc.rules.max_per_brand,
        max_age_days=dict(pc.rules.max_age_days), batch_size=pc.batch_size, sub_batch=pc.sub_batch,
        threads=default_threads(pc.threads), score_decimals=pc.score_decimals, activity_path=activity_path,
        history_items=cfg.publish.history_items, history_namespace=history_namespace, encoding=cfg.publish.encoding,
        similar_k=v.similar_k if v.similar_k is not None else pc.similar_k,
        similar_measure=v.similar_measure or pc.similar_measure,
        model_classes=sorted({m.class_path for m in cfg.models.values()}), users_sample=pc.users_sample)


def run(ctx: JobContext) -> dict[str, Any]:
    import numpy as np
    import pyarrow as pa

    from skyrec.gates import volume_gate
    from skyrec.models.artefact import published_model_pointer
    from skyrec.publish.codec import ITEM_TABLE_FIELD, table_value
    from skyrec.publish.keys import Keys, publication_id
    from skyrec.publish.resp import encode_hset, encode_hset_columns, encode_sadd, encode_sets
    from skyrec.scoring.candidates import fallback_json, fallback_list, items_hash
    from skyrec.scoring.engine import Scorer, read_catalogue, read_table, shard_ranges

    started = time.perf_counter()
    variant, v, fields = _fields(ctx)
    if (done := ctx.committed("predictions", **fields)) is not None:
        return {"outputs": [done.path], "note": "already committed", **{k: done.meta.get(k) for k in
                                                                         ("publication", "users", "keys")}}
    cfg, lake = ctx.config, ctx.lake
    ptr = lake.read_pointer(published_model_pointer(v.model, v.version))
    if not ptr:
        raise NotReady(f"variant {variant!r}: no published model for ({v.model}, {v.version}) "
                       f"(pointer {published_model_pointer(v.model, v.version)} missing: run train_model)")
    catalogue_m = ctx.as_of("catalogue", or_newest=True)  # the inputs of this run's time
    if catalogue_m is None:
        raise NotReady("no committed catalogue: run ingest_programme_metadata first")
    availability_m = ctx.as_of("availability", or_newest=True)
    cold_m = ctx.as_of("cold_start", or_newest=True)
    activity_m = ctx.as_of("activity_snapshot", or_newest=True) if cfg.publish.history_items > 0 else None
    pc = cfg.precompute
    at = ctx.run.end

    with ctx.stage("predictions", **fields) as stage:
        # Unique per committed revision, wherever it is served: the run, the revision, and this attempt's
        # nonce (a rebuilt lake restarts revisions at 0 while Redis may still serve the old content under
        # the old id; the API caches per publication id as immutable).
        nonce = stage.token.rsplit(".", 1)[-1][:8]
        run_key = ctx.run.run_key + (f"-r{stage.base_revision}" if stage.base_revision else "") + f"-{nonce}"
        pub = publication_id(v.version, run_key)
        spec = precompute_spec(cfg, variant, model_path=ptr["path"], catalogue_path=catalogue_m.path,
                               availability_path=availability_m.path if availability_m else None,
                               activity_path=activity_m.path if activity_m else None, at=at.isoformat(),
                               publication=pub, out_dir=stage.path(""),
                               history_namespace=(history_namespace(activity_m, cfg.publish.history_items)
                                                  if activity_m else None))
        scorer = Scorer.from_spec(spec)  # the driver needs the candidates too (fallback, items hash)
        cands = scorer.candidates
        if len(cands) == 0:
            raise BadInput(f"variant {variant!r}: no candidates ({cands.counts}); check variants.{variant}.candidates "
                           "and that the catalogue/availability are current")
        bad_users = scorer.invalid_users()
        if bad_users:
            stage.quarantine("invalid_user_id", [{"user_id": u, "reason": "not a valid key component"}
                                                 for u in bad_users])
        shards = shard_ranges(scorer.n_users, pc.shard_users)
        # the seeds first, in this process: the users' histories name their older plays in those lists
        similar = _similar(scorer, pc.shard_users)
        lists_entries = None
        if activity_m is not None and scorer.similar_lists() is not None:
            with stage.open(SIMILAR_LISTS, "wb") as fh:
                lists_entries = scorer.save_similar_lists(fh)
            spec = dataclasses.replace(spec, similar_lists=SIMILAR_LISTS)
            scorer.spec = spec
        if pc.engine == "beam":
            scorer.close()
            scorer.user_factors = scorer.seen = None  # type: ignore[assignment]  # workers load their own copy
            from skyrec.pipelines.predictions import pipeline_args
            from skyrec.pipelines.predictions import run as run_pipeline

            beam_state = run_pipeline(spec, shards, pipeline_args(cfg, f"predictions-{variant}-{ctx.run.run_key}"
                                                                  .lower().replace("_", "-")))
            results = []
            for shard, _, _ in shards:
                with lake.fs.open(stage.path(f"results/part-{shard:05d}.json"), "rb") as fh:
                    results.append(json.loads(fh.read()))
        else:
            beam_state = None
            try:
                from skyrec.progress import track

                scorer.read_histories(shards)  # one scan of the activity snapshot for every shard
                results = [scorer.run_shard(*s).as_dict()
                           for s in track(shards, f"scoring {variant}", total=len(shards), unit="shards")]
            finally:
                scorer.close()
        scoring_seconds = time.perf_counter() - started

        # the publication's shared keys: fallback list, items hash (every referenced item), users sample
        keys = Keys(cfg.publish.key_prefix)
        catalogue = read_catalogue(lake, catalogue_m.path)
        availability = read_table(lake, availability_m.path) if availability_m else None
        cold = read_table(lake, cold_m.path) if cold_m else None
        k = v.k or pc.k
        fallback = fallback_list(cold, variant, catalogue, v.candidates, at, availability, k,
                                 max_age_days=dict(pc.rules.max_age_days), max_per_brand=pc.rules.max_per_brand)
        referenced = np.zeros(len(cands), dtype=bool)
        for r in results + similar["results"]:
            referenced[np.asarray(r["referenced"], dtype=np.int64)] = True
        played = sorted({i for r in results for i in r.get("history_items", ())})
        seeds = [i for r in similar["results"] for i in r["seed_ids"]]  # their titles name "more like X"
        fields, values = items_hash(cands, referenced, catalogue, [i for i, _ in fallback] + played + seeds)
        meta_resp = encode_sets(pa.array([keys.fallback(variant, pub)]), pa.array([fallback_json(fallback)]))
        commands = 1
        if len(fields) == 0:
            fields, values = pa.array(["_none"]), pa.array(["{}"])
        hset, n = encode_hset_columns(keys.items(variant, pub), fields, values)
        meta_resp += hset
        commands += n
        if spec.encoding == "packed":  # the item table: one field of the items hash, positions = candidates
            hset, n = encode_hset(keys.items(variant, pub),
                                  [(ITEM_TABLE_FIELD, table_value(cands.item_ids.tolist(), spec.score_decimals))])
            meta_resp += hset
            commands += n
        sample = [u for r in results for u in r["sample_users"]]
        rng = np.random.default_rng(0)
        if len(sample) > pc.users_sample:
            sample = [sample[i] for i in sorted(rng.choice(len(sample), pc.users_sample, replace=False))]
        if sample:
            sadd, n = encode_sadd(keys.users(variant, pub), sample)
            meta_resp += sadd
            commands += n
        with stage.open("resp/meta.resp", "wb", rows=commands) as fh:
            fh.write(meta_resp)

        users = sum(r["users"] for r in results)
        rec_keys = sum(r["rec_keys"] for r in results)
        hist_keys = sum(r.get("hist_keys", 0) for r in results)
        also_keys = sum(r.get("also_played_users", 0) for r in results)
        sim_keys = sum(r["sim_keys"] for r in similar["results"])
        hist_files = []
        for r in results:
            stage.add(r["parquet"], rows=r["rows"])
            stage.add(r["resp"], rows=r["rec_keys"] + r.get("also_played_users", 0))
            if r.get("hist"):
                stage.add(r["hist"], rows=r["hist_keys"])
                hist_files.append(r["hist"])
        for r in similar["results"]:
            stage.add(r["resp"], rows=r["sim_keys"])
        # post-condition: every shard file present (commit checks sizes), counts add up
        if users + len(bad_users) != scorer.n_users:
            raise RuntimeError(f"{users} users scored + {len(bad_users)} quarantined != {scorer.n_users} in the model")
        history = [m.meta.get("users_with_recs", 0) for m in lake.history(cfg, "predictions", variant=variant,
                                                                           version=v.version)]
        history = history[-cfg.gates.volume.lookback_runs:]
        g = cfg.gates.volume
        ctx.gate(volume_gate(rec_keys, history, min_ratio=g.min_ratio, max_ratio=g.max_ratio,
                             min_history=g.min_history, min_volume=g.min_volume,
                             name="predictions_volume"))
        meta = {
            "variant": variant, "model": v.model, "version": v.version,
            "model_version": scorer.model_meta.get("model_version", ""), "model_path": ptr["path"],
            "publication": pub, "run_key": ctx.run.run_key, "at": at.isoformat(), "k": k,
            "rules": pc.rules.model_dump(), "engine": pc.engine, "beam": beam_state, "encoding": spec.encoding,
            "score_decimals": spec.score_decimals,
            "users": users, "users_with_recs": rec_keys, "users_without_recs": users - rec_keys,
            "invalid_users": len(bad_users), "rows": sum(r["rows"] for r in results),
            "keys": rec_keys + hist_keys + also_keys + sim_keys + 2 + (1 if sample else 0),
            "commands": rec_keys + hist_keys + also_keys + sim_keys + commands,
            "hist_keys": hist_keys, "also_keys": also_keys, "sim_keys": sim_keys, "similar": similar["meta"],
            "history_items": cfg.publish.history_items if activity_m else 0,
            "also_played": {"users": also_keys,
                            "ids": sum(r.get("also_played", 0) for r in results), "lists_entries": lists_entries,
                            "lists_file": SIMILAR_LISTS if lists_entries is not None else None},
            "activity": spec.history_namespace,  # shared by the rails of the snapshot (null: no history)
            "hist_files": hist_files,  # its keys, loaded once into the namespace (``skyrec.publish.histories``)
            "history_probes": dict(list({u: val for r in results
                                         for u, val in (r.get("history_probes") or {}).items()}.items())[:8]),
            "activity_snapshot": activity_m.path if activity_m else None, "played_items": len(played),
            "resp_files": ["resp/meta.resp"] + [r["resp"] for r in results] + [r["resp"] for r in similar["results"]],
            "parquet_files": [r["parquet"] for r in results], "items": len(fields), "fallback_items": len(fallback),
            "candidates": cands.counts, "sample_users": sample[:50],
            "evaluation": scorer.evaluation,
            "catalogue": catalogue_m.path, "availability": availability_m.path if availability_m else None,
            "cold_start": cold_m.path if cold_m else None,
            "scoring_seconds": round(scoring_seconds, 3), "seconds": round(time.perf_counter() - started, 3),
        }
        manifest = stage.commit(meta)
    return {"outputs": [manifest.path], "publication": pub, "users": users, "users_with_recs": rec_keys,
            "keys": meta["keys"], "hist_keys": hist_keys, "sim_keys": sim_keys,
            "similar_seconds": similar["meta"].get("seconds"), "candidates": len(cands), "seconds": meta["seconds"]}


def _similar(scorer: Any, shard_items: int) -> dict[str, Any]:
    """Every model item's "more like this" list under the rail's rules (``Scorer.run_similar_shard``), in
    shards of ``shard_items`` seeds. Returns the shard results and the manifest's ``similar`` record: its
    ``k``, the seeds scored, the keys written, the seeds left out (ids that are no valid key), a few probe
    lists for the load post-condition, the time taken, or why nothing was computed."""
    import logging

    from skyrec.progress import track
    from skyrec.scoring.engine import shard_ranges

    k = scorer.spec.similar_k
    if k <= 0:
        return {"results": [], "meta": {"k": 0, "sim_keys": 0, "note": "disabled (similar_k: 0)"}}
    if not scorer.similar_enabled:
        note = "the model output holds no model.json: its model class (what 'similar' means for it) is unknown"
        logging.getLogger("skyrec.jobs").warning("similar items not computed: %s", note)
        return {"results": [], "meta": {"k": k, "sim_keys": 0, "note": note}}
    started = time.perf_counter()
    n_items = len(scorer.item_ids)
    shards = shard_ranges(n_items, shard_items)
    results = [scorer.run_similar_shard(*s).as_dict()
               for s in track(shards, f"similar items {scorer.spec.variant}", total=len(shards), unit="shards")]
    invalid = scorer.invalid_seeds()
    seeds = sum(r["seeds"] for r in results)
    if seeds + len(invalid) != n_items:  # post-condition: every model item is a seed or counted out
        raise RuntimeError(f"{seeds} seed items scored + {len(invalid)} invalid != {n_items} in the model")
    probes: dict[str, Any] = {}
    for r in results:
        probes.update(list(r["probes"].items())[: max(0, 8 - len(probes))])
    return {"results": results, "meta": {
        "k": k, "model_class": f"{scorer.model_class.__module__}:{scorer.model_class.__qualname__}",
        "measure": scorer.similar_measure, "measure_configured": scorer.spec.similar_measure,
        "seeds": seeds, "sim_keys": sum(r["sim_keys"] for r in results), "invalid_seeds": len(invalid),
        "invalid_seed_examples": invalid[:5], "resp_files": [r["resp"] for r in results], "probes": probes,
        "seconds": round(time.perf_counter() - started, 3)}}
