"""Model parameters are checked by their rules (``skyrec.models.params``): when a model is built, when the
configuration loads and when a search space is checked -- errors name the key and the value, and are
configuration errors (not retried), never a truncation, a silent meaning, an OverflowError or OpenMP
aborting the process."""

from __future__ import annotations

import datetime as dt
import json
import math
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import scipy.sparse as sp

from skyrec.config import Config, ConfigError, load_config
from skyrec.evaluation import search
from skyrec.evaluation.synthetic import planted_matrix
from skyrec.models import build_model
from skyrec.models._threads import fit_threads
from skyrec.models.als import ALSModel
from skyrec.models.bpr import BPRModel
from skyrec.models.ease import EASEModel
from skyrec.models.hybrid import HybridModel
from skyrec.models.knn import ItemKNNModel
from skyrec.models.params import INT_MAX, SPECS, ParamError

ROOT = Path(__file__).resolve().parents[2]
MODELS = {"als": ALSModel, "bpr": BPRModel, "hybrid": HybridModel, "ease": EASEModel, "knn": ItemKNNModel}
NAN, INF = float("nan"), float("inf")

#: (model, parameter, refused value): every class of bad number the reviewer found, for every model
REFUSED = [
    *((m, "num_threads", v) for m in ("als", "bpr", "hybrid", "knn") for v in (-4, -1, 1.5, True, 10**6, "many")),
    ("knn", "neighbours", 10**12), ("knn", "neighbours", 2.7), ("knn", "neighbours", True), ("knn", "neighbours", "abc"),
    ("knn", "neighbours", 0), ("knn", "neighbours", -3), ("knn", "neighbours", NAN), ("knn", "neighbours", INF),
    ("knn", "bm25_k1", -1), ("knn", "bm25_k1", NAN), ("knn", "bm25_k1", INF),
    ("knn", "bm25_b", -2), ("knn", "bm25_b", 5), ("knn", "bm25_b", NAN),
    ("knn", "similarity", "jaccard"), ("knn", "similarity", 3),
    ("knn", "series_weight", NAN), ("knn", "series_weight", INF), ("knn", "series_catch_up", NAN),
    ("knn", "series_follow_within", 0.5), ("knn", "memory_limit_gb", INF),
    ("ease", "binary", "false"), ("ease", "binary", 1), ("ease", "binary", None),
    ("ease", "regularization", 0), ("ease", "regularization", NAN), ("ease", "series_weight", NAN),
    ("ease", "series_depth", True),
    *((m, "factors", v) for m in ("als", "bpr") for v in (True, 2.5, 0, -1, NAN, 10**12)),
    *((m, "iterations", v) for m in ("als", "bpr") for v in (0, 1.5, False)),
    *((m, "regularization", v) for m in ("als", "bpr") for v in (-1, NAN, INF)),
    ("als", "alpha", 0), ("als", "alpha", -1), ("als", "alpha", NAN), ("als", "alpha", INF),
    ("als", "random_state", -1), ("als", "random_state", 1.5),
    ("bpr", "learning_rate", 0), ("bpr", "learning_rate", -0.1), ("bpr", "learning_rate", NAN),
    ("bpr", "learning_rate", INF),
    ("hybrid", "no_components", 0), ("hybrid", "epochs", True), ("hybrid", "loss", "hinge"),
    ("hybrid", "learning_rate", NAN), ("hybrid", "item_alpha", -1), ("hybrid", "max_sampled", 0),
]


@pytest.mark.parametrize(("model", "param", "value"), REFUSED)
def test_a_refused_value_names_the_parameter_and_the_value_when_the_model_is_built(model: str, param: str,
                                                                                      value: Any) -> None:
    with pytest.raises(ParamError) as err:
        MODELS[model](**{param: value})
    assert f"models.{model}.params.{param} must be" in str(err.value) and f"got {value!r}" in str(err.value)
    assert isinstance(err.value, ValueError) and err.value.param == param


