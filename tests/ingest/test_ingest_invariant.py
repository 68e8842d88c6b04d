"""The ingest invariant of the activity ingest: whole-file rejects count (error rate, all-rejected hours),
bad durations are quarantined, and quarantined data can be replayed once fixed (a new revision)."""

from __future__ import annotations

import datetime as dt
import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from ingest_helpers import END, make_config, ok, run_job

from skyrec.data.generate import activity_path, corrupt_file, drift_schema, write_activity_file
from skyrec.storage import Lake

pytestmark = pytest.mark.integration
H = dt.timedelta(hours=1)
TS = pa.timestamp("us", "UTC")


@pytest.fixture(scope="module")
def small(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    """A catalogue (no activity needed): 60 episodes synced and built."""
    from skyrec.data.generate import generate

    home = tmp_path_factory.mktemp("small")
    cfg = make_config(home)
    generate(cfg, users=20, items=60, days=1, events_per_user=3, seed=5, end=END.isoformat(), bad_rate=0.0,
             progress=False)
    ok(run_job(cfg, "sync_metadata"))
    ok(run_job(cfg, "build_catalogue"))
    lake = Lake.from_config(cfg)
    items = pq.read_table(lake.file_url(lake.latest(cfg, "catalogue"), "catalogue.parquet")).column(
        "item_id").to_pylist()
    return {"home": home, "config": cfg, "lake": lake, "items": items}


def events(hour: dt.datetime, n: int, items: list[str], prefix: str, seconds: Any = 300.0) -> pa.Table:
    secs = seconds if isinstance(seconds, list) else [seconds] * n
    return pa.table({"event_id": [f"{prefix}-{i}" for i in range(n)], "user_id": [f"u{i % 37}" for i in range(n)],
                     "item_id": [items[i % len(items)] for i in range(n)], "event_type": ["play"] * n,
                     "event_ts": pa.array([hour + dt.timedelta(seconds=i % 3600) for i in range(n)], TS),
                     "played_seconds": pa.array(secs, pa.float32()), "platform": ["web"] * n})


def delta_rel(hour: dt.datetime) -> str:
    return f"activity/deltas/interval={hour:%Y%m%dT%H}"


def test_rows_of_a_wrongly_typed_file_count_in_the_error_rate(small: dict[str, Any]) -> None:
    """Half the hour in a file with a wrongly typed column: 1000 of 2000 records bad, not 0 of 2000."""
    cfg, lake, items = small["config"], small["lake"], small["items"]
    hour = END + 2 * H
    write_activity_file(cfg, activity_path(cfg, hour, 0), events(hour, 1000, items, "a"))
    typed = events(hour, 1000, items, "b").set_column(5, "played_seconds", pa.array(["lots"] * 1000))
    write_activity_file(cfg, activity_path(cfg, hour, 1), typed)
    code, payload = run_job(cfg, "ingest_activity", hour + H)
    assert code == 3 and payload["gate"] == "error_rate", payload
    assert "1000 of 2000 records quarantined (50.00%, allowed 5.00%)" in payload["error"]
    assert not lake.committed(delta_rel(hour))
    # overridden, the delta commits with the file's rows quarantined under the reason naming the column
    ok(run_job(cfg, "ingest_activity", hour + H, overrides=("error_rate",), try_number=2))
    m = lake.require(delta_rel(hour))
    assert m.meta["quarantined"] == {"bad_column_type_played_seconds": 1000}
    assert m.quarantine == {"bad_column_type_played_seconds": 1000}
    assert m.meta["invariant"]["rows"] == {"unit": "rows", "in": 2000, "committed": 1000, "filtered": {},
                                           "quarantined": {"bad_column_type_played_seconds": 1000},
                                           "holds": True, "uncounted_files": 0}
    assert m.meta["invariant"]["files"]["quarantined"] == {"bad_column_type_played_seconds": 1}


@pytest.mark.parametrize("fault", ["missing_column", "corrupt"])
def test_an_hour_whose_data_was_all_rejected_fails_and_commits_nothing(small: dict[str, Any], fault: str) -> None:
    cfg, lake, items = small["config"], small["lake"], small["items"]
    hour = END + (4 if fault == "corrupt" else 3) * H
    table = events(hour, 50, items, f"r{fault}")
    if fault == "missing_column":
        write_activity_file(cfg, activity_path(cfg, hour), drift_schema(table, drop=["item_id"]))
    else:
        write_activity_file(cfg, activity_path(cfg, hour), table)
        corrupt_file(cfg, activity_path(cfg, hour), keep_fraction=0.5)
    code, payload = run_job(cfg, "ingest_activity", hour + H)
    assert code == 3 and payload["gate"] == "all_rejected", payload
    assert "every record of the input was rejected" in payload["error"]
    assert not lake.committed(delta_rel(hour))  # never an empty committed delta
    assert not lake.committed(f"activity/snapshots/end={hour:%Y%m%dT%H}")


def test_bad_durations_are_quarantined_as_invalid_not_filtered_or_passed(small: dict[str, Any]) -> None:
    cfg, lake, items = small["config"], small["lake"], small["items"]
    hour = END + 5 * H
    secs = [300.0] * 600
    secs[:5] = [float("nan"), float("inf"), float("-inf"), -5.0, None]
    secs[5] = 3.0  # a real short play: filtered, counted
    write_activity_file(cfg, activity_path(cfg, hour), events(hour, 600, items, "d", secs))
    ok(run_job(cfg, "ingest_activity", hour + H))
    m = lake.require(delta_rel(hour))
    assert m.meta["quarantined"] == {"invalid_played_seconds": 5}
    assert m.meta["filtered"] == {"short_play": 1}
    assert m.rows == 594
    delta = pq.read_table(lake.file_url(m, "part-00000.parquet"))
    played = delta.column("played_seconds").to_pylist()
    assert all(v is not None and 0 <= v < float("inf") for v in played)


def _cli(home: Path, *args: str) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "SKYREC_HOME": str(home)}
    return subprocess.run([sys.executable, "-m", "skyrec", *args], env=env, capture_output=True, text=True,
                          timeout=300)


