"""`skyrec import`: three shapes of files into the source layout; bad input named or quarantined and counted;
idempotent and resumable."""

from __future__ import annotations

import datetime as dt
import json
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from importer_files import T0, films_config, local_config, write_classic, write_clicks, write_plays

from skyrec.data.importer import ImportFailed, import_interactions, import_items, run_import


def _activity(cfg) -> pa.Table:
    files = sorted(Path(cfg.source_url, cfg.source.activity_prefix).rglob("*.parquet"))
    return pa.concat_tables([pq.read_table(f) for f in files], promote_options="default")


def _snapshot(folder: Path) -> dict[str, bytes]:
    return {str(p.relative_to(folder)): p.read_bytes() for p in sorted(folder.rglob("*")) if p.is_file()}


def test_classic_ratings_and_pipe_items_with_genre_flags(tmp_path: Path) -> None:
    data, item = write_classic(tmp_path / "in")
    cfg = films_config(tmp_path / "home")
    summary = run_import(cfg, interactions=str(data), items=str(item))
    items_r, acts_r = summary["files"]
    assert items_r["rows_in"] == 81 and items_r["imported"] == 80 and items_r["quarantined"] == {"missing_title": 1}
    assert items_r["written"]["own_brands"] == 80  # every unbranded film is its own brand
    assert acts_r["rows_in"] == 3002
    assert acts_r["quarantined"] == {"bad_value": 1, "malformed_row": 1}
    below = acts_r["filtered"]["below_threshold"]
    assert acts_r["imported"] + below + 2 == 3002 and acts_r["invariant"]["holds"]
    table = _activity(cfg)
    assert table.num_rows == acts_r["imported"]
    assert set(table.column("event_type").to_pylist()) == {"rating"}
    assert table.column("played_seconds").null_count == table.num_rows  # a rating has no duration
    assert "event_id" not in table.column_names  # derived by the ingest from user, item, time, kind
    first = dt.datetime.fromtimestamp(min(table.column("event_ts").cast(pa.int64()).to_pylist()) / 1e6, dt.UTC)
    assert first >= dt.datetime.fromtimestamp(T0, dt.UTC).replace(minute=0, second=0)
    # each hourly file holds only its hour
    for f in Path(cfg.source_url, "activity").rglob("*.parquet"):
        hours = {t.strftime("date=%Y-%m-%d/hour=%H") for t in pq.read_table(f).column("event_ts").to_pylist()}
        assert hours == {f"{f.parent.parent.name}/{f.parent.name}"}
    # items: genre flags in the source's spelling, latin-1 decoded, an item without a date still available
    eps = {json.loads(p.read_text())["id"]: json.loads(p.read_text())
           for p in Path(cfg.source_url, "metadata", "episodes").rglob("*.json")}
    assert "Sci-Fi" in eps["10"]["genres"] and eps["5"]["title"] == "Café Crème (1995)"
    assert eps["7"].get("release_date") is None
    av = [json.loads(p.read_text()) for p in Path(cfg.source_url, "metadata", "availability").rglob("7-0.json")]
    assert av[0]["available_from"] == "1970-01-01T00:00:00Z"
    # the bad rows are kept with their row number and reason
    qdir = Path(cfg.source_url, "_imports", acts_r["key"], "quarantine")
    bad = json.loads((qdir / "bad_value.jsonl").read_text())
    assert bad["row"] == 3001 and bad["values"]["rating"] == "five"
    assert json.loads((qdir / "malformed_row.jsonl").read_text())["row"] == 3002


