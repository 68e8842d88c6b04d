"""Users' recent plays (``{p}:hist:...`` keys, shared by the rails of one activity snapshot): the last N plays
per user, newest first.

The precompute engine calls ``read_shard_plays`` for each shard of users, so the work and memory follow the
engine's sharding (local process or Beam worker alike): the activity snapshot is scanned with only three
columns and a predicate keeping the shard's users, and reduced to at most N plays per user as it streams
(the state never exceeds ``users x N`` rows plus one bounded buffer of scanned rows). All of it is Arrow and
NumPy kernels: sort by (user, time desc, item), rank within each user's run, keep rank < N, and lay the JSON
values out with string kernels. A scan per shard costs shards x snapshot rows (14 scans of a 70M-row
snapshot at 3.5M users): one process that scores several shards (the local engine) reads them all in one
scan and splits it (``Scorer.read_histories``); Beam workers scan once per shard, in parallel.

"Because you played X" leaves out what the user has played. The recent plays are in the value; older plays
that could come back are those in the "more like this" lists of the recent plays (the API's seeds). With the
lists given (a seed x listed-item matrix), the same scan also notes which listed items each user of the
shard played (``PlayedItems``: integer positions folded into a boolean sparse matrix), and one compiled pass
(``also_played``: per user, mark the items of their seeds' lists, keep their played ones, unmark the recent)
gives each user the older plays to name, in a key of the rail's own (``encode_also_sets``; users with none get
no key), since the plays themselves are shared by every rail (``encode_history_sets``). Exact, and bounded: at
most ``history_items x similar_k`` ids per user. ``benchmarks/bench_history.py`` times it against the plain step.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import scipy.sparse as sp

from skyrec.publish.codec import encode_also_values
from skyrec.publish.resp import encode_sets
from skyrec.scoring.topk import _compiled

COLUMNS = ["user_id", "item_id", "event_ts"]
ROW = "row"  # a user's position in the users asked for (``read_shard_plays``)
_REDUCE_ROWS = 1 << 21  # scanned rows buffered before they are folded into the running top-N


def top_plays(table: pa.Table, n: int) -> pa.Table:
    """At most ``n`` plays per user (columns user_id, item_id, event_ts), users ascending, newest first
    within a user (ties broken by item id, so the output is deterministic). With a column ``row`` (the user's
    position in a list of users, as ``read_shard_plays`` adds it) the users come in that order instead, and
    the sort's first key is that integer, not the id's string (2-3x faster at millions of rows)."""
    by_row = ROW in table.column_names
    table = table.select(COLUMNS + ([ROW] if by_row else [])).filter(
        pc.and_(pc.is_valid(table["user_id"]), pc.is_valid(table["event_ts"])))
    if table.num_rows == 0 or n <= 0:
        return table.slice(0, 0)
    table = table.sort_by([(ROW if by_row else "user_id", "ascending"), ("event_ts", "descending"),
                           ("item_id", "ascending")])
    table = table.combine_chunks()
    if by_row:
        codes = table[ROW].chunk(0).to_numpy(zero_copy_only=False)
    else:
        codes = pc.dictionary_encode(table["user_id"]).combine_chunks().indices.to_numpy(zero_copy_only=False)
    starts = np.empty(codes.size, dtype=bool)
    starts[0] = True
    np.not_equal(codes[1:], codes[:-1], out=starts[1:])
    group = np.cumsum(starts) - 1
    rank = np.arange(codes.size) - np.flatnonzero(starts)[group]
    return table.filter(pa.array(rank < n))


def scan_plays(batches: Iterable[pa.RecordBatch | pa.Table], n: int, users: pa.Array | None = None) -> pa.Table:
    """``top_plays`` over a stream of batches with bounded memory (folds the buffer into the state). ``users``:
    the users asked for: their positions (``ROW``, looked up once per fold, not per batch) order the output,
    and the plays of other users are left out."""
    fields = [("user_id", pa.string()), ("item_id", pa.string()), ("event_ts", pa.timestamp("us", "UTC"))]
    state = pa.table({c: pa.array([], t) for c, t in fields + ([(ROW, pa.int32())] if users is not None else [])})
    schema = pa.schema(fields)
    buffer: list[pa.Table] = []
    buffered = 0

    def fold(state: pa.Table) -> pa.Table:
        t = pa.concat_tables(buffer)
        if users is not None:  # plays of other users are not asked for
            row = pc.index_in(t["user_id"], value_set=users).cast(pa.int32())
            t = t.append_column(ROW, row).filter(pc.is_valid(row))
        return top_plays(pa.concat_tables([state, t.select(state.column_names)]), n)

    for batch in batches:
        t = batch if isinstance(batch, pa.Table) else pa.Table.from_batches([batch])
        buffer.append(t.select(COLUMNS).cast(schema))
        buffered += t.num_rows
        if buffered >= max(_REDUCE_ROWS, 2 * state.num_rows):
            state = fold(state)
            buffer, buffered = [], 0
    return fold(state) if buffer else state


def read_shard_plays(lake: Any, snapshot_path: str, user_ids: pa.Array, n: int,
                     keep_items: pa.Array | None = None) -> tuple[pa.Table, sp.csr_matrix | None]:
    """The last ``n`` plays of ``user_ids`` from the committed activity snapshot at ``snapshot_path`` and, when
    ``keep_items`` is given, which of those items each user played, however long ago (a boolean matrix, rows
    ``user_ids``, columns ``keep_items``): one scan of the snapshot for both. The plays come in the order of
    ``user_ids``, with a column ``row``: each user's position in it."""
    import pyarrow.dataset as ds
    from pyarrow.fs import FSSpecHandler, PyFileSystem

    manifest = lake.require(snapshot_path)
    files = [lake.abspath(f"{manifest.path}/{f.path}") for f in manifest.files
             if f.path.endswith(".parquet") and "/_quarantine/" not in f"/{f.path}"]
    played = PlayedItems(user_ids, keep_items) if keep_items is not None else None
    if not files or len(user_ids) == 0:
        return scan_plays([], n, user_ids), played.matrix() if played is not None else None
    dataset = ds.dataset(files, format="parquet", filesystem=PyFileSystem(FSSpecHandler(lake.fs)))
    scanner = dataset.scanner(columns=COLUMNS, filter=ds.field("user_id").isin(user_ids), batch_size=1 << 17)
    batches = scanner.to_batches() if played is None else played.tap(scanner.to_batches())
    plays = scan_plays(batches, n, user_ids)
    return plays, played.matrix() if played is not None else None


