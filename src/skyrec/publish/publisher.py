"""Publication into the serving Redis with no window of missing or mixed data, and rollback.

Strategy ``versioned`` (default): the new publication's keys are namespaced by its id, so loading them
touches nothing the API reads. After the load is proven (every command acknowledged, probe users read
back equal the Parquet, the fallback and items keys present), one MULTI/EXEC (under WATCH) sets the
variant's ``current`` pointer and pushes the previous pointer onto ``history``: readers see the old
publication or the new one, never a mix. Old publications beyond ``keep_versions`` are then removed with
SCAN + UNLINK in batches (non-blocking deletes), by ``skyrec.publish.removal``'s protocol (a retry of the same
publication id, a rollback or another remover can never meet a half-removed publication), and so are the loads
of any rail nobody finished (registered longer than ``abandoned_after`` ago, never served). Memory: old and new
publications coexist during the switch (peak = two publications of the variant).

Strategy ``swapdb``: the next state of the *whole database* is built in a spare db (a copy of every key
of the live db, plus the new publication, with the pointer already switched), then ``SWAPDB`` exchanges
them atomically. Tradeoff: it needs memory for two full databases and a copy of every key (minutes at
millions of keys), and writes made to the live db during the build are lost at the swap, so publishers
must be serialised; in exchange, the live db is never written during the load (no load on the serving
keyspace, and the previous state stays intact in the spare db until the next publication). Prefer
``versioned`` unless one db serves one variant and the load must not touch the live db.

``current`` and ``rollback`` are the core functions the API's admin endpoint calls.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable
from typing import Any

from skyrec.config import ConfigError
from skyrec.publish import histories, removal
from skyrec.publish.keys import Keys, decode_object
from skyrec.publish.resp import RedisLoadError


class PublishError(RuntimeError):
    """Publication refused or failed; the variant's pointer was not switched."""

    retryable = False


class RedisUnavailableError(PublishError):
    """Redis could not be reached (or dropped the connection). Retryable; nothing was switched."""

    retryable = True


class RedisMemoryError(PublishError):
    """The publication does not fit: Redis's ``maxmemory`` leaves less room than the load needs (checked before
    loading, nothing written), or Redis refused writes when full during the load (``-OOM``; the partial load
    was removed at once, so the memory it held is free again). Retryable: a removal elsewhere may make room;
    the message names the figures and what makes room for good."""

    retryable = True


class RedisEvictsKeysError(PublishError, ConfigError):
    """The serving Redis may evict any key when full (``maxmemory-policy allkeys-*``): a served publication
    could lose keys without anyone noticing. A configuration to change, not a failure to retry."""


#: the eviction policies under which Redis may evict any key, a served publication's among them
EVICTING_POLICIES = frozenset({"allkeys-lru", "allkeys-lfu", "allkeys-random"})
#: what a load adds to Redis, from its RESP files: ``LOAD_BYTES_PER_RESP_BYTE`` x their bytes (the allocator's
#: size classes and the strings' headers grow with the values) + ``KEY_OVERHEAD_BYTES`` a key or items-hash
#: field (the dict entry, object header and hash-table slot, less the RESP framing). Measured against the
#: ``used_memory`` delta of real loads (redis-server 7.0, jemalloc 5.3; BENCHMARKS.md "Redis memory: the
#: pre-check's estimate"): 0.95-1.09 of it over 16 shapes (json and packed lists, k 10-200, 5k-150k users,
#: with and without plays); the earlier 1 x bytes + 64 a key was 0.85-0.99 of it, low everywhere.
LOAD_BYTES_PER_RESP_BYTE = 1.17
KEY_OVERHEAD_BYTES = 50


def load_bytes(resp_bytes: int, keys: int) -> int:
    """About what loading ``resp_bytes`` of RESP files holding ``keys`` keys and items-hash fields adds to Redis."""
    return int(LOAD_BYTES_PER_RESP_BYTE * resp_bytes + KEY_OVERHEAD_BYTES * keys)


def evicting_problem(policy: str) -> str | None:
    """What is wrong with a ``maxmemory-policy`` for a serving Redis (None: nothing)."""
    if policy not in EVICTING_POLICIES:
        return None
    return (f"the serving Redis evicts any key when full (maxmemory-policy {policy}): a served publication could "
            "lose keys; set maxmemory-policy noeviction (or a volatile-* policy) and size maxmemory for "
            "publish.keep_versions + 1 publications of every rail (skyrec plan)")


