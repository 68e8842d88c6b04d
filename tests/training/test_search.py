"""The hyper-parameter search of the train step (``training.search``, ``skyrec.evaluation.search``)."""

from __future__ import annotations

import datetime as dt
import json
import os
from pathlib import Path

import numpy as np
import pytest
import scipy.sparse as sp
from _train_helpers import END, FAST, run_job

from skyrec.config import Config, ConfigError, load_config
from skyrec.evaluation import search
from skyrec.evaluation.offline import Scored, evaluate
from skyrec.evaluation.report import render
from skyrec.evaluation.synthetic import planted_tables
from skyrec.jobs.base import EXIT_BAD_INPUT, EXIT_OK
from skyrec.models import build_model
from skyrec.models.dataset import TrainingData, build_training_data, load_training_data
from skyrec.models.training import fit_on

ROOT = Path(__file__).resolve().parents[2]
#: a deliberately bad starting point for ALS: two factors, heavy regularisation, little confidence
BAD_ALS = {"factors": 2, "iterations": 6, "regularization": 50.0, "alpha": 0.5}


#: the models these tests search (the shipped rails train item-kNN only; a search names trained models)
TRAINED = ["als", "ease", "knn"]


def _config(*, params: dict | None = None, **search_overrides: object) -> Config:
    """ALS (BAD_ALS unless ``params`` gives ``models.<name>.params``) searched with ``search_overrides``."""
    return load_config("local", root=ROOT, environ={**os.environ, "SKYREC_HOME": "/nonexistent-skyrec-home"},
                       overrides={"models": {name: {"params": p} for name, p in (params or {"als": BAD_ALS}).items()},
                                  "training": {"models": TRAINED,
                                               "search": {"enabled": True, "models": ["als"], "n_trials": 12,
                                                          **search_overrides}}})


@pytest.fixture(scope="module")
def data() -> TrainingData:
    """Planted-taste data made into a dataset by the create_dataset code (per-user split)."""
    activity, catalogue, _ = planted_tables(n_users=400, n_items=300, plays_per_user=25, seed=5)
    built, _ = build_training_data(activity, catalogue, weighting={"play": 1.0, "complete": 2.0},
                                   played_fraction_weight=0.5, half_life_days=30, holdout_days=3,
                                   split={"kind": "per_user", "test_fraction": 0.2})
    return built


@pytest.fixture(scope="module")
def searched(data: TrainingData) -> dict:
    return search.run_search(_config(), "als", data.train, item_features=data.item_features).as_dict()


def _test_ndcg(config: Config, data: TrainingData, params: dict) -> dict:
    """NDCG@10 on the split's *test* (what evaluate and the gate judge on) of ALS fit on train with ``params``."""
    fitted = fit_on(build_model(config, "als", **params), data.train, None)
    full, mask = fitted.full_item_factors(data.train.shape[1])
    res = evaluate({"m": Scored(fitted.user_factors, full, None if mask.all() else mask)}, data.train, data.test,
                   k=10, resamples=200)
    overall = res["models"]["m"]["overall"]
    return {"ndcg": overall["ndcg_at_k"], "ci": overall["ci"]["ndcg_at_k"]}


def test_validation_split_is_carved_from_the_training_part(data: TrainingData) -> None:
    split = search.validation_split(data.train, fraction=0.2, max_users=10_000, seed=3)
    pattern = lambda m: {(int(r), int(c)) for r, c in zip(*m.nonzero(), strict=True)}  # noqa: E731
    fit, held, train = pattern(split.fit), pattern(split.held_out), pattern(data.train)
    assert fit | held == train and not fit & held  # a partition of the training positives, nothing else
    n_fit, n_held = np.diff(split.fit.indptr), np.diff(split.held_out.indptr)
    assert (n_held[split.users] >= 1).all() and (n_fit[split.users] >= 1).all()  # never all of a user's
    assert set(np.flatnonzero(n_held)) == set(split.users.tolist())
    assert 0.15 < split.held_out.nnz / data.train.nnz < 0.3
    fit_values = split.fit.toarray()
    assert np.array_equal(fit_values[fit_values > 0], data.train.toarray()[fit_values > 0])  # weights kept
    again = search.validation_split(data.train, fraction=0.2, max_users=10_000, seed=3)
    assert (again.held_out != split.held_out).nnz == 0  # seeded
    capped = search.validation_split(data.train, fraction=0.2, max_users=50, seed=3)
    assert len(capped.users) == 50 and set(np.flatnonzero(np.diff(capped.held_out.indptr))) <= set(capped.users)


