"""The ranking rules on their own: expiry at serve time, padding from the fallback list, no duplicates."""

from __future__ import annotations

import json

import pytest

from skyrec.serve.store import LRU, UNKNOWN_ITEM, ItemMeta, assemble, parse_item_meta, parse_scored, parse_time

NOW = 1_800_000_000.0


def meta(until: float | None = None) -> ItemMeta:
    return ItemMeta(title="t", brand="b", genres=("Comedy",), available_until=until)


def test_personal_list_kept_in_order_when_long_enough():
    r = assemble([("a", 3.0), ("b", 2.0), ("c", 1.0)], [("x", 9.0)], {}, NOW, 3)
    assert [i for i, _, _ in r.items] == ["a", "b", "c"]
    assert (r.personalised, r.padded, r.dropped_expired) == (3, 0, 0)


def test_expired_items_dropped_and_padded_from_fallback_without_duplicates():
    m = {"b": meta(NOW - 1), "x": meta(NOW + 3600), "a": meta(None)}
    r = assemble([("a", 3.0), ("b", 2.0), ("a", 1.5)], [("a", 9.0), ("x", 8.0), ("y", 7.0)], m, NOW, 3)
    assert [i for i, _, _ in r.items] == ["a", "x", "y"]
    assert r.dropped_expired == 1
    assert r.padded == 2
    assert len({i for i, _, _ in r.items}) == len(r.items)


def test_expired_fallback_items_are_skipped_too():
    m = {"x": meta(NOW - 10)}
    r = assemble(None, [("x", 9.0), ("y", 8.0)], m, NOW, 5)
    assert [i for i, _, _ in r.items] == ["y"]
    assert r.personalised == 0 and r.padded == 1 and r.dropped_expired == 1


def test_availability_ending_exactly_now_counts_as_expired():
    assert meta(NOW).expired(NOW)
    assert not meta(NOW + 0.001).expired(NOW)
    assert not UNKNOWN_ITEM.expired(NOW)


@pytest.mark.parametrize("value, expected", [
    (None, None), ("", None), ("2026-01-01T00:00:00Z", 1767225600.0),
    ("2026-01-01T01:00:00+01:00", 1767225600.0), ("2026-01-01T00:00:00", 1767225600.0), (5, 5.0),
])
def test_parse_time(value, expected):
    assert parse_time(value) == expected


def test_parse_item_meta_tolerates_bad_records():
    assert parse_item_meta(None) is UNKNOWN_ITEM
    assert parse_item_meta(b"{not json") is UNKNOWN_ITEM
    assert parse_item_meta(json.dumps({"title": "x", "available_until": "yesterday"})) is UNKNOWN_ITEM
    m = parse_item_meta(json.dumps({"title": "x", "genres": "Comedy", "available_until": None}))
    assert m.genres == ("Comedy",) and m.available_until is None and m.known


def test_parse_scored_skips_malformed_entries_and_bad_documents():
    assert parse_scored(None) is None
    assert parse_scored(b"[[\"a\", 1.5], [\"b\"], 7, [\"c\", \"x\"], [\"d\", 0]]") == [("a", 1.5), ("d", 0.0)]
    assert parse_scored(b"{oops") == []
    assert parse_scored(b"{\"a\": 1}") == []


def test_lru_bounds_and_recency():
    lru = LRU(2)
    lru.put("a", 1)
    lru.put("b", 2)
    assert lru.get("a") == 1  # a is now most recent
    lru.put("c", 3)
    assert lru.get("b") is None and lru.get("a") == 1 and lru.get("c") == 3
    zero = LRU(0)
    zero.put("a", 1)
    assert len(zero) == 0


def test_list_shorter_than_its_depth_is_the_whole_eligible_pool_and_is_not_padded():
    # precomputed with K=5 but only 2 eligible items: the fallback items are played or ruled out
    r = assemble([("a", 3.0), ("b", 2.0)], [("played", 9.0), ("x", 8.0)], {}, NOW, 4, depth=5)
    assert [i for i, _, _ in r.items] == ["a", "b"] and r.padded == 0


def test_full_depth_list_is_padded_when_expiry_leaves_too_few():
    m = {"a": meta(NOW - 1), "b": meta(NOW - 1)}
    r = assemble([("a", 3.0), ("b", 2.0), ("c", 1.0)], [("x", 8.0)], m, NOW, 2, depth=3)
    assert [i for i, _, _ in r.items] == ["c", "x"] and r.padded == 1 and r.dropped_expired == 2


def test_padding_keeps_the_publications_brand_cap_over_the_whole_answer():
    """A personal list that lost an expired item is padded from the popular list, but never past the brand
    cap the precompute applied: a fallback item of a brand the answer already holds ``cap`` times is passed
    over (unbranded items are never capped)."""
    m = {"a": meta(), "b": meta(), "c": meta(NOW - 1), "x": meta(), "y": meta(),
         "z": ItemMeta(title="t", brand="other", genres=(), available_until=None),
         "n": ItemMeta(title="t", brand=None, genres=(), available_until=None)}
    r = assemble([("a", 3.0), ("b", 2.0), ("c", 1.0)], [("x", 9.0), ("y", 8.0), ("n", 7.0), ("z", 6.0)], m, NOW, 4,
                 depth=3, max_per_brand=3)
    assert [i for i, _, _ in r.items] == ["a", "b", "x", "n"]  # y would be b's fourth
    assert r.padded == 2
    uncapped = assemble([("a", 3.0), ("b", 2.0), ("c", 1.0)], [("x", 9.0), ("y", 8.0)], m, NOW, 4, depth=3)
    assert [i for i, _, _ in uncapped.items] == ["a", "b", "x", "y"]

