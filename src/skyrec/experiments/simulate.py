"""Simulated listeners for experiments: known truth in, readout out.

Two simulators:

- :func:`synthetic_events` draws an event table (the ``feedback`` columns) directly, fast, with known
  click and play rates per arm and per-user heterogeneity (so that users, not events, are the unit): for the
  repeated-run tests of the statistics (A/A false positives, SRM, power) and the readout benchmark.
- :class:`ListenerSimulation` drives the real API: listeners with planted tastes (each has one favourite
  topic, as in :mod:`skyrec.evaluation.synthetic`) request the experiment's rail, receive their arm's
  recommendations, click and play items with probabilities from their tastes (an item of their topic is
  far more likely to be played, and played longer) and post the impressions, clicks and plays through
  ``POST /v1/events``. Arms are hand-built publications written into Redis with the publisher's key layout
  (:func:`publish_arm`): a "tasteful" arm recommends items of the listener's topic, a "random" one anything.
"""

from __future__ import annotations

import datetime as dt
import json
import uuid
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from skyrec.publish.keys import Keys


def synthetic_events(n_users: int, shares: Mapping[str, float], *, experiment: str = "exp",
                     click_rate: Mapping[str, float] | float = 0.3, play_rate: Mapping[str, float] | float = 0.2,
                     impressions_per_user: float = 3.0, items: int = 2000, items_per_impression: int = 10,
                     assigned_shares: Mapping[str, float] | None = None, seed: int = 0,
                     heterogeneity: float = 2.0) -> tuple[Any, dict[str, float]]:
    """(events table, item -> duration seconds). Rates are per impression, scaled per user by a
    Gamma(heterogeneity, 1/heterogeneity) propensity (mean 1). ``assigned_shares``: assign with these shares
    instead of ``shares`` (a deliberately skewed assignment)."""
    import pyarrow as pa

    rng = np.random.default_rng(seed)
    arms = list(shares)
    split = assigned_shares or shares
    p = np.array([split[a] for a in arms], np.float64)
    arm_of_user = rng.choice(len(arms), size=n_users, p=p / p.sum())
    propensity = rng.gamma(heterogeneity, 1.0 / heterogeneity, n_users)

    def per_arm(rate: Mapping[str, float] | float) -> np.ndarray:
        return np.array([rate[a] if isinstance(rate, Mapping) else rate for a in arms], np.float64)

    n_imp_user = 1 + rng.poisson(max(impressions_per_user - 1, 0), n_users)
    imp_user = np.repeat(np.arange(n_users), n_imp_user)
    n_imp = len(imp_user)
    lam_click = per_arm(click_rate)[arm_of_user[imp_user]] * propensity[imp_user]
    lam_play = per_arm(play_rate)[arm_of_user[imp_user]] * propensity[imp_user]
    clicks = np.minimum(rng.poisson(lam_click), items_per_impression)
    plays = np.minimum(rng.poisson(lam_play), items_per_impression)
    # items: Zipf-like popularity
    weights = 1.0 / np.arange(1, items + 1)
    cum = np.cumsum(weights / weights.sum())
    shown = np.minimum(np.searchsorted(cum, rng.random((n_imp, items_per_impression))), items - 1)
    click_imp = np.repeat(np.arange(n_imp), clicks)
    play_imp = np.repeat(np.arange(n_imp), plays)
    click_item = shown[click_imp, rng.integers(0, items_per_impression, len(click_imp))]
    play_item = shown[play_imp, rng.integers(0, items_per_impression, len(play_imp))]
    durations = rng.integers(300, 3600, items).astype(np.float64)
    played = durations[play_item] * rng.beta(2, 2, len(play_imp))
    n = n_imp + len(click_imp) + len(play_imp)
    user = np.concatenate([imp_user, imp_user[click_imp], imp_user[play_imp]])
    kind = np.concatenate([np.zeros(n_imp, np.int8), np.ones(len(click_imp), np.int8),
                           np.full(len(play_imp), 2, np.int8)])
    offsets = np.concatenate([np.arange(0, n_imp * items_per_impression + 1, items_per_impression),
                              n_imp * items_per_impression + np.arange(1, len(click_imp) + len(play_imp) + 1)])
    values = np.concatenate([shown.ravel(), click_item, play_item])
    item_names = pa.array(np.char.add("i", np.arange(items).astype(str)))
    arm_names = pa.array(arms, pa.string())
    types = pa.array(["impression", "click", "play"], pa.string())
    duration = np.concatenate([np.full(n_imp + len(click_imp), np.nan), played])
    table = pa.table({
        "event_id": pa.array(np.char.add("e", np.arange(n).astype(str))),
        "type": types.take(pa.array(kind)),
        "user_id": pa.array(np.char.add("u", user.astype(str))),
        "experiment": pa.array(np.full(n, experiment)),
        "arm": arm_names.take(pa.array(arm_of_user[user])),
        "item_ids": pa.ListArray.from_arrays(pa.array(offsets.astype(np.int32)), item_names.take(pa.array(values))),
        "duration_seconds": pa.array(duration, from_pandas=True),
    })
    return table, {f"i{i}": float(d) for i, d in enumerate(durations)}


