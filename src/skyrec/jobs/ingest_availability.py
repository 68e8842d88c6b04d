"""Job ``ingest_availability``: which items are playable at the run's logical time.

Input: the latest committed ``catalogue`` at or before this run (else the latest at all). An item is
available when ``available_from <= logical time < available_until`` (null ``available_until`` = no end);
all timestamps are UTC (the catalogue build converted the source's offsets).

Output ``availability``: ``availability.parquet`` (schema AVAILABILITY, sorted by item_id); meta
``at`` (ISO time), ``catalogue`` (the snapshot used), ``available``, ``expired``, ``not_yet``.
"""

from __future__ import annotations

from typing import Any

DATASET = "availability"


def latest_catalogue(ctx: Any) -> Any:
    """The catalogue snapshot for this run: the newest committed at or before the run, else the newest."""
    from skyrec.jobs.base import BadInput

    own = ctx.path("catalogue")
    hist = ctx.lake.history(ctx.config, "catalogue")
    if not hist:
        raise BadInput("no committed catalogue snapshot (run the ingest_programme_metadata DAG first)")
    before = [m for m in hist if m.path <= own]
    return (before or hist)[-1]


def run(ctx: Any) -> dict[str, Any]:
    import numpy as np
    import pyarrow as pa
    import pyarrow.compute as pc

    from skyrec.data.catalogue import available_mask
    from skyrec.data.lakeio import read_parquet, write_parquet
    from skyrec.data.schemas import AVAILABILITY

    done = ctx.committed(DATASET)
    if done is not None:
        return {"outputs": [done.path], "noop": True, "available": done.rows}
    at = ctx.run.logical_date
    cat_manifest = latest_catalogue(ctx)
    cat = read_parquet(ctx.lake, cat_manifest, "catalogue.parquet",
                       columns=["item_id", "available_from", "available_until"])
    mask = available_mask(cat, at)
    at_scalar = pa.scalar(at, pa.timestamp("us", tz="UTC"))
    not_yet = int(np.asarray(pc.greater(cat.column("available_from"), at_scalar).fill_null(False)).sum())
    out = cat.filter(pa.array(mask)).select(AVAILABILITY.names).cast(AVAILABILITY).sort_by("item_id")
    with ctx.stage(DATASET) as stage:
        write_parquet(stage, "availability.parquet", out)
        meta = {"at": at.isoformat(), "catalogue": cat_manifest.path, "available": out.num_rows,
                "not_yet": not_yet, "expired": cat.num_rows - out.num_rows - not_yet}
        manifest = stage.commit(meta)
    return {"outputs": [manifest.path], **meta}
