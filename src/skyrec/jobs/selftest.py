"""A job for proving the orchestration layer: fault injection without depending on the real jobs.

It does what a real heavy step does -- resumable chunked work outside the worker, a create-only commit --
and misbehaves on request, so tests can reproduce production failures against real processes:

params (all optional, strings as every job param):
  tag            output name: the output is ``selftest/<tag>/run=<run_key>`` (default ``default``)
  rows, chunks   total rows and number of chunks (default 1000 rows in 10 chunks)
  chunk_seconds  sleep per chunk (to give tests time to act mid-way)
  cpu_seconds    busy CPU time spent per chunk (proves the work runs in this process, not the worker)
  mem_mb         memory held while working (a "volume spike")
  hang           ``1``: never end (until cancelled) -- after ``hang_after_chunks`` chunks (default 0)
  ignore_sigterm ``1``: ignore SIGTERM, so only the SIGKILL escalation can stop it
  crash_at_chunk die hard (``os._exit(70)``) after writing this many chunks; with ``crash_once=1`` only the
                 first time (a marker in the checkpoint folder records it)
  commit_delay   seconds to sleep between staging the data and creating the manifest (kill-during-commit)
  skip_commit    ``1``: report the output without committing it (a job that lies about success)
  fail           ``1``: raise an error after the work
  gate           ``1``: a gate named ``selftest`` fails before the commit (unless overridden for the run)
  fail_once      ``1``: a storage error while writing the output, the first time only (marker in checkpoint)

Every chunk computed is appended to ``<state>/selftest/<tag>.chunks`` (``<chunk> <pid>``) so tests can
count how often each chunk was computed across attempts. Chunk files live in the job's checkpoint folder
(keyed by the job key, stable across attempts), written atomically, so a retry resumes where the killed
attempt stopped.
"""

from __future__ import annotations

import hashlib
import os
import resource
import signal
import time
from pathlib import Path
from typing import Any

from skyrec.jobs.base import JobContext
from skyrec.procstat import peak_rss_mb


def _flag(ctx: JobContext, name: str) -> bool:
    return ctx.param(name, "0").lower() in {"1", "true", "yes"}


def _burn(seconds: float) -> None:
    end = time.process_time() + seconds
    h = hashlib.sha256()
    while time.process_time() < end:
        for _ in range(2000):
            h.update(b"skyrec")


def run(ctx: JobContext) -> dict[str, Any]:
    tag = ctx.param("tag", "default")
    rel = f"selftest/{tag}/run={ctx.run.run_key}"
    if not ctx.force and ctx.lake.committed(rel):
        return {"outputs": [rel], "note": "already committed"}
    rows = int(ctx.param("rows", "1000"))
    chunks = max(1, int(ctx.param("chunks", "10")))
    chunk_seconds = float(ctx.param("chunk_seconds", "0"))
    cpu_seconds = float(ctx.param("cpu_seconds", "0"))
    crash_at = int(ctx.param("crash_at_chunk", "-1"))
    hang_after = int(ctx.param("hang_after_chunks", "0"))
    if _flag(ctx, "ignore_sigterm"):
        signal.signal(signal.SIGTERM, signal.SIG_IGN)
    ballast = bytearray(int(float(ctx.param("mem_mb", "0")) * 1024 * 1024))
    for i in range(0, len(ballast), 4096):  # touch every page so the memory is really resident
        ballast[i] = 1

    state = Path(ctx.config.state_dir) / "selftest"
    state.mkdir(parents=True, exist_ok=True)
    chunk_log = state / f"{tag}.chunks"
    ckpt = ctx.checkpoint_dir()
    computed = resumed = 0
    per_chunk = [rows // chunks + (1 if i < rows % chunks else 0) for i in range(chunks)]
    for i in range(chunks):
        if _flag(ctx, "hang") and i >= hang_after:
            while True:
                time.sleep(0.2)
        path = ckpt / f"chunk-{i:05d}.csv"
        if path.exists():
            resumed += 1
            continue
        if crash_at >= 0 and i == crash_at:
            marker = ckpt / "crashed"
            if not (_flag(ctx, "crash_once") and marker.exists()):
                marker.touch()
                os._exit(70)
        _burn(cpu_seconds)
        time.sleep(chunk_seconds)
        start = sum(per_chunk[:i])
        body = "".join(f"{start + r},{tag},{i}\n" for r in range(per_chunk[i]))
        tmp = path.with_suffix(f".tmp.{os.getpid()}")
        tmp.write_text(body)
        os.replace(tmp, path)
        with chunk_log.open("a") as fh:
            fh.write(f"{i} {os.getpid()}\n")
        computed += 1

    if _flag(ctx, "skip_commit"):
        return {"outputs": [rel], "rows": rows, "chunks_computed": computed, "chunks_resumed": resumed}
    with ctx.lake.stage("selftest", rel, ctx.producer, force=ctx.force) as stage:
        with stage.open("data.csv", "wb", rows=rows) as fh:
            fh.write(b"id,tag,chunk\n")
            for i in range(chunks):
                fh.write((ckpt / f"chunk-{i:05d}.csv").read_bytes())
                if i == chunks // 2 and _flag(ctx, "fail_once") and not (ckpt / "storage_failed").exists():
                    (ckpt / "storage_failed").touch()
                    raise OSError(28, "injected storage error: no space left on device (mid-write)")
        time.sleep(float(ctx.param("commit_delay", "0")))
        if _flag(ctx, "fail"):
            raise RuntimeError("selftest: failing on request (fail=1)")
        if _flag(ctx, "gate"):
            from skyrec.gates import GateResult

            ctx.gate(GateResult("selftest", False, "selftest: gate failing on request (gate=1)"))
        stage.commit(meta={"tag": tag, "chunks": chunks})
    usage = resource.getrusage(resource.RUSAGE_SELF)
    del ballast
    alerts = ([{"kind": "selftest", "summary": f"selftest {tag}: alert on request (alert=1)",
                "details": {"tag": tag}}] if _flag(ctx, "alert") else [])
    return {"outputs": [rel], "rows": rows, "chunks_computed": computed, "chunks_resumed": resumed,
            "max_rss_mb": peak_rss_mb(), "cpu_seconds": round(usage.ru_utime + usage.ru_stime, 3),
            "alerts": alerts}


