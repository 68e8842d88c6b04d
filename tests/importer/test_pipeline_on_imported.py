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
