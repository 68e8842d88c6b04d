"""`skyrec plan`: the capacity model against the measured reference run, its scaling rules, its limits, and the
benchmarks' coefficients hook.

The reference check is a *fit* check: the committed coefficients were anchored on that run's step times
(``plan.anchor``), so it proves the model's arithmetic and its composition (kernel + output, cores, bytes),
not its predictive power. The out-of-sample check (small-scale coefficients predicting a larger measured run)
is in BENCHMARKS.md, "Scale — capacity plan"."""

from __future__ import annotations

import io
import json
import os
import subprocess
import sys
from dataclasses import replace
from pathlib import Path
from typing import Any

import pytest
from rich.console import Console

from skyrec import plan as p


def _skyrec(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "skyrec", *args], capture_output=True, text=True, timeout=120,
                          env=os.environ.copy())


@pytest.fixture(scope="module")
def coef() -> dict:
    data, path = p.load_coefficients(p.DEFAULT_PATH)
    assert path == p.DEFAULT_PATH
    return data


def test_committed_coefficients_name_their_machine_date_and_reference(coef: dict) -> None:
    assert coef["machine"]["cpus"] and coef["measured_at"][:4].isdigit()
    ref = coef["reference_run"]
    assert ref["inputs"]["users"] == 3_500_000 and ref["inputs"]["encoding"] in ("json", "packed")
    assert set(ref["measured"]) >= {"compute_predictions_s", "create_redis_dump_s", "publish_predictions_s",
                                    "redis_mb"}


def test_plan_reproduces_the_measured_reference_run_within_20_percent(coef: dict) -> None:
    rows = p.check_reference(coef)
    assert {r["figure"] for r in rows} >= {"compute_predictions_s", "create_redis_dump_s", "publish_predictions_s",
                                           "whole_path_s", "vcpu_s_local", "redis_mb"}
    off = [(r["figure"], round(r["ratio"], 3)) for r in rows if not abs(r["ratio"] - 1) <= 0.20]
    assert not off, f"plan / measured beyond 20%: {off}"


def test_check_flags_a_figure_off_by_more_than_20_percent(coef: dict) -> None:
    bad = json.loads(json.dumps(coef))
    bad["reference_run"]["measured"]["publish_predictions_s"] *= 1.5
    rows = {r["figure"]: r for r in p.check_reference(bad)}
    assert not rows["publish_predictions_s"]["within"] and rows["compute_predictions_s"]["within"]


def test_scaling_rules(coef: dict) -> None:
    base = p.PlanInputs(users=1_000_000, rails=6, cores=2, encoding="packed")
    f2 = p.plan(base, coef)["figures"]
    f8 = p.plan(p.PlanInputs(users=1_000_000, rails=6, cores=8, encoding="packed"), coef)["figures"]
    # the compute step scales with cores; the publication is serial into the one serving Redis
    fixed = 6 * f2["compute_fixed_core_s"]  # start-up per rail job: not shortened by cores
    assert f8["compute_predictions_s"] - fixed == pytest.approx((f2["compute_predictions_s"] - fixed) / 4)
    assert f8["publish_predictions_s"] == pytest.approx(f2["publish_predictions_s"])
    assert f8["create_redis_dump_s"] < f2["create_redis_dump_s"]  # 4 dumps at a time instead of 1
    # linear in users and rails
    f_2m = p.plan(p.PlanInputs(users=2_000_000, rails=6, cores=2, encoding="packed"), coef)["figures"]
    per_user_rail = p.plan(base, coef)["per_user_rail"]["redis_bytes"]
    assert f_2m["redis_publication_bytes"] - f2["redis_publication_bytes"] == pytest.approx(1e6 * 6 * per_user_rail)
    assert f_2m["compute_core_s"] == pytest.approx(2 * f2["compute_core_s"])
    # more candidates cost more kernel time; packed holds less memory than json
    big_c = p.plan(p.PlanInputs(users=1_000_000, rails=6, candidates=100_000, cores=2), coef)
    assert big_c["figures"]["compute_core_s"] > f2["compute_core_s"]
    assert any("extrapolated" in n for n in big_c["notes"]) and p.plan(base, coef)["notes"] == []
    js = p.plan(p.PlanInputs(users=1_000_000, rails=6, cores=2, encoding="json"), coef)["figures"]
    assert js["redis_publication_bytes"] > 3 * f2["redis_publication_bytes"]
    # peak of a switch: keep_versions + 1 publications
    assert f2["redis_peak_bytes"] == pytest.approx(3 * f2["redis_publication_bytes"])


def test_limits_name_where_one_machine_stops(coef: dict) -> None:
    small = p.plan(p.PlanInputs(users=3_500_000, rails=6, cores=2, encoding="packed", machine_memory_gb=24), coef)
    assert small["limits"] == []
    # twice a day: 100M x 20 rails on 2 cores does not fit the interval
    big = p.plan(p.PlanInputs(users=100_000_000, rails=20, cores=2, encoding="packed", interval_hours=12), coef)
    what = {lim["what"] for lim in big["limits"]}
    assert {"Redis memory beyond one node", "precompute wall time"} <= what
    # hourly: the serial publication into one Redis alone is too long, and no number of cores helps
    hourly = p.PlanInputs(users=100_000_000, rails=20, cores=2, encoding="packed", interval_hours=1)
    assert "publish time into one serving Redis" in {lim["what"] for lim in p.plan(hourly, coef)["limits"]}
    assert p.cores_to_fit(hourly, coef) is None
    assert p.cores_to_fit(p.PlanInputs(users=100_000_000, rails=20, encoding="packed"), coef) is not None


def test_a_peak_beyond_the_serving_redis_maxmemory_is_a_limit(coef: dict, redis_server, redis_client) -> None:
    """Publications are refused before they load when Redis's maxmemory has no room: the plan says so where its
    switch peak is beyond it, from ``--redis-maxmemory-gb`` or, with ``--from-lake``, the serving Redis's own."""
    base = p.PlanInputs(users=3_500_000, rails=6, cores=2, encoding="packed", machine_memory_gb=24)
    peak = p.plan(base, coef)["figures"]["redis_peak_bytes"] / 1e9
    what = "Redis peak beyond the serving Redis's maxmemory"
    assert what in {lim["what"] for lim in p.plan(replace(base, redis_maxmemory_gb=peak * 0.9), coef)["limits"]}
    assert p.plan(replace(base, redis_maxmemory_gb=peak * 1.1), coef)["limits"] == []
    with pytest.raises(ValueError, match="redis_maxmemory_gb must be > 0"):
        p.plan(replace(base, redis_maxmemory_gb=0.0), coef)
    out = _skyrec("plan", "--users", "3500000", "--redis-maxmemory-gb", "1", "--json")
    assert out.returncode == 0, out.stderr
    assert what in {lim["what"] for lim in json.loads(out.stdout)["limits"]}
    assert _serving(redis_server.url, redis_client, 2_000_000_000) == 2.0
    assert _serving(redis_server.url, redis_client, 0) is None  # no maxmemory: nothing to say


def _serving(url: str, client, maxmemory: int) -> float | None:
    from skyrec.cli import _serving_maxmemory_gb
    from skyrec.config import load_config

    try:
        client.config_set("maxmemory", maxmemory)
        return _serving_maxmemory_gb(load_config("local", environ={**os.environ, "SKYREC__PUBLISH__REDIS_URL": url}))
    finally:
        client.config_set("maxmemory", 0)


