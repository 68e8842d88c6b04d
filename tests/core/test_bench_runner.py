"""The benchmark runner behind ``make bench``: every script runs, records its result or its error, and a
benchmark may spawn child processes that import it (multiprocessing "spawn" pickles functions by module)."""

from __future__ import annotations

import json
import sys
from pathlib import Path

import pytest

from skyrec.bench import run_all

SPAWNING = '''
import multiprocessing as mp


def _child(q):
    q.put(6 * 7)


def main(scale):
    ctx = mp.get_context("spawn")
    q = ctx.Queue()
    p = ctx.Process(target=_child, args=(q,))
    p.start()
    value = q.get(timeout=60)
    p.join()
    return {"scale": scale, "from_child": value}
'''


def test_runner_records_results_and_errors_and_children_can_import_the_benchmark(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    (tmp_path / "benchmarks").mkdir()
    (tmp_path / "benchmarks" / "bench_spawnchild.py").write_text(SPAWNING)
    (tmp_path / "benchmarks" / "bench_broken.py").write_text("def main(scale):\n    raise ValueError('no data')\n")
    monkeypatch.setenv("SKYREC_PROJECT_ROOT", str(tmp_path))
    monkeypatch.setattr(sys, "path", list(sys.path))  # the runner puts benchmarks/ on it: restored afterwards
    for name in ("bench_spawnchild", "bench_broken"):
        monkeypatch.delitem(sys.modules, name, raising=False)
    assert run_all("small") == 1  # one benchmark failed: the run says so
    ok = json.loads((tmp_path / ".bench" / "spawnchild.small.json").read_text())
    assert ok["status"] == "ok" and ok["result"] == {"scale": "small", "from_child": 42}
    bad = json.loads((tmp_path / ".bench" / "broken.small.json").read_text())
    assert bad["status"] == "error" and "ValueError: no data" in bad["result"]["error"]
    assert run_all("small", only=["spawnchild"]) == 0
