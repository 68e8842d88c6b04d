"""A variant's candidate set at precompute time, and the per-item rules that reduce to it.

Candidates are the model's items that are in the latest catalogue, match the variant's candidate filter
(``skyrec.data.catalogue.candidate_mask``, the one implementation), are playable at the precompute time
(the ``availability`` dataset; the catalogue's own windows when no availability output is committed) and
pass the age rule (``precompute.rules.max_age_days``: e.g. News older than 2 days is excluded; genres
compare case-insensitively). The brand cap (``precompute.rules.max_per_brand``, null: no cap) is per user
and lives in the kernel; here we only give each candidate its brand code. An item without a brand gets
``NO_BRAND``, which the kernel never caps: items without a brand are never capped together (``skyrec
import`` makes an unbranded item its own brand, which amounts to the same).

Candidate positions follow ``tie_order`` when one is given (precompute and the evaluation of the rules give
each item's number of listeners: the most played candidate first, then by item index), else the model's item
index. The kernel breaks ties by candidate position, so equal scores go to the more played item; this matters
where scores are sparse: a user whose item-kNN links run out before K items is given the rail's most played
remaining candidates, not items in the order of their index.
"""

from __future__ import annotations

import datetime as dt
import json
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import scipy.sparse as sp

from skyrec.models.representations import Representation, as_float32, transposed
from skyrec.scoring.topk import NO_BRAND

# the catalogue columns an item's items-hash value is made of
PAYLOAD_COLUMNS = ("item_id", "title", "brand_id", "brand_title", "genres", "formats", "available_until")


@dataclass
class Candidates:
    """Everything the kernel and the writers need about one variant's candidates."""

    positions: np.ndarray  # int64 [c]: model item index of each candidate (in tie order: build_candidates)
    item_ids: np.ndarray  # object [c]
    brands: np.ndarray  # int32 [c]: brand code, NO_BRAND when the item has none
    item_factors_t: Representation  # float32 [d, c]: V_cand.T, C-contiguous (the GEMM's layout) or CSR
    item_to_cand: np.ndarray  # int32 [n_model_items]: candidate position, -1 when not a candidate
    rows: pa.Table | None = None  # the candidates' catalogue rows (PAYLOAD_COLUMNS), in candidate order
    counts: dict[str, int] = field(default_factory=dict)  # why items were left out (for the manifest)
    _payloads: pa.Array | None = field(default=None, repr=False)

    def payloads(self) -> pa.Array:
        """The items-hash value (JSON) of each candidate, in candidate order; built on first use (the Beam
        workers score without it)."""
        if self._payloads is None:
            if self.rows is None:
                raise ValueError("these candidates were built without their catalogue rows")
            self._payloads = item_payloads_json(self.rows)
        return self._payloads

    def __len__(self) -> int:
        return int(self.positions.size)

    def exclusions(self, seen: sp.csr_matrix, user_rows: np.ndarray | slice) -> sp.csr_matrix:
        """The seen matrix of ``user_rows`` with columns mapped to candidate positions (others dropped)."""
        sub = seen[user_rows]
        cols = self.item_to_cand[sub.indices] if sub.nnz else np.zeros(0, dtype=np.int32)
        keep = cols >= 0
        rows = np.repeat(np.arange(sub.shape[0]), np.diff(sub.indptr))[keep]
        indptr = np.zeros(sub.shape[0] + 1, dtype=np.int64)
        np.cumsum(np.bincount(rows, minlength=sub.shape[0]), out=indptr[1:])
        data = np.ones(int(keep.sum()), dtype=np.int8)
        return sp.csr_matrix((data, cols[keep], indptr), shape=(sub.shape[0], len(self)))


def _np(col: pa.ChunkedArray | pa.Array) -> np.ndarray:
    if isinstance(col, pa.ChunkedArray):
        col = col.combine_chunks() if col.num_chunks else pa.array([], col.type)
    return col.to_numpy(zero_copy_only=False)


def _mask_candidates(catalogue: pa.Table, candidate_filter: Any) -> np.ndarray:
    from skyrec.data.catalogue import candidate_mask

    return np.asarray(candidate_mask(catalogue, candidate_filter), dtype=bool)


def _available(table: pa.Table, at: dt.datetime) -> np.ndarray:
    from skyrec.data.catalogue import available_mask

    return np.asarray(available_mask(table, at), dtype=bool)


