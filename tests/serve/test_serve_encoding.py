"""The API serves both rec value encodings (``publish.encoding``), alike, and across a rolling change."""

from __future__ import annotations

import json
from typing import Any

import numpy as np
from serve_data import PREFIX, catalogue, publish, standard_set

from skyrec.publish.codec import ITEM_TABLE_FIELD, encode_packed_values, table_value
from skyrec.publish.keys import Keys

V = "comedy_featured"
JSON_PUB, PACKED_PUB = "v1.20261123T190000-json", "v1.20261123T200000-packed"
RECS = {
    "u1": [("p001", 0.9), ("p003", 0.8), ("p005", 0.7), ("p007", 0.6)],
    "u2": [(f"p{i:03d}", round(1.0 - i / 100, 5)) for i in range(10, 30)],  # as the JSON encoder rounds
    "u3": [("p002", 12.5), ("p004", -0.25), ("p006", -3.0)],
}
FALLBACK = [(f"p{i:03d}", 100.0 - i) for i in range(30, 40)] + [("p001", 50.0)]


def publish_packed(r: Any, pub: str, recs: dict[str, list[tuple[str, float]]], *, decimals: int = 5) -> None:
    """One packed publication as compute_predictions writes it: packed rec values, the item table as a field
    of the items hash; then the pointer switch (which names the encoding)."""
    items = catalogue()
    table = sorted(items)[::-1]  # any order: values hold positions into this table
    pos = {item: j for j, item in enumerate(table)}
    publish(r, V, pub, recs={}, fallback=FALLBACK, items=items, switch=False, users_set=False)
    keys = Keys(PREFIX)
    for user, lst in recs.items():
        data, offsets = encode_packed_values(np.array([[pos[i] for i, _ in lst]]), np.array([[s for _, s in lst]]),
                                             np.array([len(lst)]), decimals, len(table))
        r.set(keys.rec(V, pub, user), data)
    r.hset(keys.items(V, pub), ITEM_TABLE_FIELD, table_value(table, decimals))
    r.sadd(keys.users(V, pub), *recs)
    old = r.get(keys.current(V))
    if old is not None:
        r.lpush(keys.history(V), old)
    pointer = json.loads(old) if old else {}
    r.set(keys.current(V), json.dumps({**pointer, "publication": pub, "encoding": "packed"}))


def answers(client: Any) -> dict[str, Any]:
    out = {}
    for user in ("u1", "u2", "u3", "newcomer"):
        for query in ("limit=3", "limit=15", "limit=5&offset=5"):
            r = client.get(f"/v1/recommendations/{V}/{user}?{query}")
            assert r.status_code == 200, r.text
            body = r.json()
            out[f"{user}?{query}"] = {k: v for k, v in body.items() if k not in ("publication", "request_id", "impression_id")}
    return out


def test_packed_and_json_publications_answer_alike(client, redis_client) -> None:
    standard_set(redis_client, pub=JSON_PUB, recs=RECS, fallback=FALLBACK)
    from_json = answers(client)
    assert client.get(f"/v1/recommendations/{V}/u1").json()["publication"] == JSON_PUB
    publish_packed(redis_client, PACKED_PUB, RECS)
    from_packed = answers(client)
    assert client.get(f"/v1/recommendations/{V}/u1").json()["publication"] == PACKED_PUB
    assert from_packed == from_json
    body = client.get(f"/v1/recommendations/{V}/u3?limit=3").json()
    assert [(i["id"], i["score"]) for i in body["items"]] == [("p002", 12.5), ("p004", -0.25), ("p006", -3.0)]


def test_rolling_change_back_and_forth(client, redis_client) -> None:
    """json -> packed -> rollback to json -> packed again: every answer comes from the pointer's publication,
    decoded with that publication's encoding (the API caches both side by side)."""
    standard_set(redis_client, pub=JSON_PUB, recs=RECS, fallback=FALLBACK)
    keys = Keys(PREFIX)
    publish_packed(redis_client, PACKED_PUB, RECS)
    packed_pointer = redis_client.get(keys.current(V))
    expected = [("p010", 0.9), ("p011", 0.89), ("p012", 0.88)]
    for pointer in (packed_pointer, redis_client.lindex(keys.history(V), 0), packed_pointer):
        redis_client.set(keys.current(V), pointer)
        body = client.get(f"/v1/recommendations/{V}/u2?limit=3").json()
        assert body["publication"] == json.loads(pointer)["publication"]
        assert [(i["id"], i["score"]) for i in body["items"]] == expected


def test_undecodable_packed_value_is_padded_from_the_fallback(client, redis_client) -> None:
    publish_packed(redis_client, PACKED_PUB, RECS)
    keys = Keys(PREFIX)
    raw = redis_client.get(keys.rec(V, PACKED_PUB, "u1"))
    redis_client.set(keys.rec(V, PACKED_PUB, "u1"), raw[:-1])  # truncated
    body = client.get(f"/v1/recommendations/{V}/u1?limit=3").json()
    assert [i["id"] for i in body["items"]] == ["p030", "p031", "p032"] and body["padded"] == 3
    # the item table is not an item
    assert client.get(f"/v1/items/%00item_table?variant={V}").status_code in (404, 422)
