"""Sample data: a broadcaster-like catalogue and listening activity drawn from PLANTED user tastes.

``generate(config, ...)`` lands data in RAW form in the configured source (``source.url``; a local
folder, or an S3-compatible bucket written through s3fs with ``source.endpoint_url``), exactly as the
ingestion jobs expect it in production:

Metadata -- many small JSON objects, one per record version, in three streams::

    {source}/{metadata_prefix}/{stream}/YYYY/MM/DD/HH/<record id>-<seq>.json    (HH = when it landed)

- ``programmes``: ``{"id": "b0000123", "type": "brand", "title", "masterbrand": {"id", "name"},
  "genres": [...], "formats": [...], "synopsis", "updated"}`` and ``{"id": "s0000456", "type": "series",
  "brand_id", "title", "position", "updated"}``
- ``episodes``: ``{"id": "p0001234", "type": "episode", "title", "parent": {"id", "type": "series"|"brand"},
  "position", "release_date", "duration", "updated"}`` -- ``genres``/``formats`` only when they differ
  from the brand's, spelled inconsistently ("comedy", "Sci & Tech", "podcast"); ``duration`` in seconds
  or ISO-8601 (``PT28M``); timestamps with UTC offsets.
- ``availability``: ``{"id": "p0001234", "type": "availability", "episode_id", "available_from",
  "available_until" (null = no end), "updated"}``

Some records are updated later (a higher ``seq`` with a later ``updated``: it wins), a few stale
versions land late (a higher ``seq`` with an *earlier* ``updated``: it must lose), a few scheduled
episodes are withdrawn (``{"id", "type": "episode", "deleted": true, "updated"}``) and a ``bad_rate``
fraction of extra objects are malformed JSON.

Activity -- hourly Parquet files with schema ``skyrec.data.schemas.RAW_ACTIVITY`` for the ``days`` days
ending at ``end`` (exclusive)::

    {source}/{activity_prefix}/date=YYYY-MM-DD/hour=HH/part-00000.parquet

A ``bad_rate`` fraction of events is deliberately bad: unknown event types, unknown item ids,
duplicate event ids, timestamps far in the future or the past, missing user ids. Pause/seek events
and very short plays are normal traffic (filtered, not bad).

Ground truth -- ``{source}/_truth/``:

- ``catalogue.parquet``: the catalogue ingestion must produce (``CATALOGUE`` columns, one row per
  non-deleted episode, latest version of every record, UTC) plus ``popularity`` (float) and
  ``cold_start`` (bool: released in the last 6 hours before ``end``, deliberately never played).
- ``user_tastes.parquet``: ``user_id``, ``genres`` list<string> + ``genre_weights`` list<float>,
  ``brands`` list<string> (brand ids) + ``brand_weights`` list<float>, ``p_brand``, ``p_genre``,
  ``p_popular`` (the mixture of listening modes), ``activity`` (relative rate).
- ``next_items.parquet``: ``user_id``, ``rank`` (1..10), ``item_id``, ``weight`` -- the 10 items with the
  highest planted probability of being played next at ``end`` (for the first 20,000 users). A model's
  recall of these items measures how close it gets to the planted truth.
- ``summary.json``: the summary dict returned by ``generate``.

How plays are drawn: each user has 1-3 favourite genres (weights), 4 favourite brands drawn from those
genres, and a mixture over three modes: follow a favourite brand (the newest released episode, sometimes
an earlier one: series continuation), browse a favourite genre (popularity-weighted among items
available that day) or play something globally popular (noise). Everything is drawn with NumPy in
vectorised chunks and written as it goes, so 3.5M users / 225k programmes fit in memory; the same seed
and arguments give the same bytes.
"""

from __future__ import annotations

import datetime as dt
import io
import json
import math
import os
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq

from skyrec.config import Config
from skyrec.data.catalogue import FORMATS
from skyrec.data.schemas import CATALOGUE, RAW_ACTIVITY

HOUR = 3600
DAY = 86400
COLD_HOURS = 6
TRUTH_DIR = "_truth"
TRUTH_NEXT_USERS = 20_000
EVENT_TYPES = ("play", "complete", "pause", "seek")
PLATFORMS = ("ios", "android", "web", "smart_speaker", "car")
BAD_KINDS = ("unknown_event_type", "unknown_item", "duplicate_event_id", "future_ts", "too_old", "missing_user")

MASTERBRANDS = (
    ("radio_north", "Radio North"), ("radio_arts", "Radio Arts"), ("talk_network", "Talk Network"),
    ("pop_network", "Pop Network"), ("classic_network", "Classic Network"), ("world_service", "World Service"),
    ("sport_live", "Sport Live"), ("podcast_studio", "Podcast Studio"), ("kids_audio", "Kids Audio"),
    ("drama_extra", "Drama Extra"), ("news_network", "News Network"), ("local_radio", "Local Radio"),
)
# Genre prior (how many brands and listeners a genre has) and the formats its brands use.
GENRE_PRIOR = {
    "News": 0.12, "Comedy": 0.11, "Drama": 0.10, "Music": 0.13, "Crime": 0.06, "Thriller": 0.04, "Factual": 0.07,
    "History": 0.05, "Science": 0.05, "Philosophy": 0.02, "Sport": 0.08, "Children's": 0.04, "Arts": 0.04,
    "Religion & Ethics": 0.02, "Politics": 0.04,
}
GENRE_FORMATS = {
    "Comedy": ["Sitcoms", "Podcasts", "Performances", "Quizzes", "Readings"],
    "Drama": ["Audiobooks", "Readings", "Podcasts", "Performances"],
    "Crime": ["Audiobooks", "Podcasts", "Readings", "Documentaries"],
    "Thriller": ["Audiobooks", "Readings", "Podcasts"],
    "Music": ["Mixes", "Performances", "Interviews", "Podcasts"],
    "Factual": ["Documentaries", "Discussion", "Talks", "Podcasts", "Magazines"],
    "History": ["Documentaries", "Talks", "Discussion", "Podcasts"],
    "Science": ["Documentaries", "Talks", "Discussion", "Podcasts"],
    "Philosophy": ["Discussion", "Talks", "Podcasts"],
    "News": ["Bulletins", "Discussion", "Interviews", "Phone-ins"],
    "Sport": ["Phone-ins", "Discussion", "Magazines", "Podcasts", "Bulletins"],
    "Children's": ["Readings", "Audiobooks", "Podcasts"],
    "Arts": ["Discussion", "Interviews", "Magazines", "Readings"],
    "Religion & Ethics": ["Discussion", "Talks"],
    "Politics": ["Discussion", "Interviews", "Podcasts"],
}
GENRE_MASTERBRANDS = {
    "News": [10, 5, 2], "Comedy": [0, 7, 9], "Drama": [9, 1, 7], "Music": [3, 4, 0], "Crime": [9, 7],
    "Thriller": [9, 7], "Factual": [1, 5, 7], "History": [1, 7], "Science": [1, 5, 7], "Philosophy": [1, 7],
    "Sport": [6, 11], "Children's": [8], "Arts": [1, 4], "Religion & Ethics": [1, 11], "Politics": [2, 5, 10],
}
FORMAT_SECONDS = {
    "Bulletins": 300, "Mixes": 5400, "Audiobooks": 2400, "Sitcoms": 1800, "Readings": 900, "Performances": 3600,
    "Discussion": 2700, "Talks": 1800, "Documentaries": 2700, "Phone-ins": 5400, "Magazines": 3600,
    "Quizzes": 1800, "Interviews": 1800, "Podcasts": 2400,
}
# Raw spellings the source uses for some canonical names (the catalogue build folds them back).
GENRE_SPELLINGS = {"Comedy": ["comedy", "COMEDY", "Stand-up"], "Science": ["Sci & Tech", "science & nature"],
                   "Children's": ["Childrens", "kids"], "Sport": ["sports"], "News": ["Current Affairs"],
                   "Crime": ["true crime", "crime"], "Drama": ["drama", "Radio Drama"]}
