"""Removing a publication from the serving Redis, as a protocol: nothing removed is ever served, re-used half
gone, or left behind for good.

Removing a publication is many commands (SCAN + UNLINK over its keys), and three things may meet it midway: a
retry of its own load (publication ids are stable across attempts, so the retry writes the very keys being
removed), a rollback to it, and another remover. A remover may also die midway. The registry
(``{p}:pubs:<variant>``) and two more keys (``skyrec.publish.keys``) make each of these safe:

- **register** (before a load): one script adds the publication to the registry, scored by this attempt's
  start, and its variant to ``{p}:variants``, unless the publication is *doomed* (being removed): then the
  loader waits until the removal ends and loads every key again.
- **claim** (before a removal): one script refuses the publication the variant's pointer names, and one
  registered after ``max_score`` (a load started since the remover looked), then marks it doomed and takes
  the removal lock (a token with a TTL). From then on no switch or rollback may point at it: both check, in
  the transaction that moves the pointer, that the publication is registered and not doomed.
- **remove**: the keys go in batches, each one script that first checks the lock is still this remover's and
  refreshes its TTL, so a remover that stalled past its TTL stops before it removes keys another wrote; the
  shared histories are left (``histories.detach``), and a last script takes the publication out of the
  registry and the doomed set.
- **resume**: a doomed publication whose lock has run out (its remover died) is taken over by the next
  cleanup.

On top of it, loads nobody will finish: a publication registered more than the grace ago (``storage.
gc_grace_hours``, longer than any job's deadline) that was never served, or was rolled back away from, is
*abandoned* and removed by every publication's cleanup, whichever rail it belongs to (``collect_abandoned``);
a rail taken out of the configuration is removed whole by ``skyrec retire`` (``retire``), never silently.
"""

from __future__ import annotations

import time
import uuid
from typing import Any

from skyrec.publish import histories
from skyrec.publish.keys import Keys, decode_object

#: how long a removal may go without a batch before another remover may take it over (milliseconds)
REMOVE_TTL_MS = 120_000
#: a score no registration reaches (Lua's ``tonumber`` reads no "inf")
NO_LIMIT = 1e300

_REGISTER = """
if redis.call('HEXISTS', KEYS[1], ARGV[1]) == 1 then return 0 end
redis.call('ZADD', KEYS[2], ARGV[2], ARGV[1])
redis.call('SADD', KEYS[3], ARGV[3])
return 1
"""

# KEYS: pointer, registry, doomed, lock; ARGV: pub, token, ttl, max_score, now
_CLAIM = """
local cur = redis.call('GET', KEYS[1])
if cur then
  local ok, p = pcall(cjson.decode, cur)
  if ok and type(p) == 'table' and p['publication'] == ARGV[1] then return 0 end
end
if redis.call('HEXISTS', KEYS[3], ARGV[1]) == 0 then
  local score = redis.call('ZSCORE', KEYS[2], ARGV[1])
  if not score or tonumber(score) > tonumber(ARGV[4]) then return 0 end
  if not redis.call('SET', KEYS[4], ARGV[2], 'NX', 'PX', ARGV[3]) then return 0 end
  redis.call('HSET', KEYS[3], ARGV[1], ARGV[5])
  return 1
end
if not redis.call('SET', KEYS[4], ARGV[2], 'NX', 'PX', ARGV[3]) then return 0 end
return 1
"""

# the same claim when Redis is full: its two small markers may be written above maxmemory (Redis 7's script
# flags; the removal then frees the memory), where the plain script's writes are refused with -OOM
_CLAIM_WHEN_FULL = "#!lua flags=allow-oom\n" + _CLAIM

# KEYS: lock, registry, doomed; ARGV: token, pub
_FINISH = """
if redis.call('GET', KEYS[1]) ~= ARGV[1] then return 0 end
redis.call('ZREM', KEYS[2], ARGV[2])
redis.call('HDEL', KEYS[3], ARGV[2])
redis.call('DEL', KEYS[1])
return 1
"""


class PublicationBusy(RuntimeError):
    """The publication is being removed and the removal did not end in time (retryable)."""


def _text(raw: Any) -> str:
    return raw.decode() if isinstance(raw, bytes) else str(raw)


