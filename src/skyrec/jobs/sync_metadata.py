"""Job ``sync_metadata``: incremental sync of the metadata JSON objects from the source into the lake.

Only new or changed objects (by key + ETag against the state that the last committed sync recorded) are
fetched, ``ingest.metadata.concurrency`` at a time. Progress is checkpointed batch by batch in
``ctx.checkpoint_dir()`` (stable across attempts of the same run), so a killed attempt's successor
fetches only what is left. Malformed JSON is quarantined (reason ``malformed_json``) and counted; the
run fails above ``ingest.metadata.max_error_rate``. Invariant (meta ``invariant``): objects listed = records
written + quarantined (``malformed_json``) + filtered (``unchanged`` since the last committed sync).

Output ``raw_metadata`` (one per run)::

    records/<stream>/part-NNNNN.jsonl   {"key", "etag", "seq", "record": <the object>} per line, key order
    state.parquet                       key, etag of every object known after this sync (the next sync's baseline)
    _quarantine/malformed_json.jsonl    {"key", "etag", "error", "body"} (body truncated)

Params: ``batch_size`` (objects per checkpointed batch, default 500).
"""

from __future__ import annotations

import hashlib
import json
import shutil
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

DATASET = "raw_metadata"
PART_BYTES = 128 << 20

# Test hook: called after each checkpointed batch with its index (a test raises here to simulate a kill).
after_batch: Callable[[int], None] | None = None


def _seq(key: str) -> int:
    stem = key.rsplit("/", 1)[-1].rsplit(".", 1)[0]
    tail = stem.rsplit("-", 1)[-1]
    return int(tail) if tail.isdigit() else 0


def _line(key: str, etag: str, body: bytes) -> tuple[bytes | None, str | None]:
    """One output line, or (None, error) for malformed JSON. Valid single-line bodies are spliced, not re-encoded."""
    try:
        text = body.decode("utf-8")
        obj = json.loads(text)
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        return None, f"{type(exc).__name__}: {exc}"
    if not isinstance(obj, dict):
        return None, f"top-level JSON value is {type(obj).__name__}, expected an object"
    record = text.strip() if "\n" not in text.strip() else json.dumps(obj, separators=(",", ":"))
    head = json.dumps({"key": key, "etag": etag, "seq": _seq(key)}, separators=(",", ":"))[:-1]
    return f'{head},"record":{record}}}\n'.encode(), None


def _previous_state(ctx: Any, rel: str) -> tuple[dict[str, str], str | None]:
    from skyrec.data.lakeio import read_parquet

    hist = ctx.lake.history(ctx.config, DATASET, before=rel, limit=1)
    if not hist:
        return {}, None
    table = read_parquet(ctx.lake, hist[-1], "state.parquet")
    return dict(zip(table.column("key").to_pylist(), table.column("etag").to_pylist(), strict=True)), hist[-1].path


def _plan_digest(rel: str, todo: list[tuple[str, str]]) -> str:
    h = hashlib.sha256(rel.encode())
    for key, etag in todo:
        h.update(f"\x00{key}\x01{etag}".encode())
    return h.hexdigest()