FORMAT_SPELLINGS = {"Podcasts": ["podcast"], "Documentaries": ["documentary", "Docs"], "Mixes": ["DJ Mix"],
                    "Performances": ["performance", "Concert"], "Talks": ["talk", "lecture"],
                    "Audiobooks": ["audiobook"], "Readings": ["reading"], "Sitcoms": ["sitcom"]}
_ADJ = ("Secret", "Late", "Long", "Hidden", "Northern", "Quiet", "Golden", "Restless", "Curious", "Midnight",
        "Open", "Wild", "Modern", "Forgotten", "Brief", "Electric", "Lost", "Sunday", "Early", "Great")
_NOUN = ("Hour", "Garden", "Archive", "Room", "Signal", "Coast", "Library", "Session", "Republic", "Orchard",
         "Voyage", "Table", "Minds", "Station", "Chorus", "Files", "Ledger", "Frontier", "Kitchen", "Light")
_OFFSETS = (0, 0, 1, 1, -5, 2, 5.5, -8)


# ---- helpers -----------------------------------------------------------------------------------

def _iso(sec: float, offset_hours: float = 0.0) -> str:
    tz = dt.timezone(dt.timedelta(hours=offset_hours))
    text = dt.datetime.fromtimestamp(int(sec), tz).isoformat()
    return text.replace("+00:00", "Z") if offset_hours == 0 else text


def _hour_path(sec: float) -> str:
    return dt.datetime.fromtimestamp(int(sec), dt.UTC).strftime("%Y/%m/%d/%H")


def parse_end(end: str | dt.datetime | None) -> dt.datetime:
    """The exclusive end of the generated activity: ``end`` floored to the hour (default: now), UTC."""
    if end is None:
        ts = dt.datetime.now(dt.UTC)
    elif isinstance(end, dt.datetime):
        ts = end if end.tzinfo else end.replace(tzinfo=dt.UTC)
    else:
        ts = dt.datetime.fromisoformat(end.replace("Z", "+00:00"))
        ts = ts if ts.tzinfo else ts.replace(tzinfo=dt.UTC)
    return ts.astimezone(dt.UTC).replace(minute=0, second=0, microsecond=0)


def activity_path(config: Config, hour: dt.datetime, part: int = 0) -> str:
    """Source-relative path of an hourly activity file."""
    hour = hour.astimezone(dt.UTC)
    return (f"{config.source.activity_prefix}/date={hour:%Y-%m-%d}/hour={hour:%H}/"
            f"part-{part:05d}.parquet")


def write_parquet_bytes(table: pa.Table) -> bytes:
    """Parquet with fixed writer settings, so the same table always gives the same bytes."""
    buf = io.BytesIO()
    pq.write_table(table, buf, compression="zstd", compression_level=3, use_dictionary=True,
                   write_statistics=True, row_group_size=1 << 20)
    return buf.getvalue()


class _Sink:
    """Writes objects into the source: plain files locally, batched concurrent PUTs via s3fs for S3."""

    def __init__(self, config: Config) -> None:
        from skyrec.data.source import source_fs

        self.fs, self.root = source_fs(config)
        self.local = config.source.kind == "local"
        self._batch: dict[str, bytes] = {}
        self._dirs: set[str] = set()
        self.count = 0

    def put(self, rel: str, data: bytes) -> None:
        self.count += 1
        self._batch[f"{self.root}/{rel}"] = data
        if len(self._batch) >= 512:
            self.flush()

    def _write_local(self, item: tuple[str, bytes]) -> None:
        full, data = item
        with open(full, "wb") as fh:
            fh.write(data)

    def flush(self) -> None:
        """Write the pending objects concurrently (small-object writes are latency-bound, not CPU-bound)."""
        if not self._batch:
            return
        if self.local:
            from concurrent.futures import ThreadPoolExecutor

            for d in sorted({os.path.dirname(k) for k in self._batch} - self._dirs):
                os.makedirs(d, exist_ok=True)
                self._dirs.add(d)
            with ThreadPoolExecutor(8) as pool:
                list(pool.map(self._write_local, self._batch.items()))
        else:
            self.fs.pipe(self._batch)
        self._batch = {}


@contextmanager
def _progress(enabled: bool) -> Iterator[Any]:
    if not enabled:
        yield None
        return
    from rich.progress import BarColumn, Progress, TextColumn, TimeElapsedColumn

    with Progress(TextColumn("{task.description}"), BarColumn(), TextColumn("{task.completed}/{task.total}"),
                  TimeElapsedColumn(), transient=False) as progress:
        yield progress


def _weighted_pick(rng: np.random.Generator, cum: np.ndarray, n: int) -> np.ndarray:
    """Indices drawn with probabilities given by the cumulative weights ``cum`` (last element = total)."""
    return np.searchsorted(cum, rng.random(n) * cum[-1], side="right").clip(0, len(cum) - 1)