def test_item_knn_kernel_grows_with_played_items_times_neighbours(coef: dict) -> None:
    """The shipped rails' item-kNN: its kernel is the sparse plane (kernel_knn) at played items x neighbours,
    not the dense factors' plane; the output, dump, publish and Redis figures are the same as any model's."""
    assert len(coef["kernel_knn"]["points"]) >= 6 and coef["kernel_knn"]["level_factor"] > 0
    base = dict(users=1_000_000, rails=6, cores=2, encoding="packed", plays_per_user=20)
    als = p.plan(p.PlanInputs(**base), coef)
    knn = p.plan(p.PlanInputs(**base, model="knn", kernel="neighbours", neighbours=75), coef)
    assert knn["per_user_rail"]["kernel_core_us"] == pytest.approx(p.knn_kernel_core_us(coef, 20_000, 50, 20 * 75))
    assert als["per_user_rail"]["kernel_core_us"] == pytest.approx(p.kernel_core_us(coef, 20_000, 50))
    assert knn["per_user_rail"]["kernel_core_us"] != pytest.approx(als["per_user_rail"]["kernel_core_us"])
    for key in ("redis_publication_bytes", "publish_predictions_s", "create_redis_dump_s", "lake_bytes"):
        assert knn["figures"][key] == pytest.approx(als["figures"][key])
    # more played items or wider neighbour rows cost more; items_per_user (distinct items) overrides plays
    wide = p.plan(p.PlanInputs(**base, kernel="neighbours", neighbours=300), coef)["per_user_rail"]["kernel_core_us"]
    few = p.PlanInputs(**base, kernel="neighbours", neighbours=75, items_per_user=5)
    assert wide > knn["per_user_rail"]["kernel_core_us"] > p.plan(few, coef)["per_user_rail"]["kernel_core_us"]
    assert p.products_per_user(few) == 5 * 75
    far = p.plan(p.PlanInputs(**base, kernel="neighbours", neighbours=2_000), coef)
    assert any("item-kNN kernel extrapolated" in n for n in far["notes"])
    assert not any("item-kNN" in n for n in knn["notes"])


def test_a_genre_rails_item_knn_counts_the_neighbour_entries_among_its_candidates(coef: dict) -> None:
    """A rail whose candidates are some of the model's items (a genre rail) scores their columns only: a
    played item's row has neighbours x candidates / items entries among them; the table says so."""
    base = dict(users=1_000_000, rails=1, cores=2, plays_per_user=20, kernel="neighbours", neighbours=75,
                candidates=2_000)
    every = p.PlanInputs(**base)
    genre = p.PlanInputs(**base, items=16_000)
    assert p.products_per_user(every) == 20 * 75
    assert p.products_per_user(genre) == pytest.approx(20 * 75 * 2_000 / 16_000)
    planned = p.plan(genre, coef)
    assert planned["per_user_rail"]["kernel_core_us"] == pytest.approx(
        p.knn_kernel_core_us(coef, 2_000, 50, 20 * 75 / 8))
    assert planned["per_user_rail"]["kernel_core_us"] < p.plan(every, coef)["per_user_rail"]["kernel_core_us"]
    console = Console(file=io.StringIO(), width=200)
    console.print(p.render(planned, "test"))
    assert "75 neighbour entries per user x 2,000 / 16,000 items (those among the candidates)" in \
        console.file.getvalue()


def test_factor_models_pay_for_their_factors(coef: dict, config_factory: Any) -> None:
    """The dense plane is measured at 64 factors; a model with more pays the product's extra multiply-adds per
    candidate (the selection is the same), read from the model's configuration."""
    g = coef["kernel"]["core_us"]["per_1k_candidates_per_factor"]
    assert g > 0 and len({pt.get("factors", 64) for pt in coef["kernel"]["factor_points"]}) >= 3
    at = {d: p.plan(p.PlanInputs(users=1000, factors=d), coef)["per_user_rail"]["kernel_core_us"] for d in (64, 128)}
    assert at[128] - at[64] == pytest.approx(g * 20 * 64)
    assert at[64] == pytest.approx(p.kernel_core_us(coef, 20_000, 50))
    cfg = config_factory()
    assert {m: p.model_kernel(cfg, m).get("factors") for m in ("als", "bpr", "hybrid", "popularity")} == \
        {"als": 128, "bpr": cfg.models["bpr"].params["factors"], "hybrid": 48, "popularity": 1}
    assert p.inputs_from_config(cfg, users=1000, model="als", factors=32).factors == 32
    assert any("factors extrapolated" in n for n in p.plan(p.PlanInputs(users=1000, factors=512), coef)["notes"])
    old = json.loads(json.dumps(coef))
    del old["kernel"]["core_us"]["per_1k_candidates_per_factor"]
    with pytest.raises(p.CoefficientsError, match="64 factors only"):
        p.plan(p.PlanInputs(users=1000, factors=128), old)
    p.plan(p.PlanInputs(users=1000), old)
    with pytest.raises(p.CoefficientsError, match="other factor counts"):
        p.fit_factors_term([pt for pt in coef["kernel"]["factor_points"] if "factors" not in pt])


def test_coefficients_without_the_item_knn_kernel(coef: dict, tmp_path: Path) -> None:
    """A file measured before the item-kNN kernel (e.g. an older .bench/coefficients.json) borrows the
    committed one at its own dense level, and says so; coefficients with no source for it refuse clearly."""
    old = json.loads(json.dumps({key: v for key, v in coef.items() if key not in ("kernel_knn", "kernel_ease")}))
    del old["kernel"]["core_us"]["per_1k_candidates_per_factor"]
    with pytest.raises(p.CoefficientsError, match="--calibrate"):
        p.plan(p.PlanInputs(users=1000, kernel="neighbours"), old)
    p.plan(p.PlanInputs(users=1000), old)  # a factor model still plans
    slower = json.loads(json.dumps(old))
    slower["kernel"]["core_us"] = {k: v * 2 if k != "max_rel_residual" else v
                                   for k, v in slower["kernel"]["core_us"].items()}
    (tmp_path / "old.json").write_text(json.dumps(slower))
    loaded, _ = p.load_coefficients(tmp_path / "old.json")
    assert "x 2.000" in loaded["kernel_knn"]["borrowed"]
    assert p.knn_kernel_core_us(loaded, 20_000, 50, 1500) == pytest.approx(2 * p.knn_kernel_core_us(coef, 20_000, 50, 1500))
    res = p.plan(p.PlanInputs(users=1000, kernel="neighbours"), loaded)
    assert any("item-kNN kernel from plan_coefficients.json" in n for n in res["notes"])
    assert p.ease_kernel_core_us(loaded, 10_000, 50, 20) == pytest.approx(2 * p.ease_kernel_core_us(coef, 10_000, 50, 20))
    res = p.plan(p.PlanInputs(users=1000, candidates=10_000, kernel="item_weights"), loaded)
    assert any("EASE kernel from plan_coefficients.json" in n for n in res["notes"])
    g = coef["kernel"]["core_us"]["per_1k_candidates_per_factor"]
    assert loaded["kernel"]["core_us"]["per_1k_candidates_per_factor"] == pytest.approx(2 * g)
    res = p.plan(p.PlanInputs(users=1000, factors=128), loaded)
    assert any("factors term from plan_coefficients.json" in n for n in res["notes"])
    broken = {**coef, "kernel_knn": {"core_us": {"per_user": 1.0}}}
    with pytest.raises(p.CoefficientsError, match="kernel_knn"):
        p._validate(broken, "x.json")
    with pytest.raises(p.CoefficientsError, match="kernel_ease.core_us needs"):
        p._validate({**coef, "kernel_ease": {"core_us": {"per_user": 1.0}}}, "x.json")
    with pytest.raises(p.CoefficientsError, match="6 distinct"):
        p.fit_knn_kernel(coef["kernel_knn"]["points"][:5])


