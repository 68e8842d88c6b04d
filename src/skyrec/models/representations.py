"""Factor-like representations: a dense matrix, or a sparse one for models that are not low-rank.

The model contract scores ``score(u, i) = U[u] @ V[i]`` everywhere. For a factor model (ALS, BPR, LightFM,
popularity) ``U`` and ``V`` are dense float32 ``[n, d]`` with a small ``d``. A neighbourhood or closed-form
model is the same product with ``d = n_items``: EASE scores ``x_u @ B`` and item-kNN ``x_u @ S``, so its user
representation is the user's interaction row ``x_u`` -- a *sparse* float32 CSR ``[n_users, n_items]``
(dense it would be users x items). Its item representation is ``V = B.T`` (resp. ``S.T``): dense for EASE
(``B`` is dense by nature), sparse CSR for item-kNN (``S`` keeps ``neighbours`` entries per item, so ``V``
costs ``n_items x neighbours`` entries instead of ``n_items^2``: 200k items fit).

Everything that scores (the kernel, offline evaluation, the business-rule figures) goes through the few
functions below and ``skyrec.scoring.topk``, so a sparse side costs one sparse product per batch (the kernel
scores a sparse item side row by row from it) and nothing else in the pipeline changes: one implementation
of the rules, whatever the model.
"""

from __future__ import annotations

import math
from typing import Any, TypeAlias

import numpy as np
import scipy.sparse as sp

from skyrec.progress import format_bytes

#: what ``Recommender.user_representations`` / ``item_representations`` may return
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
    if type(x) is sp.csr_matrix and x.dtype == np.float32 and x.has_sorted_indices:
        return x  # already canonical: re-wrapping re-checks every index (~6 ms at 200k x 57 entries)
    m = sp.csr_matrix(x, dtype=np.float32)
    m.sort_indices()
    return m


def rows(x: Representation, index: np.ndarray | slice) -> Representation:
    """Rows of a representation, keeping its kind."""
    return x[index]


def _dense32(x: Any) -> np.ndarray:
    return np.asarray(x.toarray() if sp.issparse(x) else x, dtype=np.float32)


def scores(user_rows: Representation, item: Representation) -> np.ndarray:
    """``user_rows @ item.T`` as a dense float32 [b, n_items] array (the scoring product, any kinds)."""
    if sp.issparse(item):
        return _dense32(sp.csr_matrix(user_rows, dtype=np.float32) @ _csr32(item).T)
    item_t = np.asarray(item, dtype=np.float32).T
    if sp.issparse(user_rows):
        return np.asarray(sp.csr_matrix(user_rows, dtype=np.float32) @ item_t, dtype=np.float32)
    return np.asarray(user_rows, dtype=np.float32) @ item_t


def transposed(item: Representation) -> Representation:
    """``V.T`` (d x c) in the layout ``product_into`` wants: C-contiguous float32 (the GEMM's), or CSR."""
    if sp.issparse(item):
        return _csr32(sp.csr_matrix(item).T)
    return np.ascontiguousarray(np.asarray(item, dtype=np.float32).T)


def product_into(user_rows: Representation, item_t: Representation, out: np.ndarray) -> np.ndarray:
    """``user_rows @ item_t`` written into ``out`` (float32 [b, c]); ``item_t`` is ``transposed(V)`` (d x c).
    A sparse item side gives a sparse product: written as zeros plus its entries (no dense temporary)."""
    if sp.issparse(item_t):
        prod = sp.csr_matrix(sp.csr_matrix(user_rows, dtype=np.float32) @ item_t)
        prod.sum_duplicates()
        out.fill(0.0)
        rows = np.repeat(np.arange(prod.shape[0]), np.diff(prod.indptr))
        out[rows, prod.indices] = prod.data
        return out
    if sp.issparse(user_rows):
        out[...] = user_rows @ item_t
        return out
    return np.matmul(user_rows, item_t, out=out)


def expand_rows(x: Representation, rows: np.ndarray, n: int) -> Representation:
    """``x``'s rows placed at ``rows`` of an ``n``-row matrix of the same kind, zeros elsewhere."""
    rows = np.asarray(rows, dtype=np.int64)
    if sp.issparse(x):
        place = sp.csr_matrix((np.ones(rows.size, np.float32), (rows, np.arange(rows.size))), shape=(n, rows.size))
        return _csr32(place @ _csr32(x))
    full = np.zeros((n, x.shape[1]), np.float32)
    full[rows] = x
    return full