def test_quarantined_rows_are_replayed_once_fixed_as_a_new_revision(small: dict[str, Any], tmp_path: Path) -> None:
    cfg, lake, items = small["config"], small["lake"], small["items"]
    hour = END + 6 * H
    table = events(hour, 600, items, "q")
    ids = table.column("item_id").to_pylist()
    for i in range(0, 20):
        ids[i] = f"typo-{ids[i]}"  # 20 unknown items: quarantined
    write_activity_file(cfg, activity_path(cfg, hour), table.set_column(2, "item_id", pa.array(ids)))
    ok(run_job(cfg, "ingest_activity", hour + H))
    rel = delta_rel(hour)
    first = lake.require(rel)
    assert first.quarantine == {"unknown_item": 20} and first.rows == 580

    listed = _cli(small["home"], "quarantine", "list", "--dataset", "activity_delta", "--json")
    assert listed.returncode == 0, listed.stderr
    assert {"dataset": "activity_delta", "output": rel, "revision": 0, "reason": "unknown_item",
            "count": 20} in [json.loads(x) for x in listed.stdout.splitlines()]
    exported = tmp_path / "unknown_item.jsonl"
    res = _cli(small["home"], "quarantine", "export", rel, "unknown_item", "--out", str(exported))
    assert res.returncode == 0, res.stderr
    fixed = []
    for line in exported.read_text().splitlines():
        rec = json.loads(line)
        rec["item_id"] = rec["item_id"].removeprefix("typo-")
        fixed.append(json.dumps(rec))
    fixed_file = tmp_path / "fixed.jsonl"
    fixed_file.write_text("\n".join(fixed) + "\n")

    res = _cli(small["home"], "quarantine", "replay", "activity_delta", f"{hour:%Y%m%dT%H}", "--file", str(fixed_file))
    assert res.returncode == 0, res.stderr
    second = lake.require(rel)
    assert second.revision == 1 and second.rows == 600 and second.quarantine == {}
    assert second.meta["filtered"] == {"replaced_by_replay": 20}  # the originals, superseded: counted once
    inv = second.meta["invariant"]["rows"]
    assert inv["in"] == 620 and inv["committed"] == 600 and inv["holds"]
    assert len(second.meta["replay_inputs"]) == 1
    # revision 0 is untouched: its manifest and files are still there, as committed
    rev0 = json.loads(Path(lake.abspath(rel), "_manifest", "000000.json").read_text())
    assert rev0["rows"] == 580
    lake.verify(first)
    # the snapshot ending with the interval was rebuilt as a new revision too
    assert lake.require(f"activity/snapshots/end={hour:%Y%m%dT%H}").revision == 1


def test_a_rejected_file_is_replayed_whole_with_replaces(small: dict[str, Any], tmp_path: Path) -> None:
    cfg, lake, items = small["config"], small["lake"], small["items"]
    hour = END + 7 * H
    good = events(hour, 600, items, "w0")
    write_activity_file(cfg, activity_path(cfg, hour, 0), good)
    bad = events(hour, 300, items, "w1")
    write_activity_file(cfg, activity_path(cfg, hour, 1), drift_schema(bad, rename={"user_id": "uid"}))
    ok(run_job(cfg, "ingest_activity", hour + H, overrides=("error_rate",)))
    assert lake.require(delta_rel(hour)).meta["quarantined"] == {"missing_column_user_id": 300}
    fixed = tmp_path / "fixed.parquet"
    pq.write_table(bad, fixed)
    res = _cli(small["home"], "quarantine", "replay", "activity_delta", f"{hour:%Y%m%dT%H}", "--file", str(fixed),
               "--replaces", activity_path(cfg, hour, 1).rsplit("/", 1)[-1])
    assert res.returncode == 0, res.stderr
    m = lake.require(delta_rel(hour))
    assert m.revision == 1 and m.rows == 900 and m.quarantine == {}
    assert m.meta["invariant"]["files"] == {"unit": "files", "in": 3, "committed": 2, "quarantined": {},
                                            "filtered": {"replaced_by_replay": 1}, "holds": True}


def test_replay_refuses_unreadable_fixed_records(small: dict[str, Any], tmp_path: Path) -> None:
    bad = tmp_path / "fixed.jsonl"
    bad.write_text('{"event_id": "x"\n')
    res = _cli(small["home"], "quarantine", "replay", "activity_delta", "20260301T09", "--file", str(bad))
    assert res.returncode == 4 and "fixed.jsonl:1: not JSON" in res.stderr