def test_ease_plans_its_dense_weights_and_its_memory_guard(coef: dict) -> None:
    """EASE: its kernel is the plane of kernel_ease in played items x candidates (a user's played rows of its
    dense weights), and its weights (the guard's estimate, items^2) are planned against its memory limit:
    a catalogue the guard refuses is named as a limit, not planned as if it would run."""
    assert len(coef["kernel_ease"]["points"]) >= 12 and coef["kernel_ease"]["level_factor"] > 0
    base = dict(users=1_000_000, rails=6, cores=2, plays_per_user=20, model="ease", kernel="item_weights")
    ease = p.plan(p.PlanInputs(**base, candidates=10_000), coef)
    assert ease["per_user_rail"]["kernel_core_us"] == pytest.approx(p.ease_kernel_core_us(coef, 10_000, 50, 20))
    assert ease["figures"]["ease_weights_bytes"] == 3 * 4 * 10_000**2 and not ease["limits"]
    more = p.plan(p.PlanInputs(**base, candidates=10_000, items_per_user=40), coef)
    assert more["per_user_rail"]["kernel_core_us"] > ease["per_user_rail"]["kernel_core_us"]
    # the weights are the model's items squared, whatever the rail's candidates
    wide = p.plan(p.PlanInputs(**base, candidates=10_000, items=30_000), coef)
    assert wide["per_user_rail"]["kernel_core_us"] == pytest.approx(ease["per_user_rail"]["kernel_core_us"])
    refused = {lim["what"]: lim for lim in wide["limits"]}["EASE's item-item weights: refused by its memory guard"]
    assert refused["value_gb"] == pytest.approx(10.8) and refused["limit_gb"] == 8.0
    big = p.plan(p.PlanInputs(**base, candidates=10_000, items=30_000, weights_limit_gb=64.0), coef)
    assert [lim["what"] for lim in big["limits"]] == []  # 10.8 GB: within the raised limit and this machine's 24
    assert "EASE's item-item weights beyond this machine's memory" in {
        lim["what"] for lim in p.plan(p.PlanInputs(**base, candidates=10_000, items=50_000, weights_limit_gb=64.0),
                                      coef)["limits"]}
    assert any("EASE kernel extrapolated" in n for n in p.plan(p.PlanInputs(**base, candidates=10_000,
                                                                         items_per_user=500), coef)["notes"])
    with pytest.raises(ValueError, match="items"):
        p.plan(p.PlanInputs(**base, candidates=10_000, items=5_000), coef)
    with pytest.raises(p.CoefficientsError, match="kernel_ease"):
        p.plan(p.PlanInputs(**base), {key: v for key, v in coef.items() if key != "kernel_ease"})
    # the plane's fit recovers a known plane, and refuses too few points
    pts = [{"candidates": c, "k": k, "plays": n, "cpu_us_per_user": 3 + 0.5 * c / 1000 + 0.01 * k + 2.0 * n * c / 1e6}
           for c in (2_000, 10_000) for k in (50, 100) for n in (10, 50)]
    fit = p.fit_ease_kernel(pts)
    assert fit["per_m_products"] == pytest.approx(2.0) and fit["per_1k_candidates"] == pytest.approx(0.5)
    with pytest.raises(p.CoefficientsError, match="5 distinct"):
        p.fit_ease_kernel(pts[:4])


def test_a_copied_kernel_follows_the_committed_one_when_it_is_re_measured(coef: dict, tmp_path: Path) -> None:
    """`skyrec bench` copies the committed item-kNN kernel into .bench/coefficients.json; when the committed one
    is re-measured (the kernel's code changed), the copy is outdated and the committed one is borrowed at the
    file's level. A kernel the file measured itself (`--calibrate`: no `how`) is kept."""
    older = json.loads(json.dumps(coef))
    older["kernel_knn"]["how"] = "benchmarks/bench_plan_kernels.py --write, 2026-01-01T00:00:00Z"
    older["kernel_knn"]["core_us"] = _doubled(older["kernel_knn"]["core_us"])
    (tmp_path / "copied.json").write_text(json.dumps(older))
    loaded, _ = p.load_coefficients(tmp_path / "copied.json")
    assert loaded["kernel_knn"]["source_how"] == coef["kernel_knn"]["how"] and "x 1.000" in loaded["kernel_knn"]["borrowed"]
    assert p.knn_kernel_core_us(loaded, 20_000, 50, 1500) == pytest.approx(p.knn_kernel_core_us(coef, 20_000, 50, 1500))
    assert loaded["kernel_ease"] == coef["kernel_ease"]  # the same measurement as the committed one: kept
    # a borrowed kernel, persisted by `skyrec bench`, is kept while the committed one is the one it borrowed
    (tmp_path / "again.json").write_text(json.dumps(loaded))
    assert p.load_coefficients(tmp_path / "again.json")[0]["kernel_knn"] == loaded["kernel_knn"]
    own = json.loads(json.dumps(coef))
    own["kernel_knn"] = {"core_us": _doubled(coef["kernel_knn"]["core_us"]), "points": []}
    (tmp_path / "own.json").write_text(json.dumps(own))
    assert p.load_coefficients(tmp_path / "own.json")[0]["kernel_knn"] == own["kernel_knn"]


def _doubled(core_us: dict[str, float]) -> dict[str, float]:
    return {key: v * 2 if key != "max_rel_residual" else v for key, v in core_us.items()}


def test_inputs_follow_the_rails_model(config_factory: Any) -> None:
    cfg = config_factory()
    shipped = p.inputs_from_config(cfg, users=1000)
    knn = cfg.models["knn"].params
    assert (shipped.model, shipped.kernel) == ("knn", "neighbours")
    assert shipped.neighbours == knn["neighbours"] + knn["series_depth"]
    assert p.inputs_from_config(cfg, users=1000, model="als").kernel == "factors"
    assert p.inputs_from_config(cfg, users=1000, neighbours=20).neighbours == 20
    assert shipped.similar_k == cfg.precompute.similar_k == p.SHIPPED_SIMILAR_K  # the tables' "more like this"
    assert shipped.history_items == cfg.publish.history_items == p.SHIPPED_HISTORY_ITEMS  # and their histories
    assert p.inputs_from_config(cfg, users=1000, history_items=0).history_items == 0
    assert p.inputs_from_config(cfg, users=1000, similar_k=0).similar_k == 0
    assert p.inputs_from_config(config_factory(rails="als"), users=1000).kernel == "factors"
    ease = p.inputs_from_config(cfg, users=1000, model="ease", items=30_000)
    assert (ease.kernel, ease.weights_limit_gb, ease.items) == ("item_weights", 8.0, 30_000)
    with pytest.raises(ValueError, match="not configured"):
        p.inputs_from_config(cfg, users=1000, model="nope")
    mixed = config_factory({"variants": {"recommended_for_you": {"model": "als"}}})
    with pytest.raises(ValueError, match="several models"):
        p.inputs_from_config(mixed, users=1000)
    with pytest.raises(ValueError, match="kernel"):
        p.plan(p.PlanInputs(users=1000, kernel="dense"), {})


@pytest.mark.parametrize("field, value", [("users", 0), ("encoding", "xml"), ("k", 30_000), ("cores", 0)])
def test_bad_inputs_are_refused_naming_the_input(coef: dict, field: str, value: object) -> None:
    with pytest.raises(ValueError, match=field):
        p.plan(p.PlanInputs(**{"users": 1000, field: value}), coef)


