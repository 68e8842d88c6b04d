"""Job ``create_redis_dump`` (param ``variant``): the committed predictions as a Redis RDB file.

A scratch ``redis-server`` on a free port loads the RESP files; the key count (DBSIZE) must equal the
predictions' recorded key count, probe users must read back equal to the Parquet and probe seed items'
``sim`` lists equal to those the precompute recorded; then ``SAVE`` writes
the RDB, which is committed as the ``redis_dump`` output (restorable into a fresh server or a managed
Redis import). The scratch server is stopped on every path, errors included.
"""

from __future__ import annotations

import shutil
import tempfile
import time
from pathlib import Path
from typing import Any

from skyrec.jobs.base import JobContext, NotReady


def predictions_manifest(ctx: JobContext, variant: str) -> Any:
    v = ctx.config.variant(variant)
    m = ctx.lake.manifest(ctx.path("predictions", variant=variant, version=v.version))
    if m is None:
        raise NotReady(f"variant {variant!r}: predictions of this run are not committed: run compute_predictions")
    return m


def local_files(ctx: JobContext, manifest: Any, names: list[str], scratch: Path) -> list[str]:
    """Local paths of the listed output files (copied down when the lake is remote)."""
    from skyrec.data.lakeio import file_url

    out = []
    for name in names:
        url = file_url(ctx.lake, manifest, name)
        if ctx.lake.is_local:
            out.append(url)
        else:
            dest = scratch / name.replace("/", "_")
            ctx.lake.fs.get(url, str(dest))
            out.append(str(dest))
    return out


def run(ctx: JobContext) -> dict[str, Any]:
    import redis

    from skyrec.publish.keys import Keys
    from skyrec.publish.resp import load_files
    from skyrec.publish.verify import VerificationError, check_probes, probe_expectations, similar_probes
    from skyrec.redis_local import LocalRedis, free_port

    variant = ctx.param("variant")
    v = ctx.config.variant(variant)
    fields = {"variant": variant, "version": v.version}
    if (done := ctx.committed("redis_dump", **fields)) is not None:
        return {"outputs": [done.path], "note": "already committed", "keys": done.meta.get("keys")}
    pred = predictions_manifest(ctx, variant)
    ctx.lake.verify(pred, checksums=False)
    meta = pred.meta
    pub = meta["publication"]
    keys = Keys(ctx.config.publish.key_prefix)
    started = time.perf_counter()
    scratch = Path(tempfile.mkdtemp(prefix="skyrec-dump-", dir=ctx.checkpoint_dir()))
    server = LocalRedis(port=free_port(), dir=scratch)
    try:
        files = local_files(ctx, pred, meta["resp_files"], scratch)
        server.start(dbfilename="dump.rdb")
        load = load_files(server.host, server.port, files, expected=int(meta["commands"]),
                          timeout=ctx.config.publish.load_timeout_seconds)
        client = redis.Redis(host=server.host, port=server.port, socket_timeout=ctx.config.publish.load_timeout_seconds)
        try:
            dbsize = int(client.dbsize())
            if dbsize != int(meta["keys"]):
                raise VerificationError(f"{pub}: scratch Redis holds {dbsize} keys, predictions recorded {meta['keys']}")
            probes = probe_expectations(ctx.lake, pred, ctx.config.publish.probe_users)
            checked = check_probes(client, keys, variant, pub, probes)
            sim_checked = check_probes(client, keys, variant, pub, similar_probes(pred), kind="sim")
            _bgsave(client, ctx.config.publish.load_timeout_seconds)
        finally:
            client.close()
        rdb = scratch / "dump.rdb"
        with ctx.stage("redis_dump", **fields) as stage:
            with stage.open("dump.rdb", "wb", rows=dbsize) as fh, open(rdb, "rb") as src:
                shutil.copyfileobj(src, fh, 8 << 20)
            manifest = stage.commit({"variant": variant, "publication": pub, "keys": dbsize,
                                     "predictions": pred.path, "commands": load.commands,
                                     "load_seconds": round(load.seconds, 3), "probes_checked": checked,
                                     "similar_probes_checked": sim_checked, "sim_keys": int(meta.get("sim_keys", 0)),
                                     "rdb_bytes": rdb.stat().st_size, "redis_version": _version(server)})
    finally:
        server.stop()
        shutil.rmtree(scratch, ignore_errors=True)
    return {"outputs": [manifest.path], "keys": dbsize, "commands_per_second": round(load.commands_per_second),
            "seconds": round(time.perf_counter() - started, 3)}


def _bgsave(client: Any, timeout: float) -> None:
    """BGSAVE and wait for it: a forked child writes the RDB, so no single command blocks for the whole
    write (a multi-GB SAVE would outlast socket timeouts)."""
    client.bgsave()  # the fork happens inside the command: "in progress" is visible as soon as it returns
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        info = client.info("persistence")
        if not int(info.get("rdb_bgsave_in_progress", 0)):
            if info.get("rdb_last_bgsave_status") != "ok" or int(info.get("rdb_changes_since_last_save", 1)):
                raise RuntimeError(f"redis BGSAVE failed: {info.get('rdb_last_bgsave_status')}")
            return
        time.sleep(0.2)
    raise TimeoutError(f"redis BGSAVE did not finish within {timeout}s")


def _version(server: Any) -> str:
    import redis

    try:
        c = redis.Redis(host=server.host, port=server.port)
        try:
            return str(c.info("server").get("redis_version", ""))
        finally:
            c.close()
    except redis.RedisError:
        return ""