def _grouped_sampler(groups: np.ndarray, weights: np.ndarray, n_groups: int) -> tuple[np.ndarray, np.ndarray,
                                                                                    np.ndarray]:
    """Pre-compute per-group cumulative weights so that many (group -> member) draws are one searchsorted.

    Returns (order, keys, ok): members sorted by group; ``keys = group + cumulative share within group``;
    ``ok[g]`` is False for groups with no weight.
    """
    order = np.lexsort((np.arange(len(groups)), groups))
    order = order[weights[order] > 0]  # members without weight are never drawn
    g = groups[order]
    w = weights[order].astype(np.float64)
    totals = np.bincount(g, weights=w, minlength=n_groups)
    starts = np.concatenate([[0.0], np.cumsum(totals)[:-1]])
    share = (np.cumsum(w) - starts[g]) / totals[g]
    keys = g + np.minimum(share, 1.0 - 1e-12)
    return order, keys, totals > 0


def _draw_grouped(rng: np.random.Generator, sampler: tuple[np.ndarray, np.ndarray, np.ndarray],
                  groups: np.ndarray) -> np.ndarray:
    order, keys, _ = sampler
    pos = np.searchsorted(keys, groups + rng.random(len(groups)) * (1.0 - 1e-9), side="left")
    return order[pos.clip(0, len(order) - 1)]


# ---- the catalogue -----------------------------------------------------------------------------

