"""A synthetic lake for precompute tests: a committed catalogue, availability, cold_start and a published
model artefact, all written through the commit protocol with the project's schemas."""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq
import scipy.sparse as sp

from skyrec.config import Config
from skyrec.data.schemas import ACTIVITY, AVAILABILITY, CATALOGUE, COLD_START
from skyrec.models.artefact import published_model_pointer, save_artefact, save_model
from skyrec.storage import Lake, Producer

AT = dt.datetime(2026, 3, 1, 12, tzinfo=dt.UTC)
GENRES = ["Comedy", "Drama", "News", "Music"]


@dataclass
class Synth:
    user_ids: np.ndarray
    item_ids: np.ndarray
    U: np.ndarray
    V: np.ndarray
    seen: sp.csr_matrix
    catalogue: pa.Table
    unavailable: set[str]
    model_path: str
    activity: pa.Table | None = None  # the committed activity snapshot (``activity=True``)


def _write(lake: Lake, dataset: str, rel: str, name: str, table: pa.Table, meta: dict | None = None,
           beside: dict[str, pa.Table] | None = None) -> None:
    """Commit ``table`` as ``name`` (and the tables of ``beside`` next to it) as one output."""
    stage = lake.stage(dataset, rel, Producer(), force=True)
    for file, t in {name: table, **(beside or {})}.items():
        with stage.open(file, "wb", rows=t.num_rows) as fh:
            pq.write_table(t, fh)
    stage.commit(meta or {})


def entity_tables(catalogue: pa.Table) -> dict[str, pa.Table]:
    """What build_catalogue commits beside ``catalogue.parquet``: the entity tables the items were built from
    (no ``item_id``; brands carry genres, availability its windows), which are not items."""
    brands = sorted({b for b in catalogue.column("brand_id").to_pylist() if b})
    return {"brands.parquet": pa.table({"id": brands, "title": [b.upper() for b in brands],
                                        "masterbrand": ["radio4"] * len(brands),
                                        "genres": [["Comedy"]] * len(brands), "formats": [["Podcasts"]] * len(brands)}),
            "availability.parquet": pa.table({"id": catalogue.column("item_id"),
                                              "available_from": catalogue.column("available_from"),
                                              "available_until": catalogue.column("available_until")})}


def build(config: Config, *, n_users: int = 300, n_items: int = 400, d: int = 8, seed: int = 0,
          bad_user: bool = True, version: str = "v1", activity: bool = False) -> Synth:
    lake = Lake.from_config(config)
    rng = np.random.default_rng(seed)
    item_ids = np.array([f"i{j:05d}" for j in range(n_items)], dtype=object)
    user_ids = np.array([f"u{u:06d}" for u in range(n_users)], dtype=object)
    if bad_user:
        user_ids[3] = "bad user/id"  # not a valid key component: quarantined, never a key
    genres = [[GENRES[j % 4]] + (["Comedy"] if j % 7 == 0 else []) for j in range(n_items)]
    release = [AT - dt.timedelta(days=float(j % 5)) for j in range(n_items)]  # News older than 2 days: out
    brands = [f"b{j % 23}" if j % 11 else None for j in range(n_items)]
    catalogue = pa.Table.from_pylist([{
        "item_id": item_ids[j], "title": f"Title {j}", "brand_id": brands[j], "brand_title": brands[j] and brands[j].upper(),
        "series_id": None, "masterbrand": "radio4", "genres": genres[j], "formats": ["Podcasts"],
        "release_ts": release[j], "duration_seconds": 1800, "available_from": AT - dt.timedelta(days=30),
        "available_until": None, "updated_ts": AT} for j in range(n_items)], schema=CATALOGUE)
    cat_key = "20260301T100000"
    _write(lake, "catalogue", config.dataset_path("catalogue", run_key=cat_key), "catalogue.parquet", catalogue,
           beside=entity_tables(catalogue))
    unavailable = {item_ids[j] for j in range(0, n_items, 13)}
    avail = pa.Table.from_pylist([{"item_id": i, "available_from": AT - dt.timedelta(days=1),
                                   "available_until": (AT - dt.timedelta(hours=1)) if i in unavailable else None}
                                  for i in item_ids], schema=AVAILABILITY)
    _write(lake, "availability", config.dataset_path("availability", run_key=cat_key), "availability.parquet", avail)
    cold = pa.Table.from_pylist([{"variant": v, "rank": r, "item_id": item_ids[(r * 7) % n_items], "score": 1.0 / (r + 1)}
                                 for v in config.variants for r in range(30)], schema=COLD_START)
    _write(lake, "cold_start", config.dataset_path("cold_start", run_key=cat_key), "cold_start.parquet", cold)

    U = rng.standard_normal((n_users, d)).astype(np.float32)
    V = rng.standard_normal((n_items, d)).astype(np.float32)
    seen = sp.random(n_users, n_items, density=0.05, format="csr", random_state=seed, dtype=np.float32)
    seen.data[:] = 1
    seen = seen.tolil()
    seen[5, :] = 1  # user 5 has played everything: no personalised result, no key
    seen = seen.tocsr()
    rel = config.dataset_path("model", model="als", version=version, run_key="20260301T110000")
    stage = lake.stage("model", rel, Producer())
    save_artefact(stage, user_ids=user_ids, item_ids=item_ids, user_factors=U, item_factors=V, seen=seen,
                  evaluation={"ndcg_at_k": 0.1})
    stage.commit({"model": "als", "version": version, "model_version": f"{version}.20260301T110000", "factors": d,
                  "n_users": n_users, "n_items": n_items})
    lake.write_pointer(published_model_pointer("als", version), {"path": rel})
    plays = None
    if activity:
        plays = _activity(rng, user_ids, item_ids)
        odd = pa.array([t.day % 2 == 1 for t in plays["event_ts"].to_pylist()])
        # two files, as the snapshot writes one per day: most users' plays span both
        _write_parts(lake, config.dataset_path("activity_snapshot", interval_key="20260301T110000"),
                     [("part-0.parquet", plays.filter(pc.invert(odd))), ("part-1.parquet", plays.filter(odd))])
    return Synth(user_ids, item_ids, U, V, seen, catalogue, unavailable, rel, plays)