def _too_old(catalogue: pa.Table, max_age_days: dict[str, float], at: dt.datetime) -> np.ndarray:
    """Items in a genre with a maximum age (release, else available_from, older than the limit)."""
    n = catalogue.num_rows
    old = np.zeros(n, dtype=bool)
    if not max_age_days or n == 0:
        return old
    released = pc.coalesce(catalogue.column("release_ts"), catalogue.column("available_from"))
    for genre, days in max_age_days.items():
        cutoff = pa.scalar(at - dt.timedelta(days=float(days)), pa.timestamp("us", tz="UTC"))
        in_genre = _list_has(catalogue, genre)
        older = _np(pc.fill_null(pc.less(released, cutoff), False))
        old |= in_genre.astype(bool) & older.astype(bool)
    return old


def _list_has(catalogue: pa.Table, genre: str) -> np.ndarray:
    """Rows whose genres hold ``genre`` (case-insensitively, like the candidate filters)."""
    col = catalogue.column("genres")
    flat = pc.utf8_lower(pc.list_flatten(col))
    parents = _np(pc.list_parent_indices(col))
    hit = _np(pc.fill_null(pc.equal(flat, genre.strip().lower()), False)).astype(bool)
    out = np.zeros(catalogue.num_rows, dtype=bool)
    out[parents[hit]] = True
    return out


# The items hash's value of an item: what the API shows next to an item id. Compact JSON with sorted keys
# (``available_until``: ISO 8601 in UTC with a ``Z``, seconds or microseconds as Python's ``isoformat``
# writes them; ``brand``: the brand's title, else its id; ``formats``/``genres``: lists, [] when null;
# ``title``), non-ASCII characters as they are (UTF-8), as ``json.dumps(..., sort_keys=True,
# separators=(",", ":"), ensure_ascii=False)`` writes it. Built column-wise over Arrow arrays: one pass
# for 200k items, where a Python dict and ``json.dumps`` per item would cost ~1.5 s.
_SHORT_ESCAPES = {"\b": "\\b", "\f": "\\f", "\n": "\\n", "\r": "\\r", "\t": "\\t"}


def _json_strings(arr: pa.Array) -> pa.Array:
    """Each string as a JSON string literal (quoted, escaped); null stays null."""
    s = pc.replace_substring(arr, "\\", "\\\\")
    s = pc.replace_substring(s, '"', '\\"')
    if len(s) and pc.any(pc.match_substring_regex(s, r"[\x00-\x1f]")).as_py():
        for code in range(0x20):
            ch = chr(code)
            s = pc.replace_substring(s, ch, _SHORT_ESCAPES.get(ch, f"\\u{code:04x}"))
    return pc.binary_join_element_wise('"', s, '"', "")


def _json_string_lists(col: pa.Array) -> pa.Array:
    """Each list of strings as a JSON array; a null list is ``[]``, a null element ``null``."""
    lengths = pc.fill_null(pc.list_value_length(col), 0).to_numpy(zero_copy_only=False)
    offsets = np.zeros(len(col) + 1, dtype=np.int64)
    np.cumsum(lengths, out=offsets[1:])
    values = pc.fill_null(_json_strings(pc.list_flatten(col)), "null")
    lists = pa.LargeListArray.from_arrays(pa.array(offsets, pa.int64()), values)
    return pc.binary_join_element_wise("[", pc.binary_join(lists, ","), "]", "")