def memory_facts(client: Any) -> dict[str, Any]:
    """The serving Redis's memory as a publication sees it (``INFO memory``): used, maxmemory, its policy, the
    dataset's bytes; ``problem`` names a policy that may evict a served publication's keys. ``checked`` is
    False where ``INFO memory`` is not allowed, as on some managed services."""
    import redis

    try:
        info = client.info("memory")
    except redis.exceptions.ResponseError as exc:
        return {"checked": False, "reason": f"INFO memory refused: {exc}"}
    policy = str(info.get("maxmemory_policy", "noeviction"))
    return {"checked": True, "used_memory": int(info.get("used_memory", 0)),
            "maxmemory": int(info.get("maxmemory", 0) or 0), "maxmemory_policy": policy,
            "dataset_bytes": int(info.get("used_memory_dataset", 0)), "problem": evicting_problem(policy)}


def check_memory(client: Any, need_bytes: int | None, *, copy_of_live: bool = False) -> dict[str, Any]:
    """Before a load: refuse a Redis that may evict any key (RedisEvictsKeysError), and a load of about
    ``need_bytes`` (with ``copy_of_live``, plus a copy of the live dataset: swapdb's spare db) that its
    ``maxmemory`` has no room for (RedisMemoryError; None: the policy only). Returns ``memory_facts`` and what
    was needed."""
    facts = memory_facts(client)
    if not facts["checked"]:
        return facts
    if facts["problem"]:
        raise RedisEvictsKeysError(facts["problem"])
    if need_bytes is not None and copy_of_live:
        need_bytes += facts["dataset_bytes"]
    facts["needed_bytes"] = need_bytes
    used, limit = facts["used_memory"], facts["maxmemory"]
    if need_bytes is not None and limit and used + need_bytes > limit:
        raise RedisMemoryError(
            f"the publication needs about {need_bytes / 1e6:,.1f} MB and Redis holds {used / 1e6:,.1f} MB of its "
            f"maxmemory {limit / 1e6:,.1f} MB: nothing was loaded (retryable). Make room for good: raise maxmemory, "
            "lower publish.keep_versions, run `skyrec gc` for loads nobody finished, `skyrec retire` rails no "
            "longer configured")
    return facts


def _load_out_of_memory(client: Any, keys: Keys, variant: str, pub: str, exc: Exception,
                        step: str = "the load") -> RedisMemoryError:
    """Redis refused writes when full during ``step`` (the load, or a step between the registration and the
    switch): remove what was loaded (it is this attempt's registration and never served), so the memory it
    holds is free again, and say so."""
    import redis

    try:
        removed = removal.remove(client, keys, variant, pub, when_full=True)
        gone = (f"the partial load was removed ({removed:,} keys)" if removed is not None else
                "the partial load stays for the next cleanup (another remover holds it, or it is served)")
    except redis.exceptions.RedisError as refused:  # e.g. a Redis before 7 (no script flags)
        gone = f"the partial load stays for the next cleanup (its removal failed: {refused})"
    return RedisMemoryError(f"{pub}: Redis refused writes when full (maxmemory reached) during {step}: {exc}; "
                            f"{gone}; nothing was switched (retryable)")


class RemovedConcurrentlyError(PublishError):
    """The publication was claimed for removal while it loaded (its registration outlived the grace: a load
    nobody was expected to finish). Retryable: the next attempt registers it again and loads every key."""

    retryable = True

def _load_and_prove(client: Any, keys: Keys, variant: str, pub: str, load: Callable[[], int],
                    expected_commands: int, verify: Callable[[Any, str], None], history: str | None = None,
                    history_wait: float = 300.0) -> int:
    """Register the publication (and attach it to its shared history namespace, ``history``), load its keys and
    prove them (every command acknowledged, the shared keys present, probe users equal to the Parquet) before
    anything may point at it. Returns the commands loaded."""
    import redis

    try:  # scored by this attempt's start; waits while an earlier removal of the same id finishes
        removal.register(client, keys, variant, pub, wait_seconds=history_wait)
    except removal.PublicationBusy as exc:
        raise RedisUnavailableError(f"{pub}: {exc} (retryable; nothing was switched)") from exc
    except redis.exceptions.OutOfMemoryError as exc:  # the script's first write is refused: nothing written
        raise RedisMemoryError(f"{pub}: Redis refused the registration when full (maxmemory reached): {exc}; "
                               "nothing was written or switched (retryable)") from exc
    if history is not None and Keys.is_shared_namespace(history):
        try:
            histories.attach(client, keys, history, variant, pub, wait_seconds=history_wait)
        except histories.HistoryBusy as exc:
            raise RedisUnavailableError(f"{pub}: {exc} (retryable; nothing was switched)") from exc
        except redis.exceptions.OutOfMemoryError as exc:  # registered, nothing loaded: remove the registration
            raise _load_out_of_memory(client, keys, variant, pub, exc, step="attaching the users' plays") from exc
    try:
        loaded = load()
    except RedisLoadError as exc:
        if exc.out_of_memory:
            raise _load_out_of_memory(client, keys, variant, pub, exc) from exc
        raise
    if loaded != expected_commands:
        raise PublishError(f"{pub}: {loaded} commands acknowledged, expected {expected_commands}")
    if not publication_present(client, keys, variant, pub):
        raise PublishError(f"{pub}: fallback or items key missing after the load")
    verify(client, pub)
    return loaded

