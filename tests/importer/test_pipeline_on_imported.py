"""Imported files through the ingest jobs: vocabulary kept, backfill volume rule, the snapshot window counted."""

from __future__ import annotations

import datetime as dt
import os
from pathlib import Path
from typing import Any

import pyarrow.parquet as pq
import pytest
from importer_files import ROOT, T0, films_config, write_classic

from skyrec.config import load_config
from skyrec.data.importer import run_import


def _job(cfg: Any, name: str, logical: dt.datetime, params: dict[str, str] | None = None) -> tuple[int, dict]:
    from skyrec.jobs.base import RunInfo, execute

    run = RunInfo(dag_id="test", run_id=f"r-{name}-{logical:%Y%m%dT%H}", task_id=name, logical_date=logical,
                  interval_start=logical - dt.timedelta(hours=1), interval_end=logical)
    return execute(name, config=cfg, run=run, params=params)


@pytest.fixture(scope="module")
def imported(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Any]:
    tmp = tmp_path_factory.mktemp("imp")
    data, item = write_classic(tmp / "in", users=40, items=60, ratings=1500, days=4, bad=False)
    lines = data.read_text().splitlines()
    burst = [f"999\t{1 + k % 60}\t5\t{T0 + 3600 * 30 + k}" for k in range(120)]  # one user rates 120 films at once
    data.write_text("\n".join(lines + burst) + "\n")
    return {"tmp": tmp, "data": data, "item": item}


def _world(imported: dict[str, Any], name: str, window: Any) -> tuple[Any, dict]:
    cfg = films_config(imported["tmp"] / name, {"ingest": {"activity": {"snapshot_interval_days": window}}})
    summary = run_import(cfg, interactions=str(imported["data"]), items=str(imported["item"]))
    end = dt.datetime.fromisoformat(summary["activity_range"]["end"])
    for job in ("sync_metadata", "build_catalogue"):
        code, payload = _job(cfg, job, end)
        assert code == 0, payload
    code, payload = _job(cfg, "backfill_activity", end, {"start": summary["activity_range"]["start"],
                                                        "end": end.isoformat()})
    return cfg, {"code": code, "payload": payload, "end": end}


def test_a_bursty_historical_import_backfills_without_override_and_keeps_everything(imported) -> None:
    from skyrec.storage import Lake

    cfg, r = _world(imported, "all", "all")
    assert r["code"] == 0, r["payload"]  # the burst hour is 120 ratings among hours of ~15: no override needed
    s = r["payload"]["summary"]
    assert s["older_than_window"] == {"deltas": 0, "rows": 0}
    lake = Lake.from_config(cfg)
    snap = lake.latest(cfg, "activity_snapshot")
    assert snap.meta["days"] == "all" and snap.rows == s["snapshot_rows"] > 0
    # the catalogue keeps the source's genre spelling
    cat = pq.read_table(lake.file_url(lake.latest(cfg, "catalogue"), "catalogue.parquet"), filesystem=lake.fs)
    genres = {g for gs in cat.column("genres").to_pylist() for g in gs}
    assert {"Sci-Fi", "Film-Noir", "Children's"} <= genres and "Sci-fi" not in genres


def test_a_window_shorter_than_the_history_counts_what_it_leaves_out(imported) -> None:
    cfg, r = _world(imported, "oneday", 1)
    assert r["code"] == 0, r["payload"]
    s = r["payload"]["summary"]
    older = s["older_than_window"]
    assert older["deltas"] > 0 and older["rows"] > 0
    from skyrec.storage import Lake

    lake = Lake.from_config(cfg)
    total = sum(lake.manifest(p).rows for p in lake.versions("activity/deltas/"))
    assert s["snapshot_rows"] + older["rows"] == total  # nothing lost silently


def test_backfill_volume_rule() -> None:
    from skyrec.jobs.ingest_activity import backfill_volume_result

    assert backfill_volume_result(120, [15, 3, 40, 0], factor=20, min_volume=100).passed
    bad = backfill_volume_result(5000, [15, 3, 40, 0], factor=20, min_volume=100)
    assert not bad.passed and "largest other hour" in bad.message
    assert backfill_volume_result(90, [1, 2], factor=20, min_volume=100).passed  # too small to judge


