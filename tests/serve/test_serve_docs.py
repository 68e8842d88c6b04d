"""The API documents itself offline: Swagger UI and ReDoc from installed assets, rendered in headless Chromium
(this machine reaches no CDN, so a page that needed one would render nothing)."""

from __future__ import annotations

import re

import httpx
import pytest
from test_serve_live import live, run_chromium  # noqa: F401 - the module-scoped live API fixture

pytestmark = pytest.mark.integration


def _external_refs(html: str) -> list[str]:
    return [u for u in re.findall(r'(?:src|href)\s*=\s*["\']([^"\']+)', html) if re.match(r"^(https?:)?//", u)]


@pytest.mark.parametrize("page", ["/docs", "/redoc"])
def test_docs_pages_load_nothing_from_other_hosts(live, page):  # noqa: F811
    r = httpx.get(live.url + page)
    assert r.status_code == 200 and r.headers["content-type"].startswith("text/html")
    assert _external_refs(r.text) == []
    for asset in re.findall(r'(?:src|href)\s*=\s*["\'](/[^"\']+)', r.text):
        assert httpx.get(live.url + asset).status_code == 200, asset


def test_swagger_ui_renders_every_operation(live, tmp_path):  # noqa: F811
    spec = httpx.get(live.url + "/openapi.json").json()
    dom = run_chromium(["--dump-dom", live.url + "/docs"], tmp_path)
    assert dom.returncode == 0, dom.stderr[-2000:]
    html = dom.stdout
    rendered = set(re.findall(r'data-path="([^"]+)"', html))
    assert rendered, html[-2000:]
    assert rendered == set(spec["paths"]), set(spec["paths"]) ^ rendered


def test_redoc_renders_the_operations(live, tmp_path):  # noqa: F811
    spec = httpx.get(live.url + "/openapi.json").json()
    dom = run_chromium(["--dump-dom", live.url + "/redoc"], tmp_path)
    assert dom.returncode == 0, dom.stderr[-2000:]
    summaries = [op["summary"] for path in spec["paths"].values() for op in path.values() if op.get("summary")]
    missing = [s for s in summaries if s.replace("'", "&#x27;") not in dom.stdout and s not in dom.stdout]
    assert not missing, missing
