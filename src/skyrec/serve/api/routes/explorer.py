"""The explorer page at ``/``: static HTML and JS from the package, no build step."""

from __future__ import annotations

from pathlib import Path

from fastapi import APIRouter
from starlette.responses import FileResponse, RedirectResponse

router = APIRouter(include_in_schema=False)
STATIC = Path(__file__).resolve().parents[2] / "static"


@router.get("/")
async def index() -> FileResponse:
    return FileResponse(STATIC / "index.html", media_type="text/html; charset=utf-8",
                        headers={"Cache-Control": "no-cache"})


@router.get("/docs/")
async def docs_slash() -> RedirectResponse:
    return RedirectResponse("/docs")
