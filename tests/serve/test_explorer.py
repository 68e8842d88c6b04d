"""The explorer page (``/``) in headless Chromium against a real uvicorn API over a real redis-server.

One browser for the module, driven over the DevTools protocol: each state is opened at a fixed viewport and
time zone, the test waits for the page's own state (``body[data-state]``), then reads what a person sees
(``innerText``, element boxes) and takes a screenshot that must not be blank. States: the first view, a
user, a fallback (unknown) user, two rails side by side (desktop and phone widths), nothing published,
Redis down from the start, and Redis lost while serving (the API's last answers, flagged stale). Screenshots are kept under ``$SKYREC_KEEP_SCREENSHOTS`` when that is set.
"""

from __future__ import annotations

import base64
import json
import os
import re
import shutil
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
import redis
from serve_data import VARIANTS, publish_history, standard_set
from test_serve_live import LiveServer, chromium, start_api, stop_api

from skyrec.redis_local import LocalRedis, free_port

pytestmark = pytest.mark.integration

DESKTOP = (1280, 900)
PHONE = (390, 844)
ISO_TIME = re.compile(r"\d{4}-\d{2}-\d{2}[T ]\d{2}:\d{2}")


class Browser:
    """Headless Chromium over the DevTools protocol (one page, commands answered in order)."""

    def __init__(self, tmp: Path) -> None:
        from websockets.sync.client import connect

        profile = tmp / "profile"
        self.log = (tmp / "chromium.log").open("wb")
        self.proc = subprocess.Popen(
            [chromium(), "--headless", "--no-sandbox", "--disable-gpu", "--disable-dev-shm-usage",
             "--disable-background-networking", "--disable-component-update", "--disable-sync", "--no-first-run",
             "--hide-scrollbars", "--remote-debugging-port=0", f"--user-data-dir={profile}", "about:blank"],
            stdout=self.log, stderr=subprocess.STDOUT, start_new_session=True)
        port_file = profile / "DevToolsActivePort"
        deadline = time.monotonic() + 60
        while not (port_file.exists() and port_file.read_text().count("\n") >= 1):
            if self.proc.poll() is not None or time.monotonic() > deadline:
                self.close()
                pytest.fail(f"Chromium did not start: {(tmp / 'chromium.log').read_text()[-2000:]}")
            time.sleep(0.1)
        port = int(port_file.read_text().splitlines()[0])
        pages = [t for t in httpx.get(f"http://127.0.0.1:{port}/json/list").json() if t["type"] == "page"]
        self.ws = connect(pages[0]["webSocketDebuggerUrl"], max_size=None, open_timeout=30)
        self.next_id = 0
        self.call("Emulation.setTimezoneOverride", timezoneId="UTC")

    def call(self, method: str, **params: Any) -> dict[str, Any]:
        self.next_id += 1
        self.ws.send(json.dumps({"id": self.next_id, "method": method, "params": params}))
        while True:
            msg = json.loads(self.ws.recv(timeout=60))
            if msg.get("id") == self.next_id:
                if "error" in msg:
                    raise RuntimeError(f"{method}: {msg['error']}")
                return msg["result"]

    #: what DevTools answers when a page navigates while an expression is evaluated in it (a click that
    #: follows a link, polled right after): the expression is simply asked again on the new page
    NAVIGATED = ("Inspected target navigated or closed", "Execution context was destroyed",
                 "Cannot find context with specified id")

    def js(self, expression: str) -> Any:
        for _ in range(100):
            try:
                result = self.call("Runtime.evaluate", expression=expression, returnByValue=True)
                break
            except RuntimeError as exc:
                if not any(m in str(exc) for m in self.NAVIGATED):
                    raise
                time.sleep(0.05)
        else:
            raise AssertionError(f"{expression}: the page kept navigating for 5 s")
        if "exceptionDetails" in result:
            raise RuntimeError(f"{expression}: {result['exceptionDetails']}")
        return result["result"].get("value")

    def open(self, url: str, size: tuple[int, int] = DESKTOP) -> str:
        """Load ``url`` at a viewport size; wait until the page reports a settled state; return it."""
        self.call("Emulation.setDeviceMetricsOverride", width=size[0], height=size[1], deviceScaleFactor=1,
                  mobile=size[0] < 600)
        # through about:blank, so that the state read below is the new page's, never the previous one's
        self.call("Page.navigate", url="about:blank")
        while self.js("location.href") != "about:blank":
            time.sleep(0.05)
        self.call("Page.navigate", url=url)
        deadline = time.monotonic() + 30
        state = None
        while time.monotonic() < deadline:
            state = self.js("location.href === 'about:blank' || document.readyState !== 'complete' ? null"
                            " : document.body.dataset.state")
            if state not in (None, "init", "loading"):
                time.sleep(0.2)  # let the last paint land before a screenshot
                return state
            time.sleep(0.1)
        raise AssertionError(f"{url}: the page did not settle (state {state!r})")

    def text(self, selector: str = "body") -> str:
        """What a person sees there (hidden elements and templates excluded)."""
        return self.js(f"(document.querySelector({json.dumps(selector)}) || {{innerText: ''}}).innerText")

    def screenshot(self, path: Path) -> Path:
        path.write_bytes(base64.b64decode(self.call("Page.captureScreenshot", format="png")["data"]))
        if os.environ.get("SKYREC_KEEP_SCREENSHOTS"):
            keep = Path(os.environ["SKYREC_KEEP_SCREENSHOTS"])
            keep.mkdir(parents=True, exist_ok=True)
            shutil.copy(path, keep / path.name)
        return path

    def close(self) -> None:
        if getattr(self, "ws", None) is not None:
            self.ws.close()
        if self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        self.log.close()


