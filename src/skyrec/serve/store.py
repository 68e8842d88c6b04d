"""Reading publications out of Redis for the API: consistent, cached where that is safe, honest when Redis is down.

Why it looks like this:

* **One publication per answer.** A variant's ``current`` pointer names a publication; every key read for an
  answer (rec list, fallback list, item metadata) belongs to *that* publication. The pointer is cached for
  ``serve.pointer_cache_seconds`` (one GET per variant per second instead of one per request).
* **Publications are immutable**, so their fallback list, item metadata and item table can be cached in
  process without invalidation (bounded LRU). A warm request costs one Redis round trip (GET of the user's
  rec key).
* **A publication's whole item hash is loaded once when it fits** ``serve.item_cache_size``: in the
  background (HSCAN in chunks, so the event loop never stalls on a large hash), while requests read the
  metadata they miss as before (HMGET). Once every item is in, the entry is *complete*: a request no longer
  checks its items against the cache, and an item absent from it is absent from the publication. A larger
  catalogue keeps the per-item cache, bounded by the same size.
* **Both value encodings** (``skyrec.publish.codec``): every rec value says what it is (a packed value starts
  with its tag byte, a JSON one with ``[``); a packed publication's item table is read once with its fallback
  list. So publications in either encoding can be served side by side during a rolling change.
* **Redis down** never gives a 500 nor mixed data: the last pointer seen is kept, and a user's last answer
  (same publication) is served again, flagged ``stale``; anything not in the cache is a 503.
* While Redis is up, every answer reads the user's key: Redis stays the source of truth (a user's key
  deleted in place, e.g. for an erasure request, stops being served at once), so the per-user cache is only
  the outage fallback.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import json
import logging
import random
import time
from collections import ChainMap, OrderedDict
from collections.abc import Awaitable, Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, TypeVar

import redis.asyncio as aioredis
from redis.exceptions import RedisError

from skyrec.publish.codec import ITEM_TABLE_FIELD, CodecError, ItemTable, decode_packed, is_packed, parse_table
from skyrec.publish.keys import Keys, decode_object, parse_also, parse_history
from skyrec.serve.fastget import PipelinedGet

log = logging.getLogger("skyrec.serve")
T = TypeVar("T")

try:  # fast typed JSON decoding of the hot path's lists (msgspec ships with the locked environment)
    import msgspec

    _SCORED: Any = msgspec.json.Decoder(list[tuple[str, float]])
except ImportError:  # pragma: no cover - depends on the environment
    _SCORED = None


class Unavailable(RuntimeError):
    """The answer cannot be given right now (Redis unreachable and nothing cached, or nothing published)."""

    def __init__(self, message: str, *, code: str = "unavailable") -> None:
        super().__init__(message)
        self.code = code


class LRU:
    """A small bounded mapping; least recently used entries go first. Single event loop: no locking needed."""

    def __init__(self, size: int) -> None:
        self.size = size
        self._data: OrderedDict[Any, Any] = OrderedDict()

    def get(self, key: Any, default: Any = None) -> Any:
        try:
            value = self._data[key]
        except KeyError:
            return default
        self._data.move_to_end(key)
        return value

    def put(self, key: Any, value: Any) -> None:
        if self.size <= 0:
            return
        self._data[key] = value
        self._data.move_to_end(key)
        while len(self._data) > self.size:
            self._data.popitem(last=False)

    def pop(self, key: Any) -> Any:
        return self._data.pop(key, None)

    def clear(self) -> None:
        self._data.clear()

    def __len__(self) -> int:
        return len(self._data)


@dataclass(frozen=True)
class ItemMeta:
    title: str | None
    brand: str | None
    genres: tuple[str, ...]
    available_until: float | None  # epoch seconds; None = no end
    known: bool = True  # False when the publication holds no metadata for the item

    def expired(self, now: float) -> bool:
        return self.available_until is not None and self.available_until <= now


UNKNOWN_ITEM = ItemMeta(title=None, brand=None, genres=(), available_until=None, known=False)


def parse_time(value: Any) -> float | None:
    """ISO-8601 (``Z`` or offset; naive means UTC) to epoch seconds; ``None``/empty stays None."""
    if value in (None, ""):
        return None
    if isinstance(value, int | float):
        return float(value)
    parsed = dt.datetime.fromisoformat(str(value).replace("Z", "+00:00"))
    if parsed.tzinfo is None:
        parsed = parsed.replace(tzinfo=dt.UTC)
    return parsed.timestamp()


def parse_item_meta(raw: bytes | str | None) -> ItemMeta:
    if raw is None:
        return UNKNOWN_ITEM
    try:
        data = json.loads(raw)
        genres = data.get("genres") or ()
        if isinstance(genres, str):
            genres = (genres,)
        return ItemMeta(title=data.get("title"), brand=data.get("brand"), genres=tuple(str(g) for g in genres),
                        available_until=parse_time(data.get("available_until")))
    except (ValueError, TypeError, AttributeError):
        log.warning("unreadable item metadata", extra={"raw": str(raw)[:200]})
        return UNKNOWN_ITEM


def _tolerant_scored(data: Any) -> list[tuple[str, float]]:
    out: list[tuple[str, float]] = []
    for entry in data:
        try:
            out.append((str(entry[0]), float(entry[1])))
        except (TypeError, ValueError, IndexError):
            continue
    return out


def parse_scored(raw: bytes | str | None) -> list[tuple[str, float]] | None:
    """A published ``[["item_id", score], ...]`` list; None when absent. Malformed entries are skipped.

    The well-formed case is decoded and type-checked in one C pass (msgspec, when installed); anything else
    takes the tolerant path that keeps the good entries.
    """
    if raw is None:
        return None
    if _SCORED is not None:
        try:
            return _SCORED.decode(raw)
        except msgspec.MsgspecError:
            pass
    try:
        data = json.loads(raw)
        if not isinstance(data, list):
            raise ValueError("not a list")
    except ValueError:
        log.error("unreadable published list", extra={"raw": str(raw)[:200]})
        return []
    return _tolerant_scored(data)


def parse_rec(raw: bytes | str | None, table: ItemTable | None) -> list[tuple[str, float]] | None:
    """A user's published list in either encoding; None when absent, [] (logged) when undecodable."""
    if raw is None:
        return None
    if is_packed(raw):
        try:
            if table is None:
                raise CodecError("packed value but the publication has no item table")
            return decode_packed(raw, table)
        except CodecError as exc:
            log.error("unreadable published list", extra={"error": str(exc)})
            return []
    return parse_scored(raw)