def register(client: Any, keys: Keys, variant: str, pub: str, *, wait_seconds: float = 300.0,
             poll: float = 0.2) -> None:
    """Register ``pub`` before its keys are loaded; waits while it is being removed (at most ``wait_seconds``,
    then PublicationBusy)."""
    deadline = time.monotonic() + wait_seconds
    while True:
        done = client.eval(_REGISTER, 3, keys.doomed(variant), keys.publications(variant), keys.variants(),
                           pub, time.time(), variant)
        if int(done) == 1:
            return
        if time.monotonic() >= deadline:
            raise PublicationBusy(f"publication {variant}/{pub} is still being removed after {wait_seconds:.0f}s")
        time.sleep(poll)


def servable(client: Any, keys: Keys, variant: str, pub: str, *, registered: bool = True) -> bool:
    """Not being removed and (``registered``) in the registry: what a switch may point at. A rollback asks
    only the first (its publication was registered when it was loaded, and a finished removal leaves it not
    present). Call it inside the transaction that moves the pointer, with the registry and doomed set watched."""
    if client.hexists(keys.doomed(variant), pub):
        return False
    return not registered or client.zscore(keys.publications(variant), pub) is not None


def remove(client: Any, keys: Keys, variant: str, pub: str, *, max_score: float = NO_LIMIT,
           batch: int = 5000, when_full: bool = False) -> int | None:
    """Remove every key of ``pub`` (the claim, the batches, the end: see the module doc). Returns the keys
    removed, or None when the claim is refused (served, registered after ``max_score``, unknown, or another
    remover holds it) or another remover took over midway. ``when_full``: Redis refuses writes (it reached
    its ``maxmemory``), so the claim's markers are written by a script flagged to run then (Redis 7; the
    removals that follow free memory). A plain claim refused with ``-OOM`` is made again that way."""
    import redis

    token = uuid.uuid4().hex
    lock = keys.removal_lock(variant, pub)
    args = (4, keys.current(variant), keys.publications(variant), keys.doomed(variant), lock,
            pub, token, REMOVE_TTL_MS, min(max_score, NO_LIMIT), time.time())
    try:
        claimed = client.eval(_CLAIM_WHEN_FULL if when_full else _CLAIM, *args)
    except redis.exceptions.OutOfMemoryError:  # Redis filled up since the caller looked: a removal makes room
        claimed = client.eval(_CLAIM_WHEN_FULL, *args)
    if not int(claimed):
        return None
    patterns = keys.publication_pattern(variant, pub)
    exact = [p for p in patterns if "*" not in p]
    deleted, owned = histories.unlink_owned(client, lock, token, exact, REMOVE_TTL_MS)  # the fallback and items
    if not owned:  # first: the publication stops being "present" at once
        return None
    shared = histories.detach(client, keys, variant, pub, batch=batch)
    deleted += shared["deleted_keys"] if shared else 0
    for pattern in (p for p in patterns if "*" in p):
        cursor = 0
        while True:
            cursor, found = client.scan(cursor=cursor, match=pattern, count=batch)
            done, owned = histories.unlink_owned(client, lock, token, found, REMOVE_TTL_MS)
            if not owned:
                return None
            deleted += done
            if cursor == 0:
                break
    if not int(client.eval(_FINISH, 3, lock, keys.publications(variant), keys.doomed(variant), token, pub)):
        return None
    return deleted


def resume(client: Any, keys: Keys, variant: str, *, batch: int = 5000) -> list[str]:
    """Finish the removals of ``variant`` whose remover died (doomed, no lock). Returns the publications."""
    done = []
    for raw in client.hkeys(keys.doomed(variant)):
        pub = _text(raw)
        if not client.exists(keys.removal_lock(variant, pub)) and remove(client, keys, variant, pub,
                                                                         batch=batch) is not None:
            done.append(pub)
    return done


