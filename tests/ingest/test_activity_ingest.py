"""Activity ingestion end to end on generated data: backfill, quarantine, gates, determinism, cold start."""

from __future__ import annotations

import datetime as dt
import json
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq
import pytest
from ingest_helpers import END, make_config, ok, run_job

from skyrec.data.generate import activity_path, corrupt_file, drift_schema, read_activity_file, write_activity_file
from skyrec.storage import Lake

pytestmark = pytest.mark.integration
START = END - dt.timedelta(days=4)
H = dt.timedelta(hours=1)
# generator bad kind -> quarantine reason of the ingest
REASONS = {"unknown_event_type": "unknown_event_type", "unknown_item": "unknown_item",
           "duplicate_event_id": "duplicate_event", "future_ts": "future_ts", "too_old": "too_old",
           "missing_user": "missing_field"}


def _manifests(lake: Lake, prefix: str) -> list[Any]:
    return [lake.manifest(p) for p in lake.versions(prefix)]


@pytest.fixture(scope="module")
def backfilled(world: dict[str, Any]) -> dict[str, Any]:
    cfg = world["config"]
    summary = ok(run_job(cfg, "backfill_activity", params={"start": START.isoformat(), "end": END.isoformat()}))
    return {**world, "backfill": summary, "lake": Lake.from_config(cfg)}


def test_backfill_quarantines_every_bad_kind_with_exact_counts(backfilled: dict[str, Any]) -> None:
    lake, gen = backfilled["lake"], backfilled["generated"]
    assert backfilled["backfill"]["committed"] == 96 and backfilled["backfill"]["missing"] == []
    deltas = _manifests(lake, "activity/deltas/")
    assert len(deltas) == 96
    quarantine: dict[str, int] = {}
    filtered: dict[str, int] = {}
    rows_in = rows_out = 0
    for m in deltas:
        for k, v in m.quarantine.items():
            quarantine[k] = quarantine.get(k, 0) + v
        for k, v in m.meta["filtered"].items():
            filtered[k] = filtered.get(k, 0) + v
        rows_in += m.meta["rows_in"]
        rows_out += m.rows
    expected = {REASONS[k]: v for k, v in gen["bad_events"].items()}
    assert quarantine == expected
    assert filtered["irrelevant_event_type"] > 0 and filtered["short_play"] > 0  # counted, not quarantined
    assert rows_in == gen["activity_rows"] == rows_out + sum(quarantine.values()) + sum(filtered.values())
    # a quarantined record is kept, readable, with its reason's file
    m = next(m for m in deltas if "unknown_item" in m.quarantine)
    rec = json.loads(lake.open(m, "unknown_item.jsonl").readline())
    assert rec["item_id"].startswith("x")
    snap = lake.latest(backfilled["config"], "activity_snapshot")
    assert snap.path.endswith("end=20260228T23") and snap.rows == rows_out
    assert snap.meta["deltas"] == 96 and snap.meta["last_interval"] == "20260228T23"


def test_backfill_again_is_a_noop_and_forced_rebuild_gives_identical_bytes(backfilled: dict[str, Any]) -> None:
    cfg, lake = backfilled["config"], backfilled["lake"]
    again = ok(run_job(cfg, "backfill_activity", params={"start": START.isoformat(), "end": END.isoformat()}))
    assert again["committed"] == 0 and again["reused"] == 96 and again["snapshot_built"] is False
    # forced: every delta and the snapshot are rebuilt as a new revision, byte for byte the same
    s, e = END - 6 * H, END
    forced = ok(run_job(cfg, "backfill_activity", params={"start": s.isoformat(), "end": e.isoformat()}, force=True,
                        run_id="forced"))
    assert forced["committed"] == 6
    for rel in forced["outputs"]:
        revs = sorted(Path(lake.abspath(rel), "_manifest").glob("*.json"))
        assert len(revs) == 2, rel
        first, second = (json.loads(p.read_text()) for p in revs)
        assert [(f["path"].split("/", 2)[-1], f["sha256"]) for f in first["files"]] == \
               [(f["path"].split("/", 2)[-1], f["sha256"]) for f in second["files"]]