@pytest.mark.parametrize(("model", "param", "value"), REFUSED)
def test_a_refused_value_is_a_config_error_when_the_configuration_loads(model: str, param: str, value: Any) -> None:
    """``python -m skyrec config`` (and every job, before it runs) refuses it, naming where it came from."""
    with pytest.raises(ConfigError) as err:
        load_config("local", root=ROOT, environ={}, overrides={"models": {model: {"params": {param: value}}}})
    assert f"overrides: models.{model}.params.{param}: " in str(err.value) and f"got {value!r}" in str(err.value)


@pytest.mark.parametrize(("var", "key", "shown"), [
    ("MODELS__KNN__PARAMS__NUM_THREADS=-4", "models.knn.params.num_threads", "-4"),
    ("MODELS__KNN__PARAMS__NEIGHBOURS=1000000000000", "models.knn.params.neighbours", "1000000000000"),
    ("MODELS__KNN__PARAMS__NEIGHBOURS=2.7", "models.knn.params.neighbours", "2.7"),
    ("MODELS__KNN__PARAMS__NEIGHBOURS=true", "models.knn.params.neighbours", "True"),
    ("MODELS__KNN__PARAMS__NEIGHBOURS=abc", "models.knn.params.neighbours", "'abc'"),
    ("MODELS__KNN__PARAMS__BM25_K1=-1", "models.knn.params.bm25_k1", "-1"),
    ("MODELS__KNN__PARAMS__BM25_B=-2", "models.knn.params.bm25_b", "-2"),
    ("MODELS__EASE__PARAMS__BINARY='false'", "models.ease.params.binary", "'false'"),
    ("MODELS__KNN__PARAMS__SERIES_WEIGHT=.nan", "models.knn.params.series_weight", "nan"),
    ("MODELS__KNN__PARAMS__SIMILARITY=jaccard", "models.knn.params.similarity", "'jaccard'"),
])
def test_environment_overrides_are_checked_and_named(var: str, key: str, shown: str) -> None:
    name, _, raw = var.partition("=")
    with pytest.raises(ConfigError) as err:
        load_config("local", root=ROOT, environ={f"SKYREC__{name}": raw})
    assert f"environment (SKYREC__*): {key}: " in str(err.value) and f"got {shown}" in str(err.value)


def test_values_are_normalised_to_what_the_model_uses() -> None:
    knn = ItemKNNModel(neighbours=70.0, bm25_k1="1.5", num_threads=np.int64(2), series_depth="4")
    assert knn.params == {"neighbours": 70, "bm25_k1": 1.5, "num_threads": 2, "series_depth": 4}
    assert all(type(v) in (int, float) for v in knn.params.values())
    assert BPRModel(learning_rate="1e-3").params["learning_rate"] == 0.001  # YAML 1.1 reads 1e-3 as text
    assert EASEModel(binary=np.bool_(True)).params["binary"] is True
    assert ALSModel(random_state=None).params["random_state"] is None
    cfg = load_config("local", root=ROOT, environ={"SKYREC__MODELS__BPR__PARAMS__LEARNING_RATE": "1e-3"})
    assert build_model(cfg, "bpr").params["learning_rate"] == 0.001


def test_every_model_lists_its_rules_and_its_defaults_obey_them() -> None:
    """``SPECS`` (what the configuration checks) is each class's own table, with one rule per parameter."""
    for path, (owner, name, spec) in SPECS.items():
        module, _, cls_name = path.partition(":")
        cls = getattr(__import__(module, fromlist=[cls_name]), cls_name)
        assert (cls.__name__, cls.name, cls.param_spec) == (owner, name, spec)
        assert set(spec) == set(cls.defaults), cls
        assert cls(**cls.defaults).params == cls.defaults  # every default passes its own rule unchanged


# ---- num_threads: 0 is every CPU, a negative count never reaches OpenMP --------------------------------


