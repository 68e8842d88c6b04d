"""``skyrec import``: a user's own files -> the source layout the ingest jobs read (docs/data.md).

Two inputs, each optional, each described by a mapping (``ingest.files`` in config, a ``--mapping`` file,
``--set`` flags):

- **interactions** (CSV, TSV, Parquet or JSON lines): user, item, timestamp, optionally an event kind and a
  value (a rating, a duration in seconds or a count) -> hourly activity Parquet files (schema
  ``RAW_ACTIVITY``) under ``{source}/{activity_prefix}/date=YYYY-MM-DD/hour=HH/``. A rating at or above
  ``ratings.threshold`` becomes an event of kind ``ratings.kind`` (weight ``training.weighting[kind]``); lower
  ratings are filtered and counted. A count stands for that many events (at most ``max_count``). Kinds
  without a duration (clicks, views, ratings) are written with a null ``played_seconds``.
- **items** (CSV, Parquet or JSON lines): id, title, optional brand/series/masterbrand, genres and formats
  (a list, a separated text, or 0/1 flag columns named after the genre), dates, duration, availability ->
  metadata JSON objects (brand, series, episode, availability records) under ``{source}/{metadata_prefix}/``.
  An item without a brand is its own brand (id and title of the item), so the brand cap never groups
  unbranded items.

Files are read in streaming batches with pyarrow's readers (every mapped column as text, converted here),
never per row in Python on the happy path. An interactions file's kept events wait on local disk by hour of
event time (``_HourSpill``) until its hourly files are written, an hour at a time: memory does not grow with
the file.

Bad input: a file the mapping cannot read (a mapped column that is not there, a column whose values
mostly do not convert -- a wrong mapping) raises ``ImportFailed`` naming the file, the column and the first
offending row. Otherwise bad rows are quarantined with their reason and row number under
``{source}/_imports/<key>/quarantine/<reason>.jsonl`` and counted; the invariant ``rows in = imported +
quarantined + filtered`` holds for every file (checked; a broken sum is a bug and fails the import). An empty
file, a binary file and a file without a single data row are bad input too: an import of nothing is a mistake.
Event times later than the import's time (plus ``ingest.activity.future_tolerance_minutes``) or before
``ingest.activity.earliest_event`` (1990 by default) are quarantined (``future_ts``, ``too_old``): one such row would otherwise stretch the
activity range a backfill has to cover to centuries. Values with bytes that are not valid in a declared UTF-8
encoding are quarantined with their row (``malformed_row``, the text kept with replacement characters).

Idempotent and resumable: each input file has a stable key (its role and absolute path); the output files
are named by that key and written whole (temporary name, then rename), with deterministic content (rows in
time order, fixed Parquet settings). A state record ``{source}/_imports/<key>.json`` is written last, with
the digest of the file's bytes and of the mapping: re-running on the same file and mapping changes nothing;
re-running after a crash writes the same bytes again; a changed file replaces this key's earlier output
(hours or items that disappeared are removed or withdrawn).
"""

from __future__ import annotations

import codecs
import datetime as dt
import hashlib
import json
import os
import re
import time
import urllib.parse
from collections import Counter
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from skyrec.data.schemas import RAW_ACTIVITY, TS

IMPORTS_DIR = "_imports"
BLOCK_BYTES = 16 << 20  # JSON lines read block: the unit of streaming
#: CSV read block. pyarrow's streaming CSV reader reads blocks ahead in the background, up to about 32 of them
#: (measured on a 960 MB file: 777 MB peak with 16 MB blocks, 307 MB with 4 MB, at the same speed), so the
#: block size sets most of an import's memory
CSV_BLOCK_BYTES = 4 << 20
MAPPING_ERROR_SHARE = 0.5  # a column failing to convert for more than this share of a batch is a wrong mapping
INTERACTION_FIELDS = ("user", "item", "timestamp", "kind", "value", "event_id", "platform")
ITEM_FIELDS = ("id", "title", "brand", "brand_title", "series", "series_title", "masterbrand", "genres", "formats",
               "release_date", "duration", "available_from", "available_until", "updated")
DEFAULT_COLUMNS = {"interactions": {"user": "user_id", "item": "item_id", "timestamp": "timestamp"},
                   "items": {"id": "id", "title": "title"}}
REQUIRED = {"interactions": ("user", "item", "timestamp"), "items": ("id", "title")}
TAB_OR_COMMA = {"tsv": "\t", "csv": ","}  # the delimiter when the mapping names none
#: how an items file becomes source records; a file imported under an earlier layout is imported again (2: a
#: file's brand, series and item ids read as three namespaces, ``_Programmes``)
ITEMS_LAYOUT = 2
OBJECT_STORE_CONCURRENCY = 64  # the items import's object writes in flight to S3
TEXT_SNIFF_BYTES = 64 << 10  # the head of a text file checked for NUL bytes (a binary file is not CSV/JSON)


class ImportFailed(ValueError):
    """A file the mapping cannot read: the message names the file, the column and the first offending row."""


class SpillFailed(RuntimeError):
    """The import's working space on local disk (``$TMPDIR``) refused a write or a read: a full or unwritable
    disk, not the file's fault and not the source's."""


@dataclass
class FileReport:
    role: str
    path: str
    key: str
    rows_in: int = 0
    imported: int = 0
    quarantined: dict[str, int] = field(default_factory=dict)
    filtered: dict[str, int] = field(default_factory=dict)
    written: dict[str, Any] = field(default_factory=dict)
    noop: bool = False
    seconds: float = 0.0
    notes: list[str] = field(default_factory=list)

    def invariant(self) -> dict[str, Any]:
        from skyrec.gates import ingest_invariant

        return ingest_invariant("rows", records_in=self.rows_in, committed=self.imported,
                                quarantined=self.quarantined, filtered=self.filtered)

    def as_dict(self) -> dict[str, Any]:
        return {"role": self.role, "file": self.path, "key": self.key, "noop": self.noop, "rows_in": self.rows_in,
                "imported": self.imported, "quarantined": dict(sorted(self.quarantined.items())),
                "filtered": dict(sorted(self.filtered.items())), "written": self.written,
                "seconds": round(self.seconds, 3), "notes": self.notes}


# ---- reading ------------------------------------------------------------------------------------------------

def file_format(path: str, spec: Any) -> str:
    if spec.format != "auto":
        return str(spec.format)
    ext = path.lower().rsplit(".", 1)[-1] if "." in os.path.basename(path) else ""
    return {"csv": "csv", "tsv": "tsv", "tab": "tsv", "parquet": "parquet", "pq": "parquet", "jsonl": "jsonl",
            "ndjson": "jsonl", "json": "jsonl"}.get(ext, "csv")


def _columns(role: str, spec: Any) -> dict[str, str]:
    """skyrec field -> the file's column, defaults filled in, unknown fields refused."""
    fields = INTERACTION_FIELDS if role == "interactions" else ITEM_FIELDS
    unknown = sorted(set(spec.columns) - set(fields))
    if unknown:
        raise ImportFailed(f"ingest.files.{role}.columns: unknown field(s) {unknown} (fields: {list(fields)})")
    cols = {**DEFAULT_COLUMNS[role], **spec.columns}
    return {k: v for k, v in cols.items() if v}


@dataclass
class _Batch:
    table: pa.Table
    first_row: int  # 1-based data row number of the batch's first row
    # rows holding bytes that are not valid UTF-8 (their values repaired with U+FFFD): row index -> the columns
    undecodable: dict[int, list[str]] = field(default_factory=dict)
    # each row's 1-based data row number when rows were skipped before or among them (malformed CSV lines)
    numbers: np.ndarray | None = None
    # rows with a NUL character in a value: row index -> the columns (set by ``read_batches``)
    nul: dict[int, list[str]] = field(default_factory=dict)

    @property
    def rows(self) -> np.ndarray:
        """The 1-based data row number of each row of the batch, as the file counts them."""
        if self.numbers is not None:
            return self.numbers
        return np.arange(self.first_row, self.first_row + self.table.num_rows)

    def undecodable_groups(self, encoding: str) -> Iterator[tuple[np.ndarray, str]]:
        """(row mask, message) per set of columns with invalid bytes, then per set holding a NUL character:
        quarantined as ``malformed_row``."""
        for rows, why in ((self.undecodable, f"hold bytes that are not valid {encoding} (kept with replacement "
                           "characters; is the file in another encoding, e.g. latin1? set encoding in the mapping)"),
                          (self.nul, "hold a NUL character (\\x00), which no id, title or name carries: a corrupt "
                           "row? (kept as read)")):
            groups: dict[tuple[str, ...], list[int]] = {}
            for i, cols in sorted(rows.items()):
                groups.setdefault(tuple(cols), []).append(i)
            for names, idx in groups.items():
                mask = np.zeros(self.table.num_rows, dtype=bool)
                mask[idx] = True
                yield mask, f"column(s) {list(names)} {why}"


def _kept_row_numbers(kept_before: int, n: int, skipped: list[int]) -> np.ndarray:
    """The data row numbers of kept rows ``kept_before + 1 .. kept_before + n`` of a file whose rows
    ``skipped`` (1-based data row numbers) were not kept: the t-th number not skipped is t plus the skipped
    numbers below it. A skip is reported before the batch holding the rows after it is read, so every skip
    that matters is known here."""
    t = np.arange(kept_before + 1, kept_before + n + 1, dtype=np.int64)
    if not skipped:
        return t
    s = np.unique(np.asarray(skipped, dtype=np.int64))
    free_below = s - np.arange(1, len(s) + 1)  # kept numbers below each skipped one
    return t + np.searchsorted(free_below, t, side="left")


def _is_utf8(encoding: str) -> bool:
    return encoding.lower().replace("-", "").replace("_", "") in ("utf8", "utf8sig")


def _repair_utf8(table: pa.Table) -> tuple[pa.Table, dict[int, list[str]]]:
    """Check the text columns of a batch read without UTF-8 validation; replace invalid values with their
    text decoded with U+FFFD, and say which rows and columns held them (the valid path costs one validation)."""
    bad: dict[int, list[str]] = {}
    for name in table.column_names:
        col = table.column(name)
        if not pa.types.is_string(col.type):
            continue
        try:
            col.validate(full=True)
            continue
        except pa.ArrowInvalid:
            pass
        fixed: list[str | None] = []
        for i, v in enumerate(col.cast(pa.binary()).to_pylist()):  # bad input is the slow path
            if v is None:
                fixed.append(None)
                continue
            try:
                fixed.append(v.decode("utf-8"))
            except UnicodeDecodeError:
                fixed.append(v.decode("utf-8", "replace"))
                bad.setdefault(i, []).append(name)
        table = table.set_column(table.column_names.index(name), name, pa.array(fixed, pa.string()))
    return table, bad


