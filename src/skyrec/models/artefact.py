"""The model artefact: what training commits and what precompute/evaluation/serving read.

A committed ``model`` output holds (all loaded without pickle)::

    factors.npz      user_factors float32 [n_users, d], item_factors float32 [n_items, d]
                     (score = user_factors @ item_factors.T; biases folded into a column). Models whose
                     d is the item count (EASE, item-kNN) store the user side sparse, as
                     user_factors_csr_{data,indices,indptr,shape}, and item-kNN its item side too
                     (item_factors_csr_*; ``skyrec.models.representations``)
    users.parquet    user_id (row i <-> user_factors[i])
    items.parquet    item_id (row j <-> item_factors[j]); includes catalogue items with no plays when the
                     model scores from item features (cold-start items)
    seen.npz         CSR users x items of everything each user played in the activity snapshot
                     (data, indices, indptr, shape) -- precompute excludes these
    model.npz/json   the model's own state (``Recommender.save``)
    evaluation.json  offline metrics, when given at save time. The train_model DAG commits its evaluation as
                     a separate output (dataset ``evaluation``) because a committed output is never
                     modified; the publish step copies the headline figures into the model pointer.

The manifest ``meta`` carries: model, version, model_version ("<version>.<run_key>"), factors (d),
n_users, n_items, dataset (path of the training dataset used), activity_snapshot (path).
"""

from __future__ import annotations

import io
import json
import zipfile
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import scipy.sparse as sp

from skyrec.models import representations as reps
from skyrec.models.base import Recommender
from skyrec.storage import Lake, Manifest, Stage


def _npz_bytes(**arrays: np.ndarray) -> bytes:
    buf = io.BytesIO()
    np.savez(buf, **arrays)  # type: ignore[arg-type]
    return buf.getvalue()


def csr_to_arrays(m: sp.csr_matrix) -> dict[str, np.ndarray]:
    m = m.tocsr()
    return {"data": m.data, "indices": m.indices, "indptr": m.indptr, "shape": np.asarray(m.shape, dtype=np.int64)}


def csr_from_arrays(a: dict[str, np.ndarray]) -> sp.csr_matrix:
    return sp.csr_matrix((a["data"], a["indices"], a["indptr"]), shape=tuple(int(x) for x in a["shape"]))


def write_ids(stage: Stage, name: str, column: str, ids: np.ndarray) -> None:
    table = pa.table({column: pa.array([str(x) for x in ids], pa.string())})
    with stage.open(name, "wb", rows=len(ids)) as fh:
        pq.write_table(table, fh)


def read_ids(lake: Lake, manifest: Manifest, name: str, column: str) -> np.ndarray:
    with lake.open(manifest, name) as fh:
        return pq.read_table(fh, columns=[column]).column(column).to_numpy(zero_copy_only=False).astype(object)


def write_npz(stage: Stage, name: str, rows: Any = None, **arrays: Any) -> None:
    """``rows`` (int or None) is recorded in the manifest; every other keyword is an array."""
    with stage.open(name, "wb", rows=rows) as fh:
        fh.write(_npz_bytes(**arrays))


def read_npz(lake: Lake, manifest: Manifest, name: str) -> dict[str, np.ndarray]:
    with lake.open(manifest, name) as fh:
        data = fh.read()
    with np.load(io.BytesIO(data), allow_pickle=False) as npz:
        return {k: npz[k] for k in npz.files}


def npz_shapes(lake: Lake, manifest: Manifest, name: str) -> dict[str, tuple[int, ...]]:
    """Array shapes in an .npz of a committed output, reading only the zip directory and each array header."""
    shapes = {}
    with lake.open(manifest, name) as fh, zipfile.ZipFile(fh) as zf:
        for info in zf.infolist():
            with zf.open(info) as member:
                fmt = np.lib.format
                version = fmt.read_magic(member)
                reader = fmt.read_array_header_1_0 if version == (1, 0) else fmt.read_array_header_2_0
                shape, _, _ = reader(member)
                shapes[info.filename.removesuffix(".npy")] = shape
    return shapes


def npz_arrays(lake: Lake, manifest: Manifest, name: str, keys: tuple[str, ...]) -> dict[str, np.ndarray]:
    """Only ``keys`` of an .npz of a committed output (the others are not read); KeyError for a missing one."""
    with lake.open(manifest, name) as fh, np.load(fh, allow_pickle=False) as npz:
        return {k: npz[k] for k in keys}