@dataclass
class Ranked:
    """An assembled answer before slicing: best first, no duplicates, nothing expired."""

    items: list[tuple[str, float, ItemMeta]]
    personalised: int  # how many came from the user's own list
    padded: int  # how many came from the fallback list
    dropped_expired: int


def assemble(personal: list[tuple[str, float]] | None, fallback: list[tuple[str, float]],
             meta: Mapping[str, ItemMeta], now: float, want: int, depth: int | None = None,
             max_per_brand: int | None = None) -> Ranked:
    """The user's list without expired items, padded from the fallback list up to ``want``, no duplicates.

    ``depth`` is the K the publication was precomputed with. A personal list shorter than that is the
    *whole* eligible pool for the user (the precompute takes the exact top-K over every available candidate
    the user has not played, under the rules): any fallback item missing from it was played by the user or
    ruled out, so such a list is never padded. Padding replaces items that expired since the precompute.

    ``max_per_brand`` is the publication's brand cap (the pointer's, null: none): the precompute applied it
    to each list; padding keeps it over the answer as a whole (a fallback item whose brand already has that
    many items in the answer is passed over).

    Stops as soon as ``want`` items are found (expired items further down are not counted as dropped).
    Pure function (no Redis) so the ranking rules are tested on their own.
    """
    out: list[tuple[str, float, ItemMeta]] = []
    seen: set[str] = set()
    dropped = 0
    get = meta.get
    per_brand: dict[str, int] = {}

    def take(source: Iterable[tuple[str, float]], capped: bool) -> None:
        nonlocal dropped
        for item_id, score in source:
            if len(out) >= want:
                break  # the rest of the list is not needed for this page
            if item_id in seen:
                continue
            m = get(item_id, UNKNOWN_ITEM)
            if capped and m.brand and per_brand.get(m.brand, 0) >= max_per_brand:  # type: ignore[operator]
                continue
            seen.add(item_id)
            until = m.available_until
            if until is not None and until <= now:
                dropped += 1
                continue
            out.append((item_id, score, m))
            if m.brand:
                per_brand[m.brand] = per_brand.get(m.brand, 0) + 1

    take(personal or (), False)
    personal_count = len(out)
    exhausted = personal is not None and depth is not None and len(personal) < depth
    if personal_count < want and not exhausted:
        take(fallback, max_per_brand is not None)
    return Ranked(items=out, personalised=personal_count, padded=len(out) - personal_count, dropped_expired=dropped)


