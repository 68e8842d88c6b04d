"""A hybrid factorisation model with item features (LightFM-style), via the ``lightfm`` package.

Each item is represented by the sum of the embeddings of its features: its own identity feature (only
for items that have plays in the training data) plus its metadata features (masterbrand, brand, genres,
formats: the ``item_features`` matrix built by ``create_dataset``), rows normalised to sum to one as LightFM
recommends. A new episode with no plays therefore gets a representation from its metadata alone, so it is
scored sensibly from its first hour in the catalogue -- ``item_representations(features)`` computes that for
any items given their metadata rows.

LightFM scores ``u . v + b_u + b_i``. To fit the ``score = U @ V.T`` contract the biases are folded into two
extra columns: ``U' = [u, b_u, 1]`` and ``V' = [v, 1, b_i]``.
"""

from __future__ import annotations

from typing import Any, ClassVar

import numpy as np
import scipy.sparse as sp

from skyrec.models._threads import fit_threads, single_threaded_blas
from skyrec.models.base import Recommender
from skyrec.models.params import HYBRID


def _row_normalise(m: sp.csr_matrix) -> sp.csr_matrix:
    m = sp.csr_matrix(m, dtype=np.float32)
    sums = np.asarray(m.sum(axis=1)).ravel()
    sums[sums == 0] = 1.0
    return sp.csr_matrix(sp.diags(1.0 / sums) @ m, dtype=np.float32)


