"""A publication into a Redis that is full, or that may evict keys, on a real redis-server: refused before a key is
written when it cannot fit; a load that reaches ``maxmemory`` midway is removed at once (the memory it held is
free again), the served publication untouched; a Redis that may evict any key is a configuration error."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from skyrec.config import ConfigError
from skyrec.publish import current, removal
from skyrec.publish.keys import Keys
from skyrec.publish.publisher import RedisEvictsKeysError, RedisMemoryError, publish_versioned
from skyrec.publish.resp import encode_command, load_files
from skyrec.redis_local import temporary_redis

pytestmark = pytest.mark.integration
K = Keys("skyrec")


@pytest.fixture
def server(tmp_path: Path):
    with temporary_redis(tmp_path / "redis") as srv:
        yield srv


@pytest.fixture
def client(server):
    import redis

    c = redis.Redis(host=server.host, port=server.port)
    yield c
    c.close()


def _resp(tmp_path: Path, pub: str, users: int) -> tuple[Path, int]:
    """A publication's RESP file: ``users`` rec keys of ~300 bytes, its fallback and items keys."""
    path = tmp_path / f"{pub}.resp"
    value = json.dumps([[f"item{i:04d}", 1.0 - i / 100] for i in range(20)])
    with path.open("wb") as fh:
        for u in range(users):
            fh.write(encode_command("SET", K.rec("v", pub, f"u{u}"), value))
        fh.write(encode_command("SET", K.fallback("v", pub), "[]"))
        fh.write(encode_command("HSET", K.items("v", pub), "item0000", "{}"))
    return path, users + 2


def _publish(client, server, tmp_path: Path, pub: str, users: int, need_bytes: int | None = None,
             over: bool = False) -> dict:
    path, n = _resp(tmp_path, pub, users)

    def load() -> int:
        try:
            return load_files(server.host, server.port, [path], expected=n).commands
        finally:
            if over:  # Redis stays above its maxmemory after the load (as when another writer fills it)
                client.config_set("maxmemory", int(client.info("memory")["used_memory"]) - 50_000)

    def verify(c, p: str) -> None:
        assert c.exists(K.rec("v", p, f"u{users - 1}"))

    return publish_versioned(client, K, "v", {"publication": pub}, load=load, expected_commands=n, verify=verify,
                             keep_versions=2, need_bytes=need_bytes)


def _keys_of(client, pub: str) -> int:
    return sum(1 for _ in client.scan_iter(match=f"skyrec:*:v:{pub}*", count=1000))


def test_a_load_that_cannot_fit_is_refused_before_a_key_is_written(client, server, tmp_path: Path) -> None:
    _publish(client, server, tmp_path, "p1", 500)
    used = int(client.info("memory")["used_memory"])
    client.config_set("maxmemory", used + 1_000_000)
    before = client.dbsize()
    with pytest.raises(RedisMemoryError, match=r"needs about 5\.0 MB and Redis holds .* of its maxmemory") as err:
        _publish(client, server, tmp_path, "p2", 500, need_bytes=5_000_000)
    assert err.value.retryable and "nothing was loaded" in str(err.value)
    assert client.dbsize() == before and not client.zscore(K.publications("v"), "p2")  # not even registered
    assert current(client, K, "v")["publication"] == "p1"
    # what fits is published, and the figures are in the result
    res = _publish(client, server, tmp_path, "p2", 500, need_bytes=200_000)
    assert res["memory"]["checked"] and res["memory"]["maxmemory"] == used + 1_000_000
    assert current(client, K, "v")["publication"] == "p2"


@pytest.mark.parametrize("over", [False, True], ids=["then-below", "stays-over"])
def test_a_load_that_fills_redis_midway_is_removed_at_once(client, server, tmp_path: Path, over: bool) -> None:
    """The estimate was low (or another writer filled Redis): Redis answers -OOM midway. The partial load is
    removed at once by the removal protocol (its claim allowed to write when full: Redis may still be above its
    maxmemory then), the served publication stays current and whole, and once there is room the same
    publication id publishes whole."""
    _publish(client, server, tmp_path, "p1", 300)
    served = _keys_of(client, "p1")
    client.config_set("maxmemory", int(client.info("memory")["used_memory"]) + 400_000)  # ~1,000 of 5,000 keys
    with pytest.raises(RedisMemoryError, match=r"refused writes when full .* the partial load was removed") as err:
        _publish(client, server, tmp_path, "p2", 5000, need_bytes=1_000, over=over)  # an estimate far too low
    assert err.value.retryable
    assert _keys_of(client, "p2") == 0 and client.zscore(K.publications("v"), "p2") is None
    assert not client.hexists(K.doomed("v"), "p2") and not client.exists(K.removal_lock("v", "p2"))
    assert current(client, K, "v")["publication"] == "p1" and _keys_of(client, "p1") == served
    client.config_set("maxmemory", 0)
    assert _publish(client, server, tmp_path, "p2", 5000)["loaded_commands"] == 5002
    assert current(client, K, "v")["publication"] == "p2" and _keys_of(client, "p2") == 5002


