"""The invariants a fault run checks, over what is committed in the lake and what the API answered.

* ``one_manifest``: every output of a run has exactly one committed manifest revision (nothing in the
  fault run forces a re-run, so a second revision means a retry committed twice) -- except a derived output
  rebuilt because its inputs changed (an activity snapshot whose window got more deltas), which says so.
* ``verify``: every file a manifest lists is present with its size and sha256 (``Lake.verify``).
* ``records``: for the run's activity hour, rows in the raw source files = the delta's ``rows_in`` =
  ``rows_out`` + quarantined + filtered; the delta's Parquet holds ``rows_out`` rows; the snapshot holds
  exactly the sum of the committed deltas in its window, and its Parquet holds that many rows.
* ``api``: no answer was a 5xx other than 503 (Redis unreachable is a documented 503); every 200 answer
  names a committed publication of its variant, that publication's model version, and only items of that
  publication, with its titles and scores, in its order (personalised list, then fallback padding).
* ``one_live_job``: never two live job processes for one job key (sampled while the run goes).
* ``no_orphans``: when the runs are over, no process that names the world's home is left running but the
  world's own servers (a scratch redis-server of a job killed mid-proof, say, would run forever).
* ``redis_leftovers``: when the runs are over and what nobody finished is collected (``skyrec gc`` with no
  grace: no load runs any more), the serving Redis holds the served publications (each rail's current and
  history) and the users' plays they own, nothing else: no key of a publication nobody can find again.

Each check returns a list of :class:`Violation`; an empty list is a pass.
"""

from __future__ import annotations

import datetime as dt
import json
import os
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from skyrec.publish.codec import ITEM_TABLE_FIELD, decode_value, parse_table
from skyrec.publish.resp import parse_commands
from skyrec.storage import MANIFEST_DIR, IntegrityError, Lake, Manifest, StorageError


@dataclass
class Violation:
    invariant: str
    detail: str
    run: int | None = None
    path: str | None = None
    faults: list[dict[str, Any]] = field(default_factory=list)

    def as_dict(self) -> dict[str, Any]:
        return asdict(self)


def revisions(lake: Lake, rel: str) -> list[str]:
    return [f"{r:06d}.json" for r in lake.revisions(rel)]


def read_revision(lake: Lake, rel: str, name: str) -> Manifest:
    m = lake.read_manifest(rel, int(name[:6]))
    if m is None:
        raise StorageError(f"{rel}: revision {name} listed but unreadable")
    return m


def _legitimate_rebuild(previous: Manifest, later: Manifest) -> bool:
    """A later revision that rebuilt a derived output whose inputs changed (an activity snapshot whose window
    got more deltas): recorded as such, from other inputs. Anything else is a retry that committed twice."""
    return bool(later.meta.get("rebuilt_stale")) and later.meta.get("inputs") != previous.meta.get("inputs")


def check_outputs(lake: Lake, outputs: dict[str, str], *, complete: bool) -> list[Violation]:
    """``one_manifest`` and ``verify`` over ``outputs`` (dataset -> lake path) of one run."""
    out: list[Violation] = []
    for dataset, rel in outputs.items():
        revs = revisions(lake, rel)
        if not revs:
            if complete:
                out.append(Violation("one_manifest", f"{dataset}: the run succeeded but {rel} has no manifest",
                                     path=rel))
            continue
        if len(revs) > 1:
            try:
                chain = [read_revision(lake, rel, name) for name in revs]
                rebuilt = all(_legitimate_rebuild(a, b) for a, b in zip(chain, chain[1:], strict=False))
            except (StorageError, ValueError, KeyError, OSError):
                rebuilt = False
            if not rebuilt:
                out.append(Violation("one_manifest", f"{dataset}: {len(revs)} committed revisions {revs} "
                                     "(none forced, none a rebuild from changed inputs)", path=rel))
        for name in revs:
            try:
                m = read_revision(lake, rel, name)
                lake.verify(m, checksums=True)
            except (IntegrityError, StorageError, ValueError, KeyError, OSError) as exc:
                out.append(Violation("verify", f"{dataset} {rel} revision {name}: {type(exc).__name__}: {exc}",
                                     path=rel))
    return out


