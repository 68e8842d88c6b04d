"""The precompute tests score synthetic dense artefacts committed as the ``als`` model (``synth.py``), so their
config puts every rail on ``als``. The shipped rails' model, item-kNN, goes through the same engine in
``tests/training/test_item_item_chain.py`` and under the real scheduler in ``tests/airflow``."""

from __future__ import annotations

from typing import Any

import pytest


@pytest.fixture
def config_factory(config_factory: Any) -> Any:
    def make(overrides: dict | None = None, *, rails: str | None = "als") -> Any:
        return config_factory(overrides, rails=rails)

    return make
