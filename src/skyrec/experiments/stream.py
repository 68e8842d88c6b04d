"""Appending events to the deployment's Redis Stream (``{prefix}:events``), with a bounded backlog.

One request's events go in with one MULTI/EXEC pipeline (all of the batch or none of it), each entry
``XADD key MAXLEN ~ events.max_stream_length * e <json>``. The backlog is what the ``ingest_feedback`` group has
not acknowledged yet (``lag + pending`` from XINFO GROUPS; the stream's length when there is no group yet, or
when Redis cannot tell the lag). It is measured in the same round trip as the writes, at most every
``events.backlog_check_seconds``; while it is above ``events.max_backlog`` the writer refuses (the API answers
503 with Retry-After) and measures again, alone, once the measure is older than the interval. Memory stays
bounded: the stream by MAXLEN, a request by ``events.max_request_bytes`` and 500 events.
"""

from __future__ import annotations

import math
import time
from collections.abc import Sequence
from typing import Any

from redis.exceptions import ResponseError

from skyrec.experiments.config import EventsConfig

GROUP = "ingest_feedback"


def stream_key(prefix: str) -> str:
    return f"{prefix}:events"


class Backlogged(RuntimeError):
    def __init__(self, backlog: int, limit: int, retry_after: int) -> None:
        super().__init__(f"the feedback stream's consumer is behind: {backlog:,} events not yet ingested "
                         f"(limit events.max_backlog = {limit:,}); retry in {retry_after} s")
        self.backlog = backlog
        self.retry_after = retry_after


def backlog_from(length: int, groups: Sequence[dict[Any, Any]] | None) -> int:
    """Entries not yet acknowledged by the ingest_feedback group; the stream length without the group."""
    for g in groups or ():
        name = g.get("name")
        if (name.decode() if isinstance(name, bytes) else name) != GROUP:
            continue
        lag = g.get("lag")
        if lag is None:  # Redis cannot tell (entries deleted in the unread range): the whole stream, to be safe
            return int(length)
        return int(lag) + int(g.get("pending") or 0)
    return int(length)


class StreamWriter:
    """Per process: the last backlog measure and when it was taken."""

    def __init__(self, key: str, config: EventsConfig) -> None:
        self.key = key
        self.config = config
        self.backlog = 0
        self.measured_at = -math.inf

    async def measure(self, redis: Any) -> int:
        pipe = redis.pipeline(transaction=False)
        pipe.xlen(self.key)
        pipe.xinfo_groups(self.key)
        length, groups = await pipe.execute(raise_on_error=False)
        if isinstance(length, Exception):
            raise length
        if isinstance(groups, ResponseError):  # no such key: nothing written yet
            groups = None
        elif isinstance(groups, Exception):
            raise groups
        self._record(int(length), groups)
        return self.backlog

    def _record(self, length: int, groups: Sequence[dict[Any, Any]] | None) -> None:
        self.backlog = backlog_from(length, groups)
        self.measured_at = time.monotonic()

    async def append(self, redis: Any, entries: Sequence[bytes]) -> list[Any]:
        """XADD every entry (atomically), or raise Backlogged; returns the stream ids."""
        cfg = self.config
        stale = time.monotonic() - self.measured_at >= cfg.backlog_check_seconds
        if self.backlog > cfg.max_backlog:
            if stale:
                await self.measure(redis)
                stale = False
            if self.backlog > cfg.max_backlog:
                raise Backlogged(self.backlog, cfg.max_backlog, cfg.retry_after_seconds)
        pipe = redis.pipeline(transaction=True)
        for blob in entries:
            pipe.xadd(self.key, {"e": blob}, maxlen=cfg.max_stream_length, approximate=True)
        if stale:
            pipe.xlen(self.key)
            pipe.xinfo_groups(self.key)
        results = await pipe.execute()
        if stale:
            self._record(int(results[-2]), results[-1])
            return list(results[:-2])
        return list(results)
