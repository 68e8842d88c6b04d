"""The one contract every model passes (fit, representations, recommend, persistence, learning).

A new model joins by adding its class to ``MODELS``; nothing else in this file changes.
"""

from __future__ import annotations

import io
import json

import numpy as np
import pytest
import scipy.sparse as sp

from skyrec.evaluation.synthetic import planted_matrix
from skyrec.models import recommender_from_files
from skyrec.models import representations as reps
from skyrec.models.als import ALSModel
from skyrec.models.base import Recommender
from skyrec.models.bpr import BPRModel
from skyrec.models.ease import EASEModel
from skyrec.models.hybrid import HybridModel
from skyrec.models.knn import ItemKNNModel
from skyrec.models.popularity import PopularityModel

MODELS = {
    "als": (ALSModel, {"factors": 16, "iterations": 8, "regularization": 0.05, "alpha": 5.0, "random_state": 1}),
    "bpr": (BPRModel, {"factors": 16, "iterations": 60, "learning_rate": 0.05, "random_state": 1}),
    "hybrid": (HybridModel, {"no_components": 16, "epochs": 15, "random_state": 1}),
    "popularity": (PopularityModel, {}),
    "ease": (EASEModel, {"regularization": 50.0}),
    "knn_cosine": (ItemKNNModel, {"similarity": "cosine", "neighbours": 30}),
    "knn_bm25": (ItemKNNModel, {"similarity": "bm25", "neighbours": 30}),
}
N_USERS, N_ITEMS, N_TOPICS = 300, 400, 8


@pytest.fixture(scope="module")
def planted():
    m, user_topic, item_topic = planted_matrix(N_USERS, N_ITEMS, N_TOPICS, plays_per_user=20, purity=0.9, seed=3)
    rng = np.random.default_rng(0)
    coo = m.tocoo()
    test_mask = rng.random(coo.nnz) < 0.2
    train = sp.csr_matrix((coo.data[~test_mask], (coo.row[~test_mask], coo.col[~test_mask])), shape=m.shape)
    test = sp.csr_matrix((coo.data[test_mask], (coo.row[test_mask], coo.col[test_mask])), shape=m.shape)
    features = sp.csr_matrix((np.ones(N_ITEMS, np.float32), (np.arange(N_ITEMS), item_topic)),
                             shape=(N_ITEMS, N_TOPICS))
    return train, test, features, user_topic, item_topic


@pytest.fixture(scope="module", params=sorted(MODELS))
def fitted(request, planted) -> Recommender:
    cls, params = MODELS[request.param]
    train, _, features, _, _ = planted
    model = cls(**params)
    model.fit(train, item_features=features if cls.uses_item_features else None)
    return model


def test_representations_shapes_dtypes_finite(fitted: Recommender) -> None:
    U, V = fitted.user_representations(), fitted.item_representations()
    assert U.shape[0] == N_USERS and V.shape[0] == N_ITEMS and U.shape[1] == V.shape[1] >= 1
    assert U.dtype == np.float32 and V.dtype == np.float32
    assert reps.all_finite(U) and reps.all_finite(V)
    assert all(isinstance(x, np.ndarray) or sp.isspmatrix_csr(x) for x in (U, V))


def test_recommend_excludes_seen_and_is_deterministic(fitted: Recommender, planted) -> None:
    train = planted[0]
    rows = np.arange(0, N_USERS, 7)
    idx, scores = fitted.recommend(rows, 10, exclude=train)
    again, _ = fitted.recommend(rows, 10, exclude=train)
    assert np.array_equal(idx, again)
    assert idx.shape == (len(rows), 10)
    for r, user in enumerate(rows):
        assert not set(idx[r]) & set(train[user].indices), "recommended an item the user already played"
        assert np.all(np.diff(scores[r]) <= 0), "scores are not best-first"
    # the recommend() scores are the contract's dot product
    U, V = fitted.user_representations(), fitted.item_representations()
    np.testing.assert_allclose(scores[0], reps.scores(U[rows[0:1]], V[idx[0]])[0], rtol=1e-5, atol=1e-6)


