"""A model whose values are not finite is refused where it is made (the fit) and wherever it is read (the
artefact's files), naming the model or file, each array and how many values; it is never published."""

from __future__ import annotations

import datetime as dt
import io
import warnings
from pathlib import Path
from typing import Any, ClassVar

import numpy as np
import pytest
import scipy.sparse as sp

from skyrec.evaluation.synthetic import planted_matrix, seed_lake
from skyrec.jobs.base import EXIT_BAD_INPUT, RunInfo, execute
from skyrec.models import representations as reps
from skyrec.models._factors import FactorModel
from skyrec.models.als import ALSModel
from skyrec.models.artefact import load_artefact, load_model, published_model_pointer, save_artefact, save_model
from skyrec.models.bpr import BPRModel
from skyrec.models.hybrid import HybridModel
from skyrec.models.knn import ItemKNNModel
from skyrec.models.representations import NonFiniteError
from skyrec.models.training import fit_on
from skyrec.storage import Lake, Producer


class Given(FactorModel):
    """A model whose fit returns the factors (and extra saved state) it was built with."""

    name = "given"
    defaults: ClassVar[dict[str, Any]] = {}
    U = np.ones((3, 2), np.float32)
    V = np.ones((4, 2), np.float32)
    extra: ClassVar[dict[str, np.ndarray]] = {}

    def fit(self, interactions, item_features=None, user_features=None) -> Given:
        self._set_factors(self.U, self.V)
        return self

    def state(self) -> dict[str, np.ndarray]:
        return {**super().state(), **self.extra}


def given(U: np.ndarray, V: np.ndarray, extra: dict[str, np.ndarray] | None = None) -> Given:
    cls = type("Given", (Given,), {"U": U, "V": V, "extra": extra or {}})
    return cls()


def _matrix(n_users: int = 3, n_items: int = 4) -> sp.csr_matrix:
    return sp.csr_matrix(np.ones((n_users, n_items), np.float32))


@pytest.fixture(scope="module")
def plays() -> sp.csr_matrix:
    m, _, _ = planted_matrix(120, 80, 4, plays_per_user=10, purity=0.9, seed=3)
    return m


# ---- the fit ------------------------------------------------------------------------------------------

def test_fit_on_names_the_model_each_array_and_how_many_values_are_not_finite() -> None:
    U = np.ones((3, 2), np.float32)
    U[0, 0], U[1, 1] = np.nan, np.inf
    V = np.ones((4, 2), np.float32)
    V[2, 0] = -np.inf
    with pytest.raises(NonFiniteError) as err:
        fit_on(given(U, V), _matrix(), None)
    msg = str(err.value)
    assert "(model 'given')" in msg
    assert "user representations: 2 of 6 values (NaN 1, +inf 1)" in msg
    assert "item representations: 1 of 8 values (-inf 1)" in msg
    assert "diverged" in msg


def test_fit_on_checks_the_saved_state_beyond_the_representations() -> None:
    """LightFM's metadata embeddings, item-kNN's neighbours: arrays model.npz holds besides U and V."""
    extra = {"meta_embeddings": np.array([[1.0, np.nan, np.nan]], np.float32), "counts": np.arange(3)}
    with pytest.raises(NonFiniteError, match=r"meta_embeddings: 2 of 3 values \(NaN 2\)"):
        fit_on(given(np.ones((3, 2), np.float32), np.ones((4, 2), np.float32), extra), _matrix(), None)


def test_fit_on_refuses_finite_factors_whose_scores_overflow_float32() -> None:
    big = np.full((3, 2), 1e20, np.float32)
    with pytest.raises(NonFiniteError, match="scores can overflow float32"):
        fit_on(given(big, np.full((4, 2), 1e20, np.float32)), _matrix(), None)
    fit_on(given(np.full((3, 2), 1e15, np.float32), np.full((4, 2), 1e15, np.float32)), _matrix(), None)  # 4e30: fine