# ---- the API-level simulation ------------------------------------------------------------------------------


def publish_arm(r: Any, prefix: str, variant: str, recs: Mapping[str, list[str]], items: Mapping[str, dict[str, Any]],
                *, evaluation: dict[str, Any] | None = None, publication: str | None = None) -> dict[str, Any]:
    """Write one hand-built publication of ``variant`` (the publisher's key layout: the publication's keys
    first, then the variant's pointer). Returns the pointer."""
    keys = Keys(prefix)
    pub = publication or f"sim.{uuid.uuid4().hex[:12]}"
    pipe = r.pipeline(transaction=False)
    for user, lst in recs.items():
        pipe.set(keys.rec(variant, pub, user), json.dumps([[item, round(1.0 - k / 1000, 4)] for k, item in
                                                             enumerate(lst)]))
    fallback = list(items)[:20]
    pipe.set(keys.fallback(variant, pub), json.dumps([[item, 1.0] for item in fallback]))
    pipe.hset(keys.items(variant, pub), mapping={k: json.dumps(v) for k, v in items.items()})
    if recs:
        pipe.sadd(keys.users(variant, pub), *recs)
    pipe.execute()
    now = dt.datetime.now(dt.UTC).isoformat()
    pointer = {"publication": pub, "model": "simulated", "model_version": "sim", "run_key": pub.split(".")[-1],
               "published_at": now, "users": len(recs), "items": len(items),
               "evaluation": evaluation or {"ndcg_at_k": None}}
    old = r.get(keys.current(variant))
    if old is not None:
        r.lpush(keys.history(variant), old)
    r.set(keys.current(variant), json.dumps(pointer))
    return pointer


@dataclass
class Listeners:
    """Planted tastes: each listener's favourite topic, each item's topic and duration."""

    user_topic: np.ndarray
    item_topic: np.ndarray
    duration: np.ndarray
    p_click_on: float = 0.35     # P(click | shown item of the listener's topic)
    p_click_off: float = 0.04    # P(click | any other item)
    p_play: float = 0.8          # P(play | click)
    seed: int = 0
    rng: np.random.Generator = field(init=False)

    def __post_init__(self) -> None:
        self.rng = np.random.default_rng(self.seed)

    @classmethod
    def planted(cls, n_users: int, n_items: int, n_topics: int = 8, seed: int = 0, **kw: Any) -> Listeners:
        rng = np.random.default_rng(seed)
        return cls(user_topic=rng.integers(0, n_topics, n_users), item_topic=np.arange(n_items) % n_topics,
                   duration=rng.integers(600, 3600, n_items).astype(np.float64), seed=seed + 1, **kw)

    def user(self, u: int) -> str:
        return f"listener{u}"

    def item(self, i: int) -> str:
        return f"prog{i}"

    def catalogue(self) -> dict[str, dict[str, Any]]:
        return {self.item(i): {"title": f"Programme {i}", "genres": [f"topic{t}"],
                               "duration_seconds": int(self.duration[i])} for i, t in enumerate(self.item_topic)}

    def tasteful(self, k: int = 10) -> dict[str, list[str]]:
        """Recommendations from each listener's topic (what a good model learns)."""
        out = {}
        for u, t in enumerate(self.user_topic):
            members = np.flatnonzero(self.item_topic == t)
            out[self.user(u)] = [self.item(i) for i in self.rng.choice(members, size=min(k, len(members)),
                                                                        replace=False)]
        return out

    def random(self, k: int = 10) -> dict[str, list[str]]:
        """Recommendations ignoring taste."""
        n = len(self.item_topic)
        return {self.user(u): [self.item(i) for i in self.rng.choice(n, size=k, replace=False)]
                for u in range(len(self.user_topic))}

    def react(self, u: int, shown: list[str]) -> list[tuple[str, str, float | None]]:
        """The listener's clicks and plays on ``shown``: [(type, item, seconds or None)]."""
        out: list[tuple[str, str, float | None]] = []
        for name in shown:
            i = int(name.removeprefix("prog"))
            on = self.item_topic[i] == self.user_topic[u]
            if self.rng.random() < (self.p_click_on if on else self.p_click_off):
                out.append(("click", name, None))
                if self.rng.random() < self.p_play:
                    share = self.rng.beta(5, 2) if on else self.rng.beta(2, 5)
                    out.append(("play", name, round(float(self.duration[i] * share), 1)))
        return out


