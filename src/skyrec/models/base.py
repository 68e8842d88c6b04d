"""The model contract. A new model is a subclass plus a ``models:`` entry in config, nothing else.

Scoring everywhere (evaluation, precompute, serving) is a dot product: ``score(u, i) = U[u] @ V[i]``,
with ``U = user_representations()`` and ``V = item_representations()``. Models with biases fold them into
an extra column. Models that are not low-rank (EASE, item-kNN: ``score(u, .) = x_u @ B``) are the same
product with ``d = n_items``: their ``U`` is the sparse CSR of interaction rows and ``V = B.T`` is dense
(``skyrec.models.representations``, whose functions every scorer uses). Artefacts are saved with
``np.savez`` + JSON and loaded with ``allow_pickle=False``.

Item-to-item scoring ("more like this") is the same product with the *seed item* on the user side:
``sim(i, .) = Q[i] @ V.T`` with ``Q = item_queries(V, items)``, the representation of "a listener who played
only item i". Each model says what that is from its item representations alone (so precompute needs no
second copy of the model): factor models the seed's own factors (``V[i] @ V[j]``, biases left out), EASE
its weight row ``B[i, :]`` and item-kNN its neighbour row ``S[i, :]`` (a one-hot seed, since ``V = B.T``),
popularity the popularity of ``j``. The kernel, the rules and the publication then treat seeds like users.
"""

from __future__ import annotations

import io
import json
from abc import ABC, abstractmethod
from collections.abc import Mapping
from pathlib import Path
from typing import Any, ClassVar

import numpy as np
import scipy.sparse as sp

from skyrec.models.params import Param, check_params


