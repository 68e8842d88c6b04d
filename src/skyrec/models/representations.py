"""Factor-like representations: a dense matrix, or a sparse one for models that are not low-rank.

The model contract scores ``score(u, i) = U[u] @ V[i]`` everywhere. For a factor model (ALS, BPR, LightFM,
popularity) ``U`` and ``V`` are dense float32 ``[n, d]`` with a small ``d``. A neighbourhood or closed-form
model is the same product with ``d = n_items``: EASE scores ``x_u @ B`` and item-kNN ``x_u @ S``, so its user
representation is the user's interaction row ``x_u`` -- a *sparse* float32 CSR ``[n_users, n_items]``
(dense it would be users x items) -- and its item representation ``V = B.T`` (resp. ``S.T``) stays dense.

Everything that scores (the kernel, offline evaluation, the business-rule figures) goes through the few
functions below, so a sparse user side costs one sparse-times-dense product per batch and nothing else in
the pipeline changes: one implementation of the rules, whatever the model.
"""

from __future__ import annotations

from typing import Any, TypeAlias

import numpy as np
import scipy.sparse as sp

#: what ``Recommender.user_representations`` may return (``item_representations`` is always dense)
Representation: TypeAlias = np.ndarray | sp.csr_matrix

_PARTS = ("data", "indices", "indptr", "shape")


def is_sparse(x: Any) -> bool:
    return bool(sp.issparse(x))


def as_float32(x: Any) -> Representation:
    """Dense: C-contiguous float32. Sparse: CSR float32 with sorted indices (canonical, comparable)."""
    if sp.issparse(x):
        return _csr32(x)
    return np.ascontiguousarray(x, dtype=np.float32)


def _csr32(x: Any) -> sp.csr_matrix:
    m = sp.csr_matrix(x, dtype=np.float32)
    m.sort_indices()
    return m


def rows(x: Representation, index: np.ndarray | slice) -> Representation:
    """Rows of a representation, keeping its kind."""
    return x[index]


def scores(user_rows: Representation, item: np.ndarray) -> np.ndarray:
    """``user_rows @ item.T`` as a dense float32 [b, n_items] array (the scoring product, any kind)."""
    item_t = np.asarray(item, dtype=np.float32).T
    if sp.issparse(user_rows):
        return np.asarray(sp.csr_matrix(user_rows, dtype=np.float32) @ item_t, dtype=np.float32)
    return np.asarray(user_rows, dtype=np.float32) @ item_t


def product_into(user_rows: Representation, item_t: np.ndarray, out: np.ndarray) -> np.ndarray:
    """``user_rows @ item_t`` written into ``out`` (float32 [b, c]); ``item_t`` is ``V.T`` (d x c)."""
    if sp.issparse(user_rows):
        out[...] = user_rows @ item_t
        return out
    return np.matmul(user_rows, item_t, out=out)


def one_hot(rows: np.ndarray, n: int) -> sp.csr_matrix:
    """float32 CSR ``[len(rows), n]`` with a 1 at column ``rows[r]`` of row ``r``: the interaction row of a
    listener who played only that item (the seed side of item-to-item scoring for ``d = n_items`` models)."""
    rows = np.asarray(rows, dtype=np.int64)
    return sp.csr_matrix((np.ones(rows.size, np.float32), rows.astype(np.int32), np.arange(rows.size + 1)),
                         shape=(rows.size, int(n)))


def all_finite(x: Representation) -> bool:
    values = x.data if sp.issparse(x) else x
    return bool(np.isfinite(values).all())


def equal(a: Representation, b: Representation) -> bool:
    """Exactly the same representation (kind, shape and values)."""
    if sp.issparse(a) or sp.issparse(b):
        if not (sp.issparse(a) and sp.issparse(b)) or a.shape != b.shape:
            return False
        ca, cb = _csr32(a), _csr32(b)
        return bool(np.array_equal(ca.indptr, cb.indptr) and np.array_equal(ca.indices, cb.indices)
                    and np.array_equal(ca.data, cb.data))
    return bool(np.array_equal(a, b))


def to_arrays(name: str, x: Representation) -> dict[str, np.ndarray]:
    """Arrays for ``np.savez``: ``{name: x}`` when dense, ``{name}_csr_{data,indices,indptr,shape}`` when sparse."""
    if sp.issparse(x):
        m = _csr32(x)
        return {f"{name}_csr_data": np.asarray(m.data), f"{name}_csr_indices": m.indices, f"{name}_csr_indptr": m.indptr,
                f"{name}_csr_shape": np.asarray(m.shape, dtype=np.int64)}
    return {name: np.ascontiguousarray(x, dtype=np.float32)}


def from_arrays(name: str, arrays: dict[str, np.ndarray]) -> Representation:
    """Inverse of ``to_arrays`` (KeyError when ``name`` is in neither form)."""
    if name in arrays:
        return arrays[name]
    parts = [arrays[f"{name}_csr_{p}"] for p in _PARTS]
    return sp.csr_matrix((parts[0], parts[1], parts[2]), shape=tuple(int(v) for v in parts[3]))


def stored_shape(name: str, shapes: dict[str, tuple[int, ...]], arrays: dict[str, np.ndarray] | None = None
                 ) -> tuple[int, ...] | None:
    """The shape of ``name`` from an .npz's array shapes (dense form) or its stored ``_csr_shape`` array."""
    if name in shapes:
        return tuple(shapes[name])
    if arrays is not None and f"{name}_csr_shape" in arrays:
        return tuple(int(v) for v in arrays[f"{name}_csr_shape"])
    return None


def square_bytes(n_items: int, copies: int = 1, itemsize: int = 4) -> int:
    """Bytes of ``copies`` dense items x items matrices."""
    return int(n_items) * int(n_items) * int(itemsize) * int(copies)


class MemoryGuardError(ValueError):
    """A model refuses a problem whose items x items matrices it cannot hold within its configured limit."""


def guard_items(model: str, n_items: int, *, limit_gb: float, copies: int, key: str, what: str) -> int:
    """Refuse, before allocating anything, ``n_items`` whose dense items x items matrices exceed ``limit_gb``.

    Returns the estimated bytes. The error names the estimate, the limit, the largest item count the limit
    holds and the config key that sets it."""
    need = square_bytes(n_items, copies)
    limit = float(limit_gb) * 1e9
    if need > limit:
        fits = int(np.sqrt(limit / (4 * copies)))
        raise MemoryGuardError(
            f"{model}: {n_items:,} items need ~{need / 1e9:.1f} GB for {what} ({copies} x {n_items:,}^2 float32), "
            f"above the limit of {float(limit_gb):g} GB ({key}); that limit holds at most {fits:,} items. Raise "
            f"{key} on a machine with the memory, or train on fewer items (a shorter activity snapshot, "
            f"ingest.activity.snapshot_interval_days)")
    return need