def test_the_kernel_scores_every_model_as_recommend_does(fitted: Recommender, planted) -> None:
    """Precompute's kernel takes any model's representations (dense or sparse users) and agrees with the
    brute-force specification and with ``recommend``."""
    from skyrec.scoring.topk import reference_topk, topk_batch

    train = planted[0]
    rows = np.arange(0, N_USERS, 11)
    U, V = fitted.user_representations(), fitted.item_representations()
    got = topk_batch(U[rows], reps.transposed(V), 10, exclude=train[rows], sub_batch=8)
    ref = reference_topk(U[rows], V, 10, exclude=train[rows])
    idx, scores = fitted.recommend(rows, 10, exclude=train)
    brute = np.asarray(reps.scores(U[rows], V))
    for r in range(len(rows)):
        items = got.items[r, : got.counts[r]]
        want = [s for _, s in ref[r]]
        # the same ranking up to ties: each position holds an item with the reference's score there (items
        # whose scores are equal in exact arithmetic may come in either order: the kernel and the brute force
        # sum in different orders, a last-bit difference), and every item strictly above the last is listed
        np.testing.assert_allclose(brute[r, items], want, rtol=1e-4, atol=1e-5)
        assert {j for j, v in ref[r] if v > want[-1] + 1e-4 * abs(want[-1]) + 1e-5} <= set(items.tolist())
        assert not set(items.tolist()) & set(train[rows[r]].indices.tolist())
        np.testing.assert_allclose(got.scores[r, : got.counts[r]], want, rtol=1e-4, atol=1e-5)
        np.testing.assert_allclose(np.sort(scores[r])[::-1], scores[r])
        np.testing.assert_allclose(got.scores[r, : got.counts[r]], scores[r][: got.counts[r]], rtol=1e-4, atol=1e-5)


def test_save_load_round_trip_gives_identical_scores_without_pickle(fitted: Recommender, tmp_path) -> None:
    names = fitted.save(tmp_path / "m")
    assert sorted(names) == ["model.json", "model.npz"]
    json.loads((tmp_path / "m" / "model.json").read_text())  # plain JSON
    with np.load(tmp_path / "m" / "model.npz", allow_pickle=False) as npz:  # raises on object arrays
        assert all(npz[k].dtype != object for k in npz.files)
    loaded = type(fitted).load(tmp_path / "m")
    rows = np.arange(N_USERS)
    before = reps.scores(fitted.user_representations(), fitted.item_representations())
    after = reps.scores(loaded.user_representations(), loaded.item_representations())
    assert np.array_equal(before, after)
    assert reps.equal(fitted.user_representations(), loaded.user_representations())
    assert np.array_equal(fitted.recommend(rows, 10)[0], loaded.recommend(rows, 10)[0])
    # and through the class-resolving loader used for artefacts
    again = recommender_from_files(fitted.to_files())
    assert type(again) is type(fitted)
    assert reps.equal(again.item_representations(), fitted.item_representations())


def test_learns_the_planted_signal(fitted: Recommender, planted) -> None:
    """Hit rate on held-out plays clearly beats a random ranking (and personalised models beat popularity)."""
    train, test, _, user_topic, item_topic = planted
    users = np.flatnonzero(np.diff(test.indptr) > 0)
    idx, _ = fitted.recommend(users, 10, exclude=train)
    hits = np.mean([len(set(idx[r]) & set(test[u].indices)) / len(test[u].indices) for r, u in enumerate(users)])
    random_recall = 10 / N_ITEMS
    assert hits > 3 * random_recall, f"{fitted.name}: recall@10 {hits:.3f} vs random {random_recall:.3f}"
    if fitted.name != "popularity":
        on_topic = np.mean(item_topic[idx] == user_topic[users][:, None])
        assert on_topic > 0.6, f"{fitted.name}: only {on_topic:.2f} of recommendations match the planted taste"


def test_unknown_parameter_is_a_clear_error() -> None:
    for name, (cls, _) in MODELS.items():
        if name == "popularity":
            continue
        with pytest.raises(ValueError, match="unknown parameter"):
            cls(factorz=3)