def test_overrides_take_dates_and_words_without_inner_quotes(tmp_path: Path) -> None:
    environ = {**os.environ, "SKYREC_HOME": str(tmp_path), "SKYREC__AIRFLOW__START_DATE": "1997-09-01",
               "SKYREC__PUBLISH__KEY_PREFIX": "no", "SKYREC__PRECOMPUTE__RULES__MAX_PER_BRAND": "null",
               "SKYREC__INGEST__ACTIVITY__SNAPSHOT_INTERVAL_DAYS": "all", "SKYREC__PRECOMPUTE__K": "20"}
    environ.pop("SKYREC_CONFIG_DIR", None)
    cfg = load_config("local", root=ROOT, environ=environ)
    assert cfg.airflow.start_date == "1997-09-01" and cfg.publish.key_prefix == "no"
    assert cfg.precompute.rules.max_per_brand is None and cfg.precompute.k == 20
    assert cfg.ingest.activity.window_days is None
    environ["SKYREC__AIRFLOW__START_DATE"] = "1997-09-01T00:00:00+00:00"
    assert load_config("local", root=ROOT, environ=environ).airflow.start_date == "1997-09-01T00:00:00+00:00"


def test_filters_match_case_insensitively_and_unbranded_items_are_not_capped_together() -> None:
    import numpy as np
    import pyarrow as pa

    from skyrec.data.catalogue import candidate_mask, normalise_genre
    from skyrec.scoring.candidates import _list_has

    assert normalise_genre("Sci-Fi") == "Sci-Fi" and normalise_genre("Film-Noir") == "Film-Noir"
    cat = pa.table({"item_id": ["a", "b", "c"], "genres": [["Sci-Fi"], ["News"], ["comedy special"]],
                    "formats": [[], [], []], "masterbrand": [None, None, None]})
    assert candidate_mask(cat, {"genres": ["sci-fi"]}).tolist() == [True, False, False]
    assert candidate_mask(cat, {"genres": ["Comedy Special"]}).tolist() == [False, False, True]
    assert _list_has(cat, "news").tolist() == [False, True, False]
    from skyrec.scoring.topk import NO_BRAND, select_topk

    scores = np.array([[0.9, 0.8, 0.7, 0.6, 0.5]], dtype=np.float32)
    brands = np.array([NO_BRAND, NO_BRAND, NO_BRAND, 1, 1], dtype=np.int32)
    top = select_topk(scores, 5, brands=brands, max_per_brand=1)
    assert top.items[0, : top.counts[0]].tolist() == [0, 1, 2, 3]  # unbranded never capped; brand 1 capped


def test_the_film_example_differs_from_the_shipped_config_only_in_its_domain_parts() -> None:
    import yaml

    base = yaml.safe_load((ROOT / "config" / "base.yaml").read_text())
    films = yaml.safe_load((ROOT / "config" / "examples" / "films" / "base.yaml").read_text())
    domain = {"variants", "training", "precompute", "ingest", "airflow", "models"}
    for section in set(base) | set(films):
        if section not in domain:
            mine, theirs = films.get(section), base.get(section)
            if section == "paths":  # its own home, apart from the sample data (the rest of the section alike)
                assert mine.pop("home") == ".skyrec/films" and theirs.pop("home") == ".skyrec"
            assert mine == theirs, f"config/examples/films/base.yaml: {section} drifted"
    # models: the same set and classes; only the parameters searched on ratings data (docs/evaluation.md,
    # "Ratings data") differ
    searched = {"als": {"regularization", "alpha"}, "ease": {"regularization"}, "knn": {"similarity", "neighbours"}}
    assert set(films["models"]) == set(base["models"])
    for name, spec in base["models"].items():
        other = films["models"][name]
        assert other["class_path"] == spec["class_path"], name
        changed = {k for k in set(spec["params"]) | set(other["params"])
                   if spec["params"].get(k) != other["params"].get(k)}
        assert changed <= searched.get(name, set()), (name, changed)
    for section in ("training", "precompute", "airflow"):
        changed = {k for k in set(base[section]) | set(films[section]) if base[section].get(k) != films[section].get(k)}
        assert changed <= {"weighting", "played_fraction_weight", "rules", "start_date"}, (section, changed)


