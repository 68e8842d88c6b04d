""""More like this" (``/v1/items/{item_id}/similar``) and "because you played X"
(``/v1/because-you-played/{variant}/{user_id}``) over a real redis-server: sim keys of the current publication
only, in either value encoding, expired items dropped, the seed named, errors in the one JSON shape."""

from __future__ import annotations

import json

import numpy as np
import pytest
from serve_data import PREFIX, catalogue, publish_history, standard_set

from skyrec.publish.codec import ITEM_TABLE_FIELD, encode_packed_values, table_value
from skyrec.publish.keys import Keys
from skyrec.serve.api.schemas import BecauseYouPlayedOut, ErrorOut, SimilarOut

pytestmark = pytest.mark.integration
RAIL = "comedy_featured"
ACTIVITY = "comedy_featured:v1.20261123T190000"
K = Keys(PREFIX)


def put_sim(r, pub: str, lists: dict[str, list[tuple[str, float]]], *, variant: str = RAIL) -> None:
    for seed, lst in lists.items():
        r.set(K.sim(variant, pub, seed), json.dumps([[i, s] for i, s in lst]))


def published(r, pub: str = "v1.20261123T190000", *, similar: bool = True, activity: str | None = ACTIVITY,
              items=None) -> dict:
    extra = {"similar": {"k": 5, "items": 3}} if similar else {"similar": None}
    return standard_set(r, variant=RAIL, pub=pub, activity=activity, extra=extra,
                        items=items or catalogue(expired=("p013",)))


def test_more_like_this_is_the_publications_list_with_the_seed_named(client, redis_client) -> None:
    ptr = published(redis_client)
    pub = ptr["publication"]
    put_sim(redis_client, pub, {"p001": [("p003", 0.9), ("p013", 0.85), ("p005", 0.8), ("p007", 0.7), ("p009", 0.6)]})
    resp = client.get(f"/v1/items/p001/similar?rail={RAIL}&limit=3")
    assert resp.status_code == 200, resp.text
    body = SimilarOut.model_validate(resp.json()).model_dump()
    assert body["item"] == {"id": "p001", "title": "Programme 1", "brand": "Brand 1", "genres": ["Comedy"],
                            "available": True}
    assert body["rail"] == RAIL and body["publication"] == pub and body["limit"] == 3
    # p013 expired since the precompute: dropped, the next one moves up
    assert [(i["id"], i["score"]) for i in body["items"]] == [("p003", 0.9), ("p005", 0.8), ("p007", 0.7)]
    assert body["items"][0]["title"] == "Programme 3"
    assert resp.headers["cache-control"] == "no-store"
    # an item whose availability ended still has its list; the answer says it is no longer available
    put_sim(redis_client, pub, {"p013": [("p003", 0.9)]})
    item = client.get(f"/v1/items/p013/similar?rail={RAIL}").json()["item"]
    assert item["id"] == "p013" and item["available"] is False


def test_packed_sim_values_are_read_with_the_publications_item_table(client, redis_client) -> None:
    ptr = published(redis_client)
    pub = ptr["publication"]
    table = [f"p{i:03d}" for i in range(40)]
    redis_client.hset(K.items(RAIL, pub), ITEM_TABLE_FIELD, table_value(table, 5))
    data, offsets = encode_packed_values(np.array([[21, 23, 25]], np.int32), np.array([[0.5, 0.25, 0.125]], np.float32),
                                         np.array([3], np.int32), 5, len(table))
    redis_client.set(K.sim(RAIL, pub, "p002"), data[offsets[0]:offsets[1]])
    body = client.get(f"/v1/items/p002/similar?rail={RAIL}").json()
    assert [(i["id"], i["score"]) for i in body["items"]] == [("p021", 0.5), ("p023", 0.25), ("p025", 0.125)]


def test_errors_name_what_was_wrong_in_the_one_shape(client, redis_client) -> None:
    ptr = published(redis_client)
    put_sim(redis_client, ptr["publication"], {"p001": [("p003", 0.9)]})
    cases = {
        f"/v1/items/p039/similar?rail={RAIL}": (404, "unknown_item"),
        "/v1/items/p001/similar?rail=no_such_rail": (404, "unknown_variant"),
        "/v1/items/p001/similar": (422, "invalid_request"),  # the rail is required
        f"/v1/items/bad%20id/similar?rail={RAIL}": (422, "invalid_request"),
        f"/v1/items/p001/similar?rail={RAIL}&limit=0": (422, "invalid_request"),
        f"/v1/items/p001/similar?rail={RAIL}&limit=100000": (422, "invalid_request"),
        "/v1/because-you-played/no_such_rail/u1": (404, "unknown_variant"),
        f"/v1/because-you-played/{RAIL}/bad%20user": (422, "invalid_request"),
    }
    for url, (status, code) in cases.items():
        resp = client.get(url)
        assert resp.status_code == status, (url, resp.text)
        err = ErrorOut.model_validate(resp.json())
        assert err.error == code and err.message, url
    assert "p039" in client.get(f"/v1/items/p039/similar?rail={RAIL}").json()["message"]
    # a publication without sim keys says so, rather than calling every item unknown
    published(redis_client, "v1.20261124T000000", similar=False)
    resp = client.get(f"/v1/items/p001/similar?rail={RAIL}")
    assert resp.status_code == 404 and resp.json()["error"] == "similar_not_published"


