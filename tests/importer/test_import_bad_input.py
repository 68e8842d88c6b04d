"""`skyrec import` on bad input, as a user runs it: impossible event times quarantined (and a backfill over an
absurd range refused up front), bad input exits 4 (as the jobs), an encoding error names its row (in UTF-8 the
row is quarantined), a file without data rows is an error, and the summary reads cleanly."""

from __future__ import annotations

import json
import time
from pathlib import Path

import pytest
from importer_files import FILMS, T0
from typer.testing import CliRunner

from skyrec.cli import app

HEADER = "user,item,rating,timestamp"
MAPPING = {"interactions": {"format": "csv", "delimiter": ",", "header": True, "column_names": [],
                            "columns": {"user": "user", "item": "item", "timestamp": "timestamp", "value": "rating"},
                            "value": "rating"},
           "items": {"format": "csv", "delimiter": ",", "header": True, "column_names": [], "genre_flags": [],
                     "columns": {"id": "movie_id", "title": "title", "release_date": None}}}


def _rows(n: int = 40, rating: int = 5) -> list[str]:
    return [f"{1 + k % 7},{1 + k % 11},{rating},{T0 + 3600 * k}" for k in range(n)]


@pytest.fixture
def files(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    monkeypatch.setenv("SKYREC_HOME", str(tmp_path / "home"))
    folder = tmp_path / "in"
    folder.mkdir()
    (folder / "map.yaml").write_text(json.dumps(MAPPING))  # JSON is YAML
    (folder / "items.csv").write_text("movie_id,title\n" + "".join(f"{i},Film {i}\n" for i in range(1, 12)))
    return folder


def _import(folder: Path, interactions: Path | None = None, *extra: str, items: bool = False):
    args = ["import", "--config-dir", str(FILMS), "--mapping", str(folder / "map.yaml"), *extra]
    if interactions is not None:
        args += ["--interactions", str(interactions)]
    if items:
        args += ["--items", str(folder / "items.csv")]
    return CliRunner().invoke(app, args)


def _summary(output: str) -> dict:
    return json.loads(output[output.index("\n{") + 1:])


def _quarantine(home: Path, reason: str) -> list[dict]:
    found = list(home.rglob(f"_imports/*/quarantine/{reason}.jsonl"))
    assert len(found) == 1, found
    return [json.loads(line) for line in found[0].read_text().splitlines()]


def test_event_times_in_the_future_or_before_1990_are_quarantined_not_imported(files: Path, tmp_path: Path) -> None:
    data = files / "future.csv"
    odd = ["1,2,5,4102444800", "1,3,5,32503680000", "1,4,5,0", "1,5,5,-1"]  # 2100, 3000, epoch 0 and -1
    data.write_text("\n".join([HEADER, *_rows(), *odd]) + "\n")
    result = _import(files, data)
    assert result.exit_code == 0, result.output
    f = _summary(result.output)["files"][0]
    assert f["rows_in"] == 44 and f["imported"] == 40
    assert f["quarantined"] == {"future_ts": 2, "too_old": 2} and f["invariant"]["holds"]
    rng = _summary(result.output)["activity_range"]
    assert rng["start"].startswith("1997-09-22") and rng["end"].startswith("1997-09-24")  # not 1969 to 3000
    assert "3000-01-01" not in result.output and "1969" not in result.output
    future = _quarantine(tmp_path / "home", "future_ts")
    assert [q["row"] for q in future] == [41, 42] and future[1]["values"]["timestamp"] == "32503680000"
    assert "later than the import's time" in future[0]["error"]
    old = _quarantine(tmp_path / "home", "too_old")
    assert [q["row"] for q in old] == [43, 44] and "before 1990-01-01" in old[0]["error"]


def test_a_backfill_over_an_absurd_range_is_refused_at_once_naming_range_and_limit(files: Path) -> None:
    """The range an import with an event in the year 3000 and one at epoch 0 would have printed: refused up front
    (it walked 9 million hours for minutes at 4 GB before), with a catalogue in place as in the README's steps."""
    data = files / "ok.csv"
    data.write_text("\n".join([HEADER, *_rows()]) + "\n")
    assert _import(files, data, items=True).exit_code == 0
    for step in ("sync_metadata", "build_catalogue"):
        done = CliRunner().invoke(app, ["job", step], env={"SKYREC_CONFIG_DIR": str(FILMS)})
        assert done.exit_code == 0, done.output
    args = ["job", "backfill_activity", "--param", "start=1969-12-31T23:00:00+00:00",
            "--param", "end=3000-01-01T01:00:00+00:00"]
    started = time.monotonic()
    result = CliRunner().invoke(app, args, env={"SKYREC_CONFIG_DIR": str(FILMS)})
    assert time.monotonic() - started < 30  # not minutes of walking 9 million empty hours
    assert result.exit_code == 4, result.output
    assert "1969-12-31T23:00:00+00:00 to 3000-01-01T01:00:00+00:00" in result.output
    assert "at most 3,660 days" in result.output
    result = CliRunner().invoke(app, [*args, "--param", "max_days=zero"], env={"SKYREC_CONFIG_DIR": str(FILMS)})
    assert result.exit_code == 4 and "max_days must be a whole number" in result.output
    # the limit is a setting: a deployment (or the Airflow DAG, which passes only start and end) sets it
    two_days = ["job", "backfill_activity", "--param", "start=1997-09-22T00:00:00+00:00",
                "--param", "end=1997-09-24T00:00:00+00:00"]
    result = CliRunner().invoke(app, two_days, env={"SKYREC_CONFIG_DIR": str(FILMS),
                                                    "SKYREC__INGEST__ACTIVITY__MAX_BACKFILL_DAYS": "1"})
    assert result.exit_code == 4 and "at most 1 days (ingest.activity.max_backfill_days" in result.output


def test_the_earliest_event_an_import_accepts_is_a_setting(files: Path, tmp_path: Path, monkeypatch) -> None:
    """An archive's history goes back further, or a deployment wants a tighter floor: the bound is
    ``ingest.activity.earliest_event`` (naive means UTC), named in the quarantine's reason."""
    data = files / "plays.csv"
    data.write_text("\n".join([HEADER, *_rows()]) + "\n")  # 1997-09-22 to 1997-09-24
    monkeypatch.setenv("SKYREC__INGEST__ACTIVITY__EARLIEST_EVENT", "1997-09-23T00:00:00")
    result = _import(files, data)
    assert result.exit_code == 0, result.output
    f = _summary(result.output)["files"][0]
    assert f["imported"] + f["quarantined"]["too_old"] == 40 and 0 < f["imported"] < 40
    old = _quarantine(tmp_path / "home", "too_old")
    assert "before 1997-09-23" in old[0]["error"] and "ingest.activity.earliest_event" in old[0]["error"]


@pytest.mark.parametrize("case", ["missing_column", "zero_bytes", "binary", "header_only", "bad_mapping"])
def test_bad_input_exits_4_as_the_jobs_do_and_names_the_file(files: Path, case: str) -> None:
    data = files / f"{case}.csv"
    extra: tuple[str, ...] = ()
    if case == "missing_column":
        data.write_text("user,item,stars,timestamp\n" + "\n".join(_rows()) + "\n")
        want = "column 'rating' not found"
    elif case == "zero_bytes":
        data.write_bytes(b"")
        want = "the file is empty (0 bytes)"
    elif case == "binary":
        data.write_bytes(bytes(range(256)) * 40)
        want = "not a text file: NUL bytes"
    elif case == "header_only":
        data.write_text(HEADER + "\n")
        want = "no data rows (only a header"
    else:
        data.write_text("\n".join([HEADER, *_rows()]) + "\n")
        extra = ("--set", "interactions.value=stars")
        want = "value"
    result = _import(files, data, *extra)
    assert result.exit_code == 4, result.output
    assert want in result.output
    if case != "bad_mapping":
        assert str(data) in result.output


def test_an_items_file_alone_is_an_import_and_a_header_only_one_is_not(files: Path) -> None:
    result = _import(files, items=True)
    assert result.exit_code == 0, result.output
    (files / "items.csv").write_text("movie_id,title\n")
    result = _import(files, items=True)
    assert result.exit_code == 4 and "items.csv: no data rows" in result.output


def test_a_utf8_file_with_a_latin1_row_quarantines_that_row_naming_column_and_encoding(files: Path,
                                                                                      tmp_path: Path) -> None:
    data = files / "latin1.csv"
    data.write_bytes(("\n".join([HEADER, *_rows()]) + "\n").encode() + f"josé,3,5,{T0}\n".encode("latin-1"))
    result = _import(files, data)
    assert result.exit_code == 0, result.output
    f = _summary(result.output)["files"][0]
    assert f["rows_in"] == 41 and f["imported"] == 40 and f["quarantined"] == {"malformed_row": 1}
    (bad,) = _quarantine(tmp_path / "home", "malformed_row")
    assert bad["row"] == 41 and bad["values"]["user"] == "jos\ufffd"  # the raw text, with a replacement character
    assert "['user']" in bad["error"] and "not valid utf8" in bad["error"]


def test_a_nul_in_a_row_quarantines_that_row_and_a_zero_filled_tail_is_one_bad_row(files: Path,
                                                                                  tmp_path: Path) -> None:
    """A NUL byte in the first 64 KiB used to refuse the whole file as binary, and one further on was imported
    as part of an id. Now the first line decides whether the file is text; a row holding a NUL is quarantined
    (in every format: its id could never be asked for), and the NULs a crash leaves at a file's end are one
    malformed row."""
    data = files / "nul.csv"
    body = "\n".join([HEADER, *_rows()]) + "\n"
    data.write_bytes(body.encode() + f"9\x009,3,5,{T0}\n".encode() + b"\x00" * 512)
    result = _import(files, data)
    assert result.exit_code == 0, result.output
    f = _summary(result.output)["files"][0]
    assert f["rows_in"] - f["quarantined"].get("malformed_row", 0) == 40 == f["imported"], f
    bad = _quarantine(tmp_path / "home", "malformed_row")
    assert {b["row"] for b in bad} == {41, 42}
    nul = next(b for b in bad if b["row"] == 41)
    assert "['user']" in nul["error"] and "NUL" in nul["error"] and nul["values"]["user"] == "9\x009"


@pytest.mark.parametrize("start, why", [(b"us\x00er,", "NUL bytes in its first line"),
                                        (b"\x1f\x8b\x08\x00", "it starts as a gzip file (decompress it first)"),
                                        (b"PAR1", "it starts as a Parquet file (format: parquet)"),
                                        ("user,".encode("utf-16"), "UTF-16 byte-order mark (encoding: utf-16)")])
def test_a_file_that_is_not_text_is_refused_saying_what_it_looks_like(files: Path, start: bytes, why: str) -> None:
    data = files / "odd.csv"
    data.write_bytes(start + b"item,rating,timestamp\n" + "\n".join(_rows()).encode() + b"\n")
    result = _import(files, data)
    assert result.exit_code == 4, result.output
    assert "not a text file" in result.output and why in result.output, result.output


def test_a_column_named_twice_is_refused_naming_both(files: Path, tmp_path: Path) -> None:
    """pyarrow takes the first of two columns of one name and drops the other without a word: which one the
    file meant is the user's call (CSV header, the mapping's column_names, a Parquet schema)."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    data = files / "twice.csv"
    data.write_text("\n".join([HEADER + ",user", *(r + ",x" for r in _rows())]) + "\n")
    result = _import(files, data)
    assert result.exit_code == 4, result.output
    assert "column 'user' is named 2 times in the header (columns #1, #5)" in result.output
    headless = files / "headless.csv"
    headless.write_text("\n".join(_rows()) + "\n")
    result = _import(files, headless, "--set", "interactions.header=false", "--set",
                     "interactions.column_names=[user,item,rating,user]")
    assert result.exit_code == 4, result.output
    assert "named 2 times in the mapping's column_names (columns #1, #4)" in result.output, result.output
    table = pa.Table.from_arrays([pa.array(["1", "2"]), pa.array(["3", "4"]), pa.array([5, 5]),
                                  pa.array([T0, T0]), pa.array(["1", "2"])],
                                 names=["user", "item", "rating", "timestamp", "user"])
    pq.write_table(table, files / "twice.parquet")
    result = _import(files, files / "twice.parquet", "--set", "interactions.format=parquet")
    assert result.exit_code == 4, result.output
    assert "named 2 times in its schema (columns #1, #5)" in result.output, result.output


def test_epoch_times_written_with_an_exponent_are_read_as_json_lines_reads_them(files: Path,
                                                                               tmp_path: Path) -> None:
    """R's write.csv writes 1700000000 as 1.7e+09 and a spreadsheet 1.70E+09: quarantined as bad_timestamp
    before, while the same number in a JSON line was read."""
    import pyarrow.parquet as pq

    data = files / "exp.csv"
    data.write_text("\n".join([HEADER, *_rows(), "1,2,5,8.749657e+08", "1,3,5,8.749657E8", "1,4,5,8749657e2"]) + "\n")
    result = _import(files, data)
    assert result.exit_code == 0, result.output
    f = _summary(result.output)["files"][0]
    assert f["imported"] == 43 and f["quarantined"] == {}, f
    times = {(r["item_id"], int(r["event_ts"].timestamp())) for p in (tmp_path / "home").rglob("import-*.parquet")
             for r in pq.read_table(p).to_pylist() if r["user_id"] == "1" and r["item_id"] in ("2", "3", "4")}
    assert ("2", 874965700) in times and ("3", 874965700) in times and ("4", 874965700) in times


def test_an_encoding_error_names_the_line_where_it_is(files: Path) -> None:
    data = files / "latin1.csv"
    data.write_bytes(("\n".join([HEADER, *_rows()]) + "\n").encode() + f"josé,3,5,{T0}\n".encode("latin-1"))
    result = _import(files, data, "--set", "interactions.encoding=ascii")
    assert result.exit_code == 4, result.output
    assert "latin1.csv" in result.output and "line 42, byte 4 of the line" in result.output
    assert "near data row 1 " not in result.output


def test_the_summary_reads_cleanly(files: Path) -> None:
    data = files / "ok.csv"
    data.write_text("\n".join([HEADER, *_rows()]) + "\n")
    result = _import(files, data)
    assert result.exit_code == 0, result.output
    line = next(x for x in result.output.splitlines() if x.startswith("interactions:"))
    assert "40 rows -> 40 imported, 0 quarantined, 0 filtered [" in line and " ," not in line and "  " not in line


def test_a_file_whose_rows_are_all_rejected_warns(files: Path) -> None:
    data = files / "low.csv"
    data.write_text("\n".join([HEADER, *_rows(rating=1)]) + "\n")
    result = _import(files, data)
    assert result.exit_code == 0, result.output
    assert "warning: nothing imported from" in result.output and "all 40 rows were quarantined or filtered" in \
        result.output


def test_a_file_whose_every_row_is_quarantined_is_a_failed_import(files: Path) -> None:
    """DESIGN's bad-input contract: an input whose data was all rejected is a failed run, never a success;
    the rows stay in the quarantine, and the error says where."""
    data = files / "future.csv"
    data.write_text("\n".join([HEADER, *(f"u{i},i{i},4,32503680000" for i in range(12))]) + "\n")
    result = _import(files, data)
    assert result.exit_code == 4, result.output
    assert "every row was rejected as bad input" in result.output and "/_imports/" in result.output
    kept = list(files.parent.rglob("_imports/*/quarantine/future_ts.jsonl"))
    assert kept and sum(1 for _ in kept[0].open()) == 12


def test_rows_after_a_malformed_line_keep_their_own_row_numbers(files: Path, tmp_path: Path) -> None:
    """A line that does not split into the columns is quarantined under its own data row number, and the rows
    after it keep theirs (they were numbered one short: the skipped line was not counted)."""
    rows = _rows(60)
    rows[9] = "1,2"  # data row 10: too few columns
    rows[29] = "1,2,5,880000000,extra"  # data row 30: too many
    rows[44] = "1,5,5,32503680000"  # data row 45: a future event, quarantined by value
    data = files / "mixed.csv"
    data.write_text("\n".join([HEADER, *rows]) + "\n")
    result = _import(files, data)
    assert result.exit_code == 0, result.output
    malformed = _quarantine(tmp_path / "home", "malformed_row")
    assert sorted(q["row"] for q in malformed) == [10, 30]
    future = _quarantine(tmp_path / "home", "future_ts")
    assert [q["row"] for q in future] == [45] and future[0]["values"]["timestamp"] == "32503680000"


def test_kept_row_numbers_skip_the_skipped_rows() -> None:
    from skyrec.data.importer import _kept_row_numbers

    assert _kept_row_numbers(0, 5, []).tolist() == [1, 2, 3, 4, 5]
    assert _kept_row_numbers(0, 5, [2, 4]).tolist() == [1, 3, 5, 6, 7]
    assert _kept_row_numbers(3, 3, [2, 4, 9]).tolist() == [6, 7, 8]  # kept 4th..6th: rows 6, 7, 8
    assert _kept_row_numbers(0, 3, [1, 2, 3]).tolist() == [4, 5, 6]


def test_the_nul_scan_names_the_rows_of_sliced_chunks_and_lists() -> None:
    """Readers hand over chunks that are slices of larger buffers: the row found must be the slice's own."""
    import pyarrow as pa

    from skyrec.data.importer import _nul_rows

    lists = pa.array([["a"], ["b\x00"], ["c", "d\x00"], ["e"]])
    text = pa.array(["x", "y\x00", "z"])
    table = pa.table({"g": pa.chunked_array([lists.slice(0, 2), lists.slice(2, 2)]),
                      "u": pa.chunked_array([text.slice(1, 1), pa.array(["w", "v\x00", "t"], pa.large_string())
                                             .cast(pa.string())])})
    assert _nul_rows(table) == {0: ["u"], 1: ["g"], 2: ["g", "u"]}
    assert _nul_rows(pa.table({"u": text.slice(2, 1)})) == {}  # the buffer holds one, the slice does not