def assert_not_blank(png: Path, size: tuple[int, int], top: int = 260, bottom: int | None = None) -> None:
    """The page drew more than its header: the area from ``top`` to ``bottom`` (below the header) holds text
    (many colours from anti-aliasing) and no single colour fills it."""
    from PIL import Image

    with Image.open(png) as img:
        assert img.size == size
        area = img.convert("RGB").crop((0, top, size[0], bottom or size[1]))
        colours = area.getcolors(maxcolors=1_000_000)
    assert colours is not None and len(colours) > 40, f"{png.name}: the content area is (nearly) blank"
    assert max(c for c, _ in colours) < 0.97 * area.width * area.height, f"{png.name}: one colour fills the page"


#: drama_featured's evaluation: the model's figures and, after the rail's business rules, the rail's own
SERVED_EVALUATION = {"ndcg_at_k": 0.2345, "recall_at_k": 0.31, "metric": "ndcg_at_k", "ci": {"ndcg_at_k": [0.22, 0.25]},
                     "rules": {"model": {"ndcg_at_k": 0.2345, "ci": [0.22, 0.25]},
                               "served": {"ndcg_at_k": 0.1871, "ci": [0.175, 0.199]}}}


@pytest.fixture(scope="module")
def servers(tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, LiveServer]]:
    """Four APIs: over a published set (db 0), over an empty Redis database (db 1), over one rail published and
    not the others (db 2), over no Redis at all."""
    tmp = tmp_path_factory.mktemp("explorer")
    redis_server = LocalRedis(port=free_port(), dir=tmp / "redis").start()
    started: dict[str, LiveServer] = {}
    try:
        r = redis.Redis.from_url(redis_server.url)
        for variant in VARIANTS:
            standard_set(r, variant=variant, activity="end=20261123T18",
                         evaluation=SERVED_EVALUATION if variant == "drama_featured" else None)
        publish_history(r, "end=20261123T18", "u1", [("p002", "2026-11-23T17:00:00Z"), ("p004", "2026-11-22T09:00:00Z")])
        partial = redis.Redis.from_url(redis_server.url.rsplit("/", 1)[0] + "/2")  # one rail published, not the other
        standard_set(partial, variant=VARIANTS[0])
        partial.close()
        r.close()
        started["published"] = start_api(tmp, redis_server.url)
        started["partial"] = start_api(tmp, redis_server.url.rsplit("/", 1)[0] + "/2")
        started["empty"] = start_api(tmp, redis_server.url.rsplit("/", 1)[0] + "/1")
        started["no_redis"] = start_api(tmp, f"redis://127.0.0.1:{free_port()}/0",
                                        SKYREC__SERVE__REDIS_TIMEOUT_SECONDS="0.3")
        yield started
    finally:
        for server in started.values():
            stop_api(server)
        redis_server.stop()


