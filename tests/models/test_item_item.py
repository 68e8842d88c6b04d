"""EASE and item-kNN: the closed form, the library's neighbours, and the memory guard."""

from __future__ import annotations

import warnings

import numpy as np
import pytest
import scipy.sparse as sp

from skyrec.evaluation.synthetic import planted_matrix
from skyrec.models import representations as reps
from skyrec.models.ease import EASEModel
from skyrec.models.knn import ItemKNNModel


@pytest.fixture(scope="module")
def plays() -> sp.csr_matrix:
    m, _, _ = planted_matrix(200, 150, 6, plays_per_user=15, purity=0.85, seed=11)
    m = sp.csr_matrix(m, dtype=np.float32)
    m.data = (1.0 + np.arange(m.nnz) % 3).astype(np.float32)  # weights, so "binary" matters
    return m


def _textbook_ease(X: np.ndarray, lam: float) -> np.ndarray:
    """Steck's formula in float64 with a general inverse."""
    G = X.T @ X + lam * np.eye(X.shape[1])
    P = np.linalg.inv(G)
    B = -P / np.diag(P)[None, :]
    np.fill_diagonal(B, 0.0)
    return B


@pytest.mark.parametrize("binary", [True, False])
def test_ease_is_the_closed_form(plays: sp.csr_matrix, binary: bool) -> None:
    X = plays.toarray().astype(np.float64)
    if binary:
        X = (X > 0).astype(np.float64)
    model = EASEModel(regularization=30.0, binary=binary).fit(plays)
    B = _textbook_ease(X, 30.0)
    V = model.item_representations()
    np.testing.assert_allclose(V, B.T, atol=2e-5 * np.abs(B).max())
    assert np.all(np.diag(V) == 0.0), "an item must not recommend itself"
    U = model.user_representations()
    assert sp.isspmatrix_csr(U) and np.array_equal(U.toarray(), X.astype(np.float32))
    np.testing.assert_allclose(reps.scores(U, V), X @ B, rtol=1e-4, atol=1e-4)


def test_ease_regularization_must_be_positive() -> None:
    with pytest.raises(ValueError, match=r"models\.ease\.params\.regularization must be a finite number > 0, got 0"):
        EASEModel(regularization=0)


def test_memory_guard_refuses_before_allocating_and_names_the_limit(plays: sp.csr_matrix) -> None:
    # 150 items: 3 x 150^2 float32 = 270 kB > 0.0001 GB (100 kB)
    model = EASEModel(memory_limit_gb=0.0001)
    with pytest.raises(reps.MemoryGuardError) as err:
        model.fit(plays)
    msg = str(err.value)
    assert "150 items" in msg and "0.0001 GB" in msg
    assert "models.ease.params.memory_limit_gb" in msg
    assert "holds at most 91 items" in msg  # sqrt(1e5 / 12)
    with pytest.raises(RuntimeError, match="fit"):  # nothing was fitted
        model.user_representations()
    EASEModel(memory_limit_gb=0.001).fit(plays)  # 1 MB holds 150 items


def test_knn_guard_bounds_its_sparse_neighbour_matrices(plays: sp.csr_matrix) -> None:
    # 150 items x 40 neighbours: 3 x 6,000 entries x 8 bytes = 144 kB > 100 kB
    model = ItemKNNModel(memory_limit_gb=0.0001, neighbours=40)
    with pytest.raises(reps.MemoryGuardError) as err:
        model.fit(plays)
    msg = str(err.value)
    assert "150 items x 40 neighbours" in msg and "0.1 MB" in msg and "0.0001 GB" in msg
    assert "models.knn.params.memory_limit_gb" in msg and "models.knn.params.neighbours" in msg
    with pytest.raises(RuntimeError, match="fit"):
        model.user_representations()
    ItemKNNModel(memory_limit_gb=0.0001, neighbours=20, num_threads=1).fit(plays)  # 72 kB: fits