def test_command_prints_the_table_and_json_and_checks(tmp_path: Path) -> None:
    default = str(p.DEFAULT_PATH)
    out = _skyrec("plan", "--users", "3500000", "--rails", "6", "--cores", "2", "--coefficients", default)
    assert out.returncode == 0, out.stderr
    assert "compute_predictions" in out.stdout and "Redis, one publication" in out.stdout
    assert "(knn)" in out.stdout and "kernel: item-kNN" in out.stdout  # the shipped rails' model
    als = _skyrec("plan", "--users", "3500000", "--model", "als", "--coefficients", default)
    assert als.returncode == 0 and "kernel: factors" in als.stdout, als.stderr
    ease = _skyrec("plan", "--users", "3500000", "--model", "ease", "--candidates", "200000", "--coefficients",
                   default)
    assert ease.returncode == 0 and "kernel: EASE" in ease.stdout, ease.stderr
    assert "refused by its memory guard" in ease.stdout and "item-kNN" in ease.stdout
    js = json.loads(_skyrec("plan", "--users", "3500000", "--rails", "6", "--cores", "2", "--encoding", "json",
                            "--coefficients", default, "--json").stdout)
    assert js["inputs"]["encoding"] == "json" and js["figures"]["redis_publication_bytes"] > 2.5e10
    # json values of 3.5M x 6 rails: three publications (~90 GB) do not fit this machine's memory
    assert "Redis peak beyond this machine's memory" in {lim["what"] for lim in js["limits"]}
    assert js["coefficients_file"] == default and js["coefficients"]["measured_at"] == \
        json.loads(p.DEFAULT_PATH.read_text())["measured_at"]
    check = _skyrec("plan", "--check", "--coefficients", default)
    assert check.returncode == 0, check.stdout + check.stderr
    bad = _skyrec("plan", "--users", "10", "--encoding", "xml", "--coefficients", default)
    assert bad.returncode == 2 and "encoding" in bad.stderr
    zero = _skyrec("plan", "--users", "10", "--candidates", "0", "--coefficients", default)
    assert zero.returncode == 2 and "candidates must be >= 1 (got 0)" in zero.stderr
    # the share of users with also keys: the shipped rails' "more like this" lists and histories
    full, half = (json.loads(_skyrec("plan", "--users", "3500000", "--coefficients", default, "--json",
                                     *extra).stdout)["figures"] for extra in ((), ("--also-share", "0.5")))
    assert half["history_plays_redis_bytes"] == pytest.approx(full["history_plays_redis_bytes"])
    assert half["history_redis_bytes"] < full["history_redis_bytes"]
    share = _skyrec("plan", "--users", "10", "--also-share", "1.5", "--coefficients", default)
    assert share.returncode == 2 and "also_share must be within [0, 1]" in share.stderr
    broken = tmp_path / "c.json"
    broken.write_text(json.dumps({**json.loads(p.DEFAULT_PATH.read_text()), "version": 99}))
    out = _skyrec("plan", "--users", "10", "--coefficients", str(broken))
    assert out.returncode == 2 and "version 99" in out.stderr


def test_bench_hook_folds_fresh_kernel_and_precompute_figures(tmp_path: Path, coef: dict) -> None:
    when = {"machine": {"when": "2026-12-01T00:00:00Z"}, "status": "ok"}
    kernel = {"candidates": 20_000, "k": 100, "threads": 2, "users_per_s": {"kernel": 25_000}}
    pre = {"users": 200_000, "candidates": 20_000, "k": 50, "cores": 2,
           "steps": {"compute_predictions": {"seconds": 10.0, "process_cpu_seconds": 16.0},
                     "create_redis_dump": {"seconds": 4.0}, "publish_predictions": {"seconds": 2.0},
                     "serving_redis": {"used_memory_mb": 80}}}
    before = p.plan(p.PlanInputs(users=200_000, cores=2, encoding="packed"), coef)["figures"]
    for scale in ("small", "reference"):
        (tmp_path / f"kernel.{scale}.json").write_text(json.dumps({**when, "result": kernel}))
        (tmp_path / f"precompute.{scale}.json").write_text(json.dumps({**when, "result": pre}))
    small = tmp_path / "small"
    small.mkdir()
    for name in ("kernel", "precompute"):
        (small / f"{name}.small.json").write_text((tmp_path / f"{name}.small.json").read_text())
    written = p.update_from_bench(small, "small", ["kernel", "precompute"], "packed")
    assert written == small / "coefficients.json"
    new, _ = p.load_coefficients(written)
    assert p.kernel_core_us(new, 20_000, 100) == pytest.approx(2e6 / 25_000)
    f = p.plan(p.PlanInputs(users=200_000, cores=2, encoding="packed"), new)["figures"]
    # compute: CPU time and wall of the record; Redis bytes of the record
    assert f["compute_predictions_s"] == pytest.approx(10.0, rel=1e-4)
    assert f["compute_core_s"] + f["compute_fixed_core_s"] == pytest.approx(16.0, rel=1e-4)
    assert f["redis_publication_bytes"] == pytest.approx(80e6, rel=1e-3)
    # a small run does not rebase the Redis-bound steps (their per-user cost grows with the key count)
    assert f["create_redis_dump_s"] == pytest.approx(before["create_redis_dump_s"])
    assert f["publish_predictions_s"] == pytest.approx(before["publish_predictions_s"])
    # a reference-scale run does
    big = tmp_path / "big"
    big.mkdir()
    (big / "precompute.reference.json").write_text((tmp_path / "precompute.reference.json").read_text())
    new_ref, _ = p.load_coefficients(p.update_from_bench(big, "reference", ["precompute"], "packed"))
    g = p.plan(p.PlanInputs(users=200_000, cores=2, encoding="packed"), new_ref)["figures"]
    assert g["create_redis_dump_s"] == pytest.approx(4.0, rel=1e-4)
    assert g["publish_predictions_s"] == pytest.approx(2.0, rel=1e-4)
    # json keeps its measured ratio to packed
    old_ratio = coef["encodings"]["json"]["publish_wall_us"] / coef["encodings"]["packed"]["publish_wall_us"]
    assert new_ref["encodings"]["json"]["publish_wall_us"] / new_ref["encodings"]["packed"]["publish_wall_us"] == \
        pytest.approx(old_ratio, rel=1e-3)
    assert "precompute" in new["source"] and new["reference_run"] == coef["reference_run"]
    # nothing this run measured feeds the plan: no file
    assert p.update_from_bench(tmp_path / "none", "small", ["serve"], "packed") is None


def test_docs_scale_table_is_the_committed_coefficients_plan(coef: dict) -> None:
    doc = (Path(__file__).resolve().parents[2] / "docs" / "scale.md").read_text()
    assert p.scenarios_markdown(coef) in doc, "docs/scale.md's table differs from `skyrec plan` (regenerate it)"
    assert p.scenarios_markdown(coef, rails_model=p.FACTORS_MODEL) in doc, "docs/scale.md's ALS table is stale"
    assert p.mix_markdown(coef) in doc, "docs/scale.md's table of the shipped mix is stale"


def test_shipped_model_constant_is_the_shipped_configuration(config_factory: Any) -> None:
    assert p.model_kernel(config_factory(), "knn") == p.SHIPPED_MODEL
    assert p.model_kernel(config_factory(), "als") == p.FACTORS_MODEL