@pytest.fixture(scope="module")
def browser(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Browser]:
    b = Browser(tmp_path_factory.mktemp("chromium"))
    try:
        yield b
    finally:
        b.close()


def items(browser: Browser, rail: int) -> list[dict[str, Any]]:
    return browser.js(f"[...document.querySelectorAll('#recs-{rail} > li')].map(li => "
                      "({id: li.dataset.item, text: li.innerText}))")


def common_checks(browser: Browser) -> str:
    """What holds in every state: no raw timestamps, no jargon, no empty badge (the stray dot)."""
    seen = browser.text()
    assert not ISO_TIME.search(seen), f"a raw timestamp is shown: {ISO_TIME.search(seen)}"
    assert "padded" not in seen.lower() and "padding" not in seen.lower()
    empty_badges = browser.js("[...document.querySelectorAll('body .badge')].filter(b => "
                              "getComputedStyle(b).display !== 'none' && b.textContent.trim() === '').length")
    assert empty_badges == 0
    assert browser.js("document.body.scrollWidth <= window.innerWidth"), "the page scrolls sideways"
    return seen


def test_first_view_shows_a_random_user_with_a_guide(servers, browser, tmp_path):
    assert browser.open(servers["published"].url + "/") == "loaded"
    seen = common_checks(browser)
    guide = browser.text("#message")
    assert guide.startswith("A random user of comedy_featured's published set") and "compare" in guide
    user = browser.js("document.getElementById('user').value")
    assert user in ("u1", "u2")
    assert f"Recent plays of {user}" in seen
    assert browser.js("document.getElementById('rail-0').dataset.source") == "personalised"
    assert "?variant=comedy_featured&user=" + user in browser.js("location.href")
    assert_not_blank(browser.screenshot(tmp_path / "explorer-first-view.png"), DESKTOP)


def test_a_user_with_readable_dates_figures_and_items_marked_by_origin(servers, browser, tmp_path):
    url = servers["published"].url
    api = httpx.get(url + "/v1/recommendations/comedy_featured/u1?limit=20").json()
    assert browser.open(url + "/?variant=comedy_featured&user=u1") == "loaded"
    seen = common_checks(browser)
    assert browser.js("document.getElementById('message').hidden") is True  # nothing to say: no empty box
    shown = items(browser, 0)
    assert [i["id"] for i in shown] == [i["id"] for i in api["items"]]
    for it, api_item in zip(shown, api["items"], strict=True):
        assert it["text"].startswith(api_item["title"])
        if api_item["origin"] == "personalised":
            assert f"score {api_item['score']:.3f}" in it["text"] and "popular on this rail" not in it["text"]
        else:  # items from the rail's popular list: marked, without a score
            assert "popular on this rail" in it["text"] and "score" not in it["text"]
    own = sum(i["origin"] == "personalised" for i in api["items"])
    assert 0 < own < len(api["items"])
    assert f"{own} of {len(api['items'])} items are u1's own" in browser.text("#rail-0 .rail-note")
    plays = browser.text("#plays")
    assert "Programme 2" in plays and "played 23 Nov 2026, 17:00 UTC" in plays
    assert "played 22 Nov 2026, 09:00 UTC" in plays
    rail = browser.text("#rail-0")
    assert re.search(r"Published \d{1,2} \w{3} \d{4}, \d\d:\d\d UTC \(2 hours ago\)", rail), rail[:300]
    assert "model als v1" in rail and "v1.20261123T190000" in rail
    # the rail's evaluation figures: the headline in the summary, the table on opening it
    # (no figure after the rail's rules published: the model's, said so)
    assert "NDCG@k of the model 0.2345" in browser.text("#rail-0 .evaluation-box summary")
    browser.js("document.querySelector('#rail-0 .evaluation-box').open = true")
    assert "recall@k\t0.3100" in browser.text("#rail-0 .evaluation")
    assert "Comedy" in seen
    assert_not_blank(browser.screenshot(tmp_path / "explorer-user.png"), DESKTOP)


