"""The store loads a publication's whole item hash once when it fits ``serve.item_cache_size`` (then a request
reads no item metadata from Redis), answers exactly as with the per-item cache, and asks whether a publication
is still there over the pipelined connection."""

from __future__ import annotations

import asyncio
import json
from collections.abc import Awaitable, Callable
from typing import Any

import redis.asyncio as aioredis
from serve_data import PREFIX, catalogue, publish, standard_set

from skyrec.publish.codec import ITEM_TABLE_FIELD
from skyrec.publish.keys import Keys
from skyrec.serve.fastget import PipelinedGet
from skyrec.serve.store import UNKNOWN_ITEM, Store, Unavailable

V = "comedy_featured"
PUB = "v1.20261123T190000"


class Counting:
    """Counts the Redis commands a store sends through redis-py (``hmget``, ``exists``), by name."""

    def __init__(self, client: aioredis.Redis) -> None:
        self.client = client
        self.calls: dict[str, int] = {}
        for name in ("hmget", "exists"):
            setattr(client, name, self._wrap(name, getattr(client, name)))

    def _wrap(self, name: str, fn: Callable[..., Awaitable[Any]]) -> Callable[..., Awaitable[Any]]:
        async def wrapped(*args: Any, **kwargs: Any) -> Any:
            self.calls[name] = self.calls.get(name, 0) + 1
            return await fn(*args, **kwargs)

        return wrapped


def _store(url: str, *, item_cache_size: int, fast: bool = False) -> tuple[Store, Counting]:
    client = aioredis.Redis.from_url(url)
    store = Store(redis=client, keys=Keys(PREFIX), variants=(V,), pointer_ttl=0.0, item_cache_size=item_cache_size,
                  fast=PipelinedGet(url) if fast else None)
    return store, Counting(client)


async def _close(store: Store) -> None:
    if store.fast is not None:
        await store.fast.aclose()
    await store.redis.aclose()


async def _loaded(store: Store, pub: str = PUB) -> Any:
    entry = store._pubs.get((V, pub))
    assert entry is not None
    for _ in range(200):
        if entry.loader is None:
            break
        await asyncio.sleep(0.01)
    return entry


def _answer(a: Any) -> tuple[Any, ...]:
    return (a.pointer["publication"], a.known_user, a.ranked.personalised, a.ranked.padded, a.ranked.dropped_expired,
            [(i, s, m) for i, s, m in a.ranked.items], a.stale)


def test_whole_item_hash_is_loaded_once_and_requests_read_no_metadata(redis_server, redis_client):
    standard_set(redis_client)

    async def main() -> None:
        store, counting = _store(redis_server.url, item_cache_size=40)  # the catalogue has exactly 40 items
        try:
            await store.recommend(V, "u1", 10)
            entry = await _loaded(store)
            assert entry.complete and len(entry.meta) == 40 and entry.meta["p002"].title == "Programme 2"
            before = counting.calls.get("hmget", 0)
            for user in ("u1", "u2", "nobody"):
                await store.recommend(V, user, 30)
            assert await store.item_meta(V, PUB, ["p017", "zzz"]) == {"p017": entry.meta["p017"], "zzz": UNKNOWN_ITEM}
            assert counting.calls.get("hmget", 0) == before, "a complete entry reads no item metadata"
        finally:
            await _close(store)

    asyncio.run(main())


def test_a_catalogue_larger_than_the_cache_keeps_the_bounded_per_item_cache(redis_server, redis_client):
    standard_set(redis_client)

    async def main() -> None:
        store, counting = _store(redis_server.url, item_cache_size=39)
        try:
            await store.recommend(V, "u2", 30)
            entry = await _loaded(store)
            assert not entry.complete and entry.loader is None
            assert len(entry.meta) <= 39
            before = counting.calls.get("hmget", 0)
            await store.recommend(V, "u1", 10)
            assert counting.calls.get("hmget", 0) == before + 1  # u1's items not cached yet: one HMGET
        finally:
            await _close(store)

    asyncio.run(main())


def test_the_item_table_field_is_not_an_item_and_does_not_count(redis_server, redis_client):
    standard_set(redis_client)
    redis_client.hset(Keys(PREFIX).items(V, PUB), ITEM_TABLE_FIELD, json.dumps({"v": 1, "ids": []}))

    async def main() -> None:
        store, _ = _store(redis_server.url, item_cache_size=40)  # 41 fields, 40 items: fits
        try:
            await store.recommend(V, "u1", 10)
            entry = await _loaded(store)
            assert entry.complete and ITEM_TABLE_FIELD not in entry.meta and len(entry.meta) == 40
        finally:
            await _close(store)

    asyncio.run(main())