@dataclass
class SimulationResult:
    requests: int = 0
    events_posted: int = 0
    by_arm: dict[str, int] = field(default_factory=dict)
    errors: list[str] = field(default_factory=list)


class ListenerSimulation:
    """Listeners using the API (any client with httpx's ``get``/``post``: a TestClient over the app, or an
    ``httpx.Client`` on a running server)."""

    def __init__(self, client: Any, listeners: Listeners, rail: str, *, batch: int = 200,
                 lose: Mapping[str, float] | None = None) -> None:
        """The API assigns each listener to an arm (the answer names ``experiment``, ``arm`` and an
        ``impression_id``); ``lose``: arm -> share of its visits whose events are lost (a logging bug: what
        the SRM check is for)."""
        self.client, self.listeners, self.rail, self.batch = client, listeners, rail, batch
        self.lose = dict(lose or {})
        self._pending: list[dict[str, Any]] = []
        self.result = SimulationResult()

    def _post(self, force: bool = False) -> None:
        if not self._pending or (len(self._pending) < self.batch and not force):
            return
        resp = self.client.post("/v1/events", json={"events": self._pending})
        if not 200 <= resp.status_code < 300:
            self.result.errors.append(f"POST /v1/events {resp.status_code}: {resp.text[:300]}")
        else:
            self.result.events_posted += len(self._pending)
        self._pending = []

    def visit(self, u: int, now: dt.datetime) -> None:
        user = self.listeners.user(u)
        resp = self.client.get(f"/v1/recommendations/{self.rail}/{user}", params={"limit": 10})
        self.result.requests += 1
        if resp.status_code != 200:
            self.result.errors.append(f"GET recommendations {user}: {resp.status_code} {resp.text[:200]}")
            return
        body = resp.json()
        shown = [x["id"] for x in body.get("items", [])]
        impression_id = body.get("impression_id")
        if not shown or not impression_id:
            self.result.errors.append(f"{user}: answer without items or impression_id: {str(body)[:200]}")
            return
        arm = body.get("arm") or "-"
        self.result.by_arm[arm] = self.result.by_arm.get(arm, 0) + 1
        if self.lose.get(arm) and self.listeners.rng.random() < self.lose[arm]:
            return
        ts = now.astimezone(dt.UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
        base = {"impression_id": impression_id, "user_id": user, "rail": self.rail, "ts": ts}
        self._pending.append({**base, "event_id": uuid.uuid4().hex, "type": "impression", "item_ids": shown})
        for kind, item, secs in self.listeners.react(u, shown):
            ev = {**base, "event_id": uuid.uuid4().hex, "type": kind, "item_ids": [item]}
            if kind == "play":
                ev["duration_seconds"] = secs
            self._pending.append(ev)
        self._post()

    def run(self, visits_per_listener: int = 2, now: dt.datetime | None = None) -> SimulationResult:
        now = now or dt.datetime.now(dt.UTC)
        for _ in range(visits_per_listener):
            for u in range(len(self.listeners.user_topic)):
                self.visit(u, now)
        self._post(force=True)
        return self.result
