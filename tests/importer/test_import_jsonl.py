"""JSON lines from a user's own export: one bad line is one quarantined row under its line number, never a
failed file; numbers keep their exact text (ids beyond 2^63 stay distinct); blocks read by pyarrow and blocks
read line by line number their rows the same way."""

from __future__ import annotations

import json
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from importer_files import T0, local_config

from skyrec.data import importer
from skyrec.data.importer import ImportFailed, import_interactions, import_items

COLUMNS = {"user": "user", "item": "item", "timestamp": "ts"}


def _config(home: Path, **extra: object) -> object:
    return local_config(home, {"ingest": {"files": {"interactions": {"format": "jsonl", "columns": COLUMNS,
                                                                     **extra}}}})


def _line(k: int, user: object = 1, item: object = 2) -> str:
    return json.dumps({"user": user, "item": item, "ts": T0 + 60 * k, "note": "x"})


def _activity(cfg: object) -> pa.Table:
    files = sorted(Path(cfg.source_url, cfg.source.activity_prefix).rglob("*.parquet"))  # type: ignore[attr-defined]
    return pa.concat_tables([pq.read_table(f) for f in files], promote_options="default")


def _quarantined(cfg: object, key: str, reason: str) -> list[dict]:
    path = Path(cfg.source_url, "_imports", key, "quarantine", f"{reason}.jsonl")  # type: ignore[attr-defined]
    return [json.loads(line) for line in path.read_text().splitlines()]


BAD_LINES = {
    5: '{"user": 1, "item": ',  # cut short
    9: '[1, 2, 3]',  # an array, not an object
    12: '"just text"',
    17: '{"user": {"id": 1}, "item": 2, "ts": 874965758}',  # an object where a value belongs
    21: '{"user": [1, 2], "item": 2, "ts": 874965758}',  # an array where a value belongs
    26: '{"user": 1 "item": 2}',  # a missing comma
}


def test_each_bad_line_is_quarantined_under_its_line_and_the_rest_imported(tmp_path: Path) -> None:
    lines = [_line(k, user=f"u{k % 3}" if k % 2 else k % 3) for k in range(1, 41)]  # ids: numbers and text
    for number, text in BAD_LINES.items():
        lines[number - 1] = text
    lines[30 - 1] = ""  # a blank line: not a row
    path = tmp_path / "plays.jsonl"
    path.write_text("\n".join(lines) + "\n")
    cfg = _config(tmp_path / "home")
    r = import_interactions(cfg, str(path))
    assert r.rows_in == 39 and r.quarantined == {"malformed_row": 6} and r.imported == 33
    assert r.invariant()["holds"]
    bad = _quarantined(cfg, r.key, "malformed_row")
    assert sorted(q["row"] for q in bad) == sorted(BAD_LINES)
    errors = {q["row"]: q["values"]["error"] for q in bad}
    assert errors[9].startswith("a JSON list, not an object") and errors[12].startswith("a JSON string")
    assert "column 'user' holds an object" in errors[17] and "column 'user' holds an array" in errors[21]
    assert errors[5].startswith("not a JSON object (Expecting value at column 21)")
    users = set(_activity(cfg).column("user_id").to_pylist())
    assert users == {"0", "1", "2", "u0", "u1", "u2"}  # 1 and "1" are the same text, as in a CSV file


def test_a_bad_byte_quarantines_its_line_naming_the_column(tmp_path: Path) -> None:
    lines = [_line(k).encode() for k in range(1, 11)]
    lines[3] = b'{"user": "caf\xe9", "item": 2, "ts": 874965758}'  # latin-1 in a UTF-8 file
    lines[6] = b'{"user": 1, "item": 2, "ts": 874965758, "note": "\xff"}'  # in a column not imported: kept
    path = tmp_path / "plays.jsonl"
    path.write_bytes(b"\n".join(lines) + b"\n")
    cfg = _config(tmp_path / "home")
    r = import_interactions(cfg, str(path))
    assert r.imported == 9 and r.quarantined == {"malformed_row": 1}
    (q,) = _quarantined(cfg, r.key, "malformed_row")
    assert q["row"] == 4 and "['user'] hold bytes that are not valid utf8" in q["error"]
    assert q["values"]["user"] == "caf\ufffd"