def verify_all(lake: Lake) -> tuple[int, list[Violation]]:
    """Every committed manifest in the lake verifies (a later run must not damage an earlier output)."""
    checked, out = 0, []
    for path in lake.fs.find(lake.root):
        if f"/{MANIFEST_DIR}/" not in path or not path.endswith(".json"):
            continue
        rel_dir = path[len(lake.root) + 1:].rsplit(f"/{MANIFEST_DIR}/", 1)[0]
        name = path.rsplit("/", 1)[-1]
        if not (name[:6].isdigit() and len(name) == 11):
            continue
        checked += 1
        try:
            lake.verify(read_revision(lake, rel_dir, name), checksums=True)
        except (IntegrityError, StorageError, ValueError, KeyError, OSError) as exc:
            out.append(Violation("verify", f"{rel_dir} revision {name}: {type(exc).__name__}: {exc}", path=rel_dir))
    return checked, out


def _parquet_rows(lake: Lake, m: Manifest) -> int:
    import pyarrow.parquet as pq

    from skyrec.data.lakeio import parquet_files

    total = 0
    for f in parquet_files(m):
        with lake.fs.open(lake.abspath(f"{m.path}/{f}"), "rb") as fh:
            total += pq.read_metadata(fh).num_rows
    return total


def raw_rows(config: Any, hour: dt.datetime) -> int:
    """Rows in the raw activity files of ``hour`` in the source (what the ingest must account for)."""
    import pyarrow.parquet as pq

    from skyrec.data.source import source_fs

    fs, root = source_fs(config)
    folder = f"{root}/{config.source.activity_prefix}/date={hour:%Y-%m-%d}/hour={hour:%H}"
    total = 0
    for name in sorted(fs.ls(folder, detail=False)):
        if name.endswith(".parquet"):
            with fs.open(name, "rb") as fh:
                total += pq.read_metadata(fh).num_rows
    return total


def check_records(lake: Lake, config: Any, hour: dt.datetime, delta_rel: str, snapshot_rel: str) -> list[Violation]:
    out: list[Violation] = []
    delta = lake.manifest(delta_rel)
    if delta is not None:
        meta = delta.meta
        raw = raw_rows(config, hour)
        q = sum(int(v) for v in (meta.get("quarantined") or {}).values())
        f = sum(int(v) for v in (meta.get("filtered") or {}).values())
        rows_in, rows_out = meta.get("rows_in"), meta.get("rows_out")
        if rows_in != raw:
            out.append(Violation("records", f"{delta_rel}: raw source has {raw} rows, the delta counts rows_in="
                                 f"{rows_in}", path=delta_rel))
        if rows_in is not None and rows_out is not None and rows_in != rows_out + q + f:
            out.append(Violation("records", f"{delta_rel}: rows_in {rows_in} != rows_out {rows_out} + quarantined "
                                 f"{q} + filtered {f}", path=delta_rel))
        actual = _parquet_rows(lake, delta)
        if actual != rows_out or delta.rows != rows_out:
            out.append(Violation("records", f"{delta_rel}: Parquet holds {actual} rows, manifest rows {delta.rows}, "
                                 f"meta rows_out {rows_out}", path=delta_rel))
    snap = lake.manifest(snapshot_rel)
    if snap is not None:
        first, last = snap.meta.get("first_interval", ""), snap.meta.get("last_interval", "")
        prefix = snapshot_rel.rsplit("/", 3)[0] + "/deltas/"
        expected = 0
        for rel in lake.versions(prefix):
            key = rel.rsplit("=", 1)[-1]
            if first <= key <= last:
                m = lake.manifest(rel)
                expected += m.rows if m is not None else 0
        actual = _parquet_rows(lake, snap)
        if not (expected == snap.rows == actual):
            out.append(Violation("records", f"{snapshot_rel}: committed deltas in its window hold {expected} rows, "
                                 f"the snapshot's manifest says {snap.rows}, its Parquet holds {actual}",
                                 path=snapshot_rel))
    return out


# ---- the API ------------------------------------------------------------------------------------


@dataclass
class Publication:
    """What one committed predictions output publishes: pointer fields, rec lists, fallback, item metadata."""

    variant: str
    publication: str
    model_version: str | None
    path: str
    recs: dict[str, list[tuple[str, float]]]
    fallback: list[tuple[str, float]]
    items: dict[str, dict[str, Any]]


