"""Catalogue vocabulary and helpers shared by ingestion, training and precompute.

- ``normalise_genre`` / ``normalise_format``: the shipped vocabulary (``GENRES``, ``FORMATS`` and their
  synonyms: "comedy", "Sci & Tech", "podcast") is folded to one spelling; any other value is the source's
  own and is kept exactly as spelled (only surrounding and repeated spaces removed): ``Sci-Fi`` stays
  ``Sci-Fi``. Candidate filters (``variants.<name>.candidates``) match case-insensitively, so a rail
  configured with ``sci-fi`` finds them.
- ``parse_ts``: source timestamps carry UTC offsets (``+01:00``) or ``Z`` or epoch seconds; the lake
  stores UTC only.
- ``candidate_mask``: the one implementation of a variant's candidate filter, over a catalogue table
  (used by cold-start ingestion and by precompute).
"""

from __future__ import annotations

import datetime as dt
import re
from collections.abc import Iterable, Mapping
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

GENRES: tuple[str, ...] = (
    "Comedy", "Drama", "Crime", "Thriller", "Music", "Factual", "History", "Science", "Philosophy",
    "News", "Sport", "Children's", "Arts", "Religion & Ethics", "Politics",
)
FORMATS: tuple[str, ...] = (
    "Audiobooks", "Podcasts", "Readings", "Mixes", "Performances", "Discussion", "Talks", "Documentaries",
    "Bulletins", "Sitcoms", "Phone-ins", "Magazines", "Quizzes", "Interviews",
)

_GENRE_SYNONYMS = {
    "comedies": "Comedy", "stand-up": "Comedy", "standup": "Comedy", "dramas": "Drama", "radio drama": "Drama",
    "crime fiction": "Crime", "true crime": "Crime", "thrillers": "Thriller", "suspense": "Thriller",
    "factual & documentary": "Factual", "factual and documentary": "Factual", "sci & tech": "Science",
    "science & nature": "Science", "science and technology": "Science", "sci-tech": "Science",
    "current affairs": "News", "news & current affairs": "News", "sports": "Sport", "childrens": "Children's",
    "children": "Children's", "kids": "Children's", "religion": "Religion & Ethics",
    "religion and ethics": "Religion & Ethics", "arts & culture": "Arts", "arts and culture": "Arts",
    "politics & government": "Politics", "philosophical": "Philosophy", "histories": "History",
}
_FORMAT_SYNONYMS = {
    "audiobook": "Audiobooks", "audio book": "Audiobooks", "podcast": "Podcasts", "reading": "Readings",
    "mix": "Mixes", "dj mix": "Mixes", "dj mixes": "Mixes", "performance": "Performances",
    "live performance": "Performances", "concert": "Performances", "discussion & debate": "Discussion",
    "debate": "Discussion", "talk": "Talks", "lecture": "Talks", "lectures": "Talks", "documentary": "Documentaries",
    "docs": "Documentaries", "bulletin": "Bulletins", "news bulletin": "Bulletins", "sitcom": "Sitcoms",
    "phone-in": "Phone-ins", "phone in": "Phone-ins", "magazine": "Magazines", "quiz": "Quizzes",
    "panel show": "Quizzes", "interview": "Interviews",
}


def _key(value: str) -> str:
    return re.sub(r"\s+", " ", value.replace("_", " ")).strip().lower()


_GENRE_LOOKUP = {**{_key(g): g for g in GENRES}, **_GENRE_SYNONYMS}
_FORMAT_LOOKUP = {**{_key(f): f for f in FORMATS}, **_FORMAT_SYNONYMS}


def _normalise(value: Any, lookup: Mapping[str, str]) -> str | None:
    if not isinstance(value, str):
        return None
    k = _key(value)
    if not k:
        return None
    if k in lookup:
        return lookup[k]
    # The source's own vocabulary: kept as spelled (never re-cased, never dropped -- a new genre is data).
    return re.sub(r"\s+", " ", value).strip()


def normalise_genre(value: Any) -> str | None:
    """Canonical genre name (case and synonyms folded), or None for an empty/non-string value."""
    return _normalise(value, _GENRE_LOOKUP)


def normalise_format(value: Any) -> str | None:
    """Canonical format name (case and synonyms folded), or None for an empty/non-string value."""
    return _normalise(value, _FORMAT_LOOKUP)


def normalise_list(values: Any, fn: Any) -> list[str]:
    """Normalise a list (or a single string) of genres/formats; de-duplicated (case-insensitively: the first
    spelling wins), order kept."""
    if values is None:
        return []
    if isinstance(values, str):
        values = [values]
    if not isinstance(values, list):
        raise ValueError(f"expected a list of strings, got {type(values).__name__}")
    out: list[str] = []
    seen: set[str] = set()
    for v in values:
        n = fn(v)
        if n is not None and n.casefold() not in seen:
            seen.add(n.casefold())
            out.append(n)
    return out


def parse_ts(value: Any) -> dt.datetime:
    """Parse a source timestamp (ISO-8601 with offset or ``Z``, or epoch seconds) into an aware UTC datetime.

    A naive ISO string is taken as UTC. Raises ValueError naming the value when it cannot be parsed or is
    out of range (epoch seconds beyond year 9999, NaN, infinity) -- never OverflowError.
    """
    if isinstance(value, bool) or value is None:
        raise ValueError(f"not a timestamp: {value!r}")
    if isinstance(value, int | float):
        try:
            return dt.datetime.fromtimestamp(float(value), dt.UTC)
        except (OverflowError, OSError, ValueError):
            raise ValueError(f"timestamp out of range: {value!r}") from None
    if not isinstance(value, str):
        raise ValueError(f"not a timestamp: {value!r}")
    try:
        ts = dt.datetime.fromisoformat(value.strip().replace("Z", "+00:00"))
    except ValueError:
        raise ValueError(f"not an ISO-8601 timestamp: {value!r}") from None
    if ts.tzinfo is None:
        ts = ts.replace(tzinfo=dt.UTC)
    try:
        return ts.astimezone(dt.UTC)
    except OverflowError:  # e.g. 0001-01-01T00:00:00+01:00 falls before year 1 in UTC
        raise ValueError(f"timestamp out of range: {value!r}") from None


