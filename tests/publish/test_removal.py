"""Removing a publication (``skyrec.publish.removal``) on a real Redis: a retry of the same publication id waits
for its removal and loads everything again; nothing rolls back or switches to a publication being removed; a
remover that stalled stops, and one that died is resumed; loads nobody finished go after the grace, whichever
rail they belong to; a rail taken out of the configuration is retired whole, never another rail's plays."""

from __future__ import annotations

import threading
import time

import pytest

from skyrec.publish import current, histories, removal, rollback
from skyrec.publish.keys import Keys
from skyrec.publish.publisher import RemovedConcurrentlyError, _switch, cleanup, publish_versioned

pytestmark = pytest.mark.integration
K = Keys("skyrec")
NS = Keys.shared_hist_namespace("0123abcd", 3)
USERS = [f"u{i}" for i in range(40)]


def _load(client, variant: str, pub: str, *, activity: str | None = None) -> int:
    client.mset({K.rec(variant, pub, u): "[]" for u in USERS})
    client.set(K.fallback(variant, pub), "[]")
    client.hset(K.items(variant, pub), "i1", "{}")
    if activity and not histories.loaded_files(client, K, activity):
        client.mset({K.hist(activity, u): '[["i1","2026-03-01T00:00:00Z"]]' for u in USERS})
        histories.mark_loaded(client, K, activity, ["f1"])
    return 3


def _publish(client, variant: str, pub: str, *, keep: int = 2, activity: str | None = None, wait: float = 5.0,
             abandoned_after: float | None = None) -> dict:
    def verify(c, p: str) -> None:
        assert c.get(K.rec(variant, p, "u7")) is not None, "probe missing"

    return publish_versioned(client, K, variant, {"publication": pub, "activity": activity},
                             load=lambda: _load(client, variant, pub, activity=activity), expected_commands=3,
                             verify=verify, keep_versions=keep, history_wait=wait, abandoned_after=abandoned_after)


def _crashed_load(client, variant: str, pub: str, *, age: float = 0.0, activity: str | None = None) -> None:
    """What a load killed after its registration leaves: registered (``age`` seconds ago), keys half written."""
    removal.register(client, K, variant, pub)
    client.zadd(K.publications(variant), {pub: time.time() - age})
    if activity:
        histories.attach(client, K, activity, variant, pub)
    _load(client, variant, pub, activity=activity)


def _keys_of(client, variant: str, pub: str) -> int:
    return sum(1 for p in K.publication_pattern(variant, pub) for _ in client.scan_iter(match=p, count=1000))


class _Paused:
    """A client whose first call to ``method`` (with ``when(args)`` true) blocks until ``go`` is set: a remover
    stopped at that point."""

    def __init__(self, client, method: str, when=lambda args: True) -> None:
        self._c, self._method, self._when = client, method, when
        self.reached, self.go, self._done = threading.Event(), threading.Event(), False

    def __getattr__(self, name):
        attr = getattr(self._c, name)
        if name != self._method:
            return attr

        def call(*args, **kwargs):
            if not self._done and self._when(args):
                self._done = True
                self.reached.set()
                assert self.go.wait(30)
            return attr(*args, **kwargs)
        return call


def _after_claim(client) -> _Paused:
    """Stops a remover right after its claim, before its first key is removed."""
    return _Paused(client, "eval", lambda args: args[0] == histories.UNLINK_IF_OWNER)


def _removing(client, variant: str, pub: str, paused: _Paused) -> tuple[threading.Thread, dict]:
    out: dict = {}
    t = threading.Thread(target=lambda: out.update(deleted=removal.remove(paused, K, variant, pub)))
    t.start()
    assert paused.reached.wait(10)
    return t, out


def test_a_retry_of_the_same_id_waits_for_its_removal_then_loads_everything(redis_client) -> None:
    _publish(redis_client, "drama", "d1")
    _publish(redis_client, "drama", "d2")  # d1 stays as the rollback target
    paused = _after_claim(redis_client)
    t, out = _removing(redis_client, "drama", "d1", paused)
    assert redis_client.hexists(K.doomed("drama"), "d1")
    # a retry of d1's load (ids are stable across attempts) starts now: it must not write into the removal
    threading.Timer(0.5, paused.go.set).start()
    started = time.monotonic()
    _publish(redis_client, "drama", "d1")
    t.join(10)
    assert out["deleted"] == 2 + len(USERS)  # the remover removed what it claimed, and finished
    assert time.monotonic() - started >= 0.4  # the retry waited for it
    assert current(redis_client, K, "drama")["publication"] == "d1"
    assert _keys_of(redis_client, "drama", "d1") == 2 + len(USERS)  # every key of the retry is there
    assert not redis_client.hexists(K.doomed("drama"), "d1")
    assert redis_client.zscore(K.publications("drama"), "d1") is not None


