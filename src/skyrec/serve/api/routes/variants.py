"""``GET /v1/variants`` (what is served, since when, how good) and the training report link."""

from __future__ import annotations

import re
import time
from typing import Any

from fastapi import APIRouter
from starlette.concurrency import run_in_threadpool
from starlette.responses import HTMLResponse

from skyrec.serve.api.deps import SettingsDep, StoreDep, Variant
from skyrec.serve.api.errors import ApiError
from skyrec.serve.api.responses import JSON
from skyrec.serve.api.schemas import ERRORS, VariantsOut
from skyrec.serve.store import parse_time

router = APIRouter(prefix="/v1", tags=["variants"])

_REL_PATH = re.compile(r"^[A-Za-z0-9_.=\-]+(/[A-Za-z0-9_.=\-]+)*$")
MAX_REPORT_BYTES = 20 * 1024 * 1024


def report_url(variant: str, pointer: dict[str, Any]) -> str | None:
    """Where the explorer links to the training report: an http(s) URL the pointer names, or our own
    endpoint serving the lake file it names."""
    url = pointer.get("report_url")
    if isinstance(url, str) and url.startswith(("https://", "http://")):
        return url
    if isinstance(pointer.get("report"), str):
        return f"/v1/variants/{variant}/report"
    return None


def describe(variant: str, pointer: dict[str, Any] | None, stale: bool) -> dict[str, Any]:
    if pointer is None:
        return {"variant": variant, "published": False, "stale": stale}
    try:
        published = parse_time(pointer.get("published_at"))
    except ValueError:
        published = None
    evaluation = pointer.get("evaluation")
    return {
        "variant": variant,
        "published": True,
        "publication": pointer.get("publication"),
        "model": pointer.get("model"),
        "model_version": pointer.get("model_version"),
        "published_at": pointer.get("published_at"),
        "age_seconds": round(time.time() - published, 3) if published is not None else None,
        "users": pointer.get("users"),
        "items": pointer.get("items"),
        "evaluation": evaluation if isinstance(evaluation, dict) else None,
        "report_url": report_url(variant, pointer),
        "stale": stale,
    }


@router.get("/variants", response_model=VariantsOut, responses=ERRORS, summary="Configured variants and what "
            "each serves")
async def variants(settings: SettingsDep, store: StoreDep) -> JSON:
    out = []
    for variant in settings.variants:
        pointer, stale = await store.pointer(variant)
        out.append(describe(variant, pointer, stale))
    return JSON({"variants": out})


@router.get("/variants/{variant}/report", response_class=HTMLResponse, responses=ERRORS,
            summary="The training report of the served model (when the publication names one)")
async def report(variant: Variant, settings: SettingsDep, store: StoreDep) -> HTMLResponse:
    pointer, _ = await store.pointer(variant)
    if pointer is None:
        raise ApiError(404, "not_published", f"variant {variant!r} has no publication")
    rel = pointer.get("report")
    if not isinstance(rel, str) or not _REL_PATH.match(rel) or ".." in rel.split("/"):
        raise ApiError(404, "no_report", f"the publication of {variant!r} names no training report")

    def read() -> bytes | None:
        import fsspec

        fs, root = fsspec.core.url_to_fs(settings.lake_url, **settings.lake_storage_options)
        path = f"{root.rstrip('/')}/{rel}"
        try:
            with fs.open(path, "rb") as fh:
                return fh.read(MAX_REPORT_BYTES)
        except (FileNotFoundError, IsADirectoryError, PermissionError):
            return None

    data = await run_in_threadpool(read)
    if data is None:
        raise ApiError(404, "no_report", f"training report {rel!r} not found in the lake")
    return HTMLResponse(data, headers={"Content-Security-Policy": "default-src 'self' 'unsafe-inline' data:"})
