"""Small files in the shapes people bring, written by the tests themselves."""

from __future__ import annotations

import datetime as dt
import os
import random
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.parquet as pq

from skyrec.config import Config, load_config

ROOT = Path(__file__).resolve().parents[2]
FILMS = ROOT / "config" / "examples" / "films"
GENRES = ["unknown", "Action", "Adventure", "Animation", "Children's", "Comedy", "Crime", "Documentary", "Drama",
          "Fantasy", "Film-Noir", "Horror", "Musical", "Mystery", "Romance", "Sci-Fi", "Thriller", "War", "Western"]
T0 = 874_965_758  # 1997-09-22, epoch seconds


def films_config(home: Path, overrides: dict[str, Any] | None = None) -> Config:
    """The film example configuration, with everything under ``home``."""
    environ = {**os.environ, "SKYREC_HOME": str(home), "SKYREC_CONFIG_DIR": str(FILMS)}
    return load_config("local", root=ROOT, overrides=overrides, environ=environ)


def local_config(home: Path, overrides: dict[str, Any] | None = None) -> Config:
    environ = {k: v for k, v in os.environ.items() if k != "SKYREC_CONFIG_DIR"}
    return load_config("local", root=ROOT, overrides=overrides, environ={**environ, "SKYREC_HOME": str(home)})


def write_classic(folder: Path, *, users: int = 60, items: int = 80, ratings: int = 3000, days: int = 20,
                  seed: int = 5, bad: bool = True) -> tuple[Path, Path]:
    """u.data (tab-separated user, item, rating, epoch seconds) + u.item (pipe-separated, latin-1, 19 genre flags).

    With ``bad``: one item without a title, one unparseable rating, one row with too few columns."""
    rng = random.Random(seed)
    folder.mkdir(parents=True, exist_ok=True)
    item_lines = []
    for i in range(1, items + 1):
        flags = [0] * len(GENRES)
        for g in rng.sample(range(1, len(GENRES)), 2):
            flags[g] = 1
        if i % 10 == 0:
            flags[GENRES.index("Sci-Fi")] = 1
        title = "Café Crème (1995)" if i == 5 else f"Film {i} (199{i % 10})"
        date = "" if i == 7 else f"{1 + i % 27:02d}-Jan-199{i % 10}"
        item_lines.append("|".join([str(i), title, date, "", f"http://example.org/{i}", *map(str, flags)]))
    if bad:
        item_lines.append("|".join([str(items + 1), "", "01-Jan-1995", "", "http://example.org/x"] + ["0"] * 19))
    (folder / "u.item").write_bytes(("\n".join(item_lines) + "\n").encode("latin-1"))
    rows = [f"{rng.randrange(1, users + 1)}\t{rng.randrange(1, items + 1)}\t{rng.randrange(1, 6)}\t"
            f"{T0 + rng.randrange(0, 86400 * days)}" for _ in range(ratings)]
    if bad:
        rows += ["3\t4\tfive\t874965758", "3\t4\t5"]
    (folder / "u.data").write_text("\n".join(rows) + "\n")
    return folder / "u.data", folder / "u.item"


def write_plays(folder: Path, *, n: int = 2000, seed: int = 6) -> Path:
    """A plays log like the generator's, as CSV: event id, user, item, kind, ISO time, seconds played."""
    rng = random.Random(seed)
    folder.mkdir(parents=True, exist_ok=True)
    start = dt.datetime(2026, 2, 1, tzinfo=dt.UTC)
    lines = ["event_id,user_id,item_id,event_type,event_ts,played_seconds,platform"]
    for k in range(n):
        ts = start + dt.timedelta(seconds=rng.randrange(0, 3 * 86400))
        kind = rng.choice(["play", "play", "complete", "pause"])
        lines.append(f"e{k:06d},u{rng.randrange(50):03d},p{rng.randrange(1, 81):04d},{kind},"
                     f"{ts.isoformat().replace('+00:00', 'Z')},{rng.uniform(5, 3000):.1f},ios")
    (folder / "plays.csv").write_text("\n".join(lines) + "\n")
    return folder / "plays.csv"


def write_clicks(folder: Path, *, n: int = 1500, seed: int = 7) -> Path:
    """A Parquet click log: no durations, epoch milliseconds, kinds spelled the source's way."""
    rng = random.Random(seed)
    folder.mkdir(parents=True, exist_ok=True)
    t0 = 1_767_225_600_000  # 2026-01-01 in ms
    table = pa.table({"visitor": [f"v{rng.randrange(40)}" for _ in range(n)],
                      "sku": [str(rng.randrange(1, 81)) for _ in range(n)],
                      "action": [rng.choice(["Click", "VIEW", "click"]) for _ in range(n)],
                      "ts_ms": pa.array([t0 + rng.randrange(0, 2 * 86_400_000) for _ in range(n)], pa.int64())})
    pq.write_table(table, folder / "clicks.parquet")
    return folder / "clicks.parquet"
