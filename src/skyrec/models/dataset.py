"""The training dataset: interaction matrices, item features, id maps and the time split.

Built from one committed activity snapshot (schema ``ACTIVITY``) and one committed catalogue (schema
``CATALOGUE``); written with ``np.savez`` + Parquet, never pickle. Everything is vectorised over Arrow
columns (ids dictionary-encoded while reading), so the reference scale (hundreds of millions of events,
~3.5M users x ~200k items) costs a few passes over NumPy arrays, not a Python loop per event.

Weighting of one event (summed per user x item)::

    w = weighting[event_type] x (1 - a + a x min(1, played_seconds / duration_seconds)) x 0.5 ** (age / half_life)

``a = training.played_fraction_weight``: a play of a whole episode counts fully, a short sample counts
``1 - a`` of that (duration unknown, or an event kind without a duration: counts fully). ``age`` is measured from the reference time of the
matrix: the snapshot's last event for ``interactions`` (what the published model is fit on), the split
cutoff for ``train`` (what the evaluated model is fit on, so evaluation sees the same decay shape).
Event types without a weight are not interactions; they are counted in ``meta.ignored_events``.

The split (``training.split``, recorded in ``meta["split"]``) is by time, in one of two ways:

- ``per_user`` (default): a user's *positives* are the items they played, each dated by its first play.
  The latest ``test_fraction`` of them (round half up, at least one; ``test_items`` when set) are
  the user's test items, provided ``min_train_items`` positives stay in train (else the user is not
  tested; fewer test items where fewer would stay). The user's split time is the first play of their
  earliest test item: ``train`` holds the user's other events up to it (decay relative to it), ``test``
  (binary) the test items. Every user with enough history is tested, however quiet the last days were.
  Where first plays share an instant
  (a ratings file with day-level times, a bulk import), the item that appears first in the activity counts
  as older; ``users_cut_in_a_tie`` counts the users whose cut fell inside such a tie.
- ``global``: ``train`` holds events before ``cutoff = end - holdout_days`` (decay relative to the
  cutoff), ``test`` (binary) the events from the cutoff on. Only users active in the last days are tested.

``seen`` (binary) holds every play in the snapshot: precompute never recommends what a user already played.
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq
import scipy.sparse as sp

from skyrec.models.artefact import csr_from_arrays, csr_to_arrays, read_ids, read_npz, write_ids, write_npz
from skyrec.storage import Lake, Manifest, Stage

US_PER_DAY = 86_400 * 1_000_000
FEATURE_KINDS = ("masterbrand", "brand", "genre", "format")


@dataclass
class TrainingData:
    user_ids: np.ndarray            # object [n_users]
    item_ids: np.ndarray            # object [n_items]; played items first, then catalogue-only items
    interactions: sp.csr_matrix     # float32 weighted, all events (decay relative to ``end``)
    train: sp.csr_matrix            # float32 weighted, events before ``cutoff`` (decay relative to ``cutoff``)
    test: sp.csr_matrix             # float32 binary, events from ``cutoff`` on
    seen: sp.csr_matrix             # float32 binary, every play
    item_features: sp.csr_matrix    # float32 binary [n_items, n_features]
    feature_names: np.ndarray       # object [n_features], "genre=Comedy", "brand=b123", ...
    meta: dict[str, Any] = field(default_factory=dict)
    #: int64 [n_items] release time (µs) from the catalogue, ``series.UNKNOWN_RELEASE`` where unknown; None
    #: for a dataset built without a catalogue (or written before the field existed)
    item_release_us: np.ndarray | None = None
    #: int64 µs, the pattern of ``train``: when each training pair was first played (the search's validation
    #: split holds out each user's latest, as the test split does); None in datasets written before it existed
    train_first_play: sp.csr_matrix | None = None
    #: int64 µs, the pattern of ``interactions``: when each pair was first played (the series term's "played
    #: when new", ``skyrec.models.series``); None in datasets written before it existed
    first_play: sp.csr_matrix | None = None

    @property
    def in_catalogue(self) -> np.ndarray:
        return np.diff(self.item_features.indptr) > 0

    @property
    def train_item_plays(self) -> np.ndarray:
        return np.bincount(self.train.indices, minlength=self.train.shape[1])


def _encode(column: pa.ChunkedArray) -> tuple[np.ndarray, np.ndarray]:
    """(codes int32, dictionary as object array) for a string column, dictionary-encoded chunk-wise."""
    if not pa.types.is_dictionary(column.type):
        column = pc.dictionary_encode(column)
    column = pa.chunked_array(column.chunks, column.type) if column.num_chunks else column
    table = pa.table({"c": column}).unify_dictionaries()
    col = table.column("c")
    if col.num_chunks == 0:
        return np.zeros(0, np.int32), np.zeros(0, object)
    dictionary = col.chunk(0).dictionary
    codes = np.concatenate([c.indices.to_numpy(zero_copy_only=False) for c in col.chunks]).astype(np.int32)
    return codes, np.asarray(dictionary.to_pylist(), dtype=object)


def read_parquet_files(lake: Lake, manifest: Manifest, columns: list[str],
                       dictionary: tuple[str, ...] = (), prefer: str | None = None) -> pa.Table:
    """The data Parquet files of a committed output (quarantine excluded) as one table; with ``prefer``,
    only the file of that name when the output has one (an output holding several tables)."""
    tables = []
    names = [e.path.rsplit("/", 1)[-1] for e in manifest.files]
    for entry in manifest.files:
        name = entry.path.rsplit("/", 1)[-1]
        if not name.endswith(".parquet") or "/_quarantine/" in f"/{entry.path}":
            continue
        if prefer is not None and prefer in names and name != prefer:
            continue
        with lake.fs.open(lake.abspath(f"{manifest.path}/{entry.path}"), "rb") as fh:
            tables.append(pq.read_table(fh, columns=columns, read_dictionary=list(dictionary) or None))
    if not tables:
        raise ValueError(f"{manifest.path}: committed output lists no Parquet data files")
    return pa.concat_tables(tables, promote_options="permissive")


def item_feature_matrix(catalogue: pa.Table, item_ids: np.ndarray) -> tuple[sp.csr_matrix, np.ndarray]:
    """Binary item x feature matrix (masterbrand, brand, genres, formats) for ``item_ids``; rows of items
    missing from the catalogue are empty. Feature names are ``kind=value``, sorted for a stable layout."""
    index = {item: i for i, item in enumerate(item_ids)}
    cat_ids = catalogue.column("item_id").to_pylist()
    rows_of = np.array([index.get(x, -1) for x in cat_ids], dtype=np.int64)
    pairs_r: list[np.ndarray] = []
    pairs_f: list[np.ndarray] = []
    for kind, column in (("masterbrand", "masterbrand"), ("brand", "brand_id"), ("genre", "genres"),
                         ("format", "formats")):
        col = catalogue.column(column)
        if pa.types.is_list(col.type):
            lengths = pc.fill_null(pc.list_value_length(col), 0).to_numpy()
            values = pc.list_flatten(col)
            r = np.repeat(rows_of, lengths)
        else:
            values, r = col, rows_of
        vals = np.asarray(pc.cast(values, pa.string()).to_pylist(), dtype=object)
        ok = (r >= 0) & np.array([v is not None and v != "" for v in vals], dtype=bool)
        pairs_r.append(r[ok])
        pairs_f.append(np.array([f"{kind}={v}" for v in vals[ok]], dtype=object))
    rows = np.concatenate(pairs_r) if pairs_r else np.zeros(0, np.int64)
    names_all = np.concatenate(pairs_f) if pairs_f else np.zeros(0, object)
    names, cols = np.unique(names_all.astype(str), return_inverse=True)
    m = sp.csr_matrix((np.ones(len(rows), np.float32), (rows, cols)), shape=(len(item_ids), len(names)))
    m.data[:] = 1.0  # a duplicated catalogue row must not count a feature twice
    return m, names.astype(object)


def _release_times(catalogue: pa.Table, item_ids: np.ndarray) -> np.ndarray:
    """int64 release time (µs) per item of ``item_ids`` from the catalogue's ``release_ts`` (the earliest when
    an item has several rows); ``UNKNOWN_RELEASE`` for items missing from it or without a release time."""
    from skyrec.models.series import UNKNOWN_RELEASE

    out = np.full(len(item_ids), UNKNOWN_RELEASE, dtype=np.int64)
    if "release_ts" not in catalogue.column_names:
        return out
    index = {item: i for i, item in enumerate(item_ids)}
    rows = np.fromiter((index.get(x, -1) for x in catalogue.column("item_id").to_pylist()), dtype=np.int64,
                       count=catalogue.num_rows)
    ts = catalogue.column("release_ts").cast(pa.timestamp("us", tz="UTC")).cast(pa.int64())
    valid = pc.invert(pc.is_null(ts)).to_numpy(zero_copy_only=False)
    values = pc.fill_null(ts, 0).to_numpy(zero_copy_only=False).astype(np.int64)
    ok = (rows >= 0) & valid
    np.minimum.at(out, rows[ok], values[ok])
    return out


def first_plays(u_codes: np.ndarray, i_codes: np.ndarray, ts: np.ndarray, n_items: int) -> tuple[np.ndarray,
                                                                                                  np.ndarray]:
    """One row per (user, item) of the events: (pair key ``user * n_items + item``, ascending; its first play)."""
    pair_key, pair_ts, _ = _pairs(u_codes, i_codes, ts, n_items)
    return pair_key, pair_ts


def _pairs(u_codes: np.ndarray, i_codes: np.ndarray, ts: np.ndarray, n_items: int
           ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """``first_plays`` and, per event, the row of its pair in them (int64)."""
    key = u_codes.astype(np.int64) * max(n_items, 1) + i_codes.astype(np.int64)
    order = np.lexsort((ts, key))
    sorted_key = key[order]
    first = np.ones(len(order), dtype=bool)
    first[1:] = sorted_key[1:] != sorted_key[:-1]
    pair_of_event = np.empty(len(order), dtype=np.int64)
    pair_of_event[order] = np.cumsum(first) - 1
    return sorted_key[first], ts[order][first], pair_of_event


def per_user_split(u_codes: np.ndarray, i_codes: np.ndarray, ts: np.ndarray, *, test_fraction: float,
                   test_items: int | None, min_train_items: int,
                   pairs: tuple[np.ndarray, np.ndarray, int] | None = None,
                   out: dict[str, Any] | None = None) -> tuple[np.ndarray, np.ndarray]:
    """(split time per user in µs, int64 with ``INT64_MAX`` for users not tested; bool per event: the event
    belongs to a test item) for the ``per_user`` split described in the module docstring. ``pairs``: the
    events' ``first_plays`` already computed, with the item count of their keys (not computed again).
    ``out`` (a dict) receives ``cut_in_a_tie``: the tested users whose latest training positive was first
    played at the same instant as their earliest test positive -- for them the time does not say which items
    are the latest, and the order of the items' codes (their first appearance in the activity) decided."""
    n_users = int(u_codes.max()) + 1 if len(u_codes) else 0
    n_items = int(i_codes.max()) + 1 if len(i_codes) else 0
    if pairs is not None:
        pair_key, pair_ts, n_items = pairs
    else:
        pair_key, pair_ts = first_plays(u_codes, i_codes, ts, n_items)  # one row per (user, item): its first play
    key = u_codes.astype(np.int64) * max(n_items, 1) + i_codes.astype(np.int64)
    pair_user = pair_key // max(n_items, 1)
    by_user = np.lexsort((pair_key, pair_ts, pair_user))        # per user: oldest positive first
    pu, pt = pair_user[by_user], pair_ts[by_user]
    n_pos = np.bincount(pu, minlength=n_users)
    start = np.concatenate([[0], np.cumsum(n_pos)[:-1]])
    rank = np.arange(len(pu)) - start[pu]
    want = np.full(n_users, int(test_items)) if test_items else \
        np.maximum(1, np.floor(test_fraction * n_pos + 0.5)).astype(np.int64)
    n_test = np.clip(np.minimum(want, n_pos - min_train_items), 0, None)
    is_test = rank >= (n_pos - n_test)[pu]
    if out is not None:
        first_test = start + n_pos - n_test  # per user: position of the earliest test positive
        tied = (n_test > 0) & (n_pos - n_test > 0)
        users = np.flatnonzero(tied)
        out["cut_in_a_tie"] = int(np.sum(pt[first_test[users]] == pt[first_test[users] - 1]))
    split = np.full(n_users, np.iinfo(np.int64).max, dtype=np.int64)
    np.minimum.at(split, pu[is_test], pt[is_test])
    test_keys = np.sort(pair_key[by_user][is_test])
    pos = np.searchsorted(test_keys, key)
    event_test = (pos < len(test_keys)) & (test_keys[np.minimum(pos, max(len(test_keys) - 1, 0))] == key) \
        if len(test_keys) else np.zeros(len(key), dtype=bool)
    return split, event_test