def _nul_rows(table: pa.Table) -> dict[int, list[str]]:
    """The rows whose text (or list-of-text) values hold a NUL character: row index -> columns. A scan of each
    chunk's character data finds none in clean input (well under a millisecond a million values); only a
    chunk holding one is searched value by value."""
    rows: dict[int, list[str]] = {}
    for name in table.column_names:
        offset = 0
        for chunk in table.column(name).chunks:
            strings = chunk.flatten() if pa.types.is_list(chunk.type) else chunk  # (a slice's own elements)
            if pa.types.is_string(strings.type) or pa.types.is_large_string(strings.type):
                data = strings.buffers()[2]
                if data is not None and b"\x00" in data.to_pybytes():
                    hit = pc.fill_null(pc.match_substring(strings, "\x00"), False)
                    if strings is not chunk:  # an element of a list: the row holding it
                        parents = pc.list_parent_indices(chunk).to_numpy()
                        idx = np.unique(parents[np.flatnonzero(hit.to_numpy(zero_copy_only=False))])
                    else:
                        idx = np.flatnonzero(hit.to_numpy(zero_copy_only=False))
                    for i in idx.tolist():
                        rows.setdefault(offset + i, []).append(name)
            offset += len(chunk)
    return rows


def _binary_head(head: bytes) -> str | None:
    """Why the start of a file read as text is not text, or None. The first line decides: a text file's
    first line (its header or first row) holds no NUL, a binary file's or a UTF-16 file's does; a NUL further
    on is a corrupt row, quarantined with its row (``_nul_rows``)."""
    magic = {b"PAR1": "a Parquet file (format: parquet)", b"\x1f\x8b": "a gzip file (decompress it first)",
             b"PK\x03\x04": "a zip file (extract it first)", b"\x28\xb5\x2f\xfd": "a zstd file (decompress it first)"}
    for start, what in magic.items():
        if head.startswith(start):
            return f"it starts as {what}"
    if head.startswith((b"\xff\xfe", b"\xfe\xff")):
        return "it starts with a UTF-16 byte-order mark (encoding: utf-16)"
    if b"\x00" in head.split(b"\n", 1)[0]:
        return "NUL bytes in its first line (a binary file? a UTF-16 text needs encoding: utf-16)"
    return None


def _first_undecodable_line(path: str, encoding: str) -> str:
    """Where a file first fails to decode: 'line N, byte B' (the slow path of an encoding error)."""
    try:
        decoder = codecs.getincrementaldecoder(encoding)()
    except LookupError:
        return f"encoding {encoding!r} is unknown"
    with open(path, "rb") as fh:
        for n, line in enumerate(fh, start=1):
            try:
                decoder.decode(line)
            except UnicodeDecodeError as exc:
                return f"line {n}, byte {exc.start + 1} of the line ({line[max(0, exc.start - 20):exc.end + 20]!r})"
    return "an unknown place"


def read_batches(path: str, spec: Any, wanted: list[str], *, on_bad_row: Callable[[int | None, str], None],
                 lists: tuple[str, ...] = (), numeric: tuple[str, ...] = ()) -> Iterator[_Batch]:
    """Stream the file's ``wanted`` columns; CSV/TSV/JSON columns as text. JSON lines: the ``lists`` columns
    may hold arrays, and only the ``numeric`` columns may be read through a double (elsewhere, e.g. an id,
    a number keeps its exact text). Raises ImportFailed for a missing column, a column the file names twice
    or an unreadable file. A batch notes its rows holding a NUL character, in any format (``_Batch.nul``)."""
    for batch in _read_batches(path, spec, wanted, on_bad_row=on_bad_row, lists=lists, numeric=numeric):
        batch.nul = _nul_rows(batch.table)
        yield batch


def _refuse_twice(path: str, have: list[str], wanted: list[str], where: str) -> None:
    """A mapped column the file names more than once: which one is meant? (a reader would take one silently)"""
    for c in wanted:
        at = [i + 1 for i, name in enumerate(have) if name == c]
        if len(at) > 1:
            raise ImportFailed(f"{path}: column {c!r} is named {len(at)} times in {where} (columns "
                               f"{', '.join(f'#{i}' for i in at)}): which one is meant? rename all but one")


def _header_names(head: bytes, encoding: str, parse: Any) -> list[str] | None:
    """The names a CSV header gives, read from the file's first line (None when that line cannot be read
    alone: a header with a quoted line break)."""
    import io

    import pyarrow.csv as pcsv

    line = re.split(rb"\r\n|\n|\r", head, maxsplit=1)[0]
    try:
        return pcsv.read_csv(io.BytesIO(line + b"\n"), read_options=pcsv.ReadOptions(encoding=encoding, use_threads=False),
                             parse_options=pcsv.ParseOptions(delimiter=parse.delimiter, quote_char=parse.quote_char)
                             ).column_names
    except (pa.ArrowInvalid, UnicodeDecodeError, LookupError):
        return None


def _read_batches(path: str, spec: Any, wanted: list[str], *, on_bad_row: Callable[[int | None, str], None],
                  lists: tuple[str, ...] = (), numeric: tuple[str, ...] = ()) -> Iterator[_Batch]:
    fmt = file_format(path, spec)
    row = 1
    encoding = str(getattr(spec, "encoding", "utf8"))
    head = b""
    if os.path.isfile(path) and fmt != "parquet":
        with open(path, "rb") as fh:
            head = fh.read(TEXT_SNIFF_BYTES)
        if not head:
            raise ImportFailed(f"{path}: the file is empty (0 bytes): nothing to import")
        what = None if encoding.lower().replace("-", "").startswith(("utf16", "utf32")) else _binary_head(head)
        if what:
            raise ImportFailed(f"{path}: not a text file: {what}; the mapping reads it as {fmt} text, encoding "
                               f"{encoding!r}")

    def missing(have: list[str]) -> None:
        gone = [c for c in wanted if c not in have]
        if gone:
            raise ImportFailed(f"{path}: column {gone[0]!r} not found (row 1, the header); the file has columns "
                               f"{have}" + ("" if spec.header or fmt in ("parquet", "jsonl") else
                                            " (header: false -- name them with column_names)"))

    try:
        if fmt == "parquet":
            pf = pq.ParquetFile(path)
            missing(pf.schema_arrow.names)
            _refuse_twice(path, pf.schema_arrow.names, wanted, "its schema")
            for rb in pf.iter_batches(batch_size=1 << 20, columns=wanted):
                yield _Batch(pa.Table.from_batches([rb]), row)
                row += rb.num_rows
            return
        if fmt == "jsonl":
            yield from _read_jsonl(path, spec, wanted, missing, on_bad_row, lists, numeric)
            return
        import pyarrow.csv as pcsv

        delimiter = spec.delimiter or TAB_OR_COMMA[fmt]
        names = list(spec.column_names) or None

        header_lines = 1 if spec.header else 0
        skipped: list[int] = []  # data row numbers of the malformed lines skipped so far

        def handler(bad: Any) -> str:
            number = bad.number - header_lines if bad.number is not None and bad.number > 0 else None
            if number is not None:
                skipped.append(number)
            on_bad_row(number, f"expected {bad.expected_columns} columns, got {bad.actual_columns}: "
                       f"{(bad.text or '')[:200]!r}")
            return "skip"

        read = pcsv.ReadOptions(block_size=CSV_BLOCK_BYTES, encoding=spec.encoding, column_names=names, use_threads=False,
                                autogenerate_column_names=False)
        if names is None and not spec.header:
            raise ImportFailed(f"{path}: header is false but no column_names are given in the mapping")
        if names is not None and spec.header:
            read.skip_rows = 1
        parse = pcsv.ParseOptions(delimiter=delimiter, quote_char=spec.quote_char or False,
                                  invalid_row_handler=handler)
        utf8 = _is_utf8(encoding)  # checked per batch here, so that a bad value is one quarantined row
        convert = pcsv.ConvertOptions(include_columns=wanted, column_types={c: pa.string() for c in wanted},
                                      strings_can_be_null=False, quoted_strings_can_be_null=False,
                                      check_utf8=not utf8)
        if names is not None:
            _refuse_twice(path, names, wanted, "the mapping's column_names")
        elif head and spec.header:
            _refuse_twice(path, _header_names(head, spec.encoding, parse) or [], wanted, "the header")
        try:
            reader = pcsv.open_csv(path, read_options=read, parse_options=parse, convert_options=convert)
        except pa.ArrowKeyError:  # a mapped column is not in the file: say which, and what the file has
            header = pcsv.open_csv(path, read_options=read, parse_options=parse,
                                   convert_options=pcsv.ConvertOptions(column_types={}))
            missing(header.schema.names)
            raise
        kept = 0
        for rb in reader:
            table = pa.Table.from_batches([rb])
            bad: dict[int, list[str]] = {}
            if utf8:
                table, bad = _repair_utf8(table)
            numbers = _kept_row_numbers(kept, rb.num_rows, skipped) if skipped else None
            yield _Batch(table, int(numbers[0]) if numbers is not None and len(numbers) else row, bad, numbers)
            kept += rb.num_rows
            row += rb.num_rows
    except ImportFailed:
        raise
    except FileNotFoundError:
        raise ImportFailed(f"{path}: no such file") from None
    except (pa.ArrowInvalid, pa.ArrowKeyError, pa.ArrowTypeError, UnicodeDecodeError, OSError) as exc:
        text = str(exc)
        m = re.search(r"[Cc]olumn (?:'([^']+)'|#(\d+))", text) or re.search(r"[Cc]olumn\(/?([^)\s]+)\)", text)
        col = f" column {m.group(1)!r}" if m and m.group(1) else (f" column #{m.group(2)}" if m else "")
        line = re.search(r"Row #(\d+)", text)
        where = (f"at line {line.group(1)} of the file" if line and fmt in ("csv", "tsv")
                 else f"near data row {row}")
        if isinstance(exc, UnicodeDecodeError) or "UTF8" in text or "encoding" in text.lower():
            where = f"at {_first_undecodable_line(path, 'utf-8' if _is_utf8(encoding) else encoding)}"
        delimiter = (f", delimiter {getattr(spec, 'delimiter', None) or TAB_OR_COMMA[fmt]!r}" if fmt in ("csv", "tsv")
                     else "")
        raise ImportFailed(f"{path}:{col} cannot be read {where} ({fmt}{delimiter}, encoding {encoding!r}): "
                           f"{text[:300]}") from None


def _jsonl_blocks(path: str) -> Iterator[tuple[int, bytes]]:
    """(line number of its first line, block): the file in blocks of about ``BLOCK_BYTES`` of whole lines.
    Lines end with LF or CRLF; a file whose lines end with a bare CR (no LF in its first block) has them read
    as LF: JSON holds no raw CR but as whitespace, so that changes no value."""
    line = 1
    with open(path, "rb") as fh:
        head = True
        end = b"\n"
        while block := fh.read(BLOCK_BYTES):
            if head and b"\n" not in block and b"\r" in block:
                end = b"\r"
            while not block.endswith(end) and (more := fh.read(1 << 16)):
                cut = more.find(end)  # the rest of the block's last line, no further
                if cut >= 0:
                    fh.seek(cut + 1 - len(more), os.SEEK_CUR)
                    more = more[:cut + 1]
                block += more
            if end == b"\r":
                block = block.replace(b"\r", b"\n")
            if head and block.startswith(codecs.BOM_UTF8):
                block = block[len(codecs.BOM_UTF8):]
            head = False
            yield line, block
            line += _lines_in(block)


