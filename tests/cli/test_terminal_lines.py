"""The terminal side of long runs (``skyrec.progress``): library output goes to a file, the lines for people
keep reaching the terminal, and off a terminal they are plain text."""

from __future__ import annotations

import io
import subprocess
import sys
from pathlib import Path

from skyrec.progress import StepLines, format_seconds

SCRIPT = """
import subprocess, sys
from pathlib import Path
from skyrec.progress import output_to_file, terminal_stream

log = Path(sys.argv[1])
held = sys.stdout  # like a logger that kept the stream object it was configured with
term = terminal_stream()
with output_to_file(log) as path:
    assert path == log
    print("library print")
    held.write("held stream\\n")
    print("library warning", file=sys.stderr)
    subprocess.run([sys.executable, "-c", "import sys; print('child out'); print('child err', file=sys.stderr)"],
                   check=True)
    term.write("for people\\n")
    term.flush()
print("after", flush=True)
try:
    with output_to_file(log):
        print("second block")
        raise RuntimeError("boom")
except RuntimeError:
    print("restored after an error", flush=True)
"""


def test_output_to_file_takes_everything_the_process_writes_and_gives_the_terminal_back(tmp_path: Path) -> None:
    log = tmp_path / "logs" / "run.log"
    log.parent.mkdir()
    log.write_text("earlier run\n")
    proc = subprocess.run([sys.executable, "-c", SCRIPT, str(log)], capture_output=True, text=True, timeout=60)
    assert proc.returncode == 0, proc.stderr
    # only what was meant for people; stdout is back after each block, also after an error
    assert proc.stdout == "for people\nafter\nrestored after an error\n"
    assert proc.stderr == ""
    logged = log.read_text()
    assert logged.startswith("earlier run\n")  # appended
    for text in ("library print", "held stream", "library warning", "child out", "child err", "second block"):
        assert text in logged
    assert "for people" not in logged and "after" not in logged


def test_step_lines_off_a_terminal_are_plain_aligned_text() -> None:
    buf = io.StringIO()
    lines = StepLines(buf)
    assert not lines.is_terminal
    lines.running("x", "never shown off a terminal")
    lines.state_line("some_dag", "failed", 75.0, note="logical date 2026-03-01T10:00:00+00:00", width=20)
    lines.state_line("a_task", "success", 1.25, indent=2, width=20)
    lines.block("a_task: error", ["[bold]not markup[/bold]"])
    text = buf.getvalue()
    assert "\x1b[" not in text and "never shown" not in text
    assert text.splitlines() == [
        "some_dag              failed        1m15s  logical date 2026-03-01T10:00:00+00:00",
        "  a_task              success        1.2s",
        "  a_task: error",
        "    [bold]not markup[/bold]",
    ]


def test_durations_read_as_people_write_them() -> None:
    assert [format_seconds(s) for s in (None, 0.04, 59.94, 61, 3725)] == ["-", "0.0s", "59.9s", "1m01s", "1h02m05s"]
