"""Metadata: local sync -> catalogue equals the planted truth; incremental re-sync; quarantine; error-rate gate."""

from __future__ import annotations

import datetime as dt
import json
from pathlib import Path
from typing import Any

import pyarrow.parquet as pq
import pytest
from ingest_helpers import END, make_config, ok, run_job

from skyrec.data.generate import generate
from skyrec.storage import Lake

H = dt.timedelta(hours=1)
COLUMNS = ["item_id", "title", "brand_id", "brand_title", "series_id", "masterbrand", "genres", "formats",
           "release_ts", "duration_seconds", "available_from", "available_until"]


def _put(src: Path, stream: str, rid: str, seq: int, record: Any, when: dt.datetime) -> None:
    folder = src / "metadata" / stream / when.strftime("%Y/%m/%d/%H")
    folder.mkdir(parents=True, exist_ok=True)
    body = record if isinstance(record, str) else json.dumps(record)
    (folder / f"{rid}-{seq}.json").write_text(body)


def test_catalogue_matches_the_planted_truth(world: dict[str, Any]) -> None:
    cfg = world["config"]
    lake = Lake.from_config(cfg)
    m = lake.latest(cfg, "catalogue")
    built = pq.read_table(lake.file_url(m, "catalogue.parquet")).select(COLUMNS)
    truth = pq.read_table(Path(cfg.source_url) / "_truth" / "catalogue.parquet").select(COLUMNS)
    assert built.equals(truth)
    sync = lake.latest(cfg, "raw_metadata")
    assert sync.quarantine == {"malformed_json": world["generated"]["malformed_objects"]}
    assert sync.meta["fetched"] == sum(world["generated"]["metadata_objects"].values()) + \
        world["generated"]["malformed_objects"]
    bad = json.loads(lake.open(sync, "malformed_json.jsonl").readline())
    assert bad["key"].startswith("metadata/episodes/") and "JSONDecodeError" in bad["error"]
    # re-running a committed sync / build is a no-op
    assert ok(run_job(cfg, "sync_metadata"))["noop"] is True
    assert ok(run_job(cfg, "build_catalogue"))["noop"] is True


def test_incremental_sync_fetches_only_changes_and_catalogue_applies_them(tmp_path: Path) -> None:
    cfg = make_config(tmp_path)
    gen = generate(cfg, users=20, items=60, days=1, events_per_user=5, seed=1, end=END.isoformat(),
                   bad_rate=0.0, progress=False)
    first = ok(run_job(cfg, "sync_metadata"))
    assert first["fetched"] == sum(gen["metadata_objects"].values()) and first["malformed"] == 0
    ok(run_job(cfg, "build_catalogue"))
    lake = Lake.from_config(cfg)
    cat0 = pq.read_table(lake.file_url(lake.latest(cfg, "catalogue"), "catalogue.parquet"))
    src = Path(cfg.source_url)
    rows = cat0.to_pylist()
    a, b, c = rows[0], rows[1], rows[2]
    # later: a renamed episode (with an offset timestamp), a withdrawn one, a stale re-delivery, a new window
    later = END + H
    ep_a = {"id": a["item_id"], "type": "episode", "title": "Renamed", "updated": "2026-03-01T02:30:00+01:00",
            "parent": {"id": a["series_id"] or a["brand_id"], "type": "series" if a["series_id"] else "brand"},
            "release_date": a["release_ts"].isoformat(), "duration": "PT10M", "genres": ["sci & tech", "COMEDY"]}
    _put(src, "episodes", a["item_id"], 5, ep_a, later)
    _put(src, "episodes", b["item_id"], 5, {"id": b["item_id"], "type": "episode", "deleted": True,
                                            "updated": "2026-03-01T01:00:00Z"}, later)
    _put(src, "episodes", c["item_id"], 5, {**ep_a, "id": c["item_id"], "title": "Stale",
                                            "updated": "2020-01-01T00:00:00Z"}, later)
    _put(src, "availability", a["item_id"], 5, {"id": a["item_id"], "type": "availability",
                                                "episode_id": a["item_id"],
                                                "available_from": "2026-03-01T00:00:00-05:00",
                                                "available_until": None, "updated": "2026-03-01T01:00:00Z"}, later)
    _put(src, "episodes", "p9999999", 0, {"id": "p9999999", "type": "episode", "title": "Orphan",
                                          "parent": {"id": "s0000000", "type": "series"},
                                          "updated": "2026-03-01T01:00:00Z"}, later)
    _put(src, "episodes", "p9999998", 0, {"id": "p9999998", "type": "episode", "title": "Bad time",
                                          "updated": "next tuesday"}, later)
    second = ok(run_job(cfg, "sync_metadata", END + 2 * H))
    assert second["fetched"] == 6 and second["unchanged"] == first["fetched"]
    built = ok(run_job(cfg, "build_catalogue", END + 2 * H))
    assert built["syncs"] == 1 and built["records_read"] == 6  # only the new sync was read
    assert built["invalid"] == {"bad_timestamp": 1} and built["unresolved"] == 1
    m = lake.latest(cfg, "catalogue")
    assert m.quarantine == {"bad_timestamp": 1, "unresolved_parent": 1}
    cat1 = {r["item_id"]: r for r in pq.read_table(lake.file_url(m, "catalogue.parquet")).to_pylist()}
    assert cat1[a["item_id"]]["title"] == "Renamed"
    assert cat1[a["item_id"]]["genres"] == ["Science", "Comedy"]
    assert cat1[a["item_id"]]["duration_seconds"] == 600
    assert cat1[a["item_id"]]["available_from"] == dt.datetime(2026, 3, 1, 5, tzinfo=dt.UTC)
    assert cat1[a["item_id"]]["available_until"] is None
    assert b["item_id"] not in cat1  # deletion honoured
    assert cat1[c["item_id"]]["title"] == c["title"]  # the stale version lost
    assert len(cat1) == len(rows) - 1