def _redis_errors() -> tuple[type[BaseException], ...]:
    import redis

    return (redis.exceptions.ConnectionError, redis.exceptions.TimeoutError)


def current(redis_client: Any, keys: Keys, variant: str) -> dict[str, Any] | None:
    """The variant's current pointer (``None`` when nothing is published)."""
    return decode_object(redis_client.get(keys.current(variant)))


def history(redis_client: Any, keys: Keys, variant: str) -> list[dict[str, Any]]:
    return [p for p in (decode_object(r) for r in redis_client.lrange(keys.history(variant), 0, -1)) if p]


def publication_present(redis_client: Any, keys: Keys, variant: str, pub: str) -> bool:
    """Every publication has a fallback key (possibly ``[]``) and an items hash; both present = loaded."""
    return int(redis_client.exists(keys.fallback(variant, pub), keys.items(variant, pub))) == 2


def _switch(redis_client: Any, keys: Keys, variant: str, new: dict[str, Any], keep_versions: int,
            *, expect_current: str | None | object = ...) -> dict[str, Any] | None:
    """Atomically set ``current`` to ``new`` and push the previous pointer onto ``history``."""
    import redis

    cur_key, hist_key = keys.current(variant), keys.history(variant)
    for _ in range(20):
        with redis_client.pipeline(transaction=True) as pipe:
            try:
                pipe.watch(cur_key, keys.publications(variant), keys.doomed(variant))
                prev_raw = pipe.get(cur_key)
                prev = decode_object(prev_raw)
                if expect_current is not ... and (prev or {}).get("publication") != expect_current:
                    raise PublishError(f"variant {variant!r}: current publication changed concurrently "
                                       f"(now {(prev or {}).get('publication')!r})")
                if not removal.servable(pipe, keys, variant, new["publication"]):
                    raise RemovedConcurrentlyError(f"{new['publication']}: removed while it loaded (abandoned "
                                                   "past the grace); retryable, nothing was switched")
                pipe.multi()
                pipe.set(cur_key, json.dumps(new, sort_keys=True))
                if prev_raw is not None:
                    pipe.lpush(hist_key, prev_raw)
                    pipe.ltrim(hist_key, 0, max(0, keep_versions * 4))
                pipe.execute()
                return prev
            except redis.WatchError:
                time.sleep(0.01)
    raise PublishError(f"variant {variant!r}: could not switch the pointer (concurrent switches)")


def rollback(redis_client: Any, keys: Keys, variant: str) -> dict[str, Any]:
    """Switch ``variant`` back to the previous publication (the head of ``history``), atomically.

    Raises LookupError when there is nothing to roll back to (no history, or its keys were removed).
    """
    import redis

    cur_key, hist_key = keys.current(variant), keys.history(variant)
    for _ in range(20):
        with redis_client.pipeline(transaction=True) as pipe:
            try:
                pipe.watch(cur_key, hist_key, keys.doomed(variant))
                cur = decode_object(pipe.get(cur_key))
                prev_raw = pipe.lindex(hist_key, 0)
                prev = decode_object(prev_raw)
                if prev is None or not isinstance(prev.get("publication"), str):
                    raise LookupError(f"variant {variant!r}: no previous publication to roll back to")
                if not (removal.servable(pipe, keys, variant, prev["publication"], registered=False)
                        and publication_present(pipe, keys, variant, prev["publication"])):
                    raise LookupError(f"variant {variant!r}: previous publication {prev['publication']!r} "
                                      "is no longer loaded")
                pipe.multi()
                pipe.set(cur_key, prev_raw)
                pipe.lpop(hist_key)
                pipe.execute()
                return {"variant": variant, "from": (cur or {}).get("publication"), "to": prev["publication"],
                        "pointer": prev}
            except redis.WatchError:
                time.sleep(0.01)
    raise RuntimeError(f"variant {variant!r}: rollback kept racing with concurrent switches")


