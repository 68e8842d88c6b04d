"""Job ``publish_predictions`` (param ``variant``): switch the serving Redis to this run's predictions.

Strategy from ``publish.strategy`` (see ``skyrec.publish.publisher`` for both and their tradeoff):
``versioned`` loads the publication's namespaced keys next to the served ones, proves them (every command
acknowledged, probe users equal the Parquet, fallback/items present), switches the variant's pointer
atomically and removes publications beyond ``publish.keep_versions``. The users' histories go into the
namespace the rails of the activity snapshot share (``skyrec.publish.histories``): the publication attaches to
it first, and its history files already loaded there whole (by another rail) are skipped; a removed
publication leaves it, and its last owner removes it. The pointer's ``activity`` names that namespace (null
when no history was published), its ``also_played`` whether the publication has ``also`` keys, its
``similar`` the publication's "more like this" lists (``{"k", "items"}``, null when none). Then the lake pointer
``pointers/published/<variant>.json`` names the committed predictions now served. Redis unreachable ->
a retryable failure with the pointer unchanged.
"""

from __future__ import annotations

import datetime as dt
import time
from typing import Any

from skyrec.jobs.base import JobContext


def serving_client(ctx: JobContext) -> Any:
    import redis

    return redis.Redis.from_url(ctx.config.publish.redis_url, socket_timeout=30, socket_connect_timeout=5)


def load_estimate(client: Any, keys: Any, pred: Any, meta: dict[str, Any], hist: list[Any],
                  activity: str | None) -> int:
    """About what loading the publication adds to Redis (``publisher.load_bytes``): from its RESP files' bytes
    (the history files the shared namespace does not hold yet among them) and its keys and items-hash
    fields."""
    from skyrec.publish import histories
    from skyrec.publish.publisher import load_bytes

    own = [pred.file(name) for name in meta["resp_files"]]
    done = histories.loaded_files(client, keys, activity) if hist and activity else set()
    todo = [f for f in hist if f.sha256 not in done]
    files = own + todo
    entries = sum(int(f.rows or 0) for f in files) + int(meta.get("items") or 0)
    return load_bytes(sum(int(f.size) for f in files), entries)


