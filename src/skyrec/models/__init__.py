"""Recommender models behind one contract (``skyrec.models.base.Recommender``)."""

from __future__ import annotations

import importlib
from typing import Any

from skyrec.config import Config, ConfigError
from skyrec.models.base import Recommender


def model_class(config: Config, name: str) -> type[Recommender]:
    try:
        spec = config.models[name]
    except KeyError:
        raise ConfigError(f"models.{name}: unknown model (known: {sorted(config.models)})") from None
    module_name, _, class_name = spec.class_path.partition(":")
    try:
        cls = getattr(importlib.import_module(module_name), class_name)
    except (ImportError, AttributeError) as exc:
        raise ConfigError(f"models.{name}.class_path: cannot import {spec.class_path!r}: {exc}") from None
    if not (isinstance(cls, type) and issubclass(cls, Recommender)):
        raise ConfigError(f"models.{name}.class_path: {spec.class_path!r} is not a Recommender")
    return cls


def build_model(config: Config, name: str, **extra: Any) -> Recommender:
    params = {**config.models[name].params, **extra} if name in config.models else extra
    return model_class(config, name)(**params)