@pytest.mark.integration
def test_calibrate_measures_on_this_machine(tmp_path: Path) -> None:
    """The calibration end to end at a tiny scale: kernel sweep, the three real jobs per encoding with a real
    redis-server, the activity ingest; the result is a valid coefficients file with the committed reference
    run and the committed dump/publish costs."""
    points = p.kernel_sweep(candidates=(2_000, 5_000, 10_000), ks=(20, 50), users=1_024, repeat=1, factors=(32, 64))
    assert {pt.get("factors", 64) for pt in points} == {32, 64}
    assert all(pt["users_per_s"] > 0 and pt["cpu_us_per_user"] > 0 for pt in points)
    knn = p.knn_kernel_sweep(candidates=(2_000, 5_000), ks=(20, 50), users=512, repeat=1)
    assert {(pt["plays"], pt["neighbours"]) for pt in knn} >= {(10, 75), (50, 150)}
    assert all(pt["cpu_us_per_user"] > 0 for pt in knn)
    ease = p.ease_kernel_sweep(candidates=(500, 1_000), ks=(20, 50), plays=(5, 20), users=256, repeat=1)
    assert len(ease) == 8 and all(pt["cpu_us_per_user"] > 0 for pt in ease)
    catalogue = p.catalogue_sweep(items=(2_000, 20_000), users=200, runs=2)
    assert [pt["items"] for pt in catalogue] == [pt["candidates"] for pt in catalogue] == [2_000, 20_000]
    assert all(len(pt["cpu_s_runs"]) == 2 and pt["cpu_s"] == min(pt["cpu_s_runs"]) > 0 for pt in catalogue)
    knn_catalogue = p.knn_catalogue_sweep(items=(2_000, 20_000), users=300, runs=2)  # on an item-kNN artefact
    assert [(pt["candidates"], pt["neighbours"]) for pt in knn_catalogue] == [(2_000, 70), (20_000, 70)]
    assert all(19 < pt["plays"] <= 20 and pt["cpu_s"] == min(pt["cpu_s_runs"]) > 0 for pt in knn_catalogue)
    releveled = p.relevel_kernels(json.loads(p.DEFAULT_PATH.read_text()), points, None, how="test",
                                  factors_term=False, knn_catalogue_points=knn_catalogue)
    assert releveled["knn_catalogue"]["points"] == knn_catalogue
    assert releveled["knn_catalogue"]["core_us"]["per_user_per_1k_candidates"] >= 0
    coef, path = p.calibrate(users=3_000, out=tmp_path / "c.json", progress=lambda m: None, kernel_points=points,
                             knn_points=knn, ease_points=ease, catalogue_points=catalogue,
                             knn_catalogue_points=knn_catalogue, history_users=2_000)
    hist = coef["history"]  # the history step on the path: with and without the activity snapshot
    assert [(r["plays"], r["history_items"], r["hist_keys"]) for r in hist["runs"]] == [
        (20, 0, 0), (20, 10, 2_000), (40, 0, 0), (40, 10, 2_000), (20, 5, 2_000)]
    assert hist["bytes"]["resp"]["per_play"] > 20 and hist["bytes"]["redis"]["per_key"] > 0
    # 2,000 users: the step's extra CPU can be within the compute step's noise (then 0, and marked so)
    per_key = hist["core_us"]["per_user"] + hist["core_us"]["per_play"] * 20
    assert per_key > 0 or (per_key == 0 and hist["core_us_below_noise"])
    assert min(hist["core_us"].values()) >= 0
    assert coef["knn_catalogue"]["points"] == knn_catalogue and "borrowed" not in coef["knn_catalogue"]
    assert set(coef["kernel_ease"]["core_us"]) >= set(p.EASE_TERMS)
    assert coef["catalogue"]["points"] == catalogue and coef["catalogue"]["core_us"]["per_item"] > 0
    again, _ = p.load_coefficients(path)
    assert again == coef and coef["reference_run"] == json.loads(p.DEFAULT_PATH.read_text())["reference_run"]
    runs = coef["basis"]["runs"]
    assert [r["users_with_recs"] for r in runs["packed"]] == [1_000, 3_000]
    # bytes: packed well below json, both measured on the real publication (3,000 users: allocator noise)
    assert coef["encodings"]["packed"]["redis_bytes"] * 2 < coef["encodings"]["json"]["redis_bytes"]
    assert coef["lake"]["activity_bytes_per_play"] > 0 and coef["lake"]["prediction_row_bytes"] > 0
    committed = json.loads(p.DEFAULT_PATH.read_text())["encodings"]["json"]
    assert coef["encodings"]["json"]["publish_wall_us"] == committed["publish_wall_us"]
    assert coef["encodings"]["json"]["publish_wall_us_calibration"] > 0
    p.plan(p.PlanInputs(users=1_000_000, rails=6), coef)
    assert coef["kernel_knn"]["points"] == knn
    assert "per_1k_candidates_per_factor" in coef["kernel"]["core_us"]
    p.plan(p.PlanInputs(users=1_000_000, rails=6, factors=128), coef)
    p.plan(p.PlanInputs(users=1_000_000, rails=6, kernel="neighbours"), coef)


def test_kernel_planes_are_fitted_in_relative_errors() -> None:
    """A sweep spans small and large points (a genre rail's ~5 us a user beside 200 us): with a 10% error on
    every point, the fit must keep each point near 10%, not fit the large points and leave the small ones
    ~30% off (plain least squares on these points)."""
    pts = []
    for i, (c, k, n) in enumerate((c, k, n) for c in (2_000, 5_000, 10_000, 20_000) for k in (50, 100)
                                  for n in (10, 25, 50)):
        true = 2.0 + 1.5 * c / 1000 + 0.1 * k + 350 * n * c / 1e6
        pts.append({"candidates": c, "k": k, "plays": n, "cpu_us_per_user": true * (1.1 if i % 2 else 0.9)})
    fit = p.fit_ease_kernel(pts)
    assert fit["max_rel_residual"] < 0.2
    for pt in pts:
        planned = (fit["per_user"] + fit["per_1k_candidates"] * pt["candidates"] / 1000 + fit["per_k"] * pt["k"]
                   + fit["per_m_products"] * pt["plays"] * pt["candidates"] / 1e6)
        assert abs(planned / pt["cpu_us_per_user"] - 1) < 0.2
    with pytest.raises(p.CoefficientsError, match="no CPU time"):
        p.fit_ease_kernel([{**pt, "cpu_us_per_user": 0.0} for pt in pts])


def test_more_like_this_seeds_every_model_item_in_each_rail(coef: dict) -> None:
    """compute_predictions also scores every model item as a seed (its one play), writes one sim key each:
    the plan counts them in the compute, the dump, the publication, Redis and the lake; similar_k 0: none."""
    base = dict(users=200_000, rails=3, cores=2, candidates=20_000, model="als", factors=64)
    off = p.plan(p.PlanInputs(**base), coef)
    on = p.plan(p.PlanInputs(**base, similar_k=20, items=30_000), coef)
    f0, f1 = off["figures"], on["figures"]
    assert f0["similar_seeds"] == 0 and f0["similar_core_s"] == 0
    assert f1["similar_seeds"] == 3 * 30_000
    seed_us = p.kernel_core_us(coef, 20_000, 20, 64)  # a factor model's seed: its factors x every candidate
    assert f1["similar_kernel_core_us_per_seed"] == pytest.approx(seed_us)
    over = p._per_rail(coef, "packed", 20)["overhead_core_us"]
    assert f1["similar_core_s"] == pytest.approx(3 * 30_000 * (seed_us + over) / 1e6)
    assert f1["compute_core_s"] == pytest.approx(f0["compute_core_s"] + f1["similar_core_s"])
    for key in ("create_redis_dump_s", "publish_predictions_s", "redis_publication_bytes",
                "lake_predictions_bytes_per_run"):
        assert f1[key] > f0[key], key
    # item-kNN's seed is one row of neighbours (among the candidates); EASE's one row of dense weights
    knn = p.PlanInputs(**{**base, "model": "knn"}, kernel="neighbours", neighbours=75, similar_k=20, items=40_000)
    assert p.seed_kernel_core_us(coef, knn) == pytest.approx(p.knn_kernel_core_us(coef, 20_000, 20, 75 / 2))
    ease = p.PlanInputs(**{**base, "model": "ease"}, kernel="item_weights", similar_k=20)
    assert p.seed_kernel_core_us(coef, ease) == pytest.approx(p.ease_kernel_core_us(coef, 20_000, 20, 1.0))
    console = Console(file=io.StringIO(), width=200)
    console.print(p.render(on, "test"))
    assert "90,000 seed-rails (every model item) at similar_k 20" in console.file.getvalue()
    with pytest.raises(ValueError, match="similar_k must be >= 0"):
        p.plan(p.PlanInputs(**base, similar_k=-1), coef)