@pytest.mark.parametrize("cls, params", [
    (ALSModel, {"factors": 4, "iterations": 2, "alpha": 1e30, "num_threads": 1}),
    (BPRModel, {"factors": 4, "iterations": 5, "learning_rate": 1e30, "num_threads": 1}),
])
def test_a_diverged_implicit_fit_is_refused_with_counts_not_implicits_own_error(cls, params, plays) -> None:
    """implicit raises ``ModelFitError("NaN encountered in factors")``, not a ValueError: the train job
    reported it as a retryable error naming neither the model nor how much, and it ended a search."""
    with pytest.raises(NonFiniteError) as err:
        fit_on(cls(**params), plays, None)
    assert f"{cls.__name__} (model '{cls.name}')" in str(err.value)
    assert "user_factors: " in str(err.value) and "NaN" in str(err.value)


def test_a_diverged_hybrid_fit_is_refused_with_counts(plays) -> None:
    features = sp.csr_matrix(np.eye(80, 5, dtype=np.float32))
    with warnings.catch_warnings(), pytest.raises(NonFiniteError, match=r"HybridModel \(model 'hybrid'\): non-finite "
                                                                     r"values in user_embeddings"):
        warnings.simplefilter("ignore")
        fit_on(HybridModel(no_components=4, epochs=3, learning_rate=1e30, num_threads=1), plays, features)


def test_an_item_knn_whose_item_norms_underflow_is_refused(plays) -> None:
    """Cosine of item columns whose norm underflows to 0 divides by zero: +inf neighbour weights."""
    tiny = plays.copy()
    tiny.data[:] = 1e-30
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        with pytest.raises(NonFiniteError, match=r"ItemKNNModel \(model 'knn'\).*\+inf"):
            fit_on(ItemKNNModel(similarity="cosine", series_weight=0.0, num_threads=1), tiny, None)


def test_recommend_never_returns_a_nan_or_inf_item_first() -> None:
    m = given(np.ones((1, 1), np.float32), np.array([[np.nan], [1.0], [np.inf], [2.0]], np.float32))
    m.fit(_matrix(1, 4))
    idx, scores = m.recommend(np.array([0]), 2)
    assert idx[0].tolist() == [3, 1] and scores[0].tolist() == [2.0, 1.0]


# ---- the artefact files ------------------------------------------------------------------------------

def _als() -> ALSModel:
    """An ALS model with small finite factors (3 users, 4 items), as if fit."""
    model = ALSModel(factors=2)
    model._set_factors(np.ones((3, 2), np.float32), np.ones((4, 2), np.float32))
    return model


def _committed(tmp_path: Path) -> tuple[Lake, Any]:
    """A small committed model output of a finite model, as the train job writes it."""
    lake = Lake(str(tmp_path / "lake"))
    model = _als()
    stage = lake.stage("model", "models/als/v1/run=1", Producer(task_id="train"))
    with stage:
        save_artefact(stage, user_ids=np.array(["u0", "u1", "u2"]), item_ids=np.array(["a", "b", "c", "d"]),
                      user_factors=model.user_representations(), item_factors=model.item_representations(),
                      seen=sp.csr_matrix((3, 4), dtype=np.float32))
        save_model(stage, model)
        manifest = stage.commit({"model": "als"})
    return lake, manifest


def _edit(lake: Lake, manifest: Any, name: str, key: str, value: float) -> None:
    path = lake.file_url(manifest, name)
    with np.load(path) as z:
        arrays = {k: z[k] for k in z.files}
    arrays[key][1, 0] = value
    buf = io.BytesIO()
    np.savez(buf, **arrays)
    Path(path).write_bytes(buf.getvalue())


def test_saving_an_artefact_with_non_finite_factors_is_refused(tmp_path: Path) -> None:
    lake = Lake(str(tmp_path / "lake"))
    stage = lake.stage("model", "models/given/v1/run=1", Producer(task_id="train"))
    V = np.ones((4, 2), np.float32)
    V[0, 0] = np.nan
    with stage, pytest.raises(NonFiniteError, match=r"factors.npz: non-finite values in item_factors: 1 of 8"):
        save_artefact(stage, user_ids=np.array(["u0"]), item_ids=np.array(list("abcd")),
                      user_factors=np.ones((1, 2), np.float32), item_factors=V, seen=sp.csr_matrix((1, 4)))


