""""New in a series you follow" (``skyrec.models.series``): the matrix, the context from a dataset, and
item-kNN and EASE with the term, fit through ``fit_on`` as the train job fits them."""

from __future__ import annotations

import datetime as dt

import numpy as np
import pyarrow as pa
import pytest
import scipy.sparse as sp

from skyrec.models.dataset import build_training_data
from skyrec.models.ease import EASEModel
from skyrec.models.knn import ItemKNNModel
from skyrec.models.representations import scores
from skyrec.models.series import (
    UNKNOWN_RELEASE,
    ItemContext,
    add_followed_series,
    checked_params,
    item_context,
    newest_rank,
    series_matrix,
)
from skyrec.models.training import fit_on

DAY = 86_400 * 1_000_000


def _context(brand: list[int], release_days: list[float | None], reference_day: float = 10.0) -> ItemContext:
    release = np.array([UNKNOWN_RELEASE if d is None else int(d * DAY) for d in release_days], dtype=np.int64)
    return ItemContext(brand=np.array(brand, dtype=np.int64), release_us=release,
                       reference_us=int(reference_day * DAY))


def test_the_matrix_lifts_each_brands_newest_released_episodes() -> None:
    # brand 0: items 0..3 released days 1,2,3 and 12 (after the reference: not released yet)
    # brand 1: items 4, 5 (same release day: tie by column); item 6 no brand; item 7 no release time
    ctx = _context([0, 0, 0, 0, 1, 1, -1, 1], [1, 2, 3, 12, 5, 5, 4, None])
    T = series_matrix(ctx, depth=2, decay=0.5).toarray()
    for j in (0, 1, 2, 3):  # every item of brand 0 points at its two newest released episodes
        assert T[j].tolist() == [0, 0.5, 1, 0, 0, 0, 0, 0]
    for j in (4, 5, 7):  # brand 1: the tie goes to the lower column
        assert T[j].tolist() == [0, 0, 0, 0, 1, 0.5, 0, 0]
    assert not T[6].any() and not T[:, 6].any() and not T[:, 3].any() and not T[:, 7].any()
    assert series_matrix(ctx, depth=1, decay=0.5).nnz == 7  # one entry per item with a brand


def test_the_series_term_is_scaled_by_the_models_own_weights() -> None:
    ctx = _context([0, 0, 1], [1, 2, 3])
    S = sp.csr_matrix(np.array([[0, 200, 0], [100, 0, 0], [0, 0, 0]], dtype=np.float32))
    X = sp.csr_matrix(np.ones((2, 3), np.float32))
    alike = {"user_items": 1.0, "catch_up": 1.0, "within": 1}  # every play alike: no followed block
    out, XF, follow, record = add_followed_series(S, X, ctx, weight=2.0, depth=1, decay=0.5, **alike)
    assert record["scale"] == 150.0 and record["entries"] == 3  # mean of the positive row maxima
    assert out.toarray().tolist() == [[0, 500, 0], [100, 300, 0], [0, 0, 300]] and XF is None and follow is None
    same, _, _, off = add_followed_series(S, X, ctx, weight=0.0, depth=1, decay=0.5, **alike)
    assert (same != S).nnz == 0 and off["entries"] == 0
    same, _, _, off = add_followed_series(S, X, None, weight=2.0, depth=1, decay=0.5, **alike)
    assert (same != S).nnz == 0 and off["entries"] == 0


def _activity_and_catalogue(end: dt.datetime) -> tuple[pa.Table, pa.Table]:
    """Listeners of brand "b1" played its older episodes; its newest episode e9 was released a day before
    the end and played by one listener only; e10 is released after the end. Everybody also plays p1..p3."""
    rows = []
    at = end - dt.timedelta(days=3)
    for u in range(30):
        for k, item in enumerate(["p1", "p2", "p3"] + (["e6", "e7", "e8"] if u < 20 else ["q1", "q2"])):
            rows.append((f"ev{u}-{k}", f"u{u:02d}", item, at + dt.timedelta(minutes=k)))
    rows.append(("ev-new", "u29", "e9", end - dt.timedelta(hours=2)))
    activity = pa.table({
        "event_id": [r[0] for r in rows], "user_id": [r[1] for r in rows], "item_id": [r[2] for r in rows],
        "event_type": ["play"] * len(rows), "event_ts": pa.array([r[3] for r in rows], pa.timestamp("us", tz="UTC")),
        "played_seconds": pa.array([None] * len(rows), pa.float32())})
    items = ["p1", "p2", "p3", "q1", "q2", "e6", "e7", "e8", "e9", "e10"]
    brands = ["bp", "bp", "bp", "bq", "bq", "b1", "b1", "b1", "b1", "b1"]
    days = [30, 29, 28, 20, 19, 10, 8, 6, 1, -1]  # days before the end
    catalogue = pa.table({"item_id": items, "brand_id": brands, "masterbrand": ["m"] * 10,
                          "genres": [["Comedy"]] * 10, "formats": [[]] * 10,
                          "release_ts": pa.array([end - dt.timedelta(days=d) for d in days],
                                                 pa.timestamp("us", tz="UTC")),
                          "duration_seconds": pa.array([1800] * 10, pa.int32())})
    return activity, catalogue


