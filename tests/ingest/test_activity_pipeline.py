"""The Beam transforms of the activity ingest, with TestPipeline and assert_that (on the Python runner config's DirectRunner names)."""

from __future__ import annotations

import datetime as dt
import json
from pathlib import Path

import apache_beam as beam
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from apache_beam.testing.test_pipeline import TestPipeline as BeamTestPipeline
from apache_beam.testing.util import assert_that, equal_to

from skyrec.data.activity import ActivityRules, apply_filters, dedupe, filter_activity
from skyrec.data.schemas import RAW_ACTIVITY
from skyrec.pipelines.activity import IngestActivity, IntervalTarget, ReadAndFilter, Spec, pipeline_options
from skyrec.pipelines.runners import LOCAL_RUNNER

HOUR = dt.datetime(2026, 3, 1, 10, tzinfo=dt.UTC)
RULES = {"event_types": ["play", "complete"], "min_play_seconds": 30, "future_tolerance_minutes": 10,
         "past_limit_days": 400}


def _events() -> pa.Table:
    t = HOUR + dt.timedelta(minutes=5)
    rows = [
        ("e1", "u1", "p1", "play", t, 120.0),
        ("e2", "u1", "p2", "complete", t, 1800.0),
        ("e2", "u1", "p2", "complete", t, 1800.0),          # duplicate delivery
        ("e3", "u2", "p1", "pause", t, 10.0),               # irrelevant by design: filtered, counted
        ("e4", "u2", "p1", "play", t, 5.0),                 # short play: filtered, counted
        ("e5", "u2", "zzz", "play", t, 100.0),              # unknown item
        ("e6", None, "p1", "play", t, 100.0),               # missing user
        ("e7", "u3", "p1", "plya", t, 100.0),               # unknown event type
        ("e8", "u3", "p1", "play", t + dt.timedelta(days=3), 100.0),   # future
        ("e9", "u3", "p1", "play", t - dt.timedelta(days=900), 100.0),  # far past
        ("e10", "u3", "p2", "PLAY ", t - dt.timedelta(hours=5), 100.0),  # late but fine; type normalised
    ]
    cols = list(zip(*rows, strict=True))
    return pa.table({"event_id": cols[0], "user_id": cols[1], "item_id": cols[2], "event_type": cols[3],
                     "event_ts": pa.array(cols[4], pa.timestamp("us", "UTC")),
                     "played_seconds": pa.array(cols[5], pa.float32()), "platform": ["ios"] * len(rows)},
                    schema=RAW_ACTIVITY)


def test_vectorised_rules_give_one_reason_per_row() -> None:
    rules = ActivityRules(("play", "complete"), 30, 10, 400)
    res = filter_activity(_events(), rules=rules, known_items=pa.array(["p1", "p2"]), start=HOUR,
                          end=HOUR + dt.timedelta(hours=1))
    assert {k: v.num_rows for k, v in res.quarantined.items()} == {
        "missing_field": 1, "unknown_event_type": 1, "future_ts": 1, "too_old": 1, "unknown_item": 1}
    unique, dups = dedupe(res.valid)
    assert dups.column("event_id").to_pylist() == ["e2"]
    kept, filtered = apply_filters(unique)
    assert filtered == {"irrelevant_event_type": 1, "short_play": 1}
    assert sorted(kept.column("event_id").to_pylist()) == ["e1", "e10", "e2"]
    assert set(kept.column("event_type").to_pylist()) == {"play", "complete"}


@pytest.fixture
def spec(tmp_path: Path) -> tuple[Spec, list[tuple[str, str]]]:
    src = tmp_path / "source"
    src.mkdir()
    pq.write_table(_events(), src / "good.parquet")
    (src / "bad.parquet").write_bytes((src / "good.parquet").read_bytes()[:200])  # truncated
    pq.write_table(_events().rename_columns(["event_id", "user_id", "programme", "event_type", "event_ts",
                                             "played_seconds", "platform"]), src / "drift.parquet")
    cat = tmp_path / "catalogue.parquet"
    pq.write_table(pa.table({"item_id": ["p1", "p2"]}), cat)
    key = "20260301T10"
    target = IntervalTarget(HOUR.isoformat(), (HOUR + dt.timedelta(hours=1)).isoformat(), str(tmp_path / "out"))
    s = Spec(source_kind="local", source_options={}, lake_url=str(tmp_path), lake_options={},
             catalogue_file=str(cat), rules=RULES, intervals={key: target})
    files = [(key, str(src / n)) for n in ("good.parquet", "bad.parquet", "drift.parquet")]
    return s, files


