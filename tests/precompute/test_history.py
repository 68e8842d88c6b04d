"""Recent plays per user (``skyrec.scoring.history``): the vectorised top-N against a plain reference, the
streaming fold, and the JSON values it encodes."""

from __future__ import annotations

import datetime as dt
import json

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pytest
import scipy.sparse as sp
from hypothesis import given, settings
from hypothesis import strategies as st

from skyrec.data.schemas import ACTIVITY
from skyrec.publish.codec import ItemTable
from skyrec.publish.keys import parse_also, parse_history
from skyrec.publish.resp import count_commands, parse_commands
from skyrec.scoring import history
from skyrec.scoring.history import encode_also_sets, encode_history_sets, scan_plays, top_plays

T0 = dt.datetime(2026, 3, 1, tzinfo=dt.UTC)


def _plays(n_rows: int, seed: int = 0) -> pa.Table:
    rng = np.random.default_rng(seed)
    return pa.Table.from_pylist([
        {"user_id": f"u{int(rng.integers(40))}", "item_id": f"i{int(rng.integers(25))}", "event_type": "play",
         "event_ts": T0 - dt.timedelta(minutes=int(rng.integers(500))), "played_seconds": 1.0}
        for _ in range(n_rows)], schema=ACTIVITY)


def _reference(table: pa.Table, n: int) -> list[tuple[str, str, dt.datetime]]:
    rows = sorted(table.to_pylist(), key=lambda r: (r["user_id"], -r["event_ts"].timestamp(), r["item_id"]))
    out, per = [], {}
    for r in rows:
        per[r["user_id"]] = per.get(r["user_id"], 0) + 1
        if per[r["user_id"]] <= n:
            out.append((r["user_id"], r["item_id"], r["event_ts"]))
    return out


def _rows(t: pa.Table) -> list[tuple[str, str, dt.datetime]]:
    return [(r["user_id"], r["item_id"], r["event_ts"]) for r in t.to_pylist()]


@pytest.mark.parametrize("n", [1, 3, 10])
def test_top_plays_and_streaming_fold_match_reference(n: int, monkeypatch) -> None:
    table = _plays(2000)
    assert _rows(top_plays(table, n)) == _reference(table, n)
    monkeypatch.setattr(history, "_REDUCE_ROWS", 100)  # fold many times: same answer, state stays <= users*n
    assert _rows(scan_plays(table.to_batches(max_chunksize=64), n)) == _reference(table, n)
    # with the users given (as read_shard_plays gives them): the same plays, users in that order, their
    # positions in the ``row`` column (looked up once per fold, and sorted on as integers)
    users = sorted({r["user_id"] for r in table.to_pylist()}, key=lambda u: (len(u), u[::-1]))[:-3]  # 3 not asked
    got = scan_plays(table.to_batches(max_chunksize=64), n, pa.array(users))
    want = [r for u in users for r in _reference(table, n) if r[0] == u]
    assert _rows(got) == want
    assert got["row"].to_pylist() == [users.index(u) for u, _, _ in want]


def test_nulls_and_empty_inputs() -> None:
    table = pa.Table.from_pylist([
        {"user_id": None, "item_id": "i1", "event_type": "play", "event_ts": T0, "played_seconds": 1.0},
        {"user_id": "a", "item_id": "i1", "event_type": "play", "event_ts": None, "played_seconds": 1.0}],
        schema=ACTIVITY)
    assert top_plays(table, 5).num_rows == 0
    assert scan_plays([], 5).num_rows == 0
    assert encode_history_sets("p:", scan_plays([], 5)) == (b"", 0, [])


