"""Item-kNN: item-item neighbours from the ``implicit`` package (``CosineRecommender``, ``BM25Recommender``).

implicit keeps, per item, its ``neighbours`` most similar items (a sparse items x items matrix ``S``) and
scores a user as ``x_u @ S`` (``x_u`` the user's weighted interactions). In the model contract that is
``U = X`` (sparse CSR rows) and ``V = S.T`` (sparse CSR, ``d = n_items``), so the kernel, evaluation and the
business rules score it like any other model (``skyrec.models.representations``), and the model costs
``n_items x neighbours`` entries, not ``n_items^2``: a 200k-item catalogue fits. ``memory_limit_gb`` bounds
those sparse matrices (``S``, ``V`` and a copy at precompute: ``neighbours`` large against the item count is
the only way to exceed it).

``similarity``: ``cosine`` (cosine of the item columns) or ``bm25`` (columns BM25-weighted first, with
``bm25_k1`` and ``bm25_b``: damps heavy users and very popular items).

``series_weight`` (> 0, given the catalogue's brands and release times through ``item_context``) adds the
"new in a series you follow" term of ``skyrec.models.series`` to ``S``: the newest ``series_depth`` episodes
of each brand, ``series_decay`` apart, lifted for the brand's listeners. A user's kNN score sums one link
per item they played, so it grows with how much they listen; the term is scaled by the mean strongest link
times the median number of items per user, and the weight keeps its meaning when the data is ten times
denser (docs/evaluation.md). Without a context (no catalogue) the model is plain item-kNN.

``series_catch_up`` < 1 weighs that term by how the user listens to each programme
(``skyrec.models.series.add_followed_series``): a play of an episode first played while it was among its
brand's ``series_follow_within + 1`` newest counts fully, a play that caught up on an older one counts
``series_catch_up`` of that. The model then scores ``[x_u, x_u ∘ f_u] @ [S + c w T; (1 - c) w T]``: ``U`` is
the interaction rows beside their followed part (sparse, ``2 x n_items`` wide) and ``V`` the two item-item
blocks side by side, so the kernel, evaluation and the rules still score one sparse product. "More like
this" seeds the first block only (``S[i, :] + c w T[i, :]``: a listener who played item ``i``, not known to
follow its programme).
"""

from __future__ import annotations

import warnings
from typing import Any, ClassVar

import numpy as np
import scipy.sparse as sp

from skyrec.models import representations as reps
from skyrec.models._factors import FactorModel
from skyrec.models._threads import fit_threads, single_threaded_blas
from skyrec.models.params import KNN
from skyrec.models.series import (
    FOLLOW_PARAMS,
    PARAMS,
    ItemContext,
    add_followed_series,
    checked_follow,
    checked_params,
    typical_user_items,
)
from skyrec.progress import interactive

SIMILARITIES = KNN["similarity"].choices  # cosine, bm25
COPIES = 3  # S, V = S.T, and a serialised or sliced copy at precompute
ENTRY_BYTES = 8  # float32 value + int32 column index per stored entry