class Recommender(ABC):
    #: short name used in artefacts (e.g. "als")
    name: ClassVar[str] = "base"
    #: True when the model uses item features (and can score items with no interactions)
    uses_item_features: ClassVar[bool] = False
    #: True when ``fit`` accepts ``item_context`` (``skyrec.models.series.ItemContext``: each item's brand and
    #: release time, for the item columns it is fit on); ``fit_on`` passes it when the dataset has one
    uses_item_context: ClassVar[bool] = False
    #: the rule of each parameter (``skyrec.models.params``), checked when the model is built; the package's
    #: models list theirs in ``params.SPECS`` too, so the configuration checks them when it loads
    param_spec: ClassVar[Mapping[str, Param]] = {}

    def __init__(self, **params: Any) -> None:
        #: as given, each value normalised by its rule (``param_spec``): a refused one is a ``ParamError``
        self.params = check_params(type(self).__name__, self.name, self.param_spec, params)

    @abstractmethod
    def fit(self, interactions: sp.csr_matrix, item_features: sp.csr_matrix | None = None,
            user_features: sp.csr_matrix | None = None) -> Recommender:
        """Fit on a users x items matrix of (weighted) interactions."""

    @abstractmethod
    def user_representations(self) -> np.ndarray | sp.csr_matrix:
        """float32 [n_users, d]: dense, or a CSR for models whose ``d`` is the item count."""

    @abstractmethod
    def item_representations(self, item_features: sp.csr_matrix | None = None) -> Any:
        """float32 [n_items, d], dense or CSR (``skyrec.models.representations``); with ``item_features``,
        representations for those items (cold start)."""

    def recommend(self, user_rows: np.ndarray, k: int, exclude: sp.csr_matrix | None = None) -> tuple[np.ndarray, np.ndarray]:
        """Top-k item indices and scores for a batch of user rows (exact; excluded items never returned)."""
        from skyrec.models.representations import scores as product

        scores = product(self.user_representations()[user_rows], self.item_representations())
        if exclude is not None:
            ex = exclude[user_rows].tocoo()
            scores[ex.row, ex.col] = -np.inf
        return _top(scores, k)

    #: what "more like this" may measure for this model (``item_targets``): ``dot`` always; ``cosine`` for
    #: low-rank factor models
    similar_measures: ClassVar[tuple[str, ...]] = ("dot",)

    @classmethod
    def item_queries(cls, item_factors: Any, items: np.ndarray) -> np.ndarray | sp.csr_matrix:
        """The seed side of item-to-item scoring: one row per seed in ``items`` (model item indices), in the
        user space, so that ``scores(item_queries(V, items), V)[r, j]`` is how much item ``j`` is like item
        ``items[r]``. A classmethod on the item representations ``V = item_representations()`` only: precompute
        calls it on a model artefact's item factors without loading the model's own state.

        Default (factor models): the seed's own factors, ``sim(i, j) = V[i] @ V[j]``."""
        return np.ascontiguousarray(np.asarray(item_factors, dtype=np.float32)[np.asarray(items, dtype=np.int64)])

    @classmethod
    def item_targets(cls, item_factors: Any, measure: str = "dot") -> Any:
        """The candidate side of item-to-item scoring under ``measure`` (``precompute.similar_measure``):
        ``dot``: ``V`` itself (``sim(i, j) = item_queries(V, [i]) @ V[j]``); ``cosine`` (models listing it in
        ``similar_measures``): every item's own seed row scaled to unit length, ``T``, with the seeds' rows
        ``T[items]`` as queries, so ``sim(i, j)`` is the cosine of the two items' seed rows -- what a dot
        product gives popular items (long vectors) no longer counts. An all-zero row stays zero."""
        if measure not in cls.similar_measures:
            raise ValueError(f"{cls.__name__}: similar_measure {measure!r} is not one of {cls.similar_measures}")
        if measure == "dot":
            return item_factors
        rows = np.asarray(cls.item_queries(item_factors, np.arange(np.shape(item_factors)[0])), dtype=np.float32)
        norms = np.linalg.norm(rows, axis=1, keepdims=True)
        return np.ascontiguousarray(rows / np.where(norms > 0, norms, 1.0), dtype=np.float32)

    def similar_items(self, items: np.ndarray, k: int, exclude: sp.csr_matrix | None = None,
                      measure: str = "dot") -> tuple[np.ndarray, np.ndarray]:
        """Top-k most similar item indices and scores for each seed item (exact; the seed itself and the
        items of ``exclude``'s rows, one row per seed, are never returned). Ties by item index."""
        from skyrec.models.representations import scores as product

        items = np.asarray(items, dtype=np.int64)
        V = self.item_representations()
        if measure == "dot":
            scores = product(type(self).item_queries(V, items), V)
        else:
            T = type(self).item_targets(V, measure)
            scores = product(T[items], T)
        scores[np.arange(items.size), items] = -np.inf
        if exclude is not None:
            ex = sp.csr_matrix(exclude).tocoo()
            scores[ex.row, ex.col] = -np.inf
        return _top(scores, k)

    # ---- persistence (no pickle) ---------------------------------------------------------------
    @abstractmethod
    def state(self) -> dict[str, np.ndarray]:
        """Arrays needed to restore the model."""

    @abstractmethod
    def restore(self, arrays: dict[str, np.ndarray]) -> None:
        """Inverse of ``state``."""

    def to_files(self) -> dict[str, bytes]:
        """The model as ``model.npz`` (arrays, ``np.savez``) and ``model.json`` (name, class, params) bytes."""
        buf = io.BytesIO()
        np.savez(buf, **self.state())  # type: ignore[arg-type]
        meta = {"name": self.name, "class": f"{type(self).__module__}:{type(self).__qualname__}",
                "params": self.params}
        return {"model.npz": buf.getvalue(),
                "model.json": json.dumps(meta, indent=1, sort_keys=True, default=str).encode()}

    @classmethod
    def from_files(cls, files: dict[str, bytes]) -> Recommender:
        """Inverse of ``to_files`` for this class (arrays loaded with ``allow_pickle=False``). A ``model.npz``
        holding NaN or +-inf (a hand-edited file; training never saves one) is refused with
        ``representations.NonFiniteError`` naming the file, each array and how many values."""
        from skyrec.models.representations import check_finite

        meta = json.loads(files["model.json"])
        model = cls(**meta["params"])
        with np.load(io.BytesIO(files["model.npz"]), allow_pickle=False) as npz:
            arrays = {k: npz[k] for k in npz.files}
        check_finite("model.npz", {k: v for k, v in arrays.items() if v.dtype.kind == "f"},
                     hint="refusing to load a model that would rank items on NaN")
        model.restore(arrays)
        return model

    def save(self, folder: str | Path) -> list[str]:
        folder = Path(folder)
        folder.mkdir(parents=True, exist_ok=True)
        for name, data in self.to_files().items():
            (folder / name).write_bytes(data)
        return ["model.npz", "model.json"]

    @classmethod
    def load(cls, folder: str | Path) -> Recommender:
        from skyrec.models.representations import NonFiniteError

        folder = Path(folder)
        try:
            return cls.from_files({n: (folder / n).read_bytes() for n in ("model.npz", "model.json")})
        except NonFiniteError as exc:  # name the folder the file is in
            raise NonFiniteError(f"{folder}/{exc}") from None


def _top(scores: np.ndarray, k: int) -> tuple[np.ndarray, np.ndarray]:
    """Per row, the ``k`` best column indices (score descending, index ascending on ties) and their scores. A
    score that is not finite (NaN, +inf) is not recommendable: it ranks as an excluded item (-inf), as in the
    kernel (``skyrec.scoring.topk``) and the evaluation (``skyrec.evaluation.metrics.top_k``)."""
    k = min(k, scores.shape[1])
    if scores.size and not np.isfinite(scores.max()):  # NaN propagates through max, +inf is the max
        scores = np.where(np.isnan(scores) | (scores == np.inf), -np.inf, scores)
    part = np.argpartition(-scores, k - 1, axis=1)[:, :k]
    part_scores = np.take_along_axis(scores, part, axis=1)
    order = np.lexsort((part, -part_scores), axis=1)
    idx = np.take_along_axis(part, order, axis=1)
    return idx, np.take_along_axis(scores, idx, axis=1)
