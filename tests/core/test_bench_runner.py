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


def test_every_shipped_benchmark_takes_the_runners_scale_and_runs_nothing_on_import(monkeypatch) -> None:
    """``make bench`` imports each ``benchmarks/bench_*.py`` and calls ``main(scale)`` with ``small`` or
    ``reference``: a script that works on import or reads its own argv there, or whose ``main`` takes
    something else first, fails under the runner (three did, seen by running ``make bench``)."""
    import importlib
    import inspect
    import time

    root = Path(__file__).resolve().parents[2]
    monkeypatch.setattr(sys, "path", [str(root / "benchmarks"), *sys.path])
    monkeypatch.setattr(sys, "argv", ["skyrec", "bench"])  # what the runner's process has
    scripts = sorted((root / "benchmarks").glob("bench_*.py"))
    assert len(scripts) >= 10
    for script in scripts:
        monkeypatch.delitem(sys.modules, script.stem, raising=False)
        started = time.monotonic()
        module = importlib.import_module(script.stem)
        assert time.monotonic() - started < 20, f"{script.name}: importing it ran something"
        params = list(inspect.signature(module.main).parameters.values())
        assert params and params[0].name == "scale", f"{script.name}: main's first parameter must be scale"
        assert all(p.default is not inspect.Parameter.empty for p in params[1:]), script.name