def _lines_in(block: bytes) -> int:
    return block.count(b"\n") + (0 if block.endswith(b"\n") else 1)


def _one_object_per_line(block: bytes) -> bool:
    """Whether every line of the block starts with ``{`` and ends with ``}`` (before an optional CR). A raw
    newline cannot sit inside a JSON string, so when pyarrow then reads the block at all, no value spans two
    lines (a ``}`` closing a nested value cannot be followed by ``{``); with as many rows as lines, each line
    is then exactly one object. Without this, a line holding two objects and a blank line in the same block
    would add up to the right count (two rows from one line, the row numbers after it shifted), a ``null``
    line would be a row of nulls, and a ``null`` first line crashes pyarrow 25 (a segmentation fault)."""
    lines = _lines_in(block)
    starts = block.startswith(b"{") + block.count(b"\n{")
    ends = block.count(b"}\n") + block.count(b"}\r\n") + (not block.endswith(b"\n") and block.endswith(b"}"))
    return starts == lines and ends == lines


_NEGATIVE_ZERO = re.compile(rb"[:,\[][ \t]*-0(?![0-9.eE])")


def _plain_number(text: str) -> str:
    """A finite JSON number in a ``numeric`` column as plain digits (``1.7e9`` -> ``1700000000``): epoch
    timestamps are read from digits, and both readers must give the same text for the same number."""
    try:
        f = float(text)
    except ValueError:
        return text
    return np.format_float_positional(f, trim="-") if np.isfinite(f) else text


def _jsonl_fast(block: bytes, wanted: list[str], lists: tuple[str, ...], numeric: tuple[str, ...],
                ) -> tuple[pa.Table, list[str]] | None:
    """The block read by pyarrow, or None when that reading could change what the file says, so that the
    block is read line by line instead: a line that is not one JSON object (``_one_object_per_line``), a
    value whose type changes between lines, a blank line (the row numbers would shift), an array or object
    where a value belongs, a number pyarrow would read as a double in an id column (``1.0`` must stay
    ``1.0``, and integers beyond 2^63 lose digits as doubles), an id written ``-0`` (pyarrow reads it as the
    integer 0) or text it would read as a timestamp (re-read as text)."""
    import pyarrow.json as pj

    if not _one_object_per_line(block):
        return None
    read = pj.ReadOptions(block_size=max(len(block), 1 << 16) + 1, use_threads=False)
    try:
        t = pj.read_json(pa.BufferReader(block), read_options=read)
        stamped = [c for c in wanted if c in t.column_names and pa.types.is_timestamp(t.column(c).type)]
        if stamped:
            schema = pa.schema([(c, pa.string()) for c in stamped])
            t = pj.read_json(pa.BufferReader(block), read_options=read,
                             parse_options=pj.ParseOptions(explicit_schema=schema))
    except (pa.ArrowInvalid, pa.ArrowTypeError, pa.ArrowNotImplementedError, UnicodeDecodeError):
        return None
    if t.num_rows != _lines_in(block):
        return None
    columns = []
    for c in wanted:
        if c not in t.column_names:
            columns.append(pa.nulls(t.num_rows, pa.string()))
            continue
        col = t.column(c).combine_chunks() if t.column(c).num_chunks else pa.array([], t.column(c).type)
        typ = col.type
        if pa.types.is_integer(typ) and c not in numeric and pc.any(pc.equal(col, 0)).as_py() \
                and _NEGATIVE_ZERO.search(block):
            return None  # "-0" is an id of its own, not "0"
        if pa.types.is_string(typ) or pa.types.is_null(typ) or pa.types.is_boolean(typ) or pa.types.is_integer(typ):
            columns.append(col.cast(pa.string()))
        elif pa.types.is_floating(typ) and c in numeric:
            if pc.any(pc.invert(pc.is_finite(col))).as_py():
                return None  # NaN or Infinity: pyarrow would write "nan", "inf"; quarantined as the file has it
            text = col.cast(pa.string())  # pyarrow writes 1.7e+12 for a millisecond epoch with a fraction
            sci = _mask(pc.match_substring(text, "e"))
            if sci.any():
                values = text.to_pylist()
                for i in np.flatnonzero(sci).tolist():
                    values[i] = _plain_number(values[i])
                text = pa.array(values, pa.string())
            columns.append(text)
        elif c in lists and pa.types.is_list(typ) and (pa.types.is_string(typ.value_type)
                                                       or pa.types.is_null(typ.value_type)):
            columns.append(col.cast(pa.list_(pa.string())))
        else:
            return None
    return pa.table(columns, names=wanted), list(t.column_names)


def _jsonl_value(v: Any) -> Any:
    """A JSON value as the text the file holds (numbers were kept as their text by the decoder)."""
    if isinstance(v, bool):
        return "true" if v else "false"
    return v


class _JsonFloat(str):
    """The text of a JSON number with a fraction or an exponent (told apart from a JSON string)."""


class _JsonObject(dict[str, Any]):
    """A JSON object, with the keys the line gives more than once (the decoder keeps the last value)."""

    twice: frozenset[str] = frozenset()


def _json_object(pairs: list[tuple[str, Any]]) -> _JsonObject:
    obj = _JsonObject(pairs)
    if len(obj) < len(pairs):
        obj.twice = frozenset(k for k, n in Counter(k for k, _ in pairs).items() if n > 1)
    return obj


def _not_unicode(v: Any) -> bool:
    """Whether a decoded value holds a lone surrogate (``"\\ud800"``): no Unicode text, it cannot be stored."""
    if isinstance(v, list):
        return any(_not_unicode(x) for x in v)
    if not isinstance(v, str):
        return False
    try:
        v.encode("utf-8")
    except UnicodeEncodeError:
        return True
    return False


def _bad_bytes_replaced(v: Any) -> Any:
    """A value decoded with ``surrogateescape``, its invalid bytes as U+FFFD (a lone surrogate the line wrote as
    an escape, ``"\\ud800"``, is left for ``_not_unicode`` to refuse)."""
    if isinstance(v, list):
        return [_bad_bytes_replaced(x) for x in v]
    if not isinstance(v, str) or v.isascii():
        return v
    try:
        return v.encode("utf-8", "surrogateescape").decode("utf-8", "replace")
    except UnicodeEncodeError:
        return v


def _json_kind(value: Any, text: str) -> str:
    """What a line holds that is not an object (numbers were decoded to their text, so look at the text)."""
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "boolean"
    if isinstance(value, list):
        return "list"
    return "string" if text.lstrip().startswith('"') else "number"


def _jsonl_slow(block: bytes, first_line: int, wanted: list[str], lists: tuple[str, ...], encoding: str,
                path: str, on_bad_row: Callable[[int | None, str], None], separator: str | None = None,
                numeric: tuple[str, ...] = ()) -> tuple[pa.Table, np.ndarray, dict[int, list[str]], set[str]]:
    """The block line by line: each line one JSON object, its numbers kept as their text (in a ``numeric``
    column as plain digits, as ``_jsonl_fast`` gives them). A line that is not one, holds an array or object
    where a value belongs, gives a mapped column twice (which value is meant?) or holds a lone surrogate in a
    mapped column is reported to ``on_bad_row`` under its line number; in UTF-8 a line with invalid bytes is
    kept with U+FFFD and the mapped columns that hold them named (``undecodable``): the bytes are decoded as
    escapes first, so a U+FFFD the file writes is not taken for one, nor a bad byte in a column not imported
    for a bad value."""
    decode = json.JSONDecoder(parse_int=str, parse_float=_JsonFloat, parse_constant=str).decode
    # the decoder that notes keys given twice costs a call per object, so a line is decoded with it again
    # only when it may give a key twice: an object of n pairs has n - 1 commas between them, and other commas
    # only add to the line's count, so a line with fewer commas than its object has keys gives none twice
    # (a name spelt with escapes, "\u0075ser", included)
    decode_pairs = json.JSONDecoder(parse_int=str, parse_float=_JsonFloat, parse_constant=str,
                                    object_pairs_hook=_json_object).decode
    utf8 = _is_utf8(encoding)
    values: dict[str, list[Any]] = {c: [] for c in wanted}
    numbers: list[int] = []
    undecodable: dict[int, list[str]] = {}
    keys: set[str] = set()
    lines = block.split(b"\n")
    if block.endswith(b"\n"):
        lines.pop()
    for k, raw in enumerate(lines):
        number = first_line + k
        if not raw.strip():
            continue  # a blank line is not a row
        replaced = False
        try:
            text = raw.decode("utf-8" if utf8 else encoding)
        except UnicodeDecodeError as exc:
            if not utf8:
                raise ImportFailed(f"{path}: line {number}, byte {exc.start + 1} is not valid {encoding} text "
                                   f"({exc.reason}); set encoding in the mapping") from None
            # each invalid byte becomes U+DC80..U+DCFF, which valid UTF-8 never decodes to: the columns that
            # hold one are told apart from those holding a U+FFFD of their own (``_bad_bytes_replaced``)
            text, replaced = raw.decode("utf-8", "surrogateescape"), True
        shown = raw.decode("utf-8", "replace") if replaced else text  # what an error quotes
        try:
            obj = decode(text)
            if isinstance(obj, dict) and raw.count(b",") >= len(obj):
                obj = decode_pairs(text)  # it may give a key twice
        except ValueError as exc:
            on_bad_row(number, f"not a JSON object ({getattr(exc, 'msg', exc)} at column "
                               f"{getattr(exc, 'colno', '?')}): {shown[:200]!r}")
            continue
        if not isinstance(obj, dict):
            on_bad_row(number, f"a JSON {_json_kind(obj, text)}, not an object: {shown[:200]!r}")
            continue
        keys.update(_bad_bytes_replaced(list(obj)) if replaced else obj)
        row: dict[str, Any] = {}
        problem = None
        named: list[str] = []  # the mapped columns holding invalid bytes
        escaped = replaced or b"\\u" in raw  # a lone surrogate is written as an escape, or stands for a bad byte
        given_twice = obj.twice if isinstance(obj, _JsonObject) else _JsonObject.twice
        for c in wanted:
            v = obj.get(c)
            if type(v) is str and not escaped and c not in given_twice:  # most values: text, or an integer's
                row[c] = v
                continue
            if c in given_twice:
                problem = f"column {c!r} is given more than once in the object"
                break
            if isinstance(v, list) and c in lists and not any(isinstance(x, (list, dict)) for x in v):
                v = [_jsonl_value(x) for x in v if x is not None]
            elif isinstance(v, (list, dict)):
                what = "an array" if isinstance(v, list) else "an object"
                problem = f"column {c!r} holds {what}, not a value"
                break
            elif isinstance(v, _JsonFloat) and c in numeric and ("e" in v or "E" in v):
                v = _plain_number(v)
            if replaced:
                fixed = _bad_bytes_replaced(v)
                if fixed != v:
                    named.append(c)
                    v = fixed
            if escaped and _not_unicode(v):
                problem = f"column {c!r} holds a lone UTF-16 surrogate escape, not Unicode text"
                break
            row[c] = _jsonl_value(v)
        if problem:
            on_bad_row(number, f"{problem}: {shown[:200]!r}")
            continue
        if named:
            undecodable[len(numbers)] = named
        for c in wanted:
            values[c].append(row[c])
        numbers.append(number)
    columns = []
    for c in wanted:
        vals = values[c]
        if c in lists and any(isinstance(v, list) for v in vals):  # text among arrays: split as a text column is
            columns.append(pa.array([v if isinstance(v, list) or v is None else
                                     [part for part in v.split(separator) if part.strip()] if separator else [v]
                                     for v in vals], pa.list_(pa.string())))
        else:
            columns.append(pa.array(vals, pa.string()))
    return pa.table(columns, names=wanted), np.asarray(numbers, dtype=np.int64), undecodable, keys