class PlayedItems:
    """Which of ``items`` each of ``users`` played, from a stream of plays (``tap``): the (user, item) columns
    are buffered and, ``_REDUCE_ROWS`` rows at a time, looked up (one hash table of ``items`` and one of
    ``users`` per fold, not per batch: at 200k items a lookup table per batch cost more than the scan) and
    folded into a boolean CSR matrix. The state is the distinct pairs, plus one bounded buffer."""

    def __init__(self, users: pa.Array, items: pa.Array) -> None:
        self.users, self.items = users, items
        self.state = sp.csr_matrix((len(users), len(items)), dtype=np.int8)
        self.buffer: list[pa.Table] = []
        self.buffered = 0

    def tap(self, batches: Iterable[pa.RecordBatch | pa.Table]) -> Iterable[pa.RecordBatch | pa.Table]:
        for batch in batches:
            t = batch if isinstance(batch, pa.Table) else pa.Table.from_batches([batch])
            self.buffer.append(t.select(["user_id", "item_id"]))
            self.buffered += t.num_rows
            # a fold looks up every user once (without ``row``) and adds the state: both amortised by the buffer
            if self.buffered >= max(_REDUCE_ROWS, 2 * len(self.users), self.state.nnz):
                self._fold()
            yield batch

    def _fold(self) -> None:
        if not self.buffer:
            return
        t = pa.concat_tables(self.buffer).combine_chunks()
        self.buffer, self.buffered = [], 0
        item = pc.index_in(t["item_id"], value_set=self.items)
        keep = pc.is_valid(item)
        user = pc.index_in(pc.filter(t["user_id"], keep), value_set=self.users)
        item = pc.filter(item, keep)
        ok = pc.is_valid(user).to_numpy(zero_copy_only=False)
        rows = user.to_numpy(zero_copy_only=False)[ok].astype(np.int32)
        cols = item.to_numpy(zero_copy_only=False)[ok].astype(np.int32)
        add = sp.csr_matrix((np.ones(rows.size, np.int8), (rows, cols)), shape=self.state.shape)
        self.state = (self.state + add).astype(bool).astype(np.int8).tocsr()

    def matrix(self) -> sp.csr_matrix:
        self._fold()
        self.state.sort_indices()
        return self.state