_ISO_DURATION = re.compile(r"^P(?:T(?:(\d+)H)?(?:(\d+)M)?(?:(\d+(?:\.\d+)?)S)?)$")
#: a clock duration as spreadsheets and players write it: H:MM:SS, or MM:SS (two parts are minutes and seconds)
_CLOCK_DURATION = re.compile(r"^(?:(\d+):)?(\d+):([0-5]\d(?:\.\d+)?)$")


def parse_duration(value: Any) -> int:
    """Duration in whole seconds from an int/float/numeric string, an ISO-8601 duration (``PT1H2M3S``) or a
    clock duration (``1:02:03``; ``28:00`` is 28 minutes); at least 0 and under 7 days."""
    if isinstance(value, bool) or value is None:
        raise ValueError(f"not a duration: {value!r}")
    if isinstance(value, int | float):
        seconds = float(value)
    elif isinstance(value, str):
        s = value.strip()
        m = _ISO_DURATION.match(s) or _CLOCK_DURATION.match(s)
        if m and any(m.groups()) and (m.re is _ISO_DURATION or m.group(1) is None or int(m.group(2)) < 60):
            h, mi, se = m.groups()
            seconds = int(h or 0) * 3600 + int(mi or 0) * 60 + float(se or 0)
        else:
            try:
                seconds = float(s)
            except ValueError:
                raise ValueError(f"not a duration: {value!r}") from None
    else:
        raise ValueError(f"not a duration: {value!r}")
    if not 0 <= seconds < 7 * 86400:
        raise ValueError(f"duration out of range: {value!r}")
    return int(round(seconds))


def _filter_values(candidate_filter: Any, name: str) -> list[str]:
    if candidate_filter is None:
        return []
    if isinstance(candidate_filter, Mapping):
        values = candidate_filter.get(name) or []
    else:
        values = getattr(candidate_filter, name, None) or []
    return list(values)


def _list_match(column: pa.ChunkedArray | pa.Array, wanted: Iterable[str], n: int) -> np.ndarray:
    """Rows whose list column contains any of ``wanted``."""
    if isinstance(column, pa.ChunkedArray):
        if column.num_chunks == 0:
            return np.zeros(n, dtype=bool)
        column = column.combine_chunks() if column.num_chunks != 1 else column.chunk(0)
    flat = pc.utf8_lower(pc.list_flatten(column))
    parents = pc.list_parent_indices(column)
    hit = pc.is_in(flat, value_set=pa.array(sorted({w.lower() for w in wanted}), pa.string())).fill_null(False)
    rows = np.asarray(parents.filter(hit)).astype(np.int64, copy=False)
    mask = np.zeros(n, dtype=bool)
    mask[rows] = True
    return mask


def candidate_mask(catalogue: pa.Table, candidate_filter: Any) -> np.ndarray:
    """Boolean mask over ``catalogue`` rows that are candidates for a variant.

    ``candidate_filter`` is a ``skyrec.config.CandidateFilter`` (or a mapping with the same keys
    ``genres``, ``formats``, ``masterbrands``). An item is a candidate when it matches ANY listed genre
    (if genres are listed) AND ANY listed format (if formats are listed) AND ANY listed masterbrand (if
    masterbrands are listed). An empty filter keeps every item. Every value compares case-insensitively
    (after folding the shipped synonyms), so ``comedy`` in a config matches ``Comedy`` and ``sci-fi`` matches
    a source's ``Sci-Fi``.
    """
    n = catalogue.num_rows
    mask = np.ones(n, dtype=bool)
    genres = normalise_list(_filter_values(candidate_filter, "genres"), normalise_genre)
    formats = normalise_list(_filter_values(candidate_filter, "formats"), normalise_format)
    masterbrands = [str(m).strip().lower() for m in _filter_values(candidate_filter, "masterbrands")]
    if genres:
        mask &= _list_match(catalogue.column("genres"), genres, n)
    if formats:
        mask &= _list_match(catalogue.column("formats"), formats, n)
    if masterbrands:
        mb = pc.utf8_lower(catalogue.column("masterbrand"))
        hit = pc.is_in(mb, value_set=pa.array(masterbrands, pa.string())).fill_null(False)
        if isinstance(hit, pa.ChunkedArray):
            hit = hit.combine_chunks() if hit.num_chunks else pa.array([], pa.bool_())
        mask &= hit.to_numpy(zero_copy_only=False).astype(bool, copy=False)
    return mask


def available_mask(table: pa.Table, at: dt.datetime) -> np.ndarray:
    """Rows with ``available_from <= at < available_until`` (a null ``available_until`` means no end)."""
    at_scalar = pa.scalar(at.astimezone(dt.UTC), pa.timestamp("us", tz="UTC"))
    start_ok = pc.less_equal(table.column("available_from"), at_scalar).fill_null(False)
    until = table.column("available_until")
    end_ok = pc.or_(pc.is_null(until), pc.greater(until, at_scalar).fill_null(False))
    both = pc.and_(start_ok, end_ok)
    if isinstance(both, pa.ChunkedArray):
        both = both.combine_chunks() if both.num_chunks else pa.array([], pa.bool_())
    return both.to_numpy(zero_copy_only=False).astype(bool, copy=False)
