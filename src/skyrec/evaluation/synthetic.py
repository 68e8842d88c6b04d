"""Planted-taste synthetic data: activity and catalogue whose ground truth is known.

Each user has one favourite *topic*; each topic maps to one genre, one masterbrand and a few brands.
A user's plays come from their topic with probability ``purity`` (popular items more often: Zipf within
the topic), otherwise from anywhere. Some episodes are *new*: released in the last days, they are only
played after release, so a time split leaves them without training plays -- the cold-start case that a
feature model (brand, genre) must handle. Used by the model contract tests, the job tests and the
training benchmark; nothing here is needed in production.
"""

from __future__ import annotations

import datetime as dt
from dataclasses import dataclass

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import scipy.sparse as sp

from skyrec.config import Config
from skyrec.data.schemas import ACTIVITY, CATALOGUE
from skyrec.storage import Lake, Manifest, Producer

GENRES = ["Comedy", "Drama", "Crime", "Music", "Factual", "History", "Science", "Sport"]
FORMATS = ["Podcasts", "Mixes", "Talks", "Documentaries", "Audiobooks", "Readings", "Performances", "Discussion"]


@dataclass
class PlantedTruth:
    user_topic: np.ndarray   # int [n_users]
    item_topic: np.ndarray   # int [n_items]
    new_items: np.ndarray    # bool [n_items]: released within the last ``new_days``


def planted_matrix(n_users: int = 300, n_items: int = 400, n_topics: int = 8, plays_per_user: int = 20,
                   purity: float = 0.9, seed: int = 0) -> tuple[sp.csr_matrix, np.ndarray, np.ndarray]:
    """A users x items count matrix with planted topic taste: (matrix, user_topic, item_topic)."""
    rng = np.random.default_rng(seed)
    user_topic = rng.integers(0, n_topics, n_users)
    item_topic = np.arange(n_items) % n_topics
    rows, cols = _draw(rng, user_topic, item_topic, np.ones(n_items, bool), plays_per_user, purity, n_topics)
    m = sp.csr_matrix((np.ones(len(rows), np.float32), (rows, cols)), shape=(n_users, n_items))
    m.sum_duplicates()
    return m, user_topic, item_topic


def _draw(rng: np.random.Generator, user_topic: np.ndarray, item_topic: np.ndarray, allowed: np.ndarray,
          plays_per_user: float, purity: float, n_topics: int) -> tuple[np.ndarray, np.ndarray]:
    n_users = len(user_topic)
    counts = np.maximum(1, rng.poisson(plays_per_user, n_users))
    rows = np.repeat(np.arange(n_users), counts)
    topics = user_topic[rows]
    on_topic = rng.random(len(rows)) < purity
    cols = np.empty(len(rows), dtype=np.int64)
    # Zipf-like popularity inside each topic: rank r drawn with weight 1 / (r + 1).
    for t in range(n_topics):
        members = np.flatnonzero((item_topic == t) & allowed)
        sel = on_topic & (topics == t)
        if len(members) == 0 or not sel.any():
            continue
        p = 1.0 / np.arange(1, len(members) + 1)
        cols[sel] = rng.choice(members, size=int(sel.sum()), p=p / p.sum())
    anywhere = np.flatnonzero(allowed)
    cols[~on_topic] = rng.choice(anywhere, size=int((~on_topic).sum()))
    return rows, cols