def test_a_bad_byte_elsewhere_does_not_quarantine_a_value_that_holds_u_fffd(tmp_path: Path) -> None:
    """U+FFFD is a character like any other: a user id that holds one (written plainly or as an escape) is
    imported, though its line also has a bad byte in a column not imported or in a key; a bad byte in the
    mapped column itself still quarantines the line."""
    lines = [_line(k).encode() for k in range(1, 7)]
    lines[1] = '{"user": "a\ufffdb", "item": 2, "ts": 874965758, "note": "'.encode() + b'\xff"}'
    lines[2] = b'{"user": "c\\ufffdd", "item": 2, "ts": 874965758, "n\xffote": 1}'
    lines[3] = '{"user": "\ufffd", "item": 2, "ts": 874965758, "note": "'.encode() + b'\xfe\xff"}'
    lines[4] = '{"user": "e\ufffd", "item": 2, "ts": 874965758, "note": "\ufffd'.encode() + b'\xc3"}'
    lines[5] = '{"user": "f\ufffd'.encode() + b'\xe9", "item": 2, "ts": 874965758}'
    path = tmp_path / "plays.jsonl"
    path.write_bytes(b"\n".join(lines) + b"\n")
    cfg = _config(tmp_path / "home")
    r = import_interactions(cfg, str(path))
    assert r.imported == 5 and r.quarantined == {"malformed_row": 1}, (r.imported, r.quarantined)
    (q,) = _quarantined(cfg, r.key, "malformed_row")
    assert q["row"] == 6 and "['user'] hold bytes that are not valid utf8" in q["error"]
    assert q["values"]["user"] == "f\ufffd\ufffd"
    users = set(_activity(cfg).column("user_id").to_pylist())
    assert {"a\ufffdb", "c\ufffdd", "\ufffd", "e\ufffd"} <= users


def test_another_encoding_is_read_and_a_byte_it_cannot_decode_names_its_line(tmp_path: Path) -> None:
    path = tmp_path / "plays.jsonl"
    path.write_bytes(b"\n".join([_line(1).encode(), '{"user": "José", "item": 2, "ts": 874965758}'.encode("latin-1"),
                                 b""]))
    r = import_interactions(_config(tmp_path / "home", encoding="latin-1"), str(path))
    assert r.imported == 2
    assert "José" in set(_activity(_config(tmp_path / "home")).column("user_id").to_pylist())
    other = tmp_path / "ascii.jsonl"
    other.write_bytes(b"\n".join([_line(1).encode(), _line(2).encode(), b'{"user": "\xe9"}', b""]))
    with pytest.raises(ImportFailed, match=r"ascii\.jsonl: line 3, byte 11 is not valid ascii text"):
        import_interactions(_config(tmp_path / "home2", encoding="ascii"), str(other))


def test_ids_keep_their_exact_text(tmp_path: Path) -> None:
    """pyarrow reads an integer beyond 2^63 as a double: two 64-bit ids that differ in the last digits would be
    one user. An id written 7.0 stays "7.0"."""
    big = [18446744073709551615, 18446744073709551614, 9223372036854775808]
    files = {"big": [_line(k, user=u) for k, u in enumerate(big, start=1)],  # each file of one JSON type
             "float": [_line(4, user=7.0), _line(5, user=8.5)], "bool": [_line(6, user=True)]}
    for name, lines in files.items():
        (tmp_path / f"{name}.jsonl").write_text("\n".join(lines) + "\n")
    cfg = _config(tmp_path / "home")
    for name in files:
        assert import_interactions(cfg, str(tmp_path / f"{name}.jsonl")).imported == len(files[name])
    assert set(_activity(cfg).column("user_id").to_pylist()) == {*map(str, big), "7.0", "8.5", "true"}


