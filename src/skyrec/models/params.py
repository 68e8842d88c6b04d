"""What each of the package's models accepts as parameters, checked without importing a model library.

A value a model cannot use is refused before anything runs, with an error naming the parameter, the rule
and the value: not a truncation (``neighbours: 2.7`` fitting 2 neighbours), a silent meaning (``binary:
"false"`` is truthy, a negative BM25 ``k1`` zeroes every similarity), an ``OverflowError`` deep in a library
(``neighbours: 1e12``) or a process killed by OpenMP (``num_threads: -4``). The rules:

- whole numbers are ``int`` (a float with no fraction and digits given as text are taken; ``true`` is not a
  number, nor is ``2.7`` a whole number), at most ``INT_MAX`` (the libraries take C ints) unless lower;
- real numbers are finite (NaN compares false with every bound and would pass a ``< 0`` test) and may be given
  as text (YAML 1.1 reads ``1e-3`` as text);
- booleans are ``true`` or ``false`` (YAML booleans), never text;
- choices are one of the listed words.

Each model class names its table (``param_spec``); ``SPECS`` maps the configured ``class_path`` of the
package's models to theirs, so ``skyrec.config`` checks ``models.<name>.params`` and the search spaces when the
configuration loads, with no model module (numpy, scipy, implicit, LightFM) imported. A model of another
package is checked when it is built (``skyrec.models.build_model``).
"""

from __future__ import annotations

import math
import numbers
import re
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

#: the largest whole number a parameter takes: implicit and LightFM take C ints
INT_MAX = 2**31 - 1
#: the most threads a model's own loop may start: more than any machine's CPUs (0 means every CPU)
MAX_THREADS = 1024
_INT_TEXT = re.compile(r"[-+]?[0-9]+")


class ParamError(ValueError):
    """A model parameter refused: ``owner`` (the model class), ``param``, what it must be and the value."""

    def __init__(self, owner: str, model: str, param: str, need: str, value: Any) -> None:
        self.owner, self.model, self.param, self.need, self.value = owner, model, param, need, value
        super().__init__(f"{owner}: models.{model}.params.{param} {need}, got {value!r}")

    def at(self, key: str) -> str:
        """The error under the config key the caller knows (``models.<configured name>.params.<param>``,
        ``training.search.spaces.<model>.<param>``)."""
        return f"{key}: {self.owner}: {self.param} {self.need}, got {self.value!r}"


@dataclass(frozen=True)
class Param:
    """One parameter's rule: ``kind`` int | float | bool | choice, an interval for numbers (``low_open`` /
    ``high_open``: the bound itself excluded), the words of a choice, whether null is taken, and what a
    special value means (said in the error)."""

    kind: str
    low: float | None = None
    high: float | None = None
    low_open: bool = False
    high_open: bool = False
    choices: tuple[str, ...] = ()
    nullable: bool = False
    note: str = ""
    #: the parameter has an effect only while another one takes one of these values (``("similarity",
    #: ("bm25",))``): under any other value a search record marks it as not applying
    only_with: tuple[str, tuple[Any, ...]] | None = None
    #: the parameter has no effect while another one takes one of these values (``(("series_weight", (0,)),)``:
    #: no series term, so its depth does nothing); any condition that holds marks it as not applying
    not_with: tuple[tuple[str, tuple[Any, ...]], ...] = ()

    def need(self) -> str:
        if self.kind == "bool":
            text = "must be true or false (a YAML boolean, not text)"
        elif self.kind == "choice":
            text = f"must be one of {list(self.choices)}"
        else:
            what = "a whole number" if self.kind == "int" else "a finite number"
            text = f"must be {what}{self._interval()}"
        if self.nullable:
            text += " or null"
        return text + (f" ({self.note})" if self.note else "")

    def _interval(self) -> str:
        high = INT_MAX if self.kind == "int" and self.high is None else self.high
        low, fmt = self.low, (lambda v: f"{v:,}" if self.kind == "int" else f"{v:g}")
        if low is not None and high is not None:
            return (f" in {'(' if self.low_open else '['}{fmt(low)}, {fmt(high)}{')' if self.high_open else ']'}")
        if low is not None:
            return f" {'>' if self.low_open else '>='} {fmt(low)}"
        if high is not None:  # pragma: no cover - every table bounds from below
            return f" {'<' if self.high_open else '<='} {fmt(high)}"
        return ""

    def check(self, value: Any) -> Any:
        """The value as the model uses it (``int``, ``float``, ``bool``, ``str`` or None); ``ValueError(need)``
        when refused."""
        if value is None and self.nullable:
            return None
        if self.kind == "bool":
            if _is_bool(value):
                return bool(value)
            raise ValueError(self.need())
        if self.kind == "choice":
            if isinstance(value, str) and value in self.choices:
                return value
            raise ValueError(self.need())
        number = _whole(value) if self.kind == "int" else _real(value)
        if number is None or not self._inside(number):
            raise ValueError(self.need())
        return number

    def _inside(self, v: float) -> bool:
        high = INT_MAX if self.kind == "int" and self.high is None else self.high
        if self.low is not None and (v <= self.low if self.low_open else v < self.low):
            return False
        return not (high is not None and (v >= high if self.high_open else v > high))