def _dataset(end: dt.datetime, split: dict | None = None):
    activity, catalogue = _activity_and_catalogue(end)
    data, bad = build_training_data(activity, catalogue, weighting={"play": 1.0}, played_fraction_weight=0.0,
                                    half_life_days=30.0, holdout_days=2.0, end=end, split=split)
    assert not bad
    return data


def test_the_context_comes_from_the_catalogue_and_the_split() -> None:
    end = dt.datetime(2026, 3, 1, tzinfo=dt.UTC)
    data = _dataset(end)
    ctx = item_context(data, "interactions")
    assert ctx is not None and ctx.reference_us == int(end.timestamp() * 1e6)
    ids = data.item_ids.tolist()
    b1 = {ctx.brand[ids.index(x)] for x in ("e6", "e7", "e8", "e9", "e10")}
    assert len(b1) == 1 and ctx.brand[ids.index("p1")] not in b1
    assert ctx.release_us[ids.index("e9")] == int((end - dt.timedelta(days=1)).timestamp() * 1e6)
    train = item_context(data, "train")  # global split: "now" for the training part is its cutoff
    assert train is not None and train.reference_us == int((end - dt.timedelta(days=2)).timestamp() * 1e6)
    per_user = _dataset(end, {"kind": "per_user", "test_fraction": 0.2})
    assert item_context(per_user, "train").reference_us == ctx.reference_us  # type: ignore[union-attr]
    activity, _ = _activity_and_catalogue(end)
    bare, _ = build_training_data(activity, None, weighting={"play": 1.0}, played_fraction_weight=0.0,
                                  half_life_days=30.0, holdout_days=2.0, end=end)
    assert item_context(bare, "interactions") is None


MODELS = {"knn": lambda w, **kw: ItemKNNModel(similarity="cosine", neighbours=20, series_weight=w, **kw),
          "ease": lambda w, **kw: EASEModel(regularization=5.0, series_weight=w, **kw)}


@pytest.mark.parametrize("kind", sorted(MODELS))
def test_the_series_term_offers_the_newest_episode_to_the_brands_listeners(kind: str) -> None:
    make = MODELS[kind]
    end = dt.datetime(2026, 3, 1, tzinfo=dt.UTC)
    data = _dataset(end)
    ids = data.item_ids.tolist()
    ctx = item_context(data, "interactions")
    listeners = np.arange(20)  # u00..u19 played b1's older episodes, not e9

    def top(model) -> list[str]:
        fitted = fit_on(model, data.interactions, None, ctx)
        full, mask = fitted.full_item_factors(len(ids))
        s = scores(fitted.user_factors[listeners], full)
        s[:, ~mask] = -np.inf
        s[data.seen[listeners].nonzero()] = -np.inf
        return [ids[j] for j in np.argmax(s, axis=1)]

    assert set(top(make(4.0))) == {"e9"}
    # without the term the newest episode, played once, loses to the other brand's items
    assert "e9" not in set(top(make(0.0)))
    # e10 is not released: no plays, so not a model item at all, and never lifted
    fitted = fit_on(make(4.0, series_depth=20), data.interactions, None, ctx)
    assert ids.index("e10") not in fitted.item_cols.tolist()
    assert fitted.model.series["entries"] > 0  # type: ignore[attr-defined]


