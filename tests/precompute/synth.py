"""A synthetic lake for precompute tests: a committed catalogue, availability, cold_start and a published
model artefact, all written through the commit protocol with the project's schemas."""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import scipy.sparse as sp

from skyrec.config import Config
from skyrec.data.schemas import AVAILABILITY, CATALOGUE, COLD_START
from skyrec.models.artefact import published_model_pointer, save_artefact
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


def _write(lake: Lake, dataset: str, rel: str, name: str, table: pa.Table, meta: dict | None = None) -> None:
    stage = lake.stage(dataset, rel, Producer(), force=True)
    with stage.open(name, "wb", rows=table.num_rows) as fh:
        pq.write_table(table, fh)
    stage.commit(meta or {})


def build(config: Config, *, n_users: int = 300, n_items: int = 400, d: int = 8, seed: int = 0,
          bad_user: bool = True, version: str = "v1") -> Synth:
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
    _write(lake, "catalogue", config.dataset_path("catalogue", run_key=cat_key), "catalogue.parquet", catalogue)
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
    return Synth(user_ids, item_ids, U, V, seen, catalogue, unavailable, rel)