def test_read_and_filter_quarantines_whole_bad_files(spec: tuple[Spec, list[tuple[str, str]]]) -> None:
    s, files = spec
    with BeamTestPipeline(runner=LOCAL_RUNNER) as p:
        out = (p | beam.Create(files) | beam.ParDo(ReadAndFilter(s))
               | beam.Map(lambda kv: (kv[1]["file"].rsplit("/", 1)[-1], kv[1]["file_problem"] and kv[1]["file_problem"][0],
                                      kv[1]["valid"].num_rows if kv[1]["valid"] is not None else None)))
        assert_that(out, equal_to([("good.parquet", None, 6), ("bad.parquet", "corrupt_file", None),
                                   ("drift.parquet", "missing_column_item_id", None)]))


def test_ingest_transform_writes_delta_and_summary(spec: tuple[Spec, list[tuple[str, str]]], tmp_path: Path) -> None:
    """Rows of a file rejected whole count as quarantined rows (not a diluted 6 of 22): every row read is
    committed, quarantined or filtered; the truncated file, whose rows cannot be counted, is listed with
    its size."""
    s, files = spec
    with BeamTestPipeline(runner=LOCAL_RUNNER) as p:
        summaries = p | beam.Create(files) | IngestActivity(s)
        assert_that(summaries | beam.Map(lambda d: (d["interval"], d["rows_in"], d["rows_out"], d["bad_rows"],
                                                    json.dumps(d["quarantined"], sort_keys=True),
                                                    json.dumps(d["quarantine_lines"], sort_keys=True),
                                                    json.dumps(d["filtered"], sort_keys=True),
                                                    sorted(k.rsplit("/", 1)[-1] for k in d["uncounted_files"]))),
                    equal_to([("20260301T10", 22, 3, 17,
                               json.dumps({"duplicate_event": 1, "future_ts": 1, "missing_column_item_id": 11,
                                           "missing_field": 1, "too_old": 1, "unknown_event_type": 1,
                                           "unknown_item": 1}, sort_keys=True),
                               json.dumps({"corrupt_file": 1, "duplicate_event": 1, "future_ts": 1,
                                           "missing_column_item_id": 11, "missing_field": 1, "too_old": 1,
                                           "unknown_event_type": 1, "unknown_item": 1}, sort_keys=True),
                               json.dumps({"irrelevant_event_type": 1, "short_play": 1}, sort_keys=True),
                               ["bad.parquet"])]))
    summary = json.loads((tmp_path / "out" / "_summary.json").read_text())
    assert summary["rows_in"] == summary["rows_out"] + sum(summary["quarantined"].values()) + \
        sum(summary["filtered"].values())
    delta = pq.read_table(tmp_path / "out" / "part-00000.parquet")
    assert delta.column_names == ["user_id", "item_id", "event_type", "event_ts", "played_seconds"]
    assert delta.column("user_id").to_pylist() == ["u1", "u1", "u3"]  # sorted by user, time
    assert (tmp_path / "out" / "_quarantine" / "corrupt_file.jsonl").exists()
    drifted = [json.loads(x) for x in (tmp_path / "out" / "_quarantine" / "missing_column_item_id.jsonl")
               .read_text().splitlines()]
    assert len(drifted) == 11 and all(r["_file"].endswith("drift.parquet") for r in drifted)
    assert {r["event_id"] for r in drifted} == {f"e{i}" for i in range(1, 11)}  # the rows, kept for replay


def test_dataflow_options_are_pinned_from_config(config_factory) -> None:
    from skyrec.config import ConfigError

    cfg = config_factory({"jobs": {"backend": "dataflow", "dataflow": {"project": "p1", "sdk_version": beam.__version__,
                                                                       "max_workers": 7}}})
    opts = pipeline_options(cfg, job_name="Activity run/1").get_all_options()
    assert opts["runner"] == "DataflowRunner" and opts["project"] == "p1" and opts["max_num_workers"] == 7
    assert opts["job_name"] == "activity-run-1" and opts["machine_type"] == "n2-highmem-4"
    assert "use_runner_v2" in opts["experiments"] and "shuffle_mode=service" in opts["experiments"]
    bad = config_factory({"jobs": {"backend": "dataflow", "dataflow": {"project": "p1", "sdk_version": "1.0.0"}}})
    with pytest.raises(ConfigError, match="sdk_version"):
        pipeline_options(bad, job_name="x")
    assert pipeline_options(config_factory(), job_name="x").get_all_options()["runner"] == "FnApiRunner"