def test_num_threads_zero_means_every_cpu_and_a_negative_count_is_refused() -> None:
    assert fit_threads(0) == fit_threads(None) == len(os.sched_getaffinity(0))
    assert fit_threads(3) == 3
    for bad in (-4, -1, True, 1.5, 10**6):
        with pytest.raises(ValueError, match=r"num_threads must be a whole number in \[0, 1,024\]"):
            fit_threads(bad)  # type: ignore[arg-type]
    for cls in (ALSModel, BPRModel, HybridModel, ItemKNNModel):
        assert cls(num_threads=0).params["num_threads"] == 0


def test_a_negative_thread_count_fails_the_train_job_as_bad_input_with_a_result(skyrec_home: Path, tmp_path: Path,
                                                                                monkeypatch: pytest.MonkeyPatch) -> None:
    """It used to abort the whole process in libgomp ("Out of memory allocating 962072674752 bytes"): no job
    result, a failure that looks retryable."""
    from skyrec.jobs.base import EXIT_BAD_INPUT, RunInfo, execute

    monkeypatch.setenv("SKYREC__MODELS__KNN__PARAMS__NUM_THREADS", "-4")
    result = tmp_path / "result.json"
    run = RunInfo(dag_id="train_model", run_id="r1", task_id="train", logical_date=dt.datetime(2026, 1, 1, 1))
    code, payload = execute("train", env="local", run=run, params={"model": "knn"}, result_file=str(result))
    assert code == EXIT_BAD_INPUT and payload["error_kind"] == "ConfigError"
    assert "models.knn.params.num_threads" in payload["error"] and "got -4" in payload["error"]
    assert json.loads(result.read_text())["exit_code"] == EXIT_BAD_INPUT


# ---- item-kNN's neighbours and BM25 --------------------------------------------------------------------


@pytest.fixture(scope="module")
def plays() -> sp.csr_matrix:
    m, _, _ = planted_matrix(200, 150, 6, plays_per_user=15, purity=0.85, seed=11)
    m = sp.csr_matrix(m, dtype=np.float32)
    m.data = (1.0 + np.arange(m.nnz) % 3).astype(np.float32)
    return m


def test_more_neighbours_than_items_fit_every_item(plays: sp.csr_matrix) -> None:
    """The largest accepted count is handed to implicit as the item count (else it allocates K entries: 32 GiB)."""
    n_items = plays.shape[1]
    big = ItemKNNModel(neighbours=INT_MAX, similarity="cosine", series_weight=0, num_threads=1).fit(plays)
    exact = ItemKNNModel(neighbours=n_items, similarity="cosine", series_weight=0, num_threads=1).fit(plays)
    assert (big.state()["similarity_csr_data"] == exact.state()["similarity_csr_data"]).all()
    with pytest.raises(ParamError):
        ItemKNNModel(neighbours=INT_MAX + 1)


def test_bm25_k1_zero_weighs_every_play_the_same(plays: sp.csr_matrix) -> None:
    """k1 = 0 is accepted and means binary plays (BM25's term saturates at once), not all-zero similarities."""
    binary = plays.copy()
    binary.data[:] = 1.0
    weighted = ItemKNNModel(bm25_k1=0, series_weight=0, num_threads=1).fit(plays).state()
    plain = ItemKNNModel(bm25_k1=0, series_weight=0, num_threads=1).fit(binary).state()
    assert weighted["similarity_csr_data"].size and np.abs(weighted["similarity_csr_data"]).max() > 0
    np.testing.assert_allclose(weighted["similarity_csr_data"], plain["similarity_csr_data"], rtol=1e-6)


def test_ease_binary_must_be_a_real_boolean(plays: sp.csr_matrix) -> None:
    """The text "false" is truthy: it used to binarise silently."""
    with pytest.raises(ParamError, match=r"binary must be true or false .*got 'false'"):
        EASEModel(binary="false")
    weighted = EASEModel(regularization=30.0, binary=False).fit(plays).user_representations()
    assert sorted(set(weighted.data.tolist())) == [1.0, 2.0, 3.0]


# ---- the configuration loads without any model library ----------------------------------------------


