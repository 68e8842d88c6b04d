"""``GET /v1/users/random`` (for the explorer) and ``GET /v1/users/{user_id}/history`` (recent plays)."""

from __future__ import annotations

from typing import Annotated

from fastapi import APIRouter, Query

from skyrec.serve.api.deps import Count, OptionalVariant, SettingsDep, StoreDep, UserId
from skyrec.serve.api.errors import ApiError
from skyrec.serve.api.responses import JSON
from skyrec.serve.api.schemas import ERRORS, HistoryOut, RandomUserOut
from skyrec.serve.store import Unavailable

router = APIRouter(prefix="/v1", tags=["users"])


@router.get("/users/random", response_model=RandomUserOut, responses=ERRORS,
            summary="A user id present in a variant's current publication")
async def random_user(variant: OptionalVariant, settings: SettingsDep, store: StoreDep) -> JSON:
    name = variant or settings.variants[0]
    pointer, _ = await store.pointer(name)
    if pointer is None:
        raise Unavailable(f"variant {name!r} has no published recommendations yet", code="not_published")
    user = await store.random_user(name, pointer["publication"])
    if user is None:
        raise ApiError(404, "no_users", f"the publication of {name!r} holds no personalised lists")
    return JSON({"variant": name, "publication": pointer["publication"], "user_id": user})


@router.get("/users/{user_id}/history", response_model=HistoryOut, responses=ERRORS,
            summary="A user's recent plays, when the publication carries them")
async def history(user_id: UserId, variant: OptionalVariant, settings: SettingsDep, store: StoreDep,
                  limit: Annotated[int, Query(ge=1, le=1000, description="most recent plays to return"), Count] = 20
                  ) -> JSON:
    """Plays are published per activity snapshot; a variant's pointer names it in its ``activity`` field.

    Titles come from the same variant's item metadata. An empty list with a note when nothing is published.
    """
    names = [variant] if variant else list(settings.variants)
    for name in names:
        pointer, _ = await store.pointer(name)
        activity = pointer.get("activity") if pointer else None
        if pointer is None or not isinstance(activity, str):
            continue
        plays = await store.history(activity, user_id)
        if plays is None:
            return JSON({"user_id": user_id, "plays": [], "note": "no recent plays published for this user"})
        plays = plays[:limit]
        meta = await store.item_meta(name, pointer["publication"], [i for i, _ in plays])
        return JSON({"user_id": user_id, "note": None, "plays": [
            {"id": i, "played_at": ts, "title": meta[i].title, "brand": meta[i].brand, "genres": list(meta[i].genres)}
            for i, ts in plays]})
    return JSON({"user_id": user_id, "plays": [], "note": "no play history is published (pointers carry no "
                 "'activity' field)"})
