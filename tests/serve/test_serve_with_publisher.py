"""The API over a publication made by the real publisher: its vectorised RESP encoding of rec values
(fixed-width, space-padded JSON), its load, its atomic switch, and its rollback."""

from __future__ import annotations

import json

import numpy as np
from serve_data import catalogue

from skyrec.publish.keys import Keys
from skyrec.publish.publisher import publish_versioned, rollback
from skyrec.publish.resp import (
    encode_command,
    encode_hset,
    encode_rec_sets,
    encode_sadd,
    fixed_width_fragments,
    load_files,
)

V = "music_mixes"


def make_publication(tmp_path, redis_server, redis_client, pub: str, shift: int) -> dict:
    keys = Keys("skyrec")
    item_ids = [f"p{i:03d}" for i in range(40)]
    users = ["alice", "bob", "carol"]
    items = np.array([[(u * 3 + j + shift) % 40 for j in range(6)] for u in range(len(users))], dtype=np.int64)
    scores = np.array([[1.5 - j * 0.25 for j in range(6)] for _ in users], dtype=np.float64)
    counts = np.array([6, 3, 0], dtype=np.int64)  # carol has no list in this publication
    recs, n_recs = encode_rec_sets(keys.rec(V, pub, ""), users, fixed_width_fragments(item_ids), items, scores,
                                   counts, 5)
    hset, n_hset = encode_hset(keys.items(V, pub), [(k, json.dumps(v)) for k, v in catalogue().items()])
    sadd, n_sadd = encode_sadd(keys.users(V, pub), ["alice", "bob"])
    fallback = encode_command("SET", keys.fallback(V, pub), json.dumps([[f"p{i:03d}", 9.0 - i] for i in range(30, 40)]))
    path = tmp_path / f"{pub}.resp"
    path.write_bytes(recs + hset + sadd + fallback)
    expected = n_recs + n_hset + n_sadd + 1
    pointer = {"publication": pub, "variant": V, "model": "als", "model_version": pub.split(".")[0],
               "run_key": pub.split(".")[1], "published_at": "2026-11-23T19:00:00+00:00", "users": 2, "items": 40,
               "evaluation": {"ndcg_at_k": 0.3}}
    result = publish_versioned(
        redis_client, keys, V, pointer,
        load=lambda: load_files("127.0.0.1", redis_server.port, [path], expected=expected).commands,
        expected_commands=expected, verify=lambda c, p: None, keep_versions=2)
    assert result["publication"] == pub
    return pointer


def test_serves_what_the_publisher_loaded_and_follows_its_rollback(tmp_path, redis_server, redis_client, client):
    make_publication(tmp_path, redis_server, redis_client, "v1.20261123T180000", shift=0)
    raw = redis_client.get(Keys("skyrec").rec(V, "v1.20261123T180000", "alice"))
    assert b"  " in raw or b" " in raw  # the publisher's padded layout, not json.dumps output

    body = client.get(f"/v1/recommendations/{V}/alice?limit=6").json()
    assert body["source"] == "personalised" and body["publication"] == "v1.20261123T180000"
    assert [i["id"] for i in body["items"]] == ["p000", "p001", "p002", "p003", "p004", "p005"]
    assert [i["score"] for i in body["items"]] == [1.5, 1.25, 1.0, 0.75, 0.5, 0.25]
    assert body["items"][0]["title"] == "Programme 0"
    bob = client.get(f"/v1/recommendations/{V}/bob?limit=5").json()  # 3 of his own, padded from the fallback
    assert [i["id"] for i in bob["items"]] == ["p003", "p004", "p005", "p030", "p031"] and bob["padded"] == 2
    carol = client.get(f"/v1/recommendations/{V}/carol?limit=2").json()
    assert carol["source"] == "fallback"
    assert client.get(f"/v1/users/random?variant={V}").json()["user_id"] in {"alice", "bob"}

    make_publication(tmp_path, redis_server, redis_client, "v1.20261123T190000", shift=10)
    body = client.get(f"/v1/recommendations/{V}/alice?limit=2").json()
    assert body["publication"] == "v1.20261123T190000" and [i["id"] for i in body["items"]] == ["p010", "p011"]

    rollback(redis_client, Keys("skyrec"), V)
    body = client.get(f"/v1/recommendations/{V}/alice?limit=2").json()
    assert body["publication"] == "v1.20261123T180000" and [i["id"] for i in body["items"]] == ["p000", "p001"]