def test_a_hash_that_changes_while_loading_is_not_marked_complete(redis_server, redis_client):
    standard_set(redis_client)

    async def main() -> None:
        store, _ = _store(redis_server.url, item_cache_size=1000)
        try:
            await store.recommend(V, "u1", 10)
            entry = await _loaded(store)
            entry.complete = False
            await store._load_items(V, PUB, entry, expected=41)  # one item fewer found than counted at first
            assert not entry.complete
        finally:
            await _close(store)

    asyncio.run(main())


def test_complete_and_per_item_caches_give_the_same_answers(redis_server, redis_client, monkeypatch):
    """Expired items, unknown items (in a list but not in the hash), fallback users, deep pages, a pointer switch
    and an outage: the preloaded publication answers exactly as the per-item cache of the same size does."""
    items = catalogue(expired=("p003", "p031", "p012"))
    recs = {"u1": [("p001", 0.9), ("p003", 0.8), ("ghost", 0.75), ("p005", 0.7), ("p007", 0.6)],
            "u2": [(f"p{i:03d}", 1.0 - i / 100) for i in range(10, 30)]}
    cases = [("u1", 3), ("u1", 12), ("u2", 25), ("u2", 40), ("nobody", 5), ("nobody", 20)]
    preload = Store._load_items

    async def no_preload(self: Store, *args: Any, **kwargs: Any) -> None:
        return None

    async def answers(store: Store) -> list[tuple[Any, ...]]:
        out = [_answer(await store.recommend(V, user, want)) for user, want in cases]
        await _loaded(store, store.cached_pointers()[V]["publication"])
        return out + [_answer(await store.recommend(V, user, want)) for user, want in cases]

    async def run() -> dict[str, Any]:
        standard_set(redis_client, items=items, recs=recs)
        store, _ = _store(redis_server.url, item_cache_size=1000, fast=True)
        try:
            first = await answers(store)
            complete = store._pubs.get((V, PUB)).complete
            # Redis unreachable: the users' last answers from the same publication, flagged stale
            assert store.fast is not None
            await store.fast.aclose()
            store.fast.port = store.redis.connection_pool.connection_kwargs["port"] = 1
            await store.redis.connection_pool.disconnect()
            outage: list[Any] = []
            for user, want in cases:
                try:
                    outage.append(_answer(await store.recommend(V, user, want)))
                except Unavailable as exc:
                    outage.append(("unavailable", exc.code))
        finally:
            await _close(store)
        store, _ = _store(redis_server.url, item_cache_size=1000, fast=True)
        try:
            await answers(store)
            publish(redis_client, V, "v2.20261124T000000", recs={"u1": [("q1", 5.0), ("p001", 4.0)]},
                    fallback=[("q2", 1.0)], items={"q1": {"title": "Q1"}, "q2": {"title": "Q2"}})
            after_switch = await answers(store)
            switched_complete = store._pubs.get((V, "v2.20261124T000000")).complete
            assert store._pubs.get((V, PUB)) is None  # the superseded publication's cache is freed
        finally:
            await _close(store)
        return {"first": first, "outage": outage, "switch": after_switch,
                "complete": (complete, switched_complete)}

    full = asyncio.run(run())
    monkeypatch.setattr(Store, "_load_items", no_preload)
    per_item = asyncio.run(run())
    monkeypatch.setattr(Store, "_load_items", preload)
    assert full["complete"] == (True, True) and per_item["complete"] == (False, False)
    assert full["first"] == per_item["first"]
    assert full["outage"] == per_item["outage"]
    assert [a[-1] for a in full["outage"]] == [True] * len(cases)  # every one served stale
    assert full["switch"] == per_item["switch"]
    assert [a[0] for a in full["switch"]] == ["v2.20261124T000000"] * 2 * len(cases)


def test_publication_present_uses_the_pipelined_connection(redis_server, redis_client):
    standard_set(redis_client)

    async def main() -> None:
        store, counting = _store(redis_server.url, item_cache_size=1000, fast=True)
        try:
            assert await store.publication_present(V, PUB)
            assert not await store.publication_present(V, "v9.gone")
            await store.recommend(V, "nobody", 5)  # an unknown user: is the publication still there?
            assert counting.calls.get("exists", 0) == 0
        finally:
            await _close(store)
        store, counting = _store(redis_server.url, item_cache_size=1000, fast=False)
        try:
            assert await store.publication_present(V, PUB) and not await store.publication_present(V, "v9.gone")
            assert counting.calls["exists"] == 2
        finally:
            await _close(store)

    asyncio.run(main())


