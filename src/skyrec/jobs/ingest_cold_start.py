"""Job ``ingest_cold_start``: popular-now lists per variant, for users without history.

Inputs (committed): the latest ``activity_snapshot``, the catalogue snapshot for this run (newest at or
before it) and the availability at this run (its ``availability`` output when committed, otherwise computed
from the catalogue at the run's logical time). Score of an item = plays (``complete`` counts like
``play``) by distinct users in the last ``ingest.cold_start.window_days`` before the snapshot's end.
For each variant, candidates are ``skyrec.data.catalogue.candidate_mask(catalogue, variant.candidates)``
AND available now; the top ``ingest.cold_start.size`` by score are kept, topped up with the newest
available candidates (score 0) when fewer were played -- so a rail is never empty while it has candidates.

Output ``cold_start``: ``cold_start.parquet`` (schema COLD_START: variant, rank (1-based), item_id, score
(plays / the variant's top plays, in (0, 1]; 0 for top-ups)); meta per variant: candidates, played, rows;
meta ``invariant``: events read in the window = listeners counted (distinct user-item pairs of catalogue
items) + quarantined (``missing_id``) + filtered (``repeat_listen``, ``not_in_catalogue``).
"""

from __future__ import annotations

import datetime as dt
from typing import Any

DATASET = "cold_start"


def run(ctx: Any) -> dict[str, Any]:
    import numpy as np
    import pyarrow as pa
    import pyarrow.compute as pc
    import pyarrow.parquet as pq

    from skyrec.data.catalogue import available_mask, candidate_mask
    from skyrec.data.lakeio import parquet_files, read_parquet, write_parquet
    from skyrec.data.schemas import COLD_START, TS
    from skyrec.gates import ingest_invariant
    from skyrec.jobs.base import NotReady
    from skyrec.jobs.ingest_availability import latest_catalogue

    cfg = ctx.config
    done = ctx.committed(DATASET)
    if done is not None:
        return {"outputs": [done.path], "noop": True, "rows": done.rows}
    snapshot = ctx.as_of("activity_snapshot", or_newest=True)
    if snapshot is None:
        raise NotReady("no committed activity_snapshot (run ingest_user_activity or backfill_user_activity first)")
    cat_manifest = latest_catalogue(ctx)
    catalogue = read_parquet(ctx.lake, cat_manifest, "catalogue.parquet")
    at = ctx.run.logical_date
    avail_manifest = ctx.lake.manifest(ctx.path("availability"))
    if avail_manifest is not None:
        avail_ids = read_parquet(ctx.lake, avail_manifest, "availability.parquet", ["item_id"]).column("item_id")
        available = pc.is_in(catalogue.column("item_id"), value_set=avail_ids.combine_chunks()).to_numpy(
            zero_copy_only=False)
    else:
        available = available_mask(catalogue, at)

    last = snapshot.meta.get("last_interval")
    end = (dt.datetime.strptime(last, "%Y%m%dT%H").replace(tzinfo=dt.UTC) + dt.timedelta(hours=1)) if last else at
    since = pa.scalar(end - dt.timedelta(days=cfg.ingest.cold_start.window_days), TS)
    played: list[pa.Table] = []
    for f in parquet_files(snapshot):
        with ctx.lake.fs.open(ctx.lake.abspath(f"{snapshot.path}/{f}"), "rb") as fh:
            t = pq.read_table(fh, columns=["user_id", "item_id", "event_ts"], filters=[("event_ts", ">=", since)])
        played.append(t.select(["user_id", "item_id"]))
    plays = pa.concat_tables(played) if played else pa.table({"user_id": pa.array([], pa.string()),
                                                              "item_id": pa.array([], pa.string())})
    # distinct listeners per item: one enthusiastic user cannot make an item "popular". Every event read
    # is accounted for: a listener counted, or quarantined (no user/item id), or filtered with a reason.
    has_ids = pc.and_(pc.is_valid(plays.column("user_id")), pc.is_valid(plays.column("item_id")))
    valid = plays.filter(has_ids)
    all_pairs = valid.group_by(["item_id", "user_id"]).aggregate([])
    n_pairs = all_pairs.num_rows
    pairs = all_pairs.filter(pc.is_in(all_pairs.column("item_id"),
                                      value_set=catalogue.column("item_id").combine_chunks()))
    invariant = {"events": ingest_invariant(
        "events", records_in=plays.num_rows, committed=pairs.num_rows,
        quarantined={"missing_id": plays.num_rows - valid.num_rows},
        filtered={"repeat_listen": valid.num_rows - n_pairs, "not_in_catalogue": n_pairs - pairs.num_rows})}
    per_item = pairs.group_by("item_id").aggregate([("user_id", "count")])
    if per_item.num_rows:
        idx = pc.index_in(catalogue.column("item_id"), value_set=per_item.column("item_id"))
        counts = pc.fill_null(pc.take(per_item.column("user_id_count"), idx.fill_null(0)), 0).to_numpy(
            zero_copy_only=False).astype(np.float64)
        counts[~pc.is_valid(idx).to_numpy(zero_copy_only=False)] = 0.0
    else:  # nothing played in the window (a quiet week, a new deployment): newest candidates only
        counts = np.zeros(catalogue.num_rows, dtype=np.float64)
    release = pc.cast(catalogue.column("release_ts"), pa.int64()).fill_null(0).to_numpy(zero_copy_only=False)
    item_ids = np.asarray(catalogue.column("item_id").to_pylist(), dtype=object)
    size = cfg.ingest.cold_start.size
    tables, per_variant = [], {}
    for name, variant in sorted(cfg.variants.items()):
        mask = candidate_mask(catalogue, variant.candidates) & available
        cand = np.flatnonzero(mask)
        c = counts[cand]
        # played first (by listeners, then newest, then id), then the newest unplayed candidates
        order = np.lexsort((item_ids[cand], -release[cand], -c))
        top = cand[order[:size]]
        best = counts[top].max() if len(top) and counts[top].max() > 0 else 1.0
        tables.append(pa.table({
            "variant": pa.array([name] * len(top), pa.string()),
            "rank": pa.array(np.arange(1, len(top) + 1, dtype=np.int32)),
            "item_id": pa.array(item_ids[top].tolist(), pa.string()),
            "score": pa.array((counts[top] / best).astype(np.float32)),
        }, schema=COLD_START))
        per_variant[name] = {"candidates": int(len(cand)), "played": int((c > 0).sum()), "rows": int(len(top))}
    out = pa.concat_tables(tables) if tables else COLD_START.empty_table()
    with ctx.stage(DATASET) as stage:
        write_parquet(stage, "cold_start.parquet", out)
        meta = {"at": at.isoformat(), "activity_snapshot": snapshot.path, "catalogue": cat_manifest.path,
                "availability": avail_manifest.path if avail_manifest else None, "window_end": end.isoformat(),
                "window_days": cfg.ingest.cold_start.window_days, "variants": per_variant, "invariant": invariant}
        manifest = stage.commit(meta)
    return {"outputs": [manifest.path], "rows": out.num_rows, "variants": per_variant}