def test_encoded_values_are_json_newest_first() -> None:
    table = pa.Table.from_pylist([
        {"user_id": "a", "item_id": 'q"uo\\te', "event_type": "play", "event_ts": T0, "played_seconds": 1.0},
        {"user_id": "a", "item_id": "émission", "event_type": "play", "event_ts": T0 + dt.timedelta(seconds=61.5),
         "played_seconds": 1.0},
        {"user_id": "b", "item_id": "x", "event_type": "play", "event_ts": T0, "played_seconds": 1.0}],
        schema=ACTIVITY)
    data, n, items = encode_history_sets("skyrec:hist:v:p:", top_plays(table, 10))
    assert n == 2 == count_commands(data) and sorted(items) == sorted(['q"uo\\te', "émission", "x"])
    chunks = data.split(b"\r\n")
    values = {chunks[4].decode(): json.loads(chunks[6]), chunks[11].decode(): json.loads(chunks[13])}
    assert values == {"skyrec:hist:v:p:a": [["émission", "2026-03-01T00:01:01Z"], ['q"uo\\te', "2026-03-01T00:00:00Z"]],
                      "skyrec:hist:v:p:b": [["x", "2026-03-01T00:00:00Z"]]}


def _also_reference(plays: pa.Table, recent_n: int, lists: dict[str, set[str]]) -> dict[str, list[str]]:
    """Plainly: each user's older plays (not among their last ``recent_n``) found in the lists of those."""
    recent = {}
    for u, i, _ in _reference(plays, recent_n):
        recent.setdefault(u, set()).add(i)
    everything: dict[str, set[str]] = {}
    for r in plays.to_pylist():
        everything.setdefault(r["user_id"], set()).add(r["item_id"])
    out = {}
    for u, mine in recent.items():
        listed = set().union(*(lists.get(i, set()) for i in mine))
        out[u] = sorted((listed & everything[u]) - mine)
    return out


@pytest.mark.parametrize("fold_rows", [100, 1 << 21])
def test_also_played_names_each_users_older_plays_in_their_seeds_lists(fold_rows: int, monkeypatch) -> None:
    """The ids "because you played" must also leave out, against a plain reference: the lists of a user's
    recent plays, intersected with everything they played, less the recent plays. Items without a list
    (not in the model) and listed items never played are handled; the played items fold as they stream."""
    monkeypatch.setattr(history, "_REDUCE_ROWS", fold_rows)
    rng = np.random.default_rng(3)
    table = _plays(3000, seed=3)
    seeds = [f"i{j}" for j in range(25)] + ["never"]  # the model's items: i20..i24 are played, have no list
    listed = [f"i{j}" for j in range(3, 25)] + ["never"]  # the rail's candidates, in their order
    lists = {s: {listed[int(c)] for c in rng.choice(len(listed), size=4, replace=False)} for s in seeds[:20]}
    m = np.zeros((len(seeds), len(listed)), np.float32)
    for r, s in enumerate(seeds):
        for i in lists.get(s, ()):
            m[r, listed.index(i)] = 1
    axis = pa.array(sorted(set(table["user_id"].to_pylist()), reverse=True) + ["no-plays"])  # the shard's users
    scan = history.PlayedItems(axis, pa.array(listed))
    n = 3
    plays = scan_plays(scan.tap(table.to_batches(max_chunksize=64)), n)
    also = history.also_played(plays, scan.matrix(), axis, pa.array(seeds), pa.array(listed), sp.csr_matrix(m))
    users = list(dict.fromkeys(plays["user_id"].to_pylist()))
    got = {u: sorted(v) for u, v in zip(users, also.to_pylist(), strict=True)}
    want = _also_reference(table, n, lists)
    assert got == want
    # the recent plays' listed positions from the caller's seed -> listed map (the candidates' item_to_cand)
    to_listed = np.array([listed.index(s) if s in listed else -1 for s in seeds])
    mapped = history.also_played(plays, scan.matrix(), axis, pa.array(seeds), pa.array(listed), sp.csr_matrix(m),
                                 to_listed)
    assert mapped.to_pylist() == also.to_pylist()
    assert sum(map(len, got.values())) > 20  # exercised: many users have older plays in their seeds' lists