def _catalogue_of(cfg: Any) -> tuple[Any, dict[str, Any]]:
    """What the source holds, through ``sync_metadata`` and ``build_catalogue``: (the catalogue, the build's
    summary)."""
    from skyrec.storage import Lake

    now = dt.datetime.now(dt.UTC).replace(minute=0, second=0, microsecond=0)
    for job in ("sync_metadata", "build_catalogue"):
        code, payload = _job(cfg, job, now)
        assert code == 0, payload
    lake = Lake.from_config(cfg)
    cat = pq.read_table(lake.file_url(lake.latest(cfg, "catalogue"), "catalogue.parquet"), filesystem=lake.fs)
    return cat, payload["summary"]


def test_brand_series_and_item_ids_are_three_namespaces_through_to_the_catalogue(tmp_path: Path) -> None:
    """A file's brand, series and item columns are separate id spaces: series numbered within their brand, a
    brand and a series with one id, an unbranded item whose id is a brand's, unbranded items of one series.
    Each item must reach the catalogue with the brand its own row names (the brand cap groups by it)."""
    from importer_files import local_config

    items = tmp_path / "items.csv"
    items.write_text("id,title,brand,brand_title,series,series_title,masterbrand\n"
                     "e1,One,A,Brand A,1,Series 1,\n"
                     "e2,Two,B,Brand B,1,Series 1,\n"           # series 1 again, of another brand
                     "e3,Three,B,,2,Series 2,Radio 4\n"         # brand B's title not given again; a masterbrand
                     "e4,Four,,,,,\n"                           # unbranded: its own brand ...
                     "e5,Five,e4,Brand e4,,,\n"                 # ... while a brand in the file has its id
                     "e6,Six,S,Brand S,S,Series S,\n"           # a brand and a series with one id
                     "e7,Seven,,,9,Nine,\n"                     # unbranded, one series: grouped by the series
                     "e8,Eight,,,9,Nine,\n"
                     "e9,Nine,B,Brand Bee,2,Series 2,\n")      # another title for brand B: the first is kept
    cols = {c: c for c in ("id", "title", "brand", "brand_title", "series", "series_title", "masterbrand")}
    cfg = local_config(tmp_path / "home", {"ingest": {"files": {"items": {"columns": cols}}}})
    summary = run_import(cfg, items=str(items))
    f = summary["files"][0]
    assert f["imported"] == 9 and f["written"]["brands"] == 6 and f["written"]["series"] == 5
    notes = " | ".join(f["notes"])
    assert "'1' under 2 brands ('A', 'B')" in notes and "'e4' -> 'item:e4'" in notes
    assert "brand 'B' title: row 2 'Brand B', row 9 'Brand Bee'" in notes
    assert run_import(cfg, items=str(items))["files"][0]["noop"]  # re-running changes nothing
    cat, _ = _catalogue_of(cfg)
    got = {r["item_id"]: (r["brand_id"], r["brand_title"], r["series_id"], r["masterbrand"])
           for r in cat.select(["item_id", "brand_id", "brand_title", "series_id", "masterbrand"]).to_pylist()}
    assert got == {
        "e1": ("A", "Brand A", "A:1", None), "e2": ("B", "Brand B", "B:1", "Radio 4"),
        "e3": ("B", "Brand B", "2", "Radio 4"), "e4": ("item:e4", "Four", None, None),
        "e5": ("e4", "Brand e4", None, None), "e6": ("S", "Brand S", "S", None),
        "e7": ("9", "Nine", "9", None), "e8": ("9", "Nine", "9", None), "e9": ("B", "Brand B", "2", "Radio 4")}