class _Catalogue:
    """All catalogue arrays; episodes sorted by (brand, release)."""

    def __init__(self, rng: np.random.Generator, n_items: int, end: int) -> None:
        genres = list(GENRE_PRIOR)
        self.genres = genres
        n_genres = len(genres)
        n_brands = max(2 * n_genres, n_items // 12)
        n_brands = min(n_brands, n_items)
        prior = np.array([GENRE_PRIOR[g] for g in genres])
        primary = np.concatenate([np.arange(min(n_genres, n_brands)),
                                  rng.choice(n_genres, n_brands - min(n_genres, n_brands), p=prior / prior.sum())])
        self.n_brands = n_brands
        self.brand_genre = primary.astype(np.int16)
        second = rng.choice(n_genres, n_brands, p=prior / prior.sum())
        self.brand_genre2 = np.where((rng.random(n_brands) < 0.3) & (second != primary), second, -1).astype(np.int16)
        is_news = np.array([genres[g] == "News" for g in primary])
        self.brand_news = is_news
        mb = np.empty(n_brands, dtype=np.int16)
        fmt1 = np.empty(n_brands, dtype=np.int16)
        fmt2 = np.full(n_brands, -1, dtype=np.int16)
        fmt_index = {f: i for i, f in enumerate(FORMATS)}
        for b in range(n_brands):
            g = genres[primary[b]]
            mb[b] = GENRE_MASTERBRANDS[g][int(rng.integers(len(GENRE_MASTERBRANDS[g])))]
            opts = GENRE_FORMATS[g]
            f = rng.permutation(len(opts))
            fmt1[b] = fmt_index[opts[f[0]]]
            if len(opts) > 1 and rng.random() < 0.25:
                fmt2[b] = fmt_index[opts[f[1]]]
        self.brand_mb, self.brand_fmt1, self.brand_fmt2 = mb, fmt1, fmt2
        self.brand_pop = rng.lognormal(0.0, 1.0, n_brands) * np.where(is_news, 2.0, 1.0)
        # episodes per brand: news brands publish far more (and short-lived) episodes
        weight = rng.lognormal(0.0, 0.6, n_brands) * np.where(is_news, 6.0, 1.0)
        counts = 1 + rng.multinomial(n_items - n_brands, weight / weight.sum())
        brand = np.repeat(np.arange(n_brands), counts)
        age_days = np.where(is_news, rng.uniform(3, 10, n_brands), rng.uniform(30, 730, n_brands))
        brand_start = end - age_days * DAY
        release = brand_start[brand] + rng.random(n_items) * (end - brand_start[brand])
        not_news = ~is_news[brand]
        future = (rng.random(n_items) < 0.015) & not_news
        release[future] = end + rng.uniform(HOUR, 14 * DAY, int(future.sum()))
        cold = (rng.random(n_items) < 0.01) & not_news & ~future
        release[cold] = end - rng.uniform(60, COLD_HOURS * HOUR - 60, int(cold.sum()))
        release = np.floor(release)
        order = np.lexsort((release, brand))
        self.brand = brand[order].astype(np.int32)
        self.release = release[order].astype(np.int64)
        self.n_items = n_items
        self.brand_first = np.concatenate([[0], np.cumsum(counts)[:-1]]).astype(np.int64)
        self.brand_count = counts.astype(np.int64)
        self.position = (np.arange(n_items) - self.brand_first[self.brand]).astype(np.int32)
        self.future = self.release > end
        self.cold = (self.release > end - COLD_HOURS * HOUR) & ~self.future
        # series: non-news brands with more than 3 episodes have 1-5 series
        n_series = np.where(is_news | (counts <= 3), 0, rng.integers(1, 6, n_brands))
        n_series = np.minimum(n_series, counts)
        per_series = np.ceil(counts / np.maximum(n_series, 1)).astype(np.int64)
        series_local = np.where(n_series[self.brand] > 0, self.position // per_series[self.brand], -1)
        self.series_first = np.concatenate([[0], np.cumsum(n_series)[:-1]]).astype(np.int64)
        self.n_series = n_series
        self.series = np.where(series_local >= 0, self.series_first[self.brand] + series_local, -1).astype(np.int64)
        self.series_pos = series_local
        # availability windows
        news_item = is_news[self.brand]
        u = rng.random(n_items)
        until = np.where(news_item, self.release + rng.uniform(1, 2, n_items) * DAY,
                         np.where(u < 0.35, -1, self.release + rng.uniform(30, 400, n_items) * DAY))
        self.avail_from = self.release.copy()
        self.avail_until = np.floor(until).astype(np.int64)  # -1 = no end
        fmt = self.brand_fmt1[self.brand]
        base = np.array([FORMAT_SECONDS[f] for f in FORMATS])[fmt]
        self.duration = np.maximum(60, base * rng.lognormal(0, 0.25, n_items)).astype(np.int32)
        self.pop = (self.brand_pop[self.brand] * rng.lognormal(0, 0.7, n_items)).astype(np.float64)
        # ids: 'p' + 7 digits, a fixed bijection of the index so ids are not ordered by brand
        self.item_ids = np.array([f"p{(i * 7_919_993 + 1_234_567) % 9_000_000 + 1_000_000:07d}"
                                  for i in range(n_items)], dtype=object)
        self.brand_ids = np.array([f"b{(b * 104_729 + 77) % 9_000_000 + 1_000_000:07d}" for b in range(n_brands)],
                                  dtype=object)
        total_series = int(n_series.sum())
        self.series_ids = np.array([f"s{(s * 130_363 + 11) % 9_000_000 + 1_000_000:07d}"
                                    for s in range(total_series)], dtype=object)
        self.brand_titles = [self._brand_title(rng, b) for b in range(n_brands)]
        # later versions: updates (win), stale re-deliveries (lose), withdrawals of scheduled episodes
        self.updated = (rng.random(n_items) < 0.03) & ~self.cold
        self.stale = self.updated & (rng.random(n_items) < 0.2)
        self.deleted = self.future & (rng.random(n_items) < 0.3)
        self.extended = (rng.random(n_items) < 0.02) & (self.avail_until > 0) & ~news_item

    def _brand_title(self, rng: np.random.Generator, b: int) -> str:
        if self.brand_news[b]:
            return f"{MASTERBRANDS[self.brand_mb[b]][1]} News {['at One', 'Hour', 'Briefing', 'Tonight'][b % 4]}"
        a, n = _ADJ[int(rng.integers(len(_ADJ)))], _NOUN[int(rng.integers(len(_NOUN)))]
        return f"The {a} {n}" if rng.random() < 0.5 else f"{a} {n} {b}"

    def genres_of(self, b: int) -> list[str]:
        out = [self.genres[self.brand_genre[b]]]
        if self.brand_genre2[b] >= 0:
            out.append(self.genres[self.brand_genre2[b]])
        return out

    def formats_of(self, b: int) -> list[str]:
        out = [FORMATS[self.brand_fmt1[b]]]
        if self.brand_fmt2[b] >= 0:
            out.append(FORMATS[self.brand_fmt2[b]])
        return out

    def episode_title(self, i: int, version: int = 0) -> str:
        b = int(self.brand[i])
        base = self.brand_titles[b]
        if self.series[i] >= 0:
            title = f"{base}: Series {self.series_pos[i] + 1}, Episode {self.position[i] + 1}"
        else:
            title = f"{base}: {dt.datetime.fromtimestamp(int(self.release[i]), dt.UTC):%d/%m/%Y %H:%M}"
        return title if version == 0 else f"{title} (revised)"


def _spell(rng: np.random.Generator, names: list[str], spellings: dict[str, list[str]]) -> list[str]:
    out = []
    for n in names:
        opts = spellings.get(n)
        out.append(opts[int(rng.integers(len(opts)))] if opts and rng.random() < 0.5 else n)
    return out


def _write_metadata(cat: _Catalogue, sink: _Sink, config: Config, rng: np.random.Generator, end: int,
                    export: int, bad_rate: float, progress: Any, write: bool = True) -> tuple[dict[str, int], int,
                                                                                             pa.Table]:
    """Write every metadata record version as its own JSON object. Returns counts, malformed, truth table."""
    prefix = config.source.metadata_prefix
    streams = list(config.source.metadata_streams)
    s_prog, s_ep, s_av = (streams + ["programmes", "episodes", "availability"])[:3]
    counts = {s_prog: 0, s_ep: 0, s_av: 0}

    def put(stream: str, rid: str, seq: int, landed: float, record: dict[str, Any]) -> None:
        counts[stream] += 1
        if not write:
            return
        # Records older than the initial export landed with it (one partition); later ones hour by hour.
        sink.put(f"{prefix}/{stream}/{_hour_path(max(landed, export))}/{rid}-{seq}.json",
                 json.dumps(record, separators=(",", ":"), sort_keys=True).encode())

    def off() -> float:
        return _OFFSETS[int(rng.integers(len(_OFFSETS)))]

    task = progress.add_task("metadata", total=cat.n_brands) if progress else None
    brand_title_final: dict[int, str] = {}
    for b in range(cat.n_brands):
        first, count = int(cat.brand_first[b]), int(cat.brand_count[b])
        landed = min(float(cat.release[first]) - 2 * DAY, end - 2 * HOUR)
        mb = MASTERBRANDS[cat.brand_mb[b]]
        brand_rec = {"id": cat.brand_ids[b], "type": "brand", "title": cat.brand_titles[b],
                     "masterbrand": {"id": mb[0], "name": mb[1]},
                     "genres": _spell(rng, cat.genres_of(b), GENRE_SPELLINGS),
                     "formats": _spell(rng, cat.formats_of(b), FORMAT_SPELLINGS),
                     "synopsis": f"{cat.brand_titles[b]} from {mb[1]}.", "updated": _iso(landed, off())}
        put(s_prog, cat.brand_ids[b], 0, landed, brand_rec)
        brand_title_final[b] = cat.brand_titles[b]
        if rng.random() < 0.02:  # a renamed brand: the later version wins
            later = landed + rng.uniform(HOUR, max(2 * HOUR, end - HOUR - landed))
            later = min(later, end - HOUR)
            renamed = {**brand_rec, "title": cat.brand_titles[b] + " Extra", "updated": _iso(later, off())}
            put(s_prog, cat.brand_ids[b], 1, later, renamed)
            brand_title_final[b] = renamed["title"]
        for k in range(int(cat.n_series[b])):
            sid = cat.series_ids[cat.series_first[b] + k]
            put(s_prog, sid, 0, landed, {"id": sid, "type": "series", "brand_id": cat.brand_ids[b],
                                         "title": f"Series {k + 1}", "position": k + 1,
                                         "updated": _iso(landed, off())})
        for i in range(first, first + count):
            rel = float(cat.release[i])
            landed_i = min(max(rel - rng.uniform(HOUR, 7 * DAY), landed), end - HOUR)
            if cat.cold[i]:
                landed_i = min(landed_i, rel - 30)
            parent = ({"id": cat.series_ids[cat.series[i]], "type": "series"} if cat.series[i] >= 0
                      else {"id": cat.brand_ids[b], "type": "brand"})
            dur: int | str = int(cat.duration[i])
            if rng.random() < 0.2:
                dur = f"PT{int(cat.duration[i]) // 60}M{int(cat.duration[i]) % 60}S"
            ep = {"id": cat.item_ids[i], "type": "episode", "title": cat.episode_title(i), "parent": parent,
                  "position": int(cat.position[i]) + 1, "release_date": _iso(rel, off()), "duration": dur,
                  "updated": _iso(landed_i, off())}
            if rng.random() < 0.15:  # restated genres/formats on the episode, spelled differently
                ep["genres"] = _spell(rng, cat.genres_of(b), GENRE_SPELLINGS)
                ep["formats"] = _spell(rng, cat.formats_of(b), FORMAT_SPELLINGS)
            put(s_ep, cat.item_ids[i], 0, landed_i, ep)
            av = {"id": cat.item_ids[i], "type": "availability", "episode_id": cat.item_ids[i],
                  "available_from": _iso(float(cat.avail_from[i]), off()),
                  "available_until": (None if cat.avail_until[i] < 0 else _iso(float(cat.avail_until[i]), off())),
                  "updated": _iso(landed_i, off())}
            put(s_av, cat.item_ids[i], 0, landed_i, av)
            if cat.updated[i]:
                later = min(landed_i + rng.uniform(HOUR, 10 * DAY), end - HOUR)
                later = max(later, landed_i + 1)
                put(s_ep, cat.item_ids[i], 1, later, {**ep, "title": cat.episode_title(i, 1),
                                                      "updated": _iso(later, off())})
                if cat.stale[i]:  # re-delivered late with an older timestamp: must lose
                    put(s_ep, cat.item_ids[i], 2, min(later + HOUR, end - HOUR),
                        {**ep, "title": cat.episode_title(i) + " (stale)", "updated": _iso(landed_i - 60, off())})
            if cat.extended[i]:
                later = min(landed_i + rng.uniform(HOUR, 20 * DAY), end - HOUR)
                later = max(later, landed_i + 1)
                put(s_av, cat.item_ids[i], 1, later, {**av, "available_until": _iso(
                    float(cat.avail_until[i]) + 90 * DAY, off()), "updated": _iso(later, off())})
            if cat.deleted[i]:
                later = max(min(landed_i + rng.uniform(60, DAY), end - 60), landed_i + 1)
                put(s_ep, cat.item_ids[i], 3, later, {"id": cat.item_ids[i], "type": "episode", "deleted": True,
                                                      "updated": _iso(later, off())})
        if task is not None:
            progress.advance(task)
    # malformed objects: extra, truncated versions of existing records (they never change the truth)
    n_objects = sum(counts.values())
    n_bad = int(round(n_objects * bad_rate))
    bad_items: Any = rng.choice(cat.n_items, min(n_bad, cat.n_items), replace=False) if n_bad and write else []
    for i in bad_items:
        text = json.dumps({"id": cat.item_ids[i], "type": "episode", "title": "broken"})
        landed = end - rng.uniform(HOUR, 3 * HOUR)
        sink.put(f"{prefix}/{s_ep}/{_hour_path(landed)}/{cat.item_ids[i]}-9.json",
                 text[: len(text) // 2].encode())
    sink.flush()

    # the truth: the catalogue ingestion must build
    extended_until = np.where(cat.extended, cat.avail_until + 90 * DAY, cat.avail_until)
    keep = ~cat.deleted
    idx = np.flatnonzero(keep)

    until_arr = pa.array(extended_until[idx] * 1_000_000, pa.int64(), mask=extended_until[idx] < 0).cast(
        pa.timestamp("us", tz="UTC"))
    series_col = [cat.series_ids[s] if s >= 0 else None for s in cat.series[idx]]
    truth = pa.table({
        "item_id": pa.array(cat.item_ids[idx].tolist(), pa.string()),
        "title": pa.array([cat.episode_title(int(i), 1 if cat.updated[i] else 0) for i in idx], pa.string()),
        "brand_id": pa.array(cat.brand_ids[cat.brand[idx]].tolist(), pa.string()),
        "brand_title": pa.array([brand_title_final[int(b)] for b in cat.brand[idx]], pa.string()),
        "series_id": pa.array(series_col, pa.string()),
        "masterbrand": pa.array([MASTERBRANDS[cat.brand_mb[b]][1] for b in cat.brand[idx]], pa.string()),
        "genres": pa.array([cat.genres_of(int(b)) for b in cat.brand[idx]], pa.list_(pa.string())),
        "formats": pa.array([cat.formats_of(int(b)) for b in cat.brand[idx]], pa.list_(pa.string())),
        "release_ts": pa.array(cat.release[idx] * 1_000_000, pa.int64()).cast(pa.timestamp("us", tz="UTC")),
        "duration_seconds": pa.array(cat.duration[idx], pa.int32()),
        "available_from": pa.array(cat.avail_from[idx] * 1_000_000, pa.int64()).cast(pa.timestamp("us", tz="UTC")),
        "available_until": until_arr,
        "updated_ts": pa.nulls(len(idx), pa.timestamp("us", tz="UTC")),
    })
    truth = truth.cast(CATALOGUE)
    truth = truth.append_column("popularity", pa.array(cat.pop[idx], pa.float64()))
    truth = truth.append_column("cold_start", pa.array(cat.cold[idx], pa.bool_()))
    truth = truth.sort_by("item_id")
    return counts, n_bad, truth


# ---- users and activity ------------------------------------------------------------------------

class _Users:
    """Planted tastes, as compact arrays (3.5M users fit in a few hundred MB)."""

    def __init__(self, seed: int, n_users: int, cat: _Catalogue) -> None:
        n_genres = len(cat.genres)
        prior = np.array([GENRE_PRIOR[g] for g in cat.genres])
        self.n = n_users
        self.genres = np.empty((n_users, 3), dtype=np.int16)
        self.genre_w = np.empty((n_users, 3), dtype=np.float32)
        self.brands = np.empty((n_users, 4), dtype=np.int32)
        self.brand_w = np.empty((n_users, 4), dtype=np.float32)
        self.p_brand = np.empty(n_users, dtype=np.float32)
        self.p_genre = np.empty(n_users, dtype=np.float32)
        self.activity = np.empty(n_users, dtype=np.float64)
        brand_sampler = _grouped_sampler(cat.brand_genre.astype(np.int64), cat.brand_pop, n_genres)
        has_brand = brand_sampler[2]
        brand_cum = np.cumsum(cat.brand_pop)
        chunk = 250_000
        for c, lo in enumerate(range(0, n_users, chunk)):
            hi = min(n_users, lo + chunk)
            m = hi - lo
            rng = np.random.default_rng([seed, 11, c])
            keys = np.log(prior)[None, :] + rng.gumbel(size=(m, n_genres))
            top = np.argsort(-keys, axis=1)[:, :3]
            n_g = rng.choice([1, 2, 3], m, p=[0.4, 0.4, 0.2])
            w = rng.gamma(1.0, 1.0, (m, 3)) * (np.arange(3)[None, :] < n_g[:, None])
            w /= w.sum(axis=1, keepdims=True)
            self.genres[lo:hi] = top
            self.genre_w[lo:hi] = w
            cum_w = np.cumsum(w, axis=1)
            for slot in range(4):
                pick = (rng.random(m)[:, None] > cum_w).sum(axis=1).clip(0, 2)
                g = top[np.arange(m), pick]
                b = _draw_grouped(rng, brand_sampler, g.astype(np.int64))
                fallback = ~has_brand[g]
                if fallback.any():
                    b[fallback] = _weighted_pick(rng, brand_cum, int(fallback.sum()))
                self.brands[lo:hi, slot] = b
            bw = rng.gamma(0.8, 1.0, (m, 4))
            self.brand_w[lo:hi] = bw / bw.sum(axis=1, keepdims=True)
            pb = rng.beta(6, 4, m)
            self.p_brand[lo:hi] = pb
            self.p_genre[lo:hi] = (1 - pb) * 0.7
            self.activity[lo:hi] = rng.lognormal(0, 0.8, m)
        self.activity_cum = np.cumsum(self.activity)
        self.ids = pa.array([f"u{i:08d}" for i in range(n_users)], pa.string())


class _DaySampler:
    """Per-day popularity samplers over the items available that day (genre browsing and noise)."""

    def __init__(self, cat: _Catalogue, day_start: int, end: int) -> None:
        avail = ((cat.release <= day_start) & (cat.avail_from <= day_start)
                 & ((cat.avail_until < 0) | (cat.avail_until > day_start)) & ~cat.cold & ~cat.future)
        w = cat.pop * avail
        if w.sum() <= 0:  # nothing available yet: fall back to everything released before the end
            w = cat.pop * ((cat.release <= end) & ~cat.cold & ~cat.future)
        self.global_cum = np.cumsum(w)
        self.genre = _grouped_sampler(cat.brand_genre[cat.brand].astype(np.int64), w, len(cat.genres))


def _events_for_hour(seed: int, h_index: int, hour: int, n: int, users: _Users, cat: _Catalogue,
                     sampler: _DaySampler, end: int, bad_rate: float, item_ids: pa.Array) -> tuple[pa.Table,
                                                                                                  dict[str, int]]:
    rng = np.random.default_rng([seed, 23, h_index])
    u = _weighted_pick(rng, users.activity_cum, n)
    ts = np.sort(hour + rng.random(n) * HOUR)
    r = rng.random(n)
    mode_brand = r < users.p_brand[u]
    mode_genre = ~mode_brand & (r < users.p_brand[u] + users.p_genre[u])
    item = np.empty(n, dtype=np.int64)
    # 1. favourite brand: newest released episode, sometimes an earlier one (series continuation)
    ib = np.flatnonzero(mode_brand)
    slot = (rng.random(len(ib))[:, None] > np.cumsum(users.brand_w[u[ib]], axis=1)).sum(axis=1).clip(0, 3)
    b = users.brands[u[ib], slot].astype(np.int64)
    t_eff = np.minimum(ts[ib], end - COLD_HOURS * HOUR).astype(np.int64)
    base = int(cat.release.min()) - 1
    key_all = cat.brand.astype(np.int64) * (1 << 36) + (cat.release - base)
    released = np.searchsorted(key_all, b * (1 << 36) + (t_eff - base), side="right") - cat.brand_first[b]
    back = rng.geometric(0.55, len(ib)) - 1
    pos = np.maximum(released - 1 - back, 0)
    ok = released > 0
    item[ib[ok]] = cat.brand_first[b[ok]] + pos[ok]
    mode_genre[ib[~ok]] = True  # nothing released yet in that brand: browse the genre instead
    # 2. favourite genre, popularity-weighted among items available today
    ig = np.flatnonzero(mode_genre)
    gslot = (rng.random(len(ig))[:, None] > np.cumsum(users.genre_w[u[ig]], axis=1)).sum(axis=1).clip(0, 2)
    g = users.genres[u[ig], gslot].astype(np.int64)
    has = sampler.genre[2][g]
    item[ig[has]] = _draw_grouped(rng, sampler.genre, g[has])
    # 3. popularity noise (and genres with nothing available)
    ip = np.flatnonzero(~mode_brand & ~mode_genre)
    ip = np.concatenate([ip, ig[~has]])
    item[ip] = _weighted_pick(rng, sampler.global_cum, len(ip))

    etype = _weighted_pick(rng, np.cumsum([0.70, 0.18, 0.08, 0.04]), n)
    dur = cat.duration[item].astype(np.float64)
    played = np.where(etype == 1, dur, dur * rng.beta(2, 2, n))
    short = (etype == 0) & (rng.random(n) < 0.06)
    played[short] = rng.uniform(1, 29, int(short.sum()))
    played[etype >= 2] = rng.uniform(0, 600, int((etype >= 2).sum()))
    platform = rng.integers(0, len(PLATFORMS), n)
    label = dt.datetime.fromtimestamp(hour, dt.UTC).strftime("%Y%m%d%H")
    event_ids = pa.array([f"{label}-{i:07d}" for i in range(n)], pa.string())
    user_col = users.ids.take(pa.array(u))
    item_col = item_ids.take(pa.array(item))
    type_col = pa.array(list(EVENT_TYPES), pa.string()).take(pa.array(etype))
    ts_us = (ts * 1_000_000).astype(np.int64)
    played = played.astype(np.float32)

    bad: dict[str, int] = {}
    n_bad = int(rng.binomial(n, bad_rate)) if bad_rate > 0 else 0
    dup_rows = np.empty(0, dtype=np.int64)
    if n_bad:
        rows = rng.choice(n, min(n_bad, n), replace=False)
        kinds = rng.integers(0, len(BAD_KINDS), len(rows))
        type_list = type_col.to_pylist()
        item_list = item_col.to_pylist()
        user_list = user_col.to_pylist()
        for row, k in zip(rows, kinds, strict=True):
            kind = BAD_KINDS[k]
            bad[kind] = bad.get(kind, 0) + 1
            if kind == "unknown_event_type":
                type_list[row] = ["plya", "ad_impression", "PLAY!"][row % 3]
            elif kind == "unknown_item":
                item_list[row] = f"x{row:07d}"
            elif kind == "duplicate_event_id":
                dup_rows = np.append(dup_rows, row)
            elif kind == "future_ts":
                ts_us[row] = int((hour + rng.uniform(2, 30) * DAY) * 1_000_000)
            elif kind == "too_old":
                ts_us[row] = int((hour - rng.uniform(500, 5000) * DAY) * 1_000_000)
            elif kind == "missing_user":
                user_list[row] = None
        type_col = pa.array(type_list, pa.string())
        item_col = pa.array(item_list, pa.string())
        user_col = pa.array(user_list, pa.string())
    table = pa.table({"event_id": event_ids, "user_id": user_col, "item_id": item_col, "event_type": type_col,
                      "event_ts": pa.array(ts_us, pa.int64()).cast(pa.timestamp("us", tz="UTC")),
                      "played_seconds": pa.array(played, pa.float32()),
                      "platform": pa.array(list(PLATFORMS), pa.string()).take(pa.array(platform))},
                     schema=RAW_ACTIVITY)
    if len(dup_rows):  # the same event delivered twice (the app retried)
        table = pa.concat_tables([table, table.take(pa.array(np.sort(dup_rows)))])
    return table, bad


def _next_items(cat: _Catalogue, users: _Users, end: int) -> pa.Table:
    """Top-10 items by planted probability of being played next at ``end`` (first TRUTH_NEXT_USERS users)."""
    sampler = _DaySampler(cat, end - HOUR, end)
    n_genres = len(cat.genres)
    w_all = np.diff(np.concatenate([[0.0], sampler.global_cum]))
    genre_of = cat.brand_genre[cat.brand]
    top_genre: list[tuple[np.ndarray, np.ndarray]] = []
    for g in range(n_genres):
        idx = np.flatnonzero((genre_of == g) & (w_all > 0))
        idx = idx[np.argsort(-w_all[idx], kind="stable")[:20]]
        tot = w_all[genre_of == g].sum()
        top_genre.append((idx, w_all[idx] / tot if tot > 0 else w_all[idx]))
    gidx = np.argsort(-w_all, kind="stable")[:20]
    gprob = w_all[gidx] / w_all.sum()
    cutoff = end - COLD_HOURS * HOUR
    geo = 0.55 * (0.45 ** np.arange(6))
    uids, ranks, items, weights = [], [], [], []
    for uu in range(min(users.n, TRUTH_NEXT_USERS)):
        score: dict[int, float] = {}
        pb, pg = float(users.p_brand[uu]), float(users.p_genre[uu])
        for slot in range(4):
            b = int(users.brands[uu, slot])
            first, cnt = int(cat.brand_first[b]), int(cat.brand_count[b])
            rel = cat.release[first:first + cnt]
            released = int(np.searchsorted(rel, cutoff, side="right"))
            for k in range(min(released, 6)):
                i = first + released - 1 - k
                score[i] = score.get(i, 0.0) + pb * float(users.brand_w[uu, slot]) * geo[k]
        for s in range(3):
            gw = float(users.genre_w[uu, s])
            if gw <= 0:
                continue
            idx, prob = top_genre[int(users.genres[uu, s])]
            for i, p in zip(idx.tolist(), prob.tolist(), strict=True):
                score[i] = score.get(i, 0.0) + pg * gw * p
        pp = 1.0 - pb - pg
        for i, p in zip(gidx.tolist(), gprob.tolist(), strict=True):
            score[i] = score.get(i, 0.0) + pp * p
        best = sorted(score.items(), key=lambda kv: (-kv[1], kv[0]))[:10]
        for rank, (i, weight) in enumerate(best, 1):
            uids.append(uu)
            ranks.append(rank)
            items.append(i)
            weights.append(weight)
    return pa.table({"user_id": users.ids.take(pa.array(uids, pa.int64())),
                     "rank": pa.array(ranks, pa.int16()),
                     "item_id": pa.array(cat.item_ids[np.array(items, dtype=np.int64)].tolist(), pa.string()),
                     "weight": pa.array(weights, pa.float32())})


def _tastes_table(users: _Users, cat: _Catalogue, lo: int, hi: int) -> pa.Table:
    m = hi - lo
    gw = users.genre_w[lo:hi]
    keep_g = gw > 0
    genre_names = np.array(cat.genres, dtype=object)
    genres = [genre_names[users.genres[lo + r][keep_g[r]]].tolist() for r in range(m)]
    gws = [gw[r][keep_g[r]].tolist() for r in range(m)]
    brands = [cat.brand_ids[users.brands[lo + r]].tolist() for r in range(m)]
    return pa.table({
        "user_id": users.ids.slice(lo, m),
        "genres": pa.array(genres, pa.list_(pa.string())),
        "genre_weights": pa.array(gws, pa.list_(pa.float32())),
        "brands": pa.array(brands, pa.list_(pa.string())),
        "brand_weights": pa.array(users.brand_w[lo:hi].tolist(), pa.list_(pa.float32())),
        "p_brand": pa.array(users.p_brand[lo:hi], pa.float32()),
        "p_genre": pa.array(users.p_genre[lo:hi], pa.float32()),
        "p_popular": pa.array(1 - users.p_brand[lo:hi] - users.p_genre[lo:hi], pa.float32()),
        "activity": pa.array(users.activity[lo:hi].astype(np.float32), pa.float32()),
    })


DIURNAL = np.array([0.35, 0.25, 0.2, 0.2, 0.25, 0.45, 0.8, 1.2, 1.3, 1.1, 1.0, 1.0,
                    1.05, 1.0, 0.95, 1.0, 1.1, 1.3, 1.5, 1.6, 1.5, 1.3, 0.9, 0.6])
DIURNAL = DIURNAL / DIURNAL.mean()


def generate(config: Config, *, users: int = 2000, items: int = 3000, days: int = 21, events_per_user: float = 40.0,
             seed: int = 7, end: str | dt.datetime | None = None, bad_rate: float = 0.002,
             progress: bool | None = None, metadata: bool = True) -> dict[str, Any]:
    """Generate the catalogue, the activity and the ground truth into ``config.source_url``; return a summary.

    ``metadata=False`` skips writing the metadata JSON objects (the truth catalogue is still written):
    benchmarks of the activity ingest at 225k programmes do not need half a million small files.
    """
    if users < 1 or items < 30 or days < 1 or events_per_user <= 0 or not 0 <= bad_rate < 0.5:
        raise ValueError("generate: need users >= 1, items >= 30, days >= 1, events_per_user > 0, "
                         f"0 <= bad_rate < 0.5 (got users={users}, items={items}, days={days}, "
                         f"events_per_user={events_per_user}, bad_rate={bad_rate})")
    started = time.time()
    end_dt = parse_end(end)
    end_s = int(end_dt.timestamp())
    start_s = end_s - days * DAY
    show = sys.stderr.isatty() if progress is None else progress
    sink = _Sink(config)
    with _progress(show) as bar:
        cat = _Catalogue(np.random.default_rng([seed, 1]), items, end_s)
        meta_counts, n_malformed, truth_cat = _write_metadata(cat, sink, config, np.random.default_rng([seed, 2]),
                                                              end_s, start_s - DAY, bad_rate, bar, metadata)
        people = _Users(seed, users, cat)
        item_ids = pa.array(cat.item_ids.tolist(), pa.string())
        hours = days * 24
        per_hour = users * events_per_user / hours
        task = bar.add_task("activity (hours)", total=hours) if bar else None
        total_events, total_rows = 0, 0
        bad: dict[str, int] = {}
        sampler, sampler_day = None, None
        for h in range(hours):
            hour = start_s + h * HOUR
            day = hour - hour % DAY
            if sampler_day != day:
                sampler, sampler_day = _DaySampler(cat, day, end_s), day
            rng = np.random.default_rng([seed, 29, h])
            n = int(rng.poisson(per_hour * DIURNAL[(hour // HOUR) % 24]))
            assert sampler is not None
            table, bad_h = _events_for_hour(seed, h, hour, max(n, 1), people, cat, sampler, end_s, bad_rate,
                                            item_ids)
            for k, v in bad_h.items():
                bad[k] = bad.get(k, 0) + v
            sink.put(activity_path(config, dt.datetime.fromtimestamp(hour, dt.UTC)), write_parquet_bytes(table))
            total_events += max(n, 1)
            total_rows += table.num_rows
            if task is not None:
                bar.advance(task)
        # ground truth
        sink.put(f"{TRUTH_DIR}/catalogue.parquet", write_parquet_bytes(truth_cat))
        writer_buf = io.BytesIO()
        with pq.ParquetWriter(writer_buf, _tastes_table(people, cat, 0, 1).schema, compression="zstd") as writer:
            for lo in range(0, users, 200_000):
                writer.write_table(_tastes_table(people, cat, lo, min(users, lo + 200_000)))
        sink.put(f"{TRUTH_DIR}/user_tastes.parquet", writer_buf.getvalue())
        sink.put(f"{TRUTH_DIR}/next_items.parquet", write_parquet_bytes(_next_items(cat, people, end_s)))
    summary = {
        "source": config.source_url,
        "users": users, "items": items, "brands": cat.n_brands, "series": int(cat.n_series.sum()),
        "catalogue_rows": truth_cat.num_rows, "cold_start_items": int(cat.cold.sum()),
        "future_items": int(cat.future.sum()), "deleted_items": int(cat.deleted.sum()),
        "metadata_objects": meta_counts, "malformed_objects": n_malformed,
        "activity_files": hours, "events": total_events, "activity_rows": total_rows, "bad_events": bad,
        "start": dt.datetime.fromtimestamp(start_s, dt.UTC).isoformat(), "end": end_dt.isoformat(),
        "truth": f"{config.source_url.rstrip('/')}/{TRUTH_DIR}", "seed": seed,
    }
    sink.put(f"{TRUTH_DIR}/summary.json", json.dumps(summary, indent=1, sort_keys=True).encode())
    sink.flush()
    summary["seconds"] = round(time.time() - started, 2)
    return summary


# ---- fault injection (tests and demos of the quarantine) ---------------------------------------

def corrupt_file(config: Config, rel: str, *, keep_fraction: float = 0.5) -> str:
    """Truncate a source file (e.g. an hourly Parquet file) to ``keep_fraction`` of its bytes."""
    from skyrec.data.source import source_fs

    fs, root = source_fs(config)
    full = f"{root}/{rel}"
    with fs.open(full, "rb") as fh:
        data = fh.read()
    fs.pipe_file(full, data[: max(1, int(len(data) * keep_fraction))])
    return full


def read_activity_file(config: Config, rel: str) -> pa.Table:
    from skyrec.data.source import source_fs

    fs, root = source_fs(config)
    with fs.open(f"{root}/{rel}", "rb") as fh:
        return pq.read_table(fh)


def write_activity_file(config: Config, rel: str, table: pa.Table) -> str:
    """Write any table (e.g. with a drifted schema) as a source Parquet file at ``rel``."""
    from skyrec.data.source import source_fs

    fs, root = source_fs(config)
    full = f"{root}/{rel}"
    fs.makedirs(full.rsplit("/", 1)[0], exist_ok=True)
    fs.pipe_file(full, write_parquet_bytes(table))
    return full


def drift_schema(table: pa.Table, *, rename: dict[str, str] | None = None,
                 add: dict[str, Any] | None = None, drop: list[str] | None = None) -> pa.Table:
    """A copy of ``table`` with columns renamed, dropped and constant columns added (schema drift)."""
    rename = rename or {}
    out = table.rename_columns([rename.get(n, n) for n in table.column_names])
    for name in drop or []:
        out = out.drop_columns([name])
    for name, value in (add or {}).items():
        out = out.append_column(name, pa.array([value] * out.num_rows))
    return out


def hours_between(start: dt.datetime, end: dt.datetime) -> list[dt.datetime]:
    """Hour starts in [start, end)."""
    first = start.astimezone(dt.UTC).replace(minute=0, second=0, microsecond=0)
    n = max(0, math.ceil((end - first).total_seconds() / HOUR))
    return [first + dt.timedelta(hours=k) for k in range(n)]