def test_loader_refuses_classes_outside_the_models_package(fitted: Recommender) -> None:
    files = fitted.to_files()
    meta = json.loads(files["model.json"])
    meta["class"] = "os:system"
    with pytest.raises(ValueError, match="refusing"):
        recommender_from_files({**files, "model.json": json.dumps(meta).encode()})


def test_hybrid_scores_cold_items_from_their_features(planted) -> None:
    """Items with no plays at all get representations from features that match the users' taste."""
    train, _, features, user_topic, item_topic = planted
    cold = np.arange(N_ITEMS) % 10 == 0
    warm_train = train.multiply(sp.csr_matrix(~cold, dtype=np.float32)).tocsr()  # nobody played cold items
    warm_train.eliminate_zeros()
    model = HybridModel(no_components=16, epochs=15, random_state=1).fit(warm_train, item_features=features)
    V_cold = model.item_representations(features[np.flatnonzero(cold)])
    assert V_cold.shape == (int(cold.sum()), model.user_representations().shape[1])
    scores = model.user_representations() @ V_cold.T
    best = item_topic[np.flatnonzero(cold)][np.argmax(scores, axis=1)]
    assert np.mean(best == user_topic) > 3 / N_TOPICS  # random: 1 / N_TOPICS
    # the training-time representations of those unplayed items agree with the feature-only ones
    np.testing.assert_allclose(model.item_representations()[cold], V_cold, rtol=1e-5, atol=1e-6)
    buf = io.BytesIO(model.to_files()["model.npz"])
    assert "meta_embeddings" in np.load(buf, allow_pickle=False).files


# ---- item-to-item ("more like this"): the same contract with the seed item on the user side ----------------


def test_similar_items_exclude_the_seed_are_best_first_and_are_the_contract_product(fitted: Recommender) -> None:
    seeds = np.arange(0, N_ITEMS, 9)
    idx, scores = fitted.similar_items(seeds, 10)
    again, _ = fitted.similar_items(seeds, 10)
    assert np.array_equal(idx, again) and idx.shape == (len(seeds), 10)
    V = fitted.item_representations()
    Q = type(fitted).item_queries(V, seeds)
    assert Q.shape == (len(seeds), V.shape[1]) and Q.dtype == np.float32
    full = reps.scores(Q, V)
    for r, seed in enumerate(seeds):
        assert seed not in idx[r], "an item is never 'more like' itself"
        assert np.all(np.diff(scores[r]) <= 0), "scores are not best-first"
        np.testing.assert_allclose(scores[r], full[r, idx[r]], rtol=1e-5, atol=1e-6)


def test_cosine_similar_items_are_the_cosine_of_the_seed_rows_or_refused(fitted: Recommender) -> None:
    """``similar_measure: cosine``: the cosine of the items' seed rows, for models that offer it (low-rank
    factors); EASE, item-kNN and popularity refuse it, naming the model (precompute then uses their own)."""
    cls = type(fitted)
    V = fitted.item_representations()
    seeds = np.arange(0, N_ITEMS, 11)
    if "cosine" not in cls.similar_measures:
        with pytest.raises(ValueError, match=f"{cls.__name__}: similar_measure 'cosine' is not one of"):
            cls.item_targets(V, "cosine")
        return
    rows = np.asarray(cls.item_queries(V, np.arange(N_ITEMS)), dtype=np.float64)
    norms = np.linalg.norm(rows, axis=1, keepdims=True)
    unit = rows / np.where(norms > 0, norms, 1.0)  # an all-zero row (an item never fit) stays zero
    want = unit[seeds] @ unit.T
    idx, scores = fitted.similar_items(seeds, 10, measure="cosine")
    for r, seed in enumerate(seeds):
        assert seed not in idx[r]
        np.testing.assert_allclose(scores[r], want[r, idx[r]], rtol=1e-4, atol=1e-5)
        best = [j for j in np.argsort(-want[r], kind="stable") if j != seed][:10]
        np.testing.assert_allclose(np.sort(want[r, best]), np.sort(scores[r]), rtol=1e-4, atol=1e-5)
    assert np.all(np.abs(scores) <= 1 + 1e-5)
    dot_idx, _ = fitted.similar_items(seeds, 10)
    assert not np.array_equal(dot_idx, idx), "cosine and dot gave the same lists: the measure was not applied"