def _is_bool(value: Any) -> bool:
    """A boolean, Python's or numpy's (not a number here, though ``True == 1``)."""
    return isinstance(value, bool) or (type(value).__module__ == "numpy" and type(value).__name__ in ("bool", "bool_"))


def _whole(value: Any) -> int | None:
    if _is_bool(value):
        return None
    if isinstance(value, numbers.Integral):
        return int(value)
    if isinstance(value, numbers.Real):
        v = float(value)
        return int(v) if math.isfinite(v) and v.is_integer() else None
    if isinstance(value, str) and _INT_TEXT.fullmatch(value.strip()):
        return int(value)
    return None


def _real(value: Any) -> float | None:
    if _is_bool(value):
        return None
    if isinstance(value, numbers.Real):
        v = float(value)
    elif isinstance(value, str):
        try:
            v = float(value)
        except ValueError:
            return None
    else:
        return None
    return v if math.isfinite(v) else None


def check_params(owner: str, model: str, spec: Mapping[str, Param], params: Mapping[str, Any]) -> dict[str, Any]:
    """``params`` as the model uses them (each value of a parameter in ``spec`` checked and normalised);
    ``ParamError`` naming the first refused one. Parameters not in ``spec`` are passed through (the model
    refuses unknown names itself)."""
    out = dict(params)
    for name, value in params.items():
        rule = spec.get(name)
        if rule is None:
            continue
        try:
            out[name] = rule.check(value)
        except ValueError as exc:
            raise ParamError(owner, model, name, str(exc), value) from None
    return out


# ---- the package's models --------------------------------------------------------------------------------

THREADS = Param("int", 0, MAX_THREADS, note="0: every CPU this process may use")
MEMORY_LIMIT_GB = Param("float", 0, low_open=True, note="GB")
SEED = Param("int", 0, 2**32 - 1)
NO_SERIES_TERM = (("series_weight", (0,)),)
SERIES: dict[str, Param] = {
    "series_weight": Param("float", 0, note="0: no series term"),
    "series_depth": Param("int", 1, not_with=NO_SERIES_TERM),
    "series_decay": Param("float", 0, 1, low_open=True, not_with=NO_SERIES_TERM),
}

ALS: dict[str, Param] = {
    "factors": Param("int", 1), "iterations": Param("int", 1), "regularization": Param("float", 0),
    "alpha": Param("float", 0, low_open=True), "random_state": Param("int", 0, 2**32 - 1, nullable=True),
    "num_threads": THREADS,
}
BPR: dict[str, Param] = {
    "factors": Param("int", 1), "iterations": Param("int", 1), "learning_rate": Param("float", 0, low_open=True),
    "regularization": Param("float", 0), "random_state": Param("int", 0, 2**32 - 1, nullable=True),
    "num_threads": THREADS,
}
HYBRID: dict[str, Param] = {
    "no_components": Param("int", 1), "epochs": Param("int", 1),
    "loss": Param("choice", choices=("logistic", "bpr", "warp", "warp-kos")),
    "learning_rate": Param("float", 0, low_open=True), "random_state": SEED, "item_alpha": Param("float", 0),
    "user_alpha": Param("float", 0), "max_sampled": Param("int", 1), "num_threads": THREADS,
}
EASE: dict[str, Param] = {
    "regularization": Param("float", 0, low_open=True), "binary": Param("bool"), "memory_limit_gb": MEMORY_LIMIT_GB,
    **SERIES,
}
KNN: dict[str, Param] = {
    "similarity": Param("choice", choices=("cosine", "bm25")),
    "neighbours": Param("int", 1, note="above the item count: every item"),
    "bm25_k1": Param("float", 0, note="0: every play of an item weighs the same", only_with=("similarity", ("bm25",))),
    "bm25_b": Param("float", 0, 1, only_with=("similarity", ("bm25",))),
    **SERIES,
    "series_catch_up": Param("float", 0, 1, not_with=NO_SERIES_TERM),
    "series_follow_within": Param("int", 0, not_with=(*NO_SERIES_TERM, ("series_catch_up", (1,)))),
    "memory_limit_gb": MEMORY_LIMIT_GB,
    "num_threads": THREADS,
}