def test_loading_factors_npz_with_nan_is_refused_naming_the_file(tmp_path: Path) -> None:
    lake, manifest = _committed(tmp_path)
    assert load_artefact(lake, manifest).item_factors.shape == (4, 2)
    _edit(lake, manifest, "factors.npz", "item_factors", np.nan)
    with pytest.raises(NonFiniteError) as err:
        load_artefact(lake, manifest)
    assert str(err.value).startswith(f"{manifest.path}/factors.npz: non-finite values in item_factors: 1 of 8 "
                                     "values (NaN 1)")


def test_loading_factors_npz_whose_scores_overflow_is_refused(tmp_path: Path) -> None:
    lake, manifest = _committed(tmp_path)
    _edit(lake, manifest, "factors.npz", "item_factors", 3e38)
    _edit(lake, manifest, "factors.npz", "user_factors", 3e38)
    with pytest.raises(NonFiniteError, match=r"factors.npz: scores can overflow float32"):
        load_artefact(lake, manifest)


def test_loading_model_npz_with_inf_is_refused_naming_the_file(tmp_path: Path) -> None:
    """Before: accepted, and publish_model then said the representations "differ from factors.npz"."""
    lake, manifest = _committed(tmp_path)
    _edit(lake, manifest, "model.npz", "user_factors", np.inf)
    with pytest.raises(NonFiniteError, match=rf"^{manifest.path}/model.npz: non-finite values in user_factors: "
                                             r"1 of 6 values \(\+inf 1\)"):
        load_model(lake, manifest)
    folder = tmp_path / "saved"
    _als().save(folder)
    assert ALSModel.load(folder).item_representations().shape == (4, 2)
    with np.load(folder / "model.npz") as z:
        raw = {k: z[k] for k in z.files}
    raw["item_factors"][0, 0] = np.nan
    np.savez(folder / "model.npz", **raw)
    with pytest.raises(NonFiniteError, match=rf"^{folder}/model.npz: non-finite values in item_factors"):
        ALSModel.load(folder)


# ---- the train job -----------------------------------------------------------------------------------

def test_train_job_refuses_a_diverged_model_and_nothing_is_published(config_factory) -> None:
    """ALS with an absurd alpha: the train step fails as bad input (not retried), naming the configured model
    and the counts; nothing is committed, so evaluate and publish_model have nothing to work on."""
    config = config_factory({"models": {"als": {"params": {"factors": 4, "iterations": 2, "alpha": 1e30}}},
                             "training": {"holdout_days": 3}}, rails="als")
    lake = Lake.from_config(config)
    end = dt.datetime(2026, 3, 1, tzinfo=dt.UTC)
    seed_lake(config, lake, end=end, n_users=120, n_items=80, plays_per_user=12, seed=5)

    def run(job: str) -> tuple[int, dict]:
        return execute(job, config=config, params={"model": "als"},
                       run=RunInfo(dag_id="train_model", run_id="run1", task_id=job,
                                   logical_date=end + dt.timedelta(hours=1)))

    code, payload = run("create_dataset")
    assert code == 0, payload.get("error")
    code, payload = run("train")
    assert code == EXIT_BAD_INPUT and payload["error_kind"] == "BadInput", payload
    assert "models.als: ALSModel (model 'als'): non-finite values in user_factors: " in payload["error"]
    assert lake.manifest(config.dataset_path("model", model="als", version="v1", run_key="20260301T010000")) is None
    for job in ("evaluate", "publish_model"):
        code, payload = run(job)
        assert code != 0 and payload["error_kind"] == "not_ready", payload
    assert lake.read_pointer(published_model_pointer("als", "v1")) is None


def test_all_finite_needs_no_temporary_and_counts_each_kind() -> None:
    x = np.zeros((3, 4), np.float32)
    assert reps.all_finite(x) and reps.all_finite(np.zeros(0, np.float32)) and reps.all_finite(sp.csr_matrix((2, 2)))
    x[0, 1], x[2, 3], x[1, 1] = np.nan, -np.inf, np.inf
    assert not reps.all_finite(x) and not reps.all_finite(sp.csr_matrix(x))
    assert reps.nonfinite_counts(x, block=5) == {"values": 12, "nan": 1, "+inf": 1, "-inf": 1}
