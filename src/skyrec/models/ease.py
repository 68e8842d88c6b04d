"""EASE: the closed-form item-item model of Steck, "Embarrassingly Shallow Autoencoders" (WWW 2019).

With ``X`` the users x items matrix and ``G = X.T X + lambda I``, ``P = G^-1`` and

    B[i, j] = -P[i, j] / P[j, j]   (i != j),   B[j, j] = 0,       score(u, .) = x_u @ B

In the model contract that is ``U = X`` (sparse CSR rows) and ``V = B.T`` (dense, ``d = n_items``), so the
kernel, evaluation and the business rules score EASE like any other model
(``skyrec.models.representations``).

``series_weight`` > 0 (with the catalogue's brands and release times) adds the "new in a series you follow"
term of ``skyrec.models.series`` to ``B``, in place (docs/evaluation.md).

Memory: one dense items x items float32 matrix is built and inverted *in place* (the Gram matrix is filled
a block of columns at a time, LAPACK's Cholesky ``spotrf``/``spotri`` overwrite it with the inverse, and
the scaling to ``B`` is in place too). Serialising the model and scoring it hold up to two more copies, so
before anything is allocated ``guard_items`` refuses item counts whose 3 x items^2 float32 exceed
``memory_limit_gb`` (``models.<name>.params.memory_limit_gb``), with an error naming both.
"""

from __future__ import annotations

from typing import Any, ClassVar

import numpy as np
import scipy.sparse as sp

from skyrec.models._factors import FactorModel
from skyrec.models.params import EASE
from skyrec.models.representations import checked_limit_gb, guard_items
from skyrec.models.series import PARAMS, ItemContext, add_series_dense, checked_params

#: items^2 float32 matrices held at the peak of train/evaluate/precompute (B + a serialised or sliced copy + one)
COPIES = 3


def gram_matrix(X: sp.csr_matrix, *, block_cells: int = 1 << 25) -> np.ndarray:
    """``X.T @ X`` as a dense float32 Fortran-ordered array, a block of columns at a time (the sparse
    intermediate of one block stays below ``block_cells`` entries)."""
    n = X.shape[1]
    G = np.empty((n, n), dtype=np.float32, order="F")
    Xc = sp.csc_matrix(X, dtype=np.float32)
    Xt = sp.csr_matrix(Xc.T)
    step = max(1, min(n, block_cells // max(n, 1)))
    for a in range(0, n, step):
        b = min(n, a + step)
        G[:, a:b] = (Xt @ Xc[:, a:b]).toarray()
    return G


def ease_weights(G: np.ndarray, regularization: float) -> np.ndarray:
    """EASE's ``B`` from a Gram matrix, overwriting ``G`` (float32, Fortran order) with it."""
    from scipy.linalg import lapack

    n = G.shape[0]
    G[np.diag_indices(n)] += np.float32(regularization)
    c, info = lapack.spotrf(G, lower=0, clean=0, overwrite_a=1)
    if info != 0:
        raise ValueError(f"EASE: the regularised Gram matrix is not positive definite (LAPACK info {info}); "
                         "raise regularization")
    P, info = lapack.spotri(c, lower=0, overwrite_c=1)
    if info != 0:
        raise ValueError(f"EASE: inverting the regularised Gram matrix failed (LAPACK info {info})")
    step = max(1, (1 << 22) // max(n, 1))
    for a in range(0, n, step):  # the inverse is in the upper triangle: mirror it, a block of columns at a time
        b = min(n, a + step)
        P[b:, a:b] = P[a:b, b:].T
        blk = P[a:b, a:b]
        blk[...] = np.triu(blk) + np.triu(blk, 1).T
    diag = np.diag(P).copy()
    P *= (-1.0 / diag)[None, :]
    P[np.diag_indices(n)] = 0.0
    return P


class EASEModel(FactorModel):
    name = "ease"
    item_item_rows = True  # more like item i: B[i, :]
    similar_measures = ("dot",)  # its weights are the measure
    uses_item_context = True
    defaults: ClassVar[dict[str, Any]] = {"regularization": 1000.0, "binary": False, "memory_limit_gb": 8.0,
                                          "series_weight": 2.0, "series_depth": 6, "series_decay": 0.75}
    param_spec = EASE  # regularization > 0, binary a real boolean, ...: checked when built

    def __init__(self, **params: Any) -> None:
        super().__init__(**params)
        self._series_params = checked_params("EASEModel", *(self.param(k) for k in PARAMS))
        self._limit_gb = checked_limit_gb("EASEModel", self.name, self.param("memory_limit_gb"))
        #: what the series term added at fit (``skyrec.models.series``; weight 0 when off)
        self.series: dict[str, float | int] = {"weight": 0.0, "entries": 0}

    def fit(self, interactions: sp.csr_matrix, item_features: sp.csr_matrix | None = None,
            user_features: sp.csr_matrix | None = None, item_context: ItemContext | None = None) -> EASEModel:
        reg = float(self.param("regularization"))
        X = sp.csr_matrix(interactions, dtype=np.float32, copy=True)
        X.eliminate_zeros()
        if self.param("binary") is True:  # a real boolean (param_spec): the text "false" is refused, not truthy
            X.data[:] = 1.0
        guard_items("EASE", X.shape[1], limit_gb=self._limit_gb, copies=COPIES,
                    key=f"models.{self.name}.params.memory_limit_gb", what="the item-item weights")
        B = ease_weights(gram_matrix(X), reg)
        self.series = add_series_dense(B, item_context, **self._series_params)  # type: ignore[arg-type]
        self._set_factors(X, B.T)  # B is Fortran-ordered: B.T is the C-contiguous V without a copy
        return self