def cleanup(redis_client: Any, keys: Keys, variant: str, keep_versions: int, *,
            abandoned_after: float | None = None) -> dict[str, Any]:
    """Remove publications of ``variant`` beyond the newest ``keep_versions`` served ones (current first,
    then history). Publications registered after the current one (a concurrent load) are kept. Each removal is
    ``removal.remove``'s protocol; removals whose remover died are finished first. With ``abandoned_after``
    (seconds), the publications of every rail abandoned longer than that go too (``removal.collect_abandoned``)."""
    cur = current(redis_client, keys, variant)
    if cur is None:
        return {"removed": [], "deleted_keys": 0}
    resumed = removal.resume(redis_client, keys, variant)
    kept = [cur["publication"]]
    for p in history(redis_client, keys, variant):
        if len(kept) >= keep_versions:
            break
        if p["publication"] not in kept:
            kept.append(p["publication"])
    registry = {m.decode() if isinstance(m, bytes) else m: s
                for m, s in redis_client.zrange(keys.publications(variant), 0, -1, withscores=True)}
    cur_score = registry.get(cur["publication"], float("inf"))
    removed, deleted = [], 0
    for pub, score in sorted(registry.items(), key=lambda kv: kv[1]):
        if pub in kept or score > cur_score:
            continue
        # the claim refuses it if it was served or registered again (a retry) since we looked
        gone = removal.remove(redis_client, keys, variant, pub, max_score=cur_score)
        if gone is not None:
            deleted += gone
            removed.append(pub)
    # history entries whose publication is gone cannot be rolled back to: drop them
    hist = redis_client.lrange(keys.history(variant), 0, -1)
    for raw in hist:
        entry = decode_object(raw)
        if entry is None or entry.get("publication") in removed:
            redis_client.lrem(keys.history(variant), 0, raw)
    out: dict[str, Any] = {"removed": removed, "deleted_keys": deleted, "kept": kept}
    if resumed:
        out["resumed"] = resumed
    if abandoned_after is not None:
        gone_elsewhere = removal.collect_abandoned(redis_client, keys, abandoned_after)
        if gone_elsewhere:
            out["abandoned"] = gone_elsewhere
    swept = histories.sweep(redis_client, keys)  # shared histories whose collection was interrupted
    if swept:
        out["swept_histories"] = swept
    return out


def _cleanup_served(client: Any, keys: Keys, variant: str, pub: str, keep_versions: int,
                    abandoned_after: float | None) -> dict[str, Any]:
    """``cleanup`` once ``pub`` is served. Its removals make room even in a full Redis (their claims may write
    above ``maxmemory``); another write it refuses then fails the attempt, retryably: the retry finds the
    publication current and cleans up again."""
    import redis

    try:
        return cleanup(client, keys, variant, keep_versions, abandoned_after=abandoned_after)
    except redis.exceptions.OutOfMemoryError as exc:
        raise RedisMemoryError(f"{pub}: published and served, but Redis refused a write of its cleanup when full "
                               f"(maxmemory reached): {exc}; the retry finds it current and cleans up again "
                               "(retryable)") from exc


def publish_versioned(redis_client: Any, keys: Keys, variant: str, pointer: dict[str, Any], *,
                      load: Callable[[], int], expected_commands: int, verify: Callable[[Any, str], None],
                      keep_versions: int, history_wait: float = 300.0,
                      abandoned_after: float | None = None, need_bytes: int | None = None) -> dict[str, Any]:
    """Load the publication named in ``pointer`` (``load()`` returns the commands acknowledged), prove it,
    switch, clean up. ``need_bytes``: about what the load adds to Redis, checked against its ``maxmemory``
    first (``check_memory``). Raises RedisUnavailableError or RedisMemoryError (retryable), or PublishError;
    never half-switches."""
    import redis

    pub = pointer["publication"]
    errors = _redis_errors()
    try:
        redis_client.ping()
        cur = current(redis_client, keys, variant)
        if cur is not None and cur.get("publication") == pub:
            verify(redis_client, pub)
            return {"publication": pub, "note": "already current", "previous": None, "loaded_commands": 0,
                    "cleanup": _cleanup_served(redis_client, keys, variant, pub, keep_versions, abandoned_after)}
        memory = check_memory(redis_client, need_bytes)
        loaded = _load_and_prove(redis_client, keys, variant, pub, load, expected_commands, verify,
                                 pointer.get("activity"), history_wait)
        try:
            previous = _switch(redis_client, keys, variant, pointer, keep_versions,
                               expect_current=(cur or {}).get("publication"))
        except (redis.exceptions.OutOfMemoryError, redis.exceptions.ExecAbortError) as exc:
            raise _load_out_of_memory(redis_client, keys, variant, pub, exc, step="the switch") from exc
        now = current(redis_client, keys, variant)
        if (now or {}).get("publication") != pub:
            raise PublishError(f"{pub}: pointer reads {(now or {}).get('publication')!r} after the switch")
        verify(redis_client, pub)
        removed = _cleanup_served(redis_client, keys, variant, pub, keep_versions, abandoned_after)
    except errors as exc:
        raise RedisUnavailableError(f"Redis unavailable while publishing {variant!r}/{pub}: {exc} "
                                    "(retryable; the pointer was not switched unless the switch completed)") from exc
    return {"publication": pub, "previous": (previous or {}).get("publication"), "loaded_commands": loaded,
            "cleanup": removed, "memory": memory}