def test_the_configuration_checks_parameters_without_importing_numpy_or_a_model() -> None:
    code = ("import sys\nfrom skyrec.config import load_config, ConfigError\n"
            "load_config('local', environ={})\n"
            "try:\n    load_config('local', environ={'SKYREC__MODELS__KNN__PARAMS__BM25_B': '5'})\n"
            "except ConfigError as e:\n    assert 'models.knn.params.bm25_b' in str(e)\nelse:\n    raise SystemExit(1)\n"
            "heavy = [m for m in ('numpy', 'scipy', 'implicit', 'lightfm', 'skyrec.models.knn') if m in sys.modules]\n"
            "assert not heavy, heavy\n")
    done = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True, timeout=120,
                          env={**os.environ, "SKYREC_HOME": "/nonexistent-skyrec-home"})
    assert done.returncode == 0, done.stderr


# ---- search spaces -----------------------------------------------------------------------------------


def _space_config(model: str, space: dict) -> Config:
    return load_config("local", root=ROOT, environ={},
                       overrides={"training": {"search": {"enabled": True, "models": [model],
                                                          "spaces": {model: space}}}})


@pytest.mark.parametrize(("space", "key", "match"), [
    ({"neighbours": {"float": [1, INF]}}, "knn.neighbours", "low and high must be finite"),
    ({"bm25_k1": {"float": [-INF, 1]}}, "knn.bm25_k1", "low and high must be finite"),
    ({"bm25_k1": {"float": [0, NAN]}}, "knn.bm25_k1", "low and high must be finite"),
    ({"bm25_b": {"choice": [0.1, NAN]}}, "knn.bm25_b", "numbers must be finite"),
    ({"bm25_b": {"float": [-5, 5]}}, "knn.bm25_b", r"ItemKNNModel refuses bm25_b=-5\.0: bm25_b must be"),
    ({"neighbours": {"int": [1, 10**12]}}, "knn.neighbours", "refuses neighbours=1000000000000"),
    ({"neighbours": {"float": [1, 100]}}, "knn.neighbours", "is a whole number: search it with int"),
    ({"similarity": {"choice": ["cosine", "jaccard"]}}, "knn.similarity", "refuses similarity='jaccard'"),
    ({"num_threads": {"int": [-4, 4]}}, "knn.num_threads", "refuses num_threads=-4"),
    ({"factorz": {"int": [16, 64]}}, "knn.factorz", "ItemKNNModel has no parameter 'factorz'"),
    # every value of a choice by the parameter's rule: a whole number as a number, once
    ({"neighbours": {"choice": [10, "50"]}}, "knn.neighbours", "refuses neighbours='50': .*not text"),
    ({"neighbours": {"choice": [10, 2.5]}}, "knn.neighbours", r"refuses neighbours=2\.5"),
    ({"neighbours": {"choice": [50, 50.0]}}, "knn.neighbours", r"neighbours=50\.0 is the same value as 50"),
    ({"bm25_b": {"choice": [0.5, "0.5"]}}, "knn.bm25_b", "bm25_b='0.5' is the same value as 0.5"),
])
def test_a_search_space_the_model_refuses_is_a_config_error_when_it_loads(space: dict, key: str, match: str) -> None:
    with pytest.raises(ConfigError, match=rf"training\.search\.spaces\.{key}: .*{match}"):
        _space_config(key.partition(".")[0], space)


def _with_space(config: Config, model: str, space: dict) -> Config:
    """``config`` with a search space the configuration's own check never saw (as a model of another package
    would have: only ``check_space`` at the train step looks at it)."""
    from skyrec.config import SearchSpace

    spaces = {model: {p: SearchSpace.model_construct(**{k if k != "int" and k != "float" else f"{k}_range": v
                                                        for k, v in s.items()}) for p, s in space.items()}}
    s = config.training.search.model_copy(update={"enabled": True, "models": [model], "spaces": spaces})
    return config.model_copy(update={"training": config.training.model_copy(update={"search": s})})