def test_older_plays_go_into_the_rails_also_keys_and_both_history_forms_parse() -> None:
    table = pa.Table.from_pylist([
        {"user_id": "a", "item_id": "x", "event_type": "play", "event_ts": T0, "played_seconds": 1.0},
        {"user_id": "b", "item_id": "y", "event_type": "play", "event_ts": T0, "played_seconds": 1.0}],
        schema=ACTIVITY)
    plays = top_plays(table, 5)
    also = pa.ListArray.from_arrays(pa.array([0, 2, 2], pa.int32()), pa.array(['o"ld', "z"]))
    data, n, _ = encode_history_sets("h:", plays)  # the plays alone: the same bytes for every rail
    assert n == 2 and {c[1]: json.loads(c[2]) for c in parse_commands(data)} == {
        b"h:a": [["x", "2026-03-01T00:00:00Z"]], b"h:b": [["y", "2026-03-01T00:00:00Z"]]}
    data, n = encode_also_sets("also:", plays, also)  # only the user who has some
    assert n == 1 and parse_commands(data) == [[b"SET", b"also:a", b'["o\\"ld","z"]']]
    assert parse_also(parse_commands(data)[0][2]) == {'o"ld', "z"}
    assert encode_also_sets("also:", plays, pa.ListArray.from_arrays(pa.array([0, 0, 0], pa.int32()),
                                                                     pa.array([], pa.string()))) == (b"", 0)
    # a packed publication: positions into its item table (the dictionary of the ids, in the table's order)
    ids = pa.array(["p", "z", 'o"ld', "q"])
    coded = pa.ListArray.from_arrays(pa.array([0, 2, 2], pa.int32()),
                                     pa.DictionaryArray.from_arrays(pa.array([2, 1], pa.int32()), ids))
    data, n = encode_also_sets("also:", plays, coded, table_size=4)
    assert n == 1 and parse_commands(data) == [[b"SET", b"also:a", b"\x02\x00\x02\x02\x00\x01\x00"]]
    assert parse_also(parse_commands(data)[0][2], ItemTable(tuple(ids.to_pylist()), 5)) == {'o"ld', "z"}
    with pytest.raises(ValueError, match="a dictionary of its 5 ids"):  # not the table's ids: refused
        encode_also_sets("also:", plays, coded, table_size=5)
    with pytest.raises(ValueError, match="dictionary"):
        encode_also_sets("also:", plays, also, table_size=4)
    # both value forms parse: the plain list, and the object older publications wrote
    assert parse_history(b'[["x", "2026-03-01T00:00:00Z"]]') == ([("x", "2026-03-01T00:00:00Z")], set())
    assert parse_history(b'{"plays": [["x"], 3, ["y", "t"]], "also_played": [1, "q"]}') == ([("y", "t")], {"q"})
    with pytest.raises(ValueError):
        parse_history(b"not json")
    with pytest.raises(ValueError):
        parse_also(b'{"not": "a list"}')
    with pytest.raises(ValueError, match="3 entries for 2 users"):
        encode_also_sets("also:", plays, pa.ListArray.from_arrays(pa.array([0, 1, 1, 1], pa.int32()), pa.array(["q"])))


@settings(max_examples=60, deadline=None)
@given(st.lists(st.datetimes(min_value=dt.datetime(1, 1, 1), max_value=dt.datetime(9999, 12, 31, 23, 59, 59)),
                min_size=1, max_size=40),
       st.datetimes(min_value=dt.datetime(1900, 1, 1), max_value=dt.datetime(2100, 1, 1)),
       st.integers(0, 3))
def test_iso_seconds_is_strftimes_text(far: list[dt.datetime], near: dt.datetime, spread_days: int) -> None:
    """The laid-out timestamps equal Arrow's strftime, to the second (truncated as its cast does), on the fast
    path (a span of days: before and after 1970, sub-second parts) and on the fallback (years far apart)."""
    rng = np.random.default_rng(len(far))
    offsets = rng.integers(-spread_days * 86_400_000_000 - 1, spread_days * 86_400_000_000 + 1, size=50)
    close = [near.replace(tzinfo=dt.UTC) + dt.timedelta(microseconds=int(o)) for o in offsets]
    for values in (close, [d.replace(tzinfo=dt.UTC) for d in far]):
        ts = pa.array(values, pa.timestamp("us", "UTC"))
        want = pc.strftime(pc.cast(ts, pa.timestamp("s", "UTC"), safe=False), format="%Y-%m-%dT%H:%M:%SZ")
        assert history.iso_seconds(ts).to_pylist() == want.to_pylist()