def test_latest_validation_holds_out_each_users_newest_positives_by_first_play(data: TrainingData) -> None:
    """``validation_method: latest`` holds out what the test split holds out one step earlier: per validation
    user, the training positives first played last."""
    first = data.train_first_play
    assert first is not None and np.array_equal(first.indptr, data.train.indptr) \
        and np.array_equal(first.indices, data.train.indices)
    split = search.validation_split(data.train, fraction=0.2, max_users=10_000, seed=3, first_play=first,
                                    method="latest")
    assert split.method == "latest" and split.fallback is None
    assert split.describe(0.2, 3)["kind"] == "latest"
    pattern = lambda m: {(int(r), int(c)) for r, c in zip(*m.nonzero(), strict=True)}  # noqa: E731
    fit, held = pattern(split.fit), pattern(split.held_out)
    assert fit | held == pattern(data.train) and not fit & held
    when = {(int(r), int(c)): int(t) for r, c, t in zip(*sp.find(first), strict=True)}
    for u in split.users.tolist():
        kept = [when[(u, i)] for i in split.fit[u].indices]
        out = [when[(u, i)] for i in split.held_out[u].indices]
        assert out and kept and min(out) >= max(kept), u  # nothing kept was first played after a held-out one
    rnd = search.validation_split(data.train, fraction=0.2, max_users=10_000, seed=3, first_play=first,
                                  method="random")
    assert rnd.method == "random" and (rnd.held_out != split.held_out).nnz > 0


def test_latest_validation_without_first_play_times_falls_back_to_random_and_says_so(data: TrainingData) -> None:
    split = search.validation_split(data.train, fraction=0.2, max_users=10_000, seed=3, first_play=None,
                                    method="latest")
    rnd = search.validation_split(data.train, fraction=0.2, max_users=10_000, seed=3)
    assert split.method == "random" and "first-play" in split.fallback
    assert (split.held_out != rnd.held_out).nnz == 0
    assert "first-play" in split.describe(0.2, 3)["fallback"]
    shifted = sp.csr_matrix(data.train_first_play[:, ::-1])  # times on another pattern: not used
    odd = search.validation_split(data.train, fraction=0.2, max_users=10_000, seed=3, first_play=shifted,
                                  method="latest")
    assert odd.method == "random" and "do not cover" in odd.fallback


def test_search_records_the_latest_validation_split(data: TrainingData) -> None:
    rec = search.run_search(_config(n_trials=2), "als", data.train, first_play=data.train_first_play).as_dict()
    assert rec["validation"]["kind"] == "latest" and "fallback" not in rec["validation"]
    assert rec["n_complete"] == 2


def test_search_improves_over_a_bad_starting_point_on_the_test_split(data: TrainingData, searched: dict) -> None:
    assert searched["stopped"] == "n_trials" and len(searched["trials"]) == 12 and searched["reproducible"]
    first = searched["trials"][0]
    assert first["configured"] and first["params"] == {p: BAD_ALS[p] for p in ("factors", "regularization", "alpha")}
    assert searched["best"]["value"] > 1.2 * searched["configured_value"]
    config = _config()
    assert searched["best_params"] == {**config.models["als"].params, **searched["best"]["params"]}
    # judged where the gate judges, on test positives the search never saw
    bad = _test_ndcg(config, data, BAD_ALS)
    tuned = _test_ndcg(config, data, searched["best_params"])
    assert tuned["ndcg"] > 2 * bad["ndcg"] and tuned["ci"][0] > bad["ci"][1], (bad, tuned)


