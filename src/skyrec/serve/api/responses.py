"""The JSON response class: orjson when installed, the standard library otherwise (same bytes shape)."""

from __future__ import annotations

import json
from typing import Any

from starlette.responses import JSONResponse

try:  # optional speed-up
    import orjson
except ImportError:  # pragma: no cover - depends on the environment
    orjson = None  # type: ignore[assignment]


class JSON(JSONResponse):
    def render(self, content: Any) -> bytes:
        if orjson is not None:
            return orjson.dumps(content)
        return json.dumps(content, ensure_ascii=False, separators=(",", ":"), allow_nan=False).encode("utf-8")


def error(status: int, code: str, message: str, request_id: str | None = None, **extra: Any) -> JSON:
    body: dict[str, Any] = {"error": code, "message": message, "request_id": request_id}
    body.update(extra)
    return JSON(body, status_code=status)