def run(ctx: JobContext) -> dict[str, Any]:
    import redis

    from skyrec.jobs.create_redis_dump import local_files, predictions_manifest
    from skyrec.models.artefact import published_predictions_pointer
    from skyrec.publish import histories
    from skyrec.publish.keys import Keys
    from skyrec.publish.publisher import publish_swapdb, publish_versioned
    from skyrec.publish.resp import load_files
    from skyrec.publish.verify import check_history_probes, check_probes, probe_expectations, similar_probes

    variant = ctx.param("variant")
    cfg = ctx.config
    v = cfg.variant(variant)
    pred = predictions_manifest(ctx, variant)
    ctx.lake.verify(pred, checksums=False)
    meta = pred.meta
    pub = meta["publication"]
    keys = Keys(cfg.publish.key_prefix)
    dump = ctx.lake.manifest(ctx.path("redis_dump", variant=variant, version=v.version))
    pointer = {"publication": pub, "variant": variant, "model": meta.get("model"),
               "model_version": meta.get("model_version"), "run_key": meta.get("run_key"),
               "published_at": dt.datetime.now(dt.UTC).isoformat(timespec="seconds"),
               "users": meta.get("users_with_recs"), "items": meta.get("items"), "keys": meta.get("keys"),
               "k": meta.get("k"), "activity": meta.get("activity"),
               "also_played": int(meta.get("also_keys") or 0) > 0,  # the rail's ``also`` keys (docs/similar.md)
               "max_per_brand": (meta.get("rules") or {}).get("max_per_brand"),  # the API keeps it when padding
               "encoding": meta.get("encoding", "json"),  # how its rec values are written (publish.encoding)
               # "more like this": the publication's sim keys (null when none were computed; docs/similar.md)
               "similar": ({"k": (meta.get("similar") or {}).get("k"), "items": int(meta["sim_keys"])}
                           if int(meta.get("sim_keys") or 0) > 0 else None),
               "evaluation": meta.get("evaluation", {}), "predictions": pred.path,
               "redis_dump": dump.path if dump else None}
    probes = probe_expectations(ctx.lake, pred, cfg.publish.probe_users)
    sim_probes = similar_probes(pred)
    started = time.perf_counter()
    client = serving_client(ctx)
    conn = client.connection_pool.connection_kwargs
    import tempfile
    from pathlib import Path

    scratch = Path(tempfile.mkdtemp(prefix="skyrec-publish-", dir=ctx.checkpoint_dir()))
    activity = meta.get("activity")
    hist = [pred.file(name) for name in meta.get("hist_files") or []]  # shared: loaded once per namespace
    hist_commands = sum(int(f.rows or 0) for f in hist)
    skipped: dict[str, int] = {"files": 0, "commands": 0}
    try:
        files = local_files(ctx, pred, meta["resp_files"], scratch)

        def load(db: int | None = None) -> int:
            live = int(conn.get("db", 0) or 0)
            db = live if db is None else db
            target = client if db == live else redis.Redis(
                db=db, **{k: conn[k] for k in ("host", "port", "username", "password", "unix_socket_path")
                          if k in conn})
            try:
                done = histories.loaded_files(target, keys, activity) if hist and activity else set()
                todo = [f for f in hist if f.sha256 not in done]
                skipped.update(files=len(hist) - len(todo),
                               commands=hist_commands - sum(int(f.rows or 0) for f in todo))
                n = load_files(conn.get("host", "127.0.0.1"), int(conn.get("port", 6379)),
                               files + local_files(ctx, pred, [f.path for f in todo], scratch),
                               expected=int(meta["commands"]) - skipped["commands"], db=db,
                               password=conn.get("password"), timeout=cfg.publish.load_timeout_seconds).commands
                if activity:  # every command acknowledged: these files are whole in the namespace now
                    histories.mark_loaded(target, keys, activity, [f.sha256 for f in todo])
            finally:
                if target is not client:
                    target.close()
            # a skipped file is counted as present: its checksum says it was loaded whole into this namespace,
            # which has had an owner ever since (and the history probes below read its values back)
            return n + skipped["commands"]

        def verify(c: Any, p: str) -> None:
            check_probes(c, keys, variant, p, probes)
            check_probes(c, keys, variant, p, sim_probes, kind="sim")
            check_history_probes(c, keys, p, activity, meta.get("history_probes") or {})

        # a publication of any rail registered longer ago than any job may run, never served: nobody will
        # finish it (skyrec.publish.removal)
        abandoned_after = cfg.storage.gc_grace_hours * 3600.0
        need_bytes = load_estimate(client, keys, pred, meta, hist, activity)
        if cfg.publish.strategy == "swapdb":
            result = publish_swapdb(client, keys, variant, pointer, load=load, expected_commands=int(meta["commands"]),
                                    verify=verify, keep_versions=cfg.publish.keep_versions,
                                    spare_db=cfg.publish.swapdb_spare_db, abandoned_after=abandoned_after,
                                    need_bytes=need_bytes)
        else:
            result = publish_versioned(client, keys, variant, pointer, load=lambda: load(None),
                                       expected_commands=int(meta["commands"]), verify=verify,
                                       keep_versions=cfg.publish.keep_versions, abandoned_after=abandoned_after,
                                       need_bytes=need_bytes)
    finally:
        client.close()
        import shutil

        shutil.rmtree(scratch, ignore_errors=True)
    ctx.lake.write_pointer(published_predictions_pointer(variant),
                           {"path": pred.path, "publication": pub, "variant": variant,
                            "published_at": pointer["published_at"], "redis_dump": pointer["redis_dump"]})
    return {"outputs": [pred.path], "publication": pub, "strategy": cfg.publish.strategy,
            "history": {"namespace": activity, "files": len(hist), "skipped_files": skipped["files"],
                        "skipped_keys": skipped["commands"]} if activity else None,
            "seconds": round(time.perf_counter() - started, 3), **{k: v for k, v in result.items() if k != "publication"}}