def test_answers_switch_with_the_publication(client, redis_client) -> None:
    first = published(redis_client)["publication"]
    put_sim(redis_client, first, {"p001": [("p003", 0.9)]})
    second = published(redis_client, "v1.20261124T010000")["publication"]
    put_sim(redis_client, second, {"p001": [("p011", 0.7)]})
    body = client.get(f"/v1/items/p001/similar?rail={RAIL}").json()
    assert body["publication"] == second and [i["id"] for i in body["items"]] == ["p011"]


def test_because_you_played_takes_the_most_recent_qualifying_play_and_names_it(client, redis_client) -> None:
    pub = published(redis_client)["publication"]
    publish_history(redis_client, ACTIVITY, "u1", [
        ("p010", "2026-11-23T18:00:00Z"),  # newest, but not in the model: no list
        ("p011", "2026-11-23T17:00:00Z"),  # its list holds only items the user played or that expired
        ("p012", "2026-11-23T16:00:00Z"),  # the seed
        ("p015", "2026-11-22T09:00:00Z"),
        ("p012", "2026-11-21T09:00:00Z")])  # played again earlier: the most recent time is the one shown
    put_sim(redis_client, pub, {"p011": [("p012", 0.9), ("p013", 0.8)],
                                "p012": [("p015", 0.95), ("p017", 0.9), ("p013", 0.85), ("p019", 0.5)],
                                "p015": [("p021", 0.4)]})
    resp = client.get(f"/v1/because-you-played/{RAIL}/u1?limit=5")
    assert resp.status_code == 200, resp.text
    body = BecauseYouPlayedOut.model_validate(resp.json()).model_dump()
    assert body["seed"] == {"id": "p012", "title": "Programme 12", "brand": "Brand 2", "genres": ["Drama", "Crime"],
                            "available": True, "played_at": "2026-11-23T16:00:00Z"}
    assert [i["id"] for i in body["items"]] == ["p017", "p019"]  # p015 played, p013 expired
    assert body["publication"] == pub and body["rail"] == RAIL and body["note"] is None
    assert [i["id"] for i in client.get(f"/v1/because-you-played/{RAIL}/u1?limit=1").json()["items"]] == ["p017"]
    # the most recent play is of an item no longer available: still the seed (the user did play it), said so
    publish_history(redis_client, ACTIVITY, "u2", [("p013", "2026-11-23T18:00:00Z")])
    put_sim(redis_client, pub, {"p013": [("p017", 0.9)]})
    seed = client.get(f"/v1/because-you-played/{RAIL}/u2").json()["seed"]
    assert seed["id"] == "p013" and seed["available"] is False


def test_because_you_played_leaves_out_the_older_plays_the_history_names(client, redis_client) -> None:
    """A history value may name, beside the recent plays, older plays found in their seeds' lists
    (``also_played``): those are left out too; the history route shows the plays alone."""
    pub = published(redis_client)["publication"]
    redis_client.set(K.hist(ACTIVITY, "u1"), json.dumps(
        {"plays": [["p012", "2026-11-23T16:00:00Z"]], "also_played": ["p015", "p019"]}))
    put_sim(redis_client, pub, {"p012": [("p015", 0.95), ("p017", 0.9), ("p019", 0.5), ("p021", 0.4)]})
    body = client.get(f"/v1/because-you-played/{RAIL}/u1").json()
    assert body["seed"]["id"] == "p012" and [i["id"] for i in body["items"]] == ["p017", "p021"]
    plays = client.get(f"/v1/users/u1/history?variant={RAIL}").json()["plays"]
    assert [(p["id"], p["played_at"]) for p in plays] == [("p012", "2026-11-23T16:00:00Z")]
    redis_client.set(K.hist(ACTIVITY, "u1"), json.dumps({"plays": [["p012", "t"]], "also_played": ["p017", "p021"]}))
    body = client.get(f"/v1/because-you-played/{RAIL}/u1").json()
    assert [i["id"] for i in body["items"]] == ["p015", "p019"]


def test_because_you_played_without_a_qualifying_play_has_no_seed_and_says_why(client, redis_client) -> None:
    pub = published(redis_client)["publication"]
    put_sim(redis_client, pub, {"p001": [("p003", 0.9)]})
    body = client.get(f"/v1/because-you-played/{RAIL}/nobody").json()
    assert body["seed"] is None and body["items"] == [] and "no recent plays" in body["note"]
    publish_history(redis_client, ACTIVITY, "u2", [("p030", "2026-11-23T18:00:00Z")])
    body = client.get(f"/v1/because-you-played/{RAIL}/u2").json()
    assert body["seed"] is None and "none of the user's 1 recent plays" in body["note"]
    published(redis_client, "v1.20261124T020000", activity=None)
    body = client.get(f"/v1/because-you-played/{RAIL}/u1").json()
    assert body["seed"] is None and "no play history" in body["note"]