def test_same_data_and_seed_give_the_same_trials(data: TrainingData, searched: dict) -> None:
    again = search.run_search(_config(), "als", data.train, item_features=data.item_features).as_dict()
    strip = lambda rec: [(t["number"], t["params"], t["value"], t["state"]) for t in rec["trials"]]  # noqa: E731
    assert strip(again) == strip(searched)  # 12 trials: past TPE's 10 random start-up trials
    other = search.run_search(_config(seed=1, n_trials=4), "als", data.train).as_dict()
    assert [t["params"] for t in other["trials"][1:]] != [t["params"] for t in searched["trials"][1:4]]


def test_a_refused_trial_is_recorded_as_failed_and_the_search_goes_on(data: TrainingData) -> None:
    """EASE's memory guard refuses 300 items below ~0.0011 GB: trials under that limit fail, not the job."""
    config = _config(models=["ease"], n_trials=10, spaces={"ease": {"memory_limit_gb": {"float": [1e-5, 1e-1],
                                                                                         "log": True}}})
    rec = search.run_search(config, "ease", data.train).as_dict()
    failed = [t for t in rec["trials"] if t["state"] == "failed"]
    done = [t for t in rec["trials"] if t["state"] == "complete"]
    assert len(rec["trials"]) == 10 and failed and done, rec["trials"]
    assert all("MemoryGuardError" in t["error"] and t["value"] is None for t in failed)
    assert all(t["params"]["memory_limit_gb"] < 0.0011 for t in failed)
    assert all(t["params"]["memory_limit_gb"] > 0.0010 for t in done)
    assert rec["n_failed"] == len(failed) and rec["best"]["number"] in {t["number"] for t in done}


def test_every_trial_failing_leaves_the_configured_params(data: TrainingData) -> None:
    config = _config(models=["ease"], n_trials=3, include_configured=False,
                     spaces={"ease": {"memory_limit_gb": {"float": [1e-6, 1e-4]}}})
    rec = search.run_search(config, "ease", data.train).as_dict()
    assert rec["n_failed"] == 3 and rec["best"] is None and rec["note"]
    assert rec["best_params"] == dict(config.models["ease"].params)


def test_time_budgets_stop_the_search_and_are_marked_not_reproducible(data: TrainingData) -> None:
    capped = search.run_search(_config(n_trials=10_000), "als", data.train, time_cap_seconds=1.0).as_dict()
    assert capped["stopped"] == "deadline" and not capped["reproducible"]
    assert 1 <= len(capped["trials"]) < 10_000 and _last_trial_started_by(capped, 1.0)
    timed = search.run_search(_config(n_trials=None, timeout_seconds=1.0), "als", data.train).as_dict()
    assert timed["stopped"] == "timeout_seconds" and not timed["reproducible"] and _last_trial_started_by(timed, 1.0)


def _last_trial_started_by(record: dict, budget: float) -> bool:
    """No trial started past the budget: the trials before the last one (run one after another) took less than
    the budget, give or take the sampler's own time between trials. A wall-time bound on the whole search would
    also charge the last trial's own length, which a loaded machine stretches."""
    before_last = sum(t["seconds"] for t in record["trials"][:-1])
    return before_last < budget + 0.25 * len(record["trials"])


@pytest.mark.parametrize(("override", "key"), [
    ({"spaces": {"als": {"factors": {"int": [256, 16]}}}}, "training.search.spaces.als.factors"),
    ({"spaces": {"als": {"regularization": {"float": [0.0, 1.0], "log": True}}}},
     "training.search.spaces.als.regularization"),
    ({"spaces": {"als": {"factors": {"int": [16, 64], "choice": [1]}}}}, "training.search.spaces.als.factors"),
    ({"spaces": {"als": {"factors": {"range": [16, 64]}}}}, "training.search.spaces.als.factors.range"),
    ({"spaces": {"nosuchmodel": {"factors": {"int": [16, 64]}}}}, "training.search.spaces.nosuchmodel"),
    ({"models": ["nosuchmodel"]}, "training.search.models"),
    ({"models": ["popularity"]}, "training.search.models"),
    ({"n_trials": None, "timeout_seconds": None}, "training.search"),
    ({"metric": "coverage"}, "training.search.metric"),
])
def test_config_errors_name_the_key(override: dict, key: str) -> None:
    with pytest.raises(ConfigError) as err:
        _config(**override)
    assert f"{key}:" in str(err.value)