def test_a_removal_makes_room_even_when_redis_is_full(client, server, tmp_path: Path) -> None:
    """The plain claim writes its markers and is refused (-OOM) when Redis is full; a removal then claims with
    the script flagged for a full Redis, so a cleanup frees memory when it is needed most."""
    import redis

    client.config_set("maxmemory", int(client.info("memory")["used_memory"]) + 300_000)
    removal.register(client, K, "v", "p9")
    with pytest.raises(redis.exceptions.ResponseError):
        for u in range(100_000):
            client.set(K.rec("v", "p9", f"u{u}"), "x" * 300)
    with pytest.raises(redis.exceptions.OutOfMemoryError, match="maxmemory"):
        client.eval(removal._CLAIM, 4, K.current("v"), K.publications("v"), K.doomed("v"),
                    K.removal_lock("v", "p9"), "p9", "t", 10_000, removal.NO_LIMIT, 0)
    assert removal.remove(client, K, "v", "p9") > 0 and _keys_of(client, "p9") == 0
    assert client.zscore(K.publications("v"), "p9") is None


def _over(client) -> None:
    """Redis above its maxmemory from now on (as when another rail's load filled it)."""
    client.config_set("maxmemory", int(client.info("memory")["used_memory"]) - 50_000)


def test_a_registration_refused_when_full_writes_nothing(client, server, tmp_path: Path) -> None:
    _publish(client, server, tmp_path, "p1", 300)
    _over(client)
    with pytest.raises(RedisMemoryError, match="refused the registration when full") as err:
        _publish(client, server, tmp_path, "p2", 10)  # no estimate: the pre-check cannot refuse it
    assert err.value.retryable and "nothing was written" in str(err.value)
    assert client.zscore(K.publications("v"), "p2") is None and _keys_of(client, "p2") == 0
    assert current(client, K, "v")["publication"] == "p1"
    client.config_set("maxmemory", 0)
    assert _publish(client, server, tmp_path, "p2", 10)["previous"] == "p1"
    assert current(client, K, "v")["publication"] == "p2"


def test_a_history_attach_refused_when_full_removes_the_registration(client, server, tmp_path: Path,
                                                                     monkeypatch: pytest.MonkeyPatch) -> None:
    """Redis fills up between the registration and the attach to the users' shared plays: the registration
    (nothing loaded yet) is removed at once."""
    from skyrec.publish import publisher

    _publish(client, server, tmp_path, "p1", 300)
    real = removal.register

    def register_then_full(*args, **kwargs) -> None:
        real(*args, **kwargs)
        _over(client)

    monkeypatch.setattr(publisher.removal, "register", register_then_full)
    path, n = _resp(tmp_path, "p2", 10)
    with pytest.raises(RedisMemoryError, match=r"during attaching the users' plays: .* partial load was removed"):
        publish_versioned(client, K, "v", {"publication": "p2", "activity": "@a1"},
                          load=lambda: load_files(server.host, server.port, [path], expected=n).commands,
                          expected_commands=n, verify=lambda c, p: None, keep_versions=2)
    assert client.zscore(K.publications("v"), "p2") is None and not client.hexists(K.doomed("v"), "p2")
    assert current(client, K, "v")["publication"] == "p1"


def test_a_switch_refused_when_full_removes_the_loaded_publication(client, server, tmp_path: Path) -> None:
    """The load fitted, then Redis filled up before the switch: the switch's transaction is refused whole, the
    loaded (never served) publication is removed at once, and the served one stays current."""
    _publish(client, server, tmp_path, "p1", 300)
    served = _keys_of(client, "p1")
    path, n = _resp(tmp_path, "p2", 300)

    def load() -> int:
        done = load_files(server.host, server.port, [path], expected=n).commands
        _over(client)
        return done

    with pytest.raises(RedisMemoryError, match=r"during the switch: .* partial load was removed \(302 keys\)"):
        publish_versioned(client, K, "v", {"publication": "p2"}, load=load, expected_commands=n,
                          verify=lambda c, p: None, keep_versions=2)
    assert _keys_of(client, "p2") == 0 and client.zscore(K.publications("v"), "p2") is None
    assert current(client, K, "v")["publication"] == "p1" and _keys_of(client, "p1") == served


def test_the_cleanup_after_a_switch_frees_memory_in_a_full_redis(client, server, tmp_path: Path,
                                                                monkeypatch: pytest.MonkeyPatch) -> None:
    """Redis is full once the new publication is served: its cleanup still removes what is beyond
    keep_versions (that is what makes room)."""
    from skyrec.publish import publisher

    for pub in ("p1", "p2"):
        _publish(client, server, tmp_path, pub, 300)
    real = publisher._switch

    def switch_then_full(*args, **kwargs):
        out = real(*args, **kwargs)
        _over(client)
        return out

    monkeypatch.setattr(publisher, "_switch", switch_then_full)
    res = _publish(client, server, tmp_path, "p3", 300)
    assert res["cleanup"]["removed"] == ["p1"] and _keys_of(client, "p1") == 0
    assert current(client, K, "v")["publication"] == "p3"


