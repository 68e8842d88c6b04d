"""The statistics of an experiment's readout: pure functions over events, no I/O.

Two steps:

1. ``aggregate(events, ...)`` -> :class:`Aggregates`: per arm, one row per **user** (the unit of
   randomisation, hence of every variance here) with the sums the metrics are ratios of, and the distinct
   (user, item) pairs shown (coverage). Events are de-duplicated by ``event_id`` (a client's retried POST);
   users seen in two arms (a salt or config change mid-experiment) are excluded and counted.
2. ``analyse(agg, ...)`` -> a JSON-able dict: per arm and metric an estimate with a confidence interval; per
   treatment arm the difference to the default arm (absolute and relative, with intervals); the
   sample-ratio-mismatch check; the always-valid sequential test of the primary metric; guardrails.

Metrics (per arm; ``u`` = users of the arm, every ratio is a ratio of per-user sums):

- ``exposure``: impressions per user (plus the counts of users and impressions);
- ``click_through``: clicks / impressions;
- ``plays_per_impression``: plays / impressions;
- ``play_through``: sum of min(1, seconds played / item duration) / plays whose item duration is known;
- ``coverage``: distinct items shown / catalogue items (interval: Poisson bootstrap over users, seeded);
- ``novelty``: mean self-information -log2((users who played i + 1) / (users + 1)) of the items shown.

Intervals of ratio metrics use the delta method with users as the unit: for per-user sums x, y over n users,
R = sum(x) / sum(y) and Var(R) = (s_xx - 2 R s_xy + R^2 s_yy) / (n mean(y)^2).

**Sample-ratio mismatch** (Fabijan et al., KDD 2019): a chi-square test of users per arm against the
configured shares; below ``srm_alpha`` (e.g. 0.001) the assignment or the logging is broken and no metric
should be read: the decision says so.

**Sequential test** (mixture SPRT, Johari et al. 2017/2022): for the difference of the primary metric
between a treatment arm and the default arm, with estimate D and variance V, the normal-mixture likelihood
ratio with mixing variance tau^2 is

    Lambda = sqrt(V / (V + tau^2)) * exp(D^2 tau^2 / (2 V (V + tau^2)))

and the always-valid p-value is the running minimum over the looks of min(1, 1 / Lambda); the matching
confidence sequence is D +- sqrt(V (V + tau^2) / tau^2 * (2 log(1/alpha) + log((V + tau^2) / V))).
Rejecting when p < alpha at *any* look keeps the false-positive rate at or below alpha however often one
looks (a daily readout is many looks). tau is fixed at the first look (``MIXTURE_RELATIVE_SD`` times the
default arm's value) and carried to later looks. With several treatment arms, alpha is split (Bonferroni).

**Guardrails**: metric -> largest tolerated relative drop (e.g. -0.05). A guardrail is *breached* when the
always-valid interval of the difference lies wholly below the tolerated drop (confidently worse than
allowed), *at risk* when the estimate is below it but the interval is not.
"""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np

METRICS = ("exposure", "click_through", "plays_per_impression", "play_through", "coverage", "novelty")
RATIO_METRICS = {  # metric -> (numerator, denominator) of per-user sums
    "exposure": ("impressions", "ones"),
    "click_through": ("clicks", "impressions"),
    "plays_per_impression": ("plays", "impressions"),
    "play_through": ("play_through", "plays_timed"),
    "novelty": ("novelty", "items_shown"),
}
SUMS = ("impressions", "items_shown", "clicks", "plays", "play_through", "plays_timed", "novelty")
MIXTURE_RELATIVE_SD = 0.1   # tau = this x the default arm's primary metric at the first look
BOOTSTRAP_ALWAYS_COVERED = 30  # items shown to this many users are covered in every bootstrap replicate


class ReadoutError(ValueError):
    """The events cannot be read out (e.g. a metric or arm not known)."""