def test_sync_fails_above_error_rate_and_commits_nothing(tmp_path: Path) -> None:
    cfg = make_config(tmp_path, {"ingest": {"metadata": {"max_error_rate": 0.1}}})
    src = Path(cfg.source_url)
    for i in range(400):
        _put(src, "episodes", f"p{i:07d}", 0, {"id": f"p{i:07d}", "type": "episode", "title": "ok",
                                               "updated": "2026-03-01T00:00:00Z"}, END)
    for i in range(100):
        _put(src, "episodes", f"p{i:07d}", 1, '{"id": "p00', END)
    code, payload = run_job(cfg, "sync_metadata")
    assert code == 3 and payload["gate"] == "error_rate"
    assert "100 of 500 records quarantined (20.00%, allowed 10.00%)" in payload["error"]
    assert Lake.from_config(cfg).latest(cfg, "raw_metadata") is None
    assert ok(run_job(cfg, "sync_metadata", overrides=("error_rate",), try_number=2))["malformed"] == 100


@pytest.mark.parametrize("chunk", ["1000"])
def test_build_catalogue_in_small_chunks_gives_the_same_catalogue(world: dict[str, Any], tmp_path: Path,
                                                                   chunk: str) -> None:
    """Memory-bounded folding (tiny chunks) must not change the result."""
    cfg = world["config"]
    lake = Lake.from_config(cfg)
    expected = pq.read_table(lake.file_url(lake.latest(cfg, "catalogue"), "catalogue.parquet"))
    summary = ok(run_job(cfg, "build_catalogue", params={"chunk": chunk}, force=True, run_id="chunked"))
    m = lake.require(summary["outputs"][0])
    assert m.revision == 1
    assert pq.read_table(lake.file_url(m, "catalogue.parquet")).equals(expected)