def test_an_items_durations_and_window_are_read_as_the_catalogue_reads_them(tmp_path: Path) -> None:
    """Durations in seconds, ISO-8601 or clock form reach the catalogue; one the catalogue would refuse, and a
    window that ends before it starts (which the catalogue would refuse, leaving the item available from its
    release for ever), are quarantined at the import, where the person importing sees them."""
    import json

    from importer_files import local_config

    items = tmp_path / "items.csv"
    items.write_text("id,title,release_date,available_from,available_until,duration\n"
                     "a,A,2026-11-01,,,1680\n"
                     "b,B,2026-11-01,,,PT28M\n"
                     "c,C,2026-11-01,,,0:28:00\n"
                     "d,D,2026-11-01,,,28:00\n"
                     "e,E,2026-11-01,2026-11-02,2027-01-01,1.68e3\n"
                     "f,F,2026-11-01,,,800000\n"                 # over 7 days: the catalogue refuses it
                     "g,G,2026-11-01,,,1:75:00\n"                # not a clock
                     "h,H,2026-11-01,2026-11-10,2026-11-05,60\n"  # ends before it starts
                     "i,I,2026-11-01,,2026-10-01,60\n"            # ends before its release
                     "j,J,2026-11-01,2026-11-02,2026-11-02,60\n")  # empty
    cols = {c: c for c in ("id", "title", "release_date", "available_from", "available_until", "duration")}
    cfg = local_config(tmp_path / "home", {"ingest": {"files": {"items": {"columns": cols}}}})
    f = run_import(cfg, items=str(items))["files"][0]
    assert f["imported"] == 5 and f["quarantined"] == {"bad_duration": 2, "bad_date": 3}
    bad = {json.loads(line)["values"]["id"]: json.loads(line)["error"]
           for p in (tmp_path / "home").rglob("_imports/*/quarantine/bad_date.jsonl")
           for line in p.read_text().splitlines()}
    assert bad["h"] == "available_until 2026-11-05T00:00:00Z is not after available_from 2026-11-10T00:00:00Z: " \
                       "the window is empty" and "release_date 2026-11-01" in bad["i"] and set(bad) == {"h", "i", "j"}
    cat, built = _catalogue_of(cfg)
    assert built["invalid"] == {}  # nothing the import let through is refused by the catalogue
    assert dict(zip(cat.column("item_id").to_pylist(), cat.column("duration_seconds").to_pylist(), strict=True)) == \
        {"a": 1680, "b": 1680, "c": 1680, "d": 1680, "e": 1680}


