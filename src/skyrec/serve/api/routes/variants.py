"""``GET /v1/variants`` (what is served, since when, how good) and the training report link."""

from __future__ import annotations

import asyncio
import logging
import re
import time
from collections import OrderedDict
from typing import Any

from fastapi import APIRouter
from starlette.concurrency import run_in_threadpool
from starlette.responses import HTMLResponse

from skyrec.serve.api.deps import SettingsDep, StoreDep, Variant
from skyrec.serve.api.errors import ApiError
from skyrec.serve.api.reports import CORRUPT_RESPONSE, MAX_REPORT_BYTES, read_committed_report
from skyrec.serve.api.responses import JSON
from skyrec.serve.api.schemas import ERRORS, VariantsOut
from skyrec.serve.settings import ServeSettings
from skyrec.serve.store import Unavailable, parse_time

log = logging.getLogger("skyrec.serve")
router = APIRouter(prefix="/v1", tags=["variants"])

_REL_PATH = re.compile(r"^[A-Za-z0-9_.=\-]+(/[A-Za-z0-9_.=\-]+)*$")


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


def report_url(variant: str, pointer: dict[str, Any], *, in_lake: bool = True) -> str | None:
    """Where the explorer links to the training report: an http(s) URL the pointer names, or our own
    endpoint serving the report from the lake, when it is there (``in_lake``: :func:`report_in_lake`)."""
    url = pointer.get("report_url")
    if isinstance(url, str) and url.startswith(("https://", "http://")):
        return url
    if in_lake and report_source(pointer) is not None:
        return f"/v1/variants/{variant}/report"
    return None


_FOUND: OrderedDict[tuple[str, str, str], None] = OrderedDict()  # reports seen in a lake: (lake, kind, path)


def report_in_lake(settings: ServeSettings, source: tuple[str, str]) -> bool:
    """Whether the report named by ``source`` (:func:`report_source`) is in the lake: a committed evaluation
    output whose manifest lists the report file, or an existing lake file. Cheap (a listing and the manifest,
    no report read); a report found is remembered (committed outputs do not lose files), one not found is
    looked for again next time (its evaluation may commit meanwhile). A lake that cannot be read: not there."""
    from skyrec.storage import Lake, StorageError

    key = (settings.lake_url, *source)
    if key in _FOUND:
        return True
    kind, rel = source
    try:
        lake = Lake(settings.lake_url, settings.lake_storage_options)
        if kind == "output":
            manifest = lake.manifest(rel)
            found = manifest is not None and _listed(manifest, REPORT_FILE)
        else:
            found = bool(lake.fs.isfile(lake.abspath(rel)))
    except (OSError, ValueError, TypeError, StorageError) as exc:
        log.warning("training report not checked", extra={"path": rel, "error": type(exc).__name__})
        return False
    if found:
        _FOUND[key] = None
        while len(_FOUND) > 1024:
            _FOUND.popitem(last=False)
    return found


def _listed(manifest: Any, name: str) -> bool:
    try:
        manifest.file(name)
    except KeyError:
        return False
    return True


def _similar(value: Any) -> dict[str, int] | None:
    """The publication's "more like this" summary ({k, items}), when it has lists."""
    if isinstance(value, dict) and all(isinstance(value.get(f), int) and not isinstance(value.get(f), bool)
                                       for f in ("k", "items")) and value["k"] > 0:
        return {"k": value["k"], "items": value["items"]}
    return None


def describe(variant: str, pointer: dict[str, Any] | None, stale: bool, *, in_lake: bool = True
             ) -> dict[str, Any]:
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
        "report_url": report_url(variant, pointer, in_lake=in_lake),
        "similar": _similar(pointer.get("similar")),
        "stale": stale,
    }


@router.get("/variants", response_model=VariantsOut, responses=ERRORS, summary="Configured variants and what "
            "each serves")
async def variants(settings: SettingsDep, store: StoreDep) -> JSON:
    """Every configured variant and what it serves. ``report_url`` only when the training report is there to
    serve (its evaluation output committed with the report file)."""
    described = await describe_all(settings, await store.pointers(settings.variants))
    return JSON({"variants": list(described.values())})


async def describe_all(settings: ServeSettings, pointers: dict[str, tuple[dict[str, Any] | None, bool]]
                       ) -> dict[str, dict[str, Any]]:
    """:func:`describe` of each (variant: (pointer, stale)), the training report linked only when it is in the
    lake (:func:`report_in_lake`; the rails' checks side by side, off the event loop)."""
    sources = {v: src for v, (p, _) in pointers.items() if p is not None and (src := report_source(p)) is not None}
    checked = await asyncio.gather(*(run_in_threadpool(report_in_lake, settings, src) for src in sources.values()))
    found = dict(zip(sources, checked, strict=True))
    return {v: describe(v, p, stale, in_lake=found.get(v, False)) for v, (p, stale) in pointers.items()}


@router.get("/variants/{variant}/report", response_class=HTMLResponse,
            responses={**ERRORS, **CORRUPT_RESPONSE},
            summary="The training report of the served model (when the publication names one)")
async def report(variant: Variant, settings: SettingsDep, store: StoreDep) -> HTMLResponse:
    """A report read through its evaluation output's committed manifest is served only when its bytes are the
    ones the manifest records (size and sha256): 409 ``report_corrupt`` otherwise, never altered content."""
    pointer, _ = await store.pointer(variant)
    if pointer is None:
        raise Unavailable(f"variant {variant!r} has no published recommendations yet", code="not_published")
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
                return read_committed_report(lake, manifest, REPORT_FILE, f"training report {rel!r}")
            with lake.fs.open(lake.abspath(rel), "rb") as fh:
                raw: bytes = fh.read(MAX_REPORT_BYTES)
                return raw
        except (FileNotFoundError, IsADirectoryError, PermissionError, KeyError):
            return None

    data = await run_in_threadpool(read)
    if data is None:
        raise ApiError(404, "no_report", f"training report {rel!r} not found in the lake")
    return HTMLResponse(data, headers={"Content-Security-Policy": "default-src 'self' 'unsafe-inline' data:"})
