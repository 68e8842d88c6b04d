"""The explorer's "more like this" in headless Chromium against a real uvicorn API over a real redis-server:
the action under each item opens the item's similar items on the same rail (seed named, leads back to the user),
and a user's "because you played X" rail is shown with its seed. Screenshots as in ``test_explorer``."""

from __future__ import annotations

import json
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
import redis
from serve_data import VARIANTS, catalogue, publish_history, standard_set
from test_explorer import DESKTOP, PHONE, Browser, assert_not_blank, common_checks
from test_serve_live import LiveServer, start_api, stop_api

from skyrec.publish.keys import Keys
from skyrec.redis_local import LocalRedis, free_port

pytestmark = pytest.mark.integration
PUB = "v1.20261123T190000"
ACTIVITY = "end=20261123T18"


GONE = "p039"  # an item whose availability ended: its lists are still published


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LiveServer]:
    tmp = tmp_path_factory.mktemp("explorer-similar")
    redis_server = LocalRedis(port=free_port(), dir=tmp / "redis").start()
    api = None
    try:
        r = redis.Redis.from_url(redis_server.url)
        keys = Keys("skyrec")
        for variant in VARIANTS:
            standard_set(r, variant=variant, pub=PUB, activity=ACTIVITY, extra={"similar": {"k": 20, "items": 40}},
                         items=catalogue(expired=(GONE,)))
            for i in range(40):  # every item's list: its neighbours on the rail, best first
                lst = [[f"p{(i + d) % 40:03d}", round(1.0 - d / 50, 5)] for d in range(1, 9)]
                r.set(keys.sim(variant, PUB, f"p{i:03d}"), json.dumps(lst))
        publish_history(r, ACTIVITY, "u1", [("p002", "2026-11-23T17:00:00Z"), ("p004", "2026-11-22T09:00:00Z")])
        publish_history(r, ACTIVITY, "u3", [(GONE, "2026-11-23T17:00:00Z")])
        r.close()
        api = start_api(tmp, redis_server.url)
        yield api
    finally:
        if api is not None:
            stop_api(api)
        redis_server.stop()


@pytest.fixture(scope="module")
def browser(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Browser]:
    b = Browser(tmp_path_factory.mktemp("chromium-similar"))
    try:
        yield b
    finally:
        b.close()


def test_more_like_this_from_a_recommended_item(server: LiveServer, browser: Browser, tmp_path: Path) -> None:
    assert browser.open(server.url + "/?variant=comedy_featured&user=u1") == "loaded"
    common_checks(browser)
    first = browser.js("document.querySelector('#recs-0 > li').dataset.item")
    link = browser.js("[...document.querySelectorAll('#recs-0 > li:first-child .actions a')]"
                      ".map(a => ({text: a.textContent, href: a.href}))")
    assert [a["text"] for a in link] == ["More like this"]
    assert link[0]["href"].endswith(f"?variant=comedy_featured&item={first}&user=u1")
    # the user's recent plays too: "more like this" of what they played, on the first rail
    played = browser.js("[...document.querySelectorAll('#plays > li')].map(li => [li.dataset.item, "
                        "li.querySelector('.actions a') && li.querySelector('.actions a').href])")
    assert [p for p, _ in played] == ["p002", "p004"]
    assert all(href and href.endswith(f"?variant=comedy_featured&item={p}&user=u1") for p, href in played), played
    # follow the link as a person would (a click), then wait for the new page to settle
    browser.js("document.querySelector('#recs-0 > li:first-child .actions a').click()")
    deadline = time.monotonic() + 20
    while "item=" not in browser.js("location.href") or browser.js("document.body && document.body.dataset.state") != "loaded":
        assert time.monotonic() < deadline, "the 'more like this' view did not load"
        time.sleep(0.1)
    time.sleep(0.2)
    seen = common_checks(browser)
    api = httpx.get(f"{server.url}/v1/items/{first}/similar?rail=comedy_featured&limit=20").json()
    title = api["item"]["title"]
    assert browser.text("#similar-panel h2") == f"More like “{title}”"
    shown = browser.js("[...document.querySelectorAll('#similar-items > li')].map(li => li.dataset.item)")
    assert shown == [i["id"] for i in api["items"]] and shown
    assert first not in shown
    assert f"score {api['items'][0]['score']:.3f}" in browser.text("#similar-items")
    assert "the most similar items on comedy_featured" in seen and "back to u1" in seen
    assert browser.js("getComputedStyle(document.getElementById('plays-panel')).display") == "none"
    assert_not_blank(browser.screenshot(tmp_path / "explorer-more-like-this.png"), DESKTOP)
    # the chain goes on: each similar item has its own action; and back leads to the user
    assert browser.js("document.querySelectorAll('#similar-items .actions a').length") == len(shown)
    assert browser.js("document.getElementById('back').getAttribute('href')") == "?variant=comedy_featured&user=u1"


def test_because_you_played_is_shown_with_its_seed(server: LiveServer, browser: Browser, tmp_path: Path) -> None:
    api = httpx.get(f"{server.url}/v1/because-you-played/comedy_featured/u1?limit=10").json()
    assert api["seed"]["id"] == "p002"
    for size in (DESKTOP, PHONE):
        assert browser.open(server.url + "/?variant=comedy_featured&user=u1", size) == "loaded"
        common_checks(browser)
        assert browser.text("#because-panel h2") == "Because you played “Programme 2”"
        assert "played 23 Nov 2026, 17:00 UTC" in browser.text("#because-panel")
        shown = browser.js("[...document.querySelectorAll('#because-items > li')].map(li => li.dataset.item)")
        assert shown == [i["id"] for i in api["items"]] and "p004" not in shown  # the user's plays left out
    assert_not_blank(browser.screenshot(tmp_path / "explorer-because-you-played.png"), PHONE, top=120)
    # a user with no qualifying play gets no such panel (and no empty box)
    assert browser.open(server.url + "/?variant=comedy_featured&user=newcomer") == "loaded"
    assert browser.js("document.getElementById('because-panel')") is None


def test_an_item_without_a_list_says_so(server: LiveServer, browser: Browser, tmp_path: Path) -> None:
    assert browser.open(server.url + "/?variant=comedy_featured&item=p999") == "loaded"
    common_checks(browser)
    assert "has no 'more like this' list" in browser.text("#similar-panel")
    assert_not_blank(browser.screenshot(tmp_path / "explorer-more-like-this-unknown.png"), DESKTOP, top=100)


def test_an_item_no_longer_available_is_named_as_such(server: LiveServer, browser: Browser) -> None:
    """A list about an item whose availability ended (a play of last month, a page kept open) is shown; the
    explorer says the item is no longer available, as the API's ``available: false`` does."""
    assert browser.open(server.url + f"/?variant=comedy_featured&item={GONE}") == "loaded"
    common_checks(browser)
    assert "no longer available" in browser.text("#similar-panel .published")
    assert browser.js("document.querySelectorAll('#similar-items > li').length") > 0
    assert browser.open(server.url + "/?variant=comedy_featured&user=u3") == "loaded"
    assert browser.text("#because-panel h2") == "Because you played “Programme 39”"
    assert "no longer available" in browser.text("#because-panel .published")
    assert browser.open(server.url + "/?variant=comedy_featured&user=u1") == "loaded"
    assert "no longer available" not in browser.text("#because-panel")
