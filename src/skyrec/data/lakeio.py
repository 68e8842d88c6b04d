"""Small helpers to read/write Parquet through the lake with fixed writer settings (same table, same bytes)."""

from __future__ import annotations

from typing import Any

import pyarrow as pa
import pyarrow.parquet as pq

from skyrec.storage import Lake, Manifest, Stage

PARQUET_OPTIONS: dict[str, Any] = {"compression": "zstd", "compression_level": 3, "use_dictionary": True,
                                   "write_statistics": True}
ROW_GROUP = 1 << 20


def write_parquet(stage: Stage, name: str, table: pa.Table) -> int:
    """Write ``table`` as ``name`` in the stage and register it (with its row count)."""
    full = stage.path(name)
    stage.fs.makedirs(full.rsplit("/", 1)[0], exist_ok=True)
    with stage.fs.open(full, "wb") as fh:
        pq.write_table(table, fh, row_group_size=ROW_GROUP, **PARQUET_OPTIONS)
    stage.add(name, rows=table.num_rows)
    return table.num_rows


def parquet_writer(fh: Any, schema: pa.Schema) -> pq.ParquetWriter:
    return pq.ParquetWriter(fh, schema, **PARQUET_OPTIONS)


def read_parquet(lake: Lake, manifest: Manifest, name: str, columns: list[str] | None = None) -> pa.Table:
    """Read one file of a committed output (found through its manifest)."""
    with lake.fs.open(file_url(lake, manifest, name), "rb") as fh:
        return pq.read_table(fh, columns=columns)


def file_url(lake: Lake, manifest: Manifest, name: str) -> str:
    """Full path of the manifest's file ``name`` (relative to the attempt folder, sub-folders allowed)."""
    for f in manifest.files:
        if f.path == name or f.path.endswith("/" + name):
            return lake.abspath(f"{manifest.path}/{f.path}")
    raise KeyError(f"{manifest.path}: no file {name!r} in manifest")


def parquet_files(manifest: Manifest, prefix: str = "") -> list[str]:
    """Names (relative to the output) of the data Parquet files of a manifest, optionally under ``prefix``."""
    out = []
    for f in manifest.files:
        name = f.path.split("/", 2)[-1] if f.path.startswith("_attempts/") else f.path
        if name.endswith(".parquet") and name.startswith(prefix) and not name.startswith("_quarantine/"):
            out.append(f.path)
    return sorted(out, key=lambda p: p.split("/", 2)[-1])
