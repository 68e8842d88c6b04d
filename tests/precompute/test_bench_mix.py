"""``benchmarks/bench_precompute.py --mix``: the shipped rails run one after another on a generated catalogue at
their shares of the demo lake, each set beside ``skyrec plan --from-lake``'s plan of the same lake. Checked here
at a small size: the catalogue gives each rail its share of candidates (the shares docs/scale.md plans with,
``plan.SHIPPED_MIX``), and the benchmark runs every rail's three steps into a real serving Redis with its plan
beside it."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from skyrec import plan as p

BENCHMARKS = Path(__file__).resolve().parents[2] / "benchmarks"


@pytest.fixture()
def bench(monkeypatch: pytest.MonkeyPatch) -> Iterator[Any]:
    monkeypatch.syspath_prepend(str(BENCHMARKS))
    import bench_precompute

    yield bench_precompute


def test_the_mix_catalogue_gives_each_shipped_rail_its_share(bench: Any, config_factory: Any) -> None:
    from skyrec.plan_lake import rails_from_lake

    cfg = config_factory({"variants": {name: {"model": "knn"} for name in p.SHIPPED_MIX}})
    periods = 2
    bench.build_lake(cfg, 300, n_items=periods * bench.MIX_PERIOD, model="knn", mix=True)
    shapes = {s.name: s for s in rails_from_lake(cfg, at=bench.AT, cores=2)}
    assert set(shapes) == set(p.SHIPPED_MIX) == set(cfg.variants)
    for name, share in p.SHIPPED_MIX.items():
        got = shapes[name]
        assert got.skipped is None, got.skipped
        assert got.facts["candidates"] == round(share * periods * bench.MIX_PERIOD), name


@pytest.mark.integration
def test_the_mix_benchmark_runs_every_rail_beside_its_plan(bench: Any, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setitem(bench.SCALES, "test", 1_500)
    out = bench.main_mix("test", items=bench.MIX_PERIOD)
    assert list(out["rails"]) == sorted(p.SHIPPED_MIX)  # the order they ran in
    held = 0
    for name, rail in out["rails"].items():
        assert rail["candidates"] == round(p.SHIPPED_MIX[name] * bench.MIX_PERIOD), name
        steps = rail["steps"]
        assert steps["compute_predictions"]["users"] == steps["create_redis_dump"]["keys"] - 3 == 1_500, name
        # each publication adds its rail's keys to the one serving Redis, beside the rails before it
        assert steps["publish_predictions"]["serving_keys_after"] >= held + 1_500, name
        held = steps["publish_predictions"]["serving_keys_after"]
        assert rail["compute_planned_s"] > 0 and rail["compute_seconds"] > 0, name
    assert out["compute_seconds"] == pytest.approx(sum(r["compute_seconds"] for r in out["rails"].values()), abs=0.1)
    assert out["whole_path_measured_over_planned"] > 0
