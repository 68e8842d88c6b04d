"""RDB files written directly from RESP mass-insertion files: the CRC-64 is Redis's, a real redis-server loads
the file into exactly the state that loading the same commands produces, and malformed input is refused
with the file and the byte named."""

from __future__ import annotations

import io
from pathlib import Path

import numpy as np
import pyarrow as pa
import pytest
import redis

from skyrec.publish.rdb import RdbError, crc64, meta_records, set_records, write_rdb
from skyrec.publish.resp import encode_command, encode_hset, encode_sadd, encode_sets, load_files
from skyrec.redis_local import LocalRedis, RedisUnavailable, free_port


def test_crc64_is_redis_crc64_jones() -> None:
    assert crc64(b"123456789") == 0xE9C6D914C4B8D9CA  # redis/src/crc64.c's test vector
    data = np.random.default_rng(1).integers(0, 256, 100_003, dtype=np.uint8).tobytes()
    assert crc64(data) == crc64(data[40_001:], crc64(data[:40_001]))
    assert crc64(b"") == 0


def _resp_files(tmp_path: Path) -> tuple[Path, list[Path], int]:
    """A meta file (SET, HSET chunks with an overwritten field, SADD with a repeated member) and two SET files
    whose keys and values cross RDB's length-encoding boundaries (63/64, 16383/16384 bytes) and hold binary."""
    rng = np.random.default_rng(7)
    meta = encode_command("SET", "p:fallback", "[]")
    hset, n_h = encode_hset("p:items", [(f"i{j}", f'{{"t":{j}}}') for j in range(300)] + [("i5", "new")], chunk=100)
    sadd, n_s = encode_sadd("p:users", ["u1", "u2", "u1", "u3"], chunk=2)
    (tmp_path / "meta.resp").write_bytes(meta + hset + sadd)
    sizes = [0, 1, 63, 64, 65, 16383, 16384, 16385, 70_000]
    parts = []
    for f in range(2):
        keys = [f"p:rec:{f}:" + "k" * (s % 100) + str(i) for i, s in enumerate(sizes)]
        values = [rng.integers(0, 256, s, dtype=np.uint8).tobytes() for s in sizes]
        path = tmp_path / f"part-{f}.resp"
        path.write_bytes(b"".join(encode_command("SET", k, v) for k, v in zip(keys, values, strict=True)))
        parts.append(path)
    return tmp_path / "meta.resp", parts, 1 + n_h + n_s + 2 * len(sizes)


def _dump(client: redis.Redis) -> dict[bytes, object]:
    out: dict[bytes, object] = {}
    for key in client.scan_iter(count=1000):
        kind = client.type(key)
        out[key] = (client.get(key) if kind == b"string" else client.hgetall(key) if kind == b"hash"
                    else client.smembers(key))
    return out


@pytest.mark.integration
def test_redis_loads_the_rdb_into_the_state_the_commands_produce(tmp_path: Path, redis_client) -> None:
    meta, parts, commands = _resp_files(tmp_path)
    buf = io.BytesIO()
    res = write_rdb(buf, meta, parts, keys_hint=21)
    assert res.commands == commands and res.keys == 3 + 2 * 9 and res.bytes == len(buf.getvalue())
    data = buf.getvalue()
    assert data[:9] == b"REDIS0009" and data[-9] == 0xFF
    assert int.from_bytes(data[-8:], "little") == crc64(data[:-8]) == res.crc64

    # the reference: the same commands loaded into a real Redis
    pool = redis_client.connection_pool.connection_kwargs
    load_files(pool["host"], pool["port"], [meta, *parts], expected=commands)
    want = _dump(redis_client)
    assert want[b"p:items"][b"i5"] == b"new" and want[b"p:users"] == {b"u1", b"u2", b"u3"}

    rdb_dir = tmp_path / "restore"
    rdb_dir.mkdir()
    (rdb_dir / "dump.rdb").write_bytes(data)
    server = LocalRedis(port=free_port(), dir=rdb_dir).start(dbfilename="dump.rdb")
    try:
        c = redis.Redis(host=server.host, port=server.port)
        assert c.dbsize() == len(want)
        assert _dump(c) == want
        c.close()
    finally:
        server.stop()


@pytest.mark.integration
def test_a_corrupted_rdb_is_refused_by_redis(tmp_path: Path) -> None:
    meta, parts, _ = _resp_files(tmp_path)
    buf = io.BytesIO()
    write_rdb(buf, meta, parts, keys_hint=21)
    data = bytearray(buf.getvalue())
    data[len(data) // 2] ^= 0x01  # one bit of a value: only the checksum can tell
    rdb_dir = tmp_path / "bad"
    rdb_dir.mkdir()
    (rdb_dir / "dump.rdb").write_bytes(bytes(data))
    server = LocalRedis(port=free_port(), dir=rdb_dir)
    try:
        with pytest.raises(RedisUnavailable):
            server.start(dbfilename="dump.rdb", wait=5)
    finally:
        server.stop()


def test_malformed_resp_is_refused_naming_the_file_and_byte() -> None:
    good = encode_sets(pa.array(["a", "b"]), pa.array(["1", "2"]))
    records, n = set_records(good, "part.resp")
    assert n == 2 and records == b"\x00\x01a\x011\x00\x01b\x012"
    bad = bytearray(good)
    second = good.index(b"*3", 1)
    bad[second + 9] = ord("Z")  # "ZET"
    with pytest.raises(RdbError, match=rf"part.resp: .*byte {second} \(after 1 commands\)"):
        set_records(bytes(bad), "part.resp")
    with pytest.raises(RdbError, match="part.resp"):
        set_records(good[:-3], "part.resp")  # truncated inside the last value
    with pytest.raises(RdbError, match="part.resp"):
        set_records(good.replace(b"$1\r\n1", b"$9\r\n1"), "part.resp")  # a length beyond the data
    with pytest.raises(RdbError, match="not SET/HSET/SADD"):
        meta_records(encode_command("DEL", "x"))
    with pytest.raises(RdbError, match="as a hash and as a string"):
        meta_records(encode_command("SET", "x", "1") + encode_command("HSET", "x", "f", "v"))
