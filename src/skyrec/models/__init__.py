"""Recommender models behind one contract (``skyrec.models.base.Recommender``)."""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

from skyrec.config import Config, ConfigError
from skyrec.models.params import ParamError

if TYPE_CHECKING:  # the package imports no numpy or scipy until a model is used: the configuration's check of
    # models' parameters (skyrec.models.params) imports this package when the configuration loads
    from skyrec.models.base import Recommender


def model_class(config: Config, name: str) -> type[Recommender]:
    from skyrec.models.base import Recommender

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
    cls = model_class(config, name)
    try:
        return cls(**params)
    except ParamError as exc:  # a refused value: name its config key
        raise ConfigError(exc.at(f"models.{name}.params.{exc.param}")) from None
    except (TypeError, ValueError, ArithmeticError) as exc:  # unknown or invalid parameters: name the config key
        raise ConfigError(f"models.{name}.params: {exc}") from None


def recommender_from_files(files: dict[str, bytes], allowed: set[str] | None = None) -> Recommender:
    """Restore a saved model (``model.npz`` + ``model.json``) whatever its class, refusing non-models.

    The class named in an artefact gets imported, so it must be one of ``allowed`` (pass the configured
    ``class_path`` values) or, when ``allowed`` is None, live in the ``skyrec.models`` package: a file in
    the lake never chooses an arbitrary module to import.
    """
    return recommender_class(files["model.json"], allowed).from_files(files)


def recommender_class(model_json: bytes | str, allowed: set[str] | None = None) -> type[Recommender]:
    """The class a saved ``model.json`` names, under the rule of ``recommender_from_files`` (configured class
    paths, or the ``skyrec.models`` package), without loading the model's arrays: precompute calls class
    methods of the contract (``Recommender.item_queries``) on the artefact's factors."""
    import json

    from skyrec.models.base import Recommender

    class_path = str(json.loads(model_json).get("class", ""))
    module_name, _, class_name = class_path.partition(":")
    ok = class_path in allowed if allowed is not None else module_name.startswith("skyrec.models.")
    if not ok:
        raise ValueError(f"model.json: refusing to import model class {class_path!r} (not a configured model)")
    cls = getattr(importlib.import_module(module_name), class_name, None)
    if not (isinstance(cls, type) and issubclass(cls, Recommender)):
        raise ValueError(f"model.json: {class_path!r} is not a Recommender")
    return cls


def resolve_version(config: Config, model: str, requested: str | None = None) -> str:
    """The version that training ``model`` produces: the one version its variants share.

    All variants using a model share one version in config; when they name several (a new version being
    rolled out beside the old one) the run must say which with ``requested``. A model no variant uses yet
    (trained for comparison) gets ``v1`` unless told otherwise.
    """
    if model not in config.models:
        raise ConfigError(f"models.{model}: unknown model (known: {sorted(config.models)})")
    versions = sorted({v.version for v in config.variants.values() if v.model == model})
    if requested:
        if versions and requested not in versions:
            raise ConfigError(f"version {requested!r}: no variant uses model {model!r} at that version "
                              f"(configured: {versions})")
        return requested
    if len(versions) > 1:
        raise ConfigError(f"variants use model {model!r} at several versions {versions}: pass --param version=...")
    return versions[0] if versions else "v1"


def variants_of(config: Config, model: str, version: str) -> list[str]:
    """Names of the variants served by (model, version)."""
    return sorted(n for n, v in config.variants.items() if v.model == model and v.version == version)
