"""Publishing test sets the way the publisher does: keys of the publication first, then one SET of the
variant's pointer (the previous pointer pushed on its history list). Keys spelled only through ``Keys``."""

from __future__ import annotations

import datetime as dt
import json
from typing import Any

from skyrec.publish.keys import Keys

PREFIX = "skyrec"
VARIANTS = ("comedy_featured", "drama_featured", "gripping_stories", "music_mixes", "recommended_for_you",
            "thought_provoking")


def iso(delta_hours: float) -> str:
    return (dt.datetime.now(dt.UTC) + dt.timedelta(hours=delta_hours)).isoformat()


def catalogue(n: int = 40, *, expired: tuple[str, ...] = ()) -> dict[str, dict[str, Any]]:
    items = {}
    for i in range(n):
        item_id = f"p{i:03d}"
        items[item_id] = {"title": f"Programme {i}", "brand": f"Brand {i % 5}",
                          "genres": ["Comedy"] if i % 2 else ["Drama", "Crime"], "formats": ["Podcasts"],
                          "available_until": iso(-1) if item_id in expired else (iso(48) if i % 3 else None)}
    return items


def publish(r, variant: str, pub: str, *, recs: dict[str, list[tuple[str, float]]],
            fallback: list[tuple[str, float]], items: dict[str, dict[str, Any]], activity: str | None = None,
            evaluation: dict[str, Any] | None = None, users_set: bool = True, switch: bool = True,
            extra: dict[str, Any] | None = None) -> dict[str, Any]:
    """Write one publication, then switch the variant's pointer to it (previous pointer pushed on history)."""
    keys = Keys(PREFIX)
    pipe = r.pipeline(transaction=False)
    for user, lst in recs.items():
        pipe.set(keys.rec(variant, pub, user), json.dumps([[i, s] for i, s in lst]))
    pipe.set(keys.fallback(variant, pub), json.dumps([[i, s] for i, s in fallback]))
    if items:
        pipe.hset(keys.items(variant, pub), mapping={k: json.dumps(v) for k, v in items.items()})
    if users_set and recs:
        pipe.sadd(keys.users(variant, pub), *recs)
    pipe.execute()
    pointer = {"publication": pub, "model": "als", "model_version": pub.split(".")[0], "run_key": pub.split(".")[-1],
               "published_at": iso(-2), "users": len(recs), "items": len(items),
               "evaluation": evaluation if evaluation is not None else {"ndcg_at_k": 0.2345, "recall_at_k": 0.31}}
    if activity:
        pointer["activity"] = activity
    pointer.update(extra or {})
    if switch:
        old = r.get(keys.current(variant))
        if old is not None:
            r.lpush(keys.history(variant), old)
        r.set(keys.current(variant), json.dumps(pointer))
    return pointer


def publish_history(r, activity: str, user: str, plays: list[tuple[str, str]]) -> None:
    r.set(Keys(PREFIX).hist(activity, user), json.dumps([[i, ts] for i, ts in plays]))


def standard_set(r, variant: str = "comedy_featured", pub: str = "v1.20261123T190000", **kw: Any) -> dict[str, Any]:
    items = kw.pop("items", None) or catalogue()
    recs = kw.pop("recs", None) or {
        "u1": [("p001", 0.9), ("p003", 0.8), ("p005", 0.7), ("p007", 0.6)],
        "u2": [(f"p{i:03d}", 1.0 - i / 100) for i in range(10, 30)],
    }
    fallback = kw.pop("fallback", None) or [(f"p{i:03d}", 100.0 - i) for i in range(30, 40)] + [("p001", 50.0)]
    return publish(r, variant, pub, recs=recs, fallback=fallback, items=items, **kw)
