"""The optional hyper-parameter search of train_model's train step (``training.search``, Optuna's TPE).

Where it runs: inside the ``train`` job (outside the Airflow worker, like every heavy step), before the
model is fit. What it sees: only the *training part* of the run's evaluation split (``train`` of the
training dataset). The evaluate step and the quality gate judge on the split's test positives; a search that
looked at them would pick the parameters that fit the test, and the gate would then pass an optimistic
figure. So the search carves its own validation split out of the training part (``validation_split``):
for up to ``validation_max_users`` users (seeded sample) with at least two training positives, a seeded
random ``validation_fraction`` of those positives (at least one, never all) is held out; every trial fits on
the rest and is scored on the held-out positives, with the evaluation's metric code (top-``k`` with the
fit's positives excluded, ``skyrec.evaluation.metrics``). Which positives (``validation_method``):
``latest`` (the default) holds out each validation user's latest training positives by first play -- the
shape of the per-user test split, so the search rewards what the test measures (what a listener plays
*next*: a new episode of a followed series rather than a random old favourite); ``random`` a seeded random
subset. ``latest`` needs the dataset's first-play times (``train_first_play.npz``); on a dataset written
before they existed it falls back to ``random`` and the record says so. Not removed from the fit: replays,
after the held-out time, of the user's older positives (the weighted matrix sums a pair's events).

Trials: trial 0 is the configured parameters (``include_configured``; the model's default for a searched
parameter the configuration leaves out), then the sampler (TPE, seeded with ``seed``) proposes values from
``spaces.<model>``; the other parameters keep their configured values. A configured value outside its space
(any kind: a range or a choice) is still trial 0, but that trial is not given to the sampler (a choice's
distribution cannot hold it), and the record names it (``configured_outside_space``, the trial's
``outside_space``, and the note: when it wins, the chosen value comes from the configuration). A
trial that the model refuses (a memory guard, a non-finite fit, a value the model rejects) is recorded as
failed with its error, and the search goes on. Budget: ``n_trials`` and/or ``timeout_seconds``, and always
a cap of ``deadline_fraction`` of the train job's deadline (counted from the job's start), so the final fit
still has time: no trial starts when the time left is below the longest trial so far. With ``n_trials`` as
the budget (and no time limit reached), the same data and seed give the same trials; a time budget is not
reproducible (how many trials fit depends on the machine and its load), and the record says which applied.

Too little data (no user with two training positives, so no validation split): no trial runs, the
configured parameters are used (the quality gate then decides as without a search) and the record says why
(``stopped: no_validation_users``, ``skipped``, ``note``).

Record (``SearchRecord.as_dict``; in the model manifest's ``meta["search"]``, in ``evaluation.json`` and
the report): the space, budget, why it stopped, the validation split's size, every trial (number, params,
metric value, all four metrics, seconds, state, error) and the best trial's parameters; ``not_applying``: the
chosen parameters that have no effect under the others (``bm25_b`` with ``similarity: cosine``:
``skyrec.models.params.Param.only_with``); ``note``: what a reader must know (no search ran, no trial
completed, a configured value outside its space).
"""

from __future__ import annotations

import logging
import math
import time
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import scipy.sparse as sp

from skyrec.config import Config, ConfigError, SearchSpace
from skyrec.evaluation.metrics import METRICS, hits, per_user, top_k
from skyrec.models import model_class
from skyrec.models.representations import scores as representation_scores
from skyrec.models.series import ItemContext
from skyrec.models.training import fit_on

log = logging.getLogger("skyrec.search")

#: errors that make one trial fail (recorded) rather than the job
TRIAL_ERRORS: tuple[type[BaseException], ...] = (ValueError, TypeError, MemoryError, ArithmeticError)


def applies(config: Config, model: str) -> bool:
    """Does the train step of ``model`` search (search enabled, and the model listed or with a space)?"""
    s = config.training.search
    if not s.enabled:
        return False
    if s.models is not None:
        return model in s.models
    return any((s.spaces.get(model) or {}).values())


def space_of(config: Config, model: str) -> dict[str, SearchSpace]:
    return {p: s for p, s in (config.training.search.spaces.get(model) or {}).items() if s is not None}