def test_metadata_fields_are_type_strict_and_one_bad_record_never_fails_the_build(tmp_path: Path) -> None:
    """'deleted': 'false' is not a deletion, 'updated': 1e20 is out of range: both quarantined naming the
    field; the build commits everything else. A fixed record replayed comes back as a new revision."""
    import subprocess
    import sys

    cfg = make_config(tmp_path)
    generate(cfg, users=10, items=30, days=1, events_per_user=2, seed=4, end=END.isoformat(), bad_rate=0.0,
             progress=False)
    ok(run_job(cfg, "sync_metadata"))
    ok(run_job(cfg, "build_catalogue"))
    lake = Lake.from_config(cfg)
    rows = pq.read_table(lake.file_url(lake.latest(cfg, "catalogue"), "catalogue.parquet")).to_pylist()
    a, b, c, d = rows[:4]
    src = Path(cfg.source_url)
    later = END + H

    def ep(row: dict[str, Any], **fields: Any) -> dict[str, Any]:
        return {"id": row["item_id"], "type": "episode", "title": row["title"],
                "parent": {"id": row["series_id"] or row["brand_id"], "type": "series" if row["series_id"] else "brand"},
                "updated": "2026-03-01T01:00:00Z", **fields}

    _put(src, "episodes", a["item_id"], 7, ep(a, deleted="false"), later)
    _put(src, "episodes", b["item_id"], 7, ep(b, updated=1e20, title="Never applied"), later)
    _put(src, "episodes", c["item_id"], 7, ep(c, position=10 ** 12), later)
    _put(src, "episodes", d["item_id"], 7, ep(d, title="Renamed", parent={"id": 5, "type": "series"}), later)
    _put(src, "episodes", "p8888888", 99999999999, ep(a, id="p8888888"), later)  # seq beyond int32
    ok(run_job(cfg, "sync_metadata", END + 2 * H))
    built = ok(run_job(cfg, "build_catalogue", END + 2 * H))
    assert built["invalid"] == {"bad_boolean": 1, "bad_number": 1, "bad_string": 1, "bad_timestamp": 1,
                                "malformed_line": 1}
    m = lake.latest(cfg, "catalogue")
    assert m.meta["invalid_fields"] == {"deleted": 1, "id": 1, "position": 1, "updated": 1}
    bad_bool = json.loads(lake.open(m, "bad_boolean.jsonl").readline())
    assert bad_bool["field"] == "deleted" and "'false' (str)" in bad_bool["error"]
    bad_ts = json.loads(lake.open(m, "bad_timestamp.jsonl").readline())
    assert bad_ts["field"] == "updated" and "out of range" in bad_ts["error"]
    inv = m.meta["invariant"]["records"]
    assert inv["in"] == 5 and inv["committed"] == 0 and inv["holds"]
    cat = {r["item_id"]: r for r in pq.read_table(lake.file_url(m, "catalogue.parquet")).to_pylist()}
    assert a["item_id"] in cat  # a string "false" never deletes an episode
    assert cat[b["item_id"]]["title"] == b["title"] and cat[d["item_id"]]["title"] == d["title"]

    # replay the fixed 'deleted' record: a new revision of the same catalogue output, the original superseded
    fixed = tmp_path / "fixed.jsonl"
    rec = {**bad_bool, "record": {**bad_bool["record"], "deleted": True}}
    fixed.write_text(json.dumps(rec) + "\n")
    res = subprocess.run([sys.executable, "-m", "skyrec", "quarantine", "replay", "catalogue", m.key.split("=")[1],
                          "--file", str(fixed)], env={**__import__("os").environ, "SKYREC_HOME": str(tmp_path)},
                         capture_output=True, text=True, timeout=300)
    assert res.returncode == 0, res.stderr
    m2 = lake.require(m.path)
    assert m2.revision == 1 and "bad_boolean" not in m2.quarantine
    assert m2.meta["invariant"]["records"]["filtered"] == {"replaced_by_replay": 1}
    cat2 = {r["item_id"] for r in pq.read_table(lake.file_url(m2, "catalogue.parquet")).to_pylist()}
    assert a["item_id"] not in cat2 and len(cat2) == len(cat) - 1


def test_an_empty_source_commits_no_sync_and_no_catalogue_and_says_where_it_looked(tmp_path: Path) -> None:
    """Started before any data exists (or with a mistyped prefix), the first sync would commit an empty
    catalogue and every activity record after it would be rejected as an unknown item. It fails instead,
    naming where it looked; an operator can still override it for one run."""
    cfg = make_config(tmp_path)
    Path(cfg.source_url).mkdir(parents=True)
    code, payload = run_job(cfg, "sync_metadata")
    assert code == 3 and payload["gate"] == "empty_source", payload
    assert f"0 metadata objects listed under {cfg.source_url}/metadata/{{" in payload["error"]
    assert "skyrec generate" in payload["error"]
    lake = Lake.from_config(cfg)
    assert lake.latest(cfg, "raw_metadata") is None
    code, payload = run_job(cfg, "build_catalogue")
    assert code != 0 and lake.latest(cfg, "catalogue") is None, payload
    # overridden, the sync commits; the catalogue it would build is empty and is refused the same way
    assert ok(run_job(cfg, "sync_metadata", overrides=("empty_source",), try_number=2))["fetched"] == 0
    code, payload = run_job(cfg, "build_catalogue", try_number=2)
    assert code == 3 and payload["gate"] == "empty_catalogue", payload
    assert "0 programmes in the catalogue" in payload["error"] and lake.latest(cfg, "catalogue") is None


def test_a_source_that_lost_every_object_does_not_empty_the_catalogue(tmp_path: Path) -> None:
    cfg = make_config(tmp_path)
    src = Path(cfg.source_url)
    _put(src, "episodes", "p0000001", 0, {"id": "p0000001", "type": "episode", "title": "ok",
                                          "updated": "2026-03-01T00:00:00Z"}, END)
    ok(run_job(cfg, "sync_metadata", END - H))
    for f in src.rglob("*.json"):
        f.unlink()
    code, payload = run_job(cfg, "sync_metadata")
    assert code == 3 and payload["gate"] == "empty_source", payload
    assert "1 known from the last sync" in payload["error"]