@pytest.mark.parametrize(("activity", "runs_expected"), [
    ({"hours_per_pipeline": 2}, [2, 2, 1]),       # the hours' cap
    ({"pipeline_source_mb": 1e-6}, [1] * 5),      # every hour's files above the budget: each hour runs alone
    ({}, [5]),                                    # the defaults: these hours' files fit one run
], ids=["two-hours", "one-byte-budget", "defaults"])
def test_a_backfill_in_pipelines_of_a_few_hours_commits_the_same_deltas(
        backfilled: dict[str, Any], pipeline_runs: list[dict[str, Any]], activity: dict[str, Any],
        runs_expected: list[int]) -> None:
    """In process, a backfill's hours go through pipelines of consecutive hours bounded by the size of their
    input files (``ingest.activity.pipeline_source_mb``, from the source listing) and by
    ``hours_per_pipeline`` (Beam's runner holds a run's rows until they are grouped by interval): the deltas
    are the same bytes however the hours are cut."""
    cfg = make_config(backfilled["home"], {"ingest": {"activity": activity}})
    s, e = END - 11 * H, END - 6 * H  # 5 hours, across the first backfill's pipeline runs
    forced = ok(run_job(cfg, "backfill_activity", params={"start": s.isoformat(), "end": e.isoformat()}, force=True,
                        run_id=f"pipelines-{'-'.join(map(str, runs_expected))}"))
    assert forced["committed"] == 5
    runs = [r["intervals"] for r in pipeline_runs]
    assert [len(r) for r in runs] == runs_expected
    assert sum(runs, []) == [f"{s + k * H:%Y%m%dT%H}" for k in range(5)]
    lake = backfilled["lake"]
    for rel in forced["outputs"]:
        if "deltas" not in rel:
            continue
        revs = sorted(Path(lake.abspath(rel), "_manifest").glob("*.json"))
        assert len(revs) >= 2, rel
        first, latest = (json.loads(p.read_text()) for p in (revs[0], revs[-1]))
        assert [(f["path"].split("/", 2)[-1], f["sha256"]) for f in first["files"]] == \
               [(f["path"].split("/", 2)[-1], f["sha256"]) for f in latest["files"]]
        assert first["rows"] == latest["rows"] and first["quarantine"] == latest["quarantine"]


def test_pipeline_runs_take_consecutive_hours_up_to_the_input_budget() -> None:
    """The cut itself: hours in order, a new run when the next hour's files would pass the budget or the run
    holds ``hours_per_pipeline`` hours; an hour above the budget alone; a Beam backend: one run."""
    from types import SimpleNamespace

    from skyrec.jobs.ingest_activity import _pipeline_batches

    mb = 1024 * 1024
    sizes = {"a": 4 * mb, "b": 4 * mb, "c": 1 * mb, "d": 30 * mb, "e": 2 * mb, "f": 1 * mb, "g": 1 * mb}
    pending = [(k, f"rel-{k}", [k]) for k in "abcdefg"]

    def cut(backend: str = "local", mb_budget: float = 10.0, hours: int = 744, hours_pending: str = "abcdefg"
            ) -> list[str]:
        cfg = SimpleNamespace(jobs=SimpleNamespace(backend=backend), ingest=SimpleNamespace(
            activity=SimpleNamespace(pipeline_source_mb=mb_budget, hours_per_pipeline=hours)))
        runs = _pipeline_batches(cfg, [p for p in pending if p[0] in hours_pending], sizes)
        return ["".join(h for h, _, _ in run) for run in runs]

    assert cut() == ["abc", "d", "efg"]
    assert cut(hours=2) == ["ab", "c", "d", "ef", "g"]
    assert cut(mb_budget=8.5) == ["ab", "c", "d", "efg"]
    assert cut(mb_budget=9.0) == ["abc", "d", "efg"]  # up to the budget, inclusive
    assert cut(backend="dataflow") == ["abcdefg"]
    assert cut(hours_pending="") == [] and cut(backend="dataflow", hours_pending="") == []


