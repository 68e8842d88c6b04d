"""``GET /v1/items/{item_id}``: one item's metadata as published (per variant publication)."""

from __future__ import annotations

from fastapi import APIRouter

from skyrec.serve.api.deps import ItemId, OptionalVariant, SettingsDep, StoreDep
from skyrec.serve.api.errors import ApiError
from skyrec.serve.api.responses import JSON
from skyrec.serve.api.schemas import ERRORS, ItemDetailOut

router = APIRouter(prefix="/v1", tags=["items"])


def _list(value: object) -> list[str]:
    if isinstance(value, list):
        return [str(v) for v in value]
    if isinstance(value, str):
        return [value]
    return []


@router.get("/items/{item_id}", response_model=ItemDetailOut, responses=ERRORS, summary="One item's metadata")
async def item(item_id: ItemId, variant: OptionalVariant, settings: SettingsDep, store: StoreDep) -> JSON:
    """Looks in the given variant's current publication, or in each configured variant's in config order."""
    searched = [variant] if variant else list(settings.variants)
    for name in searched:
        pointer, _ = await store.pointer(name)
        if pointer is None:
            continue
        data = await store.item(name, pointer["publication"], item_id)
        if data is None:
            continue
        until = data.get("available_until")
        return JSON({"id": item_id, "variant": name, "publication": pointer["publication"],
                     "title": data.get("title"), "brand": data.get("brand"), "genres": _list(data.get("genres")),
                     "formats": _list(data.get("formats")), "available_until": str(until) if until else None,
                     "metadata": data})
    raise ApiError(404, "unknown_item", f"item {item_id!r} is in no current publication of {searched}")
