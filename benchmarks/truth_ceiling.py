"""The Bayes ceiling of the planted-truth recall: how much of the oracle ANY estimator can expect to reach
from the generator's activity.

The planted truth (``_truth/next_items.parquet``) is each user's ten most likely next items under their
planted tastes. A model sees only the activity; the best it can do is the Bayes decision: the ten unplayed
items most likely to be in the user's truth under the posterior of the tastes given all their events. This
module computes that decision for the generator's own model, exactly:

- the generator is rebuilt from its seed (``skyrec.data.generate``'s catalogue and users: its popularity,
  availability per day, brands and release times -- facts no skyrec model gets -- and, for the check only,
  the planted tastes);
- every event's likelihood under each listening mode is the generator's: a brand's episode ``k`` releases
  behind its newest at the event's time (0.55 x 0.45^k; the first episode takes the tail), an item of a
  genre by that day's popularity among the genre's available items, an item by that day's popularity;
- the priors are the generator's: genres the Plackett-Luce top three of its genre prior, 1, 2 or 3 of them
  weighted (0.4 / 0.4 / 0.2) by Dir(1), each of four brand slots a genre by those weights then a brand by
  brand popularity within it, brand weights Dir(0.8), the brand mode's share Beta(6, 4), genre 0.7 of the
  rest, popular 0.3;
- the posterior is sampled by MCMC, all users at once: Metropolis moves on each brand slot (proposed from
  the user's own events or from the prior) and each genre slot (proposed uniformly), with the events' mode
  assignments summed out; Gibbs steps on the assignments, each brand slot's genre pick, the number of
  weighted genres (Dirichlet-multinomial, weights summed out) and the weights (conjugate).

The chain ``bayes_true_brands_and_genres`` pins each user's brands and genres to their planted ones (only the weights are
sampled): more than any estimator can know, and a check of the sampler. The returned figures are realised
recall as a fraction of the oracle on these users' truth (the Bayes decision maximises the *expected*
recall, so on one draw of users a lucky estimator can pass it by sampling noise, never by much on
thousands of users).
"""

from __future__ import annotations

from math import lgamma
from typing import Any

import numpy as np

BRAND_SLOTS, GENRE_SLOTS = 4, 3
N_GENRES_PRIOR = (0.4, 0.4, 0.2)
#: the chains: from the activity alone, and with each user's planted brands and genres pinned
CHAINS = {"bayes": False, "bayes_true_brands_and_genres": True}