def test_rerunning_changes_nothing_and_a_changed_file_replaces_its_output(tmp_path: Path) -> None:
    data, item = write_classic(tmp_path / "in")
    cfg = films_config(tmp_path / "home")
    first = run_import(cfg, interactions=str(data), items=str(item))
    before = _snapshot(Path(cfg.source_url))
    again = run_import(cfg, interactions=str(data), items=str(item))
    assert [f["noop"] for f in again["files"]] == [True, True]
    assert [f["imported"] for f in again["files"]] == [f["imported"] for f in first["files"]]
    assert _snapshot(Path(cfg.source_url)) == before  # not one byte rewritten
    # a smaller file over a shorter period: its earlier hours go, nothing is doubled
    write_classic(tmp_path / "in", ratings=500, days=5)
    third = import_interactions(cfg, str(data))
    assert not third.noop and third.written["removed_hours"] > 0
    assert _activity(cfg).num_rows == third.imported


def test_an_interrupted_import_resumes_to_the_same_bytes(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    from skyrec.data import importer

    data, item = write_classic(tmp_path / "in")
    clean = films_config(tmp_path / "clean")
    run_import(clean, interactions=str(data), items=str(item))
    cfg = films_config(tmp_path / "home")
    real = importer._Output.write
    calls = {"n": 0}

    def dying(self, rel: str, payload: bytes) -> None:
        calls["n"] += 1
        if calls["n"] == 40:
            raise KeyboardInterrupt("killed")
        real(self, rel, payload)

    monkeypatch.setattr(importer._Output, "write", dying)
    with pytest.raises(KeyboardInterrupt):
        run_import(cfg, interactions=str(data), items=str(item))
    monkeypatch.setattr(importer._Output, "write", real)
    assert not Path(cfg.source_url, "_imports").exists() or not list(Path(cfg.source_url, "_imports").glob("*.json"))
    run_import(cfg, interactions=str(data), items=str(item))
    got, want = _snapshot(Path(cfg.source_url)), _snapshot(Path(clean.source_url))
    strip = {k: v for k, v in got.items() if not k.startswith(("_imports", "metadata"))}
    assert strip == {k: v for k, v in want.items() if not k.startswith(("_imports", "metadata"))}
    assert sorted(k for k in got if k.startswith("metadata")) == sorted(k for k in want if k.startswith("metadata"))


def test_a_plays_log_like_the_generators(tmp_path: Path) -> None:
    plays = write_plays(tmp_path / "in")
    cfg = local_config(tmp_path / "home", {"ingest": {"files": {"interactions": {
        "columns": {"user": "user_id", "item": "item_id", "timestamp": "event_ts", "kind": "event_type",
                    "value": "played_seconds", "event_id": "event_id", "platform": "platform"},
        "value": "duration"}}}})
    r = import_interactions(cfg, str(plays))
    assert r.rows_in == 2000 and r.imported == 2000 and not r.quarantined
    t = _activity(cfg)
    assert set(t.column("event_type").to_pylist()) == {"play", "complete", "pause"}
    assert t.column("event_id").null_count == 0 and t.column("played_seconds").null_count == 0
    assert set(t.column("platform").to_pylist()) == {"ios"}


def test_a_parquet_click_log_without_durations_is_first_class(tmp_path: Path) -> None:
    from skyrec.data.activity import ActivityRules, conform, filter_activity

    clicks = write_clicks(tmp_path / "in")
    cfg = local_config(tmp_path / "home", {
        "ingest": {"activity": {"events": {"click": {"duration": "none"}, "view": {"duration": "none"}},
                                "event_types": ["play", "complete", "click", "view"]},
                   "files": {"interactions": {"columns": {"user": "visitor", "item": "sku", "timestamp": "ts_ms",
                                                          "kind": "action"}}}}})
    r = import_interactions(cfg, str(clicks))
    assert r.imported == 1500 and not r.quarantined
    t = _activity(cfg)
    assert set(t.column("event_type").to_pylist()) == {"click", "view"}
    assert t.column("event_ts").to_pylist()[0].year == 2026  # milliseconds recognised
    # the activity ingest keeps them: no duration needed for a kind without one, none quarantined
    table, _ = conform(t)
    start = dt.datetime(2026, 1, 1, tzinfo=dt.UTC)
    res = filter_activity(table, rules=ActivityRules.from_config(cfg), known_items=None, start=start,
                          end=start + dt.timedelta(days=2))
    assert not res.quarantined and res.valid.num_rows == 1500
    assert res.valid.column("drop").null_count == 1500  # nothing filtered either


def test_an_unknown_kind_is_quarantined_not_imported(tmp_path: Path) -> None:
    clicks = write_clicks(tmp_path / "in")
    cfg = local_config(tmp_path / "home", {"ingest": {"files": {"interactions": {
        "columns": {"user": "visitor", "item": "sku", "timestamp": "ts_ms", "kind": "action"}}}}})
    r = import_interactions(cfg, str(clicks))  # the shipped vocabulary has no click/view
    assert r.imported == 0 and r.quarantined == {"unknown_event_type": 1500}


def test_a_file_the_mapping_cannot_read_names_file_column_and_row(tmp_path: Path) -> None:
    plays = write_plays(tmp_path / "in", n=50)
    cfg = local_config(tmp_path / "home", {"ingest": {"files": {"interactions": {
        "columns": {"user": "user_id", "item": "item_id", "timestamp": "when"}}}}})
    with pytest.raises(ImportFailed, match=r"plays\.csv: column 'when' not found"):
        import_interactions(cfg, str(plays))
    cfg = local_config(tmp_path / "home", {"ingest": {"files": {"interactions": {
        "columns": {"user": "user_id", "item": "item_id", "timestamp": "platform"}}}}})
    with pytest.raises(ImportFailed, match=r"plays\.csv: column 'platform' cannot be read as a timestamp.*"
                                           r"first offending row 1: 'ios'"):
        import_interactions(cfg, str(plays))
    assert not Path(cfg.source_url, "activity").exists()  # nothing half-written


def test_a_few_bad_timestamps_are_quarantined_with_their_rows(tmp_path: Path) -> None:
    plays = write_plays(tmp_path / "in", n=100)
    lines = plays.read_text().splitlines()
    lines[10] = lines[10].replace("2026-02", "20X6-02")
    plays.write_text("\n".join(lines) + "\n")
    cfg = local_config(tmp_path / "home", {"ingest": {"files": {"interactions": {
        "columns": {"user": "user_id", "item": "item_id", "timestamp": "event_ts", "kind": "event_type"}}}}})
    r = import_interactions(cfg, str(plays))
    assert r.quarantined == {"bad_timestamp": 1} and r.imported == 99
    q = json.loads(Path(cfg.source_url, "_imports", r.key, "quarantine", "bad_timestamp.jsonl").read_text())
    assert q["row"] == 10


def test_import_command_prints_the_summary_and_fails_with_the_cause(tmp_path: Path,
                                                                    monkeypatch: pytest.MonkeyPatch) -> None:
    from typer.testing import CliRunner

    from skyrec.cli import app

    data, item = write_classic(tmp_path / "in", bad=False)
    monkeypatch.setenv("SKYREC_HOME", str(tmp_path / "home"))
    runner = CliRunner()
    result = runner.invoke(app, ["import", "--config-dir", str(Path(__file__).parents[2] / "config/examples/films"),
                                 "--interactions", str(data), "--items", str(item),
                                 "--set", "interactions.ratings.threshold=3"])
    assert result.exit_code == 0, result.output
    assert "interactions: " in result.output and "next: skyrec run ingest_programme_metadata" in result.output
    result = runner.invoke(app, ["import", "--interactions", str(tmp_path / "missing.tsv")])
    assert result.exit_code == 4 and "missing.tsv: no such file" in result.output  # bad input, as the jobs


def test_items_from_json_lines_with_brands_series_and_list_genres(tmp_path: Path) -> None:
    rows = [{"id": "e1", "title": "One", "show": "b1", "show_title": "Show", "season": "s1",
             "tags": ["Comedy", "comedy", "Stand-Up Special"], "secs": 1800, "from": "2026-01-01T00:00:00Z"},
            {"id": "e2", "title": "Two", "show": "b1", "show_title": "Show", "tags": [], "secs": -5},
            {"id": "e1", "title": "Dup"}]
    path = tmp_path / "items.jsonl"
    path.write_text("\n".join(json.dumps(r) for r in rows) + "\n")
    cfg = local_config(tmp_path / "home", {"ingest": {"files": {"items": {"columns": {
        "id": "id", "title": "title", "brand": "show", "brand_title": "show_title", "series": "season",
        "genres": "tags", "duration": "secs", "available_from": "from"}}}}})
    r = import_items(cfg, str(path))
    assert r.imported == 1 and r.quarantined == {"bad_duration": 1, "duplicate_item": 1}
    ep = json.loads(next(Path(cfg.source_url, "metadata", "episodes").rglob("e1-0.json")).read_text())
    assert ep["parent"] == {"id": "s1", "type": "series"} and ep["duration"] == 1800
    from skyrec.data.catalogue import normalise_genre, normalise_list

    assert normalise_list(ep["genres"], normalise_genre) == ["Comedy", "Stand-Up Special"]


def test_a_json_column_of_mixed_types_is_read_as_text_and_its_bad_value_quarantined(tmp_path: Path) -> None:
    """A number in one line and text in the next (pyarrow's reader fails the whole file on that): each value is
    read as the text the file holds, and the one that is not a duration is quarantined under its line."""
    path = tmp_path / "items.jsonl"
    path.write_text('{"id": "a", "title": "A", "secs": 10}\n{"id": "b", "title": "B", "secs": "ten"}\n'
                    '{"id": "c", "title": "C", "secs": 30}\n')
    cfg = local_config(tmp_path / "home", {"ingest": {"files": {"items": {"columns": {"duration": "secs"}}}}})
    r = import_items(cfg, str(path))
    assert r.imported == 2 and r.quarantined == {"bad_duration": 1}
    q = json.loads(Path(cfg.source_url, "_imports", r.key, "quarantine", "bad_duration.jsonl").read_text())
    assert q["row"] == 2 and q["values"]["secs"] == "ten"


def test_the_film_example_keeps_its_own_home_apart_from_the_sample_data() -> None:
    """`make demo` writes the generator's sample data under the default home; the film example (the README's
    "your own data" steps, run in the same checkout) has its own: its imported files, lake and job records
    never mix with the sample catalogue (a shared source folder put the sample's programmes in the films'
    catalogue)."""
    import os

    from importer_files import FILMS, ROOT

    from skyrec.config import load_config

    environ = {k: v for k, v in os.environ.items() if k not in ("SKYREC_HOME", "SKYREC_CONFIG_DIR")}
    sample = load_config("local", root=ROOT, environ=environ)
    films = load_config("local", root=ROOT, environ={**environ, "SKYREC_CONFIG_DIR": str(FILMS)})
    assert films.home != sample.home
    for mine in (films.lake_url, films.source_url, films.state_dir):
        for theirs in (sample.lake_url, sample.source_url, sample.state_dir):
            assert not Path(mine).is_relative_to(theirs) and not Path(theirs).is_relative_to(mine), (mine, theirs)


def test_a_bad_byte_in_a_mapped_header_name_fails_the_file_naming_line_1(tmp_path: Path) -> None:
    """The header says which column is which: a mapped name that cannot be decoded fails the file, naming
    line 1, the byte and the delimiter it was read with; a bad byte in a name not mapped is no matter."""
    cfg = local_config(tmp_path / "home", {"ingest": {"files": {"interactions": {"format": "csv", "columns": {
        "user": "user", "item": "item", "timestamp": "ts"}}}}})
    rows = b"".join(b"1,2,%d,x\n" % (T0 + k) for k in range(5))
    fine = tmp_path / "fine.csv"
    fine.write_bytes(b"user,item,ts,no\xffte\n" + rows)
    assert import_interactions(cfg, str(fine)).imported == 5
    bad = tmp_path / "bad.csv"
    bad.write_bytes(b"user,it\xffem,ts\n" + rows)
    with pytest.raises(ImportFailed, match=r"bad\.csv: cannot be read at line 1, byte 8 .*\(csv, delimiter ',', "):
        import_interactions(cfg, str(bad))


def test_genre_lists_on_another_separator_and_flags_neither_true_nor_false_are_noted(tmp_path: Path) -> None:
    """Each is read as the mapping says (a value without the separator is one genre; an unknown flag is false),
    and the summary says so, naming the values, so that a person can fix the mapping."""
    items = tmp_path / "items.csv"
    items.write_text("id,title,genres,Comedy,Drama\n"
                     "a,A,\"Comedy, Drama\",1,0\n"
                     "b,B,News,X,no\n"
                     "c,C,\"Drama, Music\",✓,TRUE\n"
                     "d,D,Music,X,\n")
    cfg = local_config(tmp_path / "home", {"ingest": {"files": {"items": {
        "columns": {"id": "id", "title": "title", "genres": "genres"}, "genre_flags": ["Comedy", "Drama"]}}}})
    f = import_items(cfg, str(items))
    assert f.imported == 4
    notes = " | ".join(f.notes)
    assert "genres (column 'genres'): no value holds list_separator '|' and 2 of 4 hold ','" in notes
    assert "set list_separator: ','" in notes
    assert "flag column 'Comedy': 3 values are neither true" in notes and "'x' x2, '✓' x1" in notes
    assert "flag column 'Drama'" not in notes  # 0, no, TRUE and empty are all understood
    episodes = {json.loads(p.read_text())["id"]: json.loads(p.read_text())["genres"]
                for p in Path(cfg.source_url).rglob("episodes/**/*.json")}
    assert episodes == {"a": ["Comedy, Drama", "Comedy"], "b": ["News"], "c": ["Drama, Music", "Drama"],
                        "d": ["Music"]}
    # the separator is there (one genre, "Folk, Roots", holds a comma): no note
    items.write_text("id,title,genres\na,A,\"Folk, Roots\"\nb,B,\"Folk, Roots\"\nc,C,Comedy|News\n")
    cfg = local_config(tmp_path / "home2", {"ingest": {"files": {"items": {
        "columns": {"id": "id", "title": "title", "genres": "genres"}}}}})
    assert import_items(cfg, str(items)).notes == []


def test_a_parquet_items_file_from_pandas_with_missing_durations_keeps_those_items(tmp_path: Path) -> None:
    """pandas writes a missing number as NaN: an item without a duration, not a bad one (quarantining it lost
    the item); a duration that is there but out of range is still quarantined."""
    import math

    table = pa.table({"id": ["a", "b", "c", "d"], "title": ["A", "B", "C", "D"],
                      "duration": [1680.0, math.nan, None, -5.0]})
    path = tmp_path / "items.parquet"
    pq.write_table(table, path)
    cfg = local_config(tmp_path / "home", {"ingest": {"files": {"items": {
        "columns": {"id": "id", "title": "title", "duration": "duration"}}}}})
    f = import_items(cfg, str(path))
    assert f.imported == 3 and f.quarantined == {"bad_duration": 1}
    episodes = {json.loads(p.read_text())["id"]: json.loads(p.read_text()).get("duration")
                for p in Path(cfg.source_url).rglob("episodes/**/*.json")}
    assert episodes == {"a": 1680, "b": None, "c": None}


def test_a_file_imported_under_an_earlier_items_layout_is_imported_again(tmp_path: Path,
                                                                         monkeypatch: pytest.MonkeyPatch) -> None:
    """The records an items file becomes changed with the id namespaces (``ITEMS_LAYOUT`` 2): a file imported
    before is written again once, not kept as "unchanged" with the old records; then re-runs change nothing."""
    import skyrec.data.importer as importer

    items = tmp_path / "items.csv"
    items.write_text("id,title\na,A\nb,B\n")
    cfg = local_config(tmp_path / "home", {"ingest": {"files": {"items": {"columns": {"id": "id", "title": "title"}}}}})
    monkeypatch.setattr(importer, "ITEMS_LAYOUT", importer.ITEMS_LAYOUT - 1)
    assert not import_items(cfg, str(items)).noop
    assert import_items(cfg, str(items)).noop
    monkeypatch.setattr(importer, "ITEMS_LAYOUT", importer.ITEMS_LAYOUT + 1)
    assert not import_items(cfg, str(items)).noop
    assert import_items(cfg, str(items)).noop


def test_a_file_of_many_days_in_any_order_is_written_an_hour_at_a_time_in_time_then_input_order(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """The kept events wait on local disk by hour (so an import holds one hour in memory, not the whole file):
    read in many blocks and spilled in several files, each of which holds many days, each hourly file holds exactly its hour's events in
    time order, and events of the same time in the order of the file. The spill's files are gone afterwards,
    after a failed import too."""
    import random

    from skyrec.data import importer

    rng = random.Random(11)
    rows = [(rng.randrange(1, 90), rng.randrange(1, 60), rng.choice((4, 5)), T0 + 600 * rng.randrange(0, 144 * 30))
            for _ in range(5_000)]  # 30 days in no order; times on 10-minute steps, so many share a time
    data = tmp_path / "in" / "u.data"
    data.parent.mkdir()
    data.write_text("".join(f"{u}\t{i}\t{r}\t{t}\n" for u, i, r, t in rows))
    monkeypatch.setattr(importer, "CSV_BLOCK_BYTES", 4_096)  # ~20 blocks
    monkeypatch.setattr(importer, "SPILL_ROWS", 700)  # ~7 spill files, each of many days
    monkeypatch.setattr(importer, "SPILL_OPEN_FILES", 2)  # read back with most of them closed and reopened
    spills = tmp_path / "tmp"
    spills.mkdir()
    monkeypatch.setenv("TMPDIR", str(spills))
    import tempfile
    monkeypatch.setattr(tempfile, "tempdir", None)  # read TMPDIR again
    cfg = films_config(tmp_path / "home")
    report = import_interactions(cfg, str(data))
    assert report.imported == len(rows) and report.written["hours"] == len({t // 3600 for *_, t in rows})
    want: dict[str, list[tuple[str, str, int]]] = {}
    for u, i, _, t in sorted(rows, key=lambda r: r[3]):  # stable: the file's order among equal times
        h = dt.datetime.fromtimestamp(t, dt.UTC)
        want.setdefault(f"date={h:%Y-%m-%d}/hour={h:%H}", []).append((str(u), str(i), t * 1_000_000))
    got = {}
    for f in Path(cfg.source_url, cfg.source.activity_prefix).rglob("*.parquet"):
        t = pq.read_table(f)
        got[f"{f.parent.parent.name}/{f.parent.name}"] = list(zip(
            t.column("user_id").to_pylist(), t.column("item_id").to_pylist(),
            t.column("event_ts").cast(pa.int64()).to_pylist(), strict=True))
    assert got == want
    assert list(spills.iterdir()) == []
    # a failure while writing the hours: the spill's files are removed all the same
    data.write_text("".join(f"{u}\t{i}\t{r}\t{t + 7}\n" for u, i, r, t in rows))

    def broken(self, objects) -> None:
        raise OSError("disk full")

    monkeypatch.setattr(importer._Output, "write_many", broken)
    with pytest.raises(OSError, match="disk full") as failed:
        import_interactions(cfg, str(data))
    assert list(spills.iterdir()) == [], failed  # removed by the import, not by the collector: its frame lives on


def test_an_import_killed_with_its_events_spilled_leaves_nothing_the_next_import_keeps(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """kill -9 of an import whose events wait on disk: nothing of it could clean up, so the next import removes
    the spill folder of the dead process (and leaves a live one's alone), and writes what a clean import does."""
    import os
    import signal
    import subprocess
    import sys
    import tempfile

    from skyrec.data import importer

    data, _ = write_classic(tmp_path / "in", ratings=2_000, days=6, bad=False)
    spills = tmp_path / "tmp"
    spills.mkdir()
    monkeypatch.setenv("TMPDIR", str(spills))
    monkeypatch.setattr(tempfile, "tempdir", None)
    home = tmp_path / "home"
    script = f"""
import sys, time
sys.path.insert(0, {str(Path(__file__).parent)!r})
from importer_files import films_config
from skyrec.data import importer
def stop(*args, **kwargs):
    print("spilled", flush=True)
    time.sleep(600)
importer._write_hours = stop
importer.SPILL_ROWS = 100
importer.import_interactions(films_config(__import__("pathlib").Path({str(home)!r})), {str(data)!r})
"""
    proc = subprocess.Popen([sys.executable, "-c", script], stdout=subprocess.PIPE, text=True, env=os.environ)
    try:
        assert proc.stdout is not None and proc.stdout.readline().strip() == "spilled"
        left = [p.name for p in spills.iterdir()]
        assert len(left) == 1 and left[0].startswith(f"skyrec-import-{proc.pid}-")
        assert list((spills / left[0]).glob("*.arrow"))  # the events are on disk
    finally:
        proc.send_signal(signal.SIGKILL)
        proc.wait()
    alive = spills / f"skyrec-import-{os.getpid()}-live"  # an import running in a live process
    alive.mkdir()
    cfg = films_config(home)
    got = import_interactions(cfg, str(data))
    assert [p.name for p in spills.iterdir()] == [alive.name]
    clean = films_config(tmp_path / "clean")
    want = import_interactions(clean, str(data))
    assert got.written["hours_list"] == want.written["hours_list"]
    for rel in want.written["hours_list"]:
        assert Path(cfg.source_url, rel).read_bytes() == Path(clean.source_url, rel).read_bytes()
    assert importer._remove_abandoned_spills(str(spills)) == []


def test_a_full_local_disk_under_the_spill_fails_the_import_in_a_line_naming_it(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """The spill's disk refuses a write (no space left, injected at pyarrow's file writer): the command says
    it is this machine's working space -- not the file, not the source -- in one line, exits 1, and records
    nothing as imported, so that the same import run again writes everything."""
    import errno

    from typer.testing import CliRunner

    from skyrec.cli import app
    from skyrec.data import importer

    data, _ = write_classic(tmp_path / "in", ratings=2_000, bad=False)
    monkeypatch.setenv("SKYREC_HOME", str(tmp_path / "home"))
    monkeypatch.setattr(importer, "SPILL_ROWS", 100)
    monkeypatch.setattr(importer, "CSV_BLOCK_BYTES", 4_096)  # several spill files, the third refused
    real = pa.ipc.new_file
    calls = {"n": 0}

    def full(*args, **kwargs):
        calls["n"] += 1
        if calls["n"] == 3:
            raise OSError(errno.ENOSPC, "No space left on device")
        return real(*args, **kwargs)

    monkeypatch.setattr(pa.ipc, "new_file", full)
    films = str(Path(__file__).parents[2] / "config/examples/films")
    result = CliRunner().invoke(app, ["import", "--config-dir", films, "--interactions", str(data)])
    assert result.exit_code == 1 and calls["n"] == 3, result.output
    assert "the import's working space on local disk failed at" in result.output
    assert "No space left on device" in result.output and "set TMPDIR to a larger disk" in result.output
    assert "writing into the source" not in result.output and "Traceback" not in result.output
    assert not list(Path(tmp_path / "home").rglob("_imports/*.json"))  # not recorded as imported
    monkeypatch.setattr(pa.ipc, "new_file", real)
    result = CliRunner().invoke(app, ["import", "--config-dir", films, "--interactions", str(data)])
    assert result.exit_code == 0 and "unchanged" not in result.output, result.output
