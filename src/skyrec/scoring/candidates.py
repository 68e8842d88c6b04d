"""A variant's candidate set at precompute time, and the per-item rules that reduce to it.

Candidates are the model's items that are in the latest catalogue, match the variant's candidate filter
(``skyrec.data.catalogue.candidate_mask``, the one implementation), are playable at the precompute time
(the ``availability`` dataset; the catalogue's own windows when no availability output is committed) and
pass the age rule (``precompute.rules.max_age_days``: e.g. News older than 2 days is excluded; genres
compare case-insensitively). The brand cap (``precompute.rules.max_per_brand``, null: no cap) is per user
and lives in the kernel; here we only give each candidate its brand code. An item without a brand gets
``NO_BRAND``, which the kernel never caps: items without a brand are never capped together (``skyrec
import`` makes an unbranded item its own brand, which amounts to the same).

Candidate positions ascend with the model's item index, so the kernel's tie-break by candidate position is
a tie-break by item index.
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


@dataclass
class Candidates:
    """Everything the kernel and the writers need about one variant's candidates."""

    positions: np.ndarray  # int64 [c]: model item index of each candidate (ascending)
    item_ids: np.ndarray  # object [c]
    brands: np.ndarray  # int32 [c]: brand code, NO_BRAND when the item has none
    item_factors_t: Representation  # float32 [d, c]: V_cand.T, C-contiguous (the GEMM's layout) or CSR
    item_to_cand: np.ndarray  # int32 [n_model_items]: candidate position, -1 when not a candidate
    metadata: dict[str, dict[str, Any]] = field(default_factory=dict)  # item_id -> item hash payload
    counts: dict[str, int] = field(default_factory=dict)  # why items were left out (for the manifest)

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


def _iso(value: Any) -> str | None:
    if value is None:
        return None
    return value.astimezone(dt.UTC).isoformat().replace("+00:00", "Z")


def item_payload(row: dict[str, Any]) -> dict[str, Any]:
    """The items-hash value of one catalogue row (what the API shows next to an item id)."""
    return {"title": row.get("title"), "brand": row.get("brand_title") or row.get("brand_id"),
            "genres": list(row.get("genres") or []), "formats": list(row.get("formats") or []),
            "available_until": _iso(row.get("available_until"))}


def build_candidates(*, model_item_ids: np.ndarray, item_factors: Representation, catalogue: pa.Table,
                     candidate_filter: Any, at: dt.datetime, availability: pa.Table | None = None,
                     max_age_days: dict[str, float] | None = None) -> Candidates:
    """Intersect the model's items with the catalogue, the filter, availability and the age rule."""
    n_items = len(model_item_ids)
    counts = {"model_items": n_items, "catalogue_items": catalogue.num_rows}
    cat_ids = _np(catalogue.column("item_id")).astype(object)
    keep = _mask_candidates(catalogue, candidate_filter)
    counts["filter_excluded"] = int((~keep).sum())
    if availability is not None:
        avail_ids = set(_np(availability.column("item_id")).astype(object)[_available(availability, at)].tolist())
        playable = np.fromiter((i in avail_ids for i in cat_ids), dtype=bool, count=len(cat_ids))
    else:
        playable = _available(catalogue, at)
    counts["unavailable"] = int((keep & ~playable).sum())
    keep &= playable
    old = _too_old(catalogue, max_age_days or {}, at)
    counts["too_old"] = int((keep & old).sum())
    keep &= ~old

    index = {iid: j for j, iid in enumerate(model_item_ids.tolist())}
    cat_rows = np.nonzero(keep)[0]
    model_pos = np.fromiter((index.get(cat_ids[r], -1) for r in cat_rows), dtype=np.int64, count=cat_rows.size)
    counts["not_in_model"] = int((model_pos < 0).sum())
    cat_rows, model_pos = cat_rows[model_pos >= 0], model_pos[model_pos >= 0]
    model_pos, first = np.unique(model_pos, return_index=True)  # one row per item, ascending item index
    cat_rows = cat_rows[first]

    brand_col = _np(catalogue.column("brand_id")).astype(object)[cat_rows]
    brand_codes: dict[str, int] = {}
    brands = np.fromiter((NO_BRAND if b is None else brand_codes.setdefault(b, len(brand_codes)) for b in brand_col),
                         dtype=np.int32, count=cat_rows.size)
    item_to_cand = np.full(n_items, -1, dtype=np.int32)
    item_to_cand[model_pos] = np.arange(model_pos.size, dtype=np.int32)
    meta_rows = catalogue.take(pa.array(cat_rows, pa.int64())).select(
        ["item_id", "title", "brand_id", "brand_title", "genres", "formats", "available_until"]).to_pylist()
    metadata = {r["item_id"]: item_payload(r) for r in meta_rows}
    counts["candidates"] = int(model_pos.size)
    return Candidates(
        positions=model_pos, item_ids=np.asarray(model_item_ids, dtype=object)[model_pos], brands=brands,
        item_factors_t=transposed(as_float32(item_factors)[model_pos]),
        item_to_cand=item_to_cand, metadata=metadata, counts=counts)


def fallback_list(cold_start: pa.Table | None, variant: str, catalogue: pa.Table, candidate_filter: Any,
                  at: dt.datetime, availability: pa.Table | None, k: int) -> list[tuple[str, float]]:
    """The variant's popular-now list (cold_start), kept to items that are candidates and playable now."""
    if cold_start is None or cold_start.num_rows == 0:
        return []
    rows = cold_start.filter(pc.equal(cold_start.column("variant"), variant)).sort_by("rank").to_pylist()
    cat_ids = _np(catalogue.column("item_id")).astype(object)
    ok = _mask_candidates(catalogue, candidate_filter)
    if availability is not None:
        avail = set(_np(availability.column("item_id")).astype(object)[_available(availability, at)].tolist())
        ok &= np.fromiter((i in avail for i in cat_ids), dtype=bool, count=len(cat_ids))
    else:
        ok &= _available(catalogue, at)
    allowed = set(cat_ids[ok].tolist())
    out: list[tuple[str, float]] = []
    seen: set[str] = set()
    for r in rows:
        if r["item_id"] in allowed and r["item_id"] not in seen:
            seen.add(r["item_id"])
            out.append((r["item_id"], float(r["score"] if r["score"] is not None else 0.0)))
        if len(out) >= k:
            break
    return out


def fallback_json(items: list[tuple[str, float]]) -> str:
    return json.dumps([[i, round(s, 6)] for i, s in items], separators=(",", ":"))
