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


REPORT_FILE = "report.html"  # what the evaluate job commits next to its figures


def _safe_rel(value: Any) -> str | None:
    if isinstance(value, str) and _REL_PATH.match(value) and ".." not in value.split("/"):
        return value
    return None


def report_source(pointer: dict[str, Any]) -> tuple[str, str] | None:
    """Where the served model's training report is: ("output", <committed evaluation output>) from the
    pointer's ``evaluation.evaluation_path`` (read through its manifest), or ("file", <lake file>) from a
    ``report`` field. Only lake-relative paths without ``..`` are accepted."""
    evaluation = pointer.get("evaluation")
    if isinstance(evaluation, dict) and (rel := _safe_rel(evaluation.get("evaluation_path"))):
        return "output", rel
    if rel := _safe_rel(pointer.get("report")):
        return "file", rel
    return None


def report_url(variant: str, pointer: dict[str, Any]) -> str | None:
    """Where the explorer links to the training report: an http(s) URL the pointer names, or our own
    endpoint serving the report from the lake."""
    url = pointer.get("report_url")
    if isinstance(url, str) and url.startswith(("https://", "http://")):
        return url
    if report_source(pointer) is not None:
        return f"/v1/variants/{variant}/report"
    return None


def _similar(value: Any) -> dict[str, int] | None:
    """The publication's "more like this" summary ({k, items}), when it has lists."""
    if isinstance(value, dict) and all(isinstance(value.get(f), int) and not isinstance(value.get(f), bool)
                                       for f in ("k", "items")) and value["k"] > 0:
        return {"k": value["k"], "items": value["items"]}
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
        "similar": _similar(pointer.get("similar")),
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
    source = report_source(pointer)
    if source is None:
        raise ApiError(404, "no_report", f"the publication of {variant!r} names no training report")
    kind, rel = source

    def read() -> bytes | None:
        from skyrec.storage import Lake

        lake = Lake(settings.lake_url, settings.lake_storage_options)
        try:
            if kind == "output":  # readers resolve files only through the committed manifest
                manifest = lake.manifest(rel)
                if manifest is None:
                    return None
                with lake.open(manifest, REPORT_FILE) as fh:
                    return fh.read(MAX_REPORT_BYTES)
            with lake.fs.open(lake.abspath(rel), "rb") as fh:
                return fh.read(MAX_REPORT_BYTES)
        except (FileNotFoundError, IsADirectoryError, PermissionError, KeyError):
            return None

    data = await run_in_threadpool(read)
    if data is None:
        raise ApiError(404, "no_report", f"training report {rel!r} not found in the lake")
    return HTMLResponse(data, headers={"Content-Security-Policy": "default-src 'self' 'unsafe-inline' data:"})
