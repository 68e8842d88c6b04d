"""RESP mass-insertion encoding round-trips through a real redis-server; loads count every reply."""

from __future__ import annotations

from pathlib import Path

import pyarrow as pa
import pytest

from skyrec.publish.resp import (
    RedisLoadError,
    count_commands,
    encode_command,
    encode_hset,
    encode_sadd,
    encode_sets,
    load_files,
    redis_cli_pipe,
)
from skyrec.redis_local import free_port


def test_encode_command_is_resp() -> None:
    assert encode_command("SET", "k", "v") == b"*3\r\n$3\r\nSET\r\n$1\r\nk\r\n$1\r\nv\r\n"
    data = encode_sets(pa.array(["a", "é"]), pa.array(["x\r\ny", ""]))
    assert count_commands(data) == 2
    assert data.startswith(b"*3\r\n$3\r\nSET\r\n$1\r\na\r\n$4\r\nx\r\ny\r\n")
    with pytest.raises(ValueError, match="keys"):
        encode_sets(pa.array(["a"]), pa.array(["x", "y"]))
    with pytest.raises(ValueError, match="malformed"):
        count_commands(b"SET a b\r\n")


@pytest.mark.integration
@pytest.mark.parametrize("loader", ["socket", "redis-cli"])
def test_round_trip_through_redis(redis_client, tmp_path: Path, loader: str) -> None:
    keys = [f"skyrec:rec:v:p:user{i}" for i in range(5000)] + ["skyrec:rec:v:p:ünïcode"]
    values = [f'[["item{i}",0.{i}]]' for i in range(5000)] + ['[["a \\"quoted\\" id\\r\\n",1e-05]]']
    body = encode_sets(pa.array(keys), pa.array(values))
    hset, n_h = encode_hset("skyrec:items:v:p", [(f"item{i}", '{"title":"T"}') for i in range(2500)], chunk=1000)
    sadd, n_s = encode_sadd("skyrec:users:v:p", ["user1", "user2"])
    (tmp_path / "a.resp").write_bytes(body)
    (tmp_path / "b.resp").write_bytes(hset + sadd)
    files = [tmp_path / "a.resp", tmp_path / "b.resp"]
    expected = len(keys) + n_h + n_s
    assert n_h == 3 and count_commands(hset + sadd) == n_h + n_s
    pool = redis_client.connection_pool.connection_kwargs
    if loader == "socket":
        res = load_files(pool["host"], pool["port"], files, expected=expected, chunk=4096)
    else:
        res = redis_cli_pipe(pool["host"], pool["port"], files)
    assert res.commands == expected
    assert redis_client.dbsize() == len(keys) + 2
    for k, v in zip(keys[::997] + keys[-1:], values[::997] + values[-1:], strict=True):
        assert redis_client.get(k).decode() == v
    assert redis_client.hlen("skyrec:items:v:p") == 2500


@pytest.mark.integration
def test_errors_and_unreachable_are_reported(redis_client, tmp_path: Path) -> None:
    redis_client.set("a-string", "x")
    f = tmp_path / "bad.resp"
    f.write_bytes(encode_command("HSET", "a-string", "f", "v") + encode_command("SET", "ok", "1"))
    pool = redis_client.connection_pool.connection_kwargs
    with pytest.raises(RedisLoadError, match="1 errors.*WRONGTYPE"):
        load_files(pool["host"], pool["port"], [f], expected=2)
    with pytest.raises(RedisLoadError, match="unreachable"):
        load_files("127.0.0.1", free_port(), [f], expected=2, timeout=2)


def test_vectorised_rec_values_are_json_equal_to_the_results() -> None:
    import json

    import numpy as np

    from skyrec.publish.resp import encode_rec_sets, fixed_width_fragments, format_scores

    rng = np.random.default_rng(0)
    scores = np.concatenate([rng.standard_normal(500) * 10.0 ** rng.integers(-6, 5, 500), [0.0, -0.0, -1e-9]])
    text = [bytes(r).decode() for r in format_scores(scores.astype(np.float32), 5)]
    np.testing.assert_allclose([json.loads(t) for t in text], np.round(scores.astype(np.float32).astype(float), 5),
                               atol=1e-5, rtol=1e-6)
    ids = ["a", "long-item-id-1234", 'q"uote', "é"]
    frags = fixed_width_fragments(ids)
    items = rng.integers(0, 4, size=(6, 5))
    vals = rng.standard_normal((6, 5)).astype(np.float32)
    counts = np.array([5, 0, 1, 3, 5, 2])
    data, n = encode_rec_sets("p:", [f"u{i}" for i in range(6)], frags, items, vals, counts, 4)
    assert n == 5 and count_commands(data) == 5
    parts = data.split(b"\r\n")
    values = {parts[i + 4].decode(): json.loads(parts[i + 6]) for i in range(0, len(parts) - 1, 7)}
    assert "p:u1" not in values
    for u in (0, 2, 3, 4, 5):
        got = values[f"p:u{u}"]
        assert [g[0] for g in got] == [ids[j] for j in items[u, :counts[u]]]
        np.testing.assert_allclose([g[1] for g in got], np.round(vals[u, :counts[u]].astype(float), 4), atol=1e-4)