def test_a_parameter_the_model_does_not_have_is_a_config_error() -> None:
    """Refused when the configuration loads (the model's rules: tests/models/test_params.py)."""
    with pytest.raises(ConfigError, match=r"training\.search\.spaces\.als\.factorz: ALSModel has no parameter"):
        _config(spaces={"als": {"factorz": {"int": [16, 64]}}})
    with pytest.raises(ConfigError, match=r"training\.search\.spaces\.knn\.similarity: .*'jaccard'"):
        _config(models=["knn"], spaces={"knn": {"similarity": {"choice": ["cosine", "jaccard"]}}})


# ---- the train job -------------------------------------------------------------------------------------


def _job_config(config_factory, **search_overrides: object) -> Config:
    return config_factory({**FAST, "models": {**FAST["models"], "als": {"params": BAD_ALS}},
                           "training": {**FAST["training"],
                                        "search": {"enabled": True, "models": ["als"], "n_trials": 6,
                                                   **search_overrides}}}, rails="als")


def test_train_job_searches_on_the_training_part_only_and_records_it(seeded, config_factory, monkeypatch) -> None:
    _, lake, _ = seeded
    config = _job_config(config_factory)
    seen: dict[str, sp.csr_matrix] = {}
    real = search.run_search

    def spy(cfg, model, train, **kwargs):
        seen["train"] = train.copy()
        return real(cfg, model, train, **kwargs)

    monkeypatch.setattr(search, "run_search", spy)
    for job in ("create_dataset", "train"):
        code, payload = run_job(config, job)
        assert code == EXIT_OK, (job, payload.get("error"), payload.get("traceback"))
    run_key = (END + dt.timedelta(hours=1)).strftime("%Y%m%dT%H%M%S")
    data = load_training_data(lake, lake.require(f"training/dataset/{config.training.dataset_id('als')}/run={run_key}"))

    # no leakage: the search saw exactly the training part of the split, not one test positive
    given = seen["train"]
    assert given.shape == data.train.shape and (given != data.train).nnz == 0
    test_pairs = data.test.copy()
    test_pairs.data[:] = 1.0
    assert given.multiply(test_pairs).nnz == 0 and data.test.nnz > 0

    model = lake.require(f"models/als/v1/run={run_key}")
    rec = model.meta["search"]
    assert len(rec["trials"]) == 6 and rec["stopped"] == "n_trials"
    assert {"number", "params", "value", "seconds", "state", "metrics", "error"} <= set(rec["trials"][0])
    assert rec["validation"]["carved_from"].startswith("train") and rec["validation"]["users"] > 0
    # the job hands the dataset's first-play times to the search: the test's shape, no fallback
    assert rec["validation"]["kind"] == "latest" and "fallback" not in rec["validation"]
    assert rec["metric"] == config.training.quality_gate.metric and rec["k"] == config.training.k
    assert model.meta["params"] == rec["best_params"] != BAD_ALS  # the artefact is fit with the best params
    assert model.meta["factors"] == rec["best_params"]["factors"]
    assert payload["summary"]["search"]["best"] == rec["best"]
    budget = rec["budget"]["time_cap_seconds"]
    assert 0 < budget <= config.training.search.deadline_fraction * config.jobs.deadline_seconds("train")

    # evaluate re-fits the params the artefact records; the report shows the search
    code, payload = run_job(config, "evaluate")
    assert code in (EXIT_OK, 3), payload.get("error")
    ev = lake.require(f"evaluations/als/v1/run={run_key}")
    figures = json.loads(lake.open(ev, "evaluation.json").read())
    assert figures["search"] == rec  # the evaluation carries the artefact's search record
    html = render(figures)
    assert "Hyper-parameter search (als)" in html and "stopped by n_trials" in html
    best = rec["best"]
    assert f"trial {best['number']}, ndcg_at_k {best['value']:.4f}" in html
    assert html.count("<td>complete</td>") == 6 and f"factors = {best['params']['factors']}" in html
    assert "Hyper-parameter search" not in render({**figures, "search": None})


