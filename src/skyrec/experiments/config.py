"""The ``experiments:`` and ``events:`` sections of the config, validated once with the rest.

What one experiment's entry promises (checked here, or by :func:`check_experiments` against the variants):
arm shares sum to 1 (within 1e-9), every arm names a configured variant, the default arm is an arm, start is
before end, the metrics are ones the readout computes, and no two experiments on the same rail overlap in time
(so no user is ever in two experiments on one rail). Errors name the dotted key (``experiments.<name>.<key>``).

Self-contained on purpose (no import of :mod:`skyrec.config`, which imports this module).
"""

from __future__ import annotations

import datetime as dt
import math
import re
from collections.abc import Mapping
from functools import cached_property
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

NAME = re.compile(r"^[a-z0-9_]{1,64}$")
# The figures the readout computes per arm (exp-readout's evaluate_experiments); a metric not listed is a typo.
METRICS = ("exposure", "click_through", "plays_per_impression", "play_through", "coverage", "novelty")
SHARE_TOLERANCE = 1e-9
MAX_BATCH = 500  # events per POST /v1/events


class _Model(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


def _utc(value: Any) -> Any:
    """A YAML date/datetime or ISO-8601 text as an aware UTC datetime (naive and date-only mean UTC)."""
    if isinstance(value, str):
        try:
            value = dt.datetime.fromisoformat(value.strip().replace("Z", "+00:00"))
        except ValueError:
            return value  # pydantic reports it as not a datetime
    if isinstance(value, dt.date) and not isinstance(value, dt.datetime):
        value = dt.datetime(value.year, value.month, value.day)
    if isinstance(value, dt.datetime):
        return (value if value.tzinfo else value.replace(tzinfo=dt.UTC)).astimezone(dt.UTC)
    return value


class ArmConfig(_Model):
    variant: str
    share: float = Field(gt=0, le=1)


class ExperimentConfig(_Model):
    """One experiment: a public rail whose requests are answered from the user's arm (docs/experiments.md)."""

    rail: str
    salt: str = Field(min_length=1, max_length=200)
    start: dt.datetime
    end: dt.datetime
    traffic: float = Field(1.0, ge=0, le=1)
    default_arm: str
    arms: dict[str, ArmConfig] = Field(min_length=2)
    primary_metric: str
    guardrails: dict[str, float] = Field(default_factory=dict)
    alpha: float = Field(0.05, gt=0, lt=0.5)
    # the sample-ratio-mismatch check's threshold: a chi-square p-value below it marks the readout invalid
    srm_alpha: float = Field(0.001, gt=0, lt=1)

    @field_validator("start", "end", mode="before")
    @classmethod
    def _aware(cls, v: Any) -> Any:
        return _utc(v)

    @field_validator("arms")
    @classmethod
    def _arm_names(cls, v: dict[str, ArmConfig]) -> dict[str, ArmConfig]:
        for arm in v:
            if not NAME.fullmatch(arm):
                raise ValueError(f"arm name {arm!r}: 1 to 64 of a-z 0-9 _")
        return v

    @field_validator("guardrails")
    @classmethod
    def _guardrails(cls, v: dict[str, float]) -> dict[str, float]:
        for metric, drop in v.items():
            if not math.isfinite(drop) or not -1 <= drop <= 0:
                raise ValueError(f"guardrail {metric!r}: the largest tolerated relative drop, between -1 and 0 "
                                 f"(e.g. -0.05), got {drop}")
        return v

    @model_validator(mode="after")
    def _consistent(self) -> ExperimentConfig:
        total = math.fsum(a.share for a in self.arms.values())
        if abs(total - 1.0) > SHARE_TOLERANCE:
            raise ValueError(f"arms: shares sum to {total!r}, not 1 "
                             f"({', '.join(f'{k}={a.share}' for k, a in self.arms.items())})")
        if self.default_arm not in self.arms:
            raise ValueError(f"default_arm: {self.default_arm!r} is not an arm (arms: {list(self.arms)})")
        if self.start >= self.end:
            raise ValueError(f"start: {self.start.isoformat()} is not before end {self.end.isoformat()}")
        for metric in [self.primary_metric, *self.guardrails]:
            if metric not in METRICS:
                raise ValueError(f"metric {metric!r} unknown (known: {', '.join(METRICS)})")
        return self

    def live(self, now: dt.datetime) -> bool:
        return self.start <= now < self.end

    @cached_property
    def bounds(self) -> tuple[tuple[float, str, str], ...]:
        """(cumulative share, arm, variant) in the arms' config order: an arm owns the buckets below its bound
        and at or above the previous one."""
        out, total = [], 0.0
        for arm, spec in self.arms.items():
            total += spec.share
            out.append((total, arm, spec.variant))
        return tuple(out)


class EventsConfig(_Model):
    """The feedback stream the API writes (``POST /v1/events``) and ``ingest_feedback`` drains."""

    # XADD ... MAXLEN ~ this: the stream's memory bound in the serving Redis
    max_stream_length: int = Field(1_000_000, ge=1000)
    # entries not yet acknowledged by the ingest_feedback group (or the stream's length when there is no group)
    # above which the API answers 503 with Retry-After instead of appending
    max_backlog: int = Field(500_000, ge=1)
    # how old the API's measure of the backlog may be (it is taken with the writes, in the same round trip)
    backlog_check_seconds: float = Field(1.0, gt=0)
    retry_after_seconds: int = Field(30, ge=1)
    # a request body above this is refused (413) before it is read whole; a full batch of 500 impressions of
    # 100 items with the longest ids allowed is about 7.2 MB
    max_request_bytes: int = Field(8 * 1024 * 1024, ge=64 * 1024)

    @model_validator(mode="after")
    def _room(self) -> EventsConfig:
        if self.max_backlog + MAX_BATCH > self.max_stream_length:
            raise ValueError(f"events.max_backlog: {self.max_backlog} + one batch ({MAX_BATCH}) exceeds "
                             f"events.max_stream_length {self.max_stream_length}: trimming could drop events "
                             f"not yet ingested")
        return self


def check_experiments(experiments: Mapping[str, ExperimentConfig], variants: Mapping[str, Any]) -> None:
    """Cross-checks against the rest of the config; raises ValueError naming ``experiments.<name>.<key>``."""
    known = sorted(variants)
    for name, exp in experiments.items():
        if not NAME.fullmatch(name):
            raise ValueError(f"experiments.{name}: experiment names are 1 to 64 of a-z 0-9 _")
        if exp.rail not in variants:
            raise ValueError(f"experiments.{name}.rail: {exp.rail!r} is not a configured variant (known: {known})")
        for arm, spec in exp.arms.items():
            if spec.variant not in variants:
                raise ValueError(f"experiments.{name}.arms.{arm}.variant: unknown variant {spec.variant!r} "
                                 f"(known: {known})")
    names = sorted(experiments)
    for i, a in enumerate(names):
        for b in names[i + 1:]:
            ea, eb = experiments[a], experiments[b]
            if ea.rail == eb.rail and ea.start < eb.end and eb.start < ea.end:
                raise ValueError(f"experiments.{b}.start: experiments {a!r} and {b!r} both run on rail {ea.rail!r} "
                                 f"between {max(ea.start, eb.start).isoformat()} and "
                                 f"{min(ea.end, eb.end).isoformat()} (a user would be in both)")