def also_played(plays: pa.Table, played: sp.csr_matrix, user_ids: pa.Array, seed_ids: pa.Array,
                listed_ids: pa.Array, lists: sp.csr_matrix, seed_to_listed: np.ndarray | None = None) -> pa.ListArray:
    """For each user of ``plays`` (the output of ``top_plays``, in its order), the items in the lists of their
    recent plays (``lists``: seed x listed item, rows ``seed_ids``, columns ``listed_ids``) that they played
    (``played``: rows ``user_ids``, columns ``listed_ids``, from ``read_shard_plays``) and that are not among
    those recent plays: what "because you played" must also leave out. Item ids of a user's list in
    ``listed_ids`` order (dictionary-encoded over ``listed_ids``); a user with none gets an empty list.
    ``seed_to_listed``: each seed's position in ``listed_ids`` (-1: none), when the caller has it (the
    candidates' ``item_to_cand``), instead of a second lookup. One compiled pass, O(list entries + plays)."""
    plays = plays.combine_chunks()
    if plays.num_rows == 0:
        return pa.ListArray.from_arrays(pa.array([0], pa.int32()), pa.array([], pa.string()))
    users = plays["user_id"].chunk(0) if isinstance(plays["user_id"], pa.ChunkedArray) else plays["user_id"]
    items = plays["item_id"].chunk(0) if isinstance(plays["item_id"], pa.ChunkedArray) else plays["item_id"]
    codes = pc.dictionary_encode(users).indices.to_numpy(zero_copy_only=False)
    starts = np.flatnonzero(np.r_[True, codes[1:] != codes[:-1]])
    indptr = np.r_[starts, codes.size].astype(np.int64)
    rows = pc.index_in(users.take(pa.array(starts)), value_set=user_ids).fill_null(-1).to_numpy(
        zero_copy_only=False).astype(np.int64)
    seeds = pc.index_in(items, value_set=seed_ids).fill_null(-1).to_numpy(zero_copy_only=False).astype(np.int64)
    if seed_to_listed is not None:  # a listed item is a seed (a candidate is a model item)
        recent = np.where(seeds >= 0, np.asarray(seed_to_listed, np.int64)[np.maximum(seeds, 0)], -1)
    else:
        recent = pc.index_in(items, value_set=listed_ids).fill_null(-1).to_numpy(zero_copy_only=False)
        recent = recent.astype(np.int64)
    lists = sp.csr_matrix(lists)
    played = sp.csr_matrix(played)
    offsets, out = _also_played(indptr, seeds, recent, rows, lists.indptr.astype(np.int64),
                                lists.indices.astype(np.int64), played.indptr.astype(np.int64),
                                played.indices.astype(np.int64), len(listed_ids))
    values = pa.DictionaryArray.from_arrays(pa.array(out.astype(np.int32)), listed_ids)
    return pa.ListArray.from_arrays(pa.array(offsets.astype(np.int32)), values)


