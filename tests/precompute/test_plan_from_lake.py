"""``skyrec plan --from-lake``: each configured rail's plan inputs read from the lake -- its candidates the
ones precompute selects (checked against the real job's committed counts), its users, items, plays and kernel
shape the published artefact's (dense factors, item-kNN's neighbour rows, EASE's weights) -- and the rails
put together as the precompute runs them."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from typing import Any

import numpy as np
import pytest
import scipy.sparse as sp
import synth

from skyrec import plan as p
from skyrec.jobs.base import RunInfo, execute
from skyrec.models.artefact import published_model_pointer, save_artefact
from skyrec.plan_lake import rails_from_lake
from skyrec.storage import Lake, Producer

RUN = RunInfo(dag_id="precompute_recommendations_als_comedy_featured_v1", run_id="r1", task_id="compute_predictions",
              logical_date=synth.AT)
AT = RUN.end


def _sparse_artefact(cfg: Any, s: synth.Synth, model: str, *, item_side: str) -> dict[str, Any]:
    """An item-kNN-shaped (sparse user rows and item rows) or EASE-shaped (sparse user rows, dense item x item
    weights) artefact over the synth's users and items, published as ``model``."""
    rng = np.random.default_rng(1)
    n_users, n_items = len(s.user_ids), len(s.item_ids)
    U = sp.random(n_users, n_items, density=0.03, format="csr", random_state=2, dtype=np.float32)
    if item_side == "sparse":
        V = sp.random(n_items, n_items, density=0.1, format="csr", random_state=3, dtype=np.float32)
    else:
        V = rng.standard_normal((n_items, n_items)).astype(np.float32)
    lake = Lake.from_config(cfg)
    rel = cfg.dataset_path("model", model=model, version="v1", run_key="20260301T110000")
    stage = lake.stage("model", rel, Producer())
    save_artefact(stage, user_ids=s.user_ids, item_ids=s.item_ids, user_factors=U, item_factors=V, seen=s.seen)
    stage.commit({"model": model, "version": "v1", "model_version": "v1.20260301T110000", "n_users": n_users,
                  "n_items": n_items})
    lake.write_pointer(published_model_pointer(model, "v1"), {"path": rel})
    return {"U": U, "V": V, "path": rel}


@pytest.mark.integration
def test_rails_are_read_from_the_lake_as_precompute_sees_them(config_factory: Any) -> None:
    cfg = config_factory({"precompute": {"k": 10, "rules": {"max_age_days": {"News": 2}}},
                          "variants": {"recommended_for_you": {"model": "knn"}, "thought_provoking": {"model": "ease", "candidates": {"genres": ["Music"],
                                                                                           "formats": []}},
                                       "music_mixes": {"model": "bpr"},  # never trained: no published model
                                       "gripping_stories": {"candidates": {"genres": ["Nonexistent"]}}}})
    s = synth.build(cfg, activity=True)
    knn = _sparse_artefact(cfg, s, "knn", item_side="sparse")
    ease = _sparse_artefact(cfg, s, "ease", item_side="dense")
    shapes = {r.name: r for r in rails_from_lake(cfg, at=AT, cores=2)}
    assert set(shapes) == set(cfg.variants)
    assert "no published model (bpr, v1)" in (shapes["music_mixes"].skipped or "")
    assert "0 candidate(s)" in (shapes["gripping_stories"].skipped or "")
    n_users, n_items = len(s.user_ids), len(s.item_ids)
    assert s.activity is not None
    plays = s.activity.num_rows / n_users  # the activity snapshot's plays; the kernel's: the seen items
    for name in ("comedy_featured", "drama_featured"):  # the candidates are the real job's, at its time
        run = RunInfo(dag_id=f"precompute_recommendations_als_{name}_v1", run_id="r1", task_id="compute_predictions",
                      logical_date=synth.AT)
        code, payload = execute("compute_predictions", config=cfg, run=run, params={"variant": name})
        assert code == 0, payload
        committed = Lake.from_config(cfg).require(payload["summary"]["outputs"][0]).meta["candidates"]
        got = shapes[name]
        assert got.inputs is not None and got.facts["candidate_counts"] == committed
        assert got.inputs.candidates == committed["candidates"] < n_items
        assert (got.inputs.kernel, got.inputs.factors, got.inputs.users, got.inputs.items, got.inputs.k) == \
            ("factors", s.U.shape[1], n_users, n_items, 10)
        assert got.inputs.plays_per_user == pytest.approx(plays)
        # the job publishes histories from the lake's activity snapshot: the plan counts them
        assert payload["summary"]["hist_keys"] > 0 and got.inputs.history_items == cfg.publish.history_items > 0
        assert got.inputs.items_per_user == pytest.approx(s.seen.nnz / n_users) != pytest.approx(plays)
    again = {r.name: r for r in rails_from_lake(cfg, at=AT, cores=2)}
    assert again["comedy_featured"].facts["last_run"]["candidates"] == shapes["comedy_featured"].inputs.candidates
    # no "more like this" lists in this run (the artefact names no model class): no also share to read
    assert again["comedy_featured"].inputs.also_share is None  # the plan keeps the measured (upper) share
    k = shapes["recommended_for_you"].inputs
    assert k is not None and k.kernel == "neighbours" and k.model == "knn"
    assert k.neighbours == round(knn["V"].nnz / n_items) and k.items_per_user == pytest.approx(knn["U"].nnz / n_users)
    e = shapes["thought_provoking"].inputs
    assert e is not None, shapes["thought_provoking"]
    assert e.kernel == "item_weights" and e.items == n_items
    assert e.items_per_user == pytest.approx(ease["U"].nnz / n_users)
    scaled = {r.name: r for r in rails_from_lake(cfg, at=AT, users=5_000_000, cores=2)}
    assert scaled["recommended_for_you"].inputs.users == 5_000_000
    assert scaled["recommended_for_you"].inputs.neighbours == k.neighbours  # the shape kept
    planned = [(r.name, r.inputs) for r in shapes.values() if r.inputs is not None]
    res = p.plan_rails(planned, p.load_coefficients(p.DEFAULT_PATH)[0])
    assert set(res["rails"]) == {"comedy_featured", "drama_featured", "recommended_for_you", "thought_provoking"}
    # a published artefact whose factors file is damaged: its rails are left out, naming the file and why
    lake = Lake.from_config(cfg)
    with lake.fs.open(lake.file_url(lake.require(knn["path"]), "factors.npz"), "wb") as fh:
        fh.write(b"not a zip")
    broken = {r.name: r for r in rails_from_lake(cfg, at=AT, cores=2)}
    assert "does not read: BadZipFile" in (broken["recommended_for_you"].skipped or "")
    assert broken["comedy_featured"].inputs == shapes["comedy_featured"].inputs


