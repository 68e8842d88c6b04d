"""Configuration: YAML layered (base <- env/<ENV>.yaml <- SKYREC__* environment variables), validated once.

Every error names the file and the dotted key that caused it.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import json
import math
import os
import re
import string
from functools import cached_property
from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from skyrec.experiments.config import EventsConfig, ExperimentConfig, check_experiments

ENV_PREFIX = "SKYREC__"
ENVIRONMENTS = ("local", "dev", "int", "prod")
_SAFE_FIELD = re.compile(r"^[A-Za-z0-9_.=\-]+$")


class ConfigError(ValueError):
    """A configuration problem; the message names the file and the key."""


def _takes_number_not_bool(annotation: Any) -> bool:
    """Whether a field of this type takes a number and no boolean (``int``, ``float``, optional or in a union
    without ``bool``)."""
    import types
    import typing

    args = typing.get_args(annotation) if typing.get_origin(annotation) in (typing.Union, types.UnionType) \
        else (annotation,)
    return bool(args) and bool not in args and any(a in (int, float) for a in args)


class _Model(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    @model_validator(mode="before")
    @classmethod
    def _no_boolean_for_a_number(cls, data: Any) -> Any:
        """``test_items: true`` is a mistake, not 1 (pydantic would take it as 1): refused, naming the key."""
        if isinstance(data, dict):
            for name, field in cls.model_fields.items():
                value = data.get(field.alias or name, data.get(name))
                if isinstance(value, bool) and _takes_number_not_bool(field.annotation):
                    raise ValueError(f"{name}: {value!r} is a boolean, not a number")
        return data


class PathsConfig(_Model):
    home: str = ".skyrec"


class StorageConfig(_Model):
    lake: str
    storage_options: dict[str, Any] = Field(default_factory=dict)
    state: str
    # The collector of abandoned attempts (the sweeper, `skyrec gc`) removes an unreferenced staging
    # folder only when it is older than this and its producer is not alive. Must exceed every job deadline.
    gc_grace_hours: float = Field(24.0, gt=0)


class SourceConfig(_Model):
    kind: Literal["local", "s3"] = "local"
    url: str
    endpoint_url: str | None = None
    aws_conn_id: str = "skyrec_source"
    metadata_prefix: str = "metadata"
    activity_prefix: str = "activity"
    metadata_streams: list[str] = Field(default_factory=lambda: ["programmes", "episodes", "availability"])


class MetadataIngestConfig(_Model):
    concurrency: int = Field(16, ge=1, le=256)
    max_error_rate: float = Field(0.05, ge=0, le=1)


class EventKindConfig(_Model):
    """One kind of the activity vocabulary: whether its events carry a duration (``played_seconds``).

    ``required``: a null/NaN/negative duration is quarantined (``invalid_played_seconds``), a short one
    (< ``min_play_seconds``) filtered (``short_play``); ``optional``: null is fine, a present value must be a
    duration; ``none``: the kind has no duration (clicks, ratings): the field is not read and not required.
    """

    duration: Literal["required", "optional", "none"] = "optional"


def _default_event_kinds() -> dict[str, EventKindConfig]:
    return {"play": EventKindConfig(duration="required"), "complete": EventKindConfig(duration="required"),
            **{k: EventKindConfig(duration="optional") for k in ("pause", "resume", "seek", "stop", "skip")}}


class ActivityIngestConfig(_Model):
    # the vocabulary: every event kind the source sends (anything else is quarantined, unknown_event_type)
    events: dict[str, EventKindConfig] = Field(default_factory=_default_event_kinds)
    event_types: list[str] = Field(default_factory=lambda: ["play", "complete"])  # kinds kept (others filtered)
    min_play_seconds: float = Field(30, ge=0)
    # days of deltas in the rolling snapshot; 0 or "all": every committed delta (older ones are counted)
    snapshot_interval_days: int | Literal["all"] = 120
    max_error_rate: float = Field(0.05, ge=0, le=1)
    future_tolerance_minutes: float = Field(10, ge=0)
    past_limit_days: int = Field(400, ge=1)
    # backfills/imports of history: each hour is judged against the backfill's own hours, not the week before
    backfill_volume_factor: float = Field(20.0, gt=1)
    # a backfill over a longer range is refused at once (a wrong date: an event in the year 3000, epoch 0)
    max_backfill_days: int = Field(3660, ge=1)
    # `skyrec import` quarantines event times before this (too_old): epoch 0 or -1, a zero date, a wrong unit
    earliest_event: dt.datetime = dt.datetime(1990, 1, 1, tzinfo=dt.UTC)
    # the in-process runner holds a pipeline run's rows until they are grouped by interval: a long backfill
    # runs as pipelines of consecutive hours up to this many MB of input files (compressed Parquet) and
    # at most ``hours_per_pipeline`` hours each (a Beam backend runs every hour as one job)
    pipeline_source_mb: float = Field(24.0, gt=0)
    hours_per_pipeline: int = Field(744, ge=1)

    @field_validator("earliest_event")
    @classmethod
    def _utc(cls, v: dt.datetime) -> dt.datetime:
        return v.replace(tzinfo=dt.UTC) if v.tzinfo is None else v.astimezone(dt.UTC)  # naive: UTC

    @field_validator("events")
    @classmethod
    def _kinds(cls, v: dict[str, EventKindConfig]) -> dict[str, EventKindConfig]:
        for kind in v:
            if kind != kind.strip().lower() or not kind:
                raise ValueError(f"event kind {kind!r}: kinds are lower case without surrounding spaces")
        return v

    @field_validator("snapshot_interval_days")
    @classmethod
    def _window(cls, v: int | str) -> int | str:
        if isinstance(v, int) and v < 0:
            raise ValueError("must be >= 0 (0 or 'all': keep every delta)")
        return v

    @model_validator(mode="after")
    def _kept_known(self) -> ActivityIngestConfig:
        unknown = sorted({t.lower() for t in self.event_types} - set(self.events))
        if unknown:
            raise ValueError(f"ingest.activity.event_types: {unknown} not in ingest.activity.events "
                             f"(known kinds: {sorted(self.events)})")
        return self

    @property
    def window_days(self) -> int | None:
        """Days in the rolling snapshot, None for every delta (0 or "all")."""
        d = self.snapshot_interval_days
        return None if d == "all" or d == 0 else int(d)


class FileReadConfig(_Model):
    """How ``skyrec import`` reads one of your files (docs/data.md, "Importing your files")."""

    format: Literal["auto", "csv", "tsv", "parquet", "jsonl"] = "auto"  # auto: by the file's extension
    delimiter: str | None = None      # csv: one character (tsv: a tab)
    header: bool = True               # false: name the columns with column_names
    column_names: list[str] = Field(default_factory=list)
    quote_char: str | None = '"'      # null: quotes are ordinary characters
    encoding: str = "utf8"            # e.g. latin-1
    columns: dict[str, str | None] = Field(default_factory=dict)  # skyrec field -> your column (null: absent)

    @field_validator("delimiter", "quote_char")
    @classmethod
    def _one_char(cls, v: str | None) -> str | None:
        if v is not None and len(v) != 1:
            raise ValueError(f"expected one character, got {v!r}")
        return v


class RatingsConfig(_Model):
    """Explicit ratings: a rating >= threshold is a positive interaction of ``kind`` (its weight is
    ``training.weighting[kind]``); lower ratings are filtered (counted, reason ``below_threshold``)."""

    threshold: float = 4.0
    kind: str = "rating"


class InteractionFileConfig(FileReadConfig):
    # fields: user, item, timestamp (required), kind, value, event_id, platform
    default_kind: str = "play"        # the kind of every row when no kind column is mapped
    kinds: dict[str, str] = Field(default_factory=dict)  # your kind spelling -> skyrec kind (e.g. listen: play)
    value: Literal["none", "duration", "rating", "count"] = "none"
    timestamp_unit: Literal["auto", "s", "ms", "us", "iso"] = "auto"
    timestamp_format: str | None = None   # strptime format for text times that are not ISO-8601
    ratings: RatingsConfig = RatingsConfig()
    max_count: int = Field(100, ge=1)     # value: count -- a row stands for min(count, max_count) events


class ItemFileConfig(FileReadConfig):
    # fields: id, title (required), brand, brand_title, series, genres, formats, masterbrand, release_date,
    # duration, available_from, available_until, updated
    list_separator: str = "|"             # genres/formats held in one text column
    genre_flags: list[str] = Field(default_factory=list)   # 0/1 columns, one per genre (the column name is it)
    format_flags: list[str] = Field(default_factory=list)
    date_format: str | None = None        # strptime format for dates that are not ISO-8601 (e.g. %d-%b-%Y)
    available_from_default: str = "1970-01-01T00:00:00Z"  # items without a window are playable from this


class ImportConfig(_Model):
    interactions: InteractionFileConfig = InteractionFileConfig()
    items: ItemFileConfig = ItemFileConfig()


class ColdStartConfig(_Model):
    window_days: int = Field(7, ge=1)
    size: int = Field(100, ge=1)


class IngestConfig(_Model):
    metadata: MetadataIngestConfig = MetadataIngestConfig()
    activity: ActivityIngestConfig = ActivityIngestConfig()
    cold_start: ColdStartConfig = ColdStartConfig()
    files: ImportConfig = ImportConfig()  # how `skyrec import` maps your files onto the source layout


class VolumeGateConfig(_Model):
    lookback_runs: int = Field(7, ge=1)
    min_history: int = Field(3, ge=1)
    min_ratio: float = Field(0.5, gt=0)
    max_ratio: float = Field(2.0, gt=0)
    min_volume: int = Field(100, ge=0)

    @model_validator(mode="after")
    def _ordered(self) -> VolumeGateConfig:
        if self.min_ratio >= self.max_ratio:
            raise ValueError("min_ratio must be below max_ratio")
        return self


class GatesConfig(_Model):
    volume: VolumeGateConfig = VolumeGateConfig()


class ModelSpec(_Model):
    class_path: str
    params: dict[str, Any] = Field(default_factory=dict)

    @field_validator("class_path")
    @classmethod
    def _class_path(cls, v: str) -> str:
        if not re.match(r"^[A-Za-z_][\w.]*:[A-Za-z_]\w*$", v):
            raise ValueError(f"expected 'package.module:ClassName', got {v!r}")
        return v


#: the offline metrics every figure is computed for (skyrec.evaluation.metrics.METRICS), at training.k
RankingMetric = Literal["ndcg_at_k", "recall_at_k", "precision_at_k", "map_at_k"]


class QualityGateConfig(_Model):
    metric: RankingMetric = "ndcg_at_k"
    tolerance: float = Field(0.05, ge=0, le=1)
    must_beat_baseline: bool = True
    # below this many evaluable users (or users shared with the published model) the figures are
    # "insufficient evidence" and ``insufficient_evidence`` decides: hold (publish nothing) or publish and alert
    min_users: int = Field(100, ge=1)
    insufficient_evidence: Literal["hold", "publish_with_alert"] = "hold"
    # when fewer than min_users can be compared with the published artefact (it has seen their test plays: a
    # retrain on the same data, a static data set), refit the published model's parameters on this split's
    # training part and compare on every evaluated user (one more fit in the evaluate step)
    refit_published: bool = True


class SplitConfig(_Model):
    """How the evaluation splits the activity: ``per_user`` holds out each user's latest positives (their
    latest ``test_fraction``, or ``test_items`` when set); ``global`` holds out every event of the last
    ``training.holdout_days`` days."""

    kind: Literal["per_user", "global"] = "per_user"
    test_fraction: float = Field(0.2, gt=0, lt=1)
    test_items: int | None = Field(None, ge=1)
    min_train_items: int = Field(1, ge=1)  # a user keeps at least this many positives in train (else no test)


def used_split_settings(split: dict[str, Any]) -> dict[str, Any]:
    """A split's settings (as configured, or as a dataset or an evaluation recorded them) without those its kind
    does not use, so that changing an unused one changes no dataset id and no protocol: ``holdout_days`` only
    for the global split; for the per-user split ``test_fraction`` only while ``test_items`` is unset. Other
    keys (what a dataset recorded about the split it made) are kept."""
    out = dict(split)
    if out.get("kind", "global") == "per_user":
        out.pop("holdout_days", None)
        if out.get("test_items") is not None:
            out.pop("test_fraction", None)
    else:
        for key in ("test_fraction", "test_items", "min_train_items"):
            out.pop(key, None)
    return out


def canonical_dataset_definition(definition: dict[str, Any]) -> dict[str, Any]:
    """A training dataset's definition in today's form, whatever form it was recorded in: before the split's
    unused settings were left out, ``holdout_days`` sat beside ``split`` and counted under every split kind."""
    out = dict(definition)
    split = dict(out.get("split") or {"kind": "global"})
    if "holdout_days" in out:
        split.setdefault("holdout_days", out.pop("holdout_days"))
    out["split"] = used_split_settings(split)
    return out


class SearchSpace(_Model):
    """One parameter's range in ``training.search.spaces.<model>.<param>``: exactly one of ``int: [low,
    high]``, ``float: [low, high]`` (``log: true`` samples on a log scale; needs low > 0) or ``choice: [...]``."""

    int_range: tuple[int, int] | None = Field(None, alias="int")
    float_range: tuple[float, float] | None = Field(None, alias="float")
    choice: list[str | int | float | bool] | None = None
    log: bool = False

    @model_validator(mode="after")
    def _one_kind(self) -> SearchSpace:
        kinds = [n for n, v in (("int", self.int_range), ("float", self.float_range), ("choice", self.choice))
                 if v is not None]
        if len(kinds) != 1:
            raise ValueError(f"give exactly one of int: [low, high], float: [low, high] or choice: [...], got "
                             f"{kinds or 'none'}")
        bounds = self.int_range or self.float_range
        if bounds is not None:
            if not all(math.isfinite(b) for b in bounds):  # NaN passes no comparison; inf overflows int() later
                raise ValueError(f"{kinds[0]}: low and high must be finite numbers, got {list(bounds)}")
            if not bounds[0] < bounds[1]:
                raise ValueError(f"{kinds[0]}: low must be below high, got {list(bounds)}")
            if self.log and not bounds[0] > 0:
                raise ValueError(f"{kinds[0]}: log: true needs low > 0, got {list(bounds)}")
        elif self.log:
            raise ValueError("log: true applies to int or float ranges, not to choice")
        elif not self.choice:
            raise ValueError("choice: give at least one value")
        elif any(isinstance(c, float) and not math.isfinite(c) for c in self.choice):
            raise ValueError(f"choice: numbers must be finite, got {self.choice}")
        return self

    @property
    def kind(self) -> str:
        return "int" if self.int_range is not None else "float" if self.float_range is not None else "choice"

    def tried(self) -> list[Any]:
        """The values a check tries: a choice's values, a range's two ends."""
        return list(self.choice) if self.choice is not None else list(self.int_range or self.float_range or ())


class SearchConfig(_Model):
    """``training.search``: the optional hyper-parameter search of the train step (docs/evaluation.md)."""

    enabled: bool = False
    models: list[str] | None = None   # the models searched; None: every trained model with a space
    # per model, per parameter; ``null`` drops a parameter that a base layer declares
    spaces: dict[str, dict[str, SearchSpace | None]] = Field(default_factory=dict)
    n_trials: int | None = Field(20, ge=1)              # budget: trials (reproducible given the seed) ...
    timeout_seconds: float | None = Field(None, gt=0)   # ... and/or wall time (not reproducible)
    seed: int = 0                     # seeds the TPE sampler and the validation split
    metric: RankingMetric | None = None  # None: the gate's
    validation_fraction: float = Field(0.2, gt=0, lt=1)  # share of a validation user's training positives held out
    # which of them: each user's latest by first play (the test split's shape), or a seeded random subset
    validation_method: Literal["latest", "random"] = "latest"
    validation_max_users: int = Field(20000, ge=1)
    deadline_fraction: float = Field(0.5, gt=0, le=0.9)  # the search ends within this share of the train deadline
    include_configured: bool = True   # trial 0 = the configured params (the search never picks worse on validation)

    @model_validator(mode="after")
    def _budget(self) -> SearchConfig:
        if self.n_trials is None and self.timeout_seconds is None:
            raise ValueError("training.search: give a budget: n_trials and/or timeout_seconds")
        return self


class TrainingConfig(_Model):
    holdout_days: int = Field(7, ge=1)
    k: int = Field(10, ge=1)
    recency_half_life_days: float = Field(30, gt=0)
    weighting: dict[str, float] = Field(default_factory=lambda: {"play": 1.0, "complete": 2.0})
    # share of an event's weight that scales with the fraction of the episode played (0 = ignore duration)
    played_fraction_weight: float = Field(0.5, ge=0, le=1)
    baseline: str = "popularity"          # model every trained model is compared with in the same run
    eval_max_users: int = Field(50000, ge=1)  # evaluation samples this many test users (seeded)
    fit_on_all_data: bool = True          # publish a model refit on all data after evaluating on the split
    split: SplitConfig = SplitConfig()
    # every figure carries a bootstrap confidence interval: users resampled ``bootstrap_resamples`` times
    bootstrap_resamples: int = Field(1000, ge=50)
    bootstrap_seed: int = 0
    confidence: float = Field(0.95, gt=0.5, lt=1)
    quality_gate: QualityGateConfig = QualityGateConfig()
    # the models train_model trains and evaluates; None: the models the variants use
    models: list[str] | None = None
    search: SearchConfig = SearchConfig()  # optional hyper-parameter search in the train step

    @model_validator(mode="after")
    def _enough_users_sampled(self) -> TrainingConfig:
        if self.eval_max_users < self.quality_gate.min_users:
            raise ValueError(
                f"eval_max_users ({self.eval_max_users}) is below quality_gate.min_users "
                f"({self.quality_gate.min_users}): every evaluation would rest on too few users and the gate would "
                f"never decide on the figures; raise training.eval_max_users or lower training.quality_gate.min_users")
        return self

    def dataset_definition(self, model: str) -> dict[str, Any]:
        """What the training dataset of ``model`` depends on besides the run's inputs: the event weights,
        the recency decay and the evaluation split (only the split settings its kind uses:
        :func:`used_split_settings`). Every model shares these settings today, so every
        trained model reads the same dataset."""
        del model  # no per-model dataset setting exists (yet): one definition for all models
        return canonical_dataset_definition({
            "weighting": dict(sorted(self.weighting.items())), "played_fraction_weight": self.played_fraction_weight,
            "recency_half_life_days": self.recency_half_life_days,
            "split": {**self.split.model_dump(), "holdout_days": self.holdout_days}})

    def dataset_id(self, model: str) -> str:
        """Short digest of ``dataset_definition(model)``: the ``{dataset_id}`` field of the dataset's path, so
        models with the same definition share one dataset and a changed definition never reuses an old one."""
        return _digest(self.dataset_definition(model))

    def legacy_dataset_id(self, model: str) -> str:
        """The id the same definition had before the split's unused settings were left out of it (every split
        setting and ``holdout_days`` counted). A run that committed its dataset under it keeps reading that
        dataset (``create_dataset`` and ``train`` look there when today's id has none): no rebuild, and a
        re-run of that date is still a no-op."""
        del model
        return _digest({"weighting": dict(sorted(self.weighting.items())),
                        "played_fraction_weight": self.played_fraction_weight,
                        "recency_half_life_days": self.recency_half_life_days, "holdout_days": self.holdout_days,
                        "split": self.split.model_dump()})


def _digest(definition: dict[str, Any]) -> str:
    blob = json.dumps(definition, sort_keys=True, default=str).encode()
    return "d" + hashlib.sha256(blob).hexdigest()[:10]


class RulesConfig(_Model):
    max_per_brand: int | None = Field(3, ge=1)
    max_age_days: dict[str, float] = Field(default_factory=dict)


class DaskRunnerConfig(_Model):
    """``precompute.runner: DaskRunner``: a self-hosted Dask cluster (``dask scheduler`` + ``dask worker``s)."""

    address: str = ""  # the scheduler, tcp://host:8786 (tls:// with a secured cluster); required for DaskRunner
    connection_timeout_seconds: int = Field(30, ge=1)  # first connection to the scheduler
    # Dask partitions of the shards (the unit of model load and of re-execution after a lost worker);
    # 0: one per shard. Beam's own default (128 elements a partition) would put every shard in one task.
    partitions: int = Field(0, ge=0)

    @field_validator("address")
    @classmethod
    def _address(cls, v: str) -> str:
        if v and not re.fullmatch(r"(tcp|tls)://[A-Za-z0-9.\-_]+:[0-9]{1,5}", v):
            raise ValueError(f"{v!r} is not a Dask scheduler address (tcp://host:port or tls://host:port)")
        return v


class PrecomputeConfig(_Model):
    k: int = Field(50, ge=1, le=1000)
    batch_size: int = Field(4096, ge=1)
    rules: RulesConfig = RulesConfig()
    engine: Literal["local", "beam"] = "local"
    threads: int = Field(0, ge=0)
    sub_batch: int = Field(64, ge=1)
    shard_users: int = Field(262144, ge=1)
    score_decimals: int = Field(5, ge=0, le=9)
    users_sample: int = Field(1000, ge=0)
    similar_k: int = Field(20, ge=0, le=1000)  # "more like this" items per model item and rail (0: none)
    # what "more like this" measures for low-rank models (docs/similar.md): dot (the model's own product, what
    # predicts the next play best) | cosine (the items' factors at unit length: less pull to popular items)
    similar_measure: Literal["dot", "cosine"] = "dot"
    runner: str = "DirectRunner"
    direct_num_workers: int = Field(2, ge=1)
    direct_running_mode: Literal["in_memory", "multi_threading", "multi_processing"] = "multi_processing"
    dask: DaskRunnerConfig = DaskRunnerConfig()

    @model_validator(mode="after")
    def _dask_address(self) -> PrecomputeConfig:
        if self.runner == "DaskRunner" and not self.dask.address:
            raise ValueError("precompute.dask.address: required when precompute.runner is DaskRunner "
                             "(the scheduler, e.g. tcp://127.0.0.1:8786)")
        return self


class CandidateFilter(_Model):
    """Items are candidates when they match any listed genre (if genres given) AND any listed format (if given)."""

    genres: list[str] = Field(default_factory=list)
    formats: list[str] = Field(default_factory=list)
    masterbrands: list[str] = Field(default_factory=list)


class VariantConfig(_Model):
    model: str
    version: str
    candidates: CandidateFilter = CandidateFilter()
    k: int | None = Field(None, ge=1, le=1000)
    similar_k: int | None = Field(None, ge=0, le=1000)  # "more like this" list length (None: precompute.similar_k)
    similar_measure: Literal["dot", "cosine"] | None = None  # None: precompute.similar_measure

    @field_validator("version")
    @classmethod
    def _version(cls, v: str) -> str:
        check_path_field("version", v)
        return v


def check_redis_url(value: str) -> str:
    """A Redis URL redis-py can connect with: redis:// or rediss:// with a host, or unix:// with a path."""
    from urllib.parse import urlsplit

    try:
        url = urlsplit(value)
        port = url.port
    except ValueError as exc:
        raise ValueError(f"{value!r} is not a Redis URL ({exc})") from None
    if url.scheme in ("redis", "rediss"):
        if not url.hostname:
            raise ValueError(f"{value!r} is not a Redis URL: no host (e.g. redis://127.0.0.1:6379/0)")
        db = url.path.strip("/")
        if db and not db.isdigit():
            raise ValueError(f"{value!r}: the database must be a number, got {db!r}")
        if port == 0:
            raise ValueError(f"{value!r}: port 0")
    elif url.scheme == "unix":
        if not url.path:
            raise ValueError(f"{value!r} is not a Redis URL: no socket path (unix:///path/to/redis.sock)")
    else:
        raise ValueError(f"{value!r} is not a Redis URL: scheme must be redis, rediss or unix "
                         "(e.g. redis://127.0.0.1:6379/0)")
    return value


class PublishConfig(_Model):
    redis_url: str = "redis://127.0.0.1:6390/0"

    @field_validator("redis_url")
    @classmethod
    def _redis_url(cls, v: str) -> str:
        return check_redis_url(v)
    key_prefix: str = "skyrec"
    strategy: Literal["versioned", "swapdb"] = "versioned"
    keep_versions: int = Field(2, ge=1)
    scratch_redis_port: int = Field(6391, ge=1, le=65535)
    swapdb_spare_db: int = Field(1, ge=0)
    load_timeout_seconds: float = Field(600.0, gt=0)
    probe_users: int = Field(20, ge=1)
    history_items: int = Field(10, ge=0)  # recent plays per user published with predictions (0: none)
    # rec values: packed (item-table positions + quantised scores: ~3.9x less Redis memory than json at k = 50,
    # same served scores, BENCHMARKS.md) | json [["item", score], ...]. The API reads both; a publication names
    # its encoding (skyrec.publish.codec).
    encoding: Literal["json", "packed"] = "packed"


class ServeConfig(_Model):
    host: str = "127.0.0.1"
    port: int = Field(8080, ge=1, le=65535)
    redis_url: str = "redis://127.0.0.1:6390/0"

    @field_validator("redis_url")
    @classmethod
    def _redis_url(cls, v: str) -> str:
        return check_redis_url(v)
    default_limit: int = Field(10, ge=1)
    max_limit: int = Field(100, ge=1)
    admin_api_key_env: str = "SKYREC_ADMIN_API_KEY"
    # Added for the API (serve area): caching, Redis client and logging knobs.
    max_offset: int = Field(1000, ge=0)
    pointer_cache_seconds: float = Field(1.0, ge=0)
    redis_timeout_seconds: float = Field(0.5, gt=0)
    redis_max_connections: int = Field(64, ge=1)
    redis_pipelined_connections: int = Field(2, ge=0)
    item_cache_size: int = Field(200_000, ge=0)
    last_good_users: int = Field(50_000, ge=0)
    access_log: bool = True
    log_level: str = "INFO"
    graceful_shutdown_seconds: float = Field(10.0, ge=0)
    workers: int = Field(1, ge=1, le=64)


class CostConfig(_Model):
    vcpu_hour: float = Field(0.056, ge=0)
    gb_hour: float = Field(0.0035, ge=0)
    budget_per_job: float = Field(5.0, ge=0)


class KubernetesConfig(_Model):
    namespace: str = "skyrec"
    image: str = "skyrec:0.1.0"
    resources: dict[str, str] = Field(default_factory=lambda: {"cpu": "2", "memory": "8Gi"})


class DataflowConfig(_Model):
    project: str | None = None
    region: str = "europe-west2"
    machine_type: str = "n2-highmem-4"
    disk_size_gb: int = Field(100, ge=10)
    max_workers: int = Field(10, ge=1)
    experiments: list[str] = Field(default_factory=list)
    shuffle_mode: str = "service"
    sdk_version: str = "2.77.0"


class FlinkConfig(_Model):
    """Beam on a Flink session cluster: ``rest_url`` is the JobManager's REST API (lookup, read-back, cancel)."""

    rest_url: str = "http://localhost:8081"
    master: str | None = None  # --flink_master for the launcher; None: the REST address
    submit_uber_jar: bool = True  # Beam hands all pipeline options to the Flink job (read back for drift)
    parallelism: int = Field(4, ge=1)
    environment_type: str = "DOCKER"
    environment_config: str = "apache/beam_python3.11_sdk:2.77.0"
    sdk_version: str = "2.77.0"
    slot_vcpus: float = Field(1.0, gt=0)
    slot_memory_gb: float = Field(4.0, gt=0)


class SparkConfig(_Model):
    """Beam on a Spark standalone cluster: ``master_url`` for the launcher, ``rest_url`` the master's web UI."""

    master_url: str = "spark://localhost:7077"
    rest_url: str = "http://localhost:8080"
    environment_type: str = "DOCKER"
    environment_config: str = "apache/beam_python3.11_sdk:2.77.0"
    sdk_version: str = "2.77.0"
    cores_max: int = Field(8, ge=1)
    executor_cores: int = Field(2, ge=1)
    executor_memory_mb: int = Field(8192, ge=256)


class JobsConfig(_Model):
    backend: Literal["local", "kubernetes", "dataflow", "flink", "spark"] = "local"
    poll_interval_seconds: float = Field(1.0, gt=0)
    heartbeat_seconds: float = Field(2.0, gt=0)
    heartbeat_timeout_seconds: float = Field(30.0, gt=0)
    cancel_timeout_seconds: float = Field(30.0, gt=0)
    deadlines_minutes: dict[str, float] = Field(default_factory=lambda: {"default": 60.0})
    cost: CostConfig = CostConfig()
    kubernetes: KubernetesConfig = KubernetesConfig()
    dataflow: DataflowConfig = DataflowConfig()
    flink: FlinkConfig = FlinkConfig()
    spark: SparkConfig = SparkConfig()

    def deadline_seconds(self, job: str) -> float:
        minutes = self.deadlines_minutes.get(job, self.deadlines_minutes.get("default", 60.0))
        return float(minutes) * 60.0


class AlertsConfig(_Model):
    enabled: bool = True
    webhook_url: str | None = None
    duration_anomaly_factor: float = Field(3.0, gt=1)


class AirflowConfig(_Model):
    start_date: str = "2026-01-01T00:00:00+00:00"
    retries: int = Field(2, ge=0)
    retry_delay_seconds: float = Field(60, ge=0)
    schedules: dict[str, str | None] = Field(default_factory=dict)
    # DAGs are created unpaused (the chain flows by its Assets with no click); false: paused at creation.
    unpaused: bool = False
    # Wait for jobs in the triggerer: true/false for every job task, or DAG-id patterns (fnmatch) whose
    # job tasks defer; None: deferrable on the remote backends, in the worker for local processes.
    deferrable: bool | list[str] | None = None
    # `skyrec up`: the port of Airflow's API server (UI, public API and the execution API workers call).
    api_port: int = Field(8090, ge=1, le=65535)


DATASET_FIELDS = {"run_key", "interval_key", "model", "version", "variant", "dataset_id", "experiment"}


class Config(_Model):
    env: str = "base"
    project_root: str = "."
    paths: PathsConfig = PathsConfig()
    storage: StorageConfig
    datasets: dict[str, str]
    source: SourceConfig
    ingest: IngestConfig = IngestConfig()
    gates: GatesConfig = GatesConfig()
    models: dict[str, ModelSpec]
    training: TrainingConfig = TrainingConfig()
    precompute: PrecomputeConfig = PrecomputeConfig()
    variants: dict[str, VariantConfig]
    publish: PublishConfig = PublishConfig()
    serve: ServeConfig = ServeConfig()
    jobs: JobsConfig = JobsConfig()
    alerts: AlertsConfig = AlertsConfig()
    airflow: AirflowConfig = AirflowConfig()
    # online experiments on rails and their feedback stream (docs/experiments.md; models in skyrec.experiments)
    experiments: dict[str, ExperimentConfig] = Field(default_factory=dict)
    events: EventsConfig = EventsConfig()

    @model_validator(mode="after")
    def _experiments(self) -> Config:
        check_experiments(self.experiments, self.variants)
        return self

    @field_validator("datasets")
    @classmethod
    def _datasets(cls, v: dict[str, str]) -> dict[str, str]:
        for name, template in v.items():
            fields = {f for _, f, _, _ in string.Formatter().parse(template) if f}
            unknown = fields - DATASET_FIELDS
            if unknown:
                raise ValueError(f"dataset {name!r}: unknown template field(s) {sorted(unknown)}")
            if template.startswith("/") or ".." in template.split("/"):
                raise ValueError(f"dataset {name!r}: path must be relative to the lake, without '..'")
        return v

    @field_validator("variants")
    @classmethod
    def _variant_names(cls, v: dict[str, VariantConfig]) -> dict[str, VariantConfig]:
        for name in v:
            if not re.match(r"^[a-z][a-z0-9_]*$", name):
                raise ValueError(f"variant name {name!r} must be lower_snake_case")
        return v

    @model_validator(mode="after")
    def _variant_models(self) -> Config:
        for name in self.training.models or []:
            if name not in self.models:
                raise ValueError(f"training.models: unknown model {name!r} (known: {sorted(self.models)})")
        for name, variant in self.variants.items():
            if variant.model not in self.models:
                raise ValueError(
                    f"variants.{name}.model: unknown model {variant.model!r} (known: {sorted(self.models)})"
                )
        longest = max(self.jobs.deadlines_minutes.values(), default=0.0)
        if self.storage.gc_grace_hours * 60.0 <= longest:
            raise ValueError(f"storage.gc_grace_hours: {self.storage.gc_grace_hours} h is not longer than the "
                             f"longest job deadline ({longest:g} min in jobs.deadlines_minutes): the collector "
                             f"could remove the staging of a job still allowed to run")
        return self

    @model_validator(mode="after")
    def _search_models(self) -> Config:
        search = self.training.search
        for name in search.spaces:
            if name not in self.models:
                raise ValueError(f"training.search.spaces.{name}: unknown model {name!r} (known: {sorted(self.models)})")
        for name in search.models or []:
            if name not in self.models:
                raise ValueError(f"training.search.models: unknown model {name!r} (known: {sorted(self.models)})")
            if not any((search.spaces.get(name) or {}).values()):
                raise ValueError(f"training.search.models: {name!r} has no search space "
                                 f"(training.search.spaces.{name}: {{param: {{int|float|choice: ...}}}})")
        if search.enabled:  # a search that names no model train_model trains would do nothing, unseen
            trained = self.trained_models()
            where = "training.models, else the rails' models"
            idle = [name for name in search.models or [] if name not in trained]
            if idle:
                raise ValueError(f"training.search.models: {', '.join(map(repr, idle))} not trained: train_model "
                                 f"trains {trained} ({where}); add it to training.models or list a trained model")
            if search.models is None and not any(any((search.spaces.get(m) or {}).values()) for m in trained):
                raise ValueError(f"training.search.spaces: none of the trained models {trained} ({where}) has a "
                                 f"search space: training.search.enabled would search nothing")
        return self

    @model_validator(mode="after")
    def _model_params(self) -> Config:
        """The package's own models' parameters and search spaces, by each model's rules
        (``skyrec.models.params``: no model library imported); a model of another package is checked when built."""
        from skyrec.models.params import SPECS, check_configured, check_search_values

        for name, spec in self.models.items():
            check_configured(name, spec.class_path, spec.params)
        for name, spaces in self.training.search.spaces.items():
            model = self.models.get(name)
            owner, _, rules = SPECS.get(model.class_path if model else "", ("", "", None))
            for param, space in spaces.items():
                if rules is not None and space is not None:
                    check_search_values(f"training.search.spaces.{name}.{param}", owner, rules, param, space.kind,
                                        space.tried())
        return self

    # ---- derived -------------------------------------------------------------------------------
    @cached_property
    def home(self) -> str:
        home = self.paths.home  # load_config puts SKYREC_HOME (from the environ it was given) here
        if "://" in home:
            return home
        p = Path(home)
        if not p.is_absolute():
            p = Path(self.project_root) / p
        return str(p.resolve())

    def expand(self, value: str) -> str:
        """Expand ``{home}`` in a configured location."""
        return value.replace("{home}", self.home)

    @property
    def lake_url(self) -> str:
        return self.expand(self.storage.lake)

    @property
    def state_dir(self) -> str:
        return self.expand(self.storage.state)

    @property
    def source_url(self) -> str:
        return self.expand(self.source.url)

    def dataset_path(self, name: str, **fields: str) -> str:
        """The lake-relative path of one committed output of dataset ``name``, templated by the run."""
        try:
            template = self.datasets[name]
        except KeyError:
            raise ConfigError(f"datasets.{name}: no such dataset in config (known: {sorted(self.datasets)})") from None
        for key, value in fields.items():
            check_path_field(key, str(value))
        try:
            return template.format_map(fields)
        except KeyError as exc:
            raise ConfigError(f"datasets.{name}: template {template!r} needs field {exc.args[0]!r}") from None

    def dataset_prefix(self, name: str, **fields: str) -> str:
        """The static part of a dataset's path before its first unfilled template field (for listing)."""
        template = self.datasets[name]
        parts = []
        for literal, field, _, _ in string.Formatter().parse(template):
            parts.append(literal)
            if field is None:
                continue
            if field in fields:
                parts.append(str(fields[field]))
            else:
                break
        return "".join(parts)

    def trained_models(self) -> list[str]:
        """The models ``train_model`` trains and evaluates: ``training.models``, else those the variants use."""
        listed = self.training.models
        return sorted(set(listed)) if listed is not None else sorted({v.model for v in self.variants.values()})

    def training_datasets(self) -> dict[str, list[str]]:
        """Dataset id -> the trained models that read it (one dataset per distinct definition)."""
        out: dict[str, list[str]] = {}
        for model in self.trained_models():
            out.setdefault(self.training.dataset_id(model), []).append(model)
        return out

    def variant(self, name: str) -> VariantConfig:
        try:
            return self.variants[name]
        except KeyError:
            raise ConfigError(f"variants.{name}: unknown variant (known: {sorted(self.variants)})") from None


def check_path_field(key: str, value: str) -> None:
    """Reject values that could escape a dataset path (``..``, ``/``) or are empty."""
    if not value or value in {".", ".."} or ".." in value or not _SAFE_FIELD.match(value):
        raise ConfigError(f"{key}: {value!r} is not a safe path component (letters, digits, _ . = - only)")


# ---- loading ----------------------------------------------------------------------------------


def project_root() -> Path:
    env = os.environ.get("SKYREC_PROJECT_ROOT")
    if env:
        return Path(env).resolve()
    here = Path(__file__).resolve()
    for parent in [Path.cwd(), *here.parents]:
        if (parent / "config" / "base.yaml").is_file():
            return parent
    return Path.cwd()


def _read_yaml(path: Path) -> dict[str, Any]:
    try:
        text = path.read_text()
    except FileNotFoundError:
        raise ConfigError(f"{path}: config file not found") from None
    try:
        data = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f":{mark.line + 1}:{mark.column + 1}" if mark else ""
        raise ConfigError(f"{path}{where}: invalid YAML: {getattr(exc, 'problem', exc)}") from None
    if data is None:
        return {}
    if not isinstance(data, dict):
        raise ConfigError(f"{path}: top level must be a mapping, got {type(data).__name__}")
    return data


#: mappings that are one value, which a later layer replaces whole instead of merging into: a search space
#: (``{int: [..], log: true}`` in base.yaml and ``{choice: [..]}`` in an environment are two spaces, not one)
_WHOLE_VALUES = re.compile(r"training\.search\.spaces\.[^.]+\.[^.]+")


def _merge(base: dict[str, Any], over: dict[str, Any], origin: dict[str, str], source: str, prefix: str = "") -> None:
    for key, value in over.items():
        dotted = f"{prefix}{key}"
        if isinstance(value, dict) and isinstance(base.get(key), dict) and not _WHOLE_VALUES.fullmatch(dotted):
            _merge(base[key], value, origin, source, dotted + ".")
        else:
            for stale in [k for k in origin if k.startswith(dotted + ".")]:  # what the replaced value held
                del origin[stale]
            base[key] = value
            origin[dotted] = source
            if isinstance(value, dict):
                _mark(value, origin, source, dotted + ".")


def _mark(tree: dict[str, Any], origin: dict[str, str], source: str, prefix: str) -> None:
    for key, value in tree.items():
        origin[f"{prefix}{key}"] = source
        if isinstance(value, dict):
            _mark(value, origin, source, f"{prefix}{key}.")


def _scalar(raw: str, value: Any) -> Any:
    """An override's value as YAML reads it, except where YAML 1.1 would change the text's meaning: dates
    and times stay text (``airflow.start_date=2026-01-01``, no inner quotes needed), ``yes``/``no``/``on``/
    ``off`` stay words (only ``true``/``false`` are booleans), ``0123`` or ``1:30`` stay text (not octal or
    sexagesimal numbers). Pydantic then converts the text to the key's type."""
    text = raw.strip()
    if isinstance(value, dt.date | dt.datetime):
        return text
    if isinstance(value, bool):
        return value if text.lower() in ("true", "false") else text
    if isinstance(value, int) and not re.fullmatch(r"[-+]?(0|[1-9][0-9_]*)", text):
        return text
    return value


def _env_overrides(environ: dict[str, str]) -> dict[str, Any]:
    """SKYREC__PUBLISH__REDIS_URL=... -> {"publish": {"redis_url": ...}}; values parsed as YAML scalars."""
    out: dict[str, Any] = {}
    for name, raw in environ.items():
        if not name.startswith(ENV_PREFIX):
            continue
        keys = [k.lower() for k in name[len(ENV_PREFIX):].split("__") if k]
        if not keys:
            continue
        node = out
        for k in keys[:-1]:
            node = node.setdefault(k, {})
        try:
            value = yaml.safe_load(raw)
        except yaml.YAMLError:
            value = raw
        node[keys[-1]] = _scalar(raw, value)
    return out


def _origins_of(origin: dict[str, str], dotted: str, message: str) -> str:
    """Where the value an error is about came from. A check of several keys (``eval_max_users (50000) is below
    quality_gate.min_users``) is reported at their parent: the keys its message names that were set somewhere
    say where, not the file that set the parent first."""
    named = {f"{dotted}.{token}" if dotted else token for token in re.findall(r"[a-z_][a-z0-9_]*(?:\.[a-z0-9_]+)*",
                                                                              message)}
    found = sorted({origin[key] for key in named if key in origin})
    return " and ".join(found) if found else _origin_of(origin, dotted)


def _origin_of(origin: dict[str, str], dotted: str) -> str:
    parts = dotted.split(".")
    while parts:
        key = ".".join(parts)
        if key in origin:
            return origin[key]
        parts.pop()
    return "defaults"


def load_config(
    env: str | None = None,
    *,
    root: str | Path | None = None,
    overrides: dict[str, Any] | None = None,
    environ: dict[str, str] | None = None,
) -> Config:
    """Load ``config/base.yaml`` + ``config/env/<env>.yaml`` + ``SKYREC__`` variables (+ ``overrides``)."""
    environ = dict(os.environ if environ is None else environ)
    env = env or environ.get("SKYREC_ENV") or "local"
    root_path = Path(root).resolve() if root else project_root()
    config_dir = Path(environ.get("SKYREC_CONFIG_DIR") or root_path / "config")
    base_file = config_dir / "base.yaml"
    env_file = config_dir / "env" / f"{env}.yaml"
    if not env_file.is_file():
        known = sorted(p.stem for p in (config_dir / "env").glob("*.yaml"))
        raise ConfigError(f"{env_file}: no such environment {env!r} (known: {known})")

    merged: dict[str, Any] = {}
    origin: dict[str, str] = {}
    _merge(merged, _read_yaml(base_file), origin, str(base_file))
    _merge(merged, _read_yaml(env_file), origin, str(env_file))
    _merge(merged, _env_overrides(environ), origin, "environment (SKYREC__*)")
    if overrides:
        _merge(merged, overrides, origin, "overrides")
    if environ.get("SKYREC_HOME"):
        _merge(merged, {"paths": {"home": environ["SKYREC_HOME"]}}, origin, "environment (SKYREC_HOME)")
    merged["env"] = env
    merged["project_root"] = str(root_path)
    try:
        return Config.model_validate(merged)
    except ValidationError as exc:
        lines = []
        for err in exc.errors():
            dotted = ".".join(str(p) for p in err["loc"])
            if not dotted and (m := re.search(r"([a-z_]+(?:\.[A-Za-z0-9_]+)+):", err["msg"])):
                dotted = m.group(1)  # a cross-field check names its key in the message
            lines.append(f"{_origins_of(origin, dotted, err['msg'])}: {dotted or '<top>'}: {err['msg']}")
        raise ConfigError("invalid configuration:\n  " + "\n  ".join(lines)) from None