def test_check_space_refuses_a_range_whose_end_the_model_refuses_naming_the_key() -> None:
    config = _with_space(load_config("local", root=ROOT, environ={}), "knn", {"bm25_b": {"float": (-5.0, 5.0)}})
    with pytest.raises(ConfigError, match=r"training\.search\.spaces\.knn\.bm25_b: ItemKNNModel refuses bm25_b=-5\.0"):
        search.check_space(config, "knn")
    config = _with_space(config, "knn", {"neighbours": {"int": (1, 10**12)}})
    with pytest.raises(ConfigError, match=r"training\.search\.spaces\.knn\.neighbours: .*10+"):
        search.check_space(config, "knn")
    # both ends are whole numbers, but every trial between them would be refused (2.7 neighbours)
    config = _with_space(config, "knn", {"neighbours": {"float": (1.0, 100.0)}})
    with pytest.raises(ConfigError, match=r"training\.search\.spaces\.knn\.neighbours: .*search it with int"):
        search.check_space(config, "knn")


def test_check_space_turns_any_arithmetic_error_of_another_packages_model_into_a_config_error(monkeypatch) -> None:
    """A model without rules (another package's) that overflows on a range's end: a ConfigError naming the
    key, not an OverflowError (which the job would retry)."""

    class Overflowing(ItemKNNModel):
        param_spec: Any = {}

        def __init__(self, **params: Any) -> None:
            if not math.isfinite(float(params.get("bm25_k1", 1.0))) or float(params.get("bm25_k1", 1.0)) > 1e300:
                raise OverflowError("cannot convert float infinity to integer")
            super().__init__(**params)

    monkeypatch.setattr(search, "model_class", lambda config, model: Overflowing)
    config = _with_space(load_config("local", root=ROOT, environ={}), "knn", {"bm25_k1": {"float": (1.0, 1e308)}})
    with pytest.raises(ConfigError, match=r"training\.search\.spaces\.knn\.bm25_k1: Overflowing refuses"):
        search.check_space(config, "knn")


def test_a_real_number_choice_may_be_text_as_yaml_reads_it() -> None:
    """YAML 1.1 reads ``1e-3`` as text: a choice of a real-number parameter takes it (a whole-number one does
    not: an unquoted whole number is always a number, a quoted one is a mistake)."""
    config = _space_config("knn", {"bm25_k1": {"choice": ["1e-3", 0.5]}})
    assert config.training.search.spaces["knn"]["bm25_k1"].choice == ["1e-3", 0.5]


def test_not_applying_names_the_parameters_the_others_switch_off() -> None:
    from skyrec.models.params import KNN, not_applying

    cosine = {"similarity": "cosine", "bm25_b": 0.3, "bm25_k1": 1.0, "neighbours": 10}
    assert set(not_applying(KNN, cosine)) == {"bm25_b", "bm25_k1"}
    assert "applies only with similarity bm25 (similarity is 'cosine')" == not_applying(KNN, cosine)["bm25_b"]
    assert not_applying(KNN, cosine, ["neighbours", "bm25_b"]) == {"bm25_b": not_applying(KNN, cosine)["bm25_b"]}
    assert not_applying(KNN, {**cosine, "similarity": "bm25"}) == {}


def test_the_series_parameters_do_not_apply_without_a_series_term() -> None:
    from skyrec.models.params import EASE, KNN, not_applying

    off = {"series_weight": 0.0, "series_depth": 5, "series_decay": 0.5, "series_catch_up": 0.1,
           "series_follow_within": 2}
    assert set(not_applying(KNN, off)) == {"series_depth", "series_decay", "series_catch_up", "series_follow_within"}
    assert not_applying(KNN, off)["series_depth"] == "has no effect while series_weight is 0.0"
    assert set(not_applying(EASE, {"series_weight": 0, "series_depth": 5, "regularization": 9.0})) == {"series_depth"}
    on = {**off, "series_weight": 0.5}
    assert not_applying(KNN, on) == {}
    assert not_applying(KNN, {**on, "series_catch_up": 1.0}) == {
        "series_follow_within": "has no effect while series_catch_up is 1.0"}
