"""Users' histories shared by the rails of one activity snapshot: who owns them, and when they go.

Every rail published from the same committed activity snapshot (with the same ``publish.history_items``) serves
the same plays, so they are written once, into a namespace of that snapshot (``Keys.shared_hist_namespace``),
not once per rail (the histories were two thirds of Redis at six rails; measured at 200k users and the six
shipped rails, Redis 1,140.5 MB -> 594.2 MB: BENCHMARKS.md "The plays once for every rail"). What depends on
the rail, the older plays its lists hold, stays the publication's own (``also`` keys).

A shared namespace has no single owner, so what would be a plain "delete with the publication" is a protocol
(the keys: ``skyrec.publish.keys``):

- **attach** (before a publication's keys are loaded): one server-side script adds ``<variant>/<pub>`` to the
  namespace's owners (``histrefs``), registers the namespace (``histns``) and notes it against the publication
  (``histof``), unless the namespace is being collected (``histgc`` present): then the publisher waits for the
  collection to end and attaches afterwards, loading every key again.
- **load**: the history files whose checksum is in ``histfiles`` were loaded whole into this namespace since it
  was last collected, so they are skipped (a second rail with the same users loads no history at all); the
  others are loaded and then added to it. A load that fails adds nothing.
- **detach** (when a publication is removed): one script removes the owner and, if it was the last, starts the
  collection in the same step: ``histgc`` set with a token and a TTL, ``histfiles`` cleared (nothing may be
  skipped from now on). Nothing can attach between the last owner leaving and the collection starting.
- **collect**: the keys are removed in batches, each batch one script that checks the token is still the
  collector's and refreshes its TTL, so a collector that stalled past its TTL stops before it can remove keys
  a later publication loaded. Then the marker and the registry entry go.
- **sweep**: a namespace in the registry with no owner and no collector (a collector killed midway, its TTL
  run out) is collected by the next publication's cleanup.

Publications made before histories were shared own a ``<variant>:<pub>`` namespace and are removed with it, as
before (``publisher._delete_publication``).
"""

from __future__ import annotations

import time
import uuid
from typing import Any

from skyrec.publish.keys import Keys

#: how long a collection may go without a batch before another may take over (milliseconds)
COLLECT_TTL_MS = 120_000

_ATTACH = """
if redis.call('EXISTS', KEYS[1]) == 1 then return 0 end
redis.call('SADD', KEYS[2], ARGV[1])
redis.call('ZADD', KEYS[3], 'NX', ARGV[2], ARGV[3])
redis.call('HSET', KEYS[4], ARGV[4], ARGV[3])
return 1
"""

# start collecting a namespace nobody owns (the sweep, and the last detach): clears ``histfiles`` in the same step
_CLAIM = """
if redis.call('SCARD', KEYS[1]) > 0 then return 0 end
if not redis.call('SET', KEYS[2], ARGV[1], 'NX', 'PX', ARGV[2]) then return 0 end
redis.call('DEL', KEYS[3])
return 1
"""

# detach an owner (ARGV[3], its publication ARGV[4] from ``histof`` KEYS[4]); the last one out starts the
# collection (returns 1), atomically: the claim's script, run in the same call
_DETACH = """
redis.call('SREM', KEYS[1], ARGV[3])
redis.call('HDEL', KEYS[4], ARGV[4])
""" + _CLAIM

# one batch of a removal: only while the marker (KEYS[1]) is still this remover's token (ARGV[1]); refreshes its
# TTL (ARGV[2]). Returns the keys removed, -1 when the marker is another's. (``removal`` uses it too.)
UNLINK_IF_OWNER = """
if redis.call('GET', KEYS[1]) ~= ARGV[1] then return -1 end
redis.call('PEXPIRE', KEYS[1], ARGV[2])
if #KEYS > 1 then return redis.call('UNLINK', unpack(KEYS, 2)) end
return 0
"""

_FINISH = """
if redis.call('GET', KEYS[1]) ~= ARGV[1] then return 0 end
if redis.call('SCARD', KEYS[2]) == 0 then
  redis.call('DEL', KEYS[2])
  redis.call('ZREM', KEYS[3], ARGV[2])
end
redis.call('DEL', KEYS[1])
return 1
"""


class HistoryBusy(RuntimeError):
    """The shared history namespace is being collected and did not finish in time (retryable)."""


def owner(variant: str, pub: str) -> str:
    return f"{variant}/{pub}"


