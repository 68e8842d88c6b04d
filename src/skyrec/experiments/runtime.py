"""What the API keeps for experiments: the config, the decisions in force (cached), the events stream writer.

No request waits on Redis for assignment: the decisions record (:mod:`skyrec.experiments.control`) is read once
when the first request of the process needs it, then refreshed in the background whenever the cached copy is
older than ``serve.pointer_cache_seconds`` (the cadence of the publication pointers). If Redis cannot be read,
the last record read stays in force.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import logging
import time
from collections.abc import Callable, Mapping
from typing import Any

from redis.exceptions import RedisError

from skyrec.config import Config
from skyrec.experiments.assign import NO_OVERRIDES, Assignment, Overrides, resolve
from skyrec.experiments.config import EventsConfig, ExperimentConfig
from skyrec.experiments.control import overrides_key, overrides_of, parse_record
from skyrec.experiments.stream import StreamWriter, stream_key

log = logging.getLogger("skyrec.serve")


class ExperimentsRuntime:
    def __init__(self, experiments: Mapping[str, ExperimentConfig], events: EventsConfig, key_prefix: str,
                 rails: frozenset[str], ttl: float, redis: Callable[[], Any]) -> None:
        self.experiments = dict(experiments)
        self.events = events
        self.rails = rails
        self.ttl = ttl
        self._redis = redis
        self._key = overrides_key(key_prefix)
        self.writer = StreamWriter(stream_key(key_prefix), events)
        self._with_experiments = frozenset(e.rail for e in self.experiments.values())
        self._plain = {rail: Assignment(None, None, rail, False) for rail in rails}
        self._overrides: Overrides = NO_OVERRIDES
        self._loaded = False
        self._fetched = -float("inf")
        self._task: asyncio.Task[None] | None = None

    @classmethod
    def from_config(cls, config: Config, redis: Callable[[], Any]) -> ExperimentsRuntime:
        return cls(config.experiments, config.events, config.publish.key_prefix, frozenset(config.variants),
                   config.serve.pointer_cache_seconds, redis)

    @property
    def redis(self) -> Any:
        return self._redis()

    async def overrides(self) -> Overrides:
        """The decisions in force; waits for Redis only on the process's first read."""
        if time.monotonic() - self._fetched < self.ttl:
            return self._overrides
        if not self._loaded:
            await self._refresh()
        elif self._task is None or self._task.done():
            self._task = asyncio.get_running_loop().create_task(self._refresh())
        return self._overrides

    async def _refresh(self) -> None:
        self._fetched = time.monotonic()  # a failed read is retried after ttl too, not by every request
        try:
            raw = await self.redis.get(self._key)
        except RedisError as exc:
            log.warning("experiment decisions unreadable: keeping the last ones", extra={"error": type(exc).__name__})
            return
        try:
            self._overrides = overrides_of(parse_record(raw))
        except (ValueError, TypeError, KeyError, AttributeError) as exc:
            log.error("experiment decisions record invalid: keeping the last one", extra={"error": str(exc)[:200]})
            return
        self._loaded = True

    async def assign(self, rail: str, user_id: str, now: dt.datetime | None = None) -> Assignment:
        """The variant to serve for ``rail`` to ``user_id`` (the rail itself when it has no experiment)."""
        if rail not in self._with_experiments:
            return self._plain.get(rail) or Assignment(None, None, rail, False)
        overrides = await self.overrides()
        return resolve(self.experiments, overrides, rail, user_id, now or dt.datetime.now(dt.UTC))

    def assign_nowait(self, rail: str, user_id: str, now: dt.datetime | None = None) -> Assignment:
        """:meth:`assign` for a caller that cannot await: never waits, not even for the process's first read of
        the decisions (until it lands, a few milliseconds after the first request, none are in force)."""
        if rail not in self._with_experiments:
            return self._plain.get(rail) or Assignment(None, None, rail, False)
        if time.monotonic() - self._fetched >= self.ttl and (self._task is None or self._task.done()):
            self._task = asyncio.get_running_loop().create_task(self._refresh())
        return resolve(self.experiments, self._overrides, rail, user_id, now or dt.datetime.now(dt.UTC))