def run(ctx: Any) -> dict[str, Any]:
    from skyrec.data.source import open_metadata_source
    from skyrec.gates import empty_gate, ingest_invariant

    cfg = ctx.config
    rel = ctx.path(DATASET)
    done = ctx.committed(DATASET)
    if done is not None:
        return {"outputs": [done.path], "noop": True, **{k: done.meta.get(k) for k in ("fetched", "malformed")}}
    started = time.time()
    prefix = cfg.source.metadata_prefix.strip("/")
    streams = list(cfg.source.metadata_streams)
    concurrency = cfg.ingest.metadata.concurrency
    batch_size = max(1, int(ctx.param("batch_size", "500")))
    source = open_metadata_source(cfg, max_connections=concurrency)

    previous, previous_path = _previous_state(ctx, rel)
    listed: dict[str, str] = {}
    stream_of: dict[str, str] = {}
    for stream in streams:
        for obj in source.list(f"{prefix}/{stream}"):
            listed[obj.key] = obj.etag
            stream_of[obj.key] = stream
    todo = sorted((k, e) for k, e in listed.items() if previous.get(k) != e)
    removed = sorted(k for k in previous if k not in listed)
    where = f"{cfg.source_url.rstrip('/')}/{prefix}/{{{','.join(streams)}}}"
    ctx.gate(empty_gate(len(listed), name="empty_source", what=f"metadata objects listed under {where}",
                        hint=f"{len(previous)} known from the last sync; check source.url and "
                             "source.metadata_prefix, or generate sample data with `skyrec generate`"))

    # checkpoint: the plan (what to fetch) + one file per finished batch; a new attempt resumes from it
    cp = Path(ctx.checkpoint_dir()) / "sync_metadata"
    digest = _plan_digest(rel, todo)
    plan_file = cp / "plan.json"
    if plan_file.exists():
        try:
            plan = json.loads(plan_file.read_text())
        except json.JSONDecodeError:
            plan = {}
        if plan.get("digest") != digest:
            shutil.rmtree(cp, ignore_errors=True)
    cp.mkdir(parents=True, exist_ok=True)
    if not plan_file.exists():
        plan_file.write_text(json.dumps({"output": rel, "digest": digest, "objects": len(todo)}))

    batches = [todo[i:i + batch_size] for i in range(0, len(todo), batch_size)]
    fetched_now, resumed = 0, 0
    with ThreadPoolExecutor(max_workers=concurrency, thread_name_prefix="sync") as pool:
        for b, batch in enumerate(batches):
            marker = cp / f"batch-{b:06d}.done"
            if marker.exists():
                resumed += len(batch)
                continue
            bodies = pool.map(source.get, [k for k, _ in batch])  # bounded: one batch in flight
            out: dict[str, list[bytes]] = {}
            bad: list[dict[str, Any]] = []
            for (key, etag), body in zip(batch, bodies, strict=True):
                line, err = _line(key, etag, body)
                if line is None:
                    bad.append({"key": key, "etag": etag, "error": err, "body": body[:2048].decode("utf-8", "replace")})
                else:
                    out.setdefault(stream_of[key], []).append(line)
            for stream, lines in out.items():
                (cp / f"batch-{b:06d}.{stream}.jsonl").write_bytes(b"".join(lines))
            (cp / f"batch-{b:06d}.bad.jsonl").write_text("".join(json.dumps(r, sort_keys=True) + "\n" for r in bad))
            marker.write_text(str(len(batch)))  # written last: the batch is complete
            fetched_now += len(batch)
            if after_batch is not None:
                after_batch(b)

    # assemble the output from the checkpointed batches, in key order
    import pyarrow as pa

    from skyrec.data.lakeio import write_parquet

    stage = ctx.stage(DATASET)
    counts: dict[str, int] = {}
    malformed: list[dict[str, Any]] = []
    try:
        for stream in streams:
            part, size, fh, n, rows, name = 0, 0, None, 0, 0, ""
            for b in range(len(batches)):
                f = cp / f"batch-{b:06d}.{stream}.jsonl"
                if not f.exists():
                    continue
                data = f.read_bytes()
                if fh is None or size >= PART_BYTES:
                    if fh is not None:
                        fh.close()
                        stage.add(name, rows=rows)
                        part += 1
                    name = f"records/{stream}/part-{part:05d}.jsonl"
                    full = stage.path(name)
                    stage.fs.makedirs(full.rsplit("/", 1)[0], exist_ok=True)
                    fh, size, rows = stage.fs.open(full, "wb"), 0, 0
                fh.write(data)
                size += len(data)
                k = data.count(b"\n")
                rows += k
                n += k
            if fh is not None:
                fh.close()
                stage.add(name, rows=rows)
            counts[stream] = n
        for b in range(len(batches)):
            f = cp / f"batch-{b:06d}.bad.jsonl"
            if f.exists():
                malformed.extend(json.loads(x) for x in f.read_text().splitlines() if x)
        stage.quarantine("malformed_json", malformed)
        state = dict(previous)
        for gone in removed:
            state.pop(gone, None)
        state.update(listed)
        keys = sorted(state)
        write_parquet(stage, "state.parquet", pa.table({"key": pa.array(keys, pa.string()),
                                                        "etag": pa.array([state[k] for k in keys], pa.string())}))
        from skyrec.jobs.ingest_activity import error_rate_result

        invariant = {"objects": ingest_invariant(
            "objects", records_in=len(listed), committed=sum(counts.values()),
            quarantined={"malformed_json": len(malformed)}, filtered={"unchanged": len(listed) - len(todo)})}
        ctx.gate(error_rate_result(len(malformed), len(todo), cfg.ingest.metadata.max_error_rate))
        elapsed = time.time() - started
        meta = {"source": cfg.source_url, "previous": previous_path, "listed": len(listed), "fetched": len(todo),
                "fetched_this_attempt": fetched_now, "resumed_from_checkpoint": resumed,
                "unchanged": len(listed) - len(todo), "removed_from_source": len(removed),
                "malformed": len(malformed), "records": counts, "invariant": invariant, "seconds": round(elapsed, 3),
                "gates": [g.as_dict() for g in ctx.gate_results]}
        manifest = stage.commit(meta)
    finally:
        stage.discard()
    shutil.rmtree(cp, ignore_errors=True)
    return {"outputs": [manifest.path], **{k: meta[k] for k in ("listed", "fetched", "fetched_this_attempt",
                                                                  "resumed_from_checkpoint", "unchanged",
                                                                  "malformed", "records")},
            "objects_per_second": round(len(todo) / elapsed, 1) if elapsed > 0 else None}