def test_knn_keeps_its_item_side_sparse_so_a_catalogue_of_200k_items_fits() -> None:
    """V = S.T is a CSR of the kept neighbours: 200k items cost entries per neighbour, not 200k^2 (which the
    dense form of the same model would need: ~160 GB), and the kernel scores it exactly."""
    from skyrec.scoring.topk import reference_topk, topk_batch

    n_items, rng = 200_000, np.random.default_rng(4)
    rows = np.repeat(np.arange(3000), 12)
    cols = (rows * 37 + rng.integers(0, 400, rows.size)) % n_items  # each user in a 400-item neighbourhood
    X = sp.csr_matrix((np.ones(rows.size, np.float32), (rows, cols)), shape=(3000, n_items))
    model = ItemKNNModel(similarity="cosine", neighbours=20, num_threads=1).fit(X)
    V = model.item_representations()
    assert sp.isspmatrix_csr(V) and V.shape == (n_items, n_items) and V.dtype == np.float32
    assert V.nnz <= 20 * n_items and reps.nbytes(V) < 50e6
    users = np.arange(0, 3000, 250)
    got = topk_batch(model.user_representations()[users], reps.transposed(V), 10, sub_batch=4)
    S = model._similarity
    checked = 0
    for r, u in enumerate(users):  # the reference over the items the user's plays reach (all others score 0)
        x = model.user_representations()[u]
        played, reach = x.indices, np.unique(S[x.indices].indices)
        want = [(int(reach[j]), s) for j, s in reference_topk(x[:, played], S[played][:, reach].T, 10)[0] if s > 0]
        assert got.items[r, : len(want)].tolist() == [j for j, _ in want]
        np.testing.assert_allclose(got.scores[r, : len(want)], [s for _, s in want], rtol=1e-5)
        checked += len(want)
    assert checked >= 5 * len(users)


def test_the_guard_refuses_a_catalogue_size_without_touching_memory() -> None:
    """200k items: ~480 GB of float32 matrices; refused at once, whatever the machine."""
    X = sp.csr_matrix((np.ones(3, np.float32), ([0, 1, 2], [0, 5, 199_999])), shape=(3, 200_000))
    with pytest.raises(reps.MemoryGuardError, match=r"200,000 items need ~480\.0 GB"):
        EASEModel().fit(X)


@pytest.mark.parametrize("similarity", ["cosine", "bm25"])
def test_knn_recommends_what_implicit_recommends(plays: sp.csr_matrix, similarity: str) -> None:
    from implicit.nearest_neighbours import BM25Recommender, CosineRecommender

    model = ItemKNNModel(similarity=similarity, neighbours=25, num_threads=1).fit(plays)
    ref = (BM25Recommender(K=25, K1=float(model.param("bm25_k1")), B=float(model.param("bm25_b")), num_threads=1)
           if similarity == "bm25" else CosineRecommender(K=25, num_threads=1))
    with warnings.catch_warnings():  # implicit's own note about converting its weighted matrix
        warnings.simplefilter("ignore")
        ref.fit(plays, show_progress=False)
    users = np.arange(0, 200, 9)
    ids, scores = ref.recommend(users, plays[users], N=10)
    got, got_scores = model.recommend(users, 10, exclude=plays)
    np.testing.assert_allclose(got_scores, scores, rtol=1e-4, atol=1e-5)
    # the same lists, up to the order of exactly tied scores
    for r in range(len(users)):
        assert set(got[r][got_scores[r] > got_scores[r, -1]]) == set(ids[r][scores[r] > scores[r, -1]])
    assert model.item_representations().shape == (150, 150)
    S = model.state()
    assert "similarity_csr_data" in S and S["similarity_csr_data"].size <= 150 * 25


def test_knn_parameters_are_checked() -> None:
    with pytest.raises(ValueError, match="similarity must be one of"):
        ItemKNNModel(similarity="jaccard")
    with pytest.raises(ValueError, match=r"neighbours must be a whole number in \[1, "):
        ItemKNNModel(neighbours=0)