#: ``class_path`` -> (class name, its ``name``, its table): what ``skyrec.config`` checks when it loads
SPECS: dict[str, tuple[str, str, dict[str, Param]]] = {
    "skyrec.models.als:ALSModel": ("ALSModel", "als", ALS),
    "skyrec.models.bpr:BPRModel": ("BPRModel", "bpr", BPR),
    "skyrec.models.hybrid:HybridModel": ("HybridModel", "hybrid", HYBRID),
    "skyrec.models.ease:EASEModel": ("EASEModel", "ease", EASE),
    "skyrec.models.knn:ItemKNNModel": ("ItemKNNModel", "knn", KNN),
}


def check_configured(name: str, class_path: str, params: Mapping[str, Any]) -> None:
    """``models.<name>.params`` of one of the package's models (``SPECS``; others are checked when built):
    a ``ValueError`` naming ``models.<name>.params[.<param>]`` for an unknown parameter or a refused value."""
    if class_path not in SPECS:
        return
    owner, model, spec = SPECS[class_path]
    unknown = sorted(set(params) - set(spec))
    if unknown:
        raise ValueError(f"models.{name}.params: {owner}: unknown parameter(s) {unknown} (known: {sorted(spec)})")
    try:
        check_params(owner, model, spec, params)
    except ParamError as exc:
        raise ValueError(exc.at(f"models.{name}.params.{exc.param}")) from None


def check_search_values(key: str, owner: str, spec: Mapping[str, Param], param: str, kind: str,
                        values: list[Any]) -> None:
    """A search space ``training.search.spaces.<model>.<param>`` (``key``) against the model's table: the
    parameter exists, a ``float`` range is not searched for a whole-number parameter (its trials would be
    refused), and every value tried here -- a choice's values, a range's ends -- is accepted. The rules are
    intervals, so a range whose two ends are accepted holds only accepted values. A choice of a whole-number
    parameter lists numbers, not text (``[16, "64"]``: YAML reads every unquoted whole number as one, so a
    quoted one is a mistake, and the trial would record text), and no value twice (``[64, 64.0]``). A
    ``ValueError`` naming ``key`` and the value otherwise."""
    rule = spec.get(param)
    if rule is None:
        raise ValueError(f"{key}: {owner} has no parameter {param!r} (known: {sorted(spec)})")
    if kind == "float" and rule.kind == "int":
        raise ValueError(f"{key}: {owner}: {param} is a whole number: search it with int: [low, high], "
                         f"not float: {values}")
    if kind == "int" and rule.kind not in ("int", "float"):
        raise ValueError(f"{key}: {owner}: {param} is not a number: search it with choice: [...], not int: {values}")
    seen: dict[Any, Any] = {}
    for value in values:
        try:
            if kind == "choice" and rule.kind == "int" and isinstance(value, str):
                raise ValueError(f"must be a whole number given as a number, not text{rule._interval()}")
            used = rule.check(value)
        except ValueError as exc:
            raise ValueError(f"{key}: {owner} refuses {param}={value!r}: {param} {exc}") from None
        if kind == "choice":
            same = (type(used).__name__, used)
            if same in seen:
                raise ValueError(f"{key}: {owner}: {param}={value!r} is the same value as {seen[same]!r}: "
                                 f"list each choice once")
            seen[same] = value


def not_applying(spec: Mapping[str, Param], params: Mapping[str, Any], names: Any = None) -> dict[str, str]:
    """Of ``names`` (default: every parameter in ``params``), those that have no effect given the others
    (``Param.only_with``: ``bm25_b`` while ``similarity`` is ``cosine``; ``Param.not_with``: ``series_depth``
    while ``series_weight`` is 0), each with why."""
    out: dict[str, str] = {}
    for name in (params if names is None else names):
        rule = spec.get(name)
        if rule is None or name not in params:
            continue
        if rule.only_with is not None:
            other, values = rule.only_with
            if other in params and params[other] not in values:
                words = " or ".join(str(v) for v in values)
                out[name] = f"applies only with {other} {words} ({other} is {params[other]!r})"
                continue
        for other, values in rule.not_with:
            if other in params and params[other] in values:
                out[name] = f"has no effect while {other} is {params[other]!r}"
                break
    return out