@pytest.mark.integration
def test_the_command_plans_the_lakes_rails(config_factory: Any, skyrec_home: Any) -> None:
    """The command a user runs, as its own process, on the environment's lake (rails put on the synth's model
    by SKYREC__ variables); shape options are refused with --from-lake."""
    cfg = config_factory(rails="als")
    synth.build(cfg)
    env = {**os.environ, "SKYREC_HOME": str(skyrec_home),
           **{f"SKYREC__VARIANTS__{name.upper()}__MODEL": "als" for name in cfg.variants}}
    done = subprocess.run([sys.executable, "-m", "skyrec", "plan", "--from-lake", "--json", "--users", "3500000"],
                          capture_output=True, text=True, timeout=120, env=env)
    assert done.returncode == 0, done.stderr
    out = json.loads(done.stdout)
    here = {r.name: r for r in rails_from_lake(cfg, users=3_500_000)}
    assert set(out["rails"]) == {n for n, r in here.items() if r.inputs is not None} >= {"comedy_featured"}
    assert set(out["skipped"]) == {n for n, r in here.items() if r.skipped}  # the synth has no Mixes, no Talks
    for name, r in out["rails"].items():
        assert r["inputs"]["candidates"] == here[name].inputs.candidates and r["inputs"]["users"] == 3_500_000
        assert r["inputs"]["history_items"] == 0  # no activity snapshot in this lake: the job publishes no history
    assert out["figures"]["compute_predictions_s"] == pytest.approx(
        sum(r["figures"]["compute_predictions_s"] for r in out["rails"].values()), rel=1e-3)
    table = subprocess.run([sys.executable, "-m", "skyrec", "plan", "--from-lake"], capture_output=True, text=True,
                           timeout=120, env={**env, "COLUMNS": "200"})
    assert table.returncode == 0 and "comedy_featured" in table.stdout and "all rails" in table.stdout
    refused = subprocess.run([sys.executable, "-m", "skyrec", "plan", "--from-lake", "--candidates", "5000"],
                             capture_output=True, text=True, timeout=120, env=env)
    assert refused.returncode != 0 and "--candidates not with --from-lake" in refused.stderr


@pytest.mark.integration
def test_a_lake_on_an_object_store_plans_as_a_local_one(config_factory: Any, s3: Any) -> None:
    """The lake on S3's HTTP API (moto's server): the artefact's headers and index arrays read through s3fs's
    seekable files; the rails plan exactly as from a local lake of the same data."""
    endpoint, _ = s3
    local = config_factory({"precompute": {"k": 10}}, rails="als")
    remote = config_factory({"precompute": {"k": 10}, "storage": {
        "lake": "s3://lake/root", "storage_options": {"client_kwargs": {"endpoint_url": endpoint}}}}, rails="als")
    assert remote.lake_url.startswith("s3://") and type(Lake.from_config(remote).fs).__name__ == "S3FileSystem"
    for cfg in (local, remote):
        synth.build(cfg)
    here = {r.name: r for r in rails_from_lake(local, at=AT, cores=2)}
    there = {r.name: r for r in rails_from_lake(remote, at=AT, cores=2)}
    assert {n for n, r in there.items() if r.inputs} == {n for n, r in here.items() if r.inputs} >= {"comedy_featured"}
    for name, r in there.items():
        assert r.inputs == here[name].inputs and r.skipped == here[name].skipped
        assert r.facts.get("candidate_counts") == here[name].facts.get("candidate_counts")