def _depth(pointer: Mapping[str, Any]) -> int | None:
    k = pointer.get("k")
    return k if isinstance(k, int) and k > 0 else None


def _cap(pointer: Mapping[str, Any]) -> int | None:
    """The publication's brand cap (pointers written before it was recorded: none)."""
    cap = pointer.get("max_per_brand")
    return cap if isinstance(cap, int) and not isinstance(cap, bool) and cap > 0 else None


@dataclass
class PointerEntry:
    fetched: float  # monotonic time of the read
    pointer: dict[str, Any] | None


@dataclass
class Answer:
    pointer: dict[str, Any]
    known_user: bool
    ranked: Ranked
    stale: bool = False


@dataclass
class SimilarAnswer:
    pointer: dict[str, Any]
    seed: ItemMeta
    items: list[tuple[str, float, ItemMeta]] | None  # None: the publication holds no list for the seed


@dataclass
class BecauseAnswer:
    pointer: dict[str, Any]
    seed_id: str | None
    seed: ItemMeta | None
    played_at: str | None
    items: list[tuple[str, float, ItemMeta]]
    note: str | None


class _PubCache:
    """What the API keeps of one (immutable) publication: its fallback list, its item table (packed encoding)
    and the item metadata seen so far; ``complete`` once every item of the publication is in ``meta`` (an item
    not there is not in the publication)."""

    __slots__ = ("fallback", "meta", "max_items", "table", "complete", "loader")

    def __init__(self, fallback: list[tuple[str, float]], max_items: int, table: ItemTable | None = None) -> None:
        self.fallback = fallback
        self.meta: dict[str, ItemMeta] = {}
        self.max_items = max_items
        self.table = table
        self.complete = False
        self.loader: asyncio.Task[None] | None = None  # the background load of the whole item hash

    def remember(self, item_id: str, meta: ItemMeta) -> None:
        if len(self.meta) < self.max_items:  # full: keep what is there (hot items came first), read the rest
            self.meta[item_id] = meta


