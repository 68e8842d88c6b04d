"""Histories shared by the rails of one activity snapshot (``skyrec.publish.histories``), on a real Redis: the
namespace goes with its last owner, never with another rail's publication; nothing attaches while it is being
collected; a stalled collector cannot remove what a later publication loaded; an interrupted collection is
swept."""

from __future__ import annotations

import threading
import time

import pytest

from skyrec.publish import current, histories
from skyrec.publish.keys import Keys
from skyrec.publish.publisher import RedisUnavailableError, cleanup, publish_versioned

pytestmark = pytest.mark.integration
K = Keys("skyrec")
NS = Keys.shared_hist_namespace("0123abcd", 3)
USERS = [f"u{i}" for i in range(250)]


def _publish(client, variant: str, pub: str, *, activity: str = NS, keep: int = 1, wait: float = 5.0) -> dict:
    def load() -> int:
        client.set(K.rec(variant, pub, "u1"), "[]")
        client.set(K.fallback(variant, pub), "[]")
        client.hset(K.items(variant, pub), "i1", "{}")
        if not histories.loaded_files(client, K, activity) & {"f1"}:  # as the publish job does: once per namespace
            client.mset({K.hist(activity, u): f'[["i1","2026-03-01T00:00:00Z"],["{u}","t"]]' for u in USERS})
            histories.mark_loaded(client, K, activity, ["f1"])
        return 3

    def verify(c, p: str) -> None:
        assert c.get(K.hist(activity, "u7")) is not None

    return publish_versioned(client, K, variant, {"publication": pub, "activity": activity}, load=load,
                             expected_commands=3, verify=verify, keep_versions=keep, history_wait=wait)


def _hist_keys(client, activity: str = NS) -> int:
    return sum(1 for _ in client.scan_iter(match=K.hist_pattern(activity), count=1000))


def test_the_namespace_goes_with_its_last_owner_only(redis_client) -> None:
    _publish(redis_client, "comedy", "c1")
    _publish(redis_client, "drama", "d1")
    assert _hist_keys(redis_client) == 250  # one copy for both rails
    assert redis_client.smembers(K.hist_refs(NS)) == {b"comedy/c1", b"drama/d1"}
    # comedy moves to a new snapshot: its old publication goes, the plays drama serves stay
    _publish(redis_client, "comedy", "c2", activity=Keys.shared_hist_namespace("beef", 3))
    assert not redis_client.exists(K.rec("comedy", "c1", "u1"))
    assert redis_client.smembers(K.hist_refs(NS)) == {b"drama/d1"} and _hist_keys(redis_client) == 250
    assert redis_client.smembers(K.hist_files(NS)) == {b"f1"}  # still whole: a later rail may skip it
    # drama moves too: the last owner leaves, the namespace and its bookkeeping go
    _publish(redis_client, "drama", "d2", activity=Keys.shared_hist_namespace("beef", 3))
    assert _hist_keys(redis_client) == 0
    assert not redis_client.exists(K.hist_refs(NS), K.hist_files(NS), K.hist_gc(NS))
    assert redis_client.zrange(K.hist_registry(), 0, -1) == [Keys.shared_hist_namespace("beef", 3).encode()]
    assert redis_client.hgetall(K.hist_of("drama")) == {b"d2": Keys.shared_hist_namespace("beef", 3).encode()}


def test_rollback_keeps_the_previous_publications_histories(redis_client) -> None:
    """With ``keep_versions`` 2 the previous publication stays an owner of its snapshot's namespace."""
    _publish(redis_client, "drama", "d1", keep=2)
    _publish(redis_client, "drama", "d2", activity=Keys.shared_hist_namespace("beef", 3), keep=2)
    assert _hist_keys(redis_client) == 250 and redis_client.smembers(K.hist_refs(NS)) == {b"drama/d1"}
    _publish(redis_client, "drama", "d3", activity=Keys.shared_hist_namespace("f00d", 3), keep=2)
    assert _hist_keys(redis_client) == 0  # d1 is beyond keep_versions now