def test_hourly_ingest_spike_fails_volume_gate_and_override_passes(backfilled: dict[str, Any]) -> None:
    cfg, lake = backfilled["config"], backfilled["lake"]
    day_before = read_activity_file(cfg, activity_path(cfg, END - 24 * H))
    parts = []
    for k in range(6):  # the feed suddenly delivers ~6x the usual volume
        t = day_before.set_column(0, "event_id", pc.binary_join_element_wise(day_before.column("event_id"),
                                                                             pa.scalar(f"-{k}"), ""))
        ts = pc.add(t.column("event_ts"), pa.scalar(dt.timedelta(days=1)))
        parts.append(t.set_column(4, "event_ts", ts))
    write_activity_file(cfg, activity_path(cfg, END), pa.concat_tables(parts))
    code, payload = run_job(cfg, "ingest_activity", END + H)
    assert code == 3 and payload["gate"] == "volume"
    assert "volume" in payload["error"] and "--override volume" in payload["error"]
    assert not lake.committed("activity/deltas/interval=20260301T00")
    summary = ok(run_job(cfg, "ingest_activity", END + H, overrides=("volume",), try_number=2))
    m = lake.require("activity/deltas/interval=20260301T00")
    assert [g for g in m.meta["gates"] if g["gate"] == "volume"][0]["overridden"] is True
    assert summary["outputs"][-1] == "activity/snapshots/end=20260301T00"
    # re-running a committed interval is a no-op
    assert ok(run_job(cfg, "ingest_activity", END + H, try_number=3))["noop"] is True


def test_error_rate_gate_fails_with_clear_message(backfilled: dict[str, Any]) -> None:
    cfg, lake = backfilled["config"], backfilled["lake"]
    hour = END + 3 * H
    n = 1000
    rng = np.random.default_rng(0)
    known = pq.read_table(lake.abspath(lake.latest(cfg, "catalogue").path) + "/" +
                          lake.latest(cfg, "catalogue").file("catalogue.parquet").path).column("item_id")
    items = known.take(pa.array(rng.integers(0, len(known), n))).to_pylist()
    for i in range(0, n, 5):
        items[i] = f"unknown-{i}"  # 20% unknown items
    ts = [hour + dt.timedelta(seconds=int(s)) for s in rng.integers(0, 3600, n)]
    table = pa.table({"event_id": [f"err-{i}" for i in range(n)], "user_id": [f"u{i % 50}" for i in range(n)],
                      "item_id": items, "event_type": ["play"] * n, "event_ts": pa.array(ts, pa.timestamp("us", "UTC")),
                      "played_seconds": pa.array([300.0] * n, pa.float32()), "platform": ["web"] * n})
    write_activity_file(cfg, activity_path(cfg, hour), table)
    code, payload = run_job(cfg, "ingest_activity", hour + H)
    assert code == 3 and payload["gate"] == "error_rate"
    assert "200 of 1000 records quarantined (20.00%, allowed 5.00%)" in payload["error"]
    assert not lake.committed("activity/deltas/interval=20260301T03")


