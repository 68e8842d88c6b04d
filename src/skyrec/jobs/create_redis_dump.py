"""Job ``create_redis_dump`` (param ``variant``): the committed predictions as a Redis RDB file.

The RDB is written directly from the predictions' RESP files (``skyrec.publish.rdb``: no command is sent
to a Redis to build it; every command converted must be a well-formed SET, or SET/HSET/SADD in the meta
file, and their count must equal the predictions' recorded ``commands``; the users' histories, shared in the
serving Redis by the rails of one activity snapshot, are in it too, so the file restores the whole publication). Then the file is proven the way
a restore would use it: a scratch ``redis-server`` on a free port starts from it (Redis checks the CRC-64,
refuses duplicated keys and malformed records), its key count (DBSIZE) must equal the predictions' recorded
key count, probe users must read back equal to the Parquet and probe seed items' ``sim`` lists equal to
those the precompute recorded. Only that very file is committed as the ``redis_dump`` output (restorable
into a fresh server or a managed Redis import). The scratch server is stopped on every path, errors
included.
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
    from skyrec.publish.rdb import write_rdb
    from skyrec.publish.verify import (
        VerificationError,
        check_history_probes,
        check_probes,
        probe_expectations,
        similar_probes,
    )
    from skyrec.redis_local import LocalRedis, RedisUnavailable, free_port

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
    timeout = ctx.config.publish.load_timeout_seconds
    started = time.perf_counter()
    scratch = Path(tempfile.mkdtemp(prefix="skyrec-dump-", dir=ctx.checkpoint_dir()))
    server = LocalRedis(port=free_port(), dir=scratch)
    try:
        names = list(meta["resp_files"]) + list(meta.get("hist_files") or [])  # the histories too: a whole state
        files = local_files(ctx, pred, names, scratch)
        meta_file = [f for f, name in zip(files, names, strict=True) if name == "resp/meta.resp"]
        if len(meta_file) != 1:
            raise RuntimeError(f"{pred.path}: predictions name no single resp/meta.resp")
        with ctx.stage("redis_dump", **fields) as stage:
            # a local lake: the RDB is written into the staging folder and the scratch server loads that very
            # file (through a link), so what was proven is what is committed, with no copy; a remote lake:
            # written and proven here, then uploaded
            rdb = Path(stage.path("dump.rdb")) if ctx.lake.is_local else scratch / "dump.rdb"
            rdb.parent.mkdir(parents=True, exist_ok=True)
            with open(rdb, "wb") as fh:
                written = write_rdb(fh, meta_file[0], [f for f in files if f != meta_file[0]],
                                    keys_hint=int(meta["keys"]))
            if written.commands != int(meta["commands"]):
                raise VerificationError(f"{pub}: {written.commands} commands in the RESP files, predictions "
                                        f"recorded {meta['commands']}")
            if rdb.parent != scratch:
                (scratch / "dump.rdb").symlink_to(rdb)
            write_seconds = time.perf_counter() - started
            try:  # the scratch server loads the file before it answers PING
                server.start(dbfilename="dump.rdb", wait=timeout, die_with_parent=True)  # not outliving a kill -9
            except RedisUnavailable as exc:
                raise VerificationError(f"{pub}: the RDB written from the predictions does not load: {exc}") from exc
            load_seconds = time.perf_counter() - started - write_seconds
            client = redis.Redis(host=server.host, port=server.port, socket_timeout=timeout)
            try:
                dbsize = int(client.dbsize())
                if dbsize != int(meta["keys"]):
                    raise VerificationError(f"{pub}: scratch Redis holds {dbsize} keys, predictions recorded "
                                            f"{meta['keys']}")
                probes = probe_expectations(ctx.lake, pred, ctx.config.publish.probe_users)
                checked = check_probes(client, keys, variant, pub, probes)
                sim_checked = check_probes(client, keys, variant, pub, similar_probes(pred), kind="sim")
                hist_checked = check_history_probes(client, keys, pub, meta.get("activity"),
                                                    meta.get("history_probes") or {})
                version = str(client.info("server").get("redis_version", ""))
            finally:
                client.close()
            server.stop()  # it runs with saving disabled: the file is left as written
            if rdb.parent == scratch:
                with stage.open("dump.rdb", "wb", rows=dbsize) as fh, open(rdb, "rb") as src:
                    shutil.copyfileobj(src, fh, 8 << 20)
            else:
                stage.add("dump.rdb", rows=dbsize)
            manifest = stage.commit({"variant": variant, "publication": pub, "keys": dbsize,
                                     "predictions": pred.path, "commands": written.commands, "method": "rdb",
                                     "write_seconds": round(write_seconds, 3), "load_seconds": round(load_seconds, 3),
                                     "probes_checked": checked, "similar_probes_checked": sim_checked,
                                     "history_probes_checked": hist_checked,
                                     "sim_keys": int(meta.get("sim_keys", 0)), "rdb_bytes": written.bytes,
                                     "rdb_crc64": f"{written.crc64:016x}", "redis_version": version})
    finally:
        server.stop()
        shutil.rmtree(scratch, ignore_errors=True)
    seconds = time.perf_counter() - started
    return {"outputs": [manifest.path], "keys": dbsize, "commands_per_second": round(written.commands / seconds),
            "seconds": round(seconds, 3)}