def test_a_fallback_user_is_told_why(servers, browser, tmp_path):
    url = servers["published"].url
    api = httpx.get(url + "/v1/recommendations/comedy_featured/newcomer?limit=20").json()
    assert api["source"] == "fallback"
    assert browser.open(url + "/?variant=comedy_featured&user=newcomer") == "loaded"
    common_checks(browser)
    assert browser.js("document.getElementById('rail-0').dataset.source") == "fallback"
    assert browser.text("#rail-0 .source") == "not personalised"
    assert browser.text("#rail-0 .rail-note").startswith("No precomputed list for newcomer in this publication")
    shown = items(browser, 0)
    assert [i["id"] for i in shown] == [i["id"] for i in api["items"]]
    assert all("popular on this rail" not in i["text"] for i in shown)  # the whole list is; said once above
    assert "no recent plays published for this user" in browser.text("#plays-panel")
    assert_not_blank(browser.screenshot(tmp_path / "explorer-fallback-user.png"), DESKTOP)


def rail_boxes(browser: Browser) -> dict[str, dict[str, float]]:
    return browser.js("Object.fromEntries(['plays-panel', 'rail-0', 'rail-1'].map(id => { "
                      "const r = document.getElementById(id).getBoundingClientRect(); "
                      "return [id, {left: r.left, top: r.top, right: r.right, bottom: r.bottom}]; }))")


def test_two_rails_side_by_side_and_stacked_on_a_phone(servers, browser, tmp_path):
    url = servers["published"].url + "/?variant=comedy_featured&compare=drama_featured&user=u2"
    assert browser.open(url, DESKTOP) == "loaded"
    common_checks(browser)
    variants = browser.js("[...document.querySelectorAll('.rail')].map(r => r.dataset.variant)")
    assert variants == ["comedy_featured", "drama_featured"]
    for rail in (0, 1):
        assert browser.js(f"document.getElementById('rail-{rail}').dataset.source") == "personalised"
        assert len(items(browser, rail)) == 20
    # each rail's headline is its own figure when the evaluation has one: what the rail serves, after its rules
    assert browser.text("#rail-1 .headline") == "NDCG@k as served on this rail 0.1871 [0.1750, 0.1990]"
    assert browser.js("document.querySelector('#rail-1 .headline').dataset.figure") == "served"
    assert browser.text("#rail-0 .headline") == "NDCG@k of the model 0.2345"
    assert browser.js("document.querySelector('#rail-0 .headline').dataset.figure") == "model"
    box = rail_boxes(browser)
    assert box["rail-0"]["top"] == box["rail-1"]["top"] == box["plays-panel"]["top"]
    assert box["plays-panel"]["right"] <= box["rail-0"]["left"] and box["rail-0"]["right"] <= box["rail-1"]["left"]
    assert_not_blank(browser.screenshot(tmp_path / "explorer-two-rails.png"), DESKTOP)

    assert browser.open(url, PHONE) == "loaded"
    common_checks(browser)
    box = rail_boxes(browser)
    assert box["plays-panel"]["bottom"] <= box["rail-0"]["top"] and box["rail-0"]["bottom"] <= box["rail-1"]["top"]
    assert box["rail-0"]["right"] <= PHONE[0] and box["rail-1"]["left"] >= 0
    assert_not_blank(browser.screenshot(tmp_path / "explorer-two-rails-phone.png"), PHONE)