def test_no_rollback_or_switch_to_a_publication_being_removed(redis_client) -> None:
    _publish(redis_client, "drama", "d1")
    _publish(redis_client, "drama", "d2")
    paused = _after_claim(redis_client)
    t, _ = _removing(redis_client, "drama", "d1", paused)
    try:
        assert redis_client.exists(K.fallback("drama", "d1"), K.items("drama", "d1")) == 2  # still "present"
        with pytest.raises(LookupError, match="no longer loaded"):
            rollback(redis_client, K, "drama")
        with pytest.raises(RemovedConcurrentlyError, match="retryable"):
            _switch(redis_client, K, "drama", {"publication": "d1"}, 2)
        assert current(redis_client, K, "drama")["publication"] == "d2"
    finally:
        paused.go.set()
        t.join(10)
    assert _keys_of(redis_client, "drama", "d1") == 0


def test_a_stalled_remover_stops_and_a_dead_ones_removal_is_resumed(redis_client, monkeypatch) -> None:
    monkeypatch.setattr(removal, "REMOVE_TTL_MS", 300)
    _publish(redis_client, "drama", "d1", keep=3)
    _publish(redis_client, "drama", "d2", keep=3)
    # a remover stops between two batches (after the fallback and items), past its lock's TTL
    paused = _Paused(redis_client, "scan")
    t, out = _removing(redis_client, "drama", "d1", paused)
    time.sleep(0.4)
    assert not redis_client.exists(K.removal_lock("drama", "d1"))  # its lock ran out: as if it had died
    assert redis_client.hexists(K.doomed("drama"), "d1") and _keys_of(redis_client, "drama", "d1") == len(USERS)
    # the next publication's cleanup finishes the removal ...
    res = _publish(redis_client, "drama", "d3", keep=3)
    assert res["cleanup"]["resumed"] == ["d1"]
    assert _keys_of(redis_client, "drama", "d1") == 0
    assert not redis_client.hexists(K.doomed("drama"), "d1") and redis_client.zscore(K.publications("drama"), "d1") is None
    # ... a retry of d1 registers and loads it again, and the stalled remover, woken, removes none of it
    removal.register(redis_client, K, "drama", "d1")
    _load(redis_client, "drama", "d1")
    paused.go.set()
    t.join(10)
    assert out["deleted"] is None
    assert _keys_of(redis_client, "drama", "d1") == 2 + len(USERS)


def test_abandoned_loads_of_every_rail_go_after_the_grace_and_young_ones_stay(redis_client) -> None:
    hour = 3600.0
    _crashed_load(redis_client, "retired", "r1", age=2 * hour, activity=NS)  # killed mid-load, rail then removed
    _crashed_load(redis_client, "retired", "r2", age=60.0)  # may still be loading
    _publish(redis_client, "drama", "d1", activity=NS)
    _crashed_load(redis_client, "drama", "d9", age=2 * hour)  # a load of drama nobody finished
    assert redis_client.smembers(K.hist_refs(NS)) == {b"retired/r1", b"drama/d1"}
    res = _publish(redis_client, "drama", "d2", activity=NS, abandoned_after=hour)
    gone = {(e["variant"], e["publication"]) for e in res["cleanup"]["abandoned"]}
    assert gone == {("retired", "r1")}  # d9 went with drama's own cleanup (registered before the served d2)
    assert "d9" in res["cleanup"]["removed"]
    for variant, pub in (("retired", "r1"), ("drama", "d9")):
        assert _keys_of(redis_client, variant, pub) == 0
        assert redis_client.zscore(K.publications(variant), pub) is None
    assert _keys_of(redis_client, "retired", "r2") == 2 + len(USERS)
    # the plays drama serves stay: r1 only left the namespace
    assert redis_client.smembers(K.hist_refs(NS)) == {b"drama/d1", b"drama/d2"}
    assert redis_client.exists(K.hist(NS, "u3"))