def _events(source: Any, cat: Any, users: Any, start: int, end: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(user index, catalogue index, seconds) of every event of a known user and item in [start, end), by user.
    Every event type comes from the same listening modes, so all are evidence."""
    import pyarrow as pa
    import pyarrow.compute as pc
    import pyarrow.parquet as pq

    c_index = {x: k for k, x in enumerate(cat.item_ids.tolist())}
    u_index = {u: k for k, u in enumerate(users.ids.to_pylist())}
    files = [f for f in sorted(source.rglob("*.parquet")) if "_truth" not in f.parts]
    act = pa.concat_tables([pq.read_table(f, columns=["user_id", "item_id", "event_ts"]) for f in files])
    uid = np.array([u_index.get(u, -1) for u in act.column("user_id").to_pylist()], dtype=np.int64)
    item = np.array([c_index.get(x, -1) for x in act.column("item_id").to_pylist()], dtype=np.int64)
    ts = pc.cast(act.column("event_ts"), pa.int64()).to_numpy() / 1e6
    ok = (uid >= 0) & (item >= 0) & (ts >= start) & (ts < end)
    order = np.argsort(uid[ok], kind="stable")
    return uid[ok][order], item[ok][order], ts[ok][order]


def bayes_ceiling(data: Any, truth: Any, *, chains: tuple[str, ...] = tuple(CHAINS), burn: int = 100,
                  samples: int = 100, seed: int = 0) -> dict[str, dict[str, Any]]:
    """``{chain: figures}``: the Bayes decision's planted-truth recall as a fraction of the oracle, for each of
    ``chains`` (``CHAINS``; see the module's doc). The generator, the events and their likelihoods are set up
    once for all of them. ``truth`` is ``bench_models.generator_data``'s (its metadata names the generator's
    folder and call)."""
    import datetime as dt
    from pathlib import Path

    from bench_models import _truth_recall

    import skyrec.data.generate as gen
    from skyrec.evaluation.offline import Scored

    meta = {k.decode(): v.decode() for k, v in (truth.schema.metadata or {}).items()}
    source, gseed = Path(meta["source"]), int(meta["seed"])
    end = int(dt.datetime.fromisoformat(meta["end"]).timestamp())
    cat = gen._Catalogue(np.random.default_rng([gseed, 1]), int(meta["items"]), end)
    users = gen._Users(gseed, int(meta["users"]), cat)
    n_users, n_items, ng, nbr = users.n, len(cat.item_ids), len(cat.genres), cat.n_brands
    uid, item, ts = _events(source, cat, users, end - int(meta["days"]) * gen.DAY, end)
    n_events = len(uid)
    ustart = np.searchsorted(uid, np.arange(n_users + 1))
    per_user = np.diff(ustart)
    rows = np.arange(n_users)

    # ---- each event's likelihood under "a slot holding its brand", "a slot holding its genre", popular
    ibrand = cat.brand[item].astype(np.int64)
    genre_of = cat.brand_genre[cat.brand].astype(np.int64)
    igenre = genre_of[item]
    t_eff = np.minimum(ts, end - gen.COLD_HOURS * gen.HOUR)
    base = int(cat.release.min()) - 1
    key_all = cat.brand.astype(np.int64) * (1 << 36) + (cat.release - base)
    released = (np.searchsorted(key_all, ibrand * (1 << 36) + (t_eff - base).astype(np.int64), side="right")
                - cat.brand_first[ibrand])
    pos = item - cat.brand_first[ibrand]
    lb = np.where(pos < released, np.where(pos == 0, 0.45 ** np.maximum(released - 1, 0),
                                           0.55 * 0.45 ** np.maximum(released - 1 - pos, 0)), 0.0)
    lg, lp = np.zeros(n_events), np.zeros(n_events)
    day = (ts // gen.DAY * gen.DAY).astype(np.int64)
    for d in np.unique(day):
        m = np.flatnonzero(day == d)
        w = np.diff(np.concatenate([[0.0], gen._DaySampler(cat, int(d), end).global_cum]))
        lg[m] = w[item[m]] / np.maximum(np.bincount(genre_of, weights=w, minlength=ng)[igenre[m]], 1e-300)
        lp[m] = w[item[m]] / w.sum()

    # ---- priors
    gprior = np.array([gen.GENRE_PRIOR[g] for g in cat.genres], dtype=float)
    gprior /= gprior.sum()
    bgenre = cat.brand_genre.astype(np.int64)
    bpop = cat.brand_pop.astype(float)
    bpop_g = np.bincount(bgenre, weights=bpop, minlength=ng)
    # P(brand | genre): by brand popularity within the genre; a genre without brands draws from all of them
    p_bg = np.where((bpop_g > 0)[:, None],
                    (bgenre[None, :] == np.arange(ng)[:, None]) * bpop[None, :] / np.maximum(bpop_g[:, None], 1e-300),
                    bpop[None, :] / bpop.sum())
    cum_bg = np.cumsum(p_bg, axis=1)

    def brand_prior(b: np.ndarray, genres: np.ndarray, gw: np.ndarray) -> np.ndarray:
        return (gw * p_bg[genres, b[:, None]]).sum(axis=1)

    def log_prior(brands: np.ndarray, genres: np.ndarray, gw: np.ndarray) -> np.ndarray:
        p = gprior[genres]
        pl = (np.log(p[:, 0]) + np.log(p[:, 1]) - np.log(1 - p[:, 0]) + np.log(p[:, 2])
              - np.log(1 - p[:, 0] - p[:, 1]))
        return pl + sum(np.log(np.maximum(brand_prior(brands[:, s], genres, gw), 1e-300)) for s in range(BRAND_SLOTS))

    def proposal(b: np.ndarray, genres: np.ndarray, gw: np.ndarray) -> np.ndarray:
        """The brand move's proposal probability: half one of the user's events' brands, half the prior."""
        return 0.5 * by_brand[rows, b] / np.maximum(per_user, 1) + 0.5 * brand_prior(b, genres, gw)

    def components(brands: np.ndarray, genres: np.ndarray, n_g: np.ndarray) -> np.ndarray:
        L = np.empty((n_events, BRAND_SLOTS + GENRE_SLOTS + 1))
        for s in range(BRAND_SLOTS):
            L[:, s] = lb * (brands[uid, s] == ibrand)
        for s in range(GENRE_SLOTS):
            L[:, BRAND_SLOTS + s] = lg * (genres[uid, s] == igenre) * (s < n_g[uid])
        L[:, -1] = lp
        return L

    def mode_weights(pb: np.ndarray, bw: np.ndarray, gw: np.ndarray) -> np.ndarray:
        return np.concatenate([pb[:, None] * bw, (1 - pb)[:, None] * 0.7 * gw, (1 - pb)[:, None] * 0.3], axis=1)

    def loglik(L: np.ndarray, W: np.ndarray) -> np.ndarray:
        per_event = np.log(np.maximum((L * W[uid]).sum(axis=1), 1e-300))
        return np.bincount(uid, weights=per_event, minlength=n_users)

    def draw(p_cum: np.ndarray) -> np.ndarray:  # one categorical draw per row of cumulative probabilities
        return (rng.random(len(p_cum))[:, None] * p_cum[:, -1:] > p_cum).sum(axis=1).clip(0, p_cum.shape[1] - 1)

    # ---- each user's events by brand (the brand moves' proposal)
    by_brand = np.zeros((n_users, nbr))
    np.add.at(by_brand, (uid, ibrand), 1)

    # ---- the truth's scoring form at the end, as the generator's _next_items computes it: from its own arrays
    # and over every catalogue item (an item nobody played can still push others out of a sampled top 10);
    # bench_models._generator_form rebuilds the same form from the published truth catalogue, over the
    # items anybody played, for the plug-in references (0.997 of the oracle with the planted tastes)
    w_end = np.diff(np.concatenate([[0.0], gen._DaySampler(cat, end - gen.HOUR, end).global_cum]))
    gtop_i, gtop_p = np.zeros((ng, 20), np.int64), np.zeros((ng, 20))
    for g in range(ng):
        idx = np.flatnonzero((genre_of == g) & (w_end > 0))
        idx = idx[np.argsort(-w_end[idx], kind="stable")[:20]]
        total = w_end[genre_of == g].sum()
        gtop_i[g, :len(idx)] = idx
        gtop_p[g, :len(idx)] = w_end[idx] / total if total > 0 else w_end[idx]
    top_all = np.argsort(-w_end, kind="stable")[:20]
    p_all = w_end[top_all] / w_end.sum()
    cutoff = end - gen.COLD_HOURS * gen.HOUR
    b_ep, b_geo = np.zeros((nbr, 6), np.int64), np.zeros((nbr, 6))
    for b in range(nbr):
        first, count = int(cat.brand_first[b]), int(cat.brand_count[b])
        rel = int(np.searchsorted(cat.release[first:first + count], cutoff, side="right"))
        for k in range(min(rel, 6)):
            b_ep[b, k], b_geo[b, k] = first + rel - 1 - k, 0.55 * 0.45 ** k

    def next_item_scores() -> np.ndarray:
        S = np.zeros((n_users, n_items))
        for s in range(BRAND_SLOTS):
            np.add.at(S, (np.repeat(rows, 6), b_ep[brands[:, s]].ravel()),
                      ((pb * bw[:, s])[:, None] * b_geo[brands[:, s]]).ravel())
        for s in range(GENRE_SLOTS):
            np.add.at(S, (np.repeat(rows, 20), gtop_i[genres[:, s]].ravel()),
                      (((1 - pb) * 0.7 * gw[:, s])[:, None] * gtop_p[genres[:, s]]).ravel())
        S[:, top_all] += ((1 - pb) * 0.3)[:, None] * p_all[None, :]
        return S

    # the decision's items and users: the data's, in the generator's indices
    c_index = {x: k for k, x in enumerate(cat.item_ids.tolist())}
    u_index = {u: k for k, u in enumerate(users.ids.to_pylist())}
    cols = np.array([c_index[x] for x in data.item_ids.tolist()], dtype=np.int64)
    urows = np.array([u_index[u] for u in data.user_ids.tolist()], dtype=np.int64)
    identity = np.eye(len(cols), dtype=np.float32)
    oracle = _truth_recall(data, None, truth)
    out: dict[str, dict[str, Any]] = {}
    for label in chains:
        true_support = CHAINS[label]
        rng = np.random.default_rng(seed)  # each chain as if run alone
        # the start: the user's most played genres and brands (or the planted ones)
        if true_support:
            genres, brands = users.genres.astype(np.int64), users.brands.astype(np.int64)
            n_g = (users.genre_w > 0).sum(axis=1)
        else:
            by_genre = np.zeros((n_users, ng))
            np.add.at(by_genre, (uid, igenre), 1)
            genres = np.argsort(-(by_genre + 1e-3 * gprior[None, :]), axis=1, kind="stable")[:, :GENRE_SLOTS]
            n_g = np.full(n_users, GENRE_SLOTS)
            brands = np.argsort(-(by_brand + 1e-6 * bpop[None, :]), axis=1, kind="stable")[:, :BRAND_SLOTS]
            for s in range(BRAND_SLOTS):  # every brand must be drawable from the start's genres
                bad = ~(bgenre[brands[:, s]][:, None] == genres).any(axis=1)
                brands[bad, s] = draw(cum_bg[genres[bad, 0]])
        pb = np.full(n_users, 0.6)
        bw = np.full((n_users, BRAND_SLOTS), 1.0 / BRAND_SLOTS)
        gw = (np.arange(GENRE_SLOTS)[None, :] < n_g[:, None]) / n_g[:, None].astype(float)


        in_top = np.zeros((n_users, n_items), np.float32)
        mean_score = np.zeros((n_users, n_items), np.float32)
        L = components(brands, genres, n_g)
        lgamma_v = np.vectorize(lgamma)
        for sweep in range(burn + samples):
            if not true_support:
                W = mode_weights(pb, bw, gw)
                current = loglik(L, W) + log_prior(brands, genres, gw)
                for s in range(BRAND_SLOTS):
                    # proposal: half the time the brand of one of the user's events, half a draw from the prior
                    e = np.minimum(ustart[:-1] + np.floor(rng.random(n_users) * np.maximum(per_user, 1)).astype(np.int64),
                                   n_events - 1)
                    from_prior = draw(cum_bg[genres[rows, draw(np.cumsum(gw, axis=1))]])
                    proposed = brands.copy()
                    proposed[:, s] = np.where((rng.random(n_users) < 0.5) & (per_user > 0), ibrand[e], from_prior)

                    Ln = L.copy()
                    Ln[:, s] = lb * (proposed[uid, s] == ibrand)
                    new = loglik(Ln, W) + log_prior(proposed, genres, gw)
                    a = (new - current + np.log(np.maximum(proposal(brands[:, s], genres, gw), 1e-300))
                         - np.log(np.maximum(proposal(proposed[:, s], genres, gw), 1e-300)))
                    accept = np.log(rng.random(n_users)) < a
                    brands[accept, s] = proposed[accept, s]
                    current = np.where(accept, new, current)
                    L[:, s] = lb * (brands[uid, s] == ibrand)
                for s in range(GENRE_SLOTS):  # a uniformly proposed genre (symmetric), distinct from the others
                    proposed = genres.copy()
                    proposed[:, s] = rng.integers(0, ng, n_users)
                    clash = (proposed[:, s][:, None] == np.delete(genres, s, axis=1)).any(axis=1)
                    Ln = L.copy()
                    Ln[:, BRAND_SLOTS + s] = lg * (proposed[uid, s] == igenre) * (s < n_g[uid])
                    new = loglik(Ln, W) + log_prior(brands, proposed, gw)
                    accept = (np.log(rng.random(n_users)) < new - current) & ~clash
                    genres[accept, s] = proposed[accept, s]
                    current = np.where(accept, new, current)
                    L[:, BRAND_SLOTS + s] = lg * (genres[uid, s] == igenre) * (s < n_g[uid])
            # Gibbs: each event's mode, each brand slot's genre pick, the number of weighted genres, the weights
            z = draw(np.cumsum(L * mode_weights(pb, bw, gw)[uid], axis=1))
            counts = np.zeros((n_users, BRAND_SLOTS + GENRE_SLOTS + 1))
            np.add.at(counts, (uid, z), 1)
            in_genre = counts[:, BRAND_SLOTS:BRAND_SLOTS + GENRE_SLOTS].copy()
            for s in range(BRAND_SLOTS):
                in_genre[rows, draw(np.cumsum(gw * p_bg[genres, brands[:, s][:, None]], axis=1))] += 1
            if not true_support:
                needed = np.where(in_genre[:, 2] > 0, 3, np.where(in_genre[:, 1] > 0, 2, 1))
                total = in_genre.sum(axis=1)
                logp = np.full((n_users, GENRE_SLOTS), -np.inf)
                for k in range(1, GENRE_SLOTS + 1):
                    dm = lgamma_v(k) - lgamma_v(k + total) + sum(lgamma_v(1 + in_genre[:, j]) for j in range(k))
                    logp[:, k - 1] = np.where(needed <= k, np.log(N_GENRES_PRIOR[k - 1]) + dm, -np.inf)
                n_g = 1 + draw(np.cumsum(np.exp(logp - logp.max(axis=1, keepdims=True)), axis=1))
            weighted = np.arange(GENRE_SLOTS)[None, :] < n_g[:, None]
            pb = rng.beta(6 + counts[:, :BRAND_SLOTS].sum(axis=1), 4 + counts[:, BRAND_SLOTS:].sum(axis=1))
            bw = rng.gamma(0.8 + counts[:, :BRAND_SLOTS])
            bw /= bw.sum(axis=1, keepdims=True)
            gw = np.where(weighted, rng.gamma(np.where(weighted, 1 + in_genre, 1.0)), 0.0)
            gw /= gw.sum(axis=1, keepdims=True)
            L = components(brands, genres, n_g)
            if sweep >= burn:
                S = next_item_scores()
                np.add.at(in_top, (np.repeat(rows, 10), np.argpartition(-S, 10, axis=1)[:, :10].ravel()), 1)
                mean_score += S

        # the decision: per user, the unplayed items most often in the posterior's top 10 (ties by mean score)
        mean = mean_score[np.ix_(urows, cols)] / samples
        decision = in_top[np.ix_(urows, cols)] / samples + 1e-3 * mean / max(float(mean.max()), 1e-12)
        found = np.array([len(set(brands[u]) & set(users.brands[u])) / len(set(users.brands[u])) for u in urows])
        recall = {k: _truth_recall(data, Scored(x, identity, None), truth) / oracle
                  for k, x in (("fraction_of_oracle", decision), ("posterior_mean_ranking", mean))}
        out[label] = {**{k: round(v, 4) for k, v in recall.items()},
                      "planted_brands_in_the_last_sample": round(float(found.mean()), 3),
                      "events": n_events, "burn": burn, "samples": samples}
    return out