@pytest.mark.parametrize("cls, name", [(EASEModel, "ease"), (ItemKNNModel, "knn")])
@pytest.mark.parametrize("bad", [-1, 0, "abc", float("nan"), float("inf"), None, True])
def test_a_bad_memory_limit_is_refused_at_construction_naming_the_key_and_value(cls, name: str, bad) -> None:
    """Not "cannot convert float NaN to integer" at fit time, after the dataset was built."""
    with pytest.raises(ValueError) as info:
        cls(memory_limit_gb=bad)
    assert f"models.{name}.params.memory_limit_gb must be a finite number > 0 (GB), got {bad!r}" in str(info.value)
    assert cls(memory_limit_gb="2.5")._limit_gb == 2.5  # a number given as text (an environment variable)


def test_a_bad_memory_limit_in_config_names_the_key_and_value(config_factory) -> None:
    """Refused when the configuration loads (tests/models/test_params.py), not at the train step."""
    from skyrec.config import ConfigError

    with pytest.raises(ConfigError, match=r"models\.ease\.params\.memory_limit_gb: .*got -1"):
        config_factory({"models": {"ease": {"params": {"memory_limit_gb": -1}}}})


def test_a_bad_model_parameter_in_config_names_the_key(config_factory) -> None:
    from skyrec.config import ConfigError
    from skyrec.models import build_model

    with pytest.raises(ConfigError, match=r"models\.knn\.params\.similarity: .*similarity must be one of"):
        config_factory({"models": {"knn": {"params": {"similarity": "jaccard"}}}})
    with pytest.raises(ConfigError, match=r"models\.ease\.params: .*unknown parameter\(s\) \['lambda'\]"):
        config_factory({"models": {"ease": {"params": {"lambda": 3}}}})
    assert build_model(config_factory(), "ease").params["regularization"] == 1000.0


def test_a_seed_outside_the_models_items_is_refused_not_a_corrupt_matrix() -> None:
    """EASE's and item-kNN's seed row is one-hot in their own item space; an index beyond it (a dataset-wide
    index given to a model fit on fewer items) is an error, not a CSR matrix scipy would multiply out of
    bounds."""
    V = sp.identity(5, dtype=np.float32, format="csr")
    assert ItemKNNModel.item_queries(V, np.array([0, 4])).shape == (2, 5)
    with pytest.raises(ValueError, match="item index 5 outside the model's 5 items"):
        ItemKNNModel.item_queries(V, np.array([1, 5]))
    with pytest.raises(ValueError, match="item index -1 outside"):
        reps.one_hot(np.array([-1]), 5)


def test_a_canonical_sparse_side_is_used_as_is_and_any_other_is_made_canonical() -> None:
    """Scoring converts its item side on every batch: an already canonical CSR (float32, sorted indices) must
    not be re-wrapped (that re-checks every index), and anything else must come out canonical and equal."""
    m = sp.random(50, 40, density=0.2, format="csr", dtype=np.float32, random_state=3)
    m.sort_indices()
    assert reps.as_float32(m) is m
    shuffled = m.copy()
    for r in range(shuffled.shape[0]):  # reverse each row's entries: unsorted, same matrix
        lo, hi = shuffled.indptr[r], shuffled.indptr[r + 1]
        shuffled.indices[lo:hi], shuffled.data[lo:hi] = shuffled.indices[lo:hi][::-1], shuffled.data[lo:hi][::-1]
    shuffled.has_sorted_indices = False
    for other in (shuffled, m.astype(np.float64), m.tocsc(), sp.csr_array(m)):
        out = reps.as_float32(other)
        assert type(out) is sp.csr_matrix and out.dtype == np.float32 and out.has_sorted_indices
        assert out is not other and reps.equal(out, m)
        assert np.array_equal(out.indices, m.indices) and np.array_equal(out.data, m.data)


def test_the_guard_states_a_small_need_in_a_unit_that_shows_it() -> None:
    """A tiny limit (a test machine, a typo) refuses a small catalogue: "need ~0.0 GB" would say nothing."""
    X = sp.csr_matrix((np.ones(3, np.float32), ([0, 1, 2], [0, 5, 299])), shape=(3, 300))
    with pytest.raises(reps.MemoryGuardError, match=r"300 items need ~1\.1 MB .* above the limit of 1e-05 GB"):
        EASEModel(memory_limit_gb=0.00001).fit(X)