@pytest.mark.integration
def test_an_items_file_into_an_s3_source_through_to_the_catalogue_and_a_failed_write_fails_the_import(
        s3: Any, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Into the production kind of source (moto's S3 server over HTTP, behind the fault proxy): the objects go
    out many at a time, a re-run changes nothing, and a write the store refuses fails the import
    without recording it as done, so that the next run writes everything."""
    import json

    from importer_files import local_config
    from typer.testing import CliRunner

    from skyrec.chaos.proxy import Rule
    from skyrec.cli import app

    _, proxy = s3
    items = tmp_path / "items.csv"
    items.write_text("id,title,brand,series\n" + "".join(f"e{i},Ep {i},b{i % 7},{i % 3}\n" for i in range(300)))
    cols = {c: c for c in ("id", "title", "brand", "series")}
    cfg = local_config(tmp_path / "home", {"source": {"kind": "s3", "url": "s3://lake/feed",
                                                      "endpoint_url": f"http://127.0.0.1:{proxy.port}"},
                                           "ingest": {"files": {"items": {"columns": cols}}}})
    rule = proxy.arm(Rule("error", methods=frozenset({"PUT"}), path_contains="/episodes/", skip=40,
                          status=403, code="AccessDenied"))
    with pytest.raises(OSError):
        run_import(cfg, items=str(items))
    assert rule.fired
    # the command says so, in a line (no traceback), and exits 1: the file was fine
    rule = proxy.arm(Rule("error", methods=frozenset({"PUT"}), path_contains="/episodes/", skip=40,
                          status=403, code="AccessDenied"))
    (tmp_path / "map.yaml").write_text(json.dumps({"items": {"columns": cols}}))
    monkeypatch.delenv("SKYREC_CONFIG_DIR", raising=False)
    for k, v in {"SKYREC_HOME": tmp_path / "home", "SKYREC__SOURCE__KIND": "s3", "SKYREC__SOURCE__URL": "s3://lake/feed",
                 "SKYREC__SOURCE__ENDPOINT_URL": f"http://127.0.0.1:{proxy.port}"}.items():
        monkeypatch.setenv(k, str(v))
    result = CliRunner().invoke(app, ["import", "--items", str(items), "--mapping", str(tmp_path / "map.yaml")])
    assert result.exit_code == 1 and rule.fired, result.output
    assert "writing into the source s3://lake/feed failed: PermissionError" in result.output
    assert "run the same import again" in result.output and "Traceback" not in result.output
    proxy.disarm_all()
    proxy.most_in_flight.clear()
    f = run_import(cfg, items=str(items))["files"][0]
    assert proxy.most_in_flight["PUT"] > 1  # side by side, not one after another
    assert not f["noop"] and f["imported"] == 300 and f["written"]["objects"] == 300 * 2 + 7 + 21
    assert run_import(cfg, items=str(items))["files"][0]["noop"]
    cat, _ = _catalogue_of(cfg)
    assert cat.num_rows == 300 and set(cat.column("brand_id").to_pylist()) == {f"b{i}" for i in range(7)}


@pytest.mark.integration
def test_an_interactions_file_into_an_s3_source_many_hours_at_a_time_and_a_failed_write_fails_the_import(
        s3: Any, tmp_path: Path) -> None:
    """Hourly files into moto's S3 server behind the fault proxy: they go out side by side (the proxy sees
    several PUTs at once), a PUT the store refuses fails the import without recording it as done, and the
    next run writes the same objects, byte for byte, as an import into a local folder."""
    import fsspec
    from importer_files import films_config, write_classic

    from skyrec.chaos.proxy import Rule
    from skyrec.data.importer import import_interactions

    _, proxy = s3
    data, _ = write_classic(tmp_path / "in", ratings=4_000, days=12, bad=False)
    local = films_config(tmp_path / "local")
    want = import_interactions(local, str(data))
    cfg = films_config(tmp_path / "home", {"source": {"kind": "s3", "url": "s3://lake/feed",
                                                      "endpoint_url": f"http://127.0.0.1:{proxy.port}"}})
    rule = proxy.arm(Rule("error", methods=frozenset({"PUT"}), path_contains="/activity/", skip=100,
                          status=403, code="AccessDenied"))
    with pytest.raises(OSError):
        import_interactions(cfg, str(data))
    assert rule.fired
    fs = fsspec.filesystem("s3", client_kwargs={"endpoint_url": f"http://127.0.0.1:{proxy.port}"})
    assert not fs.exists("lake/feed/_imports") or not fs.glob("lake/feed/_imports/*.json")  # not recorded as done
    proxy.disarm_all()
    proxy.most_in_flight.clear()
    got = import_interactions(cfg, str(data))
    assert not got.noop and got.written["hours"] == want.written["hours"] > 200
    assert proxy.most_in_flight["PUT"] > 1  # written side by side, not one after another
    for rel in want.written["hours_list"]:
        assert fs.cat_file(f"lake/feed/{rel}") == Path(local.source_url, rel).read_bytes(), rel
    assert import_interactions(cfg, str(data)).noop
    # the file changed to half its days: the hours it no longer has are removed in bulk, not one by one
    write_classic(tmp_path / "in", ratings=2_000, days=6, bad=False)
    proxy.handled.clear()
    smaller = import_interactions(cfg, str(data))
    gone = set(want.written["hours_list"]) - set(smaller.written["hours_list"])
    assert smaller.written["removed_hours"] == len(gone) > 100
    # a DeleteObjects request per 1,000 keys, not one request per hour
    assert proxy.handled.get("DELETE", 0) == 0 and proxy.handled["POST"] == 1, proxy.handled
    assert not any(fs.exists(f"lake/feed/{rel}") for rel in sorted(gone)[:20])
    assert sorted(fs.find("lake/feed/activity")) == sorted(f"lake/feed/{r}" for r in smaller.written["hours_list"])