def planted_tables(n_users: int = 300, n_items: int = 400, n_topics: int = 8, plays_per_user: float = 25,
                   purity: float = 0.85, days: int = 28, new_days: int = 3, new_fraction: float = 0.1,
                   end: dt.datetime | None = None, seed: int = 0) -> tuple[pa.Table, pa.Table, PlantedTruth]:
    """(activity table ``ACTIVITY``, catalogue table ``CATALOGUE``, truth) over ``days`` days up to ``end``."""
    rng = np.random.default_rng(seed)
    end = end or dt.datetime(2026, 3, 1, tzinfo=dt.UTC)
    start = end - dt.timedelta(days=days)
    user_topic = rng.integers(0, n_topics, n_users)
    item_topic = rng.integers(0, n_topics, n_items)
    new = rng.random(n_items) < new_fraction
    brands_per_topic = 4
    brand = item_topic * brands_per_topic + rng.integers(0, brands_per_topic, n_items)
    duration = rng.integers(600, 3600, n_items).astype(np.int32)
    span_us = int((end - start).total_seconds() * 1e6)
    new_span_us = int(new_days * 86400 * 1e6)
    release_us = np.where(new, span_us - rng.integers(new_span_us // 2, new_span_us, n_items),
                          rng.integers(0, span_us // 4, n_items))

    rows, cols = _draw(rng, user_topic, item_topic, np.ones(n_items, bool), plays_per_user, purity, n_topics)
    # An event happens uniformly between the item's release and the end.
    ts = release_us[cols] + (rng.random(len(rows)) * (span_us - release_us[cols])).astype(np.int64)
    complete = rng.random(len(rows)) < 0.4
    played = np.where(complete, duration[cols], rng.uniform(0.05, 1.0, len(rows)) * duration[cols])
    start_us = int(start.timestamp() * 1e6)
    activity = pa.table({
        "user_id": pa.array([f"u{r:06d}" for r in rows], pa.string()),
        "item_id": pa.array([f"i{c:06d}" for c in cols], pa.string()),
        "event_type": pa.array(np.where(complete, "complete", "play").tolist(), pa.string()),
        "event_ts": pa.array(start_us + ts, pa.int64()).cast(pa.timestamp("us", tz="UTC")),
        "played_seconds": pa.array(played.astype(np.float32), pa.float32()),
    }, schema=ACTIVITY)

    release = pa.array(start_us + release_us, pa.int64()).cast(pa.timestamp("us", tz="UTC"))
    catalogue = pa.table({
        "item_id": [f"i{c:06d}" for c in range(n_items)],
        "title": [f"Episode {c}" for c in range(n_items)],
        "brand_id": [f"b{b:04d}" for b in brand],
        "brand_title": [f"Brand {b}" for b in brand],
        "series_id": [f"s{b:04d}" for b in brand],
        "masterbrand": [f"mb{t % 4}" for t in item_topic],
        "genres": [[GENRES[t % len(GENRES)]] for t in item_topic],
        "formats": [[FORMATS[t % len(FORMATS)]] for t in item_topic],
        "release_ts": release,
        "duration_seconds": pa.array(duration, pa.int32()),
        "available_from": release,
        "available_until": pa.nulls(n_items, pa.timestamp("us", tz="UTC")),
        "updated_ts": release,
    }, schema=CATALOGUE)
    return activity, catalogue, PlantedTruth(user_topic=user_topic, item_topic=item_topic, new_items=new)


def commit_table(lake: Lake, dataset: str, rel: str, table: pa.Table, meta: dict | None = None,
                 name: str = "part-0.parquet") -> Manifest:
    """Stage and commit one Parquet file as a committed output (how tests and benchmarks seed a lake)."""
    stage = lake.stage(dataset, rel, Producer(task_id=f"synthetic_{dataset}"))
    with stage.open(name, "wb", rows=table.num_rows) as fh:
        pq.write_table(table, fh)
    return stage.commit(meta or {})


def seed_lake(config: Config, lake: Lake, *, end: dt.datetime | None = None, **kwargs: object) -> PlantedTruth:
    """Commit a planted activity snapshot and catalogue at ``end`` (keys from the config's dataset paths)."""
    end = end or dt.datetime(2026, 3, 1, tzinfo=dt.UTC)
    activity, catalogue, truth = planted_tables(end=end, **kwargs)  # type: ignore[arg-type]
    commit_table(lake, "activity_snapshot",
                 config.dataset_path("activity_snapshot", interval_key=end.strftime("%Y%m%dT%H")), activity)
    commit_table(lake, "catalogue", config.dataset_path("catalogue", run_key=end.strftime("%Y%m%dT%H%M%S")),
                 catalogue, name="catalogue.parquet")  # the file a committed catalogue holds its items in
    return truth
