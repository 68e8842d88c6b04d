"""Recent plays per user (``skyrec.scoring.history``): the vectorised top-N against a plain reference, the
streaming fold, and the JSON values it encodes."""

from __future__ import annotations

import datetime as dt
import json

import numpy as np
import pyarrow as pa
import pytest

from skyrec.data.schemas import ACTIVITY
from skyrec.publish.resp import count_commands
from skyrec.scoring import history
from skyrec.scoring.history import encode_history_sets, scan_plays, top_plays

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