def test_the_kernel_scores_similar_items_as_the_model_does(fitted: Recommender) -> None:
    """Precompute runs seeds through the same kernel as users (seed excluded as a 'played' item)."""
    from skyrec.scoring.topk import reference_topk, topk_batch

    seeds = np.arange(3, N_ITEMS, 13)
    V = fitted.item_representations()
    Q = type(fitted).item_queries(V, seeds)
    own = sp.csr_matrix((np.ones(len(seeds), np.int8), (np.arange(len(seeds)), seeds)), shape=(len(seeds), N_ITEMS))
    got = topk_batch(Q, reps.transposed(V), 10, exclude=own, sub_batch=4)
    ref = reference_topk(Q, V, 10, exclude=own)
    _, scores = fitted.similar_items(seeds, 10)
    for r in range(len(seeds)):
        assert got.items[r, : got.counts[r]].tolist() == [j for j, _ in ref[r]]
        # the model's own top-10 has the same scores (its order among exact ties may differ)
        np.testing.assert_allclose(got.scores[r, : got.counts[r]], scores[r], rtol=1e-4, atol=1e-5)


def test_similar_items_learn_the_planted_topics(fitted: Recommender) -> None:
    """Items similar to a seed share its planted topic (popularity, the baseline, knows no topics)."""
    item_topic = planted_item_topics()
    seeds = np.arange(0, N_ITEMS, 5)
    idx, _ = fitted.similar_items(seeds, 10)
    on_topic = float(np.mean(item_topic[idx] == item_topic[seeds][:, None]))
    if fitted.name == "popularity":  # the most popular items, whatever the seed (the seed itself left out)
        pop = fitted.item_representations()[:, 0]
        for r, seed in enumerate(seeds):
            best = [j for j in np.lexsort((np.arange(N_ITEMS), -pop)) if j != seed][:10]
            np.testing.assert_allclose(pop[idx[r]], pop[best])
        return
    assert on_topic > 0.5, f"{fitted.name}: only {on_topic:.2f} of similar items share the seed's topic"


def planted_item_topics() -> np.ndarray:
    return planted_matrix(N_USERS, N_ITEMS, N_TOPICS, plays_per_user=20, purity=0.9, seed=3)[2]


def test_item_item_models_score_similar_items_with_their_own_weights(planted) -> None:
    """EASE: sim(i, j) = B[i, j]; item-kNN: sim(i, j) = S[i, j] (its kept neighbours); factors: V[i] . V[j]."""
    train = planted[0]
    seeds = np.array([0, 17, 123])
    ease = EASEModel(regularization=50.0).fit(train)
    B = ease.item_representations().T
    _, s = ease.similar_items(seeds, 5)
    idx, _ = ease.similar_items(seeds, 5)
    np.testing.assert_allclose(s, np.take_along_axis(B[seeds], idx, axis=1), rtol=1e-6)
    knn = ItemKNNModel(similarity="cosine", neighbours=30, num_threads=1).fit(train)
    S = knn._similarity.toarray()
    idx, s = knn.similar_items(seeds, 5)
    np.testing.assert_allclose(s, np.take_along_axis(S[seeds], idx, axis=1), rtol=1e-6)
    assert np.all(s > 0), "the best neighbours of an item are among its kept neighbours"
    als = ALSModel(factors=8, iterations=3, random_state=1).fit(train)
    V = als.item_representations()
    idx, s = als.similar_items(seeds, 5)
    np.testing.assert_allclose(s, np.einsum("rd,rkd->rk", V[seeds], V[idx]), rtol=1e-5)
    bpr = BPRModel(factors=8, iterations=3, random_state=1).fit(train)
    Vb = bpr.item_representations()
    idx, s = bpr.similar_items(seeds, 5)
    np.testing.assert_allclose(s, np.einsum("rd,rkd->rk", Vb[seeds, :-1], Vb[idx, :-1]), rtol=1e-5, atol=1e-6)