def attach(client: Any, keys: Keys, activity: str, variant: str, pub: str, *, wait_seconds: float = 300.0,
           poll: float = 0.2) -> None:
    """Make ``variant``/``pub`` an owner of the shared namespace ``activity`` before its keys are loaded; waits
    while the namespace is being collected (at most ``wait_seconds``, then HistoryBusy)."""
    deadline = time.monotonic() + wait_seconds
    while True:
        done = client.eval(_ATTACH, 4, keys.hist_gc(activity), keys.hist_refs(activity), keys.hist_registry(),
                           keys.hist_of(variant), owner(variant, pub), time.time(), activity, pub)
        if int(done) == 1:
            return
        if time.monotonic() >= deadline:
            raise HistoryBusy(f"history namespace {activity!r} is still being collected after {wait_seconds:.0f}s")
        time.sleep(poll)


def loaded_files(client: Any, keys: Keys, activity: str) -> set[str]:
    """Checksums of the history files loaded whole into ``activity`` since it was last collected."""
    return {m.decode() if isinstance(m, bytes) else str(m) for m in client.smembers(keys.hist_files(activity))}


def mark_loaded(client: Any, keys: Keys, activity: str, checksums: list[str]) -> None:
    if checksums:
        client.sadd(keys.hist_files(activity), *checksums)


def namespace_of(client: Any, keys: Keys, variant: str, pub: str) -> str | None:
    raw = client.hget(keys.hist_of(variant), pub)
    return raw.decode() if isinstance(raw, bytes) else raw


def detach(client: Any, keys: Keys, variant: str, pub: str, *, batch: int = 5000) -> dict[str, Any] | None:
    """``pub`` no longer owns its shared namespace (it is being removed); the last owner out collects it.
    Returns what was done, None when the publication is attached to no shared namespace."""
    activity = namespace_of(client, keys, variant, pub)
    if activity is None:
        return None
    token = uuid.uuid4().hex
    last = int(client.eval(_DETACH, 4, keys.hist_refs(activity), keys.hist_gc(activity), keys.hist_files(activity),
                           keys.hist_of(variant), token, COLLECT_TTL_MS, owner(variant, pub), pub))
    out: dict[str, Any] = {"activity": activity, "collected": False, "deleted_keys": 0}
    if last:
        out.update(collected=True, deleted_keys=collect(client, keys, activity, token, batch=batch))
    return out


def unlink_owned(client: Any, marker: str, token: str, found: list[Any], ttl_ms: int) -> tuple[int, bool]:
    """Remove the keys ``found`` while ``marker`` holds ``token`` (refreshing its TTL). Returns the keys removed
    and whether the marker was still this remover's throughout."""
    deleted = 0
    # a script's keys are unpacked onto Lua's stack (about 8,000 at most): at most 1,000 a call
    for part in [found[i:i + 1000] for i in range(0, len(found), 1000)] or [[]]:
        done = int(client.eval(UNLINK_IF_OWNER, 1 + len(part), marker, *part, token, ttl_ms))
        if done < 0:
            return deleted, False  # another took over: its keys are not ours to remove
        deleted += done
    return deleted, True


def collect(client: Any, keys: Keys, activity: str, token: str, *, batch: int = 5000) -> int:
    """Remove every key of ``activity`` (its marker holds ``token``); stops at once if the marker is no longer
    this collector's. Returns the keys removed."""
    deleted, cursor = 0, 0
    pattern = keys.hist_pattern(activity)
    gc = keys.hist_gc(activity)
    while True:
        cursor, found = client.scan(cursor=cursor, match=pattern, count=batch)
        done, owned = unlink_owned(client, gc, token, found, COLLECT_TTL_MS)
        deleted += done
        if not owned:
            return deleted
        if cursor == 0:
            break
    client.eval(_FINISH, 3, gc, keys.hist_refs(activity), keys.hist_registry(), token, activity)
    return deleted


def sweep(client: Any, keys: Keys, *, batch: int = 5000) -> list[str]:
    """Collect the registered namespaces nobody owns or collects (an interrupted collection). Returns them."""
    swept = []
    for raw in client.zrange(keys.hist_registry(), 0, -1):
        activity = raw.decode() if isinstance(raw, bytes) else str(raw)
        token = uuid.uuid4().hex
        if int(client.eval(_CLAIM, 3, keys.hist_refs(activity), keys.hist_gc(activity), keys.hist_files(activity),
                           token, COLLECT_TTL_MS)):
            collect(client, keys, activity, token, batch=batch)
            swept.append(activity)
    return swept
