"""The packed value encoding: round trips, the same served scores as JSON, order, errors, real Redis memory."""

from __future__ import annotations

import json

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from skyrec.publish.codec import (
    ITEM_TABLE_FIELD,
    CodecError,
    ItemTable,
    decode_also,
    decode_packed,
    decode_value,
    encode_also_values,
    encode_packed_sets,
    encode_packed_values,
    parse_table,
    table_value,
)
from skyrec.publish.keys import parse_also
from skyrec.publish.resp import count_commands, encode_rec_sets, fixed_width_fragments, load_files
from skyrec.serve.store import parse_rec, parse_scored


def _lists(rng: np.random.Generator, b: int, k: int, n_items: int, spread: float = 1.5) -> tuple[np.ndarray, ...]:
    items = np.stack([rng.choice(n_items, k, replace=False) for _ in range(b)])
    scores = -np.sort(-(rng.standard_normal((b, k)) * spread), axis=1).astype(np.float32)
    counts = rng.integers(0, k + 1, b)
    return items, scores, counts


def _values(data: bytes, offsets: np.ndarray) -> list[bytes]:
    return [data[int(a):int(z)] for a, z in zip(offsets[:-1], offsets[1:], strict=True)]


@pytest.mark.parametrize("n_items", [300, 70_000])  # uint16 and uint32 positions
@pytest.mark.parametrize("decimals", [0, 3, 5])
def test_packed_round_trip_serves_the_json_scores(n_items: int, decimals: int) -> None:
    rng = np.random.default_rng(n_items + decimals)
    ids = [f"p{j:07d}" for j in range(n_items)]
    items, scores, counts = _lists(rng, 64, 50, n_items)
    counts[:3] = [0, 1, 50]
    data, offsets = encode_packed_values(items, scores, counts, decimals, n_items)
    table = ItemTable(tuple(ids), decimals)
    json_resp, _ = encode_rec_sets("k:", [str(i) for i in range(64)], fixed_width_fragments(ids), items, scores,
                                   counts, decimals)
    json_values = iter(cmd for cmd in json_resp.split(b"\r\n") if cmd.startswith(b"["))
    for r, value in enumerate(_values(data, offsets)):
        if counts[r] == 0:
            assert value == b""
            continue
        got = decode_packed(value, table)
        assert [i for i, _ in got] == [ids[j] for j in items[r, :counts[r]]]  # the kernel's order, exactly
        # the very floats the JSON encoding serves (same quantisation, same decimal rounding)
        assert got == parse_scored(next(json_values))
        # tolerance: half a quantum
        assert max(abs(s - float(x)) for (_, s), x in zip(got, scores[r, :counts[r]], strict=True)) \
            <= 0.5 * 10.0 ** -decimals + 1e-6 * max(1.0, float(np.abs(scores[r]).max()))
        served = [s for _, s in got]
        assert served == sorted(served, reverse=True)  # never increasing down a list


@settings(max_examples=200, deadline=None)
@given(st.lists(st.floats(-1e6, 1e6, allow_nan=False, width=32), min_size=1, max_size=120),
       st.integers(0, 6), st.integers(1, 2000))
def test_packed_property(raw_scores: list[float], decimals: int, n_items: int) -> None:
    """Any best-first list: positions come back in order, scores are the rounded ones, distinct rounded
    scores keep their order (the tie rule: equal after rounding is equal when served)."""
    scores = np.sort(np.asarray(raw_scores, dtype=np.float32))[::-1][None, :]
    k = scores.shape[1]
    items = (np.arange(k) * 7919 % n_items)[None, :]
    data, offsets = encode_packed_values(items, scores, np.array([k]), decimals, n_items)
    got = decode_packed(data, ItemTable(tuple(f"i{j}" for j in range(n_items)), decimals))
    assert [i for i, _ in got] == [f"i{j}" for j in items[0]]
    want = [int(np.rint(np.float64(x) * 10.0 ** decimals)) / 10.0 ** decimals for x in scores[0]]
    assert [s for _, s in got] == want


