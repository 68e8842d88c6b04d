"""A rail's candidates, its popular-now list and its items hash, built column-wise, against plain Python
references written from their definitions (one dict and ``json.dumps`` per item, sets and loops), on
generated catalogues with the awkward cases: duplicate rows, items the model lacks, closed availability
windows, missing brands, null and empty values, control characters, quotes and non-ASCII text."""

from __future__ import annotations

import datetime as dt
import json
import os
from typing import Any

import numpy as np
import pyarrow as pa
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from skyrec.data.schemas import AVAILABILITY, CATALOGUE
from skyrec.publish.resp import encode_command, encode_hset_columns, parse_commands
from skyrec.scoring.candidates import build_candidates, fallback_list, item_payloads_json, items_hash
from skyrec.scoring.topk import NO_BRAND

AT = dt.datetime(2026, 3, 1, 12, tzinfo=dt.UTC)
SETTINGS = settings(max_examples=int(os.environ.get("SKYREC_PROPERTY_EXAMPLES", "30")), deadline=None,
                    suppress_health_check=[HealthCheck.too_slow])


def reference_payload(row: dict[str, Any]) -> str:
    """The items-hash value of one catalogue row, from its definition."""
    until = row.get("available_until")
    return json.dumps({
        "title": row.get("title"), "brand": row.get("brand_title") or row.get("brand_id"),
        "genres": list(row.get("genres") or []), "formats": list(row.get("formats") or []),
        "available_until": None if until is None else until.astimezone(dt.UTC).isoformat().replace("+00:00", "Z"),
    }, sort_keys=True, separators=(",", ":"), ensure_ascii=False)


# text as a source may hold it: any character Arrow can store (no lone surrogates), control characters,
# quotes and backslashes made likely
TEXT = st.text(st.one_of(st.characters(blacklist_categories=("Cs",)), st.sampled_from('"\\\n\r\t\b\f\x00\x1f\x7f')),
               max_size=12)
STAMP = st.datetimes(min_value=dt.datetime(1, 1, 1), max_value=dt.datetime(9999, 12, 31),
                     timezones=st.just(dt.UTC))


@st.composite
def catalogue_rows(draw: Any) -> list[dict[str, Any]]:
    rows = []
    for _ in range(draw(st.integers(0, 12))):
        rows.append({
            "item_id": f"i{draw(st.integers(0, 15))}",  # duplicates likely
            "title": draw(st.none() | TEXT), "brand_id": draw(st.none() | TEXT),
            "brand_title": draw(st.none() | st.just("") | TEXT),
            "genres": draw(st.none() | st.lists(st.none() | TEXT, max_size=3)),
            "formats": draw(st.none() | st.lists(st.none() | TEXT, max_size=3)),
            "available_from": draw(st.none() | st.sampled_from([AT - dt.timedelta(days=1), AT + dt.timedelta(days=1)])),
            "available_until": draw(st.none() | STAMP | st.sampled_from([AT - dt.timedelta(hours=1),
                                                                          AT + dt.timedelta(days=3)])),
            "masterbrand": "radio",
        })
    return rows


def table(rows: list[dict[str, Any]]) -> pa.Table:
    return pa.Table.from_pylist(rows, schema=CATALOGUE)


@SETTINGS
@given(catalogue_rows())
def test_item_payloads_are_the_json_of_their_definition(rows: list[dict[str, Any]]) -> None:
    got = item_payloads_json(table(rows)).to_pylist()
    assert got == [reference_payload(r) for r in table(rows).to_pylist()]
    for text in got:
        json.loads(text)  # valid JSON, whatever the text held


def test_item_payloads_of_a_chunked_catalogue() -> None:
    rows = [{"item_id": f"i{j}", "title": f"T{j}\n\"x\"", "available_until": AT + dt.timedelta(microseconds=j)}
            for j in range(5)]
    chunked = pa.concat_tables([table(rows[:2]), table(rows[2:])])
    assert chunked.column("title").num_chunks == 2
    assert item_payloads_json(chunked).to_pylist() == [reference_payload(r) for r in table(rows).to_pylist()]
    assert json.loads(item_payloads_json(chunked)[1].as_py())["available_until"] == "2026-03-01T12:00:00.000001Z"


