"""Fitting a model on a dataset's matrix, shared by the train and evaluate steps.

A pure collaborative model is fit only on the items that have interactions in the matrix it learns from
(an item without any would get a meaningless vector); a feature model is fit on every item, so it can
score catalogue items that nobody has played yet. ``Fitted`` maps the result back onto the dataset's full
item space with a ``scorable`` mask, which is how evaluation compares both kinds on the same items.
"""

from __future__ import annotations

import time
from dataclasses import dataclass

import numpy as np
import scipy.sparse as sp

from skyrec.models import representations as reps
from skyrec.models.base import Recommender
from skyrec.models.series import ItemContext


@dataclass
class Fitted:
    model: Recommender
    item_cols: np.ndarray      # dataset item columns the model was fit on (its item rows, in order)
    user_factors: reps.Representation  # float32 [n_users, d] (CSR for the d = n_items models)
    item_factors: reps.Representation  # float32 [len(item_cols), d] (CSR for item-kNN)
    seconds: float

    def full_item_factors(self, n_items: int) -> tuple[reps.Representation, np.ndarray]:
        """(item factors over all ``n_items`` dataset columns with zeros where not fit, scorable mask)."""
        full = reps.expand_rows(self.item_factors, self.item_cols, n_items)
        mask = np.zeros(n_items, bool)
        mask[self.item_cols] = True
        return full, mask


def fit_on(model: Recommender, matrix: sp.csr_matrix, item_features: sp.csr_matrix | None,
           context: ItemContext | None = None) -> Fitted:
    """Fit ``model`` on ``matrix`` (users x items); refuse a fit that is not finite (``check_fitted``).

    ``context`` (over ``matrix``'s item columns, ``skyrec.models.series.item_context``) reaches models that
    declare ``uses_item_context``, restricted to the columns they are fit on."""
    matrix = sp.csr_matrix(matrix, dtype=np.float32)
    if matrix.nnz == 0:
        raise ValueError("no interactions to fit on")
    t0 = time.perf_counter()
    if model.uses_item_features:
        cols = np.arange(matrix.shape[1])
        model.fit(matrix, item_features=item_features)
    else:
        cols = np.flatnonzero(np.bincount(matrix.indices, minlength=matrix.shape[1]) > 0)
        fit_matrix = matrix[:, cols] if len(cols) < matrix.shape[1] else matrix
        if model.uses_item_context and context is not None:
            if len(context.brand) != matrix.shape[1]:
                raise ValueError(f"item context has {len(context.brand)} items, the matrix {matrix.shape[1]}")
            model.fit(fit_matrix, item_context=context.take(cols))  # type: ignore[call-arg]
        else:
            model.fit(fit_matrix)
    seconds = time.perf_counter() - t0
    user = reps.as_float32(model.user_representations())
    item = reps.as_float32(model.item_representations())
    if user.shape[0] != matrix.shape[0] or item.shape[0] != len(cols) or user.shape[1] != item.shape[1]:
        raise ValueError(f"{type(model).__name__}: representations {user.shape}/{item.shape} do not match "
                         f"{matrix.shape[0]} users x {len(cols)} items")
    check_fitted(model, user, item)
    return Fitted(model=model, item_cols=cols, user_factors=user, item_factors=item, seconds=seconds)


def check_fitted(model: Recommender, user: reps.Representation, item: reps.Representation) -> None:
    """Refuse (``reps.NonFiniteError``, a ValueError) a fitted model whose representations or saved state hold
    NaN or +-inf, or whose scores can overflow float32 -- naming the model, each array and how many values:
    such a model ranks items on NaN. Cheap (two reductions per array, no temporary of its size)."""
    owner = f"{type(model).__name__} (model {model.name!r})"
    arrays: dict[str, reps.Representation] = {"user representations": user, "item representations": item}
    seen = [np.asarray(x.data if sp.issparse(x) else x) for x in (user, item)]
    for key, arr in model.state().items():  # what model.npz holds: biases, metadata embeddings, neighbours
        arr = np.asarray(arr)
        if arr.dtype.kind == "f" and not any(np.may_share_memory(arr, s) for s in seen):
            arrays[key] = arr
    reps.check_finite(owner, arrays, hint=reps.DIVERGED)
    reps.check_scores_fit(owner, user, item, hint=reps.DIVERGED)
