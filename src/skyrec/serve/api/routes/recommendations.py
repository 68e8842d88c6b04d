"""``GET /v1/recommendations/{variant}/{user_id}``: the hot path."""

from __future__ import annotations

from fastapi import APIRouter

from skyrec.serve.api.deps import MetricsDep, PageDep, StoreDep, UserId, Variant
from skyrec.serve.api.responses import JSON
from skyrec.serve.api.schemas import ERRORS, RecommendationsOut

router = APIRouter(prefix="/v1", tags=["recommendations"])


@router.get("/recommendations/{variant}/{user_id}", response_model=RecommendationsOut, responses=ERRORS,
            summary="A user's recommendations for one variant")
async def recommendations(variant: Variant, user_id: UserId, page: PageDep, store: StoreDep,
                          metrics: MetricsDep) -> JSON:
    """Best first. Users without a precomputed list get the variant's cold-start list (``source: fallback``).

    Items whose availability ended since the precompute are dropped, and the answer is padded from the
    fallback list (no duplicates). All keys read belong to the publication named in the answer.
    """
    answer = await store.recommend(variant, user_id, page.offset + page.limit)
    ranked = answer.ranked
    source = "personalised" if answer.known_user else "fallback"
    metrics.recommendations.labels(variant, source).inc()
    if ranked.padded:
        metrics.padded.labels(variant).inc(ranked.padded)
    if ranked.dropped_expired:
        metrics.expired.labels(variant).inc(ranked.dropped_expired)
    if answer.stale:
        metrics.stale.labels(variant).inc()
    window = ranked.items[page.offset: page.offset + page.limit]
    body = {
        "user_id": user_id,
        "variant": variant,
        "model_version": answer.pointer.get("model_version"),
        "publication": answer.pointer["publication"],
        "source": source,
        "items": [{"id": item_id, "title": m.title, "brand": m.brand, "genres": list(m.genres), "score": score}
                  for item_id, score, m in window],
        "offset": page.offset,
        "limit": page.limit,
        "padded": ranked.padded,
        "stale": answer.stale,
    }
    headers = {"Cache-Control": "no-store"}
    if answer.stale:
        headers["Warning"] = '110 skyrec "stale: Redis unreachable"'
    return JSON(body, headers=headers)