def _activity(rng: np.random.Generator, user_ids: np.ndarray, item_ids: np.ndarray) -> pa.Table:
    """Plays of every user except the last (no history): 1..30 each at distinct times, plus items that are
    not in the catalogue (``gone-*``: removed programmes still show up in history, without metadata)."""
    rows = []
    for u, user in enumerate(user_ids[:-1]):
        n = int(rng.integers(1, 31))
        minutes = rng.choice(20 * 24 * 60, size=n, replace=False)
        for m in minutes.tolist():
            item = str(item_ids[int(rng.integers(len(item_ids)))]) if m % 17 else f"gone-{u}"
            rows.append({"user_id": str(user), "item_id": item, "event_type": "play",
                         "event_ts": AT - dt.timedelta(minutes=int(m) + 1), "played_seconds": 60.0})
    return pa.Table.from_pylist(rows, schema=ACTIVITY)


def _write_parts(lake: Lake, rel: str, parts: list[tuple[str, pa.Table]]) -> None:
    """One committed output of several Parquet files (a snapshot written per day)."""
    stage = lake.stage("activity_snapshot", rel, Producer(), force=True)
    for name, table in parts:
        with stage.open(name, "wb", rows=table.num_rows) as fh:
            pq.write_table(table, fh)
    stage.commit({})


def expected_history(plays: pa.Table, user_id: str, n: int) -> list[list[str]]:
    """The reference answer, computed plainly: the user's last ``n`` plays, newest first."""
    mine = [r for r in plays.to_pylist() if r["user_id"] == user_id]
    mine.sort(key=lambda r: (-r["event_ts"].timestamp(), r["item_id"]))
    return [[r["item_id"], r["event_ts"].strftime("%Y-%m-%dT%H:%M:%SZ")] for r in mine[:n]]



def publish_model(config: Config, s: Synth, model: Any) -> str:
    """Commit ``model`` (fitted or holding factors for the synthetic users and items) as the published
    ``als``/``v1`` artefact, with its ``model.json`` naming its class (so precompute computes the similar
    lists); the artefact's path."""
    lake = Lake.from_config(config)
    rel = config.dataset_path("model", model="als", version="v1", run_key="20260301T113000")
    stage = lake.stage("model", rel, Producer())
    save_artefact(stage, user_ids=s.user_ids, item_ids=s.item_ids, user_factors=model.user_representations(),
                  item_factors=model.item_representations(), seen=s.seen)
    save_model(stage, model)
    stage.commit({"model": "als", "version": "v1", "model_version": "v1.20260301T113000",
                  "n_users": len(s.user_ids), "n_items": len(s.item_ids)})
    lake.write_pointer(published_model_pointer("als", "v1"), {"path": rel})
    return rel


def restored_key_count(rdb: bytes, folder: Path) -> int:
    """The keys a fresh redis-server holds after loading the RDB file ``rdb`` (started in ``folder``)."""
    import redis

    from skyrec.redis_local import LocalRedis, free_port

    folder.mkdir(parents=True, exist_ok=True)
    (folder / "dump.rdb").write_bytes(rdb)
    server = LocalRedis(port=free_port(), dir=folder).start(dbfilename="dump.rdb")
    try:
        client = redis.Redis(host=server.host, port=server.port)
        try:
            return int(client.dbsize())
        finally:
            client.close()
    finally:
        server.stop()