def test_train_job_search_respects_the_job_deadline(seeded, config_factory) -> None:
    config = config_factory({**FAST, "models": {**FAST["models"], "als": {"params": BAD_ALS}},
                             "jobs": {"deadlines_minutes": {"train": 0.05}},  # 3 s: the search gets 1.5 s
                             "training": {**FAST["training"], "search": {"enabled": True, "models": ["als"],
                                                                         "n_trials": 10_000}}}, rails="als")
    assert run_job(config, "create_dataset")[0] == EXIT_OK
    code, payload = run_job(config, "train")
    assert code == EXIT_OK, payload.get("error")
    summary = payload["summary"]["search"]
    assert summary["stopped"] == "deadline" and summary["seconds"] < 3.0 and summary["n_complete"] >= 1


@pytest.mark.parametrize(("var", "value", "key"), [
    ("SKYREC__TRAINING__SEARCH__SPACES__ALS__FACTORZ", "{int: [16, 64]}", "training.search.spaces.als.factorz"),
    # an infinite bound used to pass and crash the train step with OverflowError (a retried failure)
    ("SKYREC__TRAINING__SEARCH__SPACES__ALS__FACTORS", "{float: [1, .inf]}", "training.search.spaces.als.factors"),
    ("SKYREC__TRAINING__SEARCH__SPACES__ALS__ALPHA", "{float: [-5, 5]}", "training.search.spaces.als.alpha"),
])
def test_train_job_names_a_bad_search_parameter(skyrec_home, monkeypatch, var: str, value: str, key: str) -> None:
    """Refused as a configuration error (not retried) before the job does anything, naming the key."""
    from skyrec.jobs.base import RunInfo, execute

    monkeypatch.setenv("SKYREC__TRAINING__SEARCH__ENABLED", "true")
    monkeypatch.setenv("SKYREC__TRAINING__SEARCH__MODELS", "[als]")
    monkeypatch.setenv("SKYREC__TRAINING__MODELS", "[als]")
    monkeypatch.setenv(var, value)
    run = RunInfo(dag_id="train_model", run_id="run1", task_id="train", logical_date=END + dt.timedelta(hours=1))
    code, payload = execute("train", env="local", run=run, params={"model": "als"})
    assert code == EXIT_BAD_INPUT and payload["error_kind"] == "ConfigError" and f"{key}: " in payload["error"]


# ---- the configured point outside the space, too little data, what applies -----------------------------

#: a reasonable ALS for the planted data (its factors lie outside the spaces below)
GOOD_ALS = {"factors": 32, "iterations": 6, "regularization": 0.1, "alpha": 2.0}


def _only(model: str, space: dict) -> dict:
    """``spaces`` searching only ``space`` of ``model`` (base.yaml's other parameters of it dropped)."""
    shipped = load_config("local", root=ROOT, environ={"SKYREC_HOME": "/nonexistent-skyrec-home"})
    return {model: {**dict.fromkeys(shipped.training.search.spaces[model]), **space}}


@pytest.mark.parametrize("space", [{"choice": [16, 64]}, {"int": [16, 64]}, {"float": [3.0, 5.0]}],
                         ids=["choice", "int", "float"])
def test_a_configured_value_outside_the_space_is_trial_0_and_recorded_for_every_kind(data: TrainingData,
                                                                                   space: dict) -> None:
    """``factors: 128`` configured, ``choice: [16, 64]`` searched: used to crash the train step ("'128' not in
    (16, 64)"); an int range ran trial 0 at 128 and said nothing. Every kind: trial 0 is the configured point,
    marked, the record names the value outside the space, the sampler's trials stay inside it."""
    param = "alpha" if "float" in space else "factors"
    rec = search.run_search(_config(n_trials=4, spaces=_only("als", {param: space})), "als", data.train).as_dict()
    first = rec["trials"][0]
    assert first["configured"] and first["params"] == {param: BAD_ALS[param]} and first["state"] == "complete"
    assert first["outside_space"] == [param] and rec["configured_outside_space"] == {param: BAD_ALS[param]}
    kind = next(iter(space))
    for t in rec["trials"][1:]:
        v = t["params"][param]
        assert not t["configured"] and "outside_space" not in t
        assert v in space["choice"] if kind == "choice" else space[kind][0] <= v <= space[kind][1]
    assert len(rec["trials"]) == 4 and rec["n_complete"] == 4
    assert f"{param}={BAD_ALS[param]!r} (space {kind} {space[kind]})" in rec["note"]