def test_the_compute_steps_per_rail_cost_grows_with_the_catalogue(coef: dict, tmp_path: Path) -> None:
    """Building a rail's candidates and items hash costs per model item, once per rail and serially (not
    divided by cores): the plan adds (items - the basis run's) x the measured core-us per item to each rail's
    fixed seconds, says when it extrapolates, and says when its coefficients lack the term."""
    assert coef["catalogue"]["core_us"]["per_item"] > 0 and len(coef["catalogue"]["points"]) >= 2
    c = json.loads(json.dumps(coef))
    c["catalogue"]["core_us"]["per_item"] = 5.0
    basis = c["basis"]["candidates"]
    small = p.plan(p.PlanInputs(users=100_000, rails=6, candidates=basis), c)
    big = p.plan(p.PlanInputs(users=100_000, rails=6, candidates=basis, items=200_000), c)
    per_rail = (200_000 - basis) * 5.0 / 1e6
    assert small["figures"]["catalogue_core_s_per_rail"] == 0
    assert big["figures"]["catalogue_core_s_per_rail"] == pytest.approx(per_rail)
    for fig in ("compute_predictions_s", "dataflow_wall_s"):  # serial per rail, locally and on workers
        assert big["figures"][fig] - small["figures"][fig] == pytest.approx(6 * per_rail)
    # the kernel and the seeds do not change with the model's items (the candidates are the same)
    assert big["figures"]["kernel_core_us_per_user"] == small["figures"]["kernel_core_us_per_user"]
    # without --items the candidates are the model's items
    assert p.plan(p.PlanInputs(users=1_000, candidates=200_000), c)["figures"]["catalogue_core_s_per_rail"] == \
        pytest.approx(per_rail)
    tiny = p.plan(p.PlanInputs(users=1_000, candidates=100), c)  # a smaller catalogue: less, never below 0
    assert 0 <= tiny["figures"]["compute_fixed_core_s"] < small["figures"]["compute_fixed_core_s"]
    far = p.plan(p.PlanInputs(users=1_000, candidates=basis, items=1_000_000), c)
    assert any("catalogue cost extrapolated" in n for n in far["notes"])
    assert not any("catalogue" in n for n in big["notes"])
    without = {k: v for k, v in c.items() if k != "catalogue"}
    res = p.plan(p.PlanInputs(users=1_000, candidates=basis, items=200_000), without)
    assert res["figures"]["catalogue_core_s_per_rail"] == 0
    assert any("grows with the catalogue is not in these coefficients" in n for n in res["notes"])
    # an older .bench file without the term borrows the committed one at its own level (here 2x slower)
    loaded = _older_file_at_twice_the_level(without, tmp_path)
    assert loaded["catalogue"]["core_us"]["per_item"] == pytest.approx(2 * coef["catalogue"]["core_us"]["per_item"])
    assert "x 2.000" in loaded["catalogue"]["borrowed"]
    with pytest.raises(p.CoefficientsError, match="catalogue.core_us needs per_item"):
        p._validate({**coef, "catalogue": {"core_us": {}}}, "x.json")


def _older_file_at_twice_the_level(without: dict, tmp_path: Path) -> dict:
    """``without`` (coefficients lacking a section) as an older .bench file whose dense kernel is 2x slower,
    loaded: what it borrows from the committed file."""
    slower = json.loads(json.dumps(without))
    slower["kernel"]["core_us"] = {k: v * 2 if k != "max_rel_residual" else v
                                   for k, v in slower["kernel"]["core_us"].items()}
    (tmp_path / "old.json").write_text(json.dumps(slower))
    return p.load_coefficients(tmp_path / "old.json")[0]


def test_the_catalogue_cost_is_fitted_without_the_users_kernel(coef: dict) -> None:
    """The sweep's CPU seconds hold a fixed start-up, its users' kernel (large at 200k candidates) and the
    per-item cost: the fit takes the kernel out, on the session's level."""
    for level in (1.0, 0.8):
        pts = [{"items": n, "candidates": n, "users": 500, "k": 50,
                "cpu_s": 0.3 + 500 * p.kernel_core_us(coef, n, 50) / level / 1e6 + n * 4e-6}
               for n in (20_000, 100_000, 200_000)]
        assert p.fit_catalogue(coef, pts, level=level)["per_item"] == pytest.approx(4.0 * level, rel=1e-3)
    with pytest.raises(p.CoefficientsError, match="two or more catalogue sizes"):
        p.fit_catalogue(coef, pts[:1])


def test_item_knn_pays_for_the_candidates_beyond_the_basis_as_measured_on_the_job(coef: dict, tmp_path: Path) -> None:
    """item-kNN's compute per user grows with the candidates more than its kernel plane says (measured on the
    job, ``knn_catalogue``): the term adds per user and 1,000 candidates beyond the basis run's, to item-kNN
    only, in the compute and the Dataflow figures; notes when missing or extrapolated; older files borrow it."""
    per_1k = coef["knn_catalogue"]["core_us"]["per_user_per_1k_candidates"]
    assert per_1k > 0
    basis = coef["basis"]["candidates"]
    knn = p.PlanInputs(users=1_000_000, candidates=200_000, model="knn", kernel="neighbours", neighbours=70)
    res = p.plan(knn, coef)
    f = res["figures"]
    assert f["knn_catalogue_core_us_per_user"] == pytest.approx(per_1k * (200_000 - basis) / 1000)
    without = {k: v for k, v in coef.items() if k != "knn_catalogue"}
    bare = p.plan(knn, without)
    assert bare["figures"]["knn_catalogue_core_us_per_user"] == 0
    assert f["compute_core_s"] - bare["figures"]["compute_core_s"] == \
        pytest.approx(1_000_000 * f["knn_catalogue_core_us_per_user"] / 1e6)
    assert f["dataflow_vcpu_s"] > bare["figures"]["dataflow_vcpu_s"]
    assert any("not in these coefficients" in n and "item-kNN" in n for n in bare["notes"])
    assert not any("item-kNN's per-user growth" in n for n in res["notes"])
    # at or below the basis, and for the other kernels: nothing
    for inputs in (replace(knn, candidates=basis), replace(knn, candidates=2_000),
                   p.PlanInputs(users=1_000_000, candidates=200_000)):
        assert p.plan(inputs, coef)["figures"]["knn_catalogue_core_us_per_user"] == 0
    far = p.plan(replace(knn, candidates=1_000_000), coef)
    assert any("growth with the candidates extrapolated" in n for n in far["notes"])
    # an older .bench file without the term borrows the committed one at its own level (here 2x slower)
    loaded = _older_file_at_twice_the_level(without, tmp_path)
    assert loaded["knn_catalogue"]["core_us"]["per_user_per_1k_candidates"] == pytest.approx(2 * per_1k)
    assert any("growth with the candidates from" in n for n in p.plan(knn, loaded)["notes"])
    with pytest.raises(p.CoefficientsError, match="knn_catalogue.core_us needs per_user_per_1k_candidates"):
        p._validate({**coef, "knn_catalogue": {"core_us": {}}}, "x.json")


def test_item_knns_growth_is_fitted_beyond_what_the_plan_counts(coef: dict) -> None:
    """The sweep's CPU seconds hold what the plan (without the term) counts at each size -- the kernel plane,
    the output, the fixed and catalogue seconds -- plus the growth: the fit keeps the growth alone, on the
    session's level, whatever the offset at the basis."""
    without = {k: v for k, v in coef.items() if k != "knn_catalogue"}
    for level, offset in ((1.0, 0.0), (0.8, 5.0)):
        pts = []
        for n in (20_000, 100_000, 200_000):
            f = p.plan(p.PlanInputs(users=20_000, candidates=n, model="knn", kernel="neighbours", neighbours=70,
                                    plays_per_user=20, items_per_user=20), without)["figures"]
            per_user = (f["compute_core_s"] + f["compute_fixed_core_s"]) * 1e6 / 20_000 + offset + 0.15 * n / 1000
            pts.append({"items": n, "candidates": n, "users": 20_000, "k": 50, "plays": 20, "neighbours": 70,
                        "cpu_s": per_user * 20_000 / 1e6 / level})
        got = p.fit_knn_catalogue(coef, pts, level=level)["per_user_per_1k_candidates"]
        assert got == pytest.approx(0.15, rel=1e-3)
    with pytest.raises(p.CoefficientsError, match="two or more catalogue sizes"):
        p.fit_knn_catalogue(coef, pts[:1])


