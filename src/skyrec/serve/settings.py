"""The API's settings: the ``serve:`` section of the skyrec Config plus what the process environment adds.

Config is validated once by :mod:`skyrec.config`; this module only gathers what the app needs in one frozen
object. The admin API key is read from the environment variable *named* by ``serve.admin_api_key_env`` (the
key itself never lives in a config file) and is never logged or shown in ``repr``.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass, field

from skyrec.config import Config, load_config
from skyrec.publish.keys import Keys


@dataclass(frozen=True)
class ServeSettings:
    redis_url: str
    key_prefix: str
    variants: tuple[str, ...]
    default_limit: int
    max_limit: int
    max_offset: int
    pointer_cache_seconds: float
    redis_timeout_seconds: float
    redis_max_connections: int
    redis_pipelined_connections: int
    item_cache_size: int
    last_good_users: int
    access_log: bool
    log_level: str
    graceful_shutdown_seconds: float
    admin_api_key_env: str
    lake_url: str
    lake_storage_options: dict = field(default_factory=dict, repr=False)
    admin_api_key: str | None = field(default=None, repr=False)

    @property
    def keys(self) -> Keys:
        return Keys(self.key_prefix)

    @classmethod
    def from_config(cls, config: Config | None = None, environ: Mapping[str, str] | None = None) -> ServeSettings:
        config = config or load_config()
        env: Mapping[str, str] = os.environ if environ is None else environ
        s = config.serve
        key = env.get(s.admin_api_key_env) or None
        return cls(
            redis_url=s.redis_url, key_prefix=config.publish.key_prefix, variants=tuple(config.variants),
            default_limit=min(s.default_limit, s.max_limit), max_limit=s.max_limit, max_offset=s.max_offset,
            pointer_cache_seconds=s.pointer_cache_seconds, redis_timeout_seconds=s.redis_timeout_seconds,
            redis_max_connections=s.redis_max_connections,
            redis_pipelined_connections=s.redis_pipelined_connections, item_cache_size=s.item_cache_size,
            last_good_users=s.last_good_users, access_log=s.access_log, log_level=s.log_level,
            graceful_shutdown_seconds=s.graceful_shutdown_seconds, admin_api_key_env=s.admin_api_key_env,
            lake_url=config.lake_url, lake_storage_options=dict(config.storage.storage_options),
            admin_api_key=key,
        )