def test_concurrent_first_requests_read_a_publication_once(redis_server, redis_client, monkeypatch):
    standard_set(redis_client)
    opened: list[str] = []
    scans: list[str] = []
    real_open, real_load = Store._open, Store._load_items

    async def counting_open(self: Store, variant: str, pub: str) -> Any:
        opened.append(pub)
        return await real_open(self, variant, pub)

    async def counting_load(self: Store, variant: str, pub: str, *args: Any, **kwargs: Any) -> None:
        scans.append(pub)
        await real_load(self, variant, pub, *args, **kwargs)

    monkeypatch.setattr(Store, "_open", counting_open)
    monkeypatch.setattr(Store, "_load_items", counting_load)

    async def main() -> None:
        store, _ = _store(redis_server.url, item_cache_size=1000, fast=True)
        try:
            answers = await asyncio.gather(*(store.recommend(V, f"u{i % 3}", 5) for i in range(30)))
            assert {a.pointer["publication"] for a in answers} == {PUB}
            await _loaded(store)
        finally:
            await _close(store)

    asyncio.run(main())
    assert opened == [PUB] and scans == [PUB]


def test_a_failed_hot_path_read_with_nothing_cached_asks_redis_py_before_answering_503(redis_server,
                                                                                      redis_client) -> None:
    """The pipelined connection fails (here: it points at a port nobody listens on) and no pointer (no answer
    for the user) was ever seen: the store reads the pointer (the user's list) once more on redis-py's pool
    instead of taking Redis for down. When that fails too, 503 ``redis_unavailable``."""
    from skyrec.redis_local import free_port

    standard_set(redis_client, V, PUB)

    async def main() -> None:
        client = aioredis.Redis.from_url(redis_server.url)
        broken = PipelinedGet(f"redis://127.0.0.1:{free_port()}/0", timeout=0.2)
        store = Store(redis=client, fast=broken, keys=Keys(PREFIX), variants=(V,), pointer_ttl=0.0)
        pointer, stale = await store.pointer(V)
        assert pointer is not None and pointer["publication"] == PUB and not stale
        await client.aclose()
        down = aioredis.Redis.from_url(f"redis://127.0.0.1:{free_port()}/0", socket_connect_timeout=0.2)
        store = Store(redis=down, fast=broken, keys=Keys(PREFIX), variants=(V,), pointer_ttl=0.0)
        try:
            await store.pointer(V)
        except Unavailable as exc:
            assert exc.code == "redis_unavailable"
        else:
            raise AssertionError("a pointer without any Redis")
        await down.aclose()
        await broken.aclose()

    asyncio.run(main())


def test_a_failed_read_of_a_users_list_with_no_answer_cached_is_tried_again_on_redis_py(redis_server,
                                                                                       redis_client) -> None:
    """The pointer is read on the pipelined connection, the user's list read fails there (one connection timed
    out): with no answer of this user cached the alternative is a 503, so the list is read once more on
    redis-py's pool. A user with a cached answer gets it (stale) without the second read."""
    from redis.exceptions import TimeoutError as RedisTimeoutError

    standard_set(redis_client, V, PUB)
    failing = {Keys(PREFIX).rec(V, PUB, "u1")}

    class RecReadsTimeOut(PipelinedGet):  # the pipelined client, with one key's reads failing
        async def get(self, key: str) -> bytes | None:
            if key in failing:
                raise RedisTimeoutError("Redis did not answer within 0.5 s")
            return await super().get(key)

    async def main() -> None:
        client = aioredis.Redis.from_url(redis_server.url)
        pool_reads = Counting(client)
        for name in ("get",):
            setattr(client, name, pool_reads._wrap(name, getattr(client, name)))
        fast = RecReadsTimeOut(redis_server.url, timeout=0.5)
        store = Store(redis=client, fast=fast, keys=Keys(PREFIX), variants=(V,), pointer_ttl=0.0)
        answer = await store.recommend(V, "u1", 3)
        assert answer.known_user and not answer.stale and answer.ranked.items[0][0] == "p001"
        assert pool_reads.calls.get("get") == 1  # the one retried read
        failing.add(Keys(PREFIX).rec(V, PUB, "u2"))
        await store.recommend(V, "u2", 3)  # nothing cached: read on the pool (the second read there), cached
        answer = await store.recommend(V, "u2", 3)  # cached: the failed read answers from the cache
        assert answer.stale and pool_reads.calls["get"] == 2
        await fast.aclose()
        await client.aclose()

    asyncio.run(main())
