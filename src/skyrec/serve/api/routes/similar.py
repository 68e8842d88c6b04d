""""More like this": ``GET /v1/items/{item_id}/similar?rail=…`` and the "because you played X" rail
``GET /v1/because-you-played/{variant}/{user_id}``.

Both read one rail's current publication only: its ``sim`` keys (each model item's most similar candidates,
precomputed under the rail's rules), its item metadata, and for "because you played" the user's recent plays
published with it (``publish.history_items``). See docs/similar.md.
"""

from __future__ import annotations

import time
from typing import Annotated, Any

from fastapi import APIRouter, Query

from skyrec.serve.api.deps import (
    VARIANT_PATTERN,
    ItemId,
    Limit,
    SettingsDep,
    StoreDep,
    UserId,
    Variant,
    check_page,
    check_variant,
)
from skyrec.serve.api.errors import ApiError
from skyrec.serve.api.responses import JSON
from skyrec.serve.api.schemas import ERRORS, BecauseYouPlayedOut, SimilarOut
from skyrec.serve.store import ItemMeta

router = APIRouter(prefix="/v1", tags=["similar"])

Rail = Annotated[str, Query(pattern=VARIANT_PATTERN, description="a configured variant (rail) whose rules the list follows")]


def _items(items: list[tuple[str, float, ItemMeta]]) -> list[dict[str, Any]]:
    return [{"id": i, "title": m.title, "brand": m.brand, "genres": list(m.genres), "score": score}
            for i, score, m in items]


def _seed(item_id: str, m: ItemMeta) -> dict[str, Any]:
    """The item a list is about. It may be one whose availability ended (a play of last month, an item page
    kept open): its list is still true, and ``available`` tells a client not to link it."""
    return {"id": item_id, "title": m.title, "brand": m.brand, "genres": list(m.genres),
            "available": (not m.expired(time.time())) if m.known else None}


@router.get("/items/{item_id}/similar", response_model=SimilarOut, responses=ERRORS,
            summary="More like this: the items most similar to one item, under a rail's rules")
async def similar(item_id: ItemId, rail: Rail, settings: SettingsDep, store: StoreDep, limit: Limit = None) -> JSON:
    """Best first, from the rail's current publication. 404 ``unknown_item`` when the publication holds no
    list for the item (not in the model, or nothing on the rail is like it); 404 ``similar_not_published``
    when the rail's publication carries no "more like this" lists at all."""
    check_variant(settings, rail)
    page = check_page(settings, limit, 0)
    answer = await store.similar(rail, item_id, page.limit)
    pointer = answer.pointer
    if answer.items is None:
        if not pointer.get("similar"):
            raise ApiError(404, "similar_not_published",
                           f"the current publication of {rail!r} carries no 'more like this' lists "
                           "(precompute.similar_k: 0, or published before they existed)")
        raise ApiError(404, "unknown_item", f"item {item_id!r} has no 'more like this' list in the current "
                       f"publication of {rail!r} (not an item of its model, or nothing on the rail is like it)")
    return JSON({"item": _seed(item_id, answer.seed), "rail": rail, "publication": pointer["publication"],
                 "model_version": pointer.get("model_version"), "items": _items(answer.items), "limit": page.limit},
                headers={"Cache-Control": "no-store"})


@router.get("/because-you-played/{variant}/{user_id}", response_model=BecauseYouPlayedOut, responses=ERRORS,
            summary="Because you played X: more like the user's most recent qualifying play, on one rail")
async def because_you_played(variant: Variant, user_id: UserId, settings: SettingsDep, store: StoreDep,
                             limit: Limit = None) -> JSON:
    """The seed is the user's most recent published play with a "more like this" list that still has
    something to show once the user's recent plays and unavailable items are left out; the answer names it
    (``seed``: id, title, when played). No qualifying play: ``seed`` null, no items, and a ``note`` saying why
    (the client shows no such rail)."""
    page = check_page(settings, limit, 0)
    answer = await store.because_you_played(variant, user_id, page.limit)
    pointer = answer.pointer
    seed = None
    if answer.seed_id is not None and answer.seed is not None:
        seed = {**_seed(answer.seed_id, answer.seed), "played_at": answer.played_at}
    return JSON({"user_id": user_id, "rail": variant, "publication": pointer["publication"],
                 "model_version": pointer.get("model_version"), "seed": seed, "items": _items(answer.items),
                 "limit": page.limit, "note": answer.note}, headers={"Cache-Control": "no-store"})

