"""Job ``ingest_availability``: which items are playable at the run's logical time.

Input: the latest committed ``catalogue`` at or before this run (else the latest at all). An item is
available when ``available_from <= logical time < available_until`` (null ``available_until`` = no end);
all timestamps are UTC (the catalogue build converted the source's offsets).

Output ``availability``: ``availability.parquet`` (schema AVAILABILITY, sorted by item_id); meta
``at`` (ISO time), ``catalogue`` (the snapshot used), ``available``, ``expired``, ``not_yet``,
``no_window`` and ``invariant``: catalogue rows = available + quarantined (``missing_id``,
``duplicate_item``: the first row of an id wins) + filtered (``no_window``: no ``available_from``;
``not_yet``; ``expired``).
"""

from __future__ import annotations

from typing import Any

DATASET = "availability"


def latest_catalogue(ctx: Any) -> Any:
    """The catalogue snapshot for this run: the newest committed at or before the run, else the newest (a
    backfill of activity older than the first snapshot)."""
    from skyrec.jobs.base import NotReady

    manifest = ctx.as_of("catalogue", or_newest=True)
    if manifest is None:
        raise NotReady("no committed catalogue snapshot (run the ingest_programme_metadata DAG first)")
    return manifest


def run(ctx: Any) -> dict[str, Any]:
    import numpy as np
    import pyarrow as pa
    import pyarrow.compute as pc

    from skyrec.data.catalogue import available_mask
    from skyrec.data.lakeio import read_parquet, write_parquet
    from skyrec.data.schemas import AVAILABILITY
    from skyrec.gates import ingest_invariant

    done = ctx.committed(DATASET)
    if done is not None:
        return {"outputs": [done.path], "noop": True, "available": done.rows}
    at = ctx.run.logical_date
    cat_manifest = latest_catalogue(ctx)
    cat = read_parquet(ctx.lake, cat_manifest, "catalogue.parquet",
                       columns=["item_id", "available_from", "available_until"])
    at_scalar = pa.scalar(at, pa.timestamp("us", tz="UTC"))

    def np_mask(mask: Any) -> Any:
        if isinstance(mask, pa.ChunkedArray):
            mask = mask.combine_chunks() if mask.num_chunks else pa.array([], pa.bool_())
        return np.asarray(mask.to_numpy(zero_copy_only=False), dtype=bool)

    # one reason per row, in this order: bad rows are quarantined, rows not available now are filtered
    ids = cat.column("item_id")
    missing_id = np_mask(pc.or_(pc.is_null(ids), pc.equal(pc.utf8_trim_whitespace(ids), "").fill_null(True)))
    first = np.ones(cat.num_rows, dtype=bool)
    seen: set[str] = set()
    for i, v in enumerate(ids.to_pylist()):
        if v in seen:
            first[i] = False
        elif v is not None:
            seen.add(v)
    duplicate = ~first & ~missing_id
    no_window = np_mask(pc.is_null(cat.column("available_from")))
    not_yet_m = np_mask(pc.greater(cat.column("available_from"), at_scalar).fill_null(False))
    mask = available_mask(cat, at)
    taken = np.zeros(cat.num_rows, dtype=bool)
    counts: dict[str, int] = {}
    for reason, m in (("missing_id", missing_id), ("duplicate_item", duplicate), ("no_window", no_window),
                      ("not_yet", not_yet_m), ("expired", ~mask)):
        hit = m & ~taken
        counts[reason] = int(hit.sum())
        taken |= hit
    keep = ~taken
    out = cat.filter(pa.array(keep)).select(AVAILABILITY.names).cast(AVAILABILITY).sort_by("item_id")
    quarantined = {k: counts[k] for k in ("missing_id", "duplicate_item")}
    filtered = {k: counts[k] for k in ("no_window", "not_yet", "expired")}
    invariant = {"items": ingest_invariant("items", records_in=cat.num_rows, committed=out.num_rows,
                                           quarantined=quarantined, filtered=filtered)}
    with ctx.stage(DATASET) as stage:
        for reason in quarantined:
            bad = cat.filter(pa.array((missing_id if reason == "missing_id" else duplicate) & ~keep))
            stage.quarantine(reason, bad.to_pylist())
        write_parquet(stage, "availability.parquet", out)
        meta = {"at": at.isoformat(), "catalogue": cat_manifest.path, "available": out.num_rows,
                "not_yet": counts["not_yet"], "expired": counts["expired"], "no_window": counts["no_window"],
                "invariant": invariant}
        manifest = stage.commit(meta)
    return {"outputs": [manifest.path], **meta}