def _read_jsonl(path: str, spec: Any, wanted: list[str], missing: Callable[[list[str]], None],
                on_bad_row: Callable[[int | None, str], None], lists: tuple[str, ...], numeric: tuple[str, ...],
                ) -> Iterator[_Batch]:
    """JSON lines, one object per line, every value as the text the file holds (as CSV reads it). Blocks of
    clean lines go through pyarrow's reader; a block it cannot read faithfully is read line by line, so one
    bad line is one quarantined row, never a failed file (``_jsonl_fast`` says when)."""
    encoding = str(getattr(spec, "encoding", "utf8"))
    try:
        wide = "a\n".encode(encoding) != "a".encode(encoding) + b"\n"
    except LookupError:
        raise ImportFailed(f"{path}: encoding {encoding!r} is unknown") from None
    if wide:  # UTF-16 or -32 (or EBCDIC): a line does not end at the byte \n
        raise ImportFailed(f"{path}: JSON lines are read in an encoding that writes a newline as the byte \\n "
                           f"(UTF-8, as JSON lines are by definition, or an 8-bit one such as latin-1), not "
                           f"{encoding!r}: convert the file to UTF-8 (iconv -f {encoding} -t utf-8)")
    checked = False
    have: dict[str, None] = {}  # the keys of the lines read so far, in the order met
    for first_line, block in _jsonl_blocks(path):
        fast = _jsonl_fast(block, wanted, lists, numeric) if _is_utf8(encoding) else None
        if fast is not None:
            table, keys = fast
            batch = _Batch(table, first_line)
        else:
            table, numbers, undecodable, seen = _jsonl_slow(block, first_line, wanted, lists, encoding, path,
                                                            on_bad_row, getattr(spec, "list_separator", None),
                                                            numeric)
            keys = sorted(seen)
            batch = _Batch(table, int(numbers[0]) if len(numbers) else first_line, undecodable, numbers)
        have.update(dict.fromkeys(keys))
        if not checked and table.num_rows:
            checked = True
            absent = [c for c in wanted if c not in have]
            if absent and not _named_in(path, absent):
                missing(list(have))  # a wrong mapping: said at once, not after reading the whole file
        if table.num_rows:
            yield batch
    if checked:
        missing(list(have))  # a column first met beyond the first block (an optional field added later on)


def _named_in(path: str, columns: list[str]) -> bool:
    """Whether the file holds each of ``columns`` as a quoted name anywhere (a byte search): a column missing
    from the lines of the first block may still be a key further on."""
    needles = [json.dumps(c).encode() for c in columns]
    found = [False] * len(needles)
    tail = b""
    with open(path, "rb") as fh:
        while chunk := fh.read(BLOCK_BYTES):
            window = tail + chunk
            found = [f or n in window for f, n in zip(found, needles, strict=True)]
            if all(found):
                return True
            tail = window[-max(map(len, needles)):]
    return False


def _text(col: pa.ChunkedArray | pa.Array) -> pa.Array:
    if isinstance(col, pa.ChunkedArray):
        col = col.combine_chunks() if col.num_chunks else pa.array([], col.type)
    if not pa.types.is_string(col.type) and not pa.types.is_large_string(col.type):
        col = col.cast(pa.string())
    col = pc.utf8_trim_whitespace(col)
    return pc.if_else(pc.equal(col, ""), pa.scalar(None, pa.string()), col)


def _mask(arr: Any) -> np.ndarray:
    if isinstance(arr, pa.ChunkedArray):
        arr = arr.combine_chunks() if arr.num_chunks else pa.array([], pa.bool_())
    return np.asarray(arr.fill_null(False).to_numpy(zero_copy_only=False), dtype=bool)


_EPOCH = re.compile(r"^[-+]?\d+(\.\d+)?([eE][-+]?\d+)?$")  # R and spreadsheets write 1.7e+09


def parse_times(col: pa.ChunkedArray | pa.Array, unit: str, fmt: str | None = None) -> pa.Array:
    """Timestamps (UTC, us) from epoch numbers (unit ``s``/``ms``/``us``; ``auto`` by magnitude), ISO-8601 text
    (an offset or Z; naive = UTC) or text in ``fmt`` (strptime). Unreadable values become null."""
    if isinstance(col, pa.ChunkedArray):
        col = col.combine_chunks() if col.num_chunks else pa.array([], col.type)
    if pa.types.is_timestamp(col.type):
        return (pc.assume_timezone(col, "UTC") if col.type.tz is None else col).cast(TS)
    if pa.types.is_date(col.type):
        return col.cast(pa.timestamp("us")).cast(pa.int64()).cast(TS)
    if pa.types.is_integer(col.type) or pa.types.is_floating(col.type):
        num = col.cast(pa.float64())
    else:
        text = _text(col)
        if fmt:
            out = pc.strptime(text, format=fmt, unit="us", error_is_null=True)
            return pc.assume_timezone(out, "UTC").cast(TS) if out.type.tz is None else out.cast(TS)
        numeric = _mask(pc.match_substring_regex(text, _EPOCH.pattern))
        if unit != "iso" and numeric.any():
            num = pc.if_else(pa.array(numeric), text, pa.scalar(None, pa.string())).cast(pa.float64())
            if numeric.all():
                return _epoch(num, unit)
            return pc.coalesce(_epoch(num, unit), _iso(pc.if_else(pa.array(numeric), pa.scalar(None, pa.string()),
                                                                  text)))
        return _iso(text)
    return _epoch(num, unit)


def _epoch(num: pa.Array, unit: str) -> pa.Array:
    values = num.to_numpy(zero_copy_only=False).astype(np.float64)
    if unit in ("auto", "iso"):
        mag = np.abs(values)
        scale = np.where(mag < 1e11, 1e6, np.where(mag < 1e14, 1e3, 1.0))  # s, ms, us by magnitude
    else:
        scale = np.full(len(values), {"s": 1e6, "ms": 1e3, "us": 1.0}[unit])
    us = values * scale
    ok = np.isfinite(us) & (np.abs(us) < 253402300799e6)  # up to year 9999
    out = pa.array(np.where(ok, us, 0).astype(np.int64), pa.int64(), mask=~ok)
    return out.cast(TS)


def _iso(text: pa.Array) -> pa.Array:
    try:
        return text.cast(TS)
    except (pa.ArrowInvalid, pa.ArrowNotImplementedError):
        pass
    try:
        return pc.assume_timezone(text.cast(pa.timestamp("us")), "UTC").cast(TS)
    except (pa.ArrowInvalid, pa.ArrowNotImplementedError):
        pass
    from skyrec.data.catalogue import parse_ts

    out: list[dt.datetime | None] = []
    for v in text.to_pylist():  # mixed or odd spellings: one by one (bad input is the slow path)
        try:
            out.append(parse_ts(v) if v is not None else None)
        except ValueError:
            out.append(None)
    return pa.array(out, TS)


def _numbers(col: Any) -> pa.Array:
    """Floats from a column (text or numeric); unreadable -> null."""
    if isinstance(col, pa.ChunkedArray):
        col = col.combine_chunks() if col.num_chunks else pa.array([], col.type)
    if pa.types.is_integer(col.type) or pa.types.is_floating(col.type):
        return col.cast(pa.float64())
    text = _text(col)
    ok = pc.match_substring_regex(text, r"^[-+]?(\d+(\.\d*)?|\.\d+)([eE][-+]?\d+)?$").fill_null(False)
    return pc.if_else(ok, text, pa.scalar(None, pa.string())).cast(pa.float64())


# ---- output helpers -----------------------------------------------------------------------------------------

class _Output:
    """The source (local folder or S3 via fsspec): whole-file writes, listings, removals."""

    def __init__(self, config: Any) -> None:
        from skyrec.data.source import source_fs

        self.fs, self.root = source_fs(config)
        self.local = config.source.kind == "local"
        self._folders: set[str] = set()  # made already (one items file writes ~2 objects per item)

    def path(self, rel: str) -> str:
        return f"{self.root}/{rel}"

    def write(self, rel: str, data: bytes) -> None:
        full = self.path(rel)
        if self.local:
            folder = os.path.dirname(full)
            if folder not in self._folders:
                os.makedirs(folder, exist_ok=True)
                self._folders.add(folder)
            tmp = f"{folder}/.{os.path.basename(full)}.tmp-{os.getpid()}"
            with open(tmp, "wb") as fh:
                fh.write(data)
            os.replace(tmp, full)  # whole or not at all: a killed import never leaves half a file
        else:
            self.fs.pipe_file(full, data)

    def write_many(self, objects: list[tuple[str, bytes]]) -> None:
        """Several whole objects (``rel``, bytes): one after another into a local folder (a file system gains
        nothing from more at once), ``OBJECT_STORE_CONCURRENCY`` requests at a time to an object store, where one
        after another an items file of 200k programmes (~460k objects) would take hours."""
        if self.local:
            for rel, data in objects:
                self.write(rel, data)
        else:  # a chunk a call: fsspec makes every call's requests at once, and leaves a failed call's rest unmade
            for i in range(0, len(objects), OBJECT_STORE_CONCURRENCY):
                part = objects[i:i + OBJECT_STORE_CONCURRENCY]
                self.fs.pipe({self.path(rel): data for rel, data in part}, batch_size=OBJECT_STORE_CONCURRENCY)

    def remove_many(self, rels: list[str]) -> None:
        """Remove several objects (missing ones are fine): to an object store in bulk requests (1,000 keys
        each), not a request per object."""
        if self.local:
            for rel in rels:
                self.remove(rel)
        elif rels:
            self.fs.rm([self.path(rel) for rel in rels])

    def read(self, rel: str) -> bytes | None:
        try:
            with self.fs.open(self.path(rel), "rb") as fh:
                return bytes(fh.read())
        except FileNotFoundError:
            return None

    def remove(self, rel: str) -> None:
        try:
            self.fs.rm(self.path(rel))
        except FileNotFoundError:
            pass