@_compiled
def _also_played(indptr: np.ndarray, seeds: np.ndarray, recent: np.ndarray, rows: np.ndarray,
                 l_indptr: np.ndarray, l_indices: np.ndarray, p_indptr: np.ndarray, p_indices: np.ndarray,
                 n_listed: int) -> tuple[np.ndarray, np.ndarray]:  # pragma: no cover - compiled
    n_users = indptr.size - 1
    mark = np.zeros(n_listed, np.int64)  # mark[j] == u + 1: j is in a list of user u's recent plays
    bound = 0
    for u in range(n_users):
        if rows[u] >= 0:
            bound += p_indptr[rows[u] + 1] - p_indptr[rows[u]]
    out = np.empty(bound, np.int64)
    offsets = np.zeros(n_users + 1, np.int64)
    pos = 0
    for u in range(n_users):
        stamp = u + 1
        for r in range(indptr[u], indptr[u + 1]):
            s = seeds[r]
            if s >= 0:
                for e in range(l_indptr[s], l_indptr[s + 1]):
                    mark[l_indices[e]] = stamp
        for r in range(indptr[u], indptr[u + 1]):  # the recent plays are in the value already
            if recent[r] >= 0:
                mark[recent[r]] = 0
        if rows[u] >= 0:
            for e in range(p_indptr[rows[u]], p_indptr[rows[u] + 1]):
                j = p_indices[e]
                if mark[j] == stamp:
                    out[pos] = j
                    pos += 1
                    mark[j] = 0
        offsets[u + 1] = pos
    return offsets, out[:pos]


def _json_string(arr: pa.Array) -> pa.Array:
    """The JSON string literal body of each value (backslash and quote escaped; ids carry no control chars,
    which are replaced by U+FFFD rather than emitted raw)."""
    arr = pc.replace_substring(arr, "\\", "\\\\")
    arr = pc.replace_substring(arr, '"', '\\"')
    return pc.replace_substring_regex(arr, r"[\x00-\x1f]", "\ufffd")


#: "00".."59" as byte pairs, for laying out times of day
_TWO_DIGITS = np.frombuffer(b"".join(b"%02d" % i for i in range(60)), np.uint8).reshape(60, 2)