class HybridModel(Recommender):
    name = "hybrid"
    uses_item_features = True
    similar_measures = ("dot", "cosine")  # cosine of the embeddings (biases out, as item_queries)
    defaults: ClassVar[dict[str, Any]] = {
        "no_components": 48, "epochs": 20, "loss": "warp", "learning_rate": 0.05, "random_state": 42,
        "item_alpha": 0.0, "user_alpha": 0.0, "max_sampled": 10, "num_threads": 0,
    }
    param_spec = HYBRID

    def __init__(self, **params: Any) -> None:
        unknown = set(params) - set(self.defaults)
        if unknown:
            raise ValueError(f"HybridModel: unknown parameter(s) {sorted(unknown)} (known: {sorted(self.defaults)})")
        super().__init__(**params)
        self._user: np.ndarray | None = None        # [n_users, d + 2]
        self._item: np.ndarray | None = None        # [n_items, d + 2]
        self._meta_emb: np.ndarray | None = None    # [n_meta_features, d]
        self._meta_bias: np.ndarray | None = None   # [n_meta_features]

    def param(self, name: str) -> Any:
        return self.params.get(name, self.defaults[name])

    def fit(self, interactions: sp.csr_matrix, item_features: sp.csr_matrix | None = None,
            user_features: sp.csr_matrix | None = None) -> HybridModel:
        from lightfm import LightFM

        m = sp.csr_matrix(interactions, dtype=np.float32)
        n_users, n_items = m.shape
        meta = sp.csr_matrix((n_items, 0), dtype=np.float32) if item_features is None else \
            sp.csr_matrix(item_features, dtype=np.float32)
        if meta.shape[0] != n_items:
            raise ValueError(f"HybridModel: item_features has {meta.shape[0]} rows, interactions {n_items} items")
        # Identity features only for items that were played: an unplayed item's identity embedding would
        # stay at its random initialisation and add noise to its metadata-based representation.
        warm = (np.bincount(m.indices, minlength=n_items) > 0).astype(np.float32)
        features = _row_normalise(sp.hstack([sp.diags(warm), meta], format="csr"))

        coo = m.tocoo()
        binary = sp.coo_matrix((np.ones_like(coo.data), (coo.row, coo.col)), shape=m.shape)
        mean = float(coo.data.mean()) if coo.nnz else 1.0
        weights = sp.coo_matrix((coo.data / mean, (coo.row, coo.col)), shape=m.shape)
        model = LightFM(no_components=int(self.param("no_components")), loss=str(self.param("loss")),
                        learning_rate=float(self.param("learning_rate")), item_alpha=float(self.param("item_alpha")),
                        user_alpha=float(self.param("user_alpha")), max_sampled=int(self.param("max_sampled")),
                        random_state=np.random.RandomState(int(self.param("random_state"))))
        with single_threaded_blas():
            try:
                model.fit(binary, item_features=features, sample_weight=weights, epochs=int(self.param("epochs")),
                          num_threads=fit_threads(self.param("num_threads")))
            except ValueError as exc:  # LightFM's "Not all estimated parameters are finite": name model and counts
                if "finite" not in str(exc):
                    raise
                from skyrec.models import representations as reps

                reps.check_finite(f"HybridModel (model {self.name!r})",
                                  {k: getattr(model, k) for k in ("user_embeddings", "item_embeddings", "user_biases",
                                                                  "item_biases")}, hint=reps.DIVERGED)
                # finite, yet LightFM's check (a sum per array) overflowed: values that large diverged as well
                raise reps.NonFiniteError(f"HybridModel (model {self.name!r}): {exc}") from None
        ub, ue = model.get_user_representations()
        ib, ie = model.get_item_representations(features)
        self._user = np.hstack([ue, ub[:, None], np.ones((n_users, 1))]).astype(np.float32)
        self._item = np.hstack([ie, np.ones((n_items, 1)), ib[:, None]]).astype(np.float32)
        self._meta_emb = np.ascontiguousarray(model.item_embeddings[n_items:], dtype=np.float32)
        self._meta_bias = np.ascontiguousarray(model.item_biases[n_items:], dtype=np.float32)
        return self

    @classmethod
    def item_queries(cls, item_factors: np.ndarray, items: np.ndarray) -> np.ndarray:
        """``V' = [v, 1, b_i]``: the seed ``[v_i, 0, 0]`` gives ``v_i @ v_j`` (embeddings alone, no biases)."""
        q = np.array(np.asarray(item_factors, dtype=np.float32)[np.asarray(items, dtype=np.int64)])
        q[:, -2:] = 0.0
        return q

    def _check(self) -> None:
        if self._user is None:
            raise RuntimeError("HybridModel: call fit() or load() first")

    def user_representations(self) -> np.ndarray:
        self._check()
        return self._user  # type: ignore[return-value]

    def item_representations(self, item_features: sp.csr_matrix | None = None) -> np.ndarray:
        """Training items' representations; with ``item_features`` (metadata rows in the training feature
        space, no identity), representations of those items from their metadata alone (cold start)."""
        self._check()
        if item_features is None:
            return self._item  # type: ignore[return-value]
        assert self._meta_emb is not None and self._meta_bias is not None
        if item_features.shape[1] != self._meta_emb.shape[0]:
            raise ValueError(f"HybridModel: item_features has {item_features.shape[1]} columns, the model was "
                             f"trained on {self._meta_emb.shape[0]} metadata features")
        f = _row_normalise(item_features)
        emb = np.asarray(f @ self._meta_emb, dtype=np.float32)
        bias = np.asarray(f @ self._meta_bias, dtype=np.float32).reshape(-1, 1)
        return np.hstack([emb, np.ones_like(bias), bias]).astype(np.float32)

    def state(self) -> dict[str, np.ndarray]:
        self._check()
        return {"user_repr": self._user, "item_repr": self._item,  # type: ignore[dict-item]
                "meta_embeddings": self._meta_emb, "meta_biases": self._meta_bias}  # type: ignore[dict-item]

    def restore(self, arrays: dict[str, np.ndarray]) -> None:
        self._user = np.asarray(arrays["user_repr"], dtype=np.float32)
        self._item = np.asarray(arrays["item_repr"], dtype=np.float32)
        self._meta_emb = np.asarray(arrays["meta_embeddings"], dtype=np.float32)
        self._meta_bias = np.asarray(arrays["meta_biases"], dtype=np.float32)