def test_rails_that_differ_are_put_together_as_precompute_runs_them(coef: dict) -> None:
    """plan_rails: identical rails give exactly the plan of that many rails; different ones add up step by step
    (compute and publish serial, the dumps a core pair at a time, each group as long as its longest), the
    activity counted once, one Dataflow start-up, per-rail limits named by rail."""
    one = p.PlanInputs(users=2_000_000, candidates=20_000, kernel="neighbours", model="knn", similar_k=20, cores=4)
    same = p.plan_rails([(f"r{i}", one) for i in range(5)], coef)
    whole = p.plan(replace(one, rails=5), coef)["figures"]
    for key in ("compute_predictions_s", "create_redis_dump_s", "publish_predictions_s", "whole_path_s",
                "vcpu_s_local", "compute_core_s", "dataflow_wall_s", "dataflow_cost", "redis_peak_bytes",
                "lake_bytes", "similar_seeds"):
        assert same["figures"][key] == pytest.approx(whole[key]), key
    genre = replace(one, candidates=2_000, items=20_000)
    small = replace(one, users=10_000, candidates=500, items=20_000)
    mixed = p.plan_rails([("all", one), ("genre", genre), ("small", small)], coef)
    f, per = mixed["figures"], {n: r["figures"] for n, r in mixed["rails"].items()}
    assert f["compute_predictions_s"] == pytest.approx(sum(g["compute_predictions_s"] for g in per.values()))
    dumps = sorted((g["create_redis_dump_s"] for g in per.values()), reverse=True)
    assert f["create_redis_dump_s"] == pytest.approx(dumps[0] + dumps[2])  # 4 cores: two dumps at a time
    assert f["lake_activity_bytes"] == per["all"]["lake_activity_bytes"]
    assert per["genre"]["kernel_core_us_per_user"] < per["all"]["kernel_core_us_per_user"]
    assert f["dataflow_wall_s"] < sum(g["dataflow_wall_s"] for g in per.values())  # one start-up, not three
    ease = replace(one, kernel="item_weights", model="ease", candidates=100_000, items=200_000)
    res = p.plan_rails([("all", one), ("ease", ease)], coef)
    assert any(lim["what"].startswith("ease: EASE") for lim in res["limits"])
    assert any(n.startswith("ease: ") for n in res["notes"])
    # with histories: the rails share the users' plays (held and loaded once), each has its also_played keys
    c, hist = _with_history(coef), replace(one, history_items=10)
    same = p.plan_rails([(f"r{i}", hist) for i in range(5)], c)["figures"]
    whole = p.plan(replace(hist, rails=5), c)["figures"]
    for key in ("history_redis_bytes", "redis_publication_bytes", "redis_peak_bytes", "publish_predictions_s",
                "whole_path_s", "history_core_s", "lake_bytes"):
        assert same[key] == pytest.approx(whole[key]), key
    assert same["history_redis_bytes"] == pytest.approx(2_000_000 * (140 + 380) * (1 + 5 * 0.2))
    with pytest.raises(ValueError, match="repeat"):
        p.plan_rails([("a", one), ("a", one)], coef)
    with pytest.raises(ValueError, match="no rails"):
        p.plan_rails([], coef)


def _with_history(coef: dict) -> dict:
    """``coef`` with a history section of round figures."""
    c = json.loads(json.dumps(coef))
    c["history"] = {
        "core_us": {"per_user": 10.0, "per_play": 0.5}, "also_played_core_us": {"per_user": 4.0, "per_play": 0.1},
        "also_played_bytes_ratio": 1.2,
        "bytes": {"resp": {"per_key": 100.0, "per_play": 36.0}, "redis": {"per_key": 140.0, "per_play": 38.0},
                  "rdb": {"per_key": 75.0, "per_play": 36.0}},
        "dump_ratio": 1.5, "publish_ratio": 2.0, "basis": {"history_items": 10},
        "points": [{"plays": 20}, {"plays": 40}]}
    return c


def test_the_history_step_is_planned_per_user_and_rail(coef: dict) -> None:
    """Every user's last plays (``publish.history_items``): a second key per user, which every rail's compute
    step builds (a scan of the activity snapshot) and dump carries, and which Redis holds and the publication
    loads once for all the rails of the snapshot (their also_played keys: once per rail)."""
    c = _with_history(coef)
    base = p.PlanInputs(users=1_000_000, rails=6, cores=2, plays_per_user=20)
    off = p.plan(base, c)["figures"]
    on = p.plan(replace(base, history_items=10), c)
    f, r = on["figures"], on["per_user_rail"]
    ur = 6_000_000
    assert f["history_core_s"] == pytest.approx(ur * (10 + 0.5 * 20) / 1e6)
    assert f["compute_core_s"] - off["compute_core_s"] == pytest.approx(f["history_core_s"])
    assert f["compute_predictions_s"] > off["compute_predictions_s"]
    assert f["history_redis_bytes"] == pytest.approx(1_000_000 * (140 + 38 * 10))  # once, not per rail
    assert f["history_plays_redis_bytes"] == f["history_redis_bytes"]  # no also_played keys without lists
    assert f["redis_publication_bytes"] - off["redis_publication_bytes"] == pytest.approx(f["history_redis_bytes"])
    assert f["redis_peak_bytes"] == pytest.approx(f["redis_publication_bytes"] * 3)  # keep_versions 2 + 1
    assert f["lake_predictions_bytes_per_run"] - off["lake_predictions_bytes_per_run"] == pytest.approx(
        ur * (100 + 36 * 10 + 75 + 36 * 10))
    assert r["history_dump_wall_us"] == pytest.approx(r["dump_wall_us"] * 1.5)
    assert f["publish_predictions_s"] - off["publish_predictions_s"] == pytest.approx(
        1_000_000 * r["publish_wall_us"] * 2.0 / 1e6)  # the first rail loads them, the others skip their files
    # a user who played fewer items than history_items has fewer in the value (and the dump's bytes follow)
    few = p.plan(replace(base, history_items=10, items_per_user=3), c)["per_user_rail"]
    assert few["history_entries"] == 3 and few["history_redis_bytes"] == pytest.approx(140 + 38 * 3)
    assert few["history_dump_wall_us"] == pytest.approx(r["dump_wall_us"] * 1.5 * (100 + 36 * 3) / (100 + 360))
    # with "more like this" lists: the older plays found in them, their CPU and the values' growth
    with_lists = p.plan(replace(base, history_items=10, similar_k=20), c)
    also = with_lists["per_user_rail"]
    assert also["history_core_us"] == pytest.approx(10 + 0.5 * 20 + 4 + 0.1 * 20)
    assert also["history_redis_bytes"] == pytest.approx((140 + 380) * 1.2)
    # a json publication writes the also ids as JSON: their own measured growth
    as_json = {**c, "history": {**c["history"], "also_played_bytes_ratio_json": 1.5}}
    assert p.plan(replace(base, history_items=10, similar_k=20, encoding="json"), as_json)["per_user_rail"][
        "history_redis_bytes"] == pytest.approx((140 + 380) * 1.5)
    assert p.plan(replace(base, history_items=10, similar_k=20), as_json)["per_user_rail"][
        "history_redis_bytes"] == pytest.approx((140 + 380) * 1.2)
    # where Redis's own growth was measured, Redis follows it (the files still the RESP bytes'), also the split
    # between the plays the rails share and the rails' own keys
    held = {**c, "history": {**c["history"], "also_played_redis_bytes_ratio": 1.3}}
    both = p.plan(replace(base, history_items=10, similar_k=20), held)
    assert both["per_user_rail"]["history_redis_bytes"] == pytest.approx((140 + 380) * 1.3)
    assert both["per_user_rail"]["history_resp_bytes"] == pytest.approx((100 + 360) * 1.2)
    assert both["figures"]["history_redis_bytes"] == pytest.approx(1_000_000 * (140 + 380) + ur * (140 + 380) * 0.3)
    # the plays once for the six rails, the older plays the lists name (the values' growth) once per rail
    assert with_lists["figures"]["history_redis_bytes"] == pytest.approx(
        1_000_000 * (140 + 380) + ur * (140 + 380) * 0.2)
    # a lake where a tenth of the users have such plays (the coefficients measured half of them)
    tenth = p.plan(replace(base, history_items=10, similar_k=20, also_share=0.1),
                   {**c, "history": {**c["history"], "also_played_users_share": 0.5}})["figures"]
    assert tenth["history_redis_bytes"] == pytest.approx(1_000_000 * (140 + 380) + ur * (140 + 380) * 0.2 * 0.2)
    with pytest.raises(ValueError, match="also_share"):
        p.plan(replace(base, history_items=10, also_share=1.5), c)
    far = p.plan(replace(base, history_items=10, plays_per_user=80), c)["notes"]
    assert any("history step extrapolated: measured at 20-40 plays" in n for n in far)
    # coefficients without the section: no history figures, and the plan says they are low
    bare = {k: v for k, v in c.items() if k != "history"}
    res = p.plan(replace(base, history_items=10), bare)
    assert res["figures"]["history_core_s"] == 0 and res["figures"]["compute_core_s"] == off["compute_core_s"]
    assert any("history step" in n and "not in these coefficients" in n for n in res["notes"])
    with pytest.raises(ValueError, match="history_items"):
        p.plan(replace(base, history_items=-1), c)


