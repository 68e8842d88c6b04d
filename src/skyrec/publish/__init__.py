"""Publication of precomputed recommendations: key schema, RESP files, loads, pointer switch, rollback.

``rollback`` and ``current`` are re-exported here for the API's admin endpoint."""

from __future__ import annotations

from skyrec.publish.publisher import current, rollback

__all__ = ["current", "rollback"]