def file_sha256(path: str | os.PathLike[str]) -> str:
    """SHA-256 of a file's bytes, read in chunks."""
    h = hashlib.sha256()
    with open(path, "rb") as fh:
        for chunk in iter(lambda: fh.read(8 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def _key(role: str, path: str) -> str:
    return hashlib.sha256(f"{role}\x00{os.path.abspath(path)}".encode()).hexdigest()[:12]


def _parquet_bytes(table: pa.Table) -> bytes:
    import io

    buf = io.BytesIO()
    pq.write_table(table, buf, compression="zstd", compression_level=3, use_dictionary=True, write_statistics=True,
                   row_group_size=1 << 20)
    return buf.getvalue()


class _Quarantine:
    def __init__(self, path: str, report: FileReport) -> None:
        self.path, self.report = path, report
        self.lines: dict[str, list[str]] = {}

    def add(self, reason: str, rows: list[int | None], values: list[dict[str, Any]], message: str) -> None:
        if not rows:
            return
        self.report.quarantined[reason] = self.report.quarantined.get(reason, 0) + len(rows)
        out = self.lines.setdefault(reason, [])
        for r, v in zip(rows, values, strict=True):
            out.append(json.dumps({"file": self.path, "row": r, "reason": reason, "error": message, "values": v},
                                  default=str, sort_keys=True))

    def write(self, out: _Output, key: str, previous: dict[str, Any] | None) -> dict[str, int]:
        base = f"{IMPORTS_DIR}/{key}/quarantine"
        for reason in (previous or {}).get("quarantine", {}):
            if reason not in self.lines:
                out.remove(f"{base}/{reason}.jsonl")
        for reason, lines in sorted(self.lines.items()):
            out.write(f"{base}/{reason}.jsonl", ("\n".join(lines) + "\n").encode())
        return {r: len(v) for r, v in sorted(self.lines.items())}


def _check_share(path: str, column: str, what: str, bad: np.ndarray, present: np.ndarray, batch: _Batch,
                 values: pa.Array) -> None:
    """A wrong mapping, not bad rows: most present values of the column fail -> ImportFailed naming the row."""
    n_present = int(present.sum())
    n_bad = int((bad & present).sum())
    if n_bad and n_bad > MAPPING_ERROR_SHARE * n_present:
        i = int(np.flatnonzero(bad & present)[0])
        rows = batch.rows
        raise ImportFailed(f"{path}: column {column!r} cannot be read as {what}: first offending row "
                           f"{rows[i]}: {values[i].as_py()!r} ({n_bad} of {n_present} values in "
                           f"rows {rows[0]}-{rows[-1]} fail; check the mapping)")


def _us(t: dt.datetime) -> int:
    return int(t.timestamp()) * 1_000_000 + t.microsecond


def _end_of_reading(path: str, report: FileReport, quarantine: _Quarantine,
                    parsed_bad_rows: list[tuple[int | None, str]]) -> None:
    """The rows the reader could not split into the file's columns, quarantined and counted; then an import
    of nothing refused."""
    if parsed_bad_rows:
        quarantine.add("malformed_row", [r for r, _ in parsed_bad_rows], [{"error": m} for _, m in parsed_bad_rows],
                       "the row cannot be read into the file's columns (values.error says why)")
        report.rows_in += len(parsed_bad_rows)
    _refuse_empty(path, report)


def _refuse_empty(path: str, report: FileReport) -> None:
    """A file without a data row is a mistake (a truncated export, the wrong file), not an import of nothing."""
    if report.rows_in == 0:
        raise ImportFailed(f"{path}: no data rows (only a header, or blank lines): nothing to import; nothing "
                           f"was written for this {report.role} file")


def _state(out: _Output, key: str) -> dict[str, Any] | None:
    raw = out.read(f"{IMPORTS_DIR}/{key}.json")
    return json.loads(raw) if raw else None


def _already_imported(previous: dict[str, Any] | None, path: str, mapping: str, report: FileReport,
                      started: float) -> tuple[str, bool]:
    """(the file's digest, whether this file was imported with this mapping already: then ``report`` holds
    that import's figures and nothing is written again -- re-running an import changes nothing)."""
    if not os.path.isfile(path):
        raise ImportFailed(f"{path}: no such file")
    digest = file_sha256(path)
    if not (previous and previous.get("digest") == digest and previous.get("mapping") == mapping):
        return digest, False
    report.__dict__.update({k: previous["report"][k] for k in ("rows_in", "imported", "quarantined", "filtered",
                                                               "written")})
    report.noop = True
    report.seconds = time.time() - started
    return digest, True


def _mapping_digest(role: str, spec: Any, extra: dict[str, Any]) -> str:
    body = json.dumps({"role": role, "spec": spec.model_dump(mode="json"), **extra}, sort_keys=True, default=str)
    return hashlib.sha256(body.encode()).hexdigest()


# ---- interactions -------------------------------------------------------------------------------------------

def import_interactions(config: Any, path: str, spec: Any | None = None, *,
                        progress: Callable[[str], None] | None = None) -> FileReport:
    """Convert an interactions file into hourly activity Parquet files in the source (see module docs)."""
    started = time.time()
    spec = spec or config.ingest.files.interactions
    out = _Output(config)
    key = _key("interactions", path)
    report = FileReport("interactions", path, key)
    vocab = config.ingest.activity.events
    mapping = _mapping_digest("interactions", spec, {"vocab": {k: v.duration for k, v in vocab.items()},
                                                     "prefix": config.source.activity_prefix})
    previous = _state(out, key)
    digest, done = _already_imported(previous, path, mapping, report, started)
    if done:
        return report
    cols = _columns("interactions", spec)
    missing_req = [f for f in REQUIRED["interactions"] if f not in cols]
    if missing_req:
        raise ImportFailed(f"ingest.files.interactions.columns: {missing_req} must be mapped")
    if spec.value != "none" and "value" not in cols:
        raise ImportFailed(f"{path}: value is {spec.value!r} but no column is mapped to 'value'")
    kinds_map = {k.strip().lower(): v.strip().lower() for k, v in spec.kinds.items()}
    default_kind = spec.default_kind.strip().lower()
    quarantine = _Quarantine(path, report)
    parsed_bad_rows: list[tuple[int | None, str]] = []
    wanted = list(dict.fromkeys(cols.values()))
    has_ids = "event_id" in cols or spec.value == "count"
    has_platform = "platform" in cols
    spill = _HourSpill(pa.schema([f for f in RAW_ACTIVITY if (f.name != "event_id" or has_ids)
                                  and (f.name != "platform" or has_platform)]))
    try:  # the spill's files are removed however the import ends
        now = dt.datetime.now(dt.UTC).replace(microsecond=0)  # the import's time: later events are future_ts
        tolerance = dt.timedelta(minutes=config.ingest.activity.future_tolerance_minutes)
        earliest = config.ingest.activity.earliest_event
        latest_us, earliest_us = _us(now + tolerance), _us(earliest)
        numeric = tuple(cols[f] for f in ("timestamp", "value") if f in cols)
        said = 0.0
        for batch in read_batches(path, spec, wanted, numeric=numeric,
                                  on_bad_row=lambda n, msg: parsed_bad_rows.append((n, msg))):
            t = batch.table
            n = t.num_rows
            report.rows_in += n
            rownum = batch.rows
            user, item = _text(t.column(cols["user"])), _text(t.column(cols["item"]))
            raw_ts = t.column(cols["timestamp"])
            ts = parse_times(raw_ts, spec.timestamp_unit, spec.timestamp_format)
            present_ts = ~_mask(pc.is_null(raw_ts))
            if pa.types.is_string(raw_ts.type):
                present_ts &= ~_mask(pc.equal(pc.utf8_trim_whitespace(raw_ts), ""))
            bad_ts = _mask(pc.is_null(ts)) & present_ts
            _check_share(path, cols["timestamp"], f"a timestamp (timestamp_unit {spec.timestamp_unit})", bad_ts,
                         present_ts, batch, raw_ts.combine_chunks() if isinstance(raw_ts, pa.ChunkedArray) else raw_ts)
            if "kind" in cols:
                kind = pc.utf8_lower(_text(t.column(cols["kind"])))
                if kinds_map:
                    mapped = pc.index_in(kind, value_set=pa.array(list(kinds_map), pa.string()))
                    kind = pc.coalesce(pa.array(list(kinds_map.values()), pa.string()).take(mapped), kind)
                kind = pc.fill_null(kind, default_kind)
            else:
                kind = pa.array(np.full(n, default_kind, dtype=object), pa.string())
            seconds = pa.nulls(n, pa.float32())
            value = None
            keep = np.ones(n, dtype=bool)

            def take_out(mask: np.ndarray, reason: str, message: str, *, filtered: bool = False, t: pa.Table = t,
                         rownum: np.ndarray = rownum) -> None:
                nonlocal keep
                hit = mask & keep
                if not hit.any():
                    return
                idx = np.flatnonzero(hit)
                if filtered:
                    report.filtered[reason] = report.filtered.get(reason, 0) + len(idx)
                else:
                    rows = t.take(pa.array(idx)).to_pylist()
                    quarantine.add(reason, rownum[idx].tolist(), rows, message)
                keep &= ~hit

            for undecodable, message in batch.undecodable_groups(spec.encoding):
                take_out(undecodable, "malformed_row", message)
            take_out(_mask(pc.is_null(user)) | _mask(pc.is_null(item)) | ~present_ts, "missing_field",
                     "user, item or timestamp is empty")
            take_out(bad_ts, "bad_timestamp", f"not a timestamp (timestamp_unit {spec.timestamp_unit})")
            ts_us = ts.cast(pa.int64()).fill_null(0).to_numpy(zero_copy_only=False)
            valid_ts = ~_mask(pc.is_null(ts))
            take_out(valid_ts & (ts_us > latest_us), "future_ts",
                     f"later than the import's time {_iso_out(now)} + ingest.activity.future_tolerance_minutes "
                     f"({config.ingest.activity.future_tolerance_minutes:g})")
            take_out(valid_ts & (ts_us < earliest_us), "too_old",
                     f"before {_iso_out(earliest)}, the earliest event time an import accepts "
                     "(ingest.activity.earliest_event; epoch 0 or a wrong timestamp_unit?)")
            if spec.value != "none":
                raw_v = t.column(cols["value"])
                value = _numbers(raw_v)
                present_v = ~_mask(pc.is_null(_text(raw_v)))
                bad_v = present_v & (_mask(pc.is_null(value)) | ~_mask(pc.is_finite(value)))
                _check_share(path, cols["value"], f"a number ({spec.value})", bad_v, present_v, batch,
                             _text(raw_v))
                take_out(bad_v | ~present_v, "bad_value", f"the {spec.value} is missing or not a finite number")
                v = value.to_numpy(zero_copy_only=False)
                if spec.value == "duration":
                    take_out(np.nan_to_num(v, nan=-1) < 0, "bad_value", "negative duration")
                    seconds = value.cast(pa.float32())
                elif spec.value == "rating":
                    take_out(np.nan_to_num(v, nan=-np.inf) < spec.ratings.threshold, "below_threshold", "",
                             filtered=True)
                    kind = pa.array(np.full(n, spec.ratings.kind.strip().lower(), dtype=object), pa.string())
                elif spec.value == "count":
                    take_out(np.nan_to_num(v, nan=-1) < 0, "bad_value", "negative count")
                    take_out(np.nan_to_num(v, nan=0) < 1, "zero_count", "", filtered=True)
            known = _mask(pc.is_in(kind, value_set=pa.array(list(vocab), pa.string())))
            take_out(~known, "unknown_event_type", f"kind not in ingest.activity.events {sorted(vocab)}")
            if not keep.any():
                continue
            no_duration = [k for k, v in vocab.items() if v.duration == "none"]
            if no_duration:
                nd = _mask(pc.is_in(kind, value_set=pa.array(no_duration, pa.string())))
                seconds = pc.if_else(pa.array(nd), pa.scalar(None, pa.float32()), seconds)
            sel = pa.array(np.flatnonzero(keep))
            arrays: dict[str, Any] = {"user_id": user.take(sel), "item_id": item.take(sel),
                                      "event_type": kind.take(sel), "event_ts": ts.take(sel),
                                      "played_seconds": seconds.take(sel)}
            if has_platform:
                arrays["platform"] = _text(t.column(cols["platform"])).take(sel)
            if has_ids:
                if "event_id" in cols:
                    eid = _text(t.column(cols["event_id"])).take(sel)
                else:
                    from skyrec.data.activity import derived_event_ids

                    eid = derived_event_ids(pa.table({k: arrays[k] for k in ("user_id", "item_id", "event_ts",
                                                                             "event_type")}))
                arrays["event_id"] = eid
            part = pa.table(arrays)
            report.imported += part.num_rows
            if spec.value == "count":
                assert value is not None
                reps = np.minimum(value.take(sel).to_numpy(zero_copy_only=False), spec.max_count).astype(np.int64)
                capped = int((value.take(sel).to_numpy(zero_copy_only=False) > spec.max_count).sum())
                if capped:
                    report.notes.append(f"{capped} rows' counts capped at max_count {spec.max_count}")
                idx = np.repeat(np.arange(part.num_rows), reps)
                nth = np.arange(len(idx)) - np.repeat(np.cumsum(reps) - reps, reps)
                part = part.take(pa.array(idx))
                part = part.set_column(part.column_names.index("event_id"), "event_id",
                                       pc.binary_join_element_wise(part.column("event_id"),
                                                                   pa.array(nth.astype(str)), "#"))
            spill.add(part)
            if progress and time.monotonic() - said >= 2:  # a line every few seconds, not one a 4 MB block
                said = time.monotonic()
                progress(f"{path}: {report.rows_in:,} rows read")
        _end_of_reading(path, report, quarantine, parsed_bad_rows)
        report.invariant()  # raises when the terms do not add up
        written = _write_hours(config, out, key, spill, previous, progress)
        report.written = {**written, "quarantine": quarantine.write(out, key, previous)}
        report.seconds = time.time() - started
        kept = set(config.ingest.activity.event_types)
        kinds_written = written.get("kinds", {})
        skipped = sorted(set(kinds_written) - kept)
        if skipped:
            report.notes.append(f"kinds {skipped} are not in ingest.activity.event_types: the ingest counts them as "
                                "filtered (irrelevant_event_type)")
        unweighted = sorted(k for k in set(kinds_written) & kept if not config.training.weighting.get(k))
        if unweighted:
            report.notes.append(f"kinds {unweighted} have no weight in training.weighting: they are not interactions "
                                "for the models")
        out.write(f"{IMPORTS_DIR}/{key}.json", json.dumps(
            {"role": "interactions", "file": os.path.abspath(path), "digest": digest, "mapping": mapping,
             "quarantine": report.written["quarantine"], "hours": written.get("hours_list", []),
             "report": report.as_dict()}, sort_keys=True, default=str).encode())
        return report
    finally:
        spill.close()


_HOUR_US = 3_600_000_000
#: kept events gathered before they are written to a spill file (~45 MB of events): fewer, larger files
#: than one a read block, so that reading an hour back opens few of them
SPILL_ROWS = 1 << 20
#: spill files kept open while the hours are read back (each hour reads a piece of most of them); past this
#: many, the least recently read is closed and opened again when needed: file descriptors are bounded
SPILL_OPEN_FILES = 256


def _remove_abandoned_spills(folder: str) -> list[str]:
    """Remove the spill folders of imports whose process is gone (killed: nothing of theirs could clean up);
    returns what was removed. A folder's name holds its process id; a live process's folder is left alone."""
    import shutil

    removed: list[str] = []
    try:
        names = os.listdir(folder)
    except OSError:
        return removed
    for name in names:
        m = re.fullmatch(r"skyrec-import-(\d+)-\w+", name)
        if not m:
            continue
        try:
            os.kill(int(m.group(1)), 0)
            continue  # alive (or another user's process): not ours to judge
        except ProcessLookupError:
            pass
        except OSError:
            continue
        shutil.rmtree(os.path.join(folder, name), ignore_errors=True)
        removed.append(name)
    return removed


class _HourSpill:
    """The kept events of one file, on local disk until the hourly files are written, so the import's memory
    is a few batches and one hour's events, not the whole file nor a whole day. Each spill file (Arrow IPC,
    LZ4) holds about ``SPILL_ROWS`` events grouped by UTC hour of event time, a record batch per hour, and an
    index says where each hour's pieces are, in the order they came: an hour read back is in input order, so
    the stable sort by time within it keeps input order among events of the same time."""

    def __init__(self, schema: pa.Schema) -> None:
        import tempfile

        self.schema = schema
        _remove_abandoned_spills(tempfile.gettempdir())
        try:
            self._dir = tempfile.TemporaryDirectory(prefix=f"skyrec-import-{os.getpid()}-")
        except OSError as exc:
            raise self._failed(tempfile.gettempdir(), exc) from exc
        self._files: list[str] = []
        self._index: dict[int, list[tuple[int, int]]] = {}  # hour -> (spill file, batch in it), in input order
        self._held: list[pa.Table] = []
        self._held_rows = 0
        self.rows = 0

    def add(self, part: pa.Table) -> None:
        self._held.append(part.select(self.schema.names).cast(self.schema))
        self._held_rows += part.num_rows
        self.rows += part.num_rows
        if self._held_rows >= SPILL_ROWS:
            self._spill()

    def _spill(self) -> None:
        if not self._held_rows:
            return
        part = pa.concat_tables(self._held)
        self._held, self._held_rows = [], 0
        hour = pc.divide(part.column("event_ts").cast(pa.int64()), _HOUR_US).to_numpy()
        order = np.argsort(hour, kind="stable")
        hour = hour[order]
        part = part.take(pa.array(order)).combine_chunks()
        cuts = np.flatnonzero(np.diff(hour)) + 1
        name = os.path.join(self._dir.name, f"{len(self._files)}.arrow")
        index: list[tuple[int, int]] = []  # (hour, batch): indexed once the whole file is written
        try:
            with pa.ipc.new_file(name, self.schema, options=pa.ipc.IpcWriteOptions(compression="lz4")) as w:
                for a, b in zip(np.concatenate([[0], cuts]).tolist(), np.concatenate([cuts, [len(hour)]]).tolist(),
                                strict=True):
                    for batch in part.slice(a, b - a).to_batches():
                        w.write_batch(batch)
                        index.append((int(hour[a]), len(index)))
        except OSError as exc:
            raise self._failed(name, exc) from exc
        for h, k in index:
            self._index.setdefault(h, []).append((len(self._files), k))
        self._files.append(name)

    @staticmethod
    def _failed(where: str, exc: OSError) -> SpillFailed:
        return SpillFailed(f"the import's working space on local disk failed at {where}: {type(exc).__name__}: "
                           f"{exc}. It holds the file's kept events until its hourly files are written (about "
                           "their compressed size): free space there, or set TMPDIR to a larger disk, and run "
                           "the same import again")

    def hours(self) -> Iterator[tuple[int, pa.Table]]:
        """(hour since the epoch, its events), in order of hour."""
        from collections import OrderedDict

        self._spill()
        readers: OrderedDict[int, tuple[Any, Any]] = OrderedDict()  # spill file -> (its file, its reader)

        def reader(f: int) -> Any:
            if f in readers:
                readers.move_to_end(f)
                return readers[f][1]
            if len(readers) >= SPILL_OPEN_FILES:
                readers.popitem(last=False)[1][0].close()
            source = pa.OSFile(self._files[f], "rb")
            readers[f] = (source, pa.ipc.open_file(source))
            return readers[f][1]

        try:
            for hour in sorted(self._index):
                batches = []
                for f, k in self._index[hour]:
                    try:
                        batches.append(reader(f).get_batch(k))
                    except OSError as exc:
                        raise self._failed(self._files[f], exc) from exc
                yield hour, pa.Table.from_batches(batches, self.schema)
        finally:
            for source, _ in readers.values():
                source.close()

    def close(self) -> None:
        self._dir.cleanup()


def _write_hours(config: Any, out: _Output, key: str, spill: _HourSpill, previous: dict[str, Any] | None,
                 progress: Callable[[str], None] | None = None) -> dict[str, Any]:
    """One Parquet file per hour of event time, rows in time order (input order among equal times), an hour
    at a time from ``spill``; to an object store ``OBJECT_STORE_CONCURRENCY`` files at a time."""
    prefix = config.source.activity_prefix
    names: list[str] = []
    kinds: Counter[str] = Counter()
    first = last = None
    pending: list[tuple[str, bytes]] = []
    written = 0
    said = time.monotonic()
    for hour, table in spill.hours():
        table = table.take(pc.sort_indices(table, sort_keys=[("event_ts", "ascending")]))  # stable
        for v in pc.value_counts(table.column("event_type").combine_chunks()):
            kinds[v["values"].as_py()] += v["counts"].as_py()
        h = dt.datetime.fromtimestamp(hour * 3600, dt.UTC)
        rel = f"{prefix}/date={h:%Y-%m-%d}/hour={h:%H}/import-{key}.parquet"
        pending.append((rel, _parquet_bytes(table)))
        names.append(rel)
        first = first or h
        last = h
        written += table.num_rows
        if len(pending) >= OBJECT_STORE_CONCURRENCY:
            out.write_many(pending)
            pending = []
            if progress and time.monotonic() - said >= 5:  # a line every few seconds, not one a batch
                said = time.monotonic()
                progress(f"{len(names):,} hourly files written ({written:,} of {spill.rows:,} events)")
    out.write_many(pending)
    gone = sorted(set((previous or {}).get("hours", [])) - set(names))
    out.remove_many(gone)  # hours the earlier version of this file had and this one has not
    return {"events": written, "hours": len(names), "hours_list": names,
            "removed_hours": len(gone), "kinds": dict(sorted(kinds.items())),
            "first_hour": first.isoformat() if first else None,
            "end": (last + dt.timedelta(hours=1)).isoformat() if last else None}


# ---- items --------------------------------------------------------------------------------------------------

_TRUE = {"1", "true", "yes", "y", "t", "1.0"}
_FALSE = {"0", "false", "no", "n", "f", "0.0", ""}
_OTHER_SEPARATORS = (",", ";", "|", "/")  # what a genre list written as text may be split on


def _list_typed(col: Any) -> bool:
    return pa.types.is_list(col.type) or pa.types.is_large_list(col.type)


def _list_notes(cols: dict[str, str], sep: str, seps: dict[str, Counter[str]],
                odd: dict[str, Counter[str]]) -> list[str]:
    """What a person should check in how the genres and formats were read: a text list column in which no value
    holds ``list_separator`` but many hold another separator (each such value became one genre), and flag
    columns with values that are neither true nor false (read as false)."""
    notes = []
    for name, counts in seps.items():
        values = counts.pop("", 0)
        if not values or counts.get(sep):
            continue
        for other, k in counts.most_common():
            if other != sep and k >= max(2, 0.2 * values):
                notes.append(f"{name} (column {cols[name]!r}): no value holds list_separator {sep!r} and {k:,} of "
                             f"{values:,} hold {other!r}, each read as one {name[:-1]}; if it is a list, set "
                             f"list_separator: {other!r}")
                break
    for flag, counts in odd.items():
        if counts:
            eg = ", ".join(f"{v!r} x{k:,}" for v, k in counts.most_common(3))
            notes.append(f"flag column {flag!r}: {sum(counts.values()):,} values are neither true "
                         f"({', '.join(sorted(_TRUE))}) nor false ({', '.join(sorted(_FALSE - {''}))}, empty), read "
                         f"as false: {eg}")
    return notes


def _split_list(col: Any, sep: str, seen: Counter[str] | None = None) -> list[list[str] | None]:
    """Each row's list. For text split on ``sep``, ``seen`` counts the values (under ``""``) and those holding
    each of ``_OTHER_SEPARATORS`` (for ``_list_notes``)."""
    if isinstance(col, pa.ChunkedArray):
        col = col.combine_chunks() if col.num_chunks else pa.array([], col.type)
    if _list_typed(col):
        return [[str(x).strip() for x in v if x is not None and str(x).strip()] if v is not None else None
                for v in col.to_pylist()]
    values = _text(col).to_pylist()
    if seen is not None:
        for v in values:
            if v:
                seen.update([c for c in _OTHER_SEPARATORS if c in v] + [""])
    return [[p.strip() for p in v.split(sep) if p.strip()] if v else None for v in values]


def _duration(value: Any) -> int | None:
    """Whole seconds, read as the source's records are (``skyrec.data.catalogue.parse_duration``: seconds,
    ISO-8601, clock; 0 s to 7 days); None when it is none of them -- an item the catalogue would refuse."""
    from skyrec.data.catalogue import parse_duration

    if value is None:
        return None
    try:
        return parse_duration(value.strip() if isinstance(value, str) else value)
    except ValueError:
        return None


def _iso_out(v: Any) -> str | None:
    return None if v is None else v.astimezone(dt.UTC).isoformat().replace("+00:00", "Z")


def import_items(config: Any, path: str, spec: Any | None = None, *,
                 progress: Callable[[str], None] | None = None) -> FileReport:
    """Convert an items file into metadata JSON records (brand, series, episode, availability) in the source."""
    started = time.time()
    spec = spec or config.ingest.files.items
    out = _Output(config)
    key = _key("items", path)
    report = FileReport("items", path, key)
    mapping = _mapping_digest("items", spec, {"prefix": config.source.metadata_prefix,
                                              "streams": list(config.source.metadata_streams),
                                              "layout": ITEMS_LAYOUT})
    previous = _state(out, key)
    digest, done = _already_imported(previous, path, mapping, report, started)
    if done:
        return report
    cols = _columns("items", spec)
    flags = {"genres": list(spec.genre_flags), "formats": list(spec.format_flags)}
    wanted = list(dict.fromkeys([*cols.values(), *flags["genres"], *flags["formats"]]))
    quarantine = _Quarantine(path, report)
    parsed_bad_rows: list[tuple[int | None, str]] = []
    now = dt.datetime.now(dt.UTC).replace(microsecond=0)
    default_from = spec.available_from_default
    records: dict[str, dict[str, Any]] = {}  # item id -> record parts (first row of an id wins)
    list_columns = tuple(cols[f] for f in ("genres", "formats") if f in cols)
    numeric = (*[cols[f] for f in ("duration", "release_date", "available_from", "available_until", "updated")
                 if f in cols], *flags["genres"], *flags["formats"])
    odd: dict[str, Counter[str]] = {f: Counter() for f in [*flags["genres"], *flags["formats"]]}
    seps: dict[str, Counter[str]] = {"genres": Counter(), "formats": Counter()}  # "": values; else: holding it
    for batch in read_batches(path, spec, wanted, lists=list_columns, numeric=numeric,
                              on_bad_row=lambda n, msg: parsed_bad_rows.append((n, msg))):
        t = batch.table
        n = t.num_rows
        report.rows_in += n
        rownum = batch.rows
        text = {f: _text(t.column(c)).to_pylist() for f, c in cols.items() if f not in ("genres", "formats")}
        times: dict[str, list[Any]] = {}
        for f in ("release_date", "available_from", "available_until", "updated"):
            if f in cols:
                raw = t.column(cols[f])
                parsed = parse_times(raw, "auto", spec.date_format)
                present = ~_mask(pc.is_null(_text(raw)))
                bad = _mask(pc.is_null(parsed)) & present
                _check_share(path, cols[f], "a date" + (f" ({spec.date_format})" if spec.date_format else ""),
                             bad, present, batch, _text(raw))
                times[f] = [None if b else v for v, b in zip(parsed.to_pylist(), bad, strict=True)]
                times[f + "_bad"] = bad.tolist()
        duration = None
        bad_d = np.zeros(n, dtype=bool)
        if "duration" in cols:
            raw_d = t.column(cols["duration"])
            numbers = pa.types.is_integer(raw_d.type) or pa.types.is_floating(raw_d.type)
            duration = [_duration(v) for v in (raw_d if numbers else _text(raw_d)).to_pylist()]
            present_d = ~_mask(pc.is_null(_text(raw_d)))
            if pa.types.is_floating(raw_d.type):  # NaN: how pandas writes a missing number, an absent duration
                present_d &= ~_mask(pc.is_nan(raw_d))
            bad_d = present_d & np.array([d is None for d in duration], dtype=bool)
            _check_share(path, cols["duration"], "a duration (seconds, PT28M or 0:28:00)", bad_d, present_d, batch,
                         _text(raw_d))
        lists: dict[str, list[list[str]]] = {}
        for name in ("genres", "formats"):
            got: list[list[str]] = [[] for _ in range(n)]
            if name in cols:
                for i, v in enumerate(_split_list(t.column(cols[name]), spec.list_separator, seps[name])):
                    got[i].extend(v or [])
            for flag in flags[name]:
                said = ["" if v is None else str(v).strip().lower() for v in t.column(flag).to_pylist()]
                odd[flag].update(v for v in said if v not in _TRUE and v not in _FALSE)
                for pos in np.flatnonzero([v in _TRUE for v in said]).tolist():
                    got[pos].append(flag)
            lists[name] = got
        # every field of the row loop as a list of n, built once per batch (a default built per row made the
        # import quadratic in the batch's rows)
        nones: list[Any] = [None] * n
        got_text = {f: text.get(f, nones) for f in ("brand", "brand_title", "series", "series_title", "masterbrand")}
        got_time = {f: times.get(f, nones) for f in ("release_date", "available_from", "available_until", "updated")}
        bad_time = [(f, times[f + "_bad"]) for f in ("release_date", "available_from", "available_until", "updated")
                    if f + "_bad" in times]
        undecodable = {int(i): msg for mask, msg in batch.undecodable_groups(spec.encoding)
                       for i in np.flatnonzero(mask)}
        for i in range(n):
            row = int(rownum[i])
            iid, title = text["id"][i], text["title"][i]
            values = {c: text[f][i] for f, c in cols.items() if f in text}
            if i in undecodable:
                quarantine.add("malformed_row", [row], [values], undecodable[i])
                continue
            if iid is None:
                quarantine.add("missing_id", [row], [values], "the id is empty")
                continue
            if title is None:
                quarantine.add("missing_title", [row], [values], "the title is empty")
                continue
            bad_field = next((f for f, bad in bad_time if bad[i]), None)
            if bad_field:
                quarantine.add("bad_date", [row], [values], f"{bad_field}: not a date")
                continue
            if bad_d[i]:
                quarantine.add("bad_duration", [row], [values], "duration: not a duration of 0 s to 7 days "
                               "(seconds, ISO-8601 PT28M or clock 0:28:00)")
                continue
            start = got_time["available_from"][i] or got_time["release_date"][i]
            until = got_time["available_until"][i]
            if start is not None and until is not None and until <= start:
                # the item would be quarantined downstream and fall back to "available from its release, for ever"
                quarantine.add("bad_date", [row], [values], f"available_until {_iso_out(until)} is not after "
                               f"{'available_from' if got_time['available_from'][i] else 'release_date'}"
                               f" {_iso_out(start)}: the window is empty")
                continue
            if iid in records:
                quarantine.add("duplicate_item", [row], [values], f"id {iid!r} already on row {records[iid]['row']}")
                continue
            records[iid] = {"row": row, "id": iid, "title": title, "brand": got_text["brand"][i],
                            "brand_title": got_text["brand_title"][i],
                            "series": got_text["series"][i],
                            "series_title": got_text["series_title"][i],
                            "masterbrand": got_text["masterbrand"][i],
                            "genres": lists["genres"][i], "formats": lists["formats"][i],
                            "release": got_time["release_date"][i],
                            "from": got_time["available_from"][i],
                            "until": got_time["available_until"][i],
                            "updated": got_time["updated"][i],
                            "duration": duration[i] if duration is not None else None}
        if progress:
            progress(f"{path}: {report.rows_in:,} rows read")
    _end_of_reading(path, report, quarantine, parsed_bad_rows)
    report.notes.extend(_list_notes(cols, spec.list_separator, seps, odd))
    report.imported = len(records)
    report.invariant()
    written = _write_items(config, out, key, records, now, default_from, previous,
                           (lambda msg: progress(f"{path}: {msg}")) if progress else None)
    report.notes.extend(written.pop("notes"))
    report.written = {**written, "quarantine": quarantine.write(out, key, previous)}
    report.seconds = time.time() - started
    out.write(f"{IMPORTS_DIR}/{key}.json", json.dumps(
        {"role": "items", "file": os.path.abspath(path), "digest": digest, "mapping": mapping,
         "quarantine": report.written["quarantine"], "ids": sorted(records), "objects": written["objects_list"],
         "report": report.as_dict()}, sort_keys=True, default=str).encode())
    return report


def _examples(items: list[str], sep: str, more: str = " ...") -> str:
    """The first three of ``items`` for a note, and ``more`` when there are more."""
    return sep.join(items[:3]) + (more if len(items) > 3 else "")


def _fresh(candidate: str, taken: set[str]) -> str:
    """``candidate``, or ``candidate:2``, ``:3`` ... when that id is taken in its namespace."""
    out, n = candidate, 1
    while out in taken:
        n += 1
        out = f"{candidate}:{n}"
    taken.add(out)
    return out


@dataclass
class _Programmes:
    """Each item's brand and series in the source's programme records, from the file's three id namespaces.

    A file's item, brand and series columns are separate namespaces (a relational export numbers each table
    from 1; series are often numbered within their brand), while the source has one namespace per record type,
    and a series names its one brand. Read as written, series ``1`` of brand A and series ``1`` of brand B were
    one series (B's items became A's), and an unbranded item ``e4`` was merged into a brand ``e4``. So:

    - an item without a brand and without a series is its own brand, under its item id (``item:<id>`` when the
      file has a brand with that id): the brand cap never groups it with anything;
    - an item without a brand but with a series: the series is its programme, its own brand, under the series
      id (``series:<id>`` when that is a brand's id), titled by the series: the cap groups its episodes;
    - a series is one per (brand, series id): an id used under one brand keeps its id; one used under several is
      ``<brand>:<series>`` for each.
    A generated id that the file uses as well gets ``:2``, ``:3`` ..."""

    brand_of: dict[str, str]          # item id -> brand record id
    series_of: dict[str, str | None]  # item id -> series record id
    brands: dict[str, dict[str, Any]]  # brand id -> its record's fields (title, masterbrand, own)
    series: dict[str, dict[str, Any]]  # series id -> its record's fields (brand id, title)
    notes: list[str]

    @classmethod
    def of(cls, records: dict[str, dict[str, Any]]) -> _Programmes:
        declared = {r["brand"] for r in records.values() if r["brand"] is not None}
        brand_ids, series_ids = set(declared), {r["series"] for r in records.values() if r["series"] is not None}
        own: dict[tuple[str, str], str] = {}  # ("item" | "series", id) -> generated brand id
        brand_of: dict[str, str] = {}
        renamed: dict[str, list[str]] = {"item": [], "series": []}
        for r in records.values():
            if r["brand"] is not None:
                brand_of[r["id"]] = r["brand"]
                continue
            kind, base = ("series", r["series"]) if r["series"] is not None else ("item", r["id"])
            if (kind, base) not in own:
                own[(kind, base)] = _fresh(f"{kind}:{base}" if base in declared else base, brand_ids)
                if own[(kind, base)] != base:
                    renamed[kind].append(f"{base!r} -> {own[(kind, base)]!r}")
            brand_of[r["id"]] = own[(kind, base)]
        under: dict[str, list[str]] = {}  # series id -> its brands, in the file's order
        for s, b in dict.fromkeys((r["series"], brand_of[r["id"]]) for r in records.values()
                                  if r["series"] is not None):
            under.setdefault(s, []).append(b)
        shared = {s for s, bs in under.items() if len(bs) > 1}
        sid: dict[tuple[str, str], str] = {}
        for s, bs in under.items():
            for b in bs:
                sid[(b, s)] = _fresh(f"{b}:{s}", series_ids) if s in shared else s
        brands: dict[str, dict[str, Any]] = {}
        series: dict[str, dict[str, Any]] = {}
        differ: dict[str, list[str]] = {"brand": [], "series": []}
        series_of: dict[str, str | None] = {}

        def given(kind: str, rid: str, got: dict[str, Any], name: str, value: str | None, row: int) -> None:
            """The first value a row gives is kept; another one a later row gives is noted."""
            if value is None:
                return
            if got.get(name) is None:
                got[name], got[name + "_row"] = value, row
            elif got[name] != value:
                differ[kind].append(f"{kind} {rid!r} {name}: row {got[name + '_row']} {got[name]!r}, row {row} "
                                    f"{value!r}")

        for r in records.values():
            b, row = brand_of[r["id"]], r["row"]
            if r["brand"] is None:  # its own brand: titled by its series, else by the item
                got = brands.setdefault(b, {"own": True, "title": (r["series_title"] or r["series"])
                                            if r["series"] is not None else r["title"], "masterbrand": None})
            else:
                got = brands.setdefault(b, {"own": False, "title": None, "masterbrand": None})
                given("brand", b, got, "title", r["brand_title"], row)
            given("brand", b, got, "masterbrand", r["masterbrand"], row)
            if r["series"] is None:
                series_of[r["id"]] = None
                continue
            s = series_of[r["id"]] = sid[(b, r["series"])]
            got = series.setdefault(s, {"brand_id": b, "title": None})
            given("series", s, got, "title", r["series_title"], row)
        for bid, got in brands.items():
            got["title"] = got["title"] or bid
        for s, got in series.items():
            got["title"] = got["title"] or s
        notes = []
        if shared:
            notes.append(f"{len(shared):,} series id{'s are' if len(shared) > 1 else ' is'} used under more than one "
                         "brand, read as one series per brand (<brand>:<series>): " + _examples(
                             [f"{s!r} under {len(under[s]):,} brands ({_examples(list(map(repr, under[s])), ', ', ', ...')})"
                              for s in sorted(shared)], "; "))
        for kind in ("item", "series"):
            if renamed[kind]:
                notes.append(f"{len(renamed[kind]):,} {kind}s without a brand are their own brand under another id "
                             f"than their own, which a brand in the file has: {_examples(renamed[kind], ', ')}")
        for kind, what in (("brand", "title or masterbrand"), ("series", "title")):
            if differ[kind]:
                notes.append(f"{len(differ[kind]):,} rows give a {kind} another {what} than an earlier row; the "
                             f"first one given is kept: {_examples(differ[kind], '; ')}")
        return cls(brand_of, series_of, brands, series, notes)


def _write_items(config: Any, out: _Output, key: str, records: dict[str, dict[str, Any]], now: dt.datetime,
                 default_from: str, previous: dict[str, Any] | None,
                 progress: Callable[[str], None] | None = None) -> dict[str, Any]:
    """The source's metadata records. Programmes go to one folder per record type (``brand/``, ``series/``):
    a brand and a series may share an id, and one object must not overwrite the other."""
    prefix = config.source.metadata_prefix
    s_prog, s_ep, s_av = (list(config.source.metadata_streams) + ["programmes", "episodes", "availability"])[:3]
    stamp = _iso_out(now)
    objects: list[str] = []
    pending: list[tuple[str, bytes]] = []

    def put(stream: str, rid: str, record: dict[str, Any], folder: str = "") -> None:
        rel = f"{prefix}/{stream}/import-{key}/{folder}{urllib.parse.quote(rid, safe='')}-0.json"
        pending.append((rel, json.dumps(record, separators=(",", ":"), sort_keys=True, default=str).encode()))
        objects.append(rel)
        if len(pending) >= 4096:
            out.write_many(pending)
            pending.clear()
            if progress and len(objects) % (4096 * 16) == 0:  # ~65k objects: every 10-30 s on a local disk
                progress(f"{len(objects):,} of {total:,} objects written")

    prog = _Programmes.of(records)
    withdrawn = sorted(set((previous or {}).get("ids", [])) - set(records))
    total = 2 * len(records) + len(prog.brands) + len(prog.series) + len(withdrawn)
    updated_of: dict[str, str | None] = {}  # a programme's updated time: that of its first item
    for r in records.values():
        updated = _iso_out(r["updated"]) or stamp
        brand, sid = prog.brand_of[r["id"]], prog.series_of[r["id"]]
        updated_of.setdefault(f"brand/{brand}", updated)
        if sid is not None:
            updated_of.setdefault(f"series/{sid}", updated)
        parent = {"id": sid, "type": "series"} if sid is not None else {"id": brand, "type": "brand"}
        episode: dict[str, Any] = {"id": r["id"], "type": "episode", "title": r["title"], "parent": parent,
                                   "genres": r["genres"], "formats": r["formats"], "updated": updated}
        if r["release"] is not None:
            episode["release_date"] = _iso_out(r["release"])
        if r["duration"] is not None:
            episode["duration"] = r["duration"]
        put(s_ep, r["id"], episode)
        start = r["from"] or r["release"]
        put(s_av, r["id"], {"id": r["id"], "type": "availability", "updated": updated,
                            "available_from": _iso_out(start) if start is not None else default_from,
                            "available_until": _iso_out(r["until"])})
    for bid, b in prog.brands.items():
        put(s_prog, bid, {"id": bid, "type": "brand", "title": b["title"], "updated": updated_of[f"brand/{bid}"],
                          **({"masterbrand": b["masterbrand"]} if b["masterbrand"] else {})}, "brand/")
    for sid, s in prog.series.items():
        put(s_prog, sid, {"id": sid, "type": "series", "brand_id": s["brand_id"], "title": s["title"],
                          "updated": updated_of[f"series/{sid}"]}, "series/")
    for iid in withdrawn:  # items the earlier version of this file had and this one has not
        put(s_ep, iid, {"id": iid, "type": "episode", "deleted": True, "updated": stamp})
    out.write_many(pending)
    return {"items": len(records), "brands": len(prog.brands),
            "own_brands": sum(1 for b in prog.brands.values() if b["own"]), "series": len(prog.series),
            "withdrawn": len(withdrawn), "objects": len(objects), "objects_list": objects, "notes": prog.notes}


def run_import(config: Any, *, interactions: str | None = None, items: str | None = None,
               progress: Callable[[str], None] | None = None) -> dict[str, Any]:
    """Import the given files (items first: activity refers to them). Returns the summary."""
    reports = []
    if items:
        reports.append(import_items(config, items, progress=progress))
    if interactions:
        reports.append(import_interactions(config, interactions, progress=progress))
    summary: dict[str, Any] = {"source": config.source_url, "files": []}
    for r in reports:
        d = r.as_dict()
        d["written"] = {k: v for k, v in d["written"].items() if not k.endswith("_list")}
        d["invariant"] = r.invariant()
        summary["files"].append(d)
    acts = [r for r in reports if r.role == "interactions"]
    if acts and acts[0].written.get("end"):
        summary["activity_range"] = {"start": acts[0].written["first_hour"], "end": acts[0].written["end"]}
    return summary