def test_values_are_small_and_self_describing() -> None:
    rng = np.random.default_rng(0)
    items, scores, _ = _lists(rng, 256, 50, 20_000, spread=0.3)
    data, offsets = encode_packed_values(items, scores, np.full(256, 50), 5, 20_000)
    sizes = np.diff(offsets)
    assert sizes.max() <= 2 + 1 + 100 + 5 + 49 * 4 and sizes.mean() < 240  # vs ~1.2 KB of JSON
    assert all(v[:1] == b"\x01" for v in _values(data, offsets))
    # RESP: one SET per user with a list
    counts = np.full(256, 50)
    counts[::2] = 0
    resp, n = encode_packed_sets("skyrec:rec:v:p:", [f"u{i}" for i in range(256)], items, scores, counts, 5,
                                 20_000)
    assert n == 128 == count_commands(resp)


def test_encoder_refuses_what_it_cannot_represent() -> None:
    items = np.array([[0, 1, 2]])
    with pytest.raises(ValueError, match="best first"):
        encode_packed_values(items, np.array([[1.0, 2.0, 0.5]]), np.array([3]), 5, 10)
    with pytest.raises(ValueError, match="item table"):
        encode_packed_values(np.array([[0, 11, 2]]), np.array([[3.0, 2.0, 1.0]]), np.array([3]), 5, 10)
    with pytest.raises(ValueError, match="decimals"):
        encode_packed_values(items, np.array([[1e9, 2.0, 1.0]]), np.array([3]), 9, 10)


def test_decoder_names_what_is_wrong() -> None:
    table = ItemTable(("a", "b", "c"), 2)
    data, _ = encode_packed_values(np.array([[2, 0, 1]]), np.array([[3.0, 2.5, -1.0]]), np.array([3]), 2, 3)
    assert decode_packed(data, table) == [("c", 3.0), ("a", 2.5), ("b", -1.0)]
    for bad, why in [(data[:-1], "does not hold"), (data + b"\x00", "does not hold"), (data[:4], "truncated"),
                     (b"[1]", "not a packed"), (data[:2] + b"\x80", "truncated")]:
        with pytest.raises(CodecError, match=why):
            decode_packed(bad, table)
    with pytest.raises(CodecError, match="beyond the item table"):
        decode_packed(data, ItemTable(("a", "b"), 2))
    with pytest.raises(CodecError, match="no item table"):
        decode_value(data, None)
    assert decode_value(b'[["x", 1.5]]', None) == [("x", 1.5)]
    with pytest.raises(CodecError, match="neither"):
        decode_value(b'{"x": 1}', table)
    # the API's reader: undecodable -> [] (the answer pads from the fallback), absent -> None
    assert parse_rec(data[:-1], table) == [] and parse_rec(data, None) == [] and parse_rec(None, table) is None
    assert parse_rec(data, table) == [("c", 3.0), ("a", 2.5), ("b", -1.0)]
    assert parse_rec(b'[["x", 1.5]]', table) == [("x", 1.5)]


def test_item_table() -> None:
    raw = table_value(["a", "é"], 5)
    assert parse_table(raw) == ItemTable(("a", "é"), 5) and parse_table(raw.encode()).scale == 1e5
    for bad, why in [(None, "no item table"), ("{", "not JSON"), ('{"encoding": "json"}', "not a packed"),
                     (json.dumps({"encoding": "packed", "version": 9}), "version"),
                     (json.dumps({"encoding": "packed", "version": 1, "decimals": 12, "items": []}), "decimals"),
                     (json.dumps({"encoding": "packed", "version": 1, "decimals": 1, "items": [1]}), "strings")]:
        with pytest.raises(CodecError, match=why):
            parse_table(bad)
    assert ITEM_TABLE_FIELD.startswith("\x00")