def test_when_the_configured_point_outside_the_space_wins_the_record_says_the_choice_is_the_configured_value(
        data: TrainingData) -> None:
    config = _config(params={"als": GOOD_ALS}, n_trials=2, spaces=_only("als", {"factors": {"choice": [1]}}))
    rec = search.run_search(config, "als", data.train).as_dict()
    assert rec["best"]["number"] == 0 and rec["best"]["configured"], rec["trials"]
    assert rec["best_params"]["factors"] == 32 and rec["configured_outside_space"] == {"factors": 32}
    assert "the configured params (trial 0) won, with factors=32 (space choice [1]) outside the searched space" \
        in rec["note"]


def test_a_configured_point_inside_the_space_goes_to_the_sampler_unmarked(data: TrainingData) -> None:
    rec = search.run_search(_config(params={"als": GOOD_ALS}, n_trials=2,
                                    spaces=_only("als", {"factors": {"choice": [16, 32]}})), "als",
                           data.train).as_dict()
    first = rec["trials"][0]
    assert first["configured"] and first["params"] == {"factors": 32} and "outside_space" not in first
    assert rec["configured_outside_space"] is None and rec["note"] is None


def test_too_little_data_to_validate_on_uses_the_configured_params_and_says_why() -> None:
    """Every user with one training positive: no validation split. Used to raise (the train step failed as bad
    input); now no trial runs, the configured params are used and the record says why."""
    one_each = sp.csr_matrix(np.eye(50, 80, dtype=np.float32))
    rec = search.run_search(_config(n_trials=3), "als", one_each).as_dict()
    assert rec["trials"] == [] and rec["best"] is None and rec["stopped"] == "no_validation_users"
    assert rec["best_params"] == _config().models["als"].params
    assert rec["validation"]["users"] == 0 and "no user has two or more training positives" in rec["skipped"]
    assert rec["note"].startswith("no search ran: no user has two or more training positives")


def test_train_job_with_too_little_data_for_a_search_fits_the_configured_params(seeded, config_factory,
                                                                                monkeypatch) -> None:
    """The train step commits the model fit with the configured params (evaluate's gate then decides as without
    a search) instead of failing the run."""
    config = _job_config(config_factory)
    real = search.validation_split

    def nobody(train, **kwargs):
        split = real(train, **kwargs)
        return search.ValidationSplit(fit=train, held_out=sp.csr_matrix(train.shape, dtype=np.float32),
                                      users=np.zeros(0, np.int64), method=split.method)

    monkeypatch.setattr(search, "validation_split", nobody)
    assert run_job(config, "create_dataset")[0] == EXIT_OK
    code, payload = run_job(config, "train")
    assert code == EXIT_OK, payload.get("error")
    assert payload["summary"]["search"]["stopped"] == "no_validation_users"
    run_key = (END + dt.timedelta(hours=1)).strftime("%Y%m%dT%H%M%S")
    meta = seeded[1].require(f"models/als/v1/run={run_key}").meta
    assert meta["params"] == config.models["als"].params and meta["search"]["note"].startswith("no search ran")