def build_training_data(activity: pa.Table, catalogue: pa.Table | None, *, weighting: dict[str, float],
                        played_fraction_weight: float, half_life_days: float, holdout_days: float,
                        end: dt.datetime | None = None, split: dict[str, Any] | None = None,
                        ) -> tuple[TrainingData, dict[str, list[dict[str, Any]]]]:
    """Build the dataset. Returns it and the bad records (by reason) the caller must quarantine.

    ``split``: ``{"kind": "per_user", "test_fraction", "test_items", "min_train_items"}`` or
    ``{"kind": "global"}`` (the default, with ``holdout_days``)."""
    bad: dict[str, list[dict[str, Any]]] = {}
    n_in = activity.num_rows
    missing = pc.or_(pc.is_null(activity.column("user_id")), pc.is_null(activity.column("item_id")))
    missing = pc.or_(missing, pc.is_null(activity.column("event_ts")))
    n_missing = int(pc.sum(missing).as_py() or 0)
    if n_missing:
        bad["missing user, item or time"] = activity.filter(missing).slice(0, 10_000).to_pylist()
        activity = activity.filter(pc.invert(missing))

    etype_codes, etypes = _encode(activity.column("event_type"))
    type_weight = np.array([float(weighting.get(str(t), 0.0)) if t is not None else 0.0 for t in etypes],
                           dtype=np.float64)
    w = type_weight[etype_codes] if len(etype_codes) else np.zeros(0)
    ignored = {str(t): int(np.sum(etype_codes == i)) for i, t in enumerate(etypes) if type_weight[i] <= 0}
    keep = w > 0
    activity = activity.filter(pa.array(keep))
    w = w[keep]
    if activity.num_rows == 0:
        raise ValueError(f"activity holds no events of a weighted type {sorted(weighting)} "
                         f"({n_in} events in, ignored by type: {ignored})")

    u_codes, user_ids = _encode(activity.column("user_id"))
    i_codes, played_items = _encode(activity.column("item_id"))
    ts = activity.column("event_ts").cast(pa.timestamp("us", tz="UTC")).cast(pa.int64()).to_numpy()
    # null played_seconds: an event kind without a duration (a click, a rating) -- it counts fully
    played = activity.column("played_seconds").to_numpy(zero_copy_only=False).astype(np.float64)

    # Item universe: played items, then catalogue items never played (cold start for feature models).
    item_ids = played_items
    duration = np.full(len(item_ids), np.nan)
    release: np.ndarray | None = None
    if catalogue is not None and catalogue.num_rows:
        cat_ids = np.asarray(catalogue.column("item_id").to_pylist(), dtype=object)
        index = {item: i for i, item in enumerate(played_items)}
        pos = np.fromiter((index.get(x, -1) for x in cat_ids), dtype=np.int64, count=len(cat_ids))
        extra = np.unique(np.array([x for x, p in zip(cat_ids, pos, strict=True) if p < 0 and x], dtype=str))
        item_ids = np.concatenate([played_items, extra.astype(object)])
        dur = catalogue.column("duration_seconds").to_numpy(zero_copy_only=False).astype(np.float64)
        known = pos >= 0
        duration[pos[known]] = dur[known]
        release = _release_times(catalogue, item_ids)
    item_ids = item_ids.astype(object)

    if played_fraction_weight > 0:
        d = duration[i_codes]
        frac = np.where(np.isfinite(d) & (d > 0) & np.isfinite(played),
                        np.clip(np.nan_to_num(played) / np.where(d > 0, d, 1.0), 0.0, 1.0), 1.0)
        w = w * (1.0 - played_fraction_weight + played_fraction_weight * frac)

    end_us = int(ts.max()) if end is None else int(end.timestamp() * 1_000_000)
    cutoff_us = end_us - int(holdout_days * US_PER_DAY)
    shape = (len(user_ids), len(item_ids))
    split = dict(split or {"kind": "global"})
    # every (user, item) pair once, with its first play: sorted keys ``user * n_items + item`` (one sort of
    # the events, shared by the per-user split and both first-play matrices)
    pair_key, pair_ts, pair_of_event = _pairs(u_codes, i_codes, ts, shape[1])
    if split.get("kind", "global") == "per_user":
        ties: dict[str, Any] = {}
        user_split, event_test = per_user_split(
            u_codes, i_codes, ts, test_fraction=float(split.get("test_fraction", 0.2)),
            test_items=split.get("test_items"), min_train_items=int(split.get("min_train_items", 1)),
            pairs=(pair_key, pair_ts, shape[1]), out=ties)
        before = ~event_test & (ts <= user_split[u_codes])
        test_mask = event_test
        tested = user_split < np.iinfo(np.int64).max
        train_ref: np.ndarray | int = np.where(tested, user_split, end_us)[u_codes]
        split_meta = {"kind": "per_user", "test_fraction": float(split.get("test_fraction", 0.2)),
                      "test_items": split.get("test_items"),
                      "min_train_items": int(split.get("min_train_items", 1)),
                      "positives": "distinct items played, dated by their first play",
                      "users_tested": int(tested.sum()), "users_cut_in_a_tie": ties["cut_in_a_tie"],
                      "tie_break": "equal first-play times: the item that appears first in the activity is older"}
        cutoff_iso = None
    else:
        before = ts < cutoff_us
        test_mask = ~before
        train_ref = cutoff_us
        split_meta = {"kind": "global", "holdout_days": holdout_days}
        cutoff_iso = dt.datetime.fromtimestamp(cutoff_us / 1e6, dt.UTC).isoformat()
        split_meta["cutoff"] = cutoff_iso

    def matrix(mask: np.ndarray, ref_us: np.ndarray | int, binary: bool = False) -> sp.csr_matrix:
        if binary:
            vals = np.ones(int(mask.sum()), np.float32)
        else:
            ref = ref_us[mask] if isinstance(ref_us, np.ndarray) else ref_us
            age_days = np.maximum(ref - ts[mask], 0) / US_PER_DAY
            vals = (w[mask] * np.exp2(-age_days / half_life_days)).astype(np.float32)
        m = sp.csr_matrix((vals, (u_codes[mask], i_codes[mask])), shape=shape, dtype=np.float32)
        m.sum_duplicates()
        if binary:
            m.data[:] = 1.0
        return m

    def first_play(mask: np.ndarray) -> sp.csr_matrix:
        """Per (user, item) of the events in ``mask``: its first play (µs), on the same pattern as ``matrix``.
        A pair with an event in ``mask`` has its first play there too (``train`` holds every event of its
        pairs up to the split; ``interactions`` all), so it is the pair's first play over all events."""
        keep = np.zeros(len(pair_key), dtype=bool)
        keep[pair_of_event[mask]] = True
        pairs, when = pair_key[keep], pair_ts[keep]
        m = sp.csr_matrix((when.astype(np.int64), (pairs // max(shape[1], 1), pairs % max(shape[1], 1))),
                          shape=shape, dtype=np.int64)
        m.sort_indices()
        return m

    everything = np.ones(len(ts), dtype=bool)
    data = TrainingData(
        user_ids=user_ids.astype(object), item_ids=item_ids,
        interactions=matrix(everything, end_us), train=matrix(before, train_ref),
        test=matrix(test_mask, end_us, binary=True), seen=matrix(everything, end_us, binary=True),
        item_features=sp.csr_matrix((len(item_ids), 0), dtype=np.float32),
        feature_names=np.zeros(0, dtype=object), train_first_play=first_play(before),
        first_play=first_play(everything),
    )
    if catalogue is not None and catalogue.num_rows:
        data.item_features, data.feature_names = item_feature_matrix(catalogue, item_ids)
        data.item_release_us = release
    to_iso = lambda us: dt.datetime.fromtimestamp(us / 1e6, dt.UTC).isoformat()  # noqa: E731
    data.meta = {
        "end": to_iso(end_us), "cutoff": cutoff_iso, "split": split_meta, "events_in": n_in,
        "events_used": int(len(ts)), "events_train": int(before.sum()), "events_test": int(test_mask.sum()),
        "ignored_events": ignored,
        "missing_ids": n_missing, "n_users": shape[0], "n_items": shape[1],
        "n_items_played": int(len(played_items)), "n_features": int(data.item_features.shape[1]),
        "nnz": int(data.interactions.nnz), "nnz_train": int(data.train.nnz), "nnz_test": int(data.test.nnz),
        "weighting": dict(weighting), "played_fraction_weight": played_fraction_weight,
        "recency_half_life_days": half_life_days, "holdout_days": holdout_days,
    }
    return data, bad


_MATRICES = ("interactions", "train", "test", "seen", "item_features")
#: first-play times (int64 µs) on the pattern of ``train`` and of ``interactions``; read only when named
_FIRST_PLAYS = ("train_first_play", "first_play")


def save_training_data(stage: Stage, data: TrainingData) -> None:
    """Write the dataset files into a stage (the caller commits with ``data.meta``)."""
    write_ids(stage, "users.parquet", "user_id", data.user_ids)
    write_ids(stage, "items.parquet", "item_id", data.item_ids)
    write_ids(stage, "features.parquet", "feature", data.feature_names)
    for name in _MATRICES:
        m = getattr(data, name)
        write_npz(stage, f"{name}.npz", rows=int(m.nnz), **csr_to_arrays(m))
    if data.item_release_us is not None:
        write_npz(stage, "item_release.npz", rows=len(data.item_release_us), release_us=data.item_release_us)
    for name in _FIRST_PLAYS:
        m = getattr(data, name)
        if m is not None:
            write_npz(stage, f"{name}.npz", rows=int(m.nnz), **csr_to_arrays(m))


def load_training_data(lake: Lake, manifest: Manifest, *, only: tuple[str, ...] | None = None) -> TrainingData:
    """Read a committed training dataset (``only``: the matrices to read; others come back empty, and
    ``train_first_play`` / ``first_play`` -- as large as ``train`` / ``interactions`` -- are read only when
    named, and are None in datasets written before they existed)."""
    ids = {name: read_ids(lake, manifest, f"{name}s.parquet", f"{name}_id") for name in ("user", "item")}
    features = read_ids(lake, manifest, "features.parquet", "feature")
    shape = (len(ids["user"]), len(ids["item"]))
    mats: dict[str, sp.csr_matrix] = {}
    for name in _MATRICES:
        if only is None or name in only:
            mats[name] = csr_from_arrays(read_npz(lake, manifest, f"{name}.npz"))
        else:
            s = (shape[0], len(features)) if name == "item_features" else shape
            mats[name] = sp.csr_matrix(s, dtype=np.float32)
    files = {e.path.rsplit("/", 1)[-1] for e in manifest.files}
    release = None
    if "item_release.npz" in files:  # none in older datasets
        release = np.asarray(read_npz(lake, manifest, "item_release.npz")["release_us"], dtype=np.int64)
    plays = {name: csr_from_arrays(read_npz(lake, manifest, f"{name}.npz"))
             for name in _FIRST_PLAYS if f"{name}.npz" in files and (only is None or name in only)}
    return TrainingData(user_ids=ids["user"], item_ids=ids["item"], feature_names=features,
                        meta=dict(manifest.meta), item_release_us=release, **plays, **mats)

