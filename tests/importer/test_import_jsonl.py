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
    path = tmp_path / "items.jsonl"
    path.write_text("\n".join(rows) + "\n")
    cfg = local_config(tmp_path / "home", {"ingest": {"files": {"items": {"columns": {
        "id": "id", "title": "title", "genres": "tags"}, "list_separator": "|"}}}})
    r = import_items(cfg, str(path))
    assert r.imported == 3 and r.quarantined == {"malformed_row": 1}
    genres = {}
    for f in Path(cfg.source_url, "metadata", "episodes").rglob("*.json"):
        rec = json.loads(f.read_text())
        genres[rec["id"]] = rec.get("genres")
    assert sorted(genres["a"]) == ["Comedy", "Drama"] and sorted(genres["b"]) == ["Drama", "Soap"]
    assert genres["d"] == [] and set(genres) == {"a", "b", "d"}