def test_nothing_published_prompts_what_to_do(servers, browser, tmp_path):
    assert browser.open(servers["empty"].url + "/") == "empty"
    common_checks(browser)
    assert browser.text("#message") == "Nothing is published yet. Run make demo (or the precompute DAGs), then reload this page."
    assert browser.js("document.querySelectorAll('.rail').length") == 0
    assert_not_blank(browser.screenshot(tmp_path / "explorer-nothing-published.png"), DESKTOP, top=120, bottom=220)


def test_a_rail_with_nothing_published_says_so_not_that_redis_is_down(servers, browser):
    """The API answers 503 ``not_published`` for a rail with nothing published yet (come back later, like Redis
    unreachable): the explorer names the rail's state, never "the store is unreachable"."""
    url = servers["partial"].url
    other = VARIANTS[1]
    r = httpx.get(f"{url}/v1/users/random?variant={other}")
    assert r.status_code == 503 and r.json()["error"] == "not_published", r.text
    assert browser.open(f"{url}/?variant={other}") == "empty"
    message = browser.text("#message")
    assert message.startswith(f"No user to show for {other}") and "no published recommendations yet" in message
    assert browser.open(f"{url}/?variant={other}&user=u1") == "loaded"
    common_checks(browser)
    assert browser.text("#rail-0 .source") == "no answer"
    assert "no published recommendations yet" in browser.text("#rail-0 .rail-note")
    assert "unreachable" not in browser.text()
    # the published rail beside it answers as usual
    assert browser.open(f"{url}/?variant={VARIANTS[0]}&compare={other}&user=u1") == "loaded"
    assert browser.js("document.getElementById('rail-0').dataset.source") == "personalised"
    assert "unreachable" not in browser.text()


def test_redis_down_says_so(servers, browser, tmp_path):
    assert browser.open(servers["no_redis"].url + "/?variant=comedy_featured&user=u1") == "unavailable"
    common_checks(browser)
    message = browser.text("#message")
    assert message.startswith("The recommendation store is unreachable.") and "Redis" in message
    assert browser.js("document.getElementById('retry') !== null")
    assert browser.js("document.querySelectorAll('.rail').length") == 0
    assert "Recent plays" not in browser.text()  # no empty panels under the message
    # the header and the message: nothing below them
    assert_not_blank(browser.screenshot(tmp_path / "explorer-redis-down.png"), DESKTOP, top=120, bottom=220)


def test_redis_lost_while_serving_shows_the_last_answers_as_stale(browser, tmp_path):
    redis_server = LocalRedis(port=free_port(), dir=tmp_path / "redis").start()
    server = None
    try:
        r = redis.Redis.from_url(redis_server.url)
        for variant in VARIANTS:
            standard_set(r, variant=variant, activity="end=20261123T18")
        r.close()
        server = start_api(tmp_path, redis_server.url, SKYREC__SERVE__REDIS_TIMEOUT_SECONDS="0.3")
        page = server.url + "/?variant=comedy_featured&user=u1"
        assert browser.open(page) == "loaded"
        before = items(browser, 0)
        assert "stale" not in browser.text("#rail-0")
        redis_server.stop()

        assert browser.open(page) == "loaded"
        common_checks(browser)
        assert items(browser, 0) == before  # the same answer, from the API's cache
        assert browser.text("#rail-0 h2 .stale") == "stale"
        assert "Redis is unreachable: this is the API's last answer" in browser.text("#rail-0 .rail-note")
        assert browser.text("#message").startswith("Redis is unreachable: the API shows the last answers it kept")
        assert browser.text("#plays-note").startswith("plays unavailable")
        assert_not_blank(browser.screenshot(tmp_path / "explorer-redis-lost.png"), DESKTOP)
    finally:
        if server is not None:
            stop_api(server)
        redis_server.stop()