@dataclass
class ModelArtefact:
    user_ids: np.ndarray
    item_ids: np.ndarray
    user_factors: reps.Representation  # dense, or CSR for the d = n_items models
    item_factors: reps.Representation  # dense, or CSR (item-kNN)
    seen: sp.csr_matrix
    meta: dict[str, Any] = field(default_factory=dict)
    evaluation: dict[str, Any] = field(default_factory=dict)
    path: str = ""

    @property
    def model_version(self) -> str:
        return str(self.meta.get("model_version", ""))

    def validate(self) -> None:
        """Post-condition: shapes agree, factors are finite float32 and cannot score +-inf (a ``ValueError``
        naming ``factors.npz``; ``reps.NonFiniteError`` with the counts for non-finite values)."""
        nu, ni = len(self.user_ids), len(self.item_ids)
        if self.user_factors.shape[0] != nu or self.item_factors.shape[0] != ni:
            raise ValueError(f"{self.path}: factors {self.user_factors.shape}/{self.item_factors.shape} "
                             f"do not match ids ({nu} users, {ni} items)")
        if self.user_factors.shape[1] != self.item_factors.shape[1]:
            raise ValueError(f"{self.path}: user and item factor dimensions differ")
        if self.seen.shape != (nu, ni):
            raise ValueError(f"{self.path}: seen matrix {self.seen.shape} != ({nu}, {ni})")
        where = f"{self.path}/factors.npz" if self.path else "factors.npz"
        for name, arr in (("user_factors", self.user_factors), ("item_factors", self.item_factors)):
            if arr.dtype != np.float32:  # dense or CSR
                raise ValueError(f"{where}: {name} must be float32, not {arr.dtype}")
        reps.check_finite(where, {"user_factors": self.user_factors, "item_factors": self.item_factors},
                          hint="refusing to load a model that would rank items on NaN")
        reps.check_scores_fit(where, self.user_factors, self.item_factors,
                              hint="refusing to load a model whose scores would be +-inf")


def save_artefact(stage: Stage, *, user_ids: np.ndarray, item_ids: np.ndarray, user_factors: reps.Representation,
                  item_factors: reps.Representation, seen: sp.csr_matrix,
                  evaluation: dict[str, Any] | None = None) -> None:
    """Write the artefact files into a stage (the caller commits with the meta described above). Factors with
    NaN or +-inf are refused (``reps.NonFiniteError``): no artefact that would rank items on NaN is written."""
    reps.check_finite("factors.npz", {"user_factors": user_factors, "item_factors": item_factors},
                      hint="refusing to save a model that would rank items on NaN")
    write_npz(stage, "factors.npz", rows=len(user_ids), **reps.to_arrays("user_factors", user_factors),
              **reps.to_arrays("item_factors", item_factors))
    write_ids(stage, "users.parquet", "user_id", user_ids)
    write_ids(stage, "items.parquet", "item_id", item_ids)
    write_npz(stage, "seen.npz", **csr_to_arrays(seen))
    if evaluation is not None:
        with stage.open("evaluation.json", "wb") as fh:
            fh.write(json.dumps(evaluation, indent=1, sort_keys=True, default=float).encode())


def save_model(stage: Stage, model: Recommender) -> None:
    """Write the model's own state (``model.npz`` + ``model.json``) into a stage."""
    for name, data in model.to_files().items():
        with stage.open(name, "wb") as fh:
            fh.write(data)


def load_model(lake: Lake, manifest: Manifest, allowed: set[str] | None = None) -> Recommender:
    """Restore the fitted model of a committed model output (no pickle; see ``recommender_from_files``)."""
    from skyrec.models import recommender_from_files

    files = {}
    for name in ("model.npz", "model.json"):
        with lake.open(manifest, name) as fh:
            files[name] = fh.read()
    try:
        return recommender_from_files(files, allowed)
    except reps.NonFiniteError as exc:  # name the output the file is in
        raise reps.NonFiniteError(f"{manifest.path}/{exc}") from None


def load_artefact(lake: Lake, manifest: Manifest) -> ModelArtefact:
    factors = read_npz(lake, manifest, "factors.npz")
    evaluation: dict[str, Any] = {}
    try:
        with lake.open(manifest, "evaluation.json") as fh:
            evaluation = json.loads(fh.read())
    except KeyError:
        pass
    art = ModelArtefact(
        user_ids=read_ids(lake, manifest, "users.parquet", "user_id"),
        item_ids=read_ids(lake, manifest, "items.parquet", "item_id"),
        user_factors=reps.from_arrays("user_factors", factors),
        item_factors=reps.from_arrays("item_factors", factors),
        seen=csr_from_arrays(read_npz(lake, manifest, "seen.npz")),
        meta=dict(manifest.meta),
        evaluation=evaluation or dict(manifest.meta.get("evaluation", {})),
        path=manifest.path,
    )
    art.validate()
    return art


def published_model_pointer(model: str, version: str) -> str:
    """Lake-relative path of the pointer naming the published model output for (model, version)."""
    return f"pointers/models/{model}/{version}.json"


def published_predictions_pointer(variant: str) -> str:
    return f"pointers/published/{variant}.json"


def load_published(lake: Lake, model: str, version: str) -> ModelArtefact | None:
    ptr = lake.read_pointer(published_model_pointer(model, version))
    if not ptr:
        return None
    art = load_artefact(lake, lake.require(ptr["path"]))
    if not art.evaluation and ptr.get("evaluation"):
        art.evaluation = dict(ptr["evaluation"])  # the headline figures the publish step recorded
    return art
