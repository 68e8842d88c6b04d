"""Implicit-feedback ALS (Hu, Koren & Volinsky) via the ``implicit`` package, CPU.

The weighted interactions are the confidence signal; ``alpha`` scales them (``C = 1 + alpha * r``).
BLAS is limited to one thread during the fit because implicit parallelises over users/items itself.
"""

from __future__ import annotations

from typing import Any, ClassVar

import numpy as np
import scipy.sparse as sp

from skyrec.models._factors import FactorModel
from skyrec.models._threads import fit_threads, single_threaded_blas
from skyrec.models.params import ALS


class ALSModel(FactorModel):
    name = "als"
    defaults: ClassVar[dict[str, Any]] = {"factors": 128, "iterations": 15, "regularization": 6.0, "alpha": 0.4,
                                          "random_state": 42, "num_threads": 0}
    param_spec = ALS

    def fit(self, interactions: sp.csr_matrix, item_features: sp.csr_matrix | None = None,
            user_features: sp.csr_matrix | None = None) -> ALSModel:
        from implicit.cpu.als import AlternatingLeastSquares

        user_items = sp.csr_matrix(interactions, dtype=np.float32)
        with single_threaded_blas():  # implicit checks the BLAS pool when the model is built
            model = AlternatingLeastSquares(
                factors=int(self.param("factors")), regularization=float(self.param("regularization")),
                alpha=float(self.param("alpha")), iterations=int(self.param("iterations")),
                random_state=self.param("random_state"), num_threads=fit_threads(self.param("num_threads")),
            )
            self._fit_implicit(model, user_items)
        return self