def load_publication(lake: Lake, m: Manifest, key_prefix: str) -> Publication:
    variant, pub = m.meta["variant"], m.meta["publication"]
    rec_prefix = f"{key_prefix}:rec:{variant}:{pub}:".encode()
    fallback_key = f"{key_prefix}:fallback:{variant}:{pub}".encode()
    items_key = f"{key_prefix}:items:{variant}:{pub}".encode()
    recs: dict[str, list[tuple[str, float]]] = {}
    fallback: list[tuple[str, float]] = []
    items: dict[str, dict[str, Any]] = {}
    raw_recs: dict[str, bytes] = {}
    table = None
    for name in m.meta.get("resp_files") or []:
        entry = next((f for f in m.files if f.path == name or f.path.endswith(f"/{name}")), None)
        if entry is None:
            raise KeyError(f"{m.path}: RESP file {name!r} of the publication is not in the manifest")
        with lake.fs.open(lake.abspath(f"{m.path}/{entry.path}"), "rb") as fh:
            data = fh.read()
        for cmd in parse_commands(data):
            op = cmd[0].upper()
            if op == b"SET" and cmd[1].startswith(rec_prefix):
                raw_recs[cmd[1][len(rec_prefix):].decode()] = cmd[2]
            elif op == b"SET" and cmd[1] == fallback_key:
                fallback = [(str(i), float(s)) for i, s in json.loads(cmd[2])]
            elif op == b"HSET" and cmd[1] == items_key:
                for k in range(2, len(cmd) - 1, 2):
                    if cmd[k].decode() == ITEM_TABLE_FIELD:  # the packed encoding's item table, no item
                        table = parse_table(cmd[k + 1])
                    else:
                        items[cmd[k].decode()] = json.loads(cmd[k + 1])
    # rec values in the publication's encoding (json or packed; the item table may come in any file)
    recs = {user: decode_value(raw, table) for user, raw in raw_recs.items()}
    return Publication(variant, pub, m.meta.get("model_version"), m.path, recs, fallback, items)


def _subsequence(got: list[tuple[str, float | None]], of: list[tuple[str, float]]) -> bool:
    """``got`` appears in ``of`` in order, with the same scores (an unscored item matches by id)."""
    it = iter(of)
    return all(any(g[0] == o[0] and (g[1] is None or abs(g[1] - o[1]) <= 1e-6 * max(1.0, abs(o[1]))) for o in it)
               for g in got)


def check_answer(body: dict[str, Any], pubs: dict[tuple[str, str], Publication]) -> str | None:
    """Why this 200 answer is not one publication's answer, or None when it is."""
    variant, pub_id = body.get("variant"), body.get("publication")
    pub = pubs.get((str(variant), str(pub_id)))
    if pub is None:
        return f"publication {pub_id!r} of {variant!r} is no committed predictions output"
    if body.get("model_version") != pub.model_version:
        return f"model_version {body.get('model_version')!r} but publication {pub_id} has {pub.model_version!r}"
    items = body.get("items") or []
    for item in items:
        meta = pub.items.get(item.get("id"))
        if meta is None:
            return f"item {item.get('id')!r} is not in publication {pub_id}"
        for k in ("title", "brand", "genres"):
            if k in meta and item.get(k) != meta[k]:
                return (f"item {item.get('id')!r}: {k}={item.get(k)!r} but publication {pub_id} has {meta[k]!r}")
    scored = [(str(i["id"]), None if i.get("score") is None else float(i["score"])) for i in items]
    offset = int(body.get("offset") or 0)
    if offset == 0:
        if body.get("source") == "personalised":
            own = pub.recs.get(str(body.get("user_id")))
            if own is None:
                return f"personalised answer for {body.get('user_id')!r}, who has no list in publication {pub_id}"
            if all("origin" in i for i in items):  # each item says where it came from
                head = [s for s, i in zip(scored, items, strict=True) if i["origin"] != "fallback"]
                tail = [s for s, i in zip(scored, items, strict=True) if i["origin"] == "fallback"]
                if scored[:len(head)] != head:
                    return "padding from the fallback list comes before the user's own items"
            else:
                padded = int(body.get("padded") or 0)
                head, tail = scored[:len(scored) - padded], scored[len(scored) - padded:]
            if not _subsequence(head, own):
                return f"the personalised items are not publication {pub_id}'s list for {body.get('user_id')!r}"
            if not _subsequence(tail, pub.fallback):
                return f"the padding is not publication {pub_id}'s fallback list"
        elif not _subsequence(scored, pub.fallback):
            return f"the fallback answer is not publication {pub_id}'s fallback list"
    return None


def api_violations(answers: list[dict[str, Any]], pubs: dict[tuple[str, str], Publication]) -> list[Violation]:
    out = []
    for a in answers:
        status = a["status"]
        if status >= 500 and status != 503:
            out.append(Violation("api", f"HTTP {status} for {a['url']}: {str(a.get('text'))[:300]}"))
        elif status == 200:
            why = check_answer(a["body"], pubs)
            if why is not None:
                out.append(Violation("api", f"{a['url']}: {why}"))
    return out


