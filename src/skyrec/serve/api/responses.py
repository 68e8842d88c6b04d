"""The JSON response class: orjson when installed, the standard library otherwise (same bytes shape)."""

from __future__ import annotations

import json
from typing import Any

from starlette.responses import JSONResponse


def _stdlib(content: Any) -> bytes:
    return json.dumps(content, ensure_ascii=False, separators=(",", ":"), allow_nan=False).encode("utf-8")


try:  # optional speed-ups, fastest first; all give compact UTF-8 JSON
    import orjson

    _encode = orjson.dumps
except ImportError:  # pragma: no cover - depends on the environment
    try:
        import msgspec

        _encode = msgspec.json.encode
    except ImportError:
        _encode = _stdlib


class JSON(JSONResponse):
    def render(self, content: Any) -> bytes:
        try:
            return _encode(content)
        except (TypeError, ValueError, OverflowError):  # e.g. NaN, or a type the fast encoder refuses
            return _stdlib(content)


def error(status: int, code: str, message: str, request_id: str | None = None, **extra: Any) -> JSON:
    body: dict[str, Any] = {"error": code, "message": message, "request_id": request_id}
    body.update(extra)
    return JSON(body, status_code=status)
