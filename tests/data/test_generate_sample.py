"""The sample data generator: deterministic bytes, raw layout, planted taste signal, deliberate bad input."""

from __future__ import annotations

import collections
import datetime as dt
import hashlib
import json
import os
from pathlib import Path

import pyarrow.parquet as pq
import pytest

from skyrec.config import load_config
from skyrec.data.generate import BAD_KINDS, generate
from skyrec.data.schemas import RAW_ACTIVITY

ROOT = Path(__file__).resolve().parents[2]
END = "2026-03-01T00:00:00Z"


def _gen(home: Path, **kw: object) -> dict:
    cfg = load_config("local", root=ROOT, overrides={"source": {"url": str(home / "source")}},
                      environ={**os.environ, "SKYREC_HOME": str(home)})
    args = {"users": 200, "items": 240, "days": 3, "events_per_user": 30.0, "seed": 5, "end": END,
            "bad_rate": 0.01, "progress": False}
    args.update(kw)
    return generate(cfg, **args)


def _digest(root: Path) -> dict[str, str]:
    return {str(p.relative_to(root)): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(root.rglob("*")) if p.is_file() and p.name != "summary.json"}


@pytest.fixture(scope="module")
def sample(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, dict]:
    home = tmp_path_factory.mktemp("gen")
    return home / "source", _gen(home)


def test_same_seed_same_bytes_other_seed_differs(sample: tuple[Path, dict], tmp_path: Path) -> None:
    src, _ = sample
    _gen(tmp_path / "again")
    assert _digest(src) == _digest(tmp_path / "again" / "source")
    _gen(tmp_path / "other", seed=6)
    assert _digest(src) != _digest(tmp_path / "other" / "source")


def test_raw_layout(sample: tuple[Path, dict]) -> None:
    src, summary = sample
    hours = sorted(src.glob("activity/date=*/hour=*/part-00000.parquet"))
    assert len(hours) == 3 * 24 == summary["activity_files"]
    assert hours[0].parent.parent.name == "date=2026-02-26" and hours[-1].parent.name == "hour=23"
    assert pq.read_schema(hours[0]).equals(RAW_ACTIVITY)
    for stream in ("programmes", "episodes", "availability"):
        objs = list((src / "metadata" / stream).rglob("*.json"))
        assert len(objs) >= summary["metadata_objects"][stream]
        rel = objs[0].relative_to(src / "metadata" / stream).parts
        assert len(rel) == 5 and len(rel[0]) == 4  # YYYY/MM/DD/HH/<id>-<seq>.json
    episodes = [json.loads(p.read_text()) for p in (src / "metadata" / "episodes").rglob("*-0.json")]
    assert any("+01:00" in e["release_date"] or "-05:00" in e["release_date"] for e in episodes)
    deleted = [p for p in (src / "metadata" / "episodes").rglob("*-3.json")]
    assert all(json.loads(p.read_text())["deleted"] is True for p in deleted)
    malformed = 0
    for p in (src / "metadata").rglob("*.json"):
        try:
            json.loads(p.read_text())
        except json.JSONDecodeError:
            malformed += 1
    assert malformed == summary["malformed_objects"] > 0


def test_catalogue_covers_variant_vocabulary(sample: tuple[Path, dict]) -> None:
    src, summary = sample
    truth = pq.read_table(src / "_truth" / "catalogue.parquet")
    genres = {g for gs in truth.column("genres").to_pylist() for g in gs}
    formats = {f for fs in truth.column("formats").to_pylist() for f in fs}
    assert {"Comedy", "Drama", "Crime", "Thriller", "Music", "Factual", "History", "Science", "Philosophy",
            "News", "Sport", "Children's"} <= genres
    assert {"Bulletins", "Podcasts", "Audiobooks", "Readings"} <= formats
    assert summary["cold_start_items"] > 0
    end = dt.datetime.fromisoformat(END.replace("Z", "+00:00"))
    until = truth.column("available_until").to_pylist()
    assert any(u is None for u in until) and any(u is not None and u < end for u in until)  # open and expired
    assert any(r > end for r in truth.column("release_ts").to_pylist())  # scheduled


def test_planted_tastes_drive_plays_and_cold_items_are_unplayed(sample: tuple[Path, dict]) -> None:
    src, summary = sample
    truth = pq.read_table(src / "_truth" / "catalogue.parquet").to_pylist()
    item_genres = {r["item_id"]: set(r["genres"]) for r in truth}
    item_brand = {r["item_id"]: r["brand_id"] for r in truth}
    cold = {r["item_id"] for r in truth if r["cold_start"]}
    tastes = {r["user_id"]: r for r in pq.read_table(src / "_truth" / "user_tastes.parquet").to_pylist()}
    plays = pq.read_table(sorted(src.glob("activity/date=*/hour=*/*.parquet"))).to_pylist()
    in_taste = brand_hits = n = 0
    genre_share = collections.Counter()
    for e in plays:
        if e["item_id"] not in item_genres or e["user_id"] not in tastes:
            continue
        assert e["item_id"] not in cold
        t = tastes[e["user_id"]]
        n += 1
        in_taste += bool(item_genres[e["item_id"]] & set(t["genres"]))
        brand_hits += item_brand[e["item_id"]] in t["brands"]
        genre_share.update(item_genres[e["item_id"]])
    # a random user would hit their 1-3 genres far less often than this
    assert in_taste / n > 0.75
    assert brand_hits / n > 0.4
    nxt = pq.read_table(src / "_truth" / "next_items.parquet")
    assert nxt.num_rows == 200 * 10 and set(nxt.column("rank").to_pylist()) == set(range(1, 11))


def test_bad_events_of_every_kind(sample: tuple[Path, dict]) -> None:
    src, summary = sample
    assert set(summary["bad_events"]) == set(BAD_KINDS)
    events = pq.read_table(sorted(src.glob("activity/date=*/hour=*/*.parquet")))
    ids = events.column("event_id").to_pylist()
    assert len(ids) - len(set(ids)) == summary["bad_events"]["duplicate_event_id"]
    assert events.num_rows == summary["activity_rows"]