def variants(client: Any, keys: Keys, *, scan: bool = False) -> list[str]:
    """The variants with a registry in this Redis. ``scan`` also finds registries written before ``{p}:variants``
    existed (one SCAN of the keyspace) and records them."""
    found = {_text(v) for v in client.smembers(keys.variants())}
    if scan:
        head = keys.publications_pattern()[:-1]
        for raw in client.scan_iter(match=keys.publications_pattern(), count=5000):
            name = _text(raw)[len(head):]
            if name not in found:
                client.sadd(keys.variants(), name)
                found.add(name)
    return sorted(found)


def _served(client: Any, keys: Keys, variant: str) -> tuple[str | None, list[str]]:
    cur = decode_object(client.get(keys.current(variant)))
    past = [p.get("publication") for p in (decode_object(r) for r in client.lrange(keys.history(variant), 0, -1)) if p]
    return (cur or {}).get("publication"), [p for p in past if isinstance(p, str)]


def abandoned(client: Any, keys: Keys, variant: str, grace_seconds: float, *,
              now: float | None = None) -> list[str]:
    """Publications of ``variant`` registered more than ``grace_seconds`` ago that are neither served nor in the
    pointer's history (a load nobody finished, or a publication rolled back away from)."""
    cutoff = (time.time() if now is None else now) - grace_seconds
    cur, past = _served(client, keys, variant)
    return [_text(m) for m, s in client.zrange(keys.publications(variant), 0, -1, withscores=True)
            if s <= cutoff and _text(m) != cur and _text(m) not in past]


def collect_abandoned(client: Any, keys: Keys, grace_seconds: float, *, dry_run: bool = False,
                      scan: bool = False, batch: int = 5000) -> list[dict[str, Any]]:
    """Remove the abandoned publications of every rail in this Redis, and finish the removals (and the
    collections of users' plays) whose remover died. Returns one entry per publication removed (or, with
    ``dry_run``, that would be), and one per history namespace collected."""
    out: list[dict[str, Any]] = []
    now = time.time()
    if not dry_run:  # the users' plays whose collection was interrupted
        out += [{"variant": None, "publication": None, "history": ns, "reason": "history collection resumed"}
                for ns in histories.sweep(client, keys, batch=batch)]
    for variant in variants(client, keys, scan=scan):
        if not dry_run:
            out += [{"variant": variant, "publication": p, "reason": "removal resumed"}
                    for p in resume(client, keys, variant, batch=batch)]
        for pub in abandoned(client, keys, variant, grace_seconds, now=now):
            if dry_run:
                out.append({"variant": variant, "publication": pub, "reason": "abandoned"})
                continue
            deleted = remove(client, keys, variant, pub, max_score=now - grace_seconds, batch=batch)
            if deleted is not None:
                out.append({"variant": variant, "publication": pub, "reason": "abandoned", "deleted_keys": deleted})
    return out


def retire(client: Any, keys: Keys, variant: str, grace_seconds: float, *, dry_run: bool = False,
           batch: int = 5000) -> dict[str, Any]:
    """Take ``variant`` out of service and out of this Redis: its pointer and history go in one transaction (the
    API answers 404 for it from then on), then every publication of it, served or not. Registrations younger
    than ``grace_seconds`` that were never served may be loads still running: they are kept and reported
    (``skyrec gc`` removes them once the grace has passed)."""
    cur, past = _served(client, keys, variant)
    cutoff = time.time() - grace_seconds
    registry = [(_text(m), s) for m, s in client.zrange(keys.publications(variant), 0, -1, withscores=True)]
    served = {p for p in [cur, *past] if p}
    doomed = [p for p, s in registry if p in served or s <= cutoff]
    young = [p for p, s in registry if p not in doomed]
    out: dict[str, Any] = {"variant": variant, "pointer": cur, "publications": doomed, "kept_young": young,
                           "deleted_keys": 0}
    if dry_run:
        return out
    with client.pipeline(transaction=True) as pipe:
        pipe.delete(keys.current(variant), keys.history(variant))
        pipe.execute()
    resume(client, keys, variant, batch=batch)
    removed = []
    for pub in doomed:
        deleted = remove(client, keys, variant, pub, batch=batch)
        if deleted is not None:
            removed.append(pub)
            out["deleted_keys"] += deleted
    out["publications"] = removed
    if not client.zcard(keys.publications(variant)) and not client.hlen(keys.doomed(variant)):
        client.srem(keys.variants(), variant)
    return out