def zeros(n: int, d: int, like: Representation) -> Representation:
    """An ``n x d`` zero representation of ``like``'s kind (sparse zeros hold nothing)."""
    if sp.issparse(like):
        return sp.csr_matrix((n, d), dtype=np.float32)
    return np.zeros((n, d), dtype=np.float32)


def nbytes(x: Representation) -> int:
    """Bytes held: a CSR's three arrays, or a dense array's buffer."""
    if sp.issparse(x):
        m = sp.csr_matrix(x)
        return int(m.data.nbytes + m.indices.nbytes + m.indptr.nbytes)
    return int(np.asarray(x).nbytes)


def one_hot(rows: np.ndarray, n: int) -> sp.csr_matrix:
    """float32 CSR ``[len(rows), n]`` with a 1 at column ``rows[r]`` of row ``r``: the interaction row of a
    listener who played only that item (the seed side of item-to-item scoring for ``d = n_items`` models)."""
    rows = np.asarray(rows, dtype=np.int64)
    if rows.size and (rows.min() < 0 or rows.max() >= n):  # scipy would build an invalid matrix, not refuse
        raise ValueError(f"one_hot: item index {int(rows.max() if rows.max() >= n else rows.min())} outside the "
                         f"model's {int(n)} items (seeds index the model's own items, not a wider item space)")
    return sp.csr_matrix((np.ones(rows.size, np.float32), rows.astype(np.int32), np.arange(rows.size + 1)),
                         shape=(rows.size, int(n)))


def _values(x: Any) -> np.ndarray:
    return np.asarray(x.data if sp.issparse(x) else x)


def all_finite(x: Representation) -> bool:
    """No NaN and no +-inf among the values (a CSR's stored ones). Its minimum and maximum, not
    ``np.isfinite(x).all()``: NaN propagates through both, so two reductions say it without a boolean
    temporary the size of ``x`` (an EASE weight matrix is items^2)."""
    values = _values(x)
    if values.size == 0 or values.dtype.kind not in "fc":
        return True
    return bool(np.isfinite(values.min()) and np.isfinite(values.max()))


def nonfinite_counts(x: Representation, block: int = 1 << 22) -> dict[str, int]:
    """How many of ``x``'s values (a CSR's stored ones) are NaN, +inf and -inf, and how many there are in all,
    counted ``block`` values at a time (for the error message of a refused model: only computed then)."""
    values = _values(x).reshape(-1)
    out = {"values": int(values.size), "nan": 0, "+inf": 0, "-inf": 0}
    if values.dtype.kind not in "fc":
        return out
    for s in range(0, values.size, block):
        part = values[s:s + block]
        out["nan"] += int(np.count_nonzero(np.isnan(part)))
        out["+inf"] += int(np.count_nonzero(part == np.inf))
        out["-inf"] += int(np.count_nonzero(part == -np.inf))
    return out


class NonFiniteError(ValueError):
    """A model's values (factors, weights, biases) hold NaN or +-inf, or are so large that its scores overflow
    float32. Scoring such a model ranks items on NaN, so it is refused where it is made (training) and wherever
    it is read (the artefact's files); the message names the model or file, each array and how many values."""


#: what a refused fit says to do
DIVERGED = ("the fit diverged (or its input holds non-finite weights); it is refused, never saved: lower the "
            "learning rate, raise the regularization, or check the dataset's weights")


def describe_nonfinite(arrays: dict[str, Any]) -> str | None:
    """``None`` when every array of ``arrays`` (name -> dense or CSR) is finite, else what is not: per array
    with non-finite values, ``"user_factors: 12 of 3,840 values (NaN 10, +inf 2)"``."""
    parts = []
    for name, arr in arrays.items():
        if all_finite(arr):
            continue
        c = nonfinite_counts(arr)
        bad = c["nan"] + c["+inf"] + c["-inf"]
        kinds = ", ".join(f"{'NaN' if kind == 'nan' else kind} {c[kind]:,}" for kind in ("nan", "+inf", "-inf")
                          if c[kind])
        parts.append(f"{name}: {bad:,} of {c['values']:,} values ({kinds})")
    return "; ".join(parts) or None


