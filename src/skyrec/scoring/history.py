"""Users' recent plays for a publication (``{p}:hist:...`` keys): the last N plays per user, newest first.

The precompute engine calls ``shard_history`` for each shard of users, so the work and memory follow the
engine's sharding (local process or Beam worker alike): the activity snapshot is scanned with only three
columns and a predicate keeping the shard's users, and reduced to at most N plays per user as it streams
(the state never exceeds ``users x N`` rows plus one bounded buffer of scanned rows). All of it is Arrow and
NumPy kernels: sort by (user, time desc, item), rank within each user's run, keep rank < N, and lay the JSON
values out with string kernels. Tradeoff: every shard scans the snapshot's user/item/time columns once, so
the I/O grows with the number of shards; the sort and the values stay per shard.

"Because you played X" leaves out what the user has played. The recent plays are in the value; older plays
that could come back are those in the "more like this" lists of the recent plays (the API's seeds). With the
lists given (a seed x listed-item matrix, ``also_played``), the same scan also keeps the shard's distinct
(user, listed item) pairs, and a user whose seeds' lists hold items they played earlier gets those ids in
the value too: ``{"plays": [[item, ts], ...], "also_played": [item, ...]}`` (users with none keep the plain
list, so the common value costs no extra byte). Exact, and bounded: at most ``history_items x similar_k``
ids per user.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import scipy.sparse as sp

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


def read_shard_plays(lake: Any, snapshot_path: str, user_ids: pa.Array, n: int,
                     keep_items: pa.Array | None = None) -> tuple[pa.Table, pa.Table | None]:
    """The last ``n`` plays of ``user_ids`` from the committed activity snapshot at ``snapshot_path`` and, when
    ``keep_items`` is given, the users' distinct (user_id, item_id) pairs whose item is one of them (all their
    plays of those items, however old): one scan of the snapshot for both."""
    import pyarrow.dataset as ds
    from pyarrow.fs import FSSpecHandler, PyFileSystem

    manifest = lake.require(snapshot_path)
    files = [lake.abspath(f"{manifest.path}/{f.path}") for f in manifest.files
             if f.path.endswith(".parquet") and "/_quarantine/" not in f"/{f.path}"]
    pairs = _Pairs(keep_items) if keep_items is not None else None
    if not files or len(user_ids) == 0:
        return scan_plays([], n), pairs.table() if pairs is not None else None
    dataset = ds.dataset(files, format="parquet", filesystem=PyFileSystem(FSSpecHandler(lake.fs)))
    scanner = dataset.scanner(columns=COLUMNS, filter=ds.field("user_id").isin(user_ids), batch_size=1 << 17)
    batches = scanner.to_batches() if pairs is None else pairs.tap(scanner.to_batches())
    plays = scan_plays(batches, n)
    return plays, pairs.table() if pairs is not None else None


class _Pairs:
    """Distinct (user_id, item_id) pairs of the scanned rows whose item is in ``keep``, folded as they stream
    (the state is the distinct pairs, plus one bounded buffer)."""

    def __init__(self, keep: pa.Array) -> None:
        self.keep = keep
        self.state = pa.table({"user_id": pa.array([], pa.string()), "item_id": pa.array([], pa.string())})
        self.buffer: list[pa.Table] = []
        self.buffered = 0

    def tap(self, batches: Iterable[pa.RecordBatch | pa.Table]) -> Iterable[pa.RecordBatch | pa.Table]:
        for batch in batches:
            t = batch if isinstance(batch, pa.Table) else pa.Table.from_batches([batch])
            t = t.select(["user_id", "item_id"]).cast(self.state.schema)
            t = t.filter(pc.fill_null(pc.and_(pc.is_valid(t["user_id"]), pc.is_in(t["item_id"], value_set=self.keep)), False))
            self.buffer.append(t)
            self.buffered += t.num_rows
            if self.buffered >= max(_REDUCE_ROWS, 2 * self.state.num_rows):
                self._fold()
            yield batch

    def _fold(self) -> None:
        merged = pa.concat_tables([self.state, *self.buffer])
        self.state = merged.group_by(["user_id", "item_id"], use_threads=False).aggregate([])
        self.buffer, self.buffered = [], 0

    def table(self) -> pa.Table:
        if self.buffer:
            self._fold()
        return self.state


def also_played(plays: pa.Table, pairs: pa.Table, seed_ids: pa.Array, listed_ids: pa.Array,
                lists: sp.csr_matrix) -> pa.ListArray:
    """For each user of ``plays`` (the output of ``top_plays``, in its order), the items in the lists of
    their recent plays (``lists``: seed x listed item, rows ``seed_ids``, columns ``listed_ids``) that they
    played (``pairs``) and that are not among those recent plays: what "because you played" must also leave
    out. Item ids of a user's list in ``listed_ids`` order; a user with none gets an empty list."""
    plays = plays.combine_chunks()
    enc = pc.dictionary_encode(plays["user_id"]).combine_chunks()
    users, codes = enc.dictionary, enc.indices.to_numpy(zero_copy_only=False)
    n_users, n_listed = len(users), len(listed_ids)
    if n_users == 0:
        return pa.ListArray.from_arrays(pa.array([0], pa.int32()), pa.array([], pa.string()))

    def matrix(rows: np.ndarray, cols: pa.Array, n_cols: int) -> sp.csr_matrix:
        cols_np = cols.to_numpy(zero_copy_only=False)
        ok = ~pc.is_null(cols).to_numpy(zero_copy_only=False) & (rows >= 0)
        return sp.csr_matrix((np.ones(int(ok.sum()), np.float32), (rows[ok], cols_np[ok].astype(np.int64))),
                             shape=(n_users, n_cols))

    recent_seeds = matrix(codes, pc.index_in(plays["item_id"], value_set=seed_ids), len(seed_ids))
    listed = (recent_seeds @ lists).astype(bool).astype(np.float32)
    pair_users = pc.index_in(pairs["user_id"], value_set=users).fill_null(-1).to_numpy(zero_copy_only=False)
    played = matrix(pair_users.astype(np.int64), pc.index_in(pairs["item_id"], value_set=listed_ids), n_listed)
    recent = matrix(codes, pc.index_in(plays["item_id"], value_set=listed_ids), n_listed).astype(bool)
    out = listed.multiply(played.astype(bool)).astype(bool)
    out = (out > recent).tocsr()  # older plays only: the recent ones are in the value already
    out.sort_indices()
    return pa.ListArray.from_arrays(pa.array(out.indptr.astype(np.int32)),
                                    listed_ids.take(pa.array(out.indices.astype(np.int64))))