@dataclass
class Store:
    """Redis reads for one app, with the caches described in the module docstring."""

    redis: aioredis.Redis
    keys: Keys
    variants: tuple[str, ...]
    fast: PipelinedGet | None = None  # the hot path's GETs (pointer, rec list); redis-py for the rest
    pointer_ttl: float = 1.0
    item_cache_size: int = 200_000
    last_good_size: int = 50_000
    _pointers: dict[str, PointerEntry] = field(default_factory=dict)
    _last_pointer: dict[str, dict[str, Any]] = field(default_factory=dict)
    _pubs: LRU = field(default_factory=lambda: LRU(32))
    _last_good: LRU = field(init=False)
    _opening: dict[tuple[str, str], asyncio.Future[_PubCache | None]] = field(default_factory=dict)

    def __post_init__(self) -> None:
        self._last_good = LRU(self.last_good_size)
        self._get = self.fast.get if self.fast is not None else self.redis.get

    # ---- pointers ------------------------------------------------------------------------------
    async def pointer(self, variant: str, *, fresh: bool = False) -> tuple[dict[str, Any] | None, bool]:
        """The variant's current pointer and whether it is stale (Redis unreachable, last one seen reused).

        Raises Unavailable only when Redis is unreachable and no pointer was ever seen.
        """
        entry = self._pointers.get(variant)
        now = time.monotonic()
        if not fresh and entry is not None and now - entry.fetched < self.pointer_ttl:
            return entry.pointer, False
        last = self._last_pointer.get(variant)
        try:
            raw = await self._hot_get(self.keys.current(variant), cached=last is not None)
        except RedisError as exc:
            if last is not None:
                return last, True
            raise Unavailable(f"Redis unreachable ({type(exc).__name__}) and no publication of variant "
                              f"{variant!r} cached", code="redis_unavailable") from None
        return self._remember(variant, raw, now), False

    async def pointers(self, variants: Sequence[str]) -> dict[str, tuple[dict[str, Any] | None, bool]]:
        """:meth:`pointer` of several variants, the ones not cached read in one round trip (MGET): with Redis
        unreachable, one timeout rather than one per variant. Raises Unavailable when Redis is unreachable and
        some variant's pointer was never seen."""
        now = time.monotonic()
        out: dict[str, tuple[dict[str, Any] | None, bool]] = {}
        due: list[str] = []
        for variant in dict.fromkeys(variants):
            entry = self._pointers.get(variant)
            if entry is not None and now - entry.fetched < self.pointer_ttl:
                out[variant] = (entry.pointer, False)
            else:
                due.append(variant)
        if due:
            try:
                raws = await self.redis.mget([self.keys.current(v) for v in due])
            except RedisError as exc:
                for variant in due:
                    last = self._last_pointer.get(variant)
                    if last is None:
                        raise Unavailable(f"Redis unreachable ({type(exc).__name__}) and no publication of "
                                          f"variant {variant!r} cached", code="redis_unavailable") from None
                    out[variant] = (last, True)
            else:
                for variant, raw in zip(due, raws, strict=True):
                    out[variant] = (self._remember(variant, raw, now), False)
        return {variant: out[variant] for variant in variants}

    def _remember(self, variant: str, raw: bytes | str | None, fetched: float) -> dict[str, Any] | None:
        """Cache a pointer just read (``raw``, None: no pointer) and free what a superseded one held."""
        pointer = self._decode_pointer(variant, raw)
        self._pointers[variant] = PointerEntry(fetched, pointer)
        if pointer is not None:
            previous = self._last_pointer.get(variant)
            if previous is not None and previous["publication"] != pointer["publication"]:
                # Superseded: free its cached metadata (requests still using it hold their own reference).
                gone = self._pubs.pop((variant, previous["publication"]))
                if gone is not None and gone.loader is not None:
                    gone.loader.cancel()
            self._last_pointer[variant] = pointer
        return pointer

    async def _hot_get(self, key: str, *, cached: bool) -> bytes | str | None:
        """GET on the hot path. When the pipelined connection fails and nothing is ``cached`` to answer from
        (the alternative is a 503), the key is read once more on redis-py's pool (another connection), so one
        slow or lost pipelined connection is not taken for Redis being down; with something cached the
        failure goes straight to the caller, which answers from the cache."""
        try:
            return await self._get(key)
        except RedisError:
            if self.fast is None or cached:
                raise
            return await self.redis.get(key)

    def _decode_pointer(self, variant: str, raw: bytes | str | None) -> dict[str, Any] | None:
        if raw is None:
            return None
        try:
            pointer = json.loads(raw)
        except ValueError:
            log.error("unreadable current pointer", extra={"variant": variant})
            return None
        if not isinstance(pointer, dict) or not isinstance(pointer.get("publication"), str):
            log.error("current pointer names no publication", extra={"variant": variant})
            return None
        return pointer

    def cached_pointers(self) -> dict[str, dict[str, Any]]:
        return dict(self._last_pointer)

    def invalidate(self) -> None:
        """Forget pointers (next read goes to Redis). Publication-scoped caches stay valid: they are immutable."""
        self._pointers.clear()

    def clear(self) -> None:
        self._pointers.clear()
        self._last_pointer.clear()
        self._pubs.clear()
        self._last_good.clear()

    async def publication_present(self, variant: str, pub: str) -> bool:
        keys = (self.keys.items(variant, pub), self.keys.fallback(variant, pub))
        if self.fast is not None:  # the hot path asks this for every unknown user: the pipelined connection
            return bool(await self.fast.exists(*keys))
        return bool(await self.redis.exists(*keys))

    # ---- recommendations -----------------------------------------------------------------------
    async def _on_current(self, variant: str, read: Callable[[dict[str, Any], bool], Awaitable[T | None]]) -> T:
        """``read(pointer, stale)``'s answer from the variant's current publication, whatever a switch does to it.

        ``read`` answers from the publication the pointer names, or None when that publication is gone: the
        pointer (cached up to ``pointer_ttl``) still names a publication the publisher removed after switching
        to a newer one (``publish.keep_versions``). Then the pointer is read again from Redis and ``read``
        asked once more, so an answer is never a definite "not there" about a publication that no longer
        exists. Recommendations, "more like this" and "because you played" are read through here.

        A ``read`` tells "gone" from "not in it" with :meth:`publication_present` *after* its other reads:
        removal deletes a publication's fallback and items keys first, so a publication still present then
        had every key while it was being read.
        """
        for attempt in range(2):
            pointer, stale = await self.pointer(variant, fresh=attempt > 0)
            if pointer is None:
                raise Unavailable(f"variant {variant!r} has no published recommendations yet",
                                  code="not_published")
            answer = await read(pointer, stale)
            if answer is not None:
                return answer
        raise Unavailable(f"publication of variant {variant!r} is being replaced; retry", code="switching")

    async def recommend(self, variant: str, user_id: str, want: int) -> Answer:
        """The ranked list (at least ``want`` long when the publication allows) for one user.

        Reads the pointer, then only keys of that publication. If the publication vanished under us (removed
        after a newer one was switched in), re-reads the pointer once (:meth:`_on_current`).
        """

        async def read(pointer: dict[str, Any], stale: bool) -> Answer | None:
            if stale:
                return self._from_last_good(variant, user_id, pointer, want)
            try:
                return await self._recommend_from(variant, pointer["publication"], pointer, user_id, want)
            except RedisError:
                return self._from_last_good(variant, user_id, pointer, want)

        return await self._on_current(variant, read)

    async def _publication(self, variant: str, pub: str) -> _PubCache | None:
        """The publication's cache entry, loading its fallback list, its item table (packed publications) and
        its fallback items' metadata on first use. None when the publication has no keys (gone). Requests that
        arrive while it is being read wait for that one read (a new publication under load is read once, not
        once per concurrent request)."""
        key = (variant, pub)
        cached = self._pubs.get(key)
        if cached is not None:
            return cached
        opening = self._opening.get(key)
        if opening is None:
            opening = self._opening[key] = asyncio.ensure_future(self._open(variant, pub))
            opening.add_done_callback(lambda _: self._opening.pop(key, None))
        return await asyncio.shield(opening)  # (one waiter cancelled does not cancel the read for the others)

    async def _open(self, variant: str, pub: str) -> _PubCache | None:
        pipe = self.redis.pipeline(transaction=False)
        pipe.get(self.keys.fallback(variant, pub))
        pipe.exists(self.keys.items(variant, pub))
        pipe.hget(self.keys.items(variant, pub), ITEM_TABLE_FIELD)
        pipe.hlen(self.keys.items(variant, pub))
        raw_fallback, has_items, raw_table, fields = await pipe.execute()
        if raw_fallback is None and not has_items:
            return None
        table = None
        if raw_table is not None:
            try:
                table = parse_table(raw_table)
            except CodecError as exc:  # its packed lists cannot be read: they are served as empty (fallback)
                log.error("unreadable item table", extra={"variant": variant, "publication": pub, "error": str(exc)})
        entry = _PubCache(parse_scored(raw_fallback) or [], self.item_cache_size, table)
        await self._fill_meta(variant, pub, entry, [i for i, _ in entry.fallback])
        self._pubs.put((variant, pub), entry)
        items = int(fields) - (raw_table is not None)
        if 0 < items <= self.item_cache_size:
            entry.loader = asyncio.get_running_loop().create_task(self._load_items(variant, pub, entry, items))
        return entry

    async def _load_items(self, variant: str, pub: str, entry: _PubCache, expected: int, chunk: int = 500) -> None:
        """Read the publication's whole item hash (HSCAN, ``chunk`` fields a step) into ``entry`` and mark it
        complete once all ``expected`` items are in. A publication removed meanwhile (fewer items found) or a
        Redis error leaves the entry incomplete: requests keep reading the items they miss."""
        name = self.keys.items(variant, pub)
        loaded: dict[str, ItemMeta] = {}
        cursor: Any = 0
        try:
            while True:
                cursor, batch = await self.redis.hscan(name, cursor=cursor, count=chunk)
                assert isinstance(batch, dict)  # (redis-py types HSCAN's reply for no_values=True too)
                for raw_field, raw in batch.items():
                    item_id = raw_field.decode() if isinstance(raw_field, bytes) else raw_field
                    if item_id != ITEM_TABLE_FIELD:
                        loaded[item_id] = parse_item_meta(raw)
                if int(cursor) == 0:
                    break
        except RedisError as exc:
            log.warning("item metadata not preloaded", extra={"variant": variant, "publication": pub,
                                                              "error": type(exc).__name__})
            return
        finally:
            entry.loader = None
        if len(loaded) != expected:
            log.warning("item metadata not preloaded: the publication changed while it was read",
                        extra={"variant": variant, "publication": pub, "expected": expected, "found": len(loaded)})
            return
        entry.meta = loaded  # (requests in flight keep the dict they hold; both describe the same items)
        entry.complete = True

    async def _recommend_from(self, variant: str, pub: str, pointer: dict[str, Any], user_id: str,
                              want: int) -> Answer | None:
        entry = await self._publication(variant, pub)
        if entry is None:
            return None  # the publication is gone: the pointer moved on
        raw_rec = await self._hot_get(self.keys.rec(variant, pub, user_id),
                                      cached=self._last_good.get((variant, user_id)) is not None)
        if raw_rec is None and not await self.publication_present(variant, pub):
            return None  # removed between the two reads
        personal = parse_rec(raw_rec, entry.table)
        # Kept as the raw value (~0.2-1 KB for 50 items; the parsed list would be ~6 KB of Python objects).
        self._last_good.put((variant, user_id), (pub, raw_rec))
        if personal and not entry.complete:
            fetched = await self._fill_meta(variant, pub, entry, [i for i, _ in personal])
        else:
            fetched = {}
        # read after the fill: the background load may have swapped in the whole hash meanwhile
        meta: Mapping[str, ItemMeta] = entry.meta
        if fetched and len(entry.meta) >= entry.max_items:  # cache full: some of these were not kept
            meta = ChainMap(fetched, entry.meta)
        ranked = assemble(personal, entry.fallback, meta, time.time(), want, _depth(pointer), _cap(pointer))
        return Answer(pointer=pointer, known_user=personal is not None, ranked=ranked)

    async def _fill_meta(self, variant: str, pub: str, entry: _PubCache, item_ids: list[str]) -> dict[str, ItemMeta]:
        """Read the metadata of the items not cached yet (one HMGET); returns what was read. Nothing to read
        once the entry is complete (an item not in it is in no field of the publication's hash)."""
        if entry.complete:
            return {}
        meta = entry.meta
        missing = [i for i in item_ids if i not in meta]
        if not missing:
            return {}
        missing = list(dict.fromkeys(missing))
        values = await self.redis.hmget(self.keys.items(variant, pub), missing)
        fetched = {item_id: parse_item_meta(raw) for item_id, raw in zip(missing, values, strict=True)}
        for item_id, m in fetched.items():
            entry.remember(item_id, m)
        return fetched

    def _from_last_good(self, variant: str, user_id: str, pointer: dict[str, Any], want: int) -> Answer:
        """Redis is unreachable: the user's last answer from the same publication, or Unavailable."""
        pub = pointer["publication"]
        last = self._last_good.get((variant, user_id))
        entry = self._pubs.get((variant, pub))
        if last is None or last[0] != pub or entry is None:
            raise Unavailable("Redis unreachable and no recent answer for this user cached", code="redis_unavailable")
        personal = parse_rec(last[1], entry.table)
        ranked = assemble(personal, entry.fallback, entry.meta, time.time(), want, _depth(pointer), _cap(pointer))
        if not entry.complete and any(item_id not in entry.meta for item_id, _, _ in ranked.items):
            raise Unavailable("Redis unreachable and item metadata for this answer not cached",
                              code="redis_unavailable")
        return Answer(pointer=pointer, known_user=personal is not None, ranked=ranked, stale=True)

    async def item_meta(self, variant: str, pub: str, item_ids: list[str]) -> dict[str, ItemMeta]:
        """Metadata for some items of a publication (cached ones from memory, the rest with one HMGET)."""
        entry = await self._publication(variant, pub) or _PubCache([], 0)
        fetched = await self._fill_meta(variant, pub, entry, item_ids)
        return {i: fetched.get(i) or entry.meta.get(i, UNKNOWN_ITEM) for i in item_ids}

    # ---- "more like this" and "because you played X" (sim keys; docs/similar.md) -------------------------
    async def similar(self, variant: str, item_id: str, want: int) -> SimilarAnswer:
        """The seed item's precomputed "more like this" list in the variant's current publication, best
        first, items whose availability ended since the precompute dropped. ``items`` is None when the
        publication holds no list for the item; Unavailable when nothing is published. A publication removed
        under a cached pointer is not taken for one without the list: the pointer is read again
        (:meth:`_on_current`)."""

        async def read(pointer: dict[str, Any], _stale: bool) -> SimilarAnswer | None:
            pub = pointer["publication"]
            entry = await self._publication(variant, pub)
            if entry is None:
                return None  # the publication is gone: the pointer moved on
            raw = await self._get(self.keys.sim(variant, pub, item_id))
            seed = (await self.item_meta(variant, pub, [item_id]))[item_id]
            items = None if raw is None else await self._ranked(variant, pub, parse_rec(raw, entry.table) or [], want)
            missing = raw is None or not seed.known or any(not m.known for _, _, m in items or ())
            if missing and not await self.publication_present(variant, pub):
                return None  # removed while (or before) it was read: not an answer about this publication
            return SimilarAnswer(pointer, seed, items)

        return await self._on_current(variant, read)

    async def because_you_played(self, variant: str, user_id: str, want: int) -> BecauseAnswer:
        """A "because you played X" rail: the user's most recent published play that has a "more like this"
        list with something left to show (what the user played and what is no longer available left out: the
        published recent plays, and the older plays the precompute found in those plays' lists) is the seed;
        the answer is that list. ``seed`` is None when no play
        qualifies (or the publication carries no plays: its pointer names no ``activity``). Keys missing
        because the publication was removed under a cached pointer give no answer about it: the pointer is
        read again (:meth:`_on_current`)."""

        async def read(pointer: dict[str, Any], _stale: bool) -> BecauseAnswer | None:
            pub = pointer["publication"]
            entry = await self._publication(variant, pub)
            if entry is None:
                return None  # the publication is gone: the pointer moved on
            if not isinstance(pointer.get("activity"), str):  # (the pointer says so: nothing read)
                return BecauseAnswer(pointer, None, None, None, [], "the publication carries no play history")
            answer = await self._because_from(variant, pub, pointer, entry, user_id, want)
            # Nearly every answer rests on a key found missing (a play without a list, a user without older
            # plays, no plays at all), each of which a removal would also give: one EXISTS settles it.
            if not await self.publication_present(variant, pub):
                return None
            return answer

        return await self._on_current(variant, read)

    async def _because_from(self, variant: str, pub: str, pointer: dict[str, Any], entry: _PubCache, user_id: str,
                            want: int) -> BecauseAnswer:
        plays, older = await self.history_entry(
            pointer["activity"], user_id,
            also=self.keys.also(variant, pub, user_id) if pointer.get("also_played") else None,
            table=entry.table) or ([], set())
        if not plays:
            return BecauseAnswer(pointer, None, None, None, [], "no recent plays published for this user")
        played = {i for i, _ in plays} | older
        order = list(dict.fromkeys(i for i, _ in plays))  # newest first, each item once
        raws = await self.redis.mget([self.keys.sim(variant, pub, i) for i in order])
        when: dict[str, str] = {}
        for i, ts in plays:
            when.setdefault(i, ts)
        for seed, raw in zip(order, raws, strict=True):
            if raw is None:
                continue
            lst = [(i, v) for i, v in parse_rec(raw, entry.table) or [] if i not in played]
            ranked = await self._ranked(variant, pub, lst, want)
            if ranked:
                seed_meta = (await self.item_meta(variant, pub, [seed]))[seed]
                return BecauseAnswer(pointer, seed, seed_meta, when[seed], ranked, None)
        return BecauseAnswer(pointer, None, None, None, [],
                             f"none of the user's {len(order)} recent plays has similar items left to show")

    async def _ranked(self, variant: str, pub: str, lst: list[tuple[str, float]], want: int
                      ) -> list[tuple[str, float, ItemMeta]]:
        """The list without expired items, at most ``want`` (metadata of its items: one HMGET at most)."""
        meta = await self.item_meta(variant, pub, [i for i, _ in lst])
        return assemble(lst, [], meta, time.time(), want).items

    # ---- other reads ---------------------------------------------------------------------------
    async def item(self, variant: str, pub: str, item_id: str) -> dict[str, Any] | None:
        if item_id == ITEM_TABLE_FIELD:  # the item table shares the hash; it is no item
            return None
        return decode_object(await self.redis.hget(self.keys.items(variant, pub), item_id))

    async def random_user(self, variant: str, pub: str) -> str | None:
        """A user id present in the publication: SRANDMEMBER of its users set, else a bounded SCAN sample."""
        member = await self.redis.srandmember(self.keys.users(variant, pub))
        if member is not None:
            return member.decode() if isinstance(member, bytes) else str(member)
        prefix = self.keys.rec(variant, pub, "")
        found: list[str] = []
        cursor = 0
        for _ in range(50):
            cursor, batch = await self.redis.scan(cursor=cursor, match=self.keys.rec_pattern(variant, pub),
                                                  count=1000)
            found.extend(k.decode()[len(prefix):] if isinstance(k, bytes) else k[len(prefix):] for k in batch)
            if len(found) >= 100 or cursor == 0:
                break
        return random.choice(found) if found else None

    async def history(self, activity: str, user_id: str) -> list[tuple[str, str]] | None:
        """The user's published recent plays, newest first (None: no history key)."""
        entry = await self.history_entry(activity, user_id)
        return None if entry is None else entry[0]

    async def history_entry(self, activity: str, user_id: str, *, also: str | None = None,
                            table: ItemTable | None = None) -> tuple[list[tuple[str, str]], set[str]] | None:
        """The user's history value: recent plays newest first, and the older plays "because you played"
        also leaves out: from the publication's ``also`` key when given (one MGET with the plays, which the
        rails of a snapshot share; packed ids are positions in the publication's item ``table``), else from
        the value itself (publications from before histories were shared;
        ``skyrec.publish.keys.parse_history``). None: no history key."""
        if also is None:
            raw, raw_also = await self.redis.get(self.keys.hist(activity, user_id)), None
        else:
            raw, raw_also = await self.redis.mget([self.keys.hist(activity, user_id), also])
        if raw is None:
            return None
        try:
            plays, older = parse_history(raw)
            if raw_also is not None:
                older |= parse_also(raw_also, table)
        except ValueError:
            log.error("unreadable history", extra={"user_id": user_id})
            return [], set()
        return plays, older

    async def ping(self) -> bool:
        try:
            return bool(await self.redis.ping())
        except RedisError:
            return False
