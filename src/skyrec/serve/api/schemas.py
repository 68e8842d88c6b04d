"""Response shapes, for the OpenAPI schema (``/docs``, ``/openapi.json``) and for clients.

Handlers build plain dicts and return them through :class:`~skyrec.serve.api.responses.JSON` (no second
validation pass on the hot path); the tests check the bodies against these models.
"""

from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, Field


class ErrorOut(BaseModel):
    error: str = Field(description="machine-readable reason, e.g. unknown_variant, invalid_request")
    message: str = Field(description="what was wrong, for humans")
    request_id: str | None = None
    details: list[dict[str, Any]] | None = None


class ItemOut(BaseModel):
    id: str
    title: str | None
    brand: str | None
    genres: list[str]
    score: float | None = Field(description="the list's own score, best first; null for an item padded in from "
                                            "the fallback list after a user's own items (another scale)")
    origin: Literal["personalised", "fallback"] = Field(
        description="personalised: from the user's precomputed list; fallback: from the variant's cold-start list")


class RecommendationsOut(BaseModel):
    user_id: str
    variant: str
    model_version: str | None
    publication: str
    source: Literal["personalised", "fallback"]
    items: list[ItemOut]
    offset: int
    limit: int
    next_offset: int | None = Field(description="offset of the next page; null when this page is the last "
                                                "(a page past the end has no items and next_offset null)")
    padded: int = Field(description="how many items of this page came from the fallback list")
    stale: bool = Field(False, description="true when Redis was unreachable and a cached answer was served")
    # experiments (docs/experiments.md): null outside an experiment; impression_id for reporting events
    experiment: str | None = Field(None, description="the experiment measuring this answer (null outside one)")
    arm: str | None = Field(None, description="the user's arm in that experiment (null outside one)")
    impression_id: str | None = Field(None, description="this answer's id: name it in the events you report "
                                                        "(POST /v1/events)")


class SimilarSummary(BaseModel):
    k: int
    items: int


class VariantOut(BaseModel):
    variant: str
    published: bool
    publication: str | None = None
    model: str | None = None
    model_version: str | None = None
    published_at: str | None = None
    age_seconds: float | None = None
    users: int | None = None
    items: int | None = None
    evaluation: dict[str, Any] | None = None
    report_url: str | None = None
    similar: SimilarSummary | None = None  # "more like this" lists in this publication (null: none)
    stale: bool = False


class VariantsOut(BaseModel):
    variants: list[VariantOut]


class ItemDetailOut(BaseModel):
    id: str
    variant: str
    publication: str
    title: str | None = None
    brand: str | None = None
    genres: list[str] = []
    formats: list[str] = []
    available_until: str | None = None
    metadata: dict[str, Any]


class PlayOut(BaseModel):
    id: str
    played_at: str
    title: str | None = None
    brand: str | None = None
    genres: list[str] = []


class HistoryOut(BaseModel):
    user_id: str
    plays: list[PlayOut]
    note: str | None = None


class RandomUserOut(BaseModel):
    variant: str
    publication: str
    user_id: str


class ReadyOut(BaseModel):
    status: Literal["ready", "not_ready"]
    redis: bool
    variants: dict[str, str]
    missing: dict[str, str]


class AdminOut(BaseModel):
    action: str
    variants: dict[str, Any]


class SimilarItemOut(BaseModel):
    id: str
    title: str | None
    brand: str | None
    genres: list[str]
    score: float = Field(description="the model's item-to-item score, best first")


class SeedOut(BaseModel):
    id: str
    title: str | None = Field(description="the seed item's title (null when the publication has no metadata for it)")
    brand: str | None = None
    genres: list[str] = []
    available: bool | None = Field(None, description="false when the item's availability has ended (a client "
                                   "names it without linking it); null when the publication has no metadata for it")


class PlayedSeedOut(SeedOut):
    played_at: str = Field(description="when the user played it (ISO-8601)")


class SimilarOut(BaseModel):
    item: SeedOut
    rail: str
    publication: str
    model_version: str | None
    items: list[SimilarItemOut] = Field(description="best first: the rail's candidates most like the item, under "
                                                    "its rules (the item itself never, available items only, "
                                                    "the brand cap)")
    limit: int


class BecauseYouPlayedOut(BaseModel):
    user_id: str
    rail: str
    publication: str
    model_version: str | None
    seed: PlayedSeedOut | None = Field(description="the user's most recent qualifying play: the \"X\" of "
                                                   "\"because you played X\"; null when no play qualifies")
    items: list[SimilarItemOut]
    limit: int
    note: str | None = Field(None, description="why there is no seed, when there is none")


ERRORS: dict[int | str, dict[str, Any]] = {
    404: {"model": ErrorOut, "description": "unknown variant, user or item"},
    422: {"model": ErrorOut, "description": "invalid parameter (the message names it)"},
    503: {"model": ErrorOut, "description": "Redis unreachable with nothing cached, or nothing published yet"},
}
