"""``skyrec import`` of JSON lines against pandas, in the same run.

The ratings of ``bench_import`` (``user item rating epoch-seconds``, ids as JSON numbers) written as JSON lines,
one object per line, with one more field the mapping does not use. Ratings >= 4 become ``rating`` events, one
Parquet file per hour of event time.

- skyrec, clean file: every block is read by pyarrow's JSON reader (``skyrec.data.importer._jsonl_fast``).
- skyrec, dirty file: the same rows with one line in every 1,000 cut short. Every block holds a bad line, so
  every block is read line by line (``_jsonl_slow``: Python's json, numbers kept as their text) and each bad
  line is quarantined. pyarrow's and pandas' readers both fail the whole dirty file.
- peer: pandas on the clean file (``read_json(lines=True)``, ids as text), the same threshold, UTC times, a
  group-by on the hour and one Parquet file per hour (the writer settings of ``bench_import``).

Each runs in its own process (spawned): wall time, rows/s and peak RSS (interpreter and imports included).

``main("small")``: 1M rows; ``main("reference")``: 4M rows.
Run: ``.venv/bin/python benchmarks/bench_import_jsonl.py [small|reference]``.
"""

from __future__ import annotations

import json
import tempfile
import time
from pathlib import Path
from typing import Any

from bench_import import pandas_layout, run_spawned, skyrec_import

from skyrec.procstat import peak_rss_mb

SCALES = {"small": 1_000_000, "reference": 4_000_000}
T0 = 874_724_710
BAD_EVERY = 1_000


def _write(path: Path, n: int, *, bad_every: int | None = None, seed: int = 3) -> int:
    """The JSON lines file; returns how many lines were cut short."""
    import numpy as np

    rng = np.random.default_rng(seed)
    u, i = rng.integers(1, 200_000, n), rng.integers(1, 30_000, n)
    r, t = rng.integers(1, 6, n), T0 + rng.integers(0, 200 * 86400, n)
    bad = 0
    with open(path, "w") as fh:
        for k in range(n):
            line = f'{{"u": {u[k]}, "i": {i[k]}, "r": {r[k]}, "t": {t[k]}, "src": "web"}}'
            if bad_every and k % bad_every == bad_every // 2:
                line, bad = line[:20], bad + 1
            fh.write(line + "\n")
    return bad


def _pandas(path: str, out: str, q: Any) -> None:
    import pandas as pd

    started = time.perf_counter()
    df = pd.read_json(path, lines=True, dtype={"u": str, "i": str, "r": "float64", "t": "int64"})
    events, _ = pandas_layout(df, out)
    q.put({"seconds": time.perf_counter() - started, "rows_in": len(df), "events": events,
           "peak_rss_mb": peak_rss_mb()})


def _run(target: Any, *args: Any) -> dict[str, Any]:
    result = run_spawned(target, *args)
    result["rows_per_s"] = round(result["rows_in"] / result["seconds"])
    result["seconds"] = round(result["seconds"], 2)
    result["peak_rss_mb"] = round(result["peak_rss_mb"])
    return result


def main(scale: str = "small") -> dict[str, Any]:
    n = SCALES[scale]
    with tempfile.TemporaryDirectory() as tmp:
        clean, dirty = Path(tmp, "clean.jsonl"), Path(tmp, "dirty.jsonl")
        _write(clean, n)
        cut = _write(dirty, n, bad_every=BAD_EVERY)
        fast = _run(skyrec_import, str(clean), str(Path(tmp, "home-clean")), {"format": "jsonl"})
        slow = _run(skyrec_import, str(dirty), str(Path(tmp, "home-dirty")), {"format": "jsonl"})
        peer = _run(_pandas, str(clean), str(Path(tmp, "pandas")))
        size_mb = clean.stat().st_size / 1e6
    assert fast["events"] == peer["events"] and fast["rows_in"] == peer["rows_in"] == n, (fast, peer)
    assert slow["quarantined"] == {"malformed_row": cut} and slow["rows_in"] == n, slow
    return {"rows": n, "file_mb": round(size_mb, 1), "cut_lines": cut, "skyrec_clean": fast, "skyrec_dirty": slow,
            "pandas_clean": peer, "speedup_clean": round(peer["seconds"] / fast["seconds"], 2),
            "speedup_dirty": round(peer["seconds"] / slow["seconds"], 2),
            "memory_ratio_clean": round(fast["peak_rss_mb"] / peer["peak_rss_mb"], 2)}


if __name__ == "__main__":
    from _cli import scale_argument

    print(json.dumps(main(scale_argument(__doc__, SCALES)), indent=1))