def test_the_committed_coefficients_plan_the_history_step(coef: dict) -> None:
    """The committed file measures the history step (``skyrec plan --calibrate-history``), and a coefficients
    file measured before it borrows the committed section, saying so."""
    h = coef["history"]
    assert h["basis"]["history_items"] == 10 and h["bytes"]["redis"]["per_play"] > 20
    assert p.plan(p.PlanInputs(users=1000, history_items=10), coef)["figures"]["history_core_s"] > 0


def test_an_older_coefficients_file_borrows_the_history_step(coef: dict, tmp_path: Path) -> None:
    old = {k: v for k, v in json.loads(p.DEFAULT_PATH.read_text()).items() if k != "history"}
    path = tmp_path / "old.json"
    path.write_text(json.dumps(old))
    loaded, _ = p.load_coefficients(path)
    assert loaded["history"]["core_us"] == coef["history"]["core_us"] and "borrowed" in loaded["history"]
    assert any("history step from plan_coefficients.json" in n
               for n in p.plan(p.PlanInputs(users=1000, history_items=10), loaded)["notes"])
    broken = json.loads(p.DEFAULT_PATH.read_text())
    del broken["history"]["bytes"]["redis"]
    path.write_text(json.dumps(broken))
    with pytest.raises(p.CoefficientsError, match="history"):
        p.load_coefficients(path)


def test_the_history_step_is_fitted_from_runs_with_and_without_it() -> None:
    """fit_history on runs whose figures follow known lines: it recovers the CPU per key (per user + per play),
    the bytes per key (per key + per play of the value), the dump and publication multiples of a user's list,
    and also_played's CPU and bytes."""
    def run(plays: int, items: int) -> dict[str, Any]:
        keys = 1_000 if items else 0
        cpu = 5.0 + keys * (12.0 + 0.5 * plays) / 1e6
        return {"users": 1_000, "users_with_recs": 1_000, "plays": plays, "history_items": items, "hist_keys": keys,
                "redis_used_memory_delta": 400_000 + keys * (140 + 38 * items),
                "resp_bytes": 300_000 + keys * (100 + 36 * items), "rdb_bytes": 280_000 + keys * (75 + 36 * items),
                "steps": {"compute_predictions": {"seconds": cpu / 2, "process_cpu_seconds": cpu},
                          "create_redis_dump": {"seconds": 1.0 + (0.5 * 1.5 if keys else 0.0),
                                                "process_cpu_seconds": 0.1},
                          "publish_predictions": {"seconds": 2.0 + (1.0 * 0.8 if keys else 0.0),
                                                  "process_cpu_seconds": 0.1}}}
    sweep = {"runs": [run(20, 0), run(20, 10), run(40, 0), run(40, 10), run(20, 5)],
             "also_played": [{"plays": n, "users": 1_000, "cpu_seconds": {"plain": 1.0, "also_played": 1.0 + (
                 3.0 + 0.2 * n) * 1_000 / 1e6}, "value_bytes": {"plain": 100, "also_played": 125,
                                                                  "also_played_json": 150},
                 "redis_bytes": {"plain": 200, "also_played": 260, "also_played_json": 300}} for n in (20, 40)]}
    h = p.fit_history(sweep, {"packed": {"dump_fixed_s": 0.5, "publish_fixed_s": 1.0}})
    assert h["core_us"] == pytest.approx({"per_user": 12.0, "per_play": 0.5}, rel=1e-3)
    assert h["also_played_core_us"] == pytest.approx({"per_user": 3.0, "per_play": 0.2}, rel=1e-3)
    assert h["bytes"]["redis"] == pytest.approx({"per_key": 140, "per_play": 38})
    assert h["bytes"]["rdb"] == pytest.approx({"per_key": 75, "per_play": 36})
    assert (h["dump_ratio"], h["publish_ratio"], h["also_played_bytes_ratio"]) == pytest.approx((1.5, 0.8, 1.25))
    assert h["also_played_bytes_ratio_json"] == pytest.approx(1.5)
    assert (h["also_played_redis_bytes_ratio"], h["also_played_redis_bytes_ratio_json"]) == pytest.approx((1.3, 1.5))
    assert h["basis"]["history_items"] == 10
    assert "core_us_below_noise" not in h


def test_a_history_step_measured_below_the_noise_is_planned_as_zero_with_a_note() -> None:
    """A calibration on few users can measure the history step's extra CPU below 0 (the compute step's noise is
    larger than the step): a cost is never negative, so it is fitted as 0, marked, and the plan says so."""
    def run(plays: int, items: int, cpu: float) -> dict[str, Any]:
        keys = 2_000 if items else 0
        steps = {j: {"seconds": 1.0, "process_cpu_seconds": cpu} for j in
                 ("compute_predictions", "create_redis_dump", "publish_predictions")}
        return {"users": 2_000, "users_with_recs": 2_000, "plays": plays, "history_items": items, "hist_keys": keys,
                "redis_used_memory_delta": 1_000 + keys * 50 * (1 + items), "resp_bytes": 1_000 + keys * 40 * (1 + items),
                "rdb_bytes": 1_000 + keys * 30 * (1 + items), "steps": steps}
    # with history, the compute step's CPU came out lower than without it at both play counts
    sweep = {"runs": [run(20, 0, 2.0), run(20, 10, 1.99), run(40, 0, 3.0), run(40, 10, 2.9), run(20, 5, 1.98)],
             "also_played": [{"plays": n, "users": 1_000, "cpu_seconds": {"plain": 1.0, "also_played": 1.001},
                              "value_bytes": {"plain": 100, "also_played": 125}} for n in (20, 40)]}
    h = p.fit_history(sweep, {"packed": {"dump_fixed_s": 0.5, "publish_fixed_s": 1.0}})
    assert h["core_us"] == {"per_user": 0.0, "per_play": 0.0} and h["core_us_below_noise"] is True
    coef = json.loads(p.DEFAULT_PATH.read_text())
    coef["history"] = h
    out = p.plan(p.PlanInputs(users=1_000, history_items=10, plays_per_user=20), coef)
    assert out["figures"]["history_core_s"] == 0.0
    assert any("within the measurement's noise at 2,000 users" in n for n in out["notes"])