@pytest.mark.integration
def test_packed_values_use_a_third_of_the_memory_in_redis(redis_client, redis_server, tmp_path) -> None:
    """Both encodings of the same lists, loaded into a real redis-server: used_memory per user at k = 50."""
    rng = np.random.default_rng(3)
    n, k, n_items = 4000, 50, 20_000
    ids = [f"p{j:07d}" for j in range(n_items)]
    items, scores, _ = _lists(rng, n, k, n_items, spread=0.3)
    counts = np.full(n, k)
    users = [f"user{i:07d}" for i in range(n)]
    per_user = {}
    for name in ("json", "packed"):
        redis_client.flushdb()
        prefix = f"skyrec:rec:recommended_for_you:v1.20261123T190000-3f9a1c2e-{name}:"
        if name == "json":
            resp, cmds = encode_rec_sets(prefix, users, fixed_width_fragments(ids), items, scores, counts, 5)
        else:
            resp, cmds = encode_packed_sets(prefix, users, items, scores, counts, 5, n_items)
        path = tmp_path / f"{name}.resp"
        path.write_bytes(resp)
        before = redis_client.info("memory")["used_memory"]
        load_files(redis_server.host, redis_server.port, [path], expected=cmds)
        per_user[name] = (redis_client.info("memory")["used_memory"] - before) / n
        assert redis_client.dbsize() == n
    redis_client.flushdb()
    assert per_user["packed"] <= 450, per_user
    assert per_user["packed"] * 3 <= per_user["json"], per_user


def test_long_lists_and_constant_scores() -> None:
    """k = 1000 (the config's maximum: a two-byte length) and lists of equal scores (zero gaps)."""
    rng = np.random.default_rng(5)
    k = 1000
    items = rng.permutation(5000)[:k][None, :]
    scores = np.sort(rng.random(k))[::-1][None, :]
    table = ItemTable(tuple(f"i{j}" for j in range(5000)), 5)
    data, _ = encode_packed_values(items, scores, np.array([k]), 5, 5000)
    got = decode_packed(data, table)
    assert len(got) == k and [i for i, _ in got] == [f"i{j}" for j in items[0]]
    data, _ = encode_packed_values(items[:, :3], np.full((1, 3), 0.25), np.array([3]), 5, 5000)
    assert [s for _, s in decode_packed(data, table)] == [0.25, 0.25, 0.25]


@settings(max_examples=60, deadline=None)
@given(st.lists(st.lists(st.integers(0, 69_999), max_size=300), max_size=40), st.sampled_from([150, 65_536, 70_000]))
def test_packed_also_values_round_trip(sets: list[list[int]], table_size: int) -> None:
    """The ``also`` ids of a packed publication: item table positions, 2 bytes each up to 65,536 items (4 above),
    any number per user (a count of 128 and more takes a 2-byte varint), read back as the same id sets."""
    sets = [[p % table_size for p in s] for s in sets]
    table = ItemTable(tuple(f"i{j}" for j in range(table_size)), 5)
    offsets = np.r_[0, np.cumsum([len(s) for s in sets])].astype(np.int64)
    positions = np.array([p for s in sets for p in s], np.int64)
    data, offs = encode_also_values(offsets, positions, table_size)
    width = 4 if table_size > 65_536 else 2
    for u, s in enumerate(sets):
        raw = data[offs[u]:offs[u + 1]]
        assert raw[0] == 0x02 and len(raw) == 2 + (1 if len(s) < 128 else 2) + width * len(s)
        assert decode_also(raw, table) == {f"i{p}" for p in s}
        assert parse_also(raw, table) == {f"i{p}" for p in s}


def test_packed_also_values_refuse_and_name_what_is_wrong() -> None:
    table = ItemTable(("a", "b", "c"), 5)
    with pytest.raises(ValueError, match=r"within the item table \(0..2\)"):
        encode_also_values(np.array([0, 1]), np.array([3]), 3)
    with pytest.raises(ValueError, match="offsets must rise"):
        encode_also_values(np.array([0, 2]), np.array([1]), 3)
    data, _ = encode_also_values(np.array([0, 2]), np.array([2, 0]), 3)
    assert data == b"\x02\x00\x02\x02\x00\x00\x00" and decode_also(data, table) == {"a", "c"}
    with pytest.raises(CodecError, match="7 bytes does not hold 3 items"):
        decode_also(b"\x02\x00\x03" + data[3:], table)
    with pytest.raises(CodecError, match="truncated in its length"):
        decode_also(b"\x02\x00\x80", table)
    with pytest.raises(CodecError, match="beyond the item table"):
        decode_also(b"\x02\x00\x01\x05\x00", table)
    with pytest.raises(CodecError, match="not a packed also value"):
        decode_also(b"\x01\x00\x00", table)
    with pytest.raises(CodecError, match="no item table"):
        parse_also(data, None)
    assert parse_also(b'["a", 1]', None) == {"a"}  # a JSON value (json publications, and older packed ones)