def test_a_publication_removed_under_a_cached_pointer_is_not_taken_for_one_without_lists(
        make_client, config_factory, redis_server, redis_client) -> None:
    """The publisher switches the rail to a new publication and removes the old one (``keep_versions: 1``, its
    removal protocol) while the API still holds the old pointer (``pointer_cache_seconds``) and the old
    publication's cached entry: the old one's missing sim keys are no answer ("unknown item", "no seed"),
    the pointer is read again and the answer comes from the new publication."""
    from skyrec.publish import removal

    config = config_factory({"serve": {"redis_url": redis_server.url, "pointer_cache_seconds": 600,
                                       "access_log": False}})
    shared = "@snap1.n10"  # the users' plays: shared by both publications, not removed with the old one
    first, second = "v1.20261123T190000", "v1.20261124T010000"
    removal.register(redis_client, K, RAIL, first)
    published(redis_client, first, activity=shared)
    put_sim(redis_client, first, {"p001": [("p003", 0.9)], "p012": [("p017", 0.9)]})
    publish_history(redis_client, shared, "u1", [("p012", "2026-11-23T16:00:00Z")])
    more_like, because = make_client(config), make_client(config)  # (each route with its own cached pointer)
    body = more_like.get(f"/v1/items/p001/similar?rail={RAIL}").json()
    assert body["publication"] == first and [i["id"] for i in body["items"]] == ["p003"]
    body = because.get(f"/v1/because-you-played/{RAIL}/u1").json()
    assert body["publication"] == first and body["seed"]["id"] == "p012"

    removal.register(redis_client, K, RAIL, second)
    put_sim(redis_client, second, {"p001": [("p011", 0.7)], "p012": [("p019", 0.8)]})
    published(redis_client, second, activity=shared)  # the switch
    assert removal.remove(redis_client, K, RAIL, first)  # the cleanup
    assert not redis_client.keys(f"{PREFIX}:sim:{RAIL}:{first}:*")

    resp = more_like.get(f"/v1/items/p001/similar?rail={RAIL}")
    assert resp.status_code == 200, resp.text
    assert resp.json()["publication"] == second and [i["id"] for i in resp.json()["items"]] == ["p011"]
    body = because.get(f"/v1/because-you-played/{RAIL}/u1").json()
    assert body["publication"] == second and body["seed"] is not None, body
    assert body["seed"]["id"] == "p012" and [i["id"] for i in body["items"]] == ["p019"]
    # an item the new publication has no list for either: the definite answer, from the new publication
    resp = more_like.get(f"/v1/items/p039/similar?rail={RAIL}")
    assert resp.status_code == 404 and resp.json()["error"] == "unknown_item"


def test_a_pointer_naming_a_publication_without_keys_is_a_503_not_an_answer(client, redis_client) -> None:
    """A publication gone while the pointer, read again, still names it (removed by hand, or mid-switch): no
    definite answer about it, a 503 to retry."""
    pub = published(redis_client)["publication"]
    put_sim(redis_client, pub, {"p001": [("p003", 0.9)]})
    publish_history(redis_client, ACTIVITY, "u1", [("p001", "2026-11-23T16:00:00Z")])
    assert client.get(f"/v1/items/p001/similar?rail={RAIL}").status_code == 200
    redis_client.delete(K.items(RAIL, pub), K.fallback(RAIL, pub), K.sim(RAIL, pub, "p001"))
    for url in (f"/v1/items/p001/similar?rail={RAIL}", f"/v1/because-you-played/{RAIL}/u1"):
        resp = client.get(url)
        assert resp.status_code == 503 and resp.json()["error"] == "switching", (url, resp.text)


def test_nothing_published_is_a_503_json(client, redis_client) -> None:
    resp = client.get(f"/v1/items/p001/similar?rail={RAIL}")
    assert resp.status_code == 503 and resp.json()["error"] == "not_published"
    resp = client.get(f"/v1/because-you-played/{RAIL}/u1")
    assert resp.status_code == 503 and resp.json()["error"] == "not_published"


def test_the_routes_are_documented_with_the_error_shape(client) -> None:
    spec = client.get("/openapi.json").json()
    for path in ("/v1/items/{item_id}/similar", "/v1/because-you-played/{variant}/{user_id}"):
        op = spec["paths"][path]["get"]
        assert {"200", "404", "422", "503"} <= set(op["responses"])
        assert op["responses"]["404"]["content"]["application/json"]["schema"]["$ref"].endswith("/ErrorOut")
    params = {p["name"]: p for p in spec["paths"]["/v1/items/{item_id}/similar"]["get"]["parameters"]}
    assert params["rail"]["required"] is True and params["item_id"]["schema"]["pattern"]