def check_finite(owner: str, arrays: dict[str, Any], *, hint: str = "") -> None:
    """Raise ``NonFiniteError`` when an array of ``arrays`` holds NaN or +-inf: ``owner`` (the model or the
    file) is not finite, which arrays, how many values of each kind; then ``hint``."""
    what = describe_nonfinite(arrays)
    if what is not None:
        raise NonFiniteError(f"{owner}: non-finite values in {what}" + (f"; {hint}" if hint else ""))


#: the largest float32: a score beyond it is +-inf
FLOAT32_MAX = float(np.finfo(np.float32).max)


def _max_abs(x: Any) -> float:
    values = _values(x)
    if values.size == 0:
        return 0.0
    return max(abs(float(values.min())), abs(float(values.max())))


def score_bound(user: Representation, item: Representation) -> float:
    """An upper bound of ``|U[u] @ V[i]|`` over every pair, without scoring any: the largest L1 norm of a user
    row times the largest ``|V|`` value (Hoelder). A sparse user side's row norms are summed (its rows are the
    users' plays); a dense one's are bounded by ``d x max |U|``, so no temporary the size of ``U`` is made.
    Every partial sum of a float32 product stays below it too, so below ``FLOAT32_MAX`` no score overflows."""
    if sp.issparse(user):
        m = sp.csr_matrix(user)
        if m.nnz == 0:
            return 0.0
        data = m.data[: m.indptr[-1]]
        data = data if data.min() >= 0 else np.abs(data)  # interaction weights: no copy
        u = float(np.add.reduceat(data, m.indptr[:-1][np.diff(m.indptr) > 0], dtype=np.float64).max())
    else:
        u = float(np.shape(user)[1]) * _max_abs(user)
    return u * _max_abs(item)


def check_scores_fit(owner: str, user: Representation, item: Representation, *, hint: str = "") -> None:
    """Raise ``NonFiniteError`` when finite representations could still score +-inf (``score_bound`` above
    ``FLOAT32_MAX``): values that large come from a fit that diverged (or a hand-edited file)."""
    bound = score_bound(user, item)
    if not bound <= FLOAT32_MAX:
        raise NonFiniteError(f"{owner}: scores can overflow float32: |U[u] @ V[i]| is bounded only by {bound:.3g} "
                             f"(largest user-row L1 norm x largest |item value|), above {FLOAT32_MAX:.3g}"
                             + (f"; {hint}" if hint else ""))


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


def checked_limit_gb(model: str, name: str, value: Any) -> float:
    """A model's ``memory_limit_gb`` as a float > 0, else a ValueError naming the config key
    (``models.<name>.params.memory_limit_gb``) and the value given: a negative, zero, NaN or non-numeric limit
    would otherwise fail deep in a guard with an error that names neither."""
    try:
        limit = float("nan") if isinstance(value, bool) else float(value)
    except (TypeError, ValueError):
        limit = float("nan")
    if not (limit > 0 and math.isfinite(limit)):
        raise ValueError(f"{model}: models.{name}.params.memory_limit_gb must be a finite number > 0 (GB), "
                         f"got {value!r}")
    return limit


def guard_items(model: str, n_items: int, *, limit_gb: float, copies: int, key: str, what: str) -> int:
    """Refuse, before allocating anything, ``n_items`` whose dense items x items matrices exceed ``limit_gb``.

    Returns the estimated bytes. The error names the estimate, the limit, the largest item count the limit
    holds and the config key that sets it."""
    need = square_bytes(n_items, copies)
    limit = float(limit_gb) * 1e9
    if need > limit:
        fits = int(np.sqrt(limit / (4 * copies)))
        raise MemoryGuardError(
            f"{model}: {n_items:,} items need ~{format_bytes(need)} for {what} ({copies} x {n_items:,}^2 float32), "
            f"above the limit of {float(limit_gb):g} GB ({key}); that limit holds at most {fits:,} items. Raise "
            f"{key} on a machine with the memory, or train on fewer items (a shorter activity snapshot, "
            f"ingest.activity.snapshot_interval_days)")
    return need