def test_corrupt_file_and_schema_drift_are_quarantined_and_the_run_continues(backfilled: dict[str, Any]) -> None:
    cfg, lake = backfilled["config"], backfilled["lake"]
    hour = END + 5 * H
    src = read_activity_file(cfg, activity_path(cfg, END - 19 * H))
    src = src.set_column(4, "event_ts", pc.add(src.column("event_ts"), pa.scalar(dt.timedelta(hours=24))))

    def renamed(suffix: str) -> pa.Table:
        return src.set_column(0, "event_id", pc.binary_join_element_wise(src.column("event_id"),
                                                                         pa.scalar(suffix), ""))

    write_activity_file(cfg, activity_path(cfg, hour, 0), src)
    write_activity_file(cfg, activity_path(cfg, hour, 1), renamed("-a"))
    corrupt_file(cfg, activity_path(cfg, hour, 1), keep_fraction=0.6)
    write_activity_file(cfg, activity_path(cfg, hour, 2), drift_schema(renamed("-b"), rename={"item_id": "programme_id"}))
    write_activity_file(cfg, activity_path(cfg, hour, 3), drift_schema(renamed("-c"), add={"app_version": "7.1"}))
    # two of four files rejected whole: their rows count as errors (not 0 of 3n), the gate fails
    code, payload = run_job(cfg, "ingest_activity", hour + H, overrides=("volume",))
    assert code == 3 and payload["gate"] == "error_rate", payload
    details = payload["details"]
    estimate = details["estimated_rows_of_uncounted_files"]
    assert 0 < estimate <= src.num_rows  # the truncated file's rows, estimated from its size
    assert details["bad"] == src.num_rows + estimate and details["rows"] == 3 * src.num_rows + estimate
    assert f"{src.num_rows + estimate} of {3 * src.num_rows + estimate} records quarantined" in payload["error"]
    assert not lake.committed("activity/deltas/interval=20260301T05")
    summary = ok(run_job(cfg, "ingest_activity", hour + H, overrides=("volume", "error_rate"), try_number=2))
    m = lake.require("activity/deltas/interval=20260301T05")
    assert m.quarantine["corrupt_file"] == 1  # one line: the file (its rows cannot be counted)
    assert m.quarantine["missing_column_item_id"] == src.num_rows  # every row of the drifted file, kept
    assert m.meta["quarantined"]["missing_column_item_id"] == src.num_rows
    assert m.meta["quarantined_files"] == {"corrupt_file": 1, "missing_column_item_id": 1}
    assert list(m.meta["bad_files"].values()) == ["corrupt_file", "missing_column_item_id"]
    rec = json.loads(lake.open(m, "missing_column_item_id.jsonl").readline())
    assert rec["_file"].endswith("part-00002.parquet") and "programme_id" in rec
    rec = json.loads(lake.open(m, "corrupt_file.jsonl").readline())
    assert rec["file"].endswith("part-00001.parquet") and rec["rows"] is None and rec["bytes"] > 0
    assert list(m.meta["extra_columns"].values()) == [["app_version"]]
    assert m.meta["rows_in"] == 3 * src.num_rows  # two readable files + the drifted one's rows
    inv = m.meta["invariant"]
    assert inv["rows"]["in"] == inv["rows"]["committed"] + sum(inv["rows"]["quarantined"].values()) + \
        sum(inv["rows"]["filtered"].values()) and inv["rows"]["holds"] and inv["rows"]["uncounted_files"] == 1
    assert inv["files"] == {"unit": "files", "in": 4, "committed": 2, "holds": True, "filtered": {},
                            "quarantined": {"corrupt_file": 1, "missing_column_item_id": 1}}
    assert m.rows > src.num_rows  # the good file and the extra-column file both landed
    assert summary["counters"]["corrupt_file"] == 1


def test_cold_start_lists_follow_variant_candidates_and_availability(backfilled: dict[str, Any]) -> None:
    from skyrec.data.catalogue import available_mask, candidate_mask

    cfg, lake = backfilled["config"], backfilled["lake"]
    ok(run_job(cfg, "ingest_availability", END, hourly=False))
    summary = ok(run_job(cfg, "ingest_cold_start", END, hourly=False))
    m = lake.require(summary["outputs"][0])
    table = pq.read_table(lake.file_url(m, "cold_start.parquet")).to_pylist()
    cat_m = lake.latest(cfg, "catalogue")
    cat = pq.read_table(lake.file_url(cat_m, "catalogue.parquet"))
    ids = cat.column("item_id").to_pylist()
    for name, variant in cfg.variants.items():
        allowed = {ids[i] for i in np.flatnonzero(candidate_mask(cat, variant.candidates) & available_mask(cat, END))}
        rows = [r for r in table if r["variant"] == name]
        assert rows, name
        assert [r["rank"] for r in rows] == list(range(1, len(rows) + 1))
        assert {r["item_id"] for r in rows} <= allowed
        scores = [r["score"] for r in rows]
        assert scores == sorted(scores, reverse=True) and scores[0] == pytest.approx(1.0)
        assert m.meta["variants"][name]["candidates"] == len(allowed)