def test_a_load_registered_again_after_the_listing_is_not_removed(redis_client) -> None:
    """The claim compares the registration with the remover's cutoff on the server: a retry that registered
    between the listing and the claim is a load in progress."""
    _crashed_load(redis_client, "drama", "d9", age=7200.0)
    cutoff = time.time() - 3600.0
    assert removal.abandoned(redis_client, K, "drama", 3600.0) == ["d9"]
    removal.register(redis_client, K, "drama", "d9")  # a retry starts
    assert removal.remove(redis_client, K, "drama", "d9", max_score=cutoff) is None
    assert _keys_of(redis_client, "drama", "d9") == 2 + len(USERS)


def test_retire_removes_a_rail_whole_but_not_the_plays_another_serves(redis_client) -> None:
    _publish(redis_client, "old", "o1", activity=NS)
    _publish(redis_client, "old", "o2", activity=NS)
    _publish(redis_client, "drama", "d1", activity=NS)
    _crashed_load(redis_client, "old", "o3", age=10.0)  # young: may still be loading
    plan = removal.retire(redis_client, K, "old", 3600.0, dry_run=True)
    assert (plan["pointer"], sorted(plan["publications"]), plan["kept_young"]) == ("o2", ["o1", "o2"], ["o3"])
    assert current(redis_client, K, "old")["publication"] == "o2"  # a dry run changes nothing
    res = removal.retire(redis_client, K, "old", 3600.0)
    assert sorted(res["publications"]) == ["o1", "o2"] and res["kept_young"] == ["o3"]
    assert current(redis_client, K, "old") is None and not redis_client.exists(K.history("old"))
    assert _keys_of(redis_client, "old", "o1") == 0 and _keys_of(redis_client, "old", "o2") == 0
    assert redis_client.smembers(K.hist_refs(NS)) == {b"drama/d1"} and redis_client.exists(K.hist(NS, "u3"))
    assert "old" in removal.variants(redis_client, K)  # o3 is still registered
    removal.retire(redis_client, K, "old", 0.0)
    assert "old" not in removal.variants(redis_client, K) and not redis_client.exists(K.publications("old"))


def test_registries_from_before_the_variants_set_are_found_by_a_scan(redis_client) -> None:
    redis_client.zadd(K.publications("legacy"), {"l1": time.time() - 7200})
    assert removal.variants(redis_client, K) == []
    assert removal.variants(redis_client, K, scan=True) == ["legacy"]
    assert removal.variants(redis_client, K) == ["legacy"]
    res = removal.collect_abandoned(redis_client, K, 3600.0)
    assert [(e["variant"], e["publication"]) for e in res] == [("legacy", "l1")]


def test_cleanup_keeps_a_publication_served_since_it_was_listed(redis_client) -> None:
    """A rollback that lands between cleanup's listing and its claim: the claim reads the pointer on the
    server and refuses what it names."""
    _publish(redis_client, "drama", "d1")
    _publish(redis_client, "drama", "d2")
    assert removal.remove(redis_client, K, "drama", "d2") is None  # current
    rollback(redis_client, K, "drama")
    assert removal.remove(redis_client, K, "drama", "d1") is None
    assert cleanup(redis_client, K, "drama", 1)["kept"] == ["d1"]


def test_a_remover_that_stalled_before_its_last_step_leaves_a_new_registration_alone(redis_client,
                                                                                   monkeypatch) -> None:
    monkeypatch.setattr(removal, "REMOVE_TTL_MS", 300)
    _publish(redis_client, "drama", "d1", keep=3)
    _publish(redis_client, "drama", "d2", keep=3)
    paused = _Paused(redis_client, "eval", lambda args: args[0] == removal._FINISH)
    t, out = _removing(redis_client, "drama", "d1", paused)
    time.sleep(0.4)  # its lock runs out; the next cleanup finishes the removal and a retry registers d1 again
    assert _publish(redis_client, "drama", "d3", keep=3)["cleanup"]["resumed"] == ["d1"]
    removal.register(redis_client, K, "drama", "d1")
    paused.go.set()
    t.join(10)
    assert out["deleted"] is None
    assert redis_client.zscore(K.publications("drama"), "d1") is not None