def test_chosen_parameters_that_have_no_effect_are_marked_not_applying(data: TrainingData) -> None:
    """``bm25_b`` does nothing under ``similarity: cosine``: the record does not pass it off as chosen."""
    config = _config(params={"knn": {"similarity": "cosine"}}, models=["knn"], n_trials=3,
                     spaces=_only("knn", {"similarity": {"choice": ["cosine"]}, "bm25_b": {"float": [0.1, 0.9]}}))
    rec = search.run_search(config, "knn", data.train).as_dict()
    assert rec["best"]["params"]["similarity"] == "cosine"
    assert set(rec["not_applying"]) == {"bm25_b"} and "similarity bm25" in rec["not_applying"]["bm25_b"]
    assert all(t["not_applying"] == ["bm25_b"] for t in rec["trials"] if t["params"]["similarity"] == "cosine")
    bm25 = _config(params={"knn": {"similarity": "bm25"}}, models=["knn"], n_trials=2,
                   spaces=_only("knn", {"similarity": {"choice": ["bm25"]}, "bm25_b": {"float": [0.1, 0.9]}}))
    rec = search.run_search(bm25, "knn", data.train).as_dict()
    assert rec["not_applying"] == {} and not any("not_applying" in t for t in rec["trials"])


def test_series_parameters_searched_without_a_series_term_are_marked_not_applying(data: TrainingData) -> None:
    """``series_weight: 0`` switches the series term off: a searched ``series_depth`` changes nothing, and the
    record says so rather than passing the depth off as chosen."""
    config = _config(params={"knn": {"similarity": "cosine", "series_weight": 0.0}}, models=["knn"], n_trials=3,
                     spaces=_only("knn", {"series_depth": {"int": [1, 8]}}))
    rec = search.run_search(config, "knn", data.train).as_dict()
    assert rec["not_applying"] == {"series_depth": "has no effect while series_weight is 0.0"}
    assert all(t["not_applying"] == ["series_depth"] for t in rec["trials"])


@pytest.mark.parametrize(("override", "match"), [
    ({"models": ["knn"]}, r"training\.search\.models: 'knn' not trained: train_model trains \['als'\]"),
    ({"models": None, "spaces": {"als": {"factors": None, "regularization": None, "alpha": None}}},
     r"training\.search\.spaces: none of the trained models \['als'\] .* has a search space"),
])
def test_a_search_of_no_trained_model_is_a_config_error(override: dict, match: str) -> None:
    """Used to be accepted and do nothing, unseen: the trained models are known when the configuration loads
    (``training.models``, else the rails' models)."""
    with pytest.raises(ConfigError, match=match):
        load_config("local", root=ROOT, environ={"SKYREC_HOME": "/nonexistent-skyrec-home"},
                    overrides={"training": {"models": ["als"], "search": {"enabled": True, **override}}})
    # the same setting with the search off is inert, and accepted
    load_config("local", root=ROOT, environ={"SKYREC_HOME": "/nonexistent-skyrec-home"},
                overrides={"training": {"models": ["als"], "search": {"enabled": False, **override}}})


@pytest.mark.parametrize(("choice", "match"), [
    ([16, "64"], r"refuses factors='64': factors must be a whole number given as a number, not text"),
    ([64, 64.0], r"factors=64\.0 is the same value as 64"),
    ([16, 2.5], r"refuses factors=2\.5"),
])
def test_every_choice_value_passes_the_parameters_rule_when_the_config_loads(choice: list, match: str) -> None:
    with pytest.raises(ConfigError, match=rf"training\.search\.spaces\.als\.factors: .*{match}"):
        _config(spaces={"als": {"factors": {"choice": choice}}})


def test_a_configured_real_number_given_by_a_choice_as_text_is_inside_the_space(data: TrainingData) -> None:
    """YAML 1.1 reads ``1e-3`` as text: the configured 0.001 is that choice (trial 0 is the sampler's, not a
    crash on ``0.001 not in ('1e-3', 0.5)``)."""
    config = _config(params={"knn": {"bm25_k1": 0.001}}, models=["knn"], n_trials=2,
                     spaces=_only("knn", {"bm25_k1": {"choice": ["1e-3", 0.5]}}))
    rec = search.run_search(config, "knn", data.train).as_dict()
    assert rec["trials"][0]["params"] == {"bm25_k1": "1e-3"} and rec["configured_outside_space"] is None
    assert rec["n_complete"] == 2