def test_knn_scales_the_term_with_how_many_items_a_typical_user_has() -> None:
    """A user's item-kNN score sums one link per item they played, so it grows with how much they listen;
    the term's scale is the mean strongest link x the median items per user (EASE's regression scores do
    not grow that way: its scale is the strongest weight alone)."""
    end = dt.datetime(2026, 3, 1, tzinfo=dt.UTC)
    data = _dataset(end)
    ctx = item_context(data, "interactions")
    fitted = fit_on(MODELS["knn"](1.0), data.interactions, None, ctx)
    plain = fit_on(MODELS["knn"](0.0), data.interactions, None, ctx)
    counts = np.diff(sp.csr_matrix(data.interactions).indptr)
    median = float(np.median(counts[counts > 0]))
    assert median > 1
    S = sp.csr_matrix(plain.model._similarity)  # type: ignore[attr-defined]
    row_max = S.max(axis=1).toarray().ravel()
    record = fitted.model.series  # type: ignore[attr-defined]
    assert record["user_items"] == median
    assert record["scale"] == pytest.approx(float(row_max[row_max > 0].mean()) * median, rel=1e-6)
    ease = fit_on(MODELS["ease"](1.0), data.interactions, None, ctx).model.series  # type: ignore[attr-defined]
    assert ease["user_items"] == 1.0


def test_the_context_must_match_the_matrix() -> None:
    end = dt.datetime(2026, 3, 1, tzinfo=dt.UTC)
    data = _dataset(end)
    ctx = item_context(data, "interactions")
    assert ctx is not None
    with pytest.raises(ValueError, match="item context has"):
        fit_on(ItemKNNModel(series_weight=1.0), data.interactions[:, :5], None, ctx)


@pytest.mark.parametrize("cls", [ItemKNNModel, EASEModel])
@pytest.mark.parametrize("params", [{"series_weight": -1}, {"series_weight": float("nan")},
                                    {"series_weight": float("inf")}, {"series_depth": 0}, {"series_depth": 2.5},
                                    {"series_decay": 0.0}, {"series_decay": 1.5}, {"series_decay": float("nan")}])
def test_series_parameters_are_checked(cls, params: dict) -> None:
    (param, value), = params.items()
    with pytest.raises(ValueError, match=rf"{cls.__name__}: models\.{cls.name}\.params\.{param} must be .*, got "):
        cls(**params)


@pytest.mark.parametrize("weight", [float("nan"), float("inf"), -1.0])
def test_the_series_check_refuses_a_weight_that_is_not_a_finite_number(weight: float) -> None:
    """``NaN < 0`` is false: the check must not let a NaN weight through to scale the term."""
    with pytest.raises(ValueError, match="series_weight must be >= 0"):
        checked_params("M", weight, 5, 0.75)


@pytest.mark.parametrize("params", [{"series_catch_up": -0.1}, {"series_catch_up": 1.5},
                                    {"series_catch_up": float("nan")}, {"series_follow_within": -1}])
def test_follow_parameters_are_checked(params: dict) -> None:
    (param, value), = params.items()
    with pytest.raises(ValueError, match=rf"ItemKNNModel: models\.knn\.params\.{param} must be .*, got "):
        ItemKNNModel(**params)


# ---- "followed" listening: plays of an episode while it was new ----------------------------------------------

def test_newest_rank_counts_the_brands_episodes_out_between_the_episode_and_its_first_play() -> None:
    # brand 0: items 0..3 released days 1, 2, 3, 5; item 4 brand 1 day 1; item 5 no brand; item 6 no release
    brand = np.array([0, 0, 0, 0, 1, -1, 0], dtype=np.int64)
    release = np.array([1 * DAY, 2 * DAY, 3 * DAY, 5 * DAY, 1 * DAY, 1 * DAY, UNKNOWN_RELEASE], dtype=np.int64)
    plays = {(0, 0): 1.5, (0, 1): 2.5, (0, 2): 9.0, (1, 0): 4.0, (1, 3): 5.0, (1, 4): 30.0, (1, 5): 2.0,
             (1, 6): 6.0, (2, 0): 0.5}  # (user, item): first play, in days
    rows, cols = zip(*plays, strict=True)
    fp = sp.csr_matrix((np.array([int(d * DAY) for d in plays.values()], np.int64), (rows, cols)), shape=(3, 7))
    rank = newest_rank(fp, brand, release).toarray()
    assert rank[0, :4].tolist() == [1, 1, 2, 0]  # item 2 played on day 9: item 3 (day 5) was out by then
    assert rank[1, 0] == 3 and rank[1, 3] == 1  # item 0 on day 4: items 1, 2 newer; item 3 on its release day
    assert rank[1, 4] == 1  # another brand's releases do not count, however late the play
    assert rank[1, 5] == 0 and rank[1, 6] == 0  # no brand, no release time: unknown, left out
    assert rank[2, 0] == 1  # a play before the release time (a clock out of step): the newest
    ctx = ItemContext(brand=brand, release_us=release, reference_us=10 * DAY, newest_rank=sp.csr_matrix(rank))
    assert ctx.followed(0).toarray()[0, :3].tolist() == [1, 1, 0]
    assert ctx.followed(1).toarray()[1].tolist() == [0, 0, 0, 1, 1, 0, 0]
    assert ctx.followed(2).toarray()[1, 0] == 1
    taken = ctx.take(np.array([3, 0]))
    assert taken.newest_rank.toarray().tolist() == [[0, 1], [1, 3], [0, 1]]  # type: ignore[union-attr]