class ItemKNNModel(FactorModel):
    name = "knn"
    item_item_rows = True  # more like item i: its neighbours S[i, :]
    similar_measures = ("dot",)  # its neighbour similarities are the measure
    uses_item_context = True
    defaults: ClassVar[dict[str, Any]] = {"similarity": "bm25", "neighbours": 70, "bm25_k1": 1.0, "bm25_b": 0.2,
                                          "series_weight": 0.54, "series_depth": 5, "series_decay": 0.75,
                                          "series_catch_up": 0.1, "series_follow_within": 1,
                                          "memory_limit_gb": 8.0, "num_threads": 0}
    param_spec = KNN  # similarity one of SIMILARITIES, neighbours a whole number >= 1, bm25_b in [0, 1], ...

    def __init__(self, **params: Any) -> None:
        super().__init__(**params)  # each value checked by its rule (param_spec)
        self._series_params = checked_params("ItemKNNModel", *(self.param(k) for k in PARAMS))
        self._follow_params = checked_follow("ItemKNNModel", *(self.param(k) for k in FOLLOW_PARAMS))
        self._limit_gb = reps.checked_limit_gb("ItemKNNModel", self.name, self.param("memory_limit_gb"))
        self._similarity: sp.csr_matrix | None = None
        self._follow: sp.csr_matrix | None = None  # (1 - c) w T when the term is weighted by followed plays
        #: what the series term added at fit (weight 0 when off), recorded in the artefact's meta by the train job
        self.series: dict[str, Any] = {"weight": 0.0, "entries": 0}

    def fit(self, interactions: sp.csr_matrix, item_features: sp.csr_matrix | None = None,
            user_features: sp.csr_matrix | None = None, item_context: ItemContext | None = None) -> ItemKNNModel:
        from implicit.nearest_neighbours import BM25Recommender, CosineRecommender
        from implicit.utils import ParameterWarning

        X = sp.csr_matrix(interactions, dtype=np.float32, copy=True)
        X.eliminate_zeros()
        k = int(self.param("neighbours"))
        self._guard(X.shape[1], k)
        k = max(1, min(k, X.shape[1]))  # more neighbours than items: every item (implicit takes a C int)
        threads = fit_threads(self.param("num_threads"))
        model: Any
        if self.param("similarity") == "bm25":
            model = BM25Recommender(K=k, K1=float(self.param("bm25_k1")), B=float(self.param("bm25_b")),
                                    num_threads=threads)
        else:
            model = CosineRecommender(K=k, num_threads=threads)
        with single_threaded_blas(), warnings.catch_warnings():
            # implicit's own weighting hands its kNN routine a COO and warns about converting it (its internals)
            warnings.filterwarnings("ignore", message="Method expects CSR input", category=ParameterWarning)
            model.fit(X, show_progress=interactive())
        S, XF, follow, self.series = add_followed_series(
            sp.csr_matrix(model.similarity, dtype=np.float32), X, item_context, user_items=typical_user_items(X),
            **self._series_params, **self._follow_params)  # type: ignore[arg-type]
        self._set_similarity(X if XF is None else sp.hstack([X, XF], format="csr"), S, follow)
        return self

    def _guard(self, n_items: int, neighbours: int) -> None:
        """Refuse, before fitting, a neighbourhood whose sparse matrices exceed ``memory_limit_gb``."""
        need = COPIES * n_items * min(neighbours, n_items) * ENTRY_BYTES
        limit = self._limit_gb
        if need > limit * 1e9:
            key = f"models.{self.name}.params.memory_limit_gb"
            raise reps.MemoryGuardError(
                f"item-kNN: {n_items:,} items x {neighbours:,} neighbours need ~{need / 1e6:,.1f} MB for the "
                f"neighbour matrices ({COPIES} x {n_items:,} x {min(neighbours, n_items):,} entries), above the "
                f"limit of {limit:g} GB ({key}); lower models.{self.name}.params.neighbours or raise {key}")

    def _set_similarity(self, U: sp.csr_matrix, S: sp.csr_matrix, follow: sp.csr_matrix | None = None) -> None:
        """``U``: the interaction rows ``X`` (``[X, X∘F]`` with the followed block); V[j] = S[:, j] (and
        ``follow[:, j]`` beside it): score(u, j) = x_u @ S[:, j] (+ (x_u ∘ f_u) @ follow[:, j])."""
        S = reps.as_float32(S)
        self._similarity = S
        self._follow = None if follow is None else reps.as_float32(follow)
        V = sp.csr_matrix(S.T) if follow is None else sp.hstack([S.T, sp.csr_matrix(follow).T], format="csr")
        if U.shape[1] != V.shape[1]:
            raise ValueError(f"ItemKNNModel: user rows are {U.shape[1]} wide, the item-item blocks {V.shape[1]}")
        self._set_factors(U, V)

    def state(self) -> dict[str, np.ndarray]:
        user, _ = self._check()
        if self._similarity is None:  # pragma: no cover - set together with the factors
            raise RuntimeError("ItemKNNModel: call fit() or load() first")
        follow = {} if self._follow is None else reps.to_arrays("follow", self._follow)
        return {**reps.to_arrays("user_factors", user), **reps.to_arrays("similarity", self._similarity), **follow}

    def restore(self, arrays: dict[str, np.ndarray]) -> None:
        S = reps.from_arrays("similarity", arrays)
        follow = sp.csr_matrix(reps.from_arrays("follow", arrays)) if "follow_csr_data" in arrays else None
        self._set_similarity(sp.csr_matrix(reps.from_arrays("user_factors", arrays)), sp.csr_matrix(S), follow)