def check_space(config: Config, model: str) -> None:
    """Every searched parameter must be one the model accepts, by its rules (``param_spec``:
    ``skyrec.models.params.check_search_values``, which the configuration also applies when it loads) and by
    building the model with each choice and each end of a range (its rules are intervals: a range whose ends
    are accepted holds only accepted values). A ``ConfigError`` naming ``training.search.spaces.<model>.<param>``
    otherwise, never a trial-time ``OverflowError``."""
    from skyrec.models.params import ParamError, check_search_values

    cls = model_class(config, model)
    base = dict(config.models[model].params)
    known = getattr(cls, "defaults", None)
    rules = getattr(cls, "param_spec", None) or {}
    for param, space in space_of(config, model).items():
        key = f"training.search.spaces.{model}.{param}"
        if isinstance(known, dict) and param not in known:
            raise ConfigError(f"{key}: {cls.__name__} has no parameter {param!r} (known: {sorted(known)})")
        if param in rules:
            try:
                check_search_values(key, cls.__name__, rules, param, space.kind, space.tried())
            except ValueError as exc:
                raise ConfigError(str(exc)) from None
        for value in space.tried():
            try:
                cls(**{**base, param: value})
            except ParamError as exc:
                raise ConfigError(exc.at(key)) from None
            except (TypeError, ValueError, ArithmeticError) as exc:
                raise ConfigError(f"{key}: {cls.__name__} refuses {param}={value!r}: {exc}") from None


# ---- the validation split, carved from the training part only ------------------------------------------


@dataclass
class ValidationSplit:
    fit: sp.csr_matrix        # the training part minus the held-out positives (what every trial fits on)
    held_out: sp.csr_matrix   # binary: the held-out training positives of the validation users
    users: np.ndarray         # validation users (rows), sorted

    method: str = "random"    # "latest" (by first play) or "random"
    fallback: str | None = None  # why "latest" was asked for and "random" used

    def describe(self, fraction: float, seed: int) -> dict[str, Any]:
        which = "latest, by first play," if self.method == "latest" else "seeded random"
        out = {"carved_from": "train (the training part of the evaluation split; never its test)",
               "method": f"per validation user, the {which} {fraction:.0%} of their training positives "
                         "(at least one, never all) held out",
               "kind": self.method, "fraction": fraction, "seed": seed, "users": int(len(self.users)),
               "held_out_positives": int(self.held_out.nnz), "fit_pairs": int(self.fit.nnz)}
        if self.fallback:
            out["fallback"] = self.fallback
        return out


def _aligned_times(train: sp.csr_matrix, first_play: sp.csr_matrix | None) -> tuple[np.ndarray | None, str | None]:
    """``first_play``'s values on ``train``'s (canonical) pattern, or None and why not."""
    if first_play is None:
        return None, "the training dataset has no first-play times (written before train_first_play.npz)"
    fp = sp.csr_matrix(first_play, copy=True)
    fp.sort_indices()
    if fp.shape != train.shape or not (np.array_equal(fp.indptr, train.indptr)
                                       and np.array_equal(fp.indices, train.indices)):
        return None, "the first-play times do not cover the training pairs"
    return np.asarray(fp.data, dtype=np.int64), None


def validation_split(train: sp.csr_matrix, *, fraction: float, max_users: int, seed: int,
                     first_play: sp.csr_matrix | None = None, method: str = "random") -> ValidationSplit:
    """Hold out ``fraction`` of the positives of up to ``max_users`` users with >= 2 positives: the latest by
    ``first_play`` (µs, on ``train``'s pattern) with ``method="latest"``, else a seeded random subset."""
    train = sp.csr_matrix(train, dtype=np.float32, copy=True)
    train.sum_duplicates()
    times, fallback = _aligned_times(train, first_play) if method == "latest" else (None, None)
    if times is not None:
        times = times[train.data != 0]  # the entries eliminate_zeros drops below
    train.eliminate_zeros()
    rng = np.random.default_rng(seed)
    n_pos = np.diff(train.indptr)
    eligible = np.flatnonzero(n_pos >= 2)
    if len(eligible) > max_users:
        eligible = np.sort(rng.choice(eligible, max_users, replace=False))
    n_hold = np.zeros(train.shape[0], np.int64)
    n_hold[eligible] = np.clip(np.floor(fraction * n_pos[eligible] + 0.5).astype(np.int64), 1, n_pos[eligible] - 1)
    row = np.repeat(np.arange(train.shape[0]), n_pos)
    key = rng.random(train.nnz)
    # per row, entries in the order they are held out: newest first play first ("latest"), or at random
    order = np.lexsort((key, -times, row)) if times is not None else np.lexsort((key, row))
    rank = np.empty(train.nnz, np.int64)
    rank[order] = np.arange(train.nnz) - train.indptr[row[order]]
    held = rank < n_hold[row]
    held_out = sp.csr_matrix((np.ones(int(held.sum()), np.float32), (row[held], train.indices[held])),
                             shape=train.shape)
    keep = ~held
    fit = sp.csr_matrix((train.data[keep], (row[keep], train.indices[keep])), shape=train.shape, dtype=np.float32)
    return ValidationSplit(fit=fit, held_out=held_out, users=eligible,
                           method="latest" if times is not None else "random", fallback=fallback)