def _process_table() -> dict[int, tuple[int, str, str]]:
    """pid -> (parent pid, state letter, command line) of every process (Linux ``/proc``; empty elsewhere)."""
    table: dict[int, tuple[int, str, str]] = {}
    for name in os.listdir("/proc") if os.path.isdir("/proc") else ():
        if not name.isdigit():
            continue
        try:
            with open(f"/proc/{name}/stat") as fh:
                fields = fh.read().rsplit(") ", 1)[1].split()
            with open(f"/proc/{name}/cmdline", "rb") as fh:
                cmdline = fh.read().replace(b"\0", b" ").decode(errors="replace").strip()
        except (OSError, IndexError):
            continue  # ended while being read
        table[int(name)] = (int(fields[1]), fields[0], cmdline)
    return table


def orphan_processes(home: Path, own: set[int]) -> list[Violation]:
    """``no_orphans``: processes (not zombies) whose command line names ``home``, other than ``own`` (the
    world's servers), their descendants and this process itself (a job this process started and that never
    ended is reported)."""
    table = _process_table()

    def owned(pid: int) -> bool:
        seen = set()
        while pid > 1 and pid not in seen:
            if pid in own:
                return True
            seen.add(pid)
            pid = table.get(pid, (0, "", ""))[0]
        return False

    return [Violation("no_orphans", f"pid {pid} still running after the runs: {cmd[:300]}")
            for pid, (_, state, cmd) in sorted(table.items())
            if str(home) in cmd and state != "Z" and pid != os.getpid() and not owned(pid)]


#: the key kinds of one publication (``skyrec.publish.keys``): ``{p}:<kind>:<variant>:<pub>[:<id>]``
_PUBLICATION_KINDS = frozenset({"rec", "sim", "fallback", "items", "users", "also"})


def redis_leftovers(client: Any, key_prefix: str) -> list[Violation]:
    """``redis_leftovers``: collect what nobody finished (grace 0), then every publication key must belong to a
    served publication, and every history key to a namespace a served publication owns."""
    from skyrec.publish import removal
    from skyrec.publish.keys import Keys, decode_object

    keys = Keys(key_prefix)
    # a remover or collector killed midway holds its lock until its TTL runs out: wait that out, as the next
    # cleanup would, then everything nobody finished is collected
    markers = [*client.scan_iter(match=f"{key_prefix}:rmlock:*"), *client.scan_iter(match=f"{key_prefix}:histgc:*")]
    wait_ms = max([int(client.pttl(m)) for m in markers] or [0])
    time.sleep(min(wait_ms, removal.REMOVE_TTL_MS) / 1000.0 + (0.1 if wait_ms > 0 else 0.0))
    removal.collect_abandoned(client, keys, 0.0, scan=True)
    served: set[tuple[str, str]] = set()
    for variant in removal.variants(client, keys):
        pointers = [client.get(keys.current(variant)), *client.lrange(keys.history(variant), 0, -1)]
        served |= {(variant, p["publication"]) for p in map(decode_object, pointers) if p and "publication" in p}
    owned: dict[str, set[str]] = {}
    out: list[Violation] = []
    counts: dict[str, int] = {}
    for raw in client.scan_iter(match=f"{key_prefix}:*", count=5000):
        key = raw.decode()
        parts = key[len(key_prefix) + 1:].split(":")
        kind = parts[0]
        if kind in _PUBLICATION_KINDS and len(parts) >= 3 and (parts[1], parts[2]) not in served:
            what = f"{parts[1]}/{parts[2]}"
            counts[what] = counts.get(what, 0) + 1
        elif kind == "hist" and len(parts) >= 3 and Keys.is_shared_namespace(parts[1]):
            if parts[1] not in owned:
                owners = {m.decode() for m in client.smembers(keys.hist_refs(parts[1]))}
                owned[parts[1]] = {o for o in owners if tuple(o.split("/", 1)) not in served}
                if not owners:
                    out.append(Violation("redis_leftovers", f"history namespace {parts[1]} has keys and no owner"))
            if owned[parts[1]]:
                counts[f"plays of {parts[1]} owned by {sorted(owned[parts[1]])}"] = 1
    out += [Violation("redis_leftovers", f"{n} key(s) of {what}, which is not served, left after the collection")
            for what, n in sorted(counts.items())]
    return out
