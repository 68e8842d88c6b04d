"""``skyrec import`` of an items file against the converter a user would write with pandas, in the same run.

An items file at the catalogue's scale (the users' ~200k programmes): CSV with id, title, brand, brand title,
series (numbered within its brand, as exports often do), series title, genres (``|``-separated), release
date, availability window and duration. Both turn it into the source layout of docs/data.md: one JSON
object per episode, availability window, brand and series, each written whole (a temporary file, then a
rename), so the two write the same number of objects.

- skyrec: ``skyrec.data.importer.import_items`` (pyarrow's streaming CSV reader; dates, durations and windows
  checked, bad rows quarantined; ids read as three namespaces; idempotence state).
- peer: pandas (``pd.read_csv``, every column as text), one pass over the rows building the same records
  (series keyed by brand and series), ``json.dumps`` and the same whole-file write. It checks nothing.

Each runs in its own process (spawned); figures: wall time, items/s, peak RSS, objects written (must be
equal). Two sizes in one run show whether the time grows in proportion to the rows (it did not: a default
list built per row made the import quadratic, 16 s for 20k items and 50 s for 40k).

``main("small")``: 20k and 60k items; ``main("reference")``: 20k and 200k.
Run: ``.venv/bin/python benchmarks/bench_import_items.py [small|reference]``.
"""

from __future__ import annotations

import json
import os
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from bench_import import run_spawned

from skyrec.procstat import peak_rss_mb

ROOT = Path(__file__).resolve().parents[1]
SCALES = {"small": (20_000, 60_000), "reference": (20_000, 200_000)}
COLUMNS = ("id", "title", "brand", "brand_title", "series", "series_title", "genres", "release_date",
           "available_from", "available_until", "duration")
GENRES = ("Comedy", "Drama", "News", "Music", "Documentary", "Factual", "Sport", "Children's")


def write_items(path: Path, n: int, seed: int = 4) -> None:
    """``n`` episodes of ``n / 20`` brands, series 1-5 within each brand."""
    import numpy as np

    rng = np.random.default_rng(seed)
    brands = rng.integers(0, max(1, n // 20), n)
    series = rng.integers(1, 6, n)
    day = rng.integers(0, 700, n)
    dur = rng.integers(60, 7200, n)
    g = rng.integers(0, len(GENRES), (n, 2))
    with open(path, "w", encoding="utf-8") as fh:
        fh.write(",".join(COLUMNS) + "\n")
        for i in range(n):
            release = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(1.7e9 + 86400 * int(day[i])))
            until = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(1.7e9 + 86400 * (int(day[i]) + 400)))
            fh.write(f"e{i},Episode {i},b{brands[i]},Brand {brands[i]},{series[i]},Series {series[i]},"
                     f"{GENRES[g[i, 0]]}|{GENRES[g[i, 1]]},{release},{release},{until},{dur[i]}\n")


def skyrec_import(path: str, home: str, q: Any) -> None:
    sys.path.insert(0, str(ROOT / "src"))
    from skyrec.config import load_config
    from skyrec.data.importer import import_items

    environ = {**os.environ, "SKYREC_HOME": home}
    environ.pop("SKYREC_CONFIG_DIR", None)
    cfg = load_config("local", root=ROOT, environ=environ,
                      overrides={"ingest": {"files": {"items": {"columns": {c: c for c in COLUMNS}}}}})
    started = time.perf_counter()
    report = import_items(cfg, path)
    seconds = time.perf_counter() - started
    w = report.written
    q.put({"seconds": seconds, "rows_in": report.rows_in, "imported": report.imported,
           "objects": w["items"] * 2 + w["brands"] + w["series"], "quarantined": report.quarantined,
           "peak_rss_mb": peak_rss_mb()})


def _put(root: str, rel: str, record: dict[str, Any]) -> None:
    full = f"{root}/{rel}"
    os.makedirs(os.path.dirname(full), exist_ok=True)
    tmp = f"{os.path.dirname(full)}/.{os.path.basename(full)}.tmp"
    with open(tmp, "wb") as fh:
        fh.write(json.dumps(record, separators=(",", ":"), sort_keys=True).encode())
    os.replace(tmp, full)


def _pandas(path: str, out: str, q: Any) -> None:
    from urllib.parse import quote

    import pandas as pd

    started = time.perf_counter()
    df = pd.read_csv(path, dtype=str, keep_default_na=False)
    brands: dict[str, dict[str, Any]] = {}
    series: dict[tuple[str, str], dict[str, Any]] = {}
    n = 0
    for r in df.itertuples(index=False):
        sid = f"{r.brand}:{r.series}"
        brands.setdefault(r.brand, {"id": r.brand, "type": "brand", "title": r.brand_title})
        series.setdefault((r.brand, r.series), {"id": sid, "type": "series", "brand_id": r.brand,
                                                "title": r.series_title})
        _put(out, f"episodes/{quote(r.id, safe='')}-0.json", {
            "id": r.id, "type": "episode", "title": r.title, "parent": {"id": sid, "type": "series"},
            "genres": [g for g in r.genres.split("|") if g], "release_date": r.release_date,
            "duration": int(r.duration)})
        _put(out, f"availability/{quote(r.id, safe='')}-0.json", {
            "id": r.id, "type": "availability", "available_from": r.available_from,
            "available_until": r.available_until})
        n += 2
    for b in brands.values():
        _put(out, f"programmes/brand/{quote(b['id'], safe='')}-0.json", b)
    for s in series.values():
        _put(out, f"programmes/series/{quote(s['id'], safe='')}-0.json", s)
    q.put({"seconds": time.perf_counter() - started, "rows_in": len(df), "imported": len(df),
           "objects": n + len(brands) + len(series), "peak_rss_mb": peak_rss_mb()})


def main(scale: str = "small") -> dict[str, Any]:
    out: dict[str, Any] = {"sizes": []}
    for n in SCALES[scale]:
        with tempfile.TemporaryDirectory() as tmp:
            path = Path(tmp, "items.csv")
            write_items(path, n)
            skyrec = run_spawned(skyrec_import, str(path), str(Path(tmp, "home")))
            peer = run_spawned(_pandas, str(path), str(Path(tmp, "pandas")))
        assert skyrec["imported"] == n and skyrec["objects"] == peer["objects"], (skyrec, peer)
        for r in (skyrec, peer):
            r["items_per_s"] = round(r["rows_in"] / r["seconds"])
            r["seconds"] = round(r["seconds"], 2)
            r["peak_rss_mb"] = round(r["peak_rss_mb"])
        out["sizes"].append({"items": n, "skyrec": skyrec, "pandas": peer,
                             "speedup": round(peer["seconds"] / skyrec["seconds"], 2)})
    small, large = out["sizes"]
    # 1.0 when the time grows in proportion to the rows; the quadratic import gave 1.5 from 20k to 40k
    out["growth"] = {who: round((large[who]["seconds"] / small[who]["seconds"]) / (large["items"] / small["items"]),
                                2) for who in ("skyrec", "pandas")}
    return out


if __name__ == "__main__":
    from _cli import scale_argument

    print(json.dumps(main(scale_argument(__doc__, SCALES)), indent=1))
