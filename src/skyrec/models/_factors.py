"""Shared plumbing of the pure collaborative-filtering models (ALS, BPR, EASE, item-kNN): parameters and
factor storage. The user side may be a sparse CSR (``skyrec.models.representations``): EASE and item-kNN
score ``x_u @ B``, i.e. their user "factors" are the interaction rows."""

from __future__ import annotations

from typing import Any, ClassVar

import numpy as np
import scipy.sparse as sp

from skyrec.models import representations as reps
from skyrec.models.base import Recommender
from skyrec.progress import interactive


class FactorModel(Recommender):
    """A model whose state is exactly two factor matrices with ``score = user_factors @ item_factors.T``
    (``user_factors`` dense, or sparse CSR for models with ``d = n_items``)."""

    #: accepted parameters and their defaults; unknown parameters are a configuration error
    defaults: ClassVar[dict[str, Any]] = {}
    #: True for ``d = n_items`` models whose ``V.T`` is an item-item matrix (item-to-item = its rows)
    item_item_rows: ClassVar[bool] = False
    #: low-rank factors: the dot product, or the cosine of the items' factors (EASE and item-kNN: their own
    #: item-item weights only)
    similar_measures: ClassVar[tuple[str, ...]] = ("dot", "cosine")

    def __init__(self, **params: Any) -> None:
        unknown = set(params) - set(self.defaults)
        if unknown:
            raise ValueError(f"{type(self).__name__}: unknown parameter(s) {sorted(unknown)} "
                             f"(known: {sorted(self.defaults)})")
        super().__init__(**params)
        self._user: reps.Representation | None = None
        self._item: reps.Representation | None = None

    def param(self, name: str) -> Any:
        return self.params.get(name, self.defaults[name])

    def _set_factors(self, user: reps.Representation, item: reps.Representation) -> None:
        self._user = reps.as_float32(user)
        self._item = reps.as_float32(item)

    def _fit_implicit(self, model: Any, user_items: sp.csr_matrix) -> None:
        """``model.fit`` of an ``implicit`` factorisation, then its factors as this model's. implicit raises its
        own ``ModelFitError("NaN encountered in factors")`` on a diverged fit, naming neither the model nor how
        much: it becomes the ``reps.NonFiniteError`` every refused fit raises (and +-inf, which implicit lets
        through, is refused by ``training.check_fitted``)."""
        try:
            model.fit(user_items, show_progress=interactive())  # a bar on a terminal
        except Exception as exc:
            if type(exc).__name__ != "ModelFitError":  # implicit.recommender_base.ModelFitError
                raise
            reps.check_finite(f"{type(self).__name__} (model {self.name!r})",
                              {"user_factors": model.user_factors, "item_factors": model.item_factors},
                              hint=reps.DIVERGED)
            raise  # pragma: no cover - implicit saw NaN that is not there
        self._set_factors(model.user_factors, model.item_factors)

    def _check(self) -> tuple[reps.Representation, reps.Representation]:
        if self._user is None or self._item is None:
            raise RuntimeError(f"{type(self).__name__}: call fit() or load() first")
        return self._user, self._item

    def user_representations(self) -> reps.Representation:
        return self._check()[0]

    def item_representations(self, item_features: sp.csr_matrix | None = None) -> reps.Representation:
        item = self._check()[1]
        if item_features is not None:
            # Pure collaborative filtering knows nothing about unplayed items: neutral (zero) scores.
            return reps.zeros(item_features.shape[0], item.shape[1], like=item)
        return item

    @classmethod
    def item_queries(cls, item_factors: reps.Representation, items: np.ndarray) -> reps.Representation:
        """Low-rank models: the seed's own factors (the base contract). Models with ``d = n_items`` (EASE,
        item-kNN: ``V = B.T``) set ``item_item_rows``: the seed is the one-hot interaction row, so
        ``sim(i, .) = B[i, :]``, the model's own item-item weights."""
        if cls.item_item_rows:
            return reps.one_hot(items, np.shape(item_factors)[1])
        return super().item_queries(item_factors, items)

    def state(self) -> dict[str, np.ndarray]:
        user, item = self._check()
        return {**reps.to_arrays("user_factors", user), **reps.to_arrays("item_factors", item)}

    def restore(self, arrays: dict[str, np.ndarray]) -> None:
        self._set_factors(reps.from_arrays("user_factors", arrays), reps.from_arrays("item_factors", arrays))