def validation_metrics(fitted: Any, split: ValidationSplit, *, k: int, batch: int = 2048) -> dict[str, float]:
    """Mean metrics at ``k`` over the validation users: top-k of each user's scores with the fit's positives
    (and the items the fit could not score) excluded, against the held-out positives."""
    n_items = split.fit.shape[1]
    item, scorable = fitted.full_item_factors(n_items)
    seen = split.fit
    sums = dict.fromkeys(METRICS, 0.0)
    users = 0
    for start in range(0, len(split.users), batch):
        rows = split.users[start:start + batch]
        s = representation_scores(fitted.user_factors[rows], item)
        if not scorable.all():
            s[:, ~scorable] = -np.inf
        ex = seen[rows]
        s[np.repeat(np.arange(len(rows)), np.diff(ex.indptr)), ex.indices] = -np.inf
        rel = split.held_out[rows]
        rec, _ = top_k(s, k)
        m = per_user(hits(rec, rel), np.diff(rel.indptr), k)
        for name in METRICS:
            sums[name] += float(m[name].sum())
        users += len(rows)
    return {name: (sums[name] / users if users else 0.0) for name in METRICS}


# ---- the search ------------------------------------------------------------------------------------------


@dataclass
class SearchRecord:
    model: str
    metric: str
    k: int
    seed: int
    space: dict[str, Any]
    budget: dict[str, Any]
    configured_params: dict[str, Any]
    validation: dict[str, Any]
    trials: list[dict[str, Any]] = field(default_factory=list)
    stopped: str = ""
    seconds: float = 0.0
    sampler: str = ""
    #: the configured values of searched parameters that lie outside their space (trial 0 still tries them)
    outside_space: dict[str, Any] = field(default_factory=dict)
    #: why no trial ran at all (too little data for a validation split), else None
    skipped: str | None = None
    #: the model's parameter rules (``param_spec``), to say which chosen parameters have no effect
    rules: dict[str, Any] = field(default_factory=dict, repr=False)
    #: the model's own defaults: the values of the parameters the configuration leaves out
    defaults: dict[str, Any] = field(default_factory=dict, repr=False)

    @property
    def best(self) -> dict[str, Any] | None:
        done = [t for t in self.trials if t["state"] == "complete"]
        return max(done, key=lambda t: (t["value"], -t["number"])) if done else None

    def best_params(self) -> dict[str, Any]:
        """The configured params with the best trial's values (the configured ones when no trial completed)."""
        best = self.best
        return {**self.configured_params, **(best["params"] if best else {})}

    def not_applying(self, params: dict[str, Any]) -> dict[str, str]:
        """The searched parameters of ``params`` that have no effect given the others (``bm25_b`` under
        ``similarity: cosine``; ``skyrec.models.params.not_applying``), each with why."""
        from skyrec.models.params import not_applying

        return not_applying(self.rules, {**self.defaults, **self.configured_params, **params}, list(self.space))

    def notes(self) -> list[str]:
        best = self.best
        out = []
        if self.skipped:
            out.append(f"no search ran: {self.skipped}; the configured params are used")
        elif best is None:
            out.append("no trial completed: the configured params are used")
        if self.outside_space:
            values = ", ".join(f"{p}={v!r} (space {_describe(self.space[p])})" for p, v in self.outside_space.items())
            tried = any(t.get("configured") for t in self.trials)
            if best is not None and best.get("configured"):
                out.append(f"the configured params (trial 0) won, with {values} outside the searched space: the "
                           "chosen value comes from the configuration, not from the space")
            elif tried:
                out.append(f"trial 0 (the configured params) has {values} outside the searched space: scored for "
                           "comparison, not given to the sampler")
            else:
                out.append(f"the configured {values} lies outside the searched space (not tried: "
                           "include_configured is false)")
        return out

    def as_dict(self) -> dict[str, Any]:
        best = self.best
        configured = next((t for t in self.trials if t.get("configured") and t["state"] == "complete"), None)
        best_params = self.best_params()
        notes = self.notes()
        return {
            "model": self.model, "metric": self.metric, "k": self.k, "seed": self.seed, "sampler": self.sampler,
            "space": self.space, "budget": self.budget, "stopped": self.stopped,
            "reproducible": self.stopped in ("n_trials", "no_validation_users"),
            "seconds": round(self.seconds, 3), "validation": self.validation,
            "configured_params": self.configured_params, "trials": self.trials,
            "n_complete": sum(t["state"] == "complete" for t in self.trials),
            "n_failed": sum(t["state"] == "failed" for t in self.trials),
            "best": None if best is None else {"number": best["number"], "value": best["value"],
                                               "params": best["params"], "configured": bool(best.get("configured"))},
            "best_params": best_params,
            "not_applying": self.not_applying(best_params),
            "configured_value": None if configured is None else configured["value"],
            "configured_outside_space": dict(self.outside_space) or None,
            "skipped": self.skipped,
            "note": "; ".join(notes) if notes else None,
        }