def test_blocks_read_both_ways_number_their_rows_alike(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Small blocks, so that clean blocks go through pyarrow and the blocks holding a bad line (or a value whose
    JSON type changes) are read line by line: a row's number is its line whichever way its block was read."""
    monkeypatch.setattr(importer, "BLOCK_BYTES", 400)
    lines = [_line(k) for k in range(1, 121)]
    lines[10 - 1] = "{"
    lines[77 - 1] = "not json"
    lines[47 - 1] = ""  # a blank line: pyarrow skips it, so its block is read line by line (numbers kept)
    lines[50 - 1] = json.dumps({"user": 1, "item": 2, "ts": 32503680000})  # year 3000, after the blank line
    lines[60 - 1] = json.dumps({"user": 1, "item": 2, "ts": 32503680000})  # and in a clean block
    lines[90 - 1] = json.dumps({"user": "", "item": 2, "ts": T0})  # an empty id: text among numbers
    lines[100 - 1] = json.dumps({"user": None, "item": 2, "ts": T0})  # a null id, in a block pyarrow reads
    path = tmp_path / "plays.jsonl"
    path.write_text("\n".join(lines))  # no newline at the end
    seen = {"fast": 0, "slow": 0}
    fast, slow = importer._jsonl_fast, importer._jsonl_slow

    def counting_fast(*a: object, **k: object) -> object:
        out = fast(*a, **k)
        seen["fast" if out is not None else "slow"] += 1
        return out

    monkeypatch.setattr(importer, "_jsonl_fast", counting_fast)
    cfg = _config(tmp_path / "home")
    r = import_interactions(cfg, str(path))
    assert seen["fast"] >= 10 and seen["slow"] == 4
    assert r.rows_in == 119 and r.imported == 113 and r.invariant()["holds"]
    assert sorted(q["row"] for q in _quarantined(cfg, r.key, "malformed_row")) == [10, 77]
    assert [q["row"] for q in _quarantined(cfg, r.key, "future_ts")] == [50, 60]
    assert [q["row"] for q in _quarantined(cfg, r.key, "missing_field")] == [90, 100]
    assert slow is importer._jsonl_slow


def test_a_column_missing_from_every_line_is_named(tmp_path: Path) -> None:
    path = tmp_path / "plays.jsonl"
    path.write_text("{\n" + "\n".join(json.dumps({"user": 1, "item": 2, "time": T0}) for _ in range(3)) + "\n")
    with pytest.raises(ImportFailed, match=r"column 'ts' not found .* the file has columns \['item', 'time', 'user'\]"):
        import_interactions(_config(tmp_path / "home"), str(path))


def test_item_genres_as_arrays_or_text_in_one_file(tmp_path: Path) -> None:
    rows = ['{"id": "a", "title": "A", "tags": ["Drama", "Comedy"]}', '{"id": "b", "title": "B", "tags": "Drama|Soap"}',
            '{"id": "c", "title": "C", "tags": [["nested"]]}', '{"id": "d", "title": "D", "tags": null}']
    bad_bytes = [b'{"id": "e", "title": "E", "tags": ["Drama", "\xff"]}',  # in a genre: the row is quarantined
                 '{"id": "f", "title": "F", "tags": ["\ufffd"], "x": "'.encode() + b'\xff"}']  # not in one: kept
    path = tmp_path / "items.jsonl"
    path.write_bytes(b"\n".join([*(r.encode() for r in rows), *bad_bytes]) + b"\n")
    cfg = local_config(tmp_path / "home", {"ingest": {"files": {"items": {"columns": {
        "id": "id", "title": "title", "genres": "tags"}, "list_separator": "|"}}}})
    r = import_items(cfg, str(path))
    assert r.imported == 4 and r.quarantined == {"malformed_row": 2}
    genres = {}
    for f in Path(cfg.source_url, "metadata", "episodes").rglob("*.json"):
        rec = json.loads(f.read_text())
        genres[rec["id"]] = rec.get("genres")
    assert sorted(genres["a"]) == ["Comedy", "Drama"] and sorted(genres["b"]) == ["Drama", "Soap"]
    assert genres["d"] == [] and genres["f"] == ["\ufffd"] and set(genres) == {"a", "b", "d", "f"}


def test_a_line_that_is_not_exactly_one_object_is_malformed_in_a_block_pyarrow_could_read(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """pyarrow reads ``null`` as a row of nulls (and crashes the process on a block whose first line is
    ``null``) and two objects on one line as two rows: with a blank line in the same block the row count still
    matched the line count, so both objects were imported and the rows after them numbered wrongly."""
    import pyarrow.json as pj

    handed: list[bytes] = []
    read_json = pj.read_json

    def spy(source: pa.BufferReader, *a: object, **k: object) -> pa.Table:
        block = source.read()
        handed.append(block)
        if block.lstrip().startswith(b"null"):  # pyarrow 25: a segmentation fault
            raise pa.ArrowInvalid("a null first line would crash the process")
        return read_json(pa.BufferReader(block), *a, **k)

    monkeypatch.setattr(pj, "read_json", spy)
    lines = [_line(k) for k in range(1, 9)]
    lines[3] = _line(4) + " " + _line(4)  # two objects on one line (of the same types as the rest)
    lines[5] = "  "  # and a blank line: as many rows as lines
    lines[6] = "null"
    path = tmp_path / "plays.jsonl"
    path.write_text("\n".join(lines) + "\n")
    cfg = _config(tmp_path / "home")
    r = import_interactions(cfg, str(path))
    assert r.rows_in == 7 and r.imported == 5 and r.quarantined == {"malformed_row": 2}
    errors = {q["row"]: q["values"]["error"] for q in _quarantined(cfg, r.key, "malformed_row")}
    assert sorted(errors) == [4, 7] and errors[7].startswith("a JSON null, not an object")
    assert "Extra data" in errors[4]
    assert set(_activity(cfg).column("user_id").to_pylist()) == {"1"}
    first = tmp_path / "null-first.jsonl"
    first.write_text("null\n" + _line(1) + "\n")
    r = import_interactions(_config(tmp_path / "home2"), str(first))
    assert r.imported == 1 and r.quarantined == {"malformed_row": 1}
    assert not any(block.lstrip().startswith(b"null") for block in handed)


@pytest.mark.parametrize("reader", ["fast", "slow"])
def test_negative_zero_ids_and_epoch_numbers_with_exponents_read_alike(tmp_path: Path, reader: str) -> None:
    """pyarrow reads the id ``-0`` as the integer 0, and writes a millisecond epoch with a fraction back as
    ``8.749657580005e+11`` (every timestamp of the block, once one line has a fraction): the same file must
    give the same ids and times whichever reader its block went through."""
    lines = [_line(k, user=k) for k in range(1, 9)]
    lines[1] = '{"user": -0, "item": 2, "ts": 874965760}'
    lines[2] = '{"user": 0, "item": 2, "ts": 874965761}'
    lines[4] = json.dumps({"user": 5, "item": 2, "ts": 874965758000.5})  # milliseconds with a fraction
    lines[5] = '{"user": 6, "item": 2, "ts": 8.74965762e8}'  # seconds with an exponent
    if reader == "slow":
        lines.append("{")  # a bad line: the block is read line by line
    path = tmp_path / "plays.jsonl"
    path.write_text("\n".join(lines) + "\n")
    cfg = _config(tmp_path / "home")
    r = import_interactions(cfg, str(path))
    assert r.imported == 8 and not r.quarantined.get("bad_timestamp")
    t = _activity(cfg)
    assert set(t.column("user_id").to_pylist()) == {"1", "-0", "0", "4", "5", "6", "7", "8"}
    ts = {u: v.timestamp() for u, v in zip(t.column("user_id").to_pylist(), t.column("event_ts").to_pylist(),
                                           strict=True)}
    assert ts["5"] == 874965758.0005 and ts["6"] == 874965762


def test_a_mapped_column_given_twice_or_a_lone_surrogate_is_malformed(tmp_path: Path) -> None:
    """``{"user": 1, "user": 2}``: which user is meant? (the decoder silently kept the last one); a lone
    ``\\ud800`` escape in an id is no Unicode text and failed the whole file. In an unmapped column both are
    harmless."""
    lines = [_line(k) for k in range(1, 7)]
    lines[1] = '{"user": 1, "item": 2, "ts": 874965758, "user": 9}'
    lines[2] = '{"user": "a\\ud800", "item": 2, "ts": 874965758}'
    lines[3] = '{"user": 1, "item": 2, "ts": 874965758, "note": "\\udfff", "note": 3}'
    lines[4] = '{"user": 1, "item": 2, "ts": 874965758, "\\u0075ser": 9}'  # "user", spelt with an escape
    lines[5] = '{"user": 1, "item": 2, "ts": 874965758, "note": "a, b, c"}'  # commas, no key twice
    path = tmp_path / "plays.jsonl"
    path.write_text("\n".join(lines) + "\n")
    cfg = _config(tmp_path / "home")
    r = import_interactions(cfg, str(path))
    assert r.imported == 3 and r.quarantined == {"malformed_row": 3}
    errors = {q["row"]: q["values"]["error"] for q in _quarantined(cfg, r.key, "malformed_row")}
    assert errors[2].startswith("column 'user' is given more than once")
    assert errors[5].startswith("column 'user' is given more than once")
    assert errors[3].startswith("column 'user' holds a lone UTF-16 surrogate")
    assert set(_activity(cfg).column("user_id").to_pylist()) == {"1"}


def test_a_column_first_met_beyond_the_first_block_is_read(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """An optional field the export only started writing later (the first block's lines lack it) is not a
    missing column; one that no line has still fails the file, naming it."""
    monkeypatch.setattr(importer, "BLOCK_BYTES", 400)
    columns = {**COLUMNS, "kind": "event"}
    lines = [_line(k) for k in range(1, 30)] + [json.dumps({"user": 1, "item": 2, "ts": T0, "event": "play"})] * 5
    path = tmp_path / "plays.jsonl"
    path.write_text("\n".join(lines) + "\n")
    cfg = _config(tmp_path / "home", columns=columns)
    r = import_interactions(cfg, str(path))
    assert r.rows_in == 34 and r.imported == 34
    never = tmp_path / "never.jsonl"
    never.write_text("\n".join(lines[:29]) + "\n")
    with pytest.raises(ImportFailed, match=r"never\.jsonl: column 'event' not found"):
        import_interactions(_config(tmp_path / "home2", columns=columns), str(never))


def test_lines_ending_with_a_bare_cr_are_lines(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A file from an old Mac tool ends its lines with CR alone: each is a row (it was one malformed row for
    the whole file), whichever way the blocks fall."""
    lines = [_line(k, user=k) for k in range(1, 40)]
    lines[7] = "{"
    path = tmp_path / "plays.jsonl"
    path.write_bytes(("\r".join(lines) + "\r").encode())
    for home, block in (("home", importer.BLOCK_BYTES), ("small", 300)):
        monkeypatch.setattr(importer, "BLOCK_BYTES", block)
        cfg = _config(tmp_path / home)
        r = import_interactions(cfg, str(path))
        assert r.rows_in == 39 and r.imported == 38 and r.quarantined == {"malformed_row": 1}
        assert [q["row"] for q in _quarantined(cfg, r.key, "malformed_row")] == [8]
        assert len(set(_activity(cfg).column("user_id").to_pylist())) == 38


def test_a_utf16_file_is_refused_naming_the_encoding_and_the_way_out(tmp_path: Path) -> None:
    """A line of UTF-16 does not end at the byte \\n: the file is refused at once, the message saying what to do
    (it said a byte of some line was not valid UTF-16). UTF-8 with a signature and 8-bit encodings are read."""
    text = "\n".join(_line(k, user=f"é{k}") for k in range(1, 6)) + "\n"
    path = tmp_path / "plays.jsonl"
    path.write_bytes(text.encode("utf-16"))
    with pytest.raises(ImportFailed, match=r"not 'utf-16': convert the file to UTF-8"):
        import_interactions(_config(tmp_path / "home", encoding="utf-16"), str(path))
    for encoding in ("utf-8-sig", "latin-1"):
        path.write_bytes(text.encode(encoding))
        cfg = _config(tmp_path / encoding, encoding=encoding)
        assert import_interactions(cfg, str(path)).imported == 5
        assert "é1" in _activity(cfg).column("user_id").to_pylist()


@pytest.mark.parametrize("literal", ["Infinity", "-Infinity", "NaN"])
def test_a_time_that_is_not_a_finite_number_is_quarantined_as_the_file_writes_it(tmp_path: Path, literal: str) -> None:
    """pyarrow's reader takes JSON's Infinity and NaN literals and writes them back as "inf" and "nan": the
    quarantine would show a value the file does not hold."""
    lines = [_line(k) for k in range(1, 6)]
    lines[2] = '{"user": 1, "item": 2, "ts": ' + literal + ', "note": "x"}'
    path = tmp_path / "plays.jsonl"
    path.write_text("\n".join(lines) + "\n")
    cfg = _config(tmp_path / "home")
    r = import_interactions(cfg, str(path))
    assert r.imported == 4 and r.quarantined == {"bad_timestamp": 1}
    [q] = _quarantined(cfg, r.key, "bad_timestamp")
    assert q["row"] == 3 and literal in json.dumps(q["values"]), q


def test_a_nul_written_as_an_escape_quarantines_its_line(tmp_path: Path) -> None:
    """JSON may spell a NUL (``\\u0000``) where a raw one is invalid: in a mapped value, in an array's element
    too, it is a corrupt row, as in CSV and Parquet."""
    path = tmp_path / "plays.jsonl"
    path.write_text("\n".join([_line(1), _line(2, user="a\x00b"), _line(3)]) + "\n")  # json.dumps escapes it
    assert "\\u0000" in path.read_text()
    cfg = _config(tmp_path / "home")
    r = import_interactions(cfg, str(path))
    assert r.imported == 2 and r.quarantined == {"malformed_row": 1}
    (q,) = _quarantined(cfg, r.key, "malformed_row")
    assert q["row"] == 2 and "NUL" in q["error"] and q["values"]["user"] == "a\x00b"
    items = tmp_path / "items.jsonl"
    items.write_text('{"id": "a", "title": "A", "tags": ["Drama", "Com\\u0000edy"]}\n{"id": "b", "title": "B"}\n')
    cfg = local_config(tmp_path / "home2", {"ingest": {"files": {"items": {"columns": {
        "id": "id", "title": "title", "genres": "tags"}}}}})
    r = import_items(cfg, str(items))
    assert r.imported == 1 and r.quarantined == {"malformed_row": 1}