@dataclass
class ArmData:
    """One arm: per-user sums (arrays of equal length: one entry per user) and the distinct items shown."""

    sums: dict[str, np.ndarray]
    pair_user: np.ndarray = field(default_factory=lambda: np.zeros(0, np.int64))  # distinct (user, item) pairs
    pair_item: np.ndarray = field(default_factory=lambda: np.zeros(0, np.int64))
    user_codes: np.ndarray | None = None  # index of each user into Aggregates.user_ids

    def subset(self, keep: np.ndarray) -> ArmData:
        """The arm restricted to the users where ``keep`` (one bool per user of the arm) holds."""
        local = np.full(len(keep), -1, np.int64)
        local[keep] = np.arange(int(keep.sum()))
        sel = local[self.pair_user] >= 0 if len(self.pair_user) else np.zeros(0, bool)
        return ArmData(sums={k: v[keep] for k, v in self.sums.items()}, pair_user=local[self.pair_user[sel]],
                       pair_item=self.pair_item[sel],
                       user_codes=self.user_codes[keep] if self.user_codes is not None else None)

    @property
    def users(self) -> int:
        return len(self.sums["impressions"])

    @classmethod
    def from_sums(cls, **arrays: Any) -> ArmData:
        n = len(next(iter(arrays.values())))
        sums = {k: np.zeros(n, np.float64) for k in SUMS}
        for k, v in arrays.items():
            if k not in SUMS:
                raise ReadoutError(f"unknown per-user sum {k!r} (known: {SUMS})")
            sums[k] = np.asarray(v, np.float64)
        return cls(sums=sums)


@dataclass
class Aggregates:
    arms: dict[str, ArmData]
    n_items: int                       # catalogue size (coverage denominator)
    events_in: int = 0
    events_used: int = 0
    duplicates: int = 0                # events with an event_id seen before (a client's retry)
    not_in_experiment: int = 0         # events of other experiments or of users outside the experiment
    unknown_arm: dict[str, int] = field(default_factory=dict)
    conflicting_users: int = 0         # users seen in two arms: excluded
    orphan_users: int = 0              # users with clicks/plays but no impression: excluded from ratios
    meta: dict[str, Any] = field(default_factory=dict)
    user_ids: Any = None               # Arrow array: the user id of each user code

    def subset_users(self, keep: Any) -> Aggregates:
        """The same readout over the users where ``keep(user_ids) -> bool array`` holds (e.g. an earlier look:
        the users seen by then)."""
        mask = np.asarray(keep(self.user_ids), bool)
        arms = {a: d.subset(mask[d.user_codes]) for a, d in self.arms.items()}
        return dataclasses.replace(self, arms=arms)


# ---- step 1: events -> per-user sums -------------------------------------------------------------------

