from __future__ import annotations

import pytest
from _train_helpers import END, FAST

from skyrec.config import Config
from skyrec.evaluation.synthetic import seed_lake
from skyrec.storage import Lake


@pytest.fixture
def train_config(config_factory) -> Config:
    """The train chain of ALS (``run_job``'s default model) with the rails that serve it."""
    return config_factory(FAST, rails="als")


@pytest.fixture
def seeded(train_config: Config):
    lake = Lake.from_config(train_config)
    truth = seed_lake(train_config, lake, end=END, n_users=400, n_items=300, plays_per_user=25, seed=5)
    return train_config, lake, truth