def _followers_and_catch_up(end: dt.datetime) -> tuple[pa.Table, pa.Table]:
    """Brand "b1" releases e1..e6 every two days and e7 a day before the end. Followers u00..u09 play each
    episode hours after its release; catch-up listeners u10..u19 play the same six in one sitting two days
    before the end (their plays are the more recent: recency decay alone favours them). Everybody plays
    p1..p3; u20 plays e7 (so that it is a model item)."""
    rel = {f"e{k}": end - dt.timedelta(days=15 - 2 * k) for k in range(1, 7)} | {"e7": end - dt.timedelta(days=1)}
    rows = []
    for u in range(21):
        for k, item in enumerate(["p1", "p2", "p3"]):
            rows.append((f"u{u:02d}", item, end - dt.timedelta(days=20, minutes=-k)))
    for u in range(10):
        rows += [(f"u{u:02d}", f"e{k}", rel[f"e{k}"] + dt.timedelta(hours=3)) for k in range(1, 7)]
    for u in range(10, 20):
        rows += [(f"u{u:02d}", f"e{k}", end - dt.timedelta(days=2, minutes=-10 * k)) for k in range(1, 7)]
    rows.append(("u20", "e7", end - dt.timedelta(hours=5)))
    activity = pa.table({
        "event_id": [f"ev{i}" for i in range(len(rows))], "user_id": [r[0] for r in rows],
        "item_id": [r[1] for r in rows], "event_type": ["play"] * len(rows),
        "event_ts": pa.array([r[2] for r in rows], pa.timestamp("us", tz="UTC")),
        "played_seconds": pa.array([None] * len(rows), pa.float32())})
    items = ["p1", "p2", "p3", *rel]
    catalogue = pa.table({
        "item_id": items, "brand_id": ["bp"] * 3 + ["b1"] * 7, "masterbrand": ["m"] * 10,
        "genres": [["Comedy"]] * 10, "formats": [[]] * 10,
        "release_ts": pa.array([end - dt.timedelta(days=40)] * 3 + list(rel.values()), pa.timestamp("us", tz="UTC")),
        "duration_seconds": pa.array([1800] * 10, pa.int32())})
    return activity, catalogue


def _follow_data(end: dt.datetime):
    activity, catalogue = _followers_and_catch_up(end)
    data, bad = build_training_data(activity, catalogue, weighting={"play": 1.0}, played_fraction_weight=0.0,
                                    half_life_days=30.0, holdout_days=2.0, end=end)
    assert not bad
    return data


def _e7_scores(model: ItemKNNModel, data, ctx) -> tuple[np.ndarray, ItemKNNModel]:
    """Each user's score of e7 from ``model`` fit on everything."""
    ids = data.item_ids.tolist()
    fitted = fit_on(model, data.interactions, None, ctx)
    full, _ = fitted.full_item_factors(len(ids))
    return scores(fitted.user_factors, full)[:, ids.index("e7")], fitted.model  # type: ignore[return-value]


def test_the_dataset_dates_every_pair_by_its_first_play() -> None:
    end = dt.datetime(2026, 3, 1, tzinfo=dt.UTC)
    data = _follow_data(end)
    fp = data.first_play
    assert fp is not None and (fp != 0).nnz == data.interactions.nnz
    assert np.array_equal(fp.indptr, data.interactions.indptr) and np.array_equal(fp.indices, data.interactions.indices)
    u, e3 = data.user_ids.tolist().index("u03"), data.item_ids.tolist().index("e3")
    assert fp[u, e3] == int((end - dt.timedelta(days=9) + dt.timedelta(hours=3)).timestamp() * 1_000_000)
    ctx = item_context(data, "interactions")
    assert ctx is not None and ctx.newest_rank is not None
    followed = ctx.followed(1).toarray()
    users = data.user_ids.tolist()
    episodes = [data.item_ids.tolist().index(f"e{k}") for k in range(1, 7)]
    assert followed[[users.index(f"u{u:02d}") for u in range(10)]][:, episodes].all()
    assert not followed[[users.index(f"u{u:02d}") for u in range(10, 20)]][:, episodes[:4]].any()


