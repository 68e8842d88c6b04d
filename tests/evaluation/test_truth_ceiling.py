"""The planted-truth ceiling of the model benchmark (``benchmarks/truth_ceiling.py``): the Bayes decision under
the generator's own model. Told each user's planted brands and genres it must come close to the oracle (the
likelihoods and priors are the generator's); from the activity alone it must find most planted brands and stay
below the told figure. A wrong likelihood or prior moves both."""

from __future__ import annotations

import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

BENCHMARKS = Path(__file__).resolve().parents[2] / "benchmarks"


@pytest.fixture(scope="module")
def generated() -> Iterator[tuple[object, object]]:
    sys.path.insert(0, str(BENCHMARKS))
    try:
        import bench_models

        yield bench_models.generator_data(400, 600, 10, 40.0)
    finally:
        sys.path.remove(str(BENCHMARKS))


def test_the_ceiling_told_the_planted_support_nearly_reaches_the_oracle_and_from_activity_alone_stays_below(
        generated: tuple[object, object]) -> None:
    sys.path.insert(0, str(BENCHMARKS))
    try:
        from truth_ceiling import bayes_ceiling

        data, truth = generated
        figures = bayes_ceiling(data, truth, burn=60, samples=30)
        told, alone = figures["bayes_true_brands_and_genres"], figures["bayes"]
    finally:
        sys.path.remove(str(BENCHMARKS))
    assert told["planted_brands_in_the_last_sample"] == 1.0
    assert told["fraction_of_oracle"] >= 0.93, told
    assert alone["planted_brands_in_the_last_sample"] >= 0.75, alone
    assert 0.87 <= alone["fraction_of_oracle"] < told["fraction_of_oracle"], (alone, told)