def _describe(space: dict[str, Any]) -> str:
    """A space as the record shows it (``int [16, 64]``, ``choice [16, 64]``)."""
    kind = next((k for k in ("int", "float", "choice") if k in space), "?")
    return f"{kind} {list(space.get(kind) or [])}" + (", log" if space.get("log") else "")


def inside(space: SearchSpace, value: Any) -> bool:
    """Does ``value`` lie in ``space`` (a range's interval, ends included, or one of a choice's values)?"""
    if space.choice is not None:
        return any(_same(value, c) for c in space.choice)
    low, high = space.int_range or space.float_range or (0, 0)
    if isinstance(value, bool) or not isinstance(value, int | float):
        return False
    if space.int_range is not None and not float(value).is_integer():
        return False
    return bool(low <= value <= high)


def _same(a: Any, b: Any) -> bool:
    if isinstance(a, bool) or isinstance(b, bool):
        return isinstance(a, bool) and isinstance(b, bool) and a == b
    if isinstance(a, int | float) and isinstance(b, int | float | str):
        try:
            return float(a) == float(b)  # a float choice given as text (YAML 1.1 reads 1e-3 as text)
        except ValueError:
            return False
    return bool(a == b)


def _distributions(space: dict[str, SearchSpace]) -> dict[str, Any]:
    from optuna.distributions import CategoricalDistribution, FloatDistribution, IntDistribution

    out: dict[str, Any] = {}
    for param, s in space.items():
        if s.int_range is not None:
            out[param] = IntDistribution(s.int_range[0], s.int_range[1], log=s.log)
        elif s.float_range is not None:
            out[param] = FloatDistribution(s.float_range[0], s.float_range[1], log=s.log)
        else:
            out[param] = CategoricalDistribution(list(s.choice or []))
    return out