def iso_seconds(ts: pa.Array) -> pa.Array:
    """UTC timestamps (no nulls) as ``YYYY-MM-DDTHH:MM:SSZ`` strings, truncated to the second: the text of Arrow's
    ``strftime("%Y-%m-%dT%H:%M:%SZ")`` at about a twentieth of its cost (it was two thirds of the plain history
    step): each day of the span is formatted once and the time of day is laid out from a table of digit pairs,
    20 bytes a value. Years outside 1-9999 (not 20 bytes) and spans beyond a million days go through
    ``strftime``."""
    secs = pc.cast(ts, pa.timestamp("s", "UTC"), safe=False)
    n = len(secs)
    if n == 0 or n * 20 >= 2**31 or secs.null_count:
        return pc.strftime(secs, format="%Y-%m-%dT%H:%M:%SZ")
    days, sod = np.divmod(secs.cast(pa.int64()).to_numpy(zero_copy_only=False), 86_400)
    first, last = int(days.min()), int(days.max())
    if first < -719_162 or last > 2_932_896 or last - first > 1_000_000:  # 0001-01-01..9999-12-31, a span of days
        return pc.strftime(secs, format="%Y-%m-%dT%H:%M:%SZ")
    dates = np.datetime_as_string(np.arange(first, last + 1).astype("datetime64[D]")).astype("S10")
    out = np.empty((n, 20), np.uint8)
    out[:, :10] = np.frombuffer(dates.tobytes(), np.uint8).reshape(-1, 10)[days - first]
    sod = sod.astype(np.int32)
    for col, v in ((11, sod // 3600), (14, sod // 60 % 60), (17, sod % 60)):
        out[:, col:col + 2] = _TWO_DIGITS[v]
    out[:, 10], out[:, 13], out[:, 16], out[:, 19] = ord("T"), ord(":"), ord(":"), ord("Z")
    offsets = np.arange(0, 20 * (n + 1), 20, dtype=np.int32)
    return pa.Array.from_buffers(pa.string(), n, [None, pa.py_buffer(offsets), pa.py_buffer(out)])


def _user_runs(plays: pa.Table) -> tuple[pa.Array, pa.Array, pa.Array, np.ndarray]:
    """The columns of ``top_plays``'s output as arrays, and where each user's run of rows starts."""
    plays = plays.combine_chunks()
    cols = [plays[c].chunk(0) if isinstance(plays[c], pa.ChunkedArray) else plays[c] for c in COLUMNS]
    codes = pc.dictionary_encode(cols[0]).indices.to_numpy(zero_copy_only=False)
    return cols[0], cols[1], cols[2], np.flatnonzero(np.r_[True, codes[1:] != codes[:-1]])


def encode_history_sets(key_prefix: str, plays: pa.Table) -> tuple[bytes, int, list[str]]:
    """``SET <key_prefix><user> [["item", "ISO ts"], ...]`` for every user in ``plays`` (the output of
    ``top_plays``: users grouped, newest first). The value depends on the activity snapshot and the number of
    plays alone, never on a rail, so every rail publishing from the same snapshot writes the same bytes
    (``Keys.shared_hist_namespace``). Returns (bytes, number of commands, distinct item ids of the plays)."""
    if plays.num_rows == 0:
        return b"", 0, []
    users, items, ts, starts = _user_runs(plays)
    elements = pc.binary_join_element_wise("[\"", _json_string(items), "\",\"", iso_seconds(ts), "\"]", "")
    offsets = pa.array(np.r_[starts, len(users)].astype(np.int32))
    joined = pc.binary_join(pa.ListArray.from_arrays(offsets, elements), ",")
    values = pc.binary_join_element_wise("[", joined, "]", "")
    keys = pc.binary_join_element_wise(key_prefix, users.take(pa.array(starts)), "")
    return encode_sets(keys, values), int(starts.size), pc.unique(items).to_pylist()


def encode_also_sets(key_prefix: str, plays: pa.Table, also: pa.ListArray, *,
                     table_size: int | None = None) -> tuple[bytes, int]:
    """``SET <key_prefix><user> <ids>`` for every user of ``plays`` (``top_plays``'s output) whose ``also``
    entry (``also_played``, aligned with the users) is not empty: the older plays "because you played X"
    leaves out on this rail (its lists decide which). The ids are a JSON list, or, with ``table_size`` (a
    packed publication), item table positions (``codec.encode_also_values``): ``also`` must then be
    dictionary-encoded over the table's ids, in its order. Returns (bytes, number of commands)."""
    if plays.num_rows == 0 or len(also.values) == 0:
        return b"", 0
    users, _, _, starts = _user_runs(plays)
    if len(also) != starts.size:
        raise ValueError(f"also_played: {len(also)} entries for {starts.size} users")
    ids = also.values
    some = pc.greater(pc.list_value_length(also), 0)
    keys = pc.binary_join_element_wise(key_prefix, users.take(pa.array(starts)), "")
    n = int(pc.sum(some.cast(pa.int64())).as_py() or 0)
    if table_size is not None:
        if not pa.types.is_dictionary(ids.type) or len(ids.dictionary) != table_size:
            raise ValueError("also_played: packed ids need positions into the item table "
                             f"(a dictionary of its {table_size} ids)")
        offsets = also.offsets.to_numpy().astype(np.int64)
        positions = ids.indices.to_numpy(zero_copy_only=False)[offsets[0]:offsets[-1]]
        data, offs = encode_also_values(offsets - offsets[0], positions, table_size)
        values = pa.Array.from_buffers(pa.large_binary(), len(also), [None, pa.py_buffer(offs), pa.py_buffer(data)])
        return encode_sets(keys.filter(some), values.filter(some)), n
    if pa.types.is_dictionary(ids.type):  # escaped once per distinct id, not once per occurrence
        quoted = pc.binary_join_element_wise("\"", _json_string(ids.dictionary), "\"", "").take(ids.indices)
    else:
        quoted = pc.binary_join_element_wise("\"", _json_string(ids), "\"", "")
    values = pc.binary_join_element_wise("[", pc.binary_join(pa.ListArray.from_arrays(also.offsets, quoted), ","),
                                         "]", "")
    return encode_sets(keys.filter(some), values.filter(some)), n