def aggregate(events: Any, *, experiment: str, arms: Sequence[str], item_duration: Mapping[str, float] | None = None,
              item_users: Mapping[str, int] | None = None, popularity_users: int = 0,
              catalogue_items: int | None = None) -> Aggregates:
    """Per-arm per-user sums of ``events`` (an Arrow table with the feedback columns) for ``experiment``.

    ``item_duration``: item -> seconds (play_through); ``item_users`` / ``popularity_users``: users who
    played each item and all users, in the popularity reference (novelty; items absent count 0).
    """
    import pyarrow as pa
    import pyarrow.compute as pc

    n_in = events.num_rows
    t = events.filter(pc.fill_null(pc.equal(events["experiment"], experiment), False)) if n_in else events
    t = t.filter(pc.is_valid(t["arm"])) if t.num_rows else t
    not_in = n_in - t.num_rows
    # de-duplicate by event_id, keeping the first occurrence in stream order
    dup = 0
    if t.num_rows:
        t = t.append_column("__row", pa.array(np.arange(t.num_rows, dtype=np.int64)))
        firsts = t.group_by("event_id", use_threads=False).aggregate([("__row", "min")])["__row_min"]
        dup = t.num_rows - len(firsts)
        if dup:
            t = t.take(pa.array(np.sort(firsts.to_numpy(zero_copy_only=False))))
    unknown: dict[str, int] = {}
    if t.num_rows:
        for vc in pc.value_counts(t["arm"]).to_pylist():
            if vc["values"] not in arms:
                unknown[str(vc["values"])] = int(vc["counts"])
        if unknown:
            t = t.filter(pc.is_in(t["arm"], value_set=pa.array(list(arms), pa.string())))
    n = t.num_rows
    agg = Aggregates(arms={}, n_items=int(catalogue_items or 0), events_in=n_in, duplicates=dup,
                     not_in_experiment=not_in, unknown_arm=unknown)
    if n == 0:
        for a in arms:
            agg.arms[a] = ArmData.from_sums(impressions=np.zeros(0))
        agg.n_items = agg.n_items or 1
        return agg
    arm_code = _codes(pc.index_in(t["arm"], value_set=pa.array(list(arms), pa.string())))
    user_enc = _encode(t["user_id"])
    user = user_enc.indices.to_numpy(zero_copy_only=False).astype(np.int64)
    n_users = len(user_enc.dictionary)
    # one arm per user: users seen in two arms are excluded
    pair = _distinct(user * len(arms) + arm_code)
    per_user_arms = np.bincount(pair // len(arms), minlength=n_users)
    conflict = per_user_arms > 1
    user_arm = np.full(n_users, -1, np.int64)
    single = pair[~conflict[pair // len(arms)]]
    user_arm[single // len(arms)] = single % len(arms)
    type_codes = _codes(pc.index_in(t["type"], value_set=pa.array(["impression", "click", "play"])))
    is_imp, is_click, is_play = type_codes == 0, type_codes == 1, type_codes == 2
    lists = t["item_ids"].combine_chunks()
    lengths = pc.list_value_length(lists).fill_null(0).to_numpy(zero_copy_only=False).astype(np.int64)
    flat_items = pc.list_flatten(lists)
    flat_owner = np.repeat(np.arange(n), lengths)
    # item codes over the flattened lists (impressions' items and the one item of clicks and plays)
    item_enc = _encode(flat_items)
    item_code = item_enc.indices.to_numpy(zero_copy_only=False).astype(np.int64)
    item_names = item_enc.dictionary.to_pylist()
    dur_lookup = np.array([float((item_duration or {}).get(i) or 0.0) for i in item_names], np.float64)
    users_lookup = np.array([float((item_users or {}).get(i, 0)) for i in item_names], np.float64)
    info = -np.log2((users_lookup + 1.0) / (max(popularity_users, 0) + 1.0))
    w = np.zeros(n, np.float64)
    sums: dict[str, np.ndarray] = {}
    sums["impressions"] = np.bincount(user, weights=is_imp.astype(np.float64), minlength=n_users)
    sums["items_shown"] = np.bincount(user, weights=np.where(is_imp, lengths, 0).astype(np.float64),
                                      minlength=n_users)
    sums["clicks"] = np.bincount(user, weights=is_click.astype(np.float64), minlength=n_users)
    sums["plays"] = np.bincount(user, weights=is_play.astype(np.float64), minlength=n_users)
    # play-through: the played item's duration from the catalogue (first item of a play event)
    first_pos = np.cumsum(lengths) - lengths
    has_item = lengths > 0
    play_item = np.full(n, -1, np.int64)
    play_item[has_item] = item_code[first_pos[has_item]]
    secs = t["duration_seconds"].to_numpy(zero_copy_only=False)
    secs = np.nan_to_num(np.asarray(secs, np.float64), nan=0.0)
    item_dur = np.where(play_item >= 0, dur_lookup[np.maximum(play_item, 0)], 0.0)
    timed = is_play & (item_dur > 0)
    w[timed] = np.minimum(1.0, np.maximum(secs[timed], 0.0) / item_dur[timed])
    sums["play_through"] = np.bincount(user, weights=w, minlength=n_users)
    sums["plays_timed"] = np.bincount(user, weights=timed.astype(np.float64), minlength=n_users)
    shown = is_imp[flat_owner]
    sums["novelty"] = np.bincount(user[flat_owner[shown]], weights=info[item_code[shown]], minlength=n_users)
    orphan = (sums["impressions"] == 0) & ~conflict
    agg.conflicting_users = int(conflict.sum())
    agg.orphan_users = int(orphan.sum())
    # distinct (user, item) pairs shown, for coverage
    n_item_codes = max(len(item_names), 1)
    pairs = _distinct(user[flat_owner[shown]] * n_item_codes + item_code[shown])
    pair_user_all, pair_item_all = pairs // n_item_codes, pairs % n_item_codes
    for i, a in enumerate(arms):
        members = np.flatnonzero((user_arm == i) & ~orphan)
        local = np.full(n_users, -1, np.int64)
        local[members] = np.arange(len(members))
        sel = local[pair_user_all] >= 0
        agg.arms[a] = ArmData(sums={k: v[members] for k, v in sums.items()},
                              pair_user=local[pair_user_all[sel]], pair_item=pair_item_all[sel],
                              user_codes=members)
    used_users = (user_arm >= 0) & ~orphan
    agg.events_used = int(used_users[user].sum())
    agg.n_items = int(catalogue_items or 0) or int((np.bincount(item_code[shown]) > 0).sum()) or 1
    agg.meta["items_seen"] = len(item_names)
    agg.user_ids = user_enc.dictionary
    return agg


def _distinct(x: np.ndarray) -> np.ndarray:
    """Sorted distinct values of an int array (sort-based: numpy's hash-based unique is far slower here)."""
    if len(x) == 0:
        return x
    s = np.sort(x)
    return s[np.concatenate([[True], s[1:] != s[:-1]])]


def _encode(arr: Any) -> Any:
    """Dictionary-encode an Arrow array or chunked array into one DictionaryArray."""
    import pyarrow.compute as pc

    if hasattr(arr, "combine_chunks"):
        arr = arr.combine_chunks()
    return pc.dictionary_encode(arr)


def _codes(arr: Any) -> np.ndarray:
    return arr.fill_null(-1).to_numpy(zero_copy_only=False).astype(np.int64)


# ---- step 2: statistics ------------------------------------------------------------------------------

def normal_quantile(p: float) -> float:
    from statistics import NormalDist

    return NormalDist().inv_cdf(p)


def ratio_estimate(x: np.ndarray, y: np.ndarray) -> tuple[float | None, float | None]:
    """(R = sum x / sum y, its delta-method variance) with users as the unit; (None, None) if undefined."""
    n = len(x)
    if n == 0 or y.sum() <= 0:
        return None, None
    mx, my = float(x.mean()), float(y.mean())
    r = mx / my
    if n < 2:
        return r, None
    cov = np.cov(np.vstack([x, y]), ddof=1)
    var = (cov[0, 0] - 2 * r * cov[0, 1] + r * r * cov[1, 1]) / (n * my * my)
    return r, max(float(var), 0.0)


def interval(est: float | None, var: float | None, z: float) -> list[float] | None:
    if est is None or var is None:
        return None
    half = z * math.sqrt(var)
    return [est - half, est + half]


def coverage_bootstrap(arm: ArmData, n_items: int, *, replicates: int, seed: int) -> tuple[float, list[float] | None]:
    """Coverage and a percentile interval from a Poisson bootstrap over users (seeded).

    Items shown to at least ``BOOTSTRAP_ALWAYS_COVERED`` users are counted as covered in every replicate
    (the chance that none of them is drawn is below e^-30), so the work is over the rare items only."""
    if arm.users == 0 or n_items <= 0:
        return 0.0, None
    users_per_item = np.bincount(arm.pair_item)
    covered = int((users_per_item > 0).sum())
    if replicates <= 0 or arm.users < 2:
        return covered / n_items, None
    common = int((users_per_item >= BOOTSTRAP_ALWAYS_COVERED).sum())
    rare = users_per_item[arm.pair_item] < BOOTSTRAP_ALWAYS_COVERED
    ru, ri = arm.pair_user[rare], arm.pair_item[rare]
    rng = np.random.default_rng(seed)
    values = np.empty(replicates)
    for b in range(replicates):
        drawn = rng.poisson(1.0, arm.users) > 0
        values[b] = (common + int((np.bincount(ri[drawn[ru]], minlength=len(users_per_item)) > 0).sum())) / n_items
    lo, hi = np.quantile(values, [0.025, 0.975])
    return covered / n_items, [float(lo), float(hi)]


def srm_check(users: Mapping[str, int], shares: Mapping[str, float], *, threshold: float) -> dict[str, Any]:
    """Chi-square test of users per arm against the configured shares."""
    from scipy.special import gammaincc  # the chi-square survival function: Q(k / 2, x / 2)

    names = list(shares)
    total_share = sum(shares[a] for a in names)
    observed = np.array([users.get(a, 0) for a in names], np.float64)
    n = observed.sum()
    expected = np.array([shares[a] / total_share for a in names]) * n
    if n == 0 or len(names) < 2:
        return {"users": dict(users), "expected": dict(zip(names, expected.tolist(), strict=True)), "chi2": None,
                "p_value": None, "threshold": threshold, "mismatch": False, "note": "no users yet"}
    stat = float(((observed - expected) ** 2 / np.where(expected > 0, expected, 1)).sum())
    p = float(gammaincc((len(names) - 1) / 2, stat / 2))
    return {"users": {a: int(users.get(a, 0)) for a in names},
            "expected": {a: round(float(e), 3) for a, e in zip(names, expected, strict=True)},
            "chi2": stat, "p_value": p, "threshold": threshold, "mismatch": p < threshold}


def msprt(diff: float, var: float, tau2: float) -> float:
    """The always-valid p-value of one look, min(1, 1/Lambda) of the normal mixture SPRT."""
    if var <= 0 or tau2 <= 0:
        return 1.0
    log_lr = 0.5 * math.log(var / (var + tau2)) + diff * diff * tau2 / (2 * var * (var + tau2))
    return 1.0 if log_lr <= 0 else min(1.0, math.exp(-log_lr))


def confidence_sequence(diff: float, var: float, tau2: float, alpha: float) -> list[float] | None:
    """The always-valid (1 - alpha) interval for the difference that matches ``msprt``."""
    if var <= 0 or tau2 <= 0:
        return None
    half = math.sqrt(var * (var + tau2) / tau2 * (2 * math.log(1 / alpha) + math.log((var + tau2) / var)))
    return [diff - half, diff + half]


@dataclass
class SequentialState:
    """What a look carries to the next, per treatment arm: tau^2 (fixed at the first look), the running
    minimum of the always-valid p-value and the looks so far."""

    tau2: float | None = None
    p_min: float = 1.0
    looks: int = 0

    def as_dict(self) -> dict[str, Any]:
        return {"tau2": self.tau2, "p_min": self.p_min, "looks": self.looks}

    @classmethod
    def from_dict(cls, d: Mapping[str, Any] | None) -> SequentialState:
        if not d:
            return cls()
        return cls(tau2=d.get("tau2"), p_min=float(d.get("p_min", 1.0)), looks=int(d.get("looks", 0)))


def metric_estimates(agg: Aggregates, arm: str, *, z: float, bootstrap: int, seed: int) -> dict[str, Any]:
    data = agg.arms[arm]
    out: dict[str, Any] = {}
    for m in METRICS:
        if m == "coverage":
            est, ci = coverage_bootstrap(data, agg.n_items, replicates=bootstrap, seed=seed)
            out[m] = {"value": est, "ci": ci, "var": None}
            continue
        num, den = RATIO_METRICS[m]
        y = np.ones(data.users) if den == "ones" else data.sums[den]
        r, var = ratio_estimate(data.sums[num], y)
        out[m] = {"value": r, "ci": interval(r, var, z), "var": var}
    out["exposure"].update(users=data.users, impressions=int(data.sums["impressions"].sum()),
                           clicks=int(data.sums["clicks"].sum()), plays=int(data.sums["plays"].sum()))
    return out


def analyse(agg: Aggregates, *, shares: Mapping[str, float], default_arm: str, primary_metric: str,
            guardrails: Mapping[str, float] | None = None, alpha: float = 0.05, srm_alpha: float = 0.001,
            previous: Mapping[str, Any] | None = None, bootstrap: int = 200, seed: int = 0) -> dict[str, Any]:
    """The readout of one look. ``previous``: the ``sequential`` block of the last look (or None)."""
    guardrails = dict(guardrails or {})
    for m in [primary_metric, *guardrails]:
        if m not in METRICS:
            raise ReadoutError(f"metric {m!r} is not a readout metric (known: {', '.join(METRICS)})")
    if default_arm not in agg.arms:
        raise ReadoutError(f"default arm {default_arm!r} is not an arm (arms: {sorted(agg.arms)})")
    z = normal_quantile(1 - alpha / 2)
    arms = {a: metric_estimates(agg, a, z=z, bootstrap=bootstrap, seed=seed + i) for i, a in enumerate(agg.arms)}
    srm = srm_check({a: agg.arms[a].users for a in agg.arms}, shares, threshold=srm_alpha)
    treatments = [a for a in agg.arms if a != default_arm]
    alpha_each = alpha / max(len(treatments), 1)
    control = arms[default_arm]
    comparisons: dict[str, Any] = {}
    sequential: dict[str, Any] = {}
    alerts: list[dict[str, Any]] = []
    for a in treatments:
        comp: dict[str, Any] = {}
        for m in METRICS:
            comp[m] = _difference(control[m], arms[a][m], z)
        # the always-valid test of the primary metric
        state = SequentialState.from_dict((previous or {}).get(a))
        c, t = control[primary_metric], arms[a][primary_metric]
        test: dict[str, Any] = {"metric": primary_metric, "alpha": alpha_each}
        if c["value"] is not None and t["value"] is not None and c["var"] is not None and t["var"] is not None:
            diff, var = t["value"] - c["value"], c["var"] + t["var"]
            if state.tau2 is None:
                state.tau2 = (MIXTURE_RELATIVE_SD * abs(c["value"])) ** 2 or 1e-12
            p = msprt(diff, var, state.tau2)
            state.p_min = min(state.p_min, p)
            state.looks += 1
            test.update(difference=diff, p_value_look=p, p_value=state.p_min,
                        interval=confidence_sequence(diff, var, state.tau2, alpha_each),
                        significant=state.p_min < alpha_each)
        else:
            test.update(difference=None, p_value=state.p_min, interval=None, significant=state.p_min < alpha_each,
                        note="not enough data for the primary metric yet")
        test["looks"] = state.looks
        sequential[a] = state.as_dict()
        comp["sequential_test"] = test
        # guardrails: confidently worse than the tolerated relative drop
        guards = {}
        for m, tolerated in guardrails.items():
            guards[m] = _guardrail(control[m], arms[a][m], tolerated, state.tau2, alpha_each)
            if guards[m]["status"] == "breached":
                alerts.append({"kind": "experiment_guardrail",
                               "summary": f"arm {a!r}: guardrail {m} breached ({guards[m]['message']})",
                               "details": {"arm": a, "metric": m, **{k: v for k, v in guards[m].items()
                                                                       if k != "message"}}})
        comp["guardrails"] = guards
        comparisons[a] = comp
    if srm["mismatch"]:
        alerts.insert(0, {"kind": "experiment_srm", "summary": (
            f"sample ratio mismatch: users per arm {srm['users']} against expected {srm['expected']} "
            f"(chi-square p={srm['p_value']:.2e} < {srm_alpha})"), "details": srm})
    decision = _decision(srm, comparisons, default_arm)
    return {"arms": arms, "comparisons": comparisons, "srm": srm, "sequential": sequential,
            "decision": decision, "alerts": alerts, "primary_metric": primary_metric, "alpha": alpha,
            "default_arm": default_arm, "shares": dict(shares),
            "counts": {"events_in": agg.events_in, "events_used": agg.events_used, "duplicates": agg.duplicates,
                       "not_in_experiment": agg.not_in_experiment, "unknown_arm": agg.unknown_arm,
                       "conflicting_users": agg.conflicting_users, "orphan_users": agg.orphan_users,
                       "catalogue_items": agg.n_items}}


def _difference(c: Mapping[str, Any], t: Mapping[str, Any], z: float) -> dict[str, Any]:
    if c["value"] is None or t["value"] is None:
        return {"difference": None, "ci": None, "relative": None, "relative_ci": None}
    diff = t["value"] - c["value"]
    out: dict[str, Any] = {"difference": diff, "ci": None, "relative": None, "relative_ci": None}
    if c["var"] is not None and t["var"] is not None:
        out["ci"] = interval(diff, c["var"] + t["var"], z)
    elif c.get("ci") and t.get("ci"):  # bootstrap metrics: combine the half-widths as normal errors
        half = math.hypot((c["ci"][1] - c["ci"][0]) / 2, (t["ci"][1] - t["ci"][0]) / 2)
        out["ci"] = [diff - half, diff + half]
    if c["value"]:
        rel = t["value"] / c["value"] - 1
        out["relative"] = rel
        if c["var"] is not None and t["var"] is not None:
            var = t["var"] / c["value"] ** 2 + t["value"] ** 2 * c["var"] / c["value"] ** 4
            out["relative_ci"] = interval(rel, var, z)
    return out


def _guardrail(c: Mapping[str, Any], t: Mapping[str, Any], tolerated: float, tau2: float | None,
               alpha: float) -> dict[str, Any]:
    out: dict[str, Any] = {"tolerated_relative_change": tolerated}
    if c["value"] is None or t["value"] is None or not c["value"]:
        return {**out, "status": "no_data", "message": "not enough data"}
    rel = t["value"] / c["value"] - 1
    bound = tolerated * abs(c["value"])  # the tolerated change in the metric's units
    diff = t["value"] - c["value"]
    seq = None
    if c.get("var") is not None and t.get("var") is not None:
        g_tau2 = tau2 if tau2 else (MIXTURE_RELATIVE_SD * abs(c["value"])) ** 2
        seq = confidence_sequence(diff, c["var"] + t["var"], g_tau2 or 1e-12, alpha)
    elif c.get("ci") and t.get("ci"):
        half = math.hypot((c["ci"][1] - c["ci"][0]) / 2, (t["ci"][1] - t["ci"][0]) / 2)
        seq = [diff - half, diff + half]
    out.update(relative_change=rel, difference=diff, interval=seq)
    if seq is not None and seq[1] < bound:
        out.update(status="breached", message=f"{rel:+.2%} vs tolerated {tolerated:+.2%}, "
                   f"interval of the difference [{seq[0]:.4g}, {seq[1]:.4g}] below {bound:.4g}")
    elif rel < tolerated:
        out.update(status="at_risk", message=f"{rel:+.2%} below the tolerated {tolerated:+.2%}, not conclusive yet")
    else:
        out.update(status="ok", message=f"{rel:+.2%} (tolerated {tolerated:+.2%})")
    return out


def _decision(srm: Mapping[str, Any], comparisons: Mapping[str, Any], default_arm: str) -> dict[str, Any]:
    if srm["mismatch"]:
        return {"status": "invalid_srm", "message": "sample ratio mismatch: the assignment or the event logging "
                "is broken; do not read the metrics until it is fixed"}
    breached = [(a, m) for a, c in comparisons.items() for m, g in c["guardrails"].items() if g["status"] == "breached"]
    if breached:
        return {"status": "guardrail_breached", "message": "guardrail breached: " + ", ".join(
            f"{a}: {m}" for a, m in breached)}
    better = [a for a, c in comparisons.items() if c["sequential_test"]["significant"]
              and (c["sequential_test"].get("difference") or 0) > 0]
    worse = [a for a, c in comparisons.items() if c["sequential_test"]["significant"]
             and (c["sequential_test"].get("difference") or 0) < 0]
    if better:
        return {"status": "treatment_better", "arms": better,
                "message": f"{', '.join(better)} better than {default_arm} on the primary metric"}
    if worse:
        return {"status": "treatment_worse", "arms": worse,
                "message": f"{', '.join(worse)} worse than {default_arm} on the primary metric"}
    return {"status": "no_difference_yet", "message": "no significant difference on the primary metric (yet)"}