def test_knn_offers_a_new_episode_to_those_who_follow_its_programme_before_those_who_catch_up() -> None:
    end = dt.datetime(2026, 3, 1, tzinfo=dt.UTC)
    data = _follow_data(end)
    ctx = item_context(data, "interactions")
    users = data.user_ids.tolist()
    followers = [users.index(f"u{u:02d}") for u in range(10)]
    catch_up = [users.index(f"u{u:02d}") for u in range(10, 20)]
    make = lambda c: ItemKNNModel(similarity="cosine", neighbours=20, series_weight=1.0, series_catch_up=c)  # noqa: E731
    alike, _ = _e7_scores(make(1.0), data, ctx)
    weighted, model = _e7_scores(make(0.1), data, ctx)
    # every play alike: the catch-up listeners' more recent plays lift e7 for them at least as much
    assert alike[catch_up].mean() >= alike[followers].mean()
    # weighted by how they listened: e7 goes to the followers first, clearly
    assert weighted[followers].min() > 2 * weighted[catch_up].max()
    record = model.series
    assert record["catch_up"] == 0.1 and record["follow_within"] == 1
    assert 60 <= record["followed_pairs"] < record["pairs"]  # the followers' 60 plays, plus the new episodes'
    # more like this seeds the first block: S[i, :] + c w T[i, :], whatever the followed block holds
    S = model._similarity.toarray()  # type: ignore[union-attr]
    item_rows = fit_on(make(0.1), data.interactions, None, ctx).item_cols
    i = int(np.flatnonzero(item_rows == data.item_ids.tolist().index("e3"))[0])
    got = scores(ItemKNNModel.item_queries(model.item_representations(), np.array([i])), model.item_representations())
    assert np.allclose(got[0], S[i])


def test_knn_with_the_followed_block_saves_and_loads_to_the_same_scores(tmp_path) -> None:
    end = dt.datetime(2026, 3, 1, tzinfo=dt.UTC)
    data = _follow_data(end)
    model = ItemKNNModel(similarity="cosine", neighbours=20)  # the defaults weigh the term by followed plays
    fit_on(model, data.interactions, None, item_context(data, "interactions"))
    U = model.user_representations()
    assert U.shape[1] == 2 * model.item_representations().shape[0]
    model.save(tmp_path)
    back = ItemKNNModel.load(tmp_path)
    assert np.array_equal(scores(back.user_representations(), back.item_representations()),
                          scores(U, model.item_representations()))


def test_without_first_play_times_every_play_counts_alike_and_the_record_says_so() -> None:
    """A dataset written before first-play times: the term is the unweighted one, and says why."""
    end = dt.datetime(2026, 3, 1, tzinfo=dt.UTC)
    data = _follow_data(end)
    data.first_play = None
    ctx = item_context(data, "interactions")
    assert ctx is not None and ctx.newest_rank is None
    old, model = _e7_scores(ItemKNNModel(similarity="cosine", neighbours=20, series_weight=1.0, series_catch_up=0.1),
                            data, ctx)
    alike, _ = _e7_scores(ItemKNNModel(similarity="cosine", neighbours=20, series_weight=1.0, series_catch_up=1.0),
                          data, ctx)
    assert np.allclose(old, alike)
    assert "no first-play times" in model.series["follow"]


def test_a_fit_on_part_of_the_matrix_weighs_only_the_pairs_it_holds() -> None:
    """The search fits on the training part minus held-out positives, with the training part's context:
    the followed block holds only pairs of the matrix fit (nothing held out leaks in)."""
    end = dt.datetime(2026, 3, 1, tzinfo=dt.UTC)
    data = _follow_data(end)
    ctx = item_context(data, "interactions")
    keep = np.ones(data.interactions.shape[1], np.float32)
    keep[data.item_ids.tolist().index("e6")] = 0  # e6's plays held out
    part = sp.csr_matrix(data.interactions @ sp.diags(keep), dtype=np.float32)
    part.eliminate_zeros()
    model = ItemKNNModel(similarity="cosine", neighbours=20)
    fitted = fit_on(model, part, None, ctx)
    U = sp.csr_matrix(fitted.user_factors)
    n = len(fitted.item_cols)
    followed_block = U[:, n:]
    assert followed_block.nnz == model.series["followed_pairs"] > 0
    assert (followed_block.astype(bool) > U[:, :n].astype(bool)).nnz == 0  # a subset of the fitted pairs