def _json_string(arr: pa.Array) -> pa.Array:
    """The JSON string literal body of each value (backslash and quote escaped; ids carry no control chars,
    which are replaced by U+FFFD rather than emitted raw)."""
    arr = pc.replace_substring(arr, "\\", "\\\\")
    arr = pc.replace_substring(arr, '"', '\\"')
    return pc.replace_substring_regex(arr, r"[\x00-\x1f]", "\ufffd")


def encode_history_sets(key_prefix: str, plays: pa.Table,
                        also: pa.ListArray | None = None) -> tuple[bytes, int, list[str]]:
    """``SET <key_prefix><user> [["item", "ISO ts"], ...]`` for every user in ``plays`` (the output of
    ``top_plays``: users grouped, newest first); a user with a non-empty ``also`` entry (``also_played``,
    aligned with the users) gets ``{"plays": [...], "also_played": ["item", ...]}``. Returns (bytes, number
    of commands, distinct item ids of the plays)."""
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
    if also is not None and len(also.values):
        if len(also) != starts.size:
            raise ValueError(f"also_played: {len(also)} entries for {starts.size} users")
        quoted = pc.binary_join_element_wise("\"", _json_string(also.values), "\"", "")
        ids = pc.binary_join(pa.ListArray.from_arrays(also.offsets, quoted), ",")
        obj = pc.binary_join_element_wise("{\"plays\":", values, ",\"also_played\":[", ids, "]}", "")
        values = pc.if_else(pc.greater(pc.list_value_length(also), 0), obj, values)
    keys = pc.binary_join_element_wise(key_prefix, users.take(pa.array(starts)), "")
    return encode_sets(keys, values), int(starts.size), pc.unique(items).to_pylist()