def reference_candidates(model_ids: list[str], rows: list[dict[str, Any]], avail: list[dict[str, Any]] | None,
                         genre: str | None) -> dict[str, Any]:
    """Candidates from their definition: model items in the catalogue that pass the filter and are playable,
    one (the first catalogue row) per item, in model order; brands coded by first appearance."""
    def open_at(r: dict[str, Any]) -> bool:
        return (r["available_from"] is not None and r["available_from"] <= AT
                and (r["available_until"] is None or r["available_until"] > AT))

    open_ids = {r["item_id"] for r in avail if open_at(r)} if avail is not None else None
    first: dict[str, dict[str, Any]] = {}
    for r in rows:
        ok = (genre is None or any(g is not None and g.lower() == genre for g in r["genres"] or []))
        ok = ok and (r["item_id"] in open_ids if open_ids is not None else open_at(r))
        if ok and r["item_id"] in model_ids:
            first.setdefault(r["item_id"], r)
    positions = sorted(model_ids.index(i) for i in first)
    codes: dict[str, int] = {}
    brands = [NO_BRAND if first[model_ids[p]]["brand_id"] is None
              else codes.setdefault(first[model_ids[p]]["brand_id"], len(codes)) for p in positions]
    return {"positions": positions, "brands": brands,
            "payloads": [reference_payload(first[model_ids[p]]) for p in positions]}


@SETTINGS
@given(catalogue_rows(), st.booleans(), st.sampled_from([None, "drama"]), st.randoms(use_true_random=False))
def test_candidates_match_their_definition(rows: list[dict[str, Any]], with_availability: bool, genre: str | None,
                                           rnd: Any) -> None:
    for r in rows:
        r["genres"] = rnd.choice([None, ["Drama"], ["drama", None], ["Comedy"]])
    model_ids = [f"i{j}" for j in rnd.sample(range(16), 10)]  # some catalogue items are not in the model
    avail = None
    if with_availability:  # duplicate ids, closed windows, ids the catalogue lacks
        avail = [{"item_id": f"i{rnd.randrange(18)}", "available_from": AT - dt.timedelta(days=1),
                  "available_until": rnd.choice([None, AT - dt.timedelta(hours=1), AT + dt.timedelta(hours=1)])}
                 for _ in range(10)]
    cands = build_candidates(
        model_item_ids=np.array(model_ids, dtype=object), item_factors=np.eye(16, 4, dtype=np.float32)[:10],
        catalogue=table(rows), candidate_filter={"genres": [genre]} if genre else None, at=AT,
        availability=pa.Table.from_pylist(avail, schema=AVAILABILITY) if avail is not None else None)
    want = reference_candidates(model_ids, rows, avail, genre)
    assert cands.positions.tolist() == want["positions"]
    assert cands.item_ids.tolist() == [model_ids[p] for p in want["positions"]]
    assert cands.brands.tolist() == want["brands"]
    assert cands.payloads().to_pylist() == want["payloads"]
    assert cands.counts["candidates"] == len(want["positions"])
    assert cands.item_to_cand[want["positions"]].tolist() == list(range(len(want["positions"])))
    assert (cands.item_to_cand >= 0).sum() == len(want["positions"])


def test_items_hash_holds_the_referenced_candidates_and_the_other_named_items_sorted() -> None:
    rows = [{"item_id": i, "title": t, "genres": ["Drama"], "available_from": AT - dt.timedelta(days=1)}
            for i, t in [("b", "B"), ("a", "A"), ("c", "C"), ("z", "Z first"), ("z", "Z second"), ("é", "E")]]
    cat = table(rows)
    cands = build_candidates(model_item_ids=np.array(["a", "b", "c"], dtype=object),
                             item_factors=np.ones((3, 2), np.float32), catalogue=cat, candidate_filter=None, at=AT)
    referenced = np.array([False, True, True])  # b and c
    fields, values = items_hash(cands, referenced, cat, ["z", "b", "é", "missing", "z"])
    assert fields.to_pylist() == ["b", "c", "z", "é"]  # code-point order; "a" is referenced by nothing
    assert [json.loads(v)["title"] for v in values.to_pylist()] == ["B", "C", "Z first", "E"]  # z: its first row
    empty = items_hash(cands, np.zeros(3, bool), cat, [])
    assert len(empty[0]) == len(empty[1]) == 0


