"""Progress of long steps (generation, training, precompute, loading): a rich bar when stderr is a terminal,
otherwise a log line every ~10% so that an Airflow task log shows how far a job has got. Core: no Airflow."""

from __future__ import annotations

import contextlib
import logging
import sys
import time
from collections.abc import Iterable, Iterator
from typing import TypeVar

T = TypeVar("T")
log = logging.getLogger("skyrec.progress")


def interactive() -> bool:
    return sys.stderr.isatty()


class _Lines:
    """Non-interactive progress: one line at start, every ~10% (at most every 5 s) and at the end."""

    def __init__(self, description: str, total: float | None, unit: str) -> None:
        self.description, self.total, self.unit = description, total, unit
        self.done = 0.0
        self.started = self.last = time.monotonic()
        self.next_fraction = 0.1

    def advance(self, n: float = 1) -> None:
        self.done += n
        now = time.monotonic()
        if self.total and (self.done / self.total >= self.next_fraction) and now - self.last >= 5.0:
            self.last = now
            self.next_fraction = min(1.0, self.done / self.total + 0.1)
            self._say(now)

    def _say(self, now: float) -> None:
        rate = self.done / max(now - self.started, 1e-9)
        of = f"/{self.total:g}" if self.total else ""
        print(f"[progress] {self.description}: {self.done:g}{of} {self.unit} ({rate:,.0f} {self.unit}/s, "
              f"{now - self.started:.1f}s)", file=sys.stderr, flush=True)

    def close(self) -> None:
        self._say(time.monotonic())


@contextlib.contextmanager
def progress(description: str, total: float | None = None, unit: str = "items") -> Iterator[_Lines | object]:
    """``with progress("scoring shards", total=n, unit="shards") as bar: bar.advance()``."""
    if not interactive():
        bar = _Lines(description, total, unit)
        try:
            yield bar
        finally:
            bar.close()
        return
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn

    with Progress(TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(), TimeElapsedColumn(),
                  transient=False) as rich_bar:
        task = rich_bar.add_task(description, total=total)

        class _Rich:
            def advance(self, n: float = 1) -> None:
                rich_bar.advance(task, n)

        yield _Rich()


def track(items: Iterable[T], description: str, total: int | None = None, unit: str = "items") -> Iterator[T]:
    with progress(description, total=total, unit=unit) as bar:
        for item in items:
            yield item
            bar.advance(1)  # type: ignore[attr-defined]
