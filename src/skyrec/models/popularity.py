"""Popularity: the baseline every trained model must beat.

Every user gets the same ranking, by the (recency-weighted) interaction mass of each item. In the
``score = U @ V.T`` form this is a rank-1 model: every user row is ``[1]`` and each item row is its
popularity, so the baseline runs through exactly the same scoring, exclusion and evaluation code as the
learned models.
"""

from __future__ import annotations

from typing import Any

import numpy as np
import scipy.sparse as sp

from skyrec.models.base import Recommender


class PopularityModel(Recommender):
    name = "popularity"

    def __init__(self, **params: Any) -> None:
        super().__init__(**params)
        self._popularity: np.ndarray | None = None
        self._n_users = 0

    def fit(self, interactions: sp.csr_matrix, item_features: sp.csr_matrix | None = None,
            user_features: sp.csr_matrix | None = None) -> PopularityModel:
        m = sp.csr_matrix(interactions)
        # Interaction mass per item; the log keeps the scale tame without changing the order.
        self._popularity = np.log1p(np.asarray(m.sum(axis=0), dtype=np.float64).ravel()).astype(np.float32)
        self._n_users = m.shape[0]
        return self

    def _check(self) -> np.ndarray:
        if self._popularity is None:
            raise RuntimeError("PopularityModel: call fit() or load() first")
        return self._popularity

    def user_representations(self) -> np.ndarray:
        self._check()
        return np.ones((self._n_users, 1), dtype=np.float32)

    def item_representations(self, item_features: sp.csr_matrix | None = None) -> np.ndarray:
        pop = self._check()
        if item_features is not None:
            # Items never played have no popularity: they rank below every played item.
            return np.zeros((item_features.shape[0], 1), dtype=np.float32)
        return pop.reshape(-1, 1).copy()

    @classmethod
    def item_queries(cls, item_factors: np.ndarray, items: np.ndarray) -> np.ndarray:
        """The baseline's "more like this" is what is popular: every seed is the user row ``[1]``."""
        return np.ones((np.asarray(items).size, 1), dtype=np.float32)

    def state(self) -> dict[str, np.ndarray]:
        return {"popularity": self._check(), "n_users": np.asarray(self._n_users, dtype=np.int64)}

    def restore(self, arrays: dict[str, np.ndarray]) -> None:
        self._popularity = np.asarray(arrays["popularity"], dtype=np.float32)
        self._n_users = int(arrays["n_users"])
