"""``skyrec import`` against pandas, in the same run.

A ratings file in the classic research layout (tab-separated ``user item rating epoch-seconds``, no header)
with N rows over ~200 days (2 at the "busy" scale) is turned into the source layout: ratings >= 4 become
``rating`` events, one Parquet file per hour of event time (schema RAW_ACTIVITY without event_id/platform).

- skyrec: ``skyrec.data.importer.import_interactions`` (pyarrow's streaming CSV reader, vectorised checks,
  quarantine, idempotence state).
- peer: pandas reading the same file (``pd.read_csv``, C engine), the same threshold, UTC timestamps, a
  group-by on the hour and one Parquet file per hour (pyarrow writer, same settings).

Each runs in its own process (spawned); figures: wall time, rows/s, peak RSS of the process (ru_maxrss,
including the interpreter and its imports), and the rows each wrote (must be equal).

``main("small")``: 1M rows; ``main("reference")``: 10M rows (the issue's figure); ``main("large")``: 40M rows
(memory as the file grows: skyrec holds a batch and an hour, pandas the whole file); ``main("busy")``: 20M rows
over 2 days (8M kept events a day: memory as a day's volume grows).
Run: ``.venv/bin/python benchmarks/bench_import.py [small|reference|large|busy]``.
"""

from __future__ import annotations

import json
import multiprocessing as mp
import os
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from skyrec.procstat import peak_rss_mb

ROOT = Path(__file__).resolve().parents[1]
SCALES = {"small": 1_000_000, "reference": 10_000_000, "large": 40_000_000, "busy": 20_000_000}
DAYS = {"busy": 2}  # the file's span in days (default 200): "busy" is 8M kept events a day
T0 = 874_724_710


def _write_ratings(path: Path, n: int, seed: int = 3, days: int = 200) -> None:
    import numpy as np
    import pyarrow as pa
    import pyarrow.csv as pcsv

    rng = np.random.default_rng(seed)
    chunk = 1_000_000
    with open(path, "wb") as fh:
        for start in range(0, n, chunk):
            m = min(chunk, n - start)
            t = pa.table({"u": rng.integers(1, 200_000, m), "i": rng.integers(1, 30_000, m),
                          "r": rng.integers(1, 6, m), "t": T0 + rng.integers(0, days * 86400, m)})
            buf = pa.BufferOutputStream()
            pcsv.write_csv(t, buf, pcsv.WriteOptions(include_header=False, delimiter="\t"))
            fh.write(buf.getvalue().to_pybytes())


TSV = {"format": "tsv", "header": False, "column_names": ["u", "i", "r", "t"]}  # this benchmark's file


def skyrec_import(path: str, home: str, layout: dict[str, Any], q: Any) -> None:
    """``import_interactions`` of a ratings file (columns u, i, r, t; ``layout``: how the file is written)
    into a fresh SKYREC_HOME: ratings >= 4 become ``rating`` events."""
    sys.path.insert(0, str(ROOT / "src"))
    from skyrec.config import load_config
    from skyrec.data.importer import import_interactions

    environ = {**os.environ, "SKYREC_HOME": home}
    environ.pop("SKYREC_CONFIG_DIR", None)
    cfg = load_config("local", root=ROOT, environ=environ, overrides={"ingest": {
        "activity": {"events": {"rating": {"duration": "none"}}},
        "files": {"interactions": {**layout, "columns": {"user": "u", "item": "i", "timestamp": "t", "value": "r"},
                                   "value": "rating", "ratings": {"threshold": 4, "kind": "rating"}}}}})
    started = time.perf_counter()
    report = import_interactions(cfg, path)
    seconds = time.perf_counter() - started
    q.put({"seconds": seconds, "rows_in": report.rows_in, "events": report.written["events"],
           "hours": report.written["hours"], "quarantined": report.quarantined, "peak_rss_mb": peak_rss_mb()})


def pandas_layout(df: Any, out: str) -> tuple[int, int]:
    """The peer's conversion of ratings read into ``df`` (columns u, i, r, t): ratings >= 4, UTC times, one
    Parquet file per hour (the writer settings skyrec uses). Returns (events, hours)."""
    import io

    import pandas as pd
    import pyarrow as pa
    import pyarrow.parquet as pq

    df = df[df["r"] >= 4]
    df = pd.DataFrame({"user_id": df["u"].astype(str), "item_id": df["i"].astype(str), "event_type": "rating",
                       "event_ts": pd.to_datetime(df["t"], unit="s", utc=True).astype("datetime64[us, UTC]"),
                       "played_seconds": pd.Series(float("nan"), index=df.index, dtype="float32")})
    df = df.sort_values("event_ts", kind="stable")
    schema = pa.schema([("user_id", pa.string()), ("item_id", pa.string()), ("event_type", pa.string()),
                        ("event_ts", pa.timestamp("us", tz="UTC")), ("played_seconds", pa.float32())])
    hours = 0
    for hour, part in df.groupby(df["event_ts"].dt.floor("h"), sort=True):
        folder = Path(out, f"date={hour:%Y-%m-%d}", f"hour={hour:%H}")
        folder.mkdir(parents=True, exist_ok=True)
        buf = io.BytesIO()
        pq.write_table(pa.Table.from_pandas(part, schema=schema, preserve_index=False), buf, compression="zstd",
                       compression_level=3, use_dictionary=True, write_statistics=True, row_group_size=1 << 20)
        (folder / "part.parquet").write_bytes(buf.getvalue())
        hours += 1
    return len(df), hours


def _pandas(path: str, out: str, q: Any) -> None:
    import pandas as pd

    started = time.perf_counter()
    df = pd.read_csv(path, sep="\t", header=None, names=["u", "i", "r", "t"],
                     dtype={"u": str, "i": str, "r": "float64", "t": "int64"})
    events, hours = pandas_layout(df, out)
    q.put({"seconds": time.perf_counter() - started, "rows_in": len(df), "events": events, "hours": hours,
           "peak_rss_mb": peak_rss_mb()})


def run_spawned(target: Any, *args: Any) -> dict[str, Any]:
    """``target(*args, queue)`` in a spawned process: what it put on the queue."""
    ctx = mp.get_context("spawn")
    q = ctx.Queue()
    p = ctx.Process(target=target, args=(*args, q))
    p.start()
    result = q.get()
    p.join()
    return result


def main(scale: str = "small") -> dict[str, Any]:
    n = SCALES[scale]
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp, "ratings.tsv")
        t = time.perf_counter()
        _write_ratings(path, n, days=DAYS.get(scale, 200))
        made = time.perf_counter() - t
        skyrec = run_spawned(skyrec_import, str(path), str(Path(tmp, "home")), TSV)
        peer = run_spawned(_pandas, str(path), str(Path(tmp, "pandas")))
        size_mb = path.stat().st_size / 1e6
    for r in (skyrec, peer):
        r["rows_per_s"] = round(r["rows_in"] / r["seconds"])
        r["seconds"] = round(r["seconds"], 2)
        r["peak_rss_mb"] = round(r["peak_rss_mb"])
    assert skyrec["events"] == peer["events"] and skyrec["hours"] == peer["hours"], (skyrec, peer)
    return {"rows": n, "file_mb": round(size_mb, 1), "generate_seconds": round(made, 1), "skyrec": skyrec,
            "pandas": peer, "speedup": round(peer["seconds"] / skyrec["seconds"], 2),
            "memory_ratio": round(skyrec["peak_rss_mb"] / peer["peak_rss_mb"], 2)}


if __name__ == "__main__":
    from _cli import scale_argument

    print(json.dumps(main(scale_argument(__doc__, SCALES)), indent=1))