@pytest.mark.parametrize("policy", ["allkeys-lru", "allkeys-lfu", "allkeys-random"])
def test_a_redis_that_may_evict_any_key_is_refused(client, server, tmp_path: Path, policy: str) -> None:
    client.config_set("maxmemory-policy", policy)
    with pytest.raises(RedisEvictsKeysError, match=f"maxmemory-policy {policy}") as err:
        _publish(client, server, tmp_path, "p1", 10)
    assert isinstance(err.value, ConfigError)  # the job exits "bad input": not retried
    assert client.dbsize() == 0
    client.config_set("maxmemory-policy", "volatile-lru")  # evicts only keys with a TTL: skyrec's are its locks
    assert _publish(client, server, tmp_path, "p1", 10)["memory"]["maxmemory_policy"] == "volatile-lru"


def test_swapdb_counts_the_copy_of_the_live_db(client, server, tmp_path: Path) -> None:
    """``publish.strategy: swapdb`` copies every live key into the spare db before its load: a Redis with room
    for the load but not for that copy is refused before the copy starts."""
    from skyrec.publish.publisher import publish_swapdb

    _publish(client, server, tmp_path, "p1", 2000)
    dataset = int(client.info("memory")["used_memory_dataset"])
    client.config_set("maxmemory", int(client.info("memory")["used_memory"]) + dataset // 2)
    path, n = _resp(tmp_path, "p2", 10)

    def load(db: int) -> int:
        return load_files(server.host, server.port, [path], expected=n, db=db).commands

    with pytest.raises(RedisMemoryError, match="needs about"):
        publish_swapdb(client, K, "v", {"publication": "p2"}, load=load, expected_commands=n,
                       verify=lambda c, p: None, keep_versions=2, spare_db=1, need_bytes=10_000)
    assert client.info("keyspace").get("db1") is None  # nothing copied
    client.config_set("maxmemory", 0)
    assert publish_swapdb(client, K, "v", {"publication": "p2"}, load=load, expected_commands=n,
                          verify=lambda c, p: None, keep_versions=2, spare_db=1, need_bytes=10_000)["memory"]["checked"]
    assert current(client, K, "v")["publication"] == "p2"


def test_swapdb_empties_its_spare_db_when_redis_fills_up(client, server, tmp_path: Path) -> None:
    """A swapdb load that Redis refuses midway leaves no copy of the live db behind in the spare db (in a full
    Redis, that copy is the memory needed most)."""
    from skyrec.publish.publisher import publish_swapdb

    _publish(client, server, tmp_path, "p1", 300)
    path, n = _resp(tmp_path, "p2", 5000)

    def load(db: int) -> int:
        client.config_set("maxmemory", int(client.info("memory")["used_memory"]) + 400_000)
        return load_files(server.host, server.port, [path], expected=n, db=db).commands

    with pytest.raises(RedisMemoryError, match="refused writes when full"):
        publish_swapdb(client, K, "v", {"publication": "p2"}, load=load, expected_commands=n,
                       verify=lambda c, p: None, keep_versions=2, spare_db=1, need_bytes=1_000)
    client.config_set("maxmemory", 0)
    assert client.info("keyspace").get("db1") is None  # the spare db is empty
    assert current(client, K, "v")["publication"] == "p1"


@pytest.mark.parametrize(("value_bytes", "keys"), [(1100, 20_000), (180, 20_000), (400, 60_000)])
def test_the_load_estimate_is_near_what_redis_holds_and_not_below_it_by_much(redis_client, value_bytes, keys) -> None:
    """``publisher.load_bytes`` of RESP commands against the ``used_memory`` they add to a real redis-server:
    a JSON list of k=50 is ~1.1 kB, a packed one ~180 bytes. The estimate gates every load: far below, a load
    that cannot fit starts and is refused midway; far above, one that fits is refused."""
    from skyrec.publish.publisher import load_bytes
    from skyrec.publish.resp import encode_command

    rng = np.random.default_rng(value_bytes)
    commands = [encode_command("SET", f"skyrec:rec:rail:v1.20260301T000000-abcdef01:u{i:08d}",
                               rng.integers(97, 123, value_bytes + int(rng.integers(-40, 40)), np.uint8).tobytes())
                for i in range(keys)]
    before = int(redis_client.info("memory")["used_memory"])
    sock = redis_client.connection_pool.get_connection("PING")
    try:
        for start in range(0, keys, 2000):
            sock.send_packed_command([b"".join(commands[start:start + 2000])])
            for _ in commands[start:start + 2000]:
                sock.read_response()
    finally:
        redis_client.connection_pool.release(sock)
    added = int(redis_client.info("memory")["used_memory"]) - before
    estimate = load_bytes(sum(len(c) for c in commands), keys)
    assert 0.95 <= estimate / added <= 1.15, (estimate, added, estimate / added)
