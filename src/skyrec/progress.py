"""Progress of long steps (generation, training, precompute, loading): a rich bar when stderr is a terminal,
otherwise a log line every ~10% so that an Airflow task log shows how far a job has got.

Also the terminal side of long runs (``skyrec run``, ``make demo``): ``StepLines`` prints one line per
step with its state and duration, while ``output_to_file`` sends the libraries' own logs to a file.
Core: no Airflow."""

from __future__ import annotations

import contextlib
import logging
import os
import sys
import time
from collections.abc import Iterable, Iterator
from pathlib import Path
from typing import Any, TextIO, TypeVar

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


# ---- output for people while libraries log: terminal lines vs. log files --------------------------------

@contextlib.contextmanager
def output_to_file(path: Path) -> Iterator[Path]:
    """Send everything this process writes to its stdout and stderr -- library logs, warnings, prints, the
    output of child processes that inherit them -- to ``path`` (appended) until the block ends.

    It works on file descriptors 1 and 2, not on ``sys.stdout``: loggers that captured the stream objects
    at configuration time are redirected too. Write to the terminal meanwhile through ``terminal_stream()``.
    """
    path.parent.mkdir(parents=True, exist_ok=True)
    for stream in (sys.stdout, sys.stderr):
        with contextlib.suppress(Exception):
            stream.flush()
    saved = (os.dup(1), os.dup(2))
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o644)
    try:
        os.dup2(fd, 1)
        os.dup2(fd, 2)
        yield path
    finally:
        for stream in (sys.stdout, sys.stderr):
            with contextlib.suppress(Exception):
                stream.flush()
        os.dup2(saved[0], 1)
        os.dup2(saved[1], 2)
        for f in (fd, *saved):
            os.close(f)


def terminal_stream() -> TextIO:
    """A text stream on what stdout is *now* (normally the terminal) that keeps writing there while
    ``output_to_file`` redirects the process's stdout and stderr."""
    try:
        fd = os.dup(sys.stdout.fileno())
    except (AttributeError, OSError, ValueError):  # no real file descriptor (e.g. captured): write as is
        return sys.stdout
    return os.fdopen(fd, "w", buffering=1, encoding=getattr(sys.stdout, "encoding", None) or "utf-8",
                     errors="replace")


def format_seconds(seconds: float | None) -> str:
    if seconds is None:
        return "-"
    if seconds < 60:
        return f"{seconds:.1f}s"
    minutes, secs = divmod(int(round(seconds)), 60)
    return f"{minutes}m{secs:02d}s" if minutes < 60 else f"{minutes // 60}h{minutes % 60:02d}m{secs:02d}s"


def format_bytes(n_bytes: float) -> str:
    """Bytes in the unit that shows them: "4.8 GB", "12.3 MB", "0.6 kB" (never "0.0 GB")."""
    for unit, scale in (("TB", 1e12), ("GB", 1e9), ("MB", 1e6)):
        if n_bytes >= scale:
            return f"{n_bytes / scale:,.1f} {unit}"
    return f"{n_bytes / 1e3:,.1f} kB"


def format_percent(level: float | None) -> str:
    """A confidence level as people read it: 0.95 -> "95%", 0.975 -> "97.5%"."""
    return "?%" if not isinstance(level, int | float) else f"{level * 100:.4g}%"


_STATE_STYLE = {"success": "green", "failed": "bold red", "up_for_retry": "yellow", "upstream_failed": "red",
                "skipped": "dim", "removed": "dim", "running": "cyan"}


class StepLines:
    """One line per finished step (name, state, duration) on the terminal, indented under its group line.

    On a terminal a transient spinner shows the step running and its elapsed time; elsewhere (CI, a pipe)
    only the finished lines are written, without colours. Library output does not go through here: run
    the work inside ``output_to_file`` and only these lines reach the terminal.
    """

    def __init__(self, stream: TextIO | None = None) -> None:
        from rich.console import Console

        self.console = Console(file=stream or terminal_stream(), highlight=False, soft_wrap=True)
        self._live: Any = None
        self._steps: dict[str, Any] = {}

    @property
    def is_terminal(self) -> bool:
        return bool(self.console.is_terminal)

    def _text(self, text: str, style: str | None = None) -> Any:
        from rich.text import Text

        return Text(text, style=style or "")

    def line(self, text: str, style: str | None = None) -> None:
        """A line of plain text (never parsed as markup)."""
        self.console.print(self._text(text, style))

    def state_line(self, name: str, state: str, seconds: float | None, note: str = "", indent: int = 0,
                   width: int = 28) -> None:
        from rich.text import Text

        line = Text(" " * indent)
        line.append(f"{name:<{max(width - indent, len(name))}}", style="bold" if indent == 0 else "")
        line.append(f"  {state:<10}", style=_STATE_STYLE.get(state, ""))
        line.append(f" {format_seconds(seconds):>8}")
        if note:
            line.append(f"  {note}", style="dim")
        self.console.print(line)

    def block(self, title: str, lines: Iterable[str], indent: int = 4, style: str | None = None) -> None:
        """A titled block of verbatim lines (an error, a log tail), indented."""
        self.line(" " * (indent - 2) + title, style=style)
        for text in lines:
            self.line(" " * indent + text)

    # ---- live steps (terminal only) ------------------------------------------------------------
    def running(self, key: str, description: str) -> None:
        if not self.is_terminal:
            return
        from rich.progress import Progress, SpinnerColumn, TextColumn, TimeElapsedColumn

        if self._live is None:
            # never redirect sys.stdout/sys.stderr into the display: library output must stay in its log file
            self._live = Progress(SpinnerColumn(), TextColumn("{task.description}"), TimeElapsedColumn(),
                                  console=self.console, transient=True, redirect_stdout=False,
                                  redirect_stderr=False)
            self._live.start()
        self._steps[key] = self._live.add_task(description, total=None)

    def done(self, key: str, description: str | None = None) -> None:
        if self._live is None or key not in self._steps:
            return
        task = self._steps.pop(key)
        if description is not None:
            self._live.update(task, description=description)
        self._live.stop_task(task)

    def stop_live(self) -> None:
        if self._live is not None:
            self._live.stop()
            self._live = None
            self._steps.clear()
