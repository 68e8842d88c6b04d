"""``make bench``: run ``benchmarks/bench_*.py`` (each compares skyrec with a named peer in the same run).

Each benchmark module has ``main(scale) -> dict``; results go to ``.bench/<name>.<scale>.json`` with the machine
description, so BENCHMARKS.md figures can be traced to a run.
"""

from __future__ import annotations

import importlib
import json
import os
import platform
import sys
import time
import traceback
from pathlib import Path

from skyrec.config import project_root


def _machine() -> dict:
    return {"python": sys.version.split()[0], "platform": platform.platform(), "cpus": os.cpu_count(),
            "when": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())}


def run_all(scale: str = "small", only: list[str] | None = None) -> int:
    root = project_root()
    out_dir = root / ".bench"
    out_dir.mkdir(exist_ok=True)
    failed = 0
    scripts = sorted((root / "benchmarks").glob("bench_*.py"))
    if only:
        scripts = [s for s in scripts if s.stem.removeprefix("bench_") in only]
    if not scripts:
        print("no benchmarks found", file=sys.stderr)
        return 1
    for script in scripts:
        name = script.stem.removeprefix("bench_")
        print(f"== {name} ({scale})", flush=True)
        t = time.monotonic()
        try:
            # imported by its file name from benchmarks/ on sys.path, so that child processes a benchmark
            # spawns (multiprocessing "spawn" passes sys.path on) can import it to unpickle its functions
            if str(script.parent) not in sys.path:
                sys.path.insert(0, str(script.parent))
            module = importlib.import_module(script.stem)
            result = module.main(scale)
            status = "ok"
        except Exception:  # noqa: BLE001 - one failing benchmark must not hide the others' figures
            result = {"error": traceback.format_exc()}
            status = "error"
            failed += 1
        record = {"benchmark": name, "scale": scale, "status": status, "seconds": round(time.monotonic() - t, 1),
                  "machine": _machine(), "result": result}
        (out_dir / f"{name}.{scale}.json").write_text(json.dumps(record, indent=1, default=str))
        print(json.dumps(record["result"], indent=1, default=str), flush=True)
    failed += _plan_coefficients(out_dir, scale, [s.stem.removeprefix("bench_") for s in scripts])
    return 1 if failed else 0


def _plan_coefficients(out_dir: Path, scale: str, ran: list[str]) -> int:
    """Fold this run's kernel/precompute/encoding figures into ``.bench/coefficients.json`` (``skyrec plan``)."""
    from skyrec.config import load_config
    from skyrec.plan import update_from_bench

    if not {"kernel", "precompute", "encoding"} & set(ran):
        return 0  # nothing this run measured feeds the plan
    try:
        written = update_from_bench(out_dir, scale, ran, load_config("local").publish.encoding)
    except Exception:  # noqa: BLE001 - reported, and the run fails, but the benchmark records are kept
        print(f"plan coefficients not updated:\n{traceback.format_exc()}", file=sys.stderr)
        return 1
    if written:
        print(f"plan coefficients updated: {written}", flush=True)
    return 0
