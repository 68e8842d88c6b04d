"""The model contract. A new model is a subclass plus a ``models:`` entry in config, nothing else.

Scoring everywhere (evaluation, precompute, serving) is a dot product: ``score(u, i) = U[u] @ V[i]``,
with ``U = user_representations()`` and ``V = item_representations()``. Models with biases fold them into
an extra column. Models that are not low-rank (EASE, item-kNN: ``score(u, .) = x_u @ B``) are the same
product with ``d = n_items``: their ``U`` is the sparse CSR of interaction rows and ``V = B.T`` is dense
(``skyrec.models.representations``, whose functions every scorer uses). Artefacts are saved with
``np.savez`` + JSON and loaded with ``allow_pickle=False``.
"""

from __future__ import annotations

import io
import json
from abc import ABC, abstractmethod
from pathlib import Path
from typing import Any, ClassVar

import numpy as np
import scipy.sparse as sp


class Recommender(ABC):
    #: short name used in artefacts (e.g. "als")
    name: ClassVar[str] = "base"
    #: True when the model uses item features (and can score items with no interactions)
    uses_item_features: ClassVar[bool] = False

    def __init__(self, **params: Any) -> None:
        self.params = dict(params)

    @abstractmethod
    def fit(self, interactions: sp.csr_matrix, item_features: sp.csr_matrix | None = None,
            user_features: sp.csr_matrix | None = None) -> Recommender:
        """Fit on a users x items matrix of (weighted) interactions."""

    @abstractmethod
    def user_representations(self) -> np.ndarray | sp.csr_matrix:
        """float32 [n_users, d]: dense, or a CSR for models whose ``d`` is the item count."""

    @abstractmethod
    def item_representations(self, item_features: sp.csr_matrix | None = None) -> np.ndarray:
        """float32 [n_items, d]; with ``item_features``, representations for those items (cold start)."""

    def recommend(self, user_rows: np.ndarray, k: int, exclude: sp.csr_matrix | None = None) -> tuple[np.ndarray, np.ndarray]:
        """Top-k item indices and scores for a batch of user rows (exact; excluded items never returned)."""
        from skyrec.models.representations import scores as product

        scores = product(self.user_representations()[user_rows], self.item_representations())
        if exclude is not None:
            ex = exclude[user_rows].tocoo()
            scores[ex.row, ex.col] = -np.inf
        k = min(k, scores.shape[1])
        part = np.argpartition(-scores, k - 1, axis=1)[:, :k]
        part_scores = np.take_along_axis(scores, part, axis=1)
        order = np.lexsort((part, -part_scores), axis=1)
        idx = np.take_along_axis(part, order, axis=1)
        return idx, np.take_along_axis(scores, idx, axis=1)

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
        """Inverse of ``to_files`` for this class (arrays loaded with ``allow_pickle=False``)."""
        meta = json.loads(files["model.json"])
        model = cls(**meta["params"])
        with np.load(io.BytesIO(files["model.npz"]), allow_pickle=False) as npz:
            model.restore({k: npz[k] for k in npz.files})
        return model

    def save(self, folder: str | Path) -> list[str]:
        folder = Path(folder)
        folder.mkdir(parents=True, exist_ok=True)
        for name, data in self.to_files().items():
            (folder / name).write_bytes(data)
        return ["model.npz", "model.json"]

    @classmethod
    def load(cls, folder: str | Path) -> Recommender:
        folder = Path(folder)
        return cls.from_files({n: (folder / n).read_bytes() for n in ("model.npz", "model.json")})
