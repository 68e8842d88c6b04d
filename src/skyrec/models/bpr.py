"""Bayesian Personalised Ranking via the ``implicit`` package, CPU.

implicit's BPR learns an item bias as the last item-factor column (with a constant 1 in the matching user
column), so ``user_factors @ item_factors.T`` already includes the bias, as the model contract asks.
"""

from __future__ import annotations

from typing import Any, ClassVar

import numpy as np
import scipy.sparse as sp

from skyrec.models._factors import FactorModel
from skyrec.models._threads import fit_threads, single_threaded_blas
from skyrec.models.params import BPR


class BPRModel(FactorModel):
    name = "bpr"
    defaults: ClassVar[dict[str, Any]] = {"factors": 64, "iterations": 100, "learning_rate": 0.007,
                                          "regularization": 0.004, "random_state": 42, "num_threads": 0}
    param_spec = BPR

    @classmethod
    def item_queries(cls, item_factors: np.ndarray, items: np.ndarray) -> np.ndarray:
        """``V[i] @ V[j]`` without the bias column (its user-side 1 set to 0): taste alone, not popularity."""
        q = np.array(np.asarray(item_factors, dtype=np.float32)[np.asarray(items, dtype=np.int64)])
        q[:, -1] = 0.0
        return q

    def fit(self, interactions: sp.csr_matrix, item_features: sp.csr_matrix | None = None,
            user_features: sp.csr_matrix | None = None) -> BPRModel:
        from implicit.cpu.bpr import BayesianPersonalizedRanking

        # BPR samples positives uniformly: the weights only say "played", so binarise.
        user_items = sp.csr_matrix(interactions, dtype=np.float32, copy=True)
        user_items.data[:] = 1.0
        with single_threaded_blas():  # implicit checks the BLAS pool when the model is built
            model = BayesianPersonalizedRanking(
                factors=int(self.param("factors")), learning_rate=float(self.param("learning_rate")),
                regularization=float(self.param("regularization")), iterations=int(self.param("iterations")),
                random_state=self.param("random_state"), num_threads=fit_threads(self.param("num_threads")),
            )
            self._fit_implicit(model, user_items)
        return self