def run_search(config: Config, model: str, train: sp.csr_matrix, *, item_features: sp.csr_matrix | None = None,
               context: ItemContext | None = None, first_play: sp.csr_matrix | None = None,
               time_cap_seconds: float = math.inf) -> SearchRecord:
    """Search ``model``'s parameters on a validation split carved from ``train`` (the training part of the
    evaluation split; never pass anything holding its test). ``context``: the items' brands and release
    times for models that use them (``skyrec.models.series.item_context`` of the same matrix).
    ``first_play``: the dataset's ``train_first_play`` (for ``validation_method: latest``).
    ``time_cap_seconds``: the deadline's share left for the search (the caller computes it from the job's
    deadline and start)."""
    import optuna

    cfg = config.training.search
    metric = cfg.metric or config.training.quality_gate.metric
    if metric not in METRICS:
        raise ConfigError(f"training.search.metric: the search needs one of {list(METRICS)}; "
                          f"training.quality_gate.metric is {metric!r}: set training.search.metric")
    check_space(config, model)
    space = space_of(config, model)
    if not space:
        raise ConfigError(f"training.search.spaces.{model}: nothing to search")
    cls = model_class(config, model)
    configured = dict(config.models[model].params)
    rules = dict(getattr(cls, "param_spec", None) or {})
    defaults = dict(getattr(cls, "defaults", None) or {})
    # trial 0: the point the configuration fits (the model's default where it names none), as the model uses it
    point = {p: configured[p] if p in configured else defaults[p] for p in space if p in configured or p in defaults}
    point = {p: (rules[p].check(v) if p in rules else v) for p, v in point.items()}
    outside = {p: v for p, v in point.items() if not inside(space[p], v)}
    k = config.training.k
    t0 = time.monotonic()
    split = validation_split(train, fraction=cfg.validation_fraction, max_users=cfg.validation_max_users,
                             seed=cfg.seed, first_play=first_play, method=cfg.validation_method)
    record = SearchRecord(
        model=model, metric=metric, k=k, seed=cfg.seed,
        space={p: s.model_dump(by_alias=True, exclude_none=True) for p, s in space.items()},
        budget={"n_trials": cfg.n_trials, "timeout_seconds": cfg.timeout_seconds,
                "time_cap_seconds": None if math.isinf(time_cap_seconds) else round(time_cap_seconds, 3)},
        configured_params=configured, validation=split.describe(cfg.validation_fraction, cfg.seed),
        sampler=f"TPE (optuna {optuna.__version__}), seed {cfg.seed}", outside_space=outside, rules=rules,
        defaults=defaults)
    if not len(split.users):  # too little data to validate on: the configured params, as without a search
        record.stopped = "no_validation_users"
        record.skipped = ("no user has two or more training positives to validate on (a validation split holds "
                          "out some of a user's training positives and fits on the rest)")
        record.seconds = time.monotonic() - t0
        log.warning("search %s: %s", model, record.skipped)
        return record
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    study = optuna.create_study(direction="maximize", sampler=optuna.samplers.TPESampler(seed=cfg.seed))
    dists = _distributions(space)
    # the configured point outside the space (any kind: int, float, choice) is tried as trial 0 but not given
    # to the sampler, whose distributions cannot hold it (a choice refuses it outright)
    configured_first = cfg.include_configured and bool(outside)
    if cfg.include_configured and not outside:  # a choice's own value (``"1e-3"`` for 0.001): the sampler's
        study.enqueue_trial({p: next((c for c in space[p].choice or [] if _same(v, c)), v) for p, v in point.items()})
    longest = 0.0
    n_trials = cfg.n_trials if cfg.n_trials is not None else math.inf
    record.stopped = "n_trials"
    while len(record.trials) < n_trials:
        # no trial starts that would end past a limit if it took as long as the longest one so far
        ends = time.monotonic() - t0 + longest
        stop = next((name for name, cap in (("timeout_seconds", cfg.timeout_seconds), ("deadline", time_cap_seconds))
                     if cap is not None and ends > cap), None)
        if stop:
            record.stopped = stop
            break
        number = len(record.trials)
        trial = None
        if configured_first and number == 0:
            params = dict(point)
        else:
            trial = study.ask(dists)
            params = dict(trial.params)
        entry: dict[str, Any] = {"number": number, "params": params,
                                 "configured": bool(cfg.include_configured and number == 0)}
        if entry["configured"] and outside:
            entry["outside_space"] = sorted(outside)
        idle = record.not_applying(params)
        if idle:
            entry["not_applying"] = sorted(idle)
        started = time.monotonic()
        try:
            instance = cls(**{**configured, **params})
            fitted = fit_on(instance, split.fit, item_features if instance.uses_item_features else None, context)
            figures = validation_metrics(fitted, split, k=k)
            value = figures[metric]
            if not math.isfinite(value):
                raise ValueError(f"non-finite {metric}")
        except TRIAL_ERRORS as exc:
            entry.update(state="failed", value=None, metrics=None, error=f"{type(exc).__name__}: {exc}")
            if trial is not None:
                study.tell(trial, state=optuna.trial.TrialState.FAIL)
        else:
            entry.update(state="complete", value=float(value), metrics=figures, error=None)
            if trial is not None:
                study.tell(trial, float(value))
        entry["seconds"] = round(time.monotonic() - started, 3)
        longest = max(longest, entry["seconds"])
        record.trials.append(entry)
        best = record.best
        log.info("search %s trial %d: %s %s (%.1f s) %s; best so far %s", model, number, metric,
                 "failed" if entry["state"] == "failed" else f"{entry['value']:.4f}", entry["seconds"], params,
                 f"{best['value']:.4f} (trial {best['number']})" if best else "none")
    record.seconds = time.monotonic() - t0
    return record