def publish_swapdb(redis_client: Any, keys: Keys, variant: str, pointer: dict[str, Any], *,
                   load: Callable[[int], int], expected_commands: int, verify: Callable[[Any, str], None],
                   keep_versions: int, spare_db: int, history_wait: float = 300.0,
                   abandoned_after: float | None = None, need_bytes: int | None = None) -> dict[str, Any]:
    """Build the next state in ``spare_db`` (copy of the live db + new publication + switched pointer),
    then SWAPDB. See the module doc for the tradeoff. ``need_bytes`` as for ``publish_versioned``; the copy
    of the live db counts too."""
    import redis

    pub = pointer["publication"]
    kwargs = dict(redis_client.connection_pool.connection_kwargs)
    live_db = int(kwargs.get("db", 0) or 0)
    if spare_db == live_db:
        raise PublishError(f"publish.swapdb_spare_db ({spare_db}) must differ from the serving db ({live_db})")
    try:
        redis_client.ping()
        spare = redis.Redis(**{k: kwargs[k] for k in ("host", "port", "username", "password", "socket_timeout",
                                                      "socket_connect_timeout", "unix_socket_path") if k in kwargs},
                            db=spare_db)
        try:
            spare.flushdb()
            memory = check_memory(redis_client, need_bytes, copy_of_live=True)  # the spare db: a copy of every key
            cursor, copied = 0, 0
            while True:
                cursor, found = redis_client.scan(cursor=cursor, count=5000)
                if found:
                    pipe = redis_client.pipeline(transaction=False)
                    for key in found:
                        pipe.copy(key, key, destination_db=spare_db, replace=True)
                    copied += sum(bool(x) for x in pipe.execute())
                if cursor == 0:
                    break
            cur = current(spare, keys, variant)
            loaded = _load_and_prove(spare, keys, variant, pub, lambda: load(spare_db), expected_commands, verify,
                                     pointer.get("activity"), history_wait)
            previous = _switch(spare, keys, variant, pointer, keep_versions,
                               expect_current=(cur or {}).get("publication"))
            removed = cleanup(spare, keys, variant, keep_versions, abandoned_after=abandoned_after)
            redis_client.swapdb(live_db, spare_db)
        except (RedisMemoryError, redis.exceptions.OutOfMemoryError, redis.exceptions.ExecAbortError) as exc:
            # Redis filled up while the spare db was built: nothing is live there; free it all at once
            spare.flushdb(asynchronous=True)
            if isinstance(exc, RedisMemoryError):
                raise
            raise RedisMemoryError(f"{pub}: Redis refused a write when full (maxmemory reached) while the spare db "
                                   f"{spare_db} was built: {exc}; the spare db was emptied and the live db was not "
                                   "swapped (retryable)") from exc
        finally:
            spare.close()
        if (current(redis_client, keys, variant) or {}).get("publication") != pub:
            raise PublishError(f"{pub}: pointer not switched after SWAPDB")
        verify(redis_client, pub)
    except _redis_errors() as exc:
        raise RedisUnavailableError(f"Redis unavailable while publishing {variant!r}/{pub}: {exc} "
                                    "(retryable; the live db was not swapped)") from exc
    return {"publication": pub, "previous": (previous or {}).get("publication"), "loaded_commands": loaded,
            "copied_keys": copied, "cleanup": removed, "strategy": "swapdb", "memory": memory}
