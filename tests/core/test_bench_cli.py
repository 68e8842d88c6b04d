"""A benchmark script run by hand (``python benchmarks/bench_<name>.py [scale]``) prints its doc for
``--help`` and refuses an unknown scale naming the known ones, exit 2, before any work -- not a traceback, not
a run at a size nobody asked for."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

import pytest

BENCHMARKS = Path(__file__).resolve().parents[2] / "benchmarks"
SCRIPTS = ("dask", "encoding", "import", "ingest", "kernel", "redis_load", "removal", "train")


@pytest.mark.parametrize("name", SCRIPTS)
def test_a_benchmark_script_explains_itself_and_refuses_an_unknown_scale(name: str) -> None:
    script = str(BENCHMARKS / f"bench_{name}.py")
    shown = subprocess.run([sys.executable, script, "--help"], capture_output=True, text=True, timeout=120)
    assert shown.returncode == 0, shown.stderr
    assert shown.stdout.startswith("usage:") and "small" in shown.stdout
    refused = subprocess.run([sys.executable, script, "huge"], capture_output=True, text=True, timeout=120)
    assert refused.returncode == 2 and refused.stdout == ""
    assert "invalid choice: 'huge'" in refused.stderr and "'small'" in refused.stderr