def _json_timestamps(col: pa.Array) -> pa.Array:
    """Each UTC timestamp as a JSON string ``YYYY-MM-DDTHH:MM:SS[.ffffff]Z``; null is ``null``."""
    us = pc.cast(col, pa.timestamp("us", tz="UTC"), safe=False).cast(pa.int64())
    valid = pc.is_valid(us).to_numpy(zero_copy_only=False)
    v = pc.fill_null(us, 0).to_numpy(zero_copy_only=False)
    frac = v % 1_000_000 != 0
    text = np.datetime_as_string((v // 1_000_000).astype("datetime64[s]")).astype(object)
    if frac.any():
        text[frac] = np.datetime_as_string(v[frac].astype("datetime64[us]")).astype(object)
    quoted = pc.binary_join_element_wise('"', pa.array(text, pa.string()), 'Z"', "")
    return pc.if_else(pa.array(valid), quoted, "null")


def item_payloads_json(rows: pa.Table) -> pa.Array:
    """The items-hash value (JSON) of every row of a catalogue table, column-wise (see above)."""
    def col(name: str) -> pa.Array:
        c = rows.column(name)
        return c.combine_chunks() if c.num_chunks else pa.array([], c.type)

    if rows.num_rows == 0:
        return pa.array([], pa.string())
    brand_title, brand_id = col("brand_title"), col("brand_id")
    has_title = pc.fill_null(pc.greater(pc.binary_length(brand_title), 0), False)
    brand = pc.if_else(has_title, brand_title, brand_id)
    return pc.binary_join_element_wise(
        '{"available_until":', _json_timestamps(col("available_until")),
        ',"brand":', pc.fill_null(_json_strings(brand), "null"),
        ',"formats":', _json_string_lists(col("formats")),
        ',"genres":', _json_string_lists(col("genres")),
        ',"title":', pc.fill_null(_json_strings(col("title")), "null"), "}", "")


def _bool(arr: pa.Array | pa.ChunkedArray) -> np.ndarray:
    return _np(pc.fill_null(arr, False)).astype(bool, copy=False)


def _playable(catalogue: pa.Table, availability: pa.Table | None, at: dt.datetime) -> np.ndarray:
    """Catalogue rows playable at ``at``: listed in the availability output's open windows, or, without one,
    by the catalogue's own windows."""
    if availability is None:
        return _available(catalogue, at)
    open_ids = availability.column("item_id").filter(pa.array(_available(availability, at)))
    return _bool(pc.is_in(catalogue.column("item_id"), value_set=open_ids.combine_chunks()))


def select_candidates(*, model_item_ids: np.ndarray, catalogue: pa.Table, candidate_filter: Any, at: dt.datetime,
                      availability: pa.Table | None = None, max_age_days: dict[str, float] | None = None
                      ) -> tuple[np.ndarray, np.ndarray, dict[str, int]]:
    """Which model items are a rail's candidates: the model's items in the catalogue that pass the filter,
    are playable at ``at`` and pass the age rule, one catalogue row (the first) each. Returns (model positions,
    ascending; their catalogue rows; counts of why items were left out). Column-wise (Arrow set look-ups, no
    Python per item): at 200k items a fraction of a second."""
    counts = {"model_items": len(model_item_ids), "catalogue_items": catalogue.num_rows}
    keep = _mask_candidates(catalogue, candidate_filter)
    counts["filter_excluded"] = int((~keep).sum())
    playable = _playable(catalogue, availability, at)
    counts["unavailable"] = int((keep & ~playable).sum())
    keep &= playable
    old = _too_old(catalogue, max_age_days or {}, at)
    counts["too_old"] = int((keep & old).sum())
    keep &= ~old

    cat_rows = np.nonzero(keep)[0]
    model_ids = pa.array(np.asarray(model_item_ids, dtype=object), pa.string())
    where = pc.index_in(catalogue.column("item_id").take(pa.array(cat_rows, pa.int64())), value_set=model_ids)
    model_pos = _np(pc.fill_null(where, -1)).astype(np.int64, copy=False)
    counts["not_in_model"] = int((model_pos < 0).sum())
    cat_rows, model_pos = cat_rows[model_pos >= 0], model_pos[model_pos >= 0]
    model_pos, first = np.unique(model_pos, return_index=True)  # one row per item, ascending item index
    counts["candidates"] = int(model_pos.size)
    return model_pos, cat_rows[first], counts


def ties_first(key: np.ndarray, index: np.ndarray | None = None) -> np.ndarray:
    """The order in which precompute breaks equal scores: descending ``key`` (an item's listeners), then
    ascending ``index`` (the item's index; default: position). The candidates are laid out in it, so the
    kernel's tie-break by position follows it; the evaluation ranks in it too (``metrics.tie_order``)."""
    key = np.asarray(key, dtype=np.float64)
    return np.lexsort((np.arange(len(key)) if index is None else index, -key))


def build_candidates(*, model_item_ids: np.ndarray, item_factors: Representation, catalogue: pa.Table,
                     candidate_filter: Any, at: dt.datetime, availability: pa.Table | None = None,
                     max_age_days: dict[str, float] | None = None,
                     tie_order: np.ndarray | None = None) -> Candidates:
    """A rail's candidates (:func:`select_candidates`) with what the kernel and the writers need of them.
    ``tie_order`` (one number per model item, e.g. its listeners): candidates in descending order of it, then
    by item index; the kernel's tie-break by position follows it."""
    model_pos, cat_rows, counts = select_candidates(
        model_item_ids=model_item_ids, catalogue=catalogue, candidate_filter=candidate_filter, at=at,
        availability=availability, max_age_days=max_age_days)
    if tie_order is not None and model_pos.size:
        order = ties_first(np.asarray(tie_order)[model_pos], model_pos)
        model_pos, cat_rows = model_pos[order], cat_rows[order]
    rows = catalogue.take(pa.array(cat_rows, pa.int64())).select(list(PAYLOAD_COLUMNS))
    # brand codes in order of first appearance; an item without a brand is never capped
    codes = pc.dictionary_encode(rows.column("brand_id").combine_chunks()).indices
    brands = _np(pc.fill_null(codes, NO_BRAND)).astype(np.int32)
    item_to_cand = np.full(len(model_item_ids), -1, dtype=np.int32)
    item_to_cand[model_pos] = np.arange(model_pos.size, dtype=np.int32)
    return Candidates(
        positions=model_pos, item_ids=np.asarray(model_item_ids, dtype=object)[model_pos], brands=brands,
        item_factors_t=transposed(as_float32(item_factors)[model_pos]),
        item_to_cand=item_to_cand, rows=rows, counts=counts)


def fallback_list(cold_start: pa.Table | None, variant: str, catalogue: pa.Table, candidate_filter: Any,
                  at: dt.datetime, availability: pa.Table | None, k: int, *,
                  max_age_days: dict[str, float] | None = None, max_per_brand: int | None = None
                  ) -> list[tuple[str, float]]:
    """The variant's popular-now list (cold_start) under the rail's rules, as a user's list is: items that
    pass the filter, are playable at ``at`` and pass the age rule, walked in rank order with the brand cap
    (an item without a brand is never capped)."""
    if cold_start is None or cold_start.num_rows == 0:
        return []
    ok = _mask_candidates(catalogue, candidate_filter) & _playable(catalogue, availability, at)
    ok &= ~_too_old(catalogue, max_age_days or {}, at)
    allowed = catalogue.filter(pa.array(ok)).select(["item_id", "brand_id"])
    brand_of = dict(zip(allowed.column("item_id").to_pylist(), allowed.column("brand_id").to_pylist(), strict=True))
    rows = cold_start.filter(pc.equal(cold_start.column("variant"), variant)).sort_by("rank")
    rows = rows.filter(pc.is_in(rows.column("item_id"), value_set=allowed.column("item_id").combine_chunks()))
    out: list[tuple[str, float]] = []
    seen: set[str] = set()
    per_brand: dict[str, int] = {}
    for r in rows.select(["item_id", "score"]).to_pylist():
        item_id, brand = r["item_id"], brand_of.get(r["item_id"])
        if item_id in seen:
            continue
        if brand and max_per_brand is not None:
            if per_brand.get(brand, 0) >= max_per_brand:
                continue
            per_brand[brand] = per_brand.get(brand, 0) + 1
        seen.add(item_id)
        out.append((item_id, float(r["score"] if r["score"] is not None else 0.0)))
        if len(out) >= k:
            break
    return out


def items_hash(cands: Candidates, referenced: np.ndarray, catalogue: pa.Table,
               also: list[str]) -> tuple[pa.Array, pa.Array]:
    """The items hash of a publication as (fields, values), sorted by item id: every candidate a list
    references (``referenced``, a mask over candidate positions) and the items of ``also`` (fallback, played
    and seed items) from the catalogue's first row of each; ids the catalogue does not hold are left out."""
    ref = np.nonzero(referenced)[0]
    ids = pa.array(cands.item_ids[ref], pa.string())
    values = cands.payloads().take(pa.array(ref, pa.int64()))
    if also:
        extra = pa.array(list(dict.fromkeys(also)), pa.string())
        extra = extra.filter(pc.invert(pc.is_in(extra, value_set=ids)))
        at = pc.drop_null(pc.index_in(extra, value_set=catalogue.column("item_id").combine_chunks()))
        if len(at):
            rows = catalogue.take(at).select(list(PAYLOAD_COLUMNS))
            ids = pa.concat_arrays([ids, rows.column("item_id").combine_chunks()])
            values = pa.concat_arrays([values, item_payloads_json(rows)])
    order = pc.sort_indices(ids)
    return ids.take(order), values.take(order)


def fallback_json(items: list[tuple[str, float]]) -> str:
    return json.dumps([[i, round(s, 6)] for i, s in items], separators=(",", ":"))