def test_no_attach_while_collecting_and_busy_is_retryable(redis_client) -> None:
    redis_client.set(K.hist_gc(NS), "someone-else", px=60_000)
    with pytest.raises(RedisUnavailableError, match="still being collected"):
        _publish(redis_client, "drama", "d1", wait=0.3)
    assert current(redis_client, K, "drama") is None  # nothing switched
    assert not redis_client.smembers(K.hist_refs(NS))
    # the collection ends while a publisher waits: it attaches then, and loads every key again
    threading.Timer(0.5, lambda: redis_client.delete(K.hist_gc(NS))).start()
    started = time.monotonic()
    _publish(redis_client, "drama", "d2", wait=10.0)
    assert time.monotonic() - started >= 0.4
    assert current(redis_client, K, "drama")["publication"] == "d2" and _hist_keys(redis_client) == 250


def test_a_stalled_collector_stops_when_another_took_over(redis_client) -> None:
    """A collector whose marker expired (or was taken over) removes nothing more: a publication that attached
    meanwhile keeps every key it loaded."""
    redis_client.mset({K.hist(NS, u): "[]" for u in USERS})
    redis_client.set(K.hist_gc(NS), "stalled", px=60_000)
    redis_client.set(K.hist_gc(NS), "the-next-one", px=60_000)  # the stalled one's TTL ran out; another took over
    assert histories.collect(redis_client, K, NS, "stalled", batch=10) == 0
    assert _hist_keys(redis_client) == 250 and redis_client.get(K.hist_gc(NS)) == b"the-next-one"


def test_detach_starts_the_collection_atomically(redis_client, monkeypatch) -> None:
    """The last owner out clears ``histfiles`` in the same step as it takes the marker: from then on no
    publication may skip a file, whatever the collection has removed so far."""
    _publish(redis_client, "drama", "d1")
    token_seen = {}
    real_collect = histories.collect

    def spy(client, keys, activity, token, *, batch=5000):
        token_seen.update(files=client.smembers(keys.hist_files(activity)), gc=client.get(keys.hist_gc(activity)),
                          refs=client.smembers(keys.hist_refs(activity)))
        return real_collect(client, keys, activity, token, batch=batch)

    monkeypatch.setattr(histories, "collect", spy)
    _publish(redis_client, "drama", "d2", activity=Keys.shared_hist_namespace("beef", 3))
    assert token_seen["files"] == set() and token_seen["refs"] == set() and token_seen["gc"]


def test_an_interrupted_collection_is_swept(redis_client) -> None:
    """A collector killed midway leaves keys, the registry entry and (until its TTL) the marker: once the marker
    is gone, the next cleanup of any rail collects what nobody owns."""
    _publish(redis_client, "drama", "d1")
    redis_client.srem(K.hist_refs(NS), "drama/d1")  # as a detach does, then the collector dies
    redis_client.hdel(K.hist_of("drama"), "d1")
    redis_client.delete(K.hist_files(NS))
    assert _hist_keys(redis_client) == 250
    out = cleanup(redis_client, K, "drama", 1)
    assert out["swept_histories"] == [NS] and _hist_keys(redis_client) == 0
    assert redis_client.zrange(K.hist_registry(), 0, -1) == []
    # owned namespaces are never swept
    _publish(redis_client, "drama", "d2")
    assert "swept_histories" not in cleanup(redis_client, K, "drama", 1) and _hist_keys(redis_client) == 250


def test_a_collection_removes_more_keys_than_a_script_may_take_at_once(redis_client) -> None:
    """SCAN batches of thousands of keys are passed to the removal script a thousand at a time (a Lua stack
    holds about 8,000 values)."""
    for start in range(0, 12_000, 4_000):
        redis_client.mset({K.hist(NS, f"u{i}"): "[]" for i in range(start, start + 4_000)})
    redis_client.set(K.hist_gc(NS), "mine", px=60_000)
    assert histories.collect(redis_client, K, NS, "mine", batch=20_000) == 12_000
    assert _hist_keys(redis_client) == 0 and not redis_client.exists(K.hist_gc(NS))