def test_fallback_keeps_the_popular_items_that_are_candidates_and_playable() -> None:
    rows = [{"item_id": f"i{j}", "genres": ["Comedy" if j % 2 else "Drama"],
             "available_from": AT - dt.timedelta(days=1),
             "available_until": AT - dt.timedelta(hours=1) if j == 3 else None} for j in range(6)]
    cold = pa.table({"variant": ["v"] * 7 + ["w"], "rank": pa.array([6, 0, 1, 2, 3, 4, 5, 0], pa.int32()),
                     "item_id": ["i5", "i1", "i1", "i3", "i9", "i2", "i0", "i1"],
                     "score": pa.array([0.1, 0.9, 0.8, 0.7, 0.6, 0.5, None, 1.0], pa.float32())})
    got = fallback_list(cold, "v", table(rows), {"genres": ["comedy"]}, AT, None, k=5)
    assert [i for i, _ in got] == ["i1", "i5"]  # i1 once; i3 closed, i9 unknown, i2/i0 not comedy
    assert got[0][1] == pytest.approx(0.9)
    assert fallback_list(cold, "v", table(rows), None, AT, None, k=2) == [("i1", pytest.approx(0.9)),
                                                                          ("i2", pytest.approx(0.5))]
    assert fallback_list(None, "v", table(rows), None, AT, None, k=5) == []



def test_fallback_keeps_the_rails_age_rule_and_brand_cap() -> None:
    """The popular-now list is what a new listener is served: the same rules as a user's list."""
    day = dt.timedelta(days=1)
    rows = [{"item_id": f"i{j}", "genres": ["News"] if j < 2 else ["Comedy"], "brand_id": "b1" if j < 6 else f"b{j}",
             "available_from": AT - 30 * day, "release_ts": AT - (5 * day if j == 0 else day / 2)}
            for j in range(9)]
    cold = pa.table({"variant": ["v"] * 9, "rank": pa.array(range(9), pa.int32()),
                     "item_id": [f"i{j}" for j in range(9)], "score": pa.array([1.0] * 9, pa.float32())})
    got = fallback_list(cold, "v", table(rows), None, AT, None, k=5, max_age_days={"news": 2}, max_per_brand=3)
    # i0: News 5 days old; b1 holds i1..i5: three of them, then the other brands
    assert [i for i, _ in got] == ["i1", "i2", "i3", "i6", "i7"]
    uncapped = fallback_list(cold, "v", table(rows), None, AT, None, k=5)
    assert [i for i, _ in uncapped] == ["i0", "i1", "i2", "i3", "i4"]


@SETTINGS
@given(st.lists(st.tuples(TEXT, TEXT), max_size=30), st.integers(1, 7))
def test_hset_columns_are_the_commands_written_one_by_one(pairs: list[tuple[str, str]], chunk: int) -> None:
    data, n = encode_hset_columns("k:é", pa.array([f for f, _ in pairs], pa.string()),
                                  pa.array([v for _, v in pairs], pa.string()), chunk=chunk)
    want = [encode_command("HSET", "k:é", *[x for p in pairs[s:s + chunk] for x in p])
            for s in range(0, len(pairs), chunk)]
    assert data == b"".join(want) and n == len(want)
    assert [c[2:] for c in parse_commands(data)] == [[x.encode() for p in pairs[s:s + chunk] for x in p]
                                                     for s in range(0, len(pairs), chunk)]
    with pytest.raises(ValueError, match="null"):
        encode_hset_columns("k", pa.array(["a", None]), pa.array(["x", "y"]))
