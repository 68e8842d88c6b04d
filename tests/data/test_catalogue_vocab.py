"""Catalogue vocabulary: normalisation, timestamps with offsets, and the shared candidate filter."""

from __future__ import annotations

import datetime as dt

import pyarrow as pa
import pytest

from skyrec.config import CandidateFilter
from skyrec.data.catalogue import (
    available_mask,
    candidate_mask,
    normalise_format,
    normalise_genre,
    parse_duration,
    parse_ts,
)
from skyrec.data.schemas import TS


def test_genres_and_formats_fold_case_and_synonyms() -> None:
    assert normalise_genre("  comedy ") == "Comedy"
    assert normalise_genre("Sci & Tech") == "Science"
    assert normalise_genre("Childrens") == "Children's"
    assert normalise_genre("brand new genre") == "brand new genre"  # kept as the source spells it, not re-cased
    assert normalise_genre("Sci-Fi") == "Sci-Fi" and normalise_genre("Film-Noir") == "Film-Noir"
    assert normalise_genre("") is None and normalise_genre(3) is None
    assert normalise_format("podcast") == "Podcasts"
    assert normalise_format("DJ Mix") == "Mixes"
    assert normalise_format("lecture") == "Talks"


def test_timestamps_with_offsets_are_stored_utc() -> None:
    assert parse_ts("2026-03-01T01:30:00+01:00") == dt.datetime(2026, 3, 1, 0, 30, tzinfo=dt.UTC)
    assert parse_ts("2026-03-01T00:30:00Z") == dt.datetime(2026, 3, 1, 0, 30, tzinfo=dt.UTC)
    assert parse_ts("2026-02-28T19:30:00-05:00") == dt.datetime(2026, 3, 1, 0, 30, tzinfo=dt.UTC)
    with pytest.raises(ValueError, match="not an ISO-8601"):
        parse_ts("yesterday")
    assert parse_duration("PT28M5S") == 1685
    assert parse_duration(60) == 60
    assert parse_duration("0:28:05") == parse_duration("28:05") == 1685 and parse_duration("1:02:03") == 3723
    for bad in ("-5", "1:60:00", "0:5", "28:60", "8 days", 7 * 86400, float("nan")):
        with pytest.raises(ValueError):
            parse_duration(bad)


def _catalogue() -> pa.Table:
    lst = pa.list_(pa.string())
    return pa.table({
        "item_id": ["a", "b", "c", "d", "e"],
        "genres": pa.array([["Comedy"], ["Drama", "Crime"], ["Music"], ["Science"], []], lst),
        "formats": pa.array([["Sitcoms"], ["Audiobooks"], ["Mixes"], ["Talks"], ["Podcasts"]], lst),
        "masterbrand": ["Radio North", "Drama Extra", "Pop Network", "Radio Arts", None],
    })


def test_candidate_mask_any_genre_and_any_format() -> None:
    cat = _catalogue()
    assert candidate_mask(cat, CandidateFilter()).tolist() == [True] * 5
    assert candidate_mask(cat, CandidateFilter(genres=["comedy"])).tolist() == [True, False, False, False, False]
    gripping = CandidateFilter(genres=["Crime", "Thriller", "Drama"], formats=["Audiobooks", "Podcasts"])
    assert candidate_mask(cat, gripping).tolist() == [False, True, False, False, False]
    assert candidate_mask(cat, {"formats": ["Mixes", "Talks"]}).tolist() == [False, False, True, True, False]
    assert candidate_mask(cat, {"masterbrands": ["radio arts"]}).tolist() == [False, False, False, True, False]


def test_available_mask_handles_open_ended_windows() -> None:
    at = dt.datetime(2026, 3, 1, tzinfo=dt.UTC)
    day = dt.timedelta(days=1)
    table = pa.table({"available_from": pa.array([at - day, at + day, at - day, at], TS),
                      "available_until": pa.array([None, None, at, at + day], TS)})
    assert available_mask(table, at).tolist() == [True, False, False, True]
