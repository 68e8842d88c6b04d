"""Users' recent plays for a publication (``{p}:hist:...`` keys): the last N plays per user, newest first.

The precompute engine calls ``shard_history`` for each shard of users, so the work and memory follow the
engine's sharding (local process or Beam worker alike): the activity snapshot is scanned with only three
columns and a predicate keeping the shard's users, and reduced to at most N plays per user as it streams
(the state never exceeds ``users x N`` rows plus one bounded buffer of scanned rows). All of it is Arrow and
NumPy kernels: sort by (user, time desc, item), rank within each user's run, keep rank < N, and lay the JSON
values out with string kernels. Tradeoff: every shard scans the snapshot's user/item/time columns once, so
the I/O grows with the number of shards; the sort and the values stay per shard.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from skyrec.publish.resp import encode_sets

COLUMNS = ["user_id", "item_id", "event_ts"]
_REDUCE_ROWS = 1 << 21  # scanned rows buffered before they are folded into the running top-N


def top_plays(table: pa.Table, n: int) -> pa.Table:
    """At most ``n`` plays per user (columns user_id, item_id, event_ts), users ascending, newest first
    within a user (ties broken by item id, so the output is deterministic)."""
    table = table.select(COLUMNS).filter(pc.and_(pc.is_valid(table["user_id"]), pc.is_valid(table["event_ts"])))
    if table.num_rows == 0 or n <= 0:
        return table.slice(0, 0)
    table = table.sort_by([("user_id", "ascending"), ("event_ts", "descending"), ("item_id", "ascending")])
    table = table.combine_chunks()
    codes = pc.dictionary_encode(table["user_id"]).combine_chunks().indices.to_numpy(zero_copy_only=False)
    starts = np.empty(codes.size, dtype=bool)
    starts[0] = True
    np.not_equal(codes[1:], codes[:-1], out=starts[1:])
    group = np.cumsum(starts) - 1
    rank = np.arange(codes.size) - np.flatnonzero(starts)[group]
    return table.filter(pa.array(rank < n))


def scan_plays(batches: Iterable[pa.RecordBatch | pa.Table], n: int) -> pa.Table:
    """``top_plays`` over a stream of batches with bounded memory (folds the buffer into the state)."""
    state = pa.table({c: pa.array([], t) for c, t in
                      (("user_id", pa.string()), ("item_id", pa.string()), ("event_ts", pa.timestamp("us", "UTC")))})
    buffer: list[pa.Table] = []
    buffered = 0
    for batch in batches:
        t = batch if isinstance(batch, pa.Table) else pa.Table.from_batches([batch])
        t = t.select(COLUMNS)
        buffer.append(t.cast(state.schema))
        buffered += t.num_rows
        if buffered >= max(_REDUCE_ROWS, 2 * state.num_rows):
            state = top_plays(pa.concat_tables([state, *buffer]), n)
            buffer, buffered = [], 0
    return top_plays(pa.concat_tables([state, *buffer]), n) if buffer else state


def read_shard_plays(lake: Any, snapshot_path: str, user_ids: pa.Array, n: int) -> pa.Table:
    """The last ``n`` plays of ``user_ids`` from the committed activity snapshot at ``snapshot_path``."""
    import pyarrow.dataset as ds
    from pyarrow.fs import FSSpecHandler, PyFileSystem

    manifest = lake.require(snapshot_path)
    files = [lake.abspath(f"{manifest.path}/{f.path}") for f in manifest.files
             if f.path.endswith(".parquet") and "/_quarantine/" not in f"/{f.path}"]
    if not files or len(user_ids) == 0:
        return scan_plays([], n)
    dataset = ds.dataset(files, format="parquet", filesystem=PyFileSystem(FSSpecHandler(lake.fs)))
    scanner = dataset.scanner(columns=COLUMNS, filter=ds.field("user_id").isin(user_ids), batch_size=1 << 17)
    return scan_plays(scanner.to_batches(), n)


def _json_string(arr: pa.Array) -> pa.Array:
    """The JSON string literal body of each value (backslash and quote escaped; ids carry no control chars,
    which are replaced by U+FFFD rather than emitted raw)."""
    arr = pc.replace_substring(arr, "\\", "\\\\")
    arr = pc.replace_substring(arr, '"', '\\"')
    return pc.replace_substring_regex(arr, r"[\x00-\x1f]", "\ufffd")


def encode_history_sets(key_prefix: str, plays: pa.Table) -> tuple[bytes, int, list[str]]:
    """``SET <key_prefix><user> [["item", "ISO ts"], ...]`` for every user in ``plays`` (the output of
    ``top_plays``: users grouped, newest first). Returns (bytes, number of commands, distinct item ids)."""
    if plays.num_rows == 0:
        return b"", 0, []
    plays = plays.combine_chunks()
    users = plays["user_id"].chunk(0) if isinstance(plays["user_id"], pa.ChunkedArray) else plays["user_id"]
    items = plays["item_id"].chunk(0) if isinstance(plays["item_id"], pa.ChunkedArray) else plays["item_id"]
    ts = plays["event_ts"].chunk(0) if isinstance(plays["event_ts"], pa.ChunkedArray) else plays["event_ts"]
    ts_text = pc.strftime(pc.cast(ts, pa.timestamp("s", "UTC"), safe=False), format="%Y-%m-%dT%H:%M:%SZ")
    elements = pc.binary_join_element_wise("[\"", _json_string(items), "\",\"", ts_text, "\"]", "")
    codes = pc.dictionary_encode(users).indices.to_numpy(zero_copy_only=False)
    starts = np.flatnonzero(np.r_[True, codes[1:] != codes[:-1]])
    offsets = pa.array(np.r_[starts, codes.size].astype(np.int32))
    joined = pc.binary_join(pa.ListArray.from_arrays(offsets, elements), ",")
    values = pc.binary_join_element_wise("[", joined, "]", "")
    keys = pc.binary_join_element_wise(key_prefix, users.take(pa.array(starts)), "")
    return encode_sets(keys, values), int(starts.size), pc.unique(items).to_pylist()
