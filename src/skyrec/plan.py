"""``skyrec plan``: a capacity model of the precompute path from coefficients measured on a real machine.

Inputs: users, candidates, rails, k, plays per user, cores N, encoding (json | packed). Outputs: vCPU-seconds
per run (local, and on Dataflow from ``jobs.cost`` rates and a stated per-vCPU speed), wall time on N cores,
serving Redis memory, lake size and publish time, with the points where one machine stops being enough.

The model (each term is a measured coefficient times an input; ``docs/scale.md`` explains it):

* **compute_predictions** CPU-seconds = users x rails x (kernel + overhead(k)) + the "more like this" seeds
  (every model item in each rail, scored as a user with one play, at ``similar_k``). The kernel's CPU-microseconds
  per user depend on the rails' model: for a factor model (ALS, BPR, LightFM, popularity) a plane in
  (candidates, k) fitted to a short sweep of the top-K kernel on dense factors; for item-kNN (a sparse
  product: each played item adds its row of ``neighbours`` entries) a plane in (candidates, k, the product's
  result entries) fitted to a sweep of the same kernel on sparse neighbour rows (``kernel_knn``); for EASE (a
  user's played items x its dense item-item weights) a plane in (candidates, k, played items x candidates)
  fitted to a sweep on dense weights (``kernel_ease``), with its weights' memory against the model's guard. The overhead (Parquet, RESP encoding, shard I/O) is the measured step's CPU time minus the
  kernel at the measured point, proportional to k. Wall on N cores = CPU-seconds / (N x utilisation) + per
  rail, serially, a fixed start-up and what grows with the catalogue (the candidates, the items hash: CPU-us per
  model item beyond the basis run's, ``catalogue_sweep``) (the shards are independent; utilisation is the
  measured run's CPU / (wall x cores)).
  CPU time, unlike wall time, does not move with other load on a shared machine.
* **history** (``publish.history_items`` > 0): every user's last plays, a second key per user and rail: the
  compute step's core-microseconds per user (a line in plays per user; with "more like this" lists, plus the
  older plays found in them), and per key its RESP, Redis and RDB bytes (a line in the plays the value holds)
  and its dump and publish time as a measured multiple of a list's (``history_sweep``, ``fit_history``).
* **create_redis_dump** and **publish_predictions**: fixed seconds per rail + wall microseconds per user and
  rail, proportional to the RESP bytes (so to k). Each dump has its own scratch redis-server (one rail per
  ``dump_cores`` cores at a time); every publication loads into the one serving Redis, whose command loop is
  one thread, so publishing is serial over rails however many cores there are. Their cost per key grows with
  the key count, so their coefficients come from a reference-scale run.
* **Redis**: the measured ``used_memory`` delta per user and rail (per encoding), plus per publication its
  keys that do not grow with users (items hash, item table, fallback), per candidate;
  ``publish.keep_versions`` + 1 publications of every rail at the peak of a switch (``docs/deploy.md``).
* **Lake**: activity bytes per play; per run and rail, Parquet bytes per prediction row (k rows a user),
  RESP bytes and RDB bytes per user.

Coefficients live in a versioned JSON file: ``.bench/coefficients.json`` (written by ``skyrec bench`` from its
records, or by ``skyrec plan --calibrate``) when present, else the committed ``plan_coefficients.json``
measured on the machine and date it names. The file also records a measured run at the reference scale;
:func:`check_reference` compares the plan with it.
"""

from __future__ import annotations

import json
import math
import os
import platform
import sys
import time
from dataclasses import asdict, dataclass, replace
from pathlib import Path
from typing import Any

from skyrec.progress import format_bytes as _size

FORMAT = "skyrec-plan-coefficients"
VERSION = 1
ENCODINGS = ("json", "packed")
DEFAULT_PATH = Path(__file__).with_name("plan_coefficients.json")
TOLERANCE = 0.20  # the plan must reproduce each measured figure of the reference run within this
#: how precompute's kernel scores a model: a dense product of factors, item-kNN's sparse neighbour rows, or
#: EASE's dense item-item weights (a user's played rows of them)
KERNELS = ("factors", "neighbours", "item_weights")
#: the factor count the dense kernel plane is measured at (the sweep's, and the reference run's artefact)
BASE_FACTORS = 64
KNN_TERMS = ("per_user", "per_1k_candidates", "per_k", "per_1k_products", "per_1k_outputs")
#: EASE's kernel plane: products = played items x candidates (the sparse x dense product's multiply-adds)
EASE_TERMS = ("per_user", "per_1k_candidates", "per_k", "per_m_products")
#: the compute step's cost per rail that grows with the catalogue (candidates, popular-now list, items hash):
#: core-microseconds per model item beyond the basis run's (``catalogue_sweep``)
CATALOGUE_TERMS = ("per_item",)
#: item-kNN's compute per user that grows with the candidates beyond the basis run's and that its kernel plane
#: misses (measured on the job itself, ``knn_catalogue_sweep``): core-microseconds per user per 1,000 candidates
KNN_CATALOGUE_TERMS = ("per_user_per_1k_candidates",)


class CoefficientsError(ValueError):
    """A coefficients file that cannot be used (missing, wrong format or version, a missing figure)."""


def bench_path() -> Path:
    from skyrec.config import project_root

    return project_root() / ".bench" / "coefficients.json"


def _validate(data: Any, where: str) -> dict[str, Any]:
    if not isinstance(data, dict) or data.get("format") != FORMAT:
        raise CoefficientsError(f"{where}: not a {FORMAT} file")
    if data.get("version") != VERSION:
        raise CoefficientsError(f"{where}: version {data.get('version')!r}, this skyrec reads version {VERSION}")
    need = {"kernel": ("core_us",), "lake": ("activity_bytes_per_play", "prediction_row_bytes"),
            "basis": ("k", "cores")}
    for section, keys in need.items():
        for key in keys:
            if key not in data.get(section, {}):
                raise CoefficientsError(f"{where}: {section}.{key} missing")
    for section, terms in (("kernel_knn", KNN_TERMS), ("kernel_ease", EASE_TERMS), ("catalogue", CATALOGUE_TERMS),
                           ("knn_catalogue", KNN_CATALOGUE_TERMS)):
        kern = data.get(section)
        if kern is not None and not all(isinstance((kern.get("core_us") or {}).get(key), int | float)
                                        for key in terms):
            raise CoefficientsError(f"{where}: {section}.core_us needs {', '.join(terms)}")
    hist = data.get("history")
    if hist is not None:
        try:
            numbers = [hist["core_us"][t] for t in HISTORY_TERMS] + [hist["also_played_core_us"][t] for t in HISTORY_TERMS]
            numbers += [hist["bytes"][b][t] for b in ("resp", "redis", "rdb") for t in ("per_key", "per_play")]
            numbers += [hist["dump_ratio"], hist["publish_ratio"], hist["basis"]["history_items"]]
        except (KeyError, TypeError) as exc:
            raise CoefficientsError(f"{where}: history needs core_us and also_played_core_us ({', '.join(HISTORY_TERMS)}), "
                                    f"bytes.resp/redis/rdb (per_key, per_play), dump_ratio, publish_ratio and "
                                    f"basis.history_items (missing {exc})") from None
        if not all(isinstance(v, int | float) and math.isfinite(v) for v in numbers):
            raise CoefficientsError(f"{where}: history's figures must be finite numbers")
    for enc in ENCODINGS:
        e = data.get("encodings", {}).get(enc)
        if not isinstance(e, dict):
            raise CoefficientsError(f"{where}: encodings.{enc} missing")
        for key in ("compute_overhead_core_us", "dump_wall_us", "publish_wall_us", "redis_bytes", "resp_bytes",
                    "rdb_bytes", "value_bytes_per_item"):
            v = e.get(key)
            if not isinstance(v, int | float) or v < 0 or not math.isfinite(v):
                raise CoefficientsError(f"{where}: encodings.{enc}.{key} must be a number >= 0 (got {v!r})")
    return data


def load_coefficients(path: str | Path | None = None) -> tuple[dict[str, Any], Path]:
    """The coefficients to plan with: ``path``, else ``.bench/coefficients.json`` (fresh benchmark figures),
    else the committed default. Returns (coefficients, the file they came from)."""
    candidates = [Path(path)] if path else [bench_path(), DEFAULT_PATH]
    for p in candidates:
        if p.is_file():
            try:
                data = json.loads(p.read_text())
            except json.JSONDecodeError as exc:
                raise CoefficientsError(f"{p}: not JSON ({exc})") from None
            return _borrow_kernels(_validate(data, str(p)), p), p
        if path:
            raise CoefficientsError(f"{p}: no such coefficients file")
    raise CoefficientsError(f"no coefficients file ({DEFAULT_PATH} is missing from the installation)")


def _scaled(core_us: dict[str, float], f: float) -> dict[str, float]:
    """A kernel plane's terms x ``f`` (its fit residual stays)."""
    return {k: (v * f if k != "max_rel_residual" else v) for k, v in core_us.items()}


def _geomean(values: list[float]) -> float:
    return math.exp(sum(math.log(v) for v in values) / len(values))


#: sections beyond the dense plane that a coefficients file may lack (measured later than it) and borrow: the
#: item-kNN and EASE kernels, the per-rail catalogue cost and item-kNN's per-user growth with the candidates
#: (CPU time too, so on the same level)
EXTRA_KERNELS = ("kernel_knn", "kernel_ease", "catalogue", "knn_catalogue")
#: the history step's CPU lines (per user + per play of the user's)
HISTORY_TERMS = ("per_user", "per_play")


def _outdated(mine: dict[str, Any] | None, committed: dict[str, Any]) -> bool:
    """Whether a file's extra kernel should be (re)borrowed from the committed one: it has none, or its kernel
    *is* the committed one (copied by ``skyrec bench``, which keeps its ``how``, or borrowed) from an earlier
    measurement than the committed file's now -- e.g. the kernel's code changed and was re-measured. A kernel
    this file measured itself (``skyrec plan --calibrate``: no ``how``) is kept."""
    if not mine:
        return True
    if "borrowed" in mine:
        return mine.get("source_how") != committed.get("how")
    return bool(mine.get("how")) and mine.get("how") != committed.get("how")


def _borrow_kernels(data: dict[str, Any], path: Path) -> dict[str, Any]:
    """A file measured before the item-kNN or EASE kernel or the factors term were (no ``kernel_knn`` /
    ``kernel_ease``, no ``per_1k_candidates_per_factor``), or holding a copy of a committed kernel that has
    been re-measured since, borrows the committed ones, put on this file's level: x (this file's dense plane /
    the committed dense plane, geometric mean over the committed sweep's points). Recorded in
    ``<kernel>.borrowed`` / ``kernel.factors_borrowed``; the plan says so in its notes."""
    if path == DEFAULT_PATH or not DEFAULT_PATH.is_file():
        return data
    base = json.loads(DEFAULT_PATH.read_text())
    if not data.get("history") and base.get("history"):  # CPU and bytes of the history step, as measured there
        data["history"] = {**base["history"], "borrowed": f"{DEFAULT_PATH.name} (measured "
                                                          f"{base['history'].get('measured_at')})"}
    has_factors = "per_1k_candidates_per_factor" in data["kernel"]["core_us"]
    stale = [name for name in EXTRA_KERNELS if base.get(name) and _outdated(data.get(name), base[name])]
    if has_factors and not stale:
        return data
    pts = base["kernel"].get("points") or [{"candidates": 20_000, "k": 50}]
    ratios = [kernel_core_us(data, pt["candidates"], pt["k"]) / kernel_core_us(base, pt["candidates"], pt["k"])
              for pt in pts]
    if not all(r > 0 for r in ratios):
        return data
    f = _geomean(ratios)
    borrowed = f"{DEFAULT_PATH.name} (measured {base.get('measured_at')}) x {f:.3f}, this file's dense kernel level"
    g = base["kernel"]["core_us"].get("per_1k_candidates_per_factor")
    if not has_factors and g is not None:
        data["kernel"]["core_us"]["per_1k_candidates_per_factor"] = g * f
        data["kernel"]["factors_borrowed"] = borrowed
    for name in stale:
        data[name] = {"core_us": _scaled(base[name]["core_us"], f), "points": base[name].get("points") or [],
                      "borrowed": borrowed, "source_how": base[name].get("how")}
    return data


# ---- the model ----------------------------------------------------------------------------------------------

@dataclass(frozen=True)
class PlanInputs:
    users: int
    candidates: int = 20_000
    rails: int = 1
    k: int = 50
    plays_per_user: float = 20.0
    cores: int = 2
    model: str = "als"               # the rails' model (its name in the configuration)
    kernel: str = "factors"          # factors | neighbours (item-kNN): how precompute's kernel scores it
    factors: int = BASE_FACTORS      # a factor model's representation width (ALS/BPR factors, LightFM components)
    neighbours: int = 75             # item-kNN: entries of an item's row (neighbours + series_depth)
    items: int | None = None         # the model's items, of which the candidates are some (default: candidates):
    #                                  EASE's weights are items x items; item-kNN's rows spread over them
    weights_limit_gb: float = 8.0    # EASE: its memory guard (models.ease.params.memory_limit_gb)
    items_per_user: float | None = None  # distinct items a user has played (default: plays_per_user)
    similar_k: int = 0               # "more like this" list length: every model item a seed, each rail (0: none)
    history_items: int = 0           # publish.history_items: each user's last plays published with each rail (0: none)
    # users of a rail with older plays in the lists of their recent ones (an ``also`` key each), as a share of
    # the users; None: the share of the coefficients' measurement (about every user: an upper figure)
    also_share: float | None = None
    encoding: str = "packed"
    keep_versions: int = 2           # publish.keep_versions
    interval_hours: float = 24.0     # how often every rail must be recomputed (the model's schedule)
    redis_node_gb: float = 100.0     # the dataset one Redis node can hold with room for fork and replication
    machine_memory_gb: float = 24.0  # one machine's memory (Redis and the jobs share it when on one machine)
    # the serving Redis's maxmemory, when it has one (``--from-lake`` reads it): a peak beyond it is refused
    redis_maxmemory_gb: float | None = None
    dataflow_speed: float = 1.0      # work of one Dataflow vCPU relative to one core of the measured machine
    dataflow_vcpus_per_worker: int = 4
    dataflow_memory_gb_per_worker: float = 32.0
    dataflow_max_workers: int = 10
    dataflow_startup_s: float = 180.0
    vcpu_hour: float = 0.056
    gb_hour: float = 0.0035
    dump_cores: int = 2              # cores one rail's dump occupies (the scratch redis-server and the loader)

    def check(self) -> None:
        for name in ("users", "candidates", "rails", "k", "cores", "keep_versions", "dataflow_vcpus_per_worker",
                     "dataflow_max_workers", "dump_cores"):
            if int(getattr(self, name)) < 1:
                raise ValueError(f"{name} must be >= 1 (got {getattr(self, name)})")
        for name in ("plays_per_user", "dataflow_startup_s", "vcpu_hour", "gb_hour"):
            if not getattr(self, name) >= 0:
                raise ValueError(f"{name} must be >= 0 (got {getattr(self, name)})")
        for name in ("interval_hours", "redis_node_gb", "machine_memory_gb", "dataflow_speed",
                     "dataflow_memory_gb_per_worker", "weights_limit_gb"):
            if not getattr(self, name) > 0:
                raise ValueError(f"{name} must be > 0 (got {getattr(self, name)})")
        if self.redis_maxmemory_gb is not None and not self.redis_maxmemory_gb > 0:
            raise ValueError(f"redis_maxmemory_gb must be > 0 (got {self.redis_maxmemory_gb})")
        if self.kernel not in KERNELS:
            raise ValueError(f"kernel must be one of {', '.join(KERNELS)} (got {self.kernel!r})")
        if self.neighbours < 1:
            raise ValueError(f"neighbours must be >= 1 (got {self.neighbours})")
        if self.factors < 1:
            raise ValueError(f"factors must be >= 1 (got {self.factors})")
        if self.items is not None and self.items < self.candidates:
            raise ValueError(f"items ({self.items}) must be at least the candidates ({self.candidates}): the "
                             "candidates are some of the model's items")
        if self.similar_k < 0:
            raise ValueError(f"similar_k must be >= 0 (got {self.similar_k})")
        if self.history_items < 0:
            raise ValueError(f"history_items must be >= 0 (got {self.history_items})")
        if self.also_share is not None and not 0 <= self.also_share <= 1:
            raise ValueError(f"also_share must be within [0, 1] (got {self.also_share})")
        if self.items_per_user is not None and not self.items_per_user >= 0:
            raise ValueError(f"items_per_user must be >= 0 (got {self.items_per_user})")
        if self.encoding not in ENCODINGS:
            raise ValueError(f"encoding must be one of {', '.join(ENCODINGS)} (got {self.encoding!r})")
        if self.k >= self.candidates:
            raise ValueError(f"k ({self.k}) must be below the candidates ({self.candidates})")


def machine_type_size(machine_type: str) -> tuple[int, float] | None:
    """(vCPUs, memory GB) of a Compute Engine ``<family>-<standard|highmem|highcpu>-<vcpus>`` type, else None."""
    parts = machine_type.split("-")
    per = {"standard": 4.0, "highmem": 8.0, "highcpu": 1.0}
    if len(parts) == 3 and parts[1] in per and parts[2].isdigit():
        n = int(parts[2])
        return n, n * per[parts[1]]
    return None


def kernel_core_us(coef: dict[str, Any], candidates: int, k: int, factors: int = BASE_FACTORS) -> float:
    """Core-microseconds of the top-K kernel per user at (candidates, k) on dense factors: the fitted plane at
    :data:`BASE_FACTORS`, plus ``per_1k_candidates_per_factor`` x candidates/1000 x (factors - 64) (the
    product's multiply-adds; the selection does not depend on them)."""
    c = coef["kernel"]["core_us"]
    extra = 0.0
    if factors != BASE_FACTORS:
        if "per_1k_candidates_per_factor" not in c:
            raise CoefficientsError(f"these coefficients measure the dense kernel at {BASE_FACTORS} factors only: "
                                    f"plan {factors} factors after `skyrec plan --calibrate`")
        extra = c["per_1k_candidates_per_factor"] * candidates / 1000.0 * (factors - BASE_FACTORS)
    return max(0.0, c["per_user"] + c["per_1k_candidates"] * candidates / 1000.0 + c["per_k"] * k + extra)


def knn_outputs(candidates: float, products: float) -> float:
    """Entries of a user's sparse score row when ``products`` neighbour entries land at random among
    ``candidates``: ``C (1 - exp(-P / C))`` (~P while P << C; real neighbour lists overlap more, so fewer)."""
    return candidates * -math.expm1(-products / candidates) if candidates > 0 else 0.0


def knn_kernel_core_us(coef: dict[str, Any], candidates: int, k: int, products: float,
                       outputs: float | None = None) -> float:
    """Core-microseconds of the top-K kernel per user scoring item-kNN: the fitted plane of ``kernel_knn`` in
    (candidates, k, products, outputs). ``products`` = played items x entries per neighbour row (the sparse
    product's multiply-adds); ``outputs`` = its result entries, which its merge, sort and scatter pay for
    (default :func:`knn_outputs`, random rows: an upper bound, since real neighbour lists overlap)."""
    c = _plane_terms(coef, "kernel_knn", "item-kNN")
    return max(0.0, _common_terms(c, candidates, k) + c["per_1k_products"] * products / 1000.0
               + c["per_1k_outputs"] * (knn_outputs(candidates, products) if outputs is None else outputs) / 1000.0)


def _plane_terms(coef: dict[str, Any], section: str, what: str) -> dict[str, float]:
    """The fitted terms of a kernel beyond the dense plane, or an error naming how to measure them."""
    if not coef.get(section):
        raise CoefficientsError(f"these coefficients have no {what} kernel ({section}): measure it with "
                                "`skyrec plan --calibrate` (or `python benchmarks/bench_plan_kernels.py --write`), "
                                "or plan a factor model (--model als)")
    return coef[section]["core_us"]


def _common_terms(c: dict[str, float], candidates: int, k: int) -> float:
    return c["per_user"] + c["per_1k_candidates"] * candidates / 1000.0 + c["per_k"] * k


def ease_kernel_core_us(coef: dict[str, Any], candidates: int, k: int, played: float) -> float:
    """Core-microseconds of the top-K kernel per user scoring EASE: the fitted plane of ``kernel_ease`` in
    (candidates, k, played items x candidates): the sparse x dense product adds one row of the weights (a
    value per candidate) per played item, then the dense selection over the candidates."""
    c = _plane_terms(coef, "kernel_ease", "EASE")
    return max(0.0, _common_terms(c, candidates, k) + c["per_m_products"] * played * candidates / 1e6)


def ease_weights_bytes(inputs: PlanInputs) -> float:
    """What EASE's memory guard counts for the inputs' items (the candidates unless ``items`` is given): its
    float32 copies of the items x items weights at the peak over train, evaluate and precompute."""
    from skyrec.models.ease import COPIES
    from skyrec.models.representations import square_bytes

    return float(square_bytes(inputs.items if inputs.items is not None else inputs.candidates, COPIES))


def played_items(plays_per_user: float, items_per_user: float | None) -> float:
    """Distinct items a user has played: ``items_per_user`` when given, else every play a new item."""
    return plays_per_user if items_per_user is None else items_per_user


def products_per_user(inputs: PlanInputs) -> float:
    """item-kNN's multiply-adds per user: distinct played items x the entries of a neighbour row among the
    candidates. A rail scores the candidates' columns of the item side only, so when they are some of the
    model's ``items`` (a genre rail) a row's ``neighbours`` entries land among them in that proportion."""
    return played_items(inputs.plays_per_user, inputs.items_per_user) * _row_entries(inputs)


def _row_entries(inputs: PlanInputs) -> float:
    """Entries of one item-kNN neighbour row among a rail's candidates: ``neighbours``, times candidates /
    ``items`` when the candidates are some of the model's items (a genre rail)."""
    return inputs.neighbours * (1.0 if inputs.items is None else inputs.candidates / inputs.items)


def rail_kernel_core_us(coef: dict[str, Any], inputs: PlanInputs) -> float:
    """The kernel's core-microseconds per user and rail for the inputs' model."""
    if inputs.kernel == "neighbours":
        return knn_kernel_core_us(coef, inputs.candidates, inputs.k, products_per_user(inputs))
    if inputs.kernel == "item_weights":
        return ease_kernel_core_us(coef, inputs.candidates, inputs.k,
                                   played_items(inputs.plays_per_user, inputs.items_per_user))
    return kernel_core_us(coef, inputs.candidates, inputs.k, inputs.factors)


def knn_catalogue_core_us(coef: dict[str, Any], inputs: PlanInputs) -> float:
    """What item-kNN's compute costs per user and rail beyond its kernel plane when the candidates outnumber the
    basis run's (``knn_catalogue``: measured on the job, :func:`knn_catalogue_sweep`); 0 at or below them, for
    the other kernels, or in coefficients without it (the plan then says so)."""
    c = (coef.get("knn_catalogue") or {}).get("core_us")
    if inputs.kernel != "neighbours" or not c:
        return 0.0
    return c["per_user_per_1k_candidates"] * max(0.0, inputs.candidates - coef["basis"]["candidates"]) / 1000.0


def seed_kernel_core_us(coef: dict[str, Any], inputs: PlanInputs) -> float:
    """The kernel's core-microseconds per "more like this" seed and rail: a seed is scored as a user whose one
    played item is the seed (item-kNN, EASE: its row of the item-item weights; a factor model: its own
    factors against every candidate), at ``similar_k``."""
    k = inputs.similar_k
    if inputs.kernel == "neighbours":
        return knn_kernel_core_us(coef, inputs.candidates, k, _row_entries(inputs))
    if inputs.kernel == "item_weights":
        return ease_kernel_core_us(coef, inputs.candidates, k, 1.0)
    return kernel_core_us(coef, inputs.candidates, k, inputs.factors)


def catalogue_core_s(coef: dict[str, Any], inputs: PlanInputs) -> float:
    """The compute step's per-rail seconds that grow with the catalogue, beyond (or, for a smaller one, short
    of) the basis run's: core-microseconds per model item (``items``, default the candidates) x the items
    beyond the basis run's candidates (every item a candidate there). 0 without a measured ``catalogue``."""
    cat = coef.get("catalogue")
    if not cat:
        return 0.0
    items = inputs.items or inputs.candidates
    return (items - coef["basis"]["candidates"]) * cat["core_us"]["per_item"] / 1e6


def seeds(inputs: PlanInputs) -> int:
    """"More like this" seeds per rail: every model item (``items``, default the candidates) when on."""
    return (inputs.items or inputs.candidates) if inputs.similar_k > 0 else 0


def history_entries(inputs: PlanInputs) -> float:
    """Plays in one user's history value: ``history_items``, or fewer when users have played fewer items."""
    played = inputs.items_per_user if inputs.items_per_user is not None else inputs.plays_per_user
    return min(float(inputs.history_items), played)


def history_terms(coef: dict[str, Any], inputs: PlanInputs, r: dict[str, float]) -> dict[str, float] | None:
    """What publishing every user's history costs per user and rail (``history_items`` > 0), from the
    coefficients' ``history`` section (None without one, or without history): the compute step's
    core-microseconds (the scan of the activity snapshot: per user + per play; with "more like this" lists, the
    older plays found in them, ``also_played``: per user + per play), and per ``hist`` key its RESP, Redis and RDB
    bytes (per key + per play in the value; x the measured growth of the values with ``also_played``). The
    dump and publish steps cost per ``hist`` key the measured multiple of a user's list's (``r``: the rail's
    per user-rail figures), scaled by the value's bytes."""
    h = coef.get("history")
    if not h or inputs.history_items <= 0:
        return None
    plays = inputs.plays_per_user
    c = h["core_us"]
    core = c["per_user"] + c["per_play"] * plays
    also = inputs.similar_k > 0
    if also:
        a = h["also_played_core_us"]
        core += a["per_user"] + a["per_play"] * plays
    entries = history_entries(inputs)
    json_ids = inputs.encoding == "json"  # the also ids: item table positions when packed, JSON ids in json

    def measured(key: str) -> float | None:
        return h.get(key + "_json", h.get(key)) if json_ids else h.get(key)

    def at_share(g: float) -> float:
        """The values' growth with the also keys (1 without lists), at this rail's share of users named."""
        if not also:
            return 1.0
        if inputs.also_share is not None:  # the growth as measured, at this rail's share of users named
            g = 1.0 + (g - 1.0) * inputs.also_share / max(1e-9, float(h.get("also_played_users_share", 1.0)))
        return g

    resp_growth = float(measured("also_played_bytes_ratio") or 1.0)
    grow = at_share(resp_growth)  # of the RESP (and RDB) bytes
    grow_redis = at_share(float(measured("also_played_redis_bytes_ratio") or resp_growth))  # of what Redis holds
    b = h["bytes"]
    size = {name: (b[name]["per_key"] + b[name]["per_play"] * entries) * (grow_redis if name == "redis" else grow)
            for name in ("resp", "redis", "rdb")}
    basis = b["resp"]["per_key"] + b["resp"]["per_play"] * h["basis"]["history_items"]
    scale = size["resp"] / basis if basis > 0 else 1.0
    return {"core_us": core, "entries": entries, "resp_bytes": size["resp"], "redis_bytes": size["redis"],
            "rdb_bytes": size["rdb"], "dump_wall_us": r["dump_wall_us"] * h["dump_ratio"] * scale,
            "publish_wall_us": r["publish_wall_us"] * h["publish_ratio"] * scale,
            # the plays' part of the publication and of Redis: loaded and held once for every rail of the
            # snapshot (the rest, the rail's also_played keys, once per rail)
            "plays_fraction": 1.0 / grow, "redis_plays_fraction": 1.0 / grow_redis}


def _per_rail(coef: dict[str, Any], enc: str, k: int) -> dict[str, float]:
    """The per user-rail figures of one encoding at k (basis figures scaled by k as the module doc says)."""
    e = coef["encodings"][enc]
    kb = coef["basis"]["k"]
    d = e["value_bytes_per_item"] * (k - kb)
    resp = max(1.0, e["resp_bytes"] + d)
    byte_scale = resp / e["resp_bytes"] if e["resp_bytes"] else 1.0
    return {"overhead_core_us": e["compute_overhead_core_us"] * k / kb,
            "compute_fixed_s": e.get("compute_fixed_s", 0.0), "dump_fixed_s": e.get("dump_fixed_s", 0.0),
            "publish_fixed_s": e.get("publish_fixed_s", 0.0),
            "redis_fixed_bytes_per_candidate": e.get("redis_fixed_bytes_per_candidate", 0.0),
            "dump_wall_us": e["dump_wall_us"] * byte_scale, "publish_wall_us": e["publish_wall_us"] * byte_scale,
            "redis_bytes": max(1.0, e["redis_bytes"] + d), "resp_bytes": resp, "rdb_bytes": max(1.0, e["rdb_bytes"] + d)}


def plan(inputs: PlanInputs, coef: dict[str, Any]) -> dict[str, Any]:
    """The capacity plan for ``inputs`` (see the module doc); figures in seconds, bytes and currency units."""
    inputs.check()
    p = inputs
    ur = p.users * p.rails
    r = _per_rail(coef, p.encoding, p.k)
    kern_us = rail_kernel_core_us(coef, p)
    growth_us = knn_catalogue_core_us(coef, p)
    compute_core_s = ur * (kern_us + growth_us + r["overhead_core_us"]) / 1e6
    # "more like this": every model item scored as a seed in each rail, one sim key each (RESP, no Parquet)
    n_seeds = seeds(p)
    sr = n_seeds * p.rails
    rs = _per_rail(coef, p.encoding, max(1, p.similar_k))
    seed_us = seed_kernel_core_us(coef, p) if n_seeds else 0.0
    similar_core_s = sr * (seed_us + rs["overhead_core_us"]) / 1e6
    compute_core_s += similar_core_s
    # every user's last plays (publish.history_items): built by every rail's compute step, held and loaded
    # once for the rails of the snapshot; the rails' also_played keys, once per rail
    hist = history_terms(coef, p, r)
    none = {"core_us": 0.0, "resp_bytes": 0.0, "redis_bytes": 0.0, "rdb_bytes": 0.0, "dump_wall_us": 0.0,
            "publish_wall_us": 0.0, "entries": 0.0, "plays_fraction": 1.0, "redis_plays_fraction": 1.0}
    hr = hist or none
    history_core_s = ur * hr["core_us"] / 1e6
    compute_core_s += history_core_s
    # fixed per rail job (start-up, model and candidates loading, and what grows with the catalogue): serial,
    # not divided by cores
    catalogue_s = catalogue_core_s(coef, p)
    r["compute_fixed_s"] = max(0.0, r["compute_fixed_s"] + catalogue_s)
    util = float(coef["basis"].get("compute_utilisation", 1.0))  # CPU time / (wall x cores) of the measured run
    compute_wall = compute_core_s / (p.cores * util) + p.rails * r["compute_fixed_s"]
    dump_per_rail = r["dump_fixed_s"] + (p.users * (r["dump_wall_us"] + hr["dump_wall_us"])
                                         + n_seeds * rs["dump_wall_us"]) / 1e6
    dump_parallel = max(1, p.cores // p.dump_cores)
    dump_wall = math.ceil(p.rails / dump_parallel) * dump_per_rail
    # the plays are shared by the rails of one activity snapshot (skyrec.publish.histories): the first rail
    # loads them, the others skip their files; each rail loads its own also_played keys
    shared = hr.get("plays_fraction", 1.0)
    plays_publish_s = p.users * hr["publish_wall_us"] * shared / 1e6
    publish_wall = p.rails * (r["publish_fixed_s"] + (p.users * (r["publish_wall_us"] + hr["publish_wall_us"] * (1 - shared))
                                                      + n_seeds * rs["publish_wall_us"]) / 1e6) + plays_publish_s
    wall = compute_wall + dump_wall + publish_wall
    vcpu_local = wall * p.cores

    df = _dataflow(p, compute_core_s, p.rails * r["compute_fixed_s"], dump_wall + publish_wall)

    # the rec keys, plus per publication its items hash, item table, fallback and users sample
    held = hr["redis_plays_fraction"]
    plays_redis = p.users * hr["redis_bytes"] * held  # once, whatever the rails
    history_redis = plays_redis + ur * hr["redis_bytes"] * (1 - held)
    pub_bytes = (ur * r["redis_bytes"] + history_redis + sr * rs["redis_bytes"]
                 + p.rails * p.candidates * r["redis_fixed_bytes_per_candidate"])
    peak_bytes = pub_bytes * (p.keep_versions + 1)
    activity = p.users * p.plays_per_user * coef["lake"]["activity_bytes_per_play"]
    predictions = (ur * (p.k * coef["lake"]["prediction_row_bytes"] + r["resp_bytes"] + r["rdb_bytes"]
                         + hr["resp_bytes"] + hr["rdb_bytes"])
                   + sr * (rs["resp_bytes"] + rs["rdb_bytes"]))
    figures = {
        "kernel_core_us_per_user": kern_us, "knn_catalogue_core_us_per_user": growth_us,
        "similar_seeds": sr, "similar_kernel_core_us_per_seed": seed_us, "similar_core_s": similar_core_s,
        "history_core_s": history_core_s, "history_core_us_per_user": hr["core_us"],
        "history_redis_bytes": history_redis, "history_plays_redis_bytes": plays_redis,
        "history_plays_publish_s": plays_publish_s,
        "compute_predictions_s": compute_wall, "create_redis_dump_s": dump_wall, "publish_predictions_s": publish_wall,
        "whole_path_s": wall, "vcpu_s_local": vcpu_local, "compute_core_s": compute_core_s,
        "compute_fixed_core_s": r["compute_fixed_s"], "catalogue_core_s_per_rail": catalogue_s,
        "catalogue_basis_items": coef["basis"]["candidates"],
        **df, "redis_publication_bytes": pub_bytes, "redis_peak_bytes": peak_bytes,
        "lake_activity_bytes": activity, "lake_predictions_bytes_per_run": predictions,
        "lake_bytes": activity + predictions,
    }
    limits = _shared_limits(p, figures)
    if p.kernel == "item_weights":
        figures["ease_weights_bytes"] = weights = ease_weights_bytes(p)
        if not _beyond(limits, "EASE's item-item weights: refused by its memory guard", weights, p.weights_limit_gb,
                       "item-kNN (sparse neighbour rows: the shipped rails), fewer items, or "
                       "models.ease.params.memory_limit_gb raised on machines with the memory"):
            _beyond(limits, "EASE's item-item weights beyond this machine's memory", weights, p.machine_memory_gb,
                    "train and score EASE on a machine with the memory, or item-kNN")
    notes = []
    section = {"neighbours": "kernel_knn", "item_weights": "kernel_ease"}.get(p.kernel, "kernel")
    pts = coef[section].get("points") or []
    if pts:
        cs, ks = [pt["candidates"] for pt in pts], [pt["k"] for pt in pts]
        if not (min(cs) <= p.candidates <= max(cs) and min(ks) <= p.k <= max(ks)):
            notes.append(f"kernel extrapolated: measured at {min(cs):,}-{max(cs):,} candidates, k {min(ks)}-{max(ks)}")
        if p.kernel == "neighbours":
            if coef["kernel_knn"].get("borrowed"):
                notes.append(f"item-kNN kernel from {coef['kernel_knn']['borrowed']} (recalibrate: skyrec plan "
                             "--calibrate)")
            ps = [pt["plays"] * pt["neighbours"] for pt in pts]
            if not min(ps) <= products_per_user(p) <= max(ps):
                notes.append(f"item-kNN kernel extrapolated: measured at {min(ps):,}-{max(ps):,} played items x "
                             f"neighbours per user, planned {products_per_user(p):,.0f}")
        if p.kernel == "item_weights":
            if coef["kernel_ease"].get("borrowed"):
                notes.append(f"EASE kernel from {coef['kernel_ease']['borrowed']} (recalibrate: skyrec plan "
                             "--calibrate)")
            played = played_items(p.plays_per_user, p.items_per_user)
            ps = [pt["plays"] for pt in pts]
            if not min(ps) <= played <= max(ps):
                notes.append(f"EASE kernel extrapolated: measured at {min(ps)}-{max(ps)} played items per user, "
                             f"planned {played:g}")
    if p.kernel == "factors" and p.factors != BASE_FACTORS:
        fp = coef["kernel"].get("factor_points") or []
        ds = [pt.get("factors", BASE_FACTORS) for pt in fp]
        if ds and not min(ds) <= p.factors <= max(ds):
            notes.append(f"factors extrapolated: the kernel measured at {min(ds)}-{max(ds)} factors")
        if coef["kernel"].get("factors_borrowed"):
            notes.append(f"factors term from {coef['kernel']['factors_borrowed']} (recalibrate: skyrec plan --calibrate)")
    if p.kernel == "neighbours" and p.candidates > coef["basis"]["candidates"]:
        kc = coef.get("knn_catalogue") or {}
        top = max((pt["candidates"] for pt in kc.get("points") or []), default=None)
        if not kc:
            notes.append(f"item-kNN's per-user growth beyond {coef['basis']['candidates']:,} candidates is not in these "
                         "coefficients: the plan is low at large catalogues (docs/scale.md)")
        elif top is not None and p.candidates > top:
            notes.append(f"item-kNN's per-user growth with the candidates extrapolated: measured up to {top:,}")
        if kc.get("borrowed"):
            notes.append(f"item-kNN's per-user growth with the candidates from {kc['borrowed']}")
    cat_pts = (coef.get("catalogue") or {}).get("points") or []
    if not coef.get("catalogue"):
        notes.append("the compute step's per-rail cost that grows with the catalogue is not in these coefficients "
                     f"(measured at {coef['basis']['candidates']:,} items only)")
    elif cat_pts and not (min(pt["items"] for pt in cat_pts) <= (p.items or p.candidates)
                          <= max(pt["items"] for pt in cat_pts)):
        notes.append(f"per-rail catalogue cost extrapolated: measured at {min(pt['items'] for pt in cat_pts):,}-"
                     f"{max(pt['items'] for pt in cat_pts):,} items")
    if p.history_items > 0:
        h = coef.get("history")
        if not h:
            notes.append(f"the history step (publish.history_items = {p.history_items}: every user's last plays, a "
                         "second key per user and rail) is not in these coefficients: compute, dump, publish and "
                         "Redis are low (recalibrate: skyrec plan --calibrate-history)")
        else:
            pl = [pt["plays"] for pt in h.get("points") or []]
            if pl and not min(pl) <= p.plays_per_user <= max(pl):
                notes.append(f"history step extrapolated: measured at {min(pl):g}-{max(pl):g} plays per user, "
                             f"planned {p.plays_per_user:g}")
            if h.get("borrowed"):
                notes.append(f"history step from {h['borrowed']}")
            if h.get("core_us_below_noise"):
                notes.append(f"history step's CPU planned as 0: it was within the measurement's noise at "
                             f"{h['basis']['users']:,} users (recalibrate: skyrec plan --calibrate-history)")
    if p.k != coef["basis"]["k"]:
        notes.append(f"output, dump and publish scaled from k = {coef['basis']['k']} (only that k is measured end to end)")
    return {"inputs": asdict(p), "figures": figures, "limits": limits, "notes": notes,
            "per_user_rail": {**r, "kernel_core_us": kern_us,
                              **{f"history_{key}": v for key, v in hr.items()}},
            "coefficients": {k: coef.get(k) for k in ("measured_at", "machine", "source")}}


#: figures of a set of rails that are the sum of each rail's (each rail's job runs alone on the cores)
SUMMED = ("compute_predictions_s", "publish_predictions_s", "compute_core_s", "similar_core_s", "similar_seeds",
          "history_core_s", "history_redis_bytes",
          "redis_publication_bytes", "redis_peak_bytes", "lake_predictions_bytes_per_run")


def plan_rails(rails: list[tuple[str, PlanInputs]], coef: dict[str, Any]) -> dict[str, Any]:
    """The capacity plan of rails that differ (each its own candidates, model, shape: ``skyrec plan
    --from-lake``): each rail planned alone (``rails=1``), then put together as the precompute runs them --
    the compute steps one after another on all the cores, the dumps ``cores // dump_cores`` at a time (each
    group as long as its longest), the publications serial into the one serving Redis, one Dataflow start-up;
    the activity snapshot is the users' once. Machine, schedule and Dataflow settings are the first rail's."""
    if not rails:
        raise ValueError("no rails to plan")
    names = [n for n, _ in rails]
    if len(set(names)) != len(names):
        raise ValueError(f"rail names repeat: {names}")
    per = {name: plan(replace(inp, rails=1), coef) for name, inp in rails}
    p = rails[0][1]
    figs = [r["figures"] for r in per.values()]
    total: dict[str, float] = {key: sum(f[key] for f in figs) for key in SUMMED}
    dumps = sorted((f["create_redis_dump_s"] for f in figs), reverse=True)
    parallel = max(1, p.cores // p.dump_cores)
    total["create_redis_dump_s"] = sum(dumps[::parallel])
    # each rail's plan holds the users' plays, which the rails of one snapshot share: held and loaded once (the
    # most users' of the rails)
    held = [f["history_plays_redis_bytes"] for f in figs]
    twice = sum(held) - max(held)
    total["history_redis_bytes"] -= twice
    total["redis_publication_bytes"] -= twice
    total["redis_peak_bytes"] -= twice * (p.keep_versions + 1)
    total["history_plays_redis_bytes"] = max(held)
    loaded = [f["history_plays_publish_s"] for f in figs]
    total["publish_predictions_s"] -= sum(loaded) - max(loaded)
    total["history_plays_publish_s"] = max(loaded)
    total["whole_path_s"] = total["compute_predictions_s"] + total["create_redis_dump_s"] + total["publish_predictions_s"]
    total["vcpu_s_local"] = total["whole_path_s"] * p.cores
    total["lake_activity_bytes"] = max(f["lake_activity_bytes"] for f in figs)
    total["lake_bytes"] = total["lake_activity_bytes"] + total["lake_predictions_bytes_per_run"]
    total.update(_dataflow(p, total["compute_core_s"], sum(f["compute_fixed_core_s"] for f in figs),
                           total["create_redis_dump_s"] + total["publish_predictions_s"]))
    limits = _shared_limits(p, total)
    limits += [{**lim, "what": f"{name}: {lim['what']}"} for name, r in per.items() for lim in r["limits"]
               if lim["what"].startswith("EASE")]
    by_note: dict[str, list[str]] = {}
    for name, r in per.items():
        for n in r["notes"]:
            by_note.setdefault(n, []).append(name)
    notes = [f"{', '.join(who) if len(who) < len(per) else 'every rail'}: {n}" for n, who in by_note.items()]
    return {"rails": per, "figures": total, "limits": limits, "notes": notes,
            "coefficients": {k: coef.get(k) for k in ("measured_at", "machine", "source")}}


def _dataflow(p: PlanInputs, compute_core_s: float, fixed_s: float, rest_wall_s: float) -> dict[str, float]:
    """compute_predictions as the Beam pipeline on Dataflow (one start-up, the work over its vCPUs, the rails'
    fixed seconds); the dump and the publication (``rest_wall_s``) stay where they are."""
    df_vcpus = p.dataflow_max_workers * p.dataflow_vcpus_per_worker
    df_wall = p.dataflow_startup_s + compute_core_s / p.dataflow_speed / df_vcpus + fixed_s
    df_vcpu_s = df_wall * df_vcpus
    df_gb_s = df_wall * p.dataflow_max_workers * p.dataflow_memory_gb_per_worker
    return {"dataflow_vcpu_s": df_vcpu_s, "dataflow_wall_s": df_wall, "dataflow_path_wall_s": df_wall + rest_wall_s,
            "dataflow_cost": df_vcpu_s / 3600 * p.vcpu_hour + df_gb_s / 3600 * p.gb_hour}


def _shared_limits(p: PlanInputs, f: dict[str, float]) -> list[dict[str, Any]]:
    """Where one machine, one serving Redis or one schedule interval stops being enough for these figures."""
    interval_s = p.interval_hours * 3600
    limits: list[dict[str, Any]] = []
    if f["whole_path_s"] > interval_s:
        limits.append({"what": "precompute wall time", "value_s": f["whole_path_s"], "limit_s": interval_s,
                       "then": f"more cores than {p.cores}: the compute step on Dataflow/Flink/Spark/Dask workers "
                               "(it scales by shards); dump and publish do not scale with cores"})
    if f["publish_predictions_s"] > interval_s:
        limits.append({"what": "publish time into one serving Redis", "value_s": f["publish_predictions_s"],
                       "limit_s": interval_s,
                       "then": "several Redis (one per group of rails) or a Redis Cluster: not supported by the "
                               "publish code today (docs/scale.md)"})
    _beyond(limits, "Redis memory beyond one node", f["redis_peak_bytes"], p.redis_node_gb,
            "shard the serving keys over several Redis (Redis Cluster or one Redis per rail group): not supported "
            "by the publish code today (docs/scale.md)")
    _beyond(limits, "Redis peak beyond this machine's memory", f["redis_peak_bytes"], p.machine_memory_gb,
            "Redis on its own node(s), jobs elsewhere")
    if p.redis_maxmemory_gb is not None:
        _beyond(limits, "Redis peak beyond the serving Redis's maxmemory", f["redis_peak_bytes"], p.redis_maxmemory_gb,
                "publications are refused before they load (RedisMemoryError): raise maxmemory, or lower "
                "publish.keep_versions (the peak is keep_versions + 1 publication sets)")
    return limits


def _beyond(limits: list[dict[str, Any]], what: str, value_bytes: float, limit_gb: float, then: str) -> bool:
    """Record a memory limit when ``value_bytes`` exceeds ``limit_gb``; whether it did."""
    if value_bytes > limit_gb * 1e9:
        limits.append({"what": what, "value_gb": value_bytes / 1e9, "limit_gb": limit_gb, "then": then})
        return True
    return False


def check_reference(coef: dict[str, Any], tolerance: float = TOLERANCE) -> list[dict[str, Any]]:
    """The plan at the recorded reference run's inputs against its measured figures: one row per figure with
    the ratio planned / measured and whether it is within ``tolerance``."""
    ref = coef.get("reference_run")
    if not isinstance(ref, dict) or "inputs" not in ref or "measured" not in ref:
        raise CoefficientsError("the coefficients record no reference run (reference_run.inputs / .measured)")
    fig = plan(PlanInputs(**ref["inputs"]), coef)["figures"]
    planned = {"compute_predictions_s": fig["compute_predictions_s"], "create_redis_dump_s": fig["create_redis_dump_s"],
               "publish_predictions_s": fig["publish_predictions_s"], "whole_path_s": fig["whole_path_s"],
               "vcpu_s_local": fig["vcpu_s_local"], "redis_mb": fig["redis_publication_bytes"] / 1e6,
               "compute_cpu_s": fig["compute_core_s"] + ref["inputs"].get("rails", 1) * fig["compute_fixed_core_s"]}
    rows = []
    for name, measured in ref["measured"].items():
        if name not in planned:
            raise CoefficientsError(f"reference_run.measured.{name}: the plan has no such figure")
        ratio = planned[name] / measured
        rows.append({"figure": name, "planned": planned[name], "measured": measured, "ratio": ratio,
                     "within": abs(ratio - 1) <= tolerance})
    return rows


# ---- output for people ----------------------------------------------------------------------------------------

def _dur(s: float) -> str:
    if s < 120:
        return f"{s:,.1f} s"
    if s < 7200:
        return f"{s / 60:,.1f} min"
    return f"{s / 3600:,.1f} h"


def render(result: dict[str, Any], source: str) -> Any:
    """A rich renderable: the plan's table, then the limits it crosses."""
    from rich.console import Group
    from rich.table import Table

    p, f, r = result["inputs"], result["figures"], result["per_user_rail"]
    title = (f"{p['users']:,} users x {p['rails']} rails ({p['model']}), {p['candidates']:,} candidates, "
             f"k = {p['k']}, {p['encoding']}, {p['cores']} cores")
    t = Table(title=title, title_justify="left")
    t.add_column("figure")
    t.add_column("plan", justify="right")
    t.add_column("how", overflow="fold")
    kern, over = r["kernel_core_us"], r["overhead_core_us"]
    growth = f.get("knn_catalogue_core_us_per_user", 0.0)
    seeds_text = " + the seeds' (below)" if f["similar_seeds"] else ""
    growth_text = f" + {growth:.1f} beyond {f['catalogue_basis_items']:,} candidates" if growth else ""
    t.add_row("compute_predictions", _dur(f["compute_predictions_s"]),
              f"{p['users'] * p['rails']:,} user-rails x ({kern:.1f} kernel{growth_text} + {over:.1f} output) "
              f"core-us{seeds_text} / {p['cores']}")
    if p["kernel"] == "neighbours":
        items = played_items(p["plays_per_user"], p["items_per_user"])
        among = (f" x {p['candidates']:,} / {p['items']:,} items (those among the candidates)"
                 if p["items"] and p["items"] > p["candidates"] else "")
        t.add_row("  kernel: item-kNN", f"{kern:.1f} us", f"sparse: {items:g} played items x {p['neighbours']} "
                  f"neighbour entries per user{among}, then the same selection")
        if growth:
            t.add_row("  item-kNN beyond the basis", f"{growth:.1f} us",
                      f"{p['candidates']:,} candidates: the job's per-user cost that the kernel plane misses (the "
                      "item side and the accumulator out of the caches, the output's dictionary), measured on the job")
    elif p["kernel"] == "item_weights":
        items = played_items(p["plays_per_user"], p["items_per_user"])
        t.add_row("  kernel: EASE", f"{kern:.1f} us", f"{items:g} played items x {p['candidates']:,} candidates of "
                  "dense item-item weights per user, then the selection")
        t.add_row("  EASE's weights (its memory guard)", _size(f["ease_weights_bytes"]),
                  f"the guard's estimate for {p['items'] or p['candidates']:,} items x as many; limit "
                  f"{p['weights_limit_gb']:g} GB (models.{p['model']}.params.memory_limit_gb)")
    else:
        t.add_row("  kernel: factors", f"{kern:.1f} us", f"dense: {p['factors']} factors x the candidates, then "
                  "the selection")
    if f["similar_seeds"]:
        t.add_row("  more like this", f"{f['similar_kernel_core_us_per_seed']:.1f} us",
                  f"{f['similar_seeds']:,} seed-rails (every model item) at similar_k {p['similar_k']}, each scored "
                  f"as a user whose one play is the seed, + its output: "
                  f"{f['similar_core_s'] / f['compute_core_s']:.1%} of the compute's CPU")
    if f.get("history_core_s"):
        also = " + the older plays in its seeds' lists (also_played)" if p["similar_k"] else ""
        t.add_row("  history", f"{r['history_core_us']:.1f} us",
                  f"each user's last {r['history_entries']:g} plays (publish.history_items {p['history_items']}): a "
                  f"scan of the activity snapshot{also}, {f['history_core_s'] / f['compute_core_s']:.1%} of the "
                  "compute's CPU; a second key per user-rail")
    cat_s = f["catalogue_core_s_per_rail"]
    cat_text = (f" {'+' if cat_s >= 0 else '-'} {abs(cat_s):.2f} s for {p['items'] or p['candidates']:,} model items "
                f"(the candidates and items hash, per item; measured at {f['catalogue_basis_items']:,})"
                if cat_s else "")
    t.add_row("  fixed, per rail", _dur(f["compute_fixed_core_s"]),
              f"start-up and loading {f['compute_fixed_core_s'] - cat_s:.2f} s{cat_text}; serial, x {p['rails']} "
              "rail(s)")
    def hist_us(key: str) -> str:
        return f" + {r[key]:.1f} history" if r.get(key) else ""

    t.add_row("create_redis_dump", _dur(f["create_redis_dump_s"]),
              f"{r['dump_wall_us']:.1f}{hist_us('history_dump_wall_us')} us per user-rail, "
              f"{max(1, p['cores'] // p['dump_cores'])} rail(s) at a time")
    t.add_row("publish_predictions", _dur(f["publish_predictions_s"]),
              f"{r['publish_wall_us']:.1f}{hist_us('history_publish_wall_us')} us per user-rail, serial into one "
              "serving Redis (measured into an empty one; up to 2x while its key table doubles: docs/scale.md)")
    t.add_row("whole path, wall", _dur(f["whole_path_s"]), f"on {p['cores']} cores; schedule {p['interval_hours']:g} h")
    t.add_row("vCPU-seconds per run (local)", f"{f['vcpu_s_local']:,.0f}", "cores x wall")
    t.add_row("vCPU-seconds per run (Dataflow)", f"{f['dataflow_vcpu_s']:,.0f}",
              f"compute only, {p['dataflow_max_workers']} x {p['dataflow_vcpus_per_worker']} vCPU, speed "
              f"{p['dataflow_speed']:g}x a core here, +{p['dataflow_startup_s']:.0f} s start-up")
    t.add_row("Dataflow compute wall / cost", f"{_dur(f['dataflow_wall_s'])} / {f['dataflow_cost']:,.2f}",
              f"jobs.cost: {p['vcpu_hour']} per vCPU-hour, {p['gb_hour']} per GB-hour")
    t.add_row("Redis, one publication of every rail", _size(f["redis_publication_bytes"]),
              f"{r['redis_bytes']:.0f} bytes per user-rail ({p['encoding']})"
              + (f" + history: {r['history_redis_bytes'] * r['history_redis_plays_fraction']:.0f} per user, shared by"
                 f" the rails, {r['history_redis_bytes'] * (1 - r['history_redis_plays_fraction']):.0f} per user-rail"
                 f" ({_size(f['history_redis_bytes'])} in all)"
                 if r.get("history_redis_bytes") else ""))
    t.add_row("Redis, peak during a switch", _size(f["redis_peak_bytes"]),
              f"keep_versions {p['keep_versions']} + 1 publications")
    t.add_row("lake: activity snapshot", _size(f["lake_activity_bytes"]), f"{p['plays_per_user']:g} plays per user")
    t.add_row("lake: predictions per run", _size(f["lake_predictions_bytes_per_run"]),
              "Parquet + RESP + RDB of every rail")
    return Group(t, *_closing(result, source))


def _closing(result: dict[str, Any], source: str) -> list[Any]:
    """The lines under a plan's table: the limits it crosses (or that it fits), its notes, its coefficients."""
    from rich.text import Text

    parts: list[Any] = []
    if result["limits"]:
        for lim in result["limits"]:
            if "value_s" in lim:
                what = f"{lim['what']}: {_dur(lim['value_s'])} > {_dur(lim['limit_s'])}"
            else:
                what = f"{lim['what']}: {lim['value_gb']:,.1f} GB > {lim['limit_gb']:g} GB"
            parts.append(Text(f"beyond one machine - {what}; then: {lim['then']}", style="yellow"))
    else:
        parts.append(Text("fits one machine at these inputs", style="green"))
    for note in result.get("notes", []):
        parts.append(Text(f"note: {note}", style="yellow"))
    c = result["coefficients"]
    parts.append(Text(f"coefficients: {source} (measured {c.get('measured_at')}, "
                      f"{(c.get('machine') or {}).get('cpus')} cpus)", style="dim"))
    return parts


def render_rails(result: dict[str, Any], skipped: dict[str, str], source: str,
                 last_runs: dict[str, float] | None = None) -> Any:
    """A rich renderable of :func:`plan_rails`: one row per rail (with its last run's compute seconds, from
    ``last_runs``, where it has one), the totals, the rails left out and why."""
    from rich.console import Group
    from rich.table import Table
    from rich.text import Text

    rails, f = result["rails"], result["figures"]
    last = last_runs or {}
    first = next(iter(rails.values()))["inputs"]
    t = Table(title=f"{len(rails)} rail(s) planned from the lake, {first['cores']} cores, {first['encoding']}",
              title_justify="left")
    for col, just in (("rail", "left"), ("model", "left"), ("users", "right"), ("candidates / items", "right"),
                      ("kernel us/user", "right"), ("compute", "right"), ("last run", "right"), ("dump", "right"),
                      ("publish", "right"), ("Redis", "right")):
        t.add_column(col, justify=just)  # type: ignore[arg-type]
    for name, r in rails.items():
        p, g = r["inputs"], r["figures"]
        shape = {"neighbours": f"kNN, {p['neighbours']} per row", "item_weights": "EASE"}.get(
            p["kernel"], f"{p['factors']} factors")
        t.add_row(name, f"{p['model']} ({shape})", f"{p['users']:,}", f"{p['candidates']:,} / {p['items']:,}",
                  f"{g['kernel_core_us_per_user']:.1f}", _dur(g["compute_predictions_s"]),
                  _dur(last[name]) if name in last else "-", _dur(g["create_redis_dump_s"]),
                  _dur(g["publish_predictions_s"]), _size(g["redis_publication_bytes"]))
    t.add_section()
    t.add_row("all rails", "", "", "", "", _dur(f["compute_predictions_s"]),
              _dur(sum(last.values())) if last and set(last) == set(rails) else "-", _dur(f["create_redis_dump_s"]),
              _dur(f["publish_predictions_s"]), _size(f["redis_publication_bytes"]))
    parts: list[Any] = [t, Text(
        f"whole path {_dur(f['whole_path_s'])} on {first['cores']} cores (schedule {first['interval_hours']:g} h), "
        f"{f['vcpu_s_local']:,.0f} vCPU-s; on Dataflow {_dur(f['dataflow_wall_s'])}, {f['dataflow_cost']:,.2f}; "
        f"Redis peak during a switch {_size(f['redis_peak_bytes'])}; lake {_size(f['lake_bytes'])} per run")]
    for name, why in skipped.items():
        parts.append(Text(f"left out - {name}: {why}", style="yellow"))
    return Group(*parts, *_closing(result, source))


def render_check(rows: list[dict[str, Any]], coef: dict[str, Any]) -> Any:
    from rich.table import Table

    ref = coef["reference_run"]
    t = Table(title=f"plan vs measured: {ref.get('source', 'reference run')}", title_justify="left")
    for col, just in (("figure", "left"), ("plan", "right"), ("measured", "right"), ("plan / measured", "right"),
                      (f"within {TOLERANCE:.0%}", "left")):
        t.add_column(col, justify=just)  # type: ignore[arg-type]
    for row in rows:
        t.add_row(row["figure"], f"{row['planned']:,.1f}", f"{row['measured']:,.1f}", f"{row['ratio']:.3f}",
                  "yes" if row["within"] else "NO")
    return t


# ---- coefficients from measurements ---------------------------------------------------------------------------

def machine() -> dict[str, Any]:
    mem = None
    try:
        mem = round(os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES") / 2**30, 1)
    except (ValueError, OSError, AttributeError):
        pass
    return {"cpus": os.cpu_count(), "memory_gib": mem, "platform": platform.platform(),
            "python": sys.version.split()[0], "processor": platform.processor() or platform.machine()}


def fit_kernel(points: list[dict[str, Any]]) -> dict[str, float]:
    """Least-squares plane core_us = per_user + per_1k_candidates * C/1000 + per_k * k over the sweep's points
    (core_us: the point's process CPU microseconds per user, else threads x 1e6 / users_per_s)."""
    points = [p for p in points if p.get("factors", BASE_FACTORS) == BASE_FACTORS]
    if len({(p["candidates"], p["k"]) for p in points}) < 3:
        raise CoefficientsError("the kernel fit needs at least 3 distinct (candidates, k) points")
    return _fit_plane(("per_user", "per_1k_candidates", "per_k"),
                      [[1.0, p["candidates"] / 1000.0, float(p["k"])] for p in points],
                      [p.get("cpu_us_per_user") or p["threads"] * 1e6 / p["users_per_s"] for p in points])


def time_kernel(cases: dict[Any, tuple[Any, Any, Any, Any, int]], *, repeat: int, warmup: bool = True
                ) -> dict[Any, tuple[float, float]]:
    """Precompute's top-K kernel (``topk_threaded`` with its settings: all cores, 4,096-user batches, 64-user
    sub-batches, played items excluded, at most 3 per brand) on each case ``key: (U, V.T, played, brands, k)``:
    ``key: (wall seconds, process CPU seconds)``, the best of ``repeat`` rounds over all cases (on a shared
    machine the load moves between cases), after an untimed round that compiles and warms up."""
    from concurrent.futures import ThreadPoolExecutor

    from skyrec.scoring.topk import topk_threaded

    threads = os.cpu_count() or 1
    best = {key: (float("inf"), float("inf")) for key in cases}
    with ThreadPoolExecutor(threads) as pool:
        for r in range(repeat + 1 if warmup else repeat):
            for key, (U, VT, seen, brands, k) in cases.items():
                t0, c0 = time.perf_counter(), time.process_time()
                for s in range(0, U.shape[0], 4096):
                    topk_threaded(U[s:s + 4096], VT, k, pool=pool, threads=threads, exclude=seen[s:s + 4096],
                                  brands=brands, max_per_brand=3, sub_batch=64)
                if r or not warmup:
                    wall, cpu = best[key]
                    best[key] = (min(wall, time.perf_counter() - t0), min(cpu, time.process_time() - c0))
    return best


def kernel_sweep(candidates: tuple[int, ...] = (5_000, 20_000, 50_000), ks: tuple[int, ...] = (50, 100),
                 users: int = 4_096, repeat: int = 3, plays: int = 20,
                 factors: tuple[int, ...] = (BASE_FACTORS,)) -> list[dict[str, Any]]:
    """Users/s and CPU microseconds per user of the top-K kernel (:func:`time_kernel`; brands of 2,000) on dense
    ``d``-factor rows at each (candidates, k, d); the process CPU time is what the kernel costs, whatever share
    of the cores it got."""
    import numpy as np
    import scipy.sparse as sp

    threads = os.cpu_count() or 1
    rng = np.random.default_rng(42)
    Us = {d: rng.standard_normal((users, d)).astype(np.float32) for d in factors}
    data = {}
    for c in candidates:
        seen = sp.random(users, c, density=plays / c, format="csr", random_state=1, dtype=np.float32)
        brands = rng.integers(0, 2000, size=c).astype(np.int32)
        for d in factors:
            data[(c, d)] = (np.ascontiguousarray(rng.standard_normal((c, d)).astype(np.float32).T), seen, brands)
    best = time_kernel({(c, k, d): (Us[d], *data[(c, d)], k) for c in candidates for k in ks for d in factors},
                       repeat=repeat)
    return [{"candidates": c, "k": k, "users": users, "threads": threads, "users_per_s": round(users / wall),
             "cpu_us_per_user": round(cpu / users * 1e6, 3), **({"factors": d} if d != BASE_FACTORS else {})}
            for (c, k, d), (wall, cpu) in best.items()]


def fit_factors_term(points: list[dict[str, Any]]) -> float:
    """``per_1k_candidates_per_factor``: least squares of (a point's CPU us per user - the same (candidates, k)'s
    at :data:`BASE_FACTORS`) on candidates/1000 x (factors - 64), over a sweep at several factor counts."""
    base = {(p["candidates"], p["k"]): p["cpu_us_per_user"] for p in points if p.get("factors", BASE_FACTORS) == BASE_FACTORS}
    xs, ys = [], []
    for p in points:
        d = p.get("factors", BASE_FACTORS)
        if d != BASE_FACTORS and (p["candidates"], p["k"]) in base:
            xs.append(p["candidates"] / 1000.0 * (d - BASE_FACTORS))
            ys.append(p["cpu_us_per_user"] - base[(p["candidates"], p["k"])])
    if len(xs) < 2:
        raise CoefficientsError(f"the factors term needs points at {BASE_FACTORS} and at other factor counts "
                                "for the same (candidates, k)")
    return sum(x * y for x, y in zip(xs, ys, strict=True)) / sum(x * x for x in xs)

def fit_knn_kernel(points: list[dict[str, Any]]) -> dict[str, float]:
    """Least-squares core_us = per_user + per_1k_candidates * C/1000 + per_k * k + per_1k_products * P/1000
    + per_1k_outputs * O/1000 over the item-kNN sweep's points, P = played items x neighbours per user, O =
    :func:`knn_outputs` (the sweep's rows are random, so O is known). (A plane in P alone leaves residuals of
    50%: at few candidates the products land on the same entries, at many each is a new one.)"""
    if len({(p["candidates"], p["k"], p["plays"] * p["neighbours"]) for p in points}) < 6:
        raise CoefficientsError("the item-kNN kernel fit needs at least 6 distinct (candidates, k, products) points")
    return _fit_plane(KNN_TERMS, [[1.0, p["candidates"] / 1000.0, float(p["k"]), p["plays"] * p["neighbours"] / 1000.0,
                                   knn_outputs(p["candidates"], p["plays"] * p["neighbours"]) / 1000.0]
                                  for p in points], [p["cpu_us_per_user"] for p in points])


def _fit_plane(terms: tuple[str, ...], rows: list[list[float]], y: list[float]) -> dict[str, float]:
    """Least squares of ``y`` on ``rows`` (one column per term) in *relative* errors (each point weighted by
    1 / y), with the largest relative residual: the plan is judged in ratios, and a sweep spans ~5-200 us a
    user, where plain least squares fits the large points and leaves the small ones (a genre rail's item-kNN,
    EASE at 2k candidates) 60% off."""
    import numpy as np

    a, b = np.array(rows, dtype=float), np.array(y, dtype=float)
    if not (b > 0).all():
        raise CoefficientsError("a kernel sweep point measured no CPU time: measure again")
    sol, *_ = np.linalg.lstsq(a / b[:, None], np.ones_like(b), rcond=None)
    return {**dict(zip(terms, (float(v) for v in sol), strict=True)),
            "max_rel_residual": float(np.max(np.abs(a @ sol - b) / b))}


def knn_kernel_sweep(candidates: tuple[int, ...] = (2_000, 5_000, 20_000, 50_000, 200_000),
                     ks: tuple[int, ...] = (50, 100),
                     shapes: tuple[tuple[int, int], ...] = ((4, 50), (10, 75), (25, 75), (25, 200), (50, 150)),
                     users: int = 4_096, repeat: int = 3) -> list[dict[str, Any]]:
    """The top-K kernel scoring item-kNN's representation, with the precompute's settings (as
    :func:`kernel_sweep`): each user a sparse row of ``plays`` played items (excluded from the list), the item
    side a sparse ``candidates x candidates`` matrix of ``neighbours`` entries per row (a played item adds its
    row), at each (candidates, k, (plays, neighbours)): CPU microseconds per user, best of ``repeat`` rounds.
    Random neighbours: a user's rows rarely overlap, so the product has ~plays x neighbours entries (real
    neighbour lists overlap more, which costs less). The smallest shapes (200 entries over 2k candidates) are a
    genre rail's: few of a user's neighbours among its candidates; the largest catalogue, 200k items, the
    reference deployment's (its accumulator and marks no longer fit the caches)."""
    import numpy as np
    import scipy.sparse as sp

    threads = os.cpu_count() or 1
    rng = np.random.default_rng(7)

    def rows(n: int, width: int, c: int) -> sp.csr_matrix:
        cols = rng.integers(0, c, size=n * width)  # a repeat within a row (rare at these widths) is summed
        m = sp.csr_matrix((rng.random(n * width, dtype=np.float32) + 0.01, cols,
                           np.arange(0, n * width + 1, width)), shape=(n, c))
        m.sum_duplicates()
        return m

    data = {}
    for c in candidates:
        brands = rng.integers(0, 2000, size=c).astype(np.int32)
        for plays, width in shapes:
            U = rows(users, plays, c)
            data[(c, plays, width)] = (U, rows(c, width, c), U, brands)
    best = time_kernel({(c, k, plays, width): (*data[(c, plays, width)], k)
                        for c in candidates for k in ks for plays, width in shapes}, repeat=repeat)
    return [{"candidates": c, "k": k, "plays": plays, "neighbours": width, "users": users, "threads": threads,
             "cpu_us_per_user": round(cpu / users * 1e6, 3)} for (c, k, plays, width), (_, cpu) in best.items()]


def fit_ease_kernel(points: list[dict[str, Any]]) -> dict[str, float]:
    """Least-squares core_us = per_user + per_1k_candidates * C/1000 + per_k * k + per_m_products * P C/1e6
    over the EASE sweep's points, P = played items per user (each adds a row of C weights)."""
    if len({(p["candidates"], p["k"], p["plays"]) for p in points}) < 5:
        raise CoefficientsError("the EASE kernel fit needs at least 5 distinct (candidates, k, played items) points")
    return _fit_plane(EASE_TERMS, [[1.0, p["candidates"] / 1000.0, float(p["k"]), p["plays"] * p["candidates"] / 1e6]
                                   for p in points], [p["cpu_us_per_user"] for p in points])


def ease_kernel_sweep(candidates: tuple[int, ...] = (2_000, 5_000, 10_000, 20_000), ks: tuple[int, ...] = (50, 100),
                      plays: tuple[int, ...] = (10, 25, 50), users: int = 1_024,
                      repeat: int = 2) -> list[dict[str, Any]]:
    """The top-K kernel scoring EASE's representation, with the precompute's settings (as :func:`kernel_sweep`):
    each user a sparse row of ``plays`` played items (excluded from the list), the item side dense
    ``candidates x candidates`` weights (EASE's ``B``, every item a candidate), at each (candidates, k,
    plays): CPU microseconds per user, best of ``repeat`` rounds. EASE holds at most ~26k items at its
    default memory limit, so the sweep stops at 20k."""
    import numpy as np
    import scipy.sparse as sp

    threads = os.cpu_count() or 1
    rng = np.random.default_rng(11)
    data = {}
    for c in candidates:
        weights = rng.random((c, c), dtype=np.float32)
        weights -= 0.5  # EASE's weights have both signs
        brands = rng.integers(0, 2000, size=c).astype(np.int32)
        for n in plays:
            cols = np.stack([rng.choice(c, size=n, replace=False) for _ in range(users)]).ravel()
            U = sp.csr_matrix((np.ones(users * n, np.float32), cols, np.arange(0, users * n + 1, n)), shape=(users, c))
            U.sort_indices()
            data[(c, n)] = (U, weights, U, brands)
    best = time_kernel({(c, k, n): (*data[(c, n)], k) for c in candidates for k in ks for n in plays}, repeat=repeat)
    return [{"candidates": c, "k": k, "plays": n, "users": users, "threads": threads,
             "cpu_us_per_user": round(cpu / users * 1e6, 3)} for (c, k, n), (_, cpu) in best.items()]


def relevel_kernels(coef: dict[str, Any], dense_points: list[dict[str, Any]],
                    knn_points: list[dict[str, Any]] | None, how: str, *,
                    ease_points: list[dict[str, Any]] | None = None, factors_term: bool = True,
                    catalogue_points: list[dict[str, Any]] | None = None,
                    knn_catalogue_points: list[dict[str, Any]] | None = None) -> dict[str, Any]:
    """``coef`` with a ``kernel_knn`` / ``kernel_ease``, the dense kernel's factors term and the per-rail
    catalogue cost from sweeps run in one session (the dense sweep at several factor counts, the item-kNN and
    EASE sweeps, :func:`catalogue_sweep`; one whose points are None is left as it is, and
    ``factors_term=False`` keeps the file's factors term), put on the level of
    the file's dense kernel: x (the file's dense plane / this session's dense sweep at 64 factors, geometric
    mean over its points). The ratios are what the session measures; the absolute level stays the file's
    (anchored on a quiet reference run), as :func:`anchor` does for the dense kernel."""
    out = json.loads(json.dumps(coef))
    base = [pt for pt in dense_points if pt.get("factors", BASE_FACTORS) == BASE_FACTORS]
    f = _geomean([kernel_core_us(coef, pt["candidates"], pt["k"]) / pt["cpu_us_per_user"] for pt in base])
    if factors_term:
        out["kernel"]["factor_points"] = dense_points  # this session's dense sweep: the level and the factors term
        if any(pt.get("factors", BASE_FACTORS) != BASE_FACTORS for pt in dense_points):
            out["kernel"]["core_us"]["per_1k_candidates_per_factor"] = round(fit_factors_term(dense_points) * f, 5)
    for name, points, fit in (("kernel_knn", knn_points, fit_knn_kernel), ("kernel_ease", ease_points, fit_ease_kernel)):
        if points:
            out[name] = {"core_us": {key: round(v, 4) for key, v in _scaled(fit(points), f).items()},
                         "points": points, "level_factor": round(f, 4), "how": how}
    if catalogue_points:
        out["catalogue"] = {"core_us": fit_catalogue(coef, catalogue_points, level=f), "points": catalogue_points,
                            "level_factor": round(f, 4), "how": how}
    if knn_catalogue_points:  # beyond what the plan of the terms above counts (their session's, or the file's)
        out["knn_catalogue"] = {"core_us": fit_knn_catalogue(out, knn_catalogue_points, level=f),
                                "points": knn_catalogue_points, "level_factor": round(f, 4), "how": how}
    return out


def encoders(k_low: int = 25, k_high: int = 100, batch: int = 4096, repeat: int = 7) -> dict[str, Any]:
    """The real rec value encoders: bytes one more list item adds to a value (from two k), and microseconds
    per user at k = 50 (a precompute batch of ``batch`` users, best of ``repeat`` interleaved rounds)."""
    import numpy as np

    from skyrec.publish.codec import encode_packed_sets
    from skyrec.publish.resp import encode_rec_sets, fixed_width_fragments

    ids = [f"p{j:07d}" for j in range(20_000)]
    frags = fixed_width_fragments(ids)
    rng = np.random.default_rng(3)
    users = [f"u{i:08d}" for i in range(batch)]

    def lists(k: int) -> tuple[Any, Any, Any]:
        items = rng.integers(0, len(ids), size=(batch, k)).astype(np.int64)
        scores = -np.sort(-rng.random((batch, k)).astype(np.float32) * 10, axis=1)
        return items, scores, np.full(batch, k)

    def run(enc: str, data: tuple[Any, Any, Any]) -> bytes:
        if enc == "json":
            return encode_rec_sets("x:", users, frags, *data, 5)[0]
        return encode_packed_sets("x:", users, *data, 5, len(ids))[0]

    sizes = {enc: [len(run(enc, lists(k))) / batch for k in (k_low, k_high)] for enc in ENCODINGS}
    at50 = lists(50)
    best = dict.fromkeys(ENCODINGS, float("inf"))
    for _ in range(repeat):
        for enc in ENCODINGS:
            t0 = time.perf_counter()
            run(enc, at50)
            best[enc] = min(best[enc], time.perf_counter() - t0)
    return {"per_item": {enc: round((v[1] - v[0]) / (k_high - k_low), 3) for enc, v in sizes.items()},
            "encode_us": {enc: round(t / batch * 1e6, 3) for enc, t in best.items()}}

PATH_JOBS = ("compute_predictions", "create_redis_dump", "publish_predictions")


def _precompute_run(home: Path, users: int, encoding: str, *, items: int = 20_000,
                    jobs: tuple[str, ...] = PATH_JOBS, runs: int = 1, model: str = "als", plays: int = 20,
                    history: bool = False, history_items: int | None = None) -> dict[str, Any]:
    """compute_predictions -> create_redis_dump -> publish_predictions (or the first of ``jobs``) on a generated
    lake (the precompute benchmark's ``build_lake``, ``items`` items) with ``publish.encoding``; wall and
    process CPU per step, and the bytes (those of the whole path only). ``runs`` > 1 (``jobs`` other than the
    whole path): the jobs run that many times, each an hour later (a run of its own), and each step keeps the
    run with the least CPU time (``cpu_seconds_runs``: all of them). ``model``: the benchmark's ``als`` (dense
    factors) or ``knn`` (neighbour rows) artefact; ``plays`` per user. ``history``: the lake also holds an activity
    snapshot of those plays, so the job publishes every user's last ``history_items`` (default
    ``publish.history_items``) plays; the run then also records ``hist_keys``."""
    import datetime as dt
    import resource

    import redis

    from skyrec.config import load_config, project_root
    from skyrec.jobs.base import RunInfo, execute
    from skyrec.redis_local import temporary_redis
    from skyrec.storage import Lake

    bench_dir = project_root() / "benchmarks"
    if not (bench_dir / "bench_precompute.py").is_file():
        raise CoefficientsError(f"{bench_dir}/bench_precompute.py not found: calibrate from a source checkout")
    if str(bench_dir) not in sys.path:
        sys.path.insert(0, str(bench_dir))
    import bench_precompute

    def cpu() -> float:
        r = resource.getrusage(resource.RUSAGE_SELF)
        return r.ru_utime + r.ru_stime

    with temporary_redis(home / "serving") as serving:
        publish: dict[str, Any] = {"redis_url": serving.url, "encoding": encoding}
        if history_items is not None:
            publish["history_items"] = history_items
        cfg = load_config("local", overrides={"publish": publish, **bench_precompute.rail_on(model)},
                          environ={**os.environ, "SKYREC_HOME": str(home)})
        if not cfg.lake_url.startswith(str(home)):
            raise RuntimeError(f"calibration lake {cfg.lake_url} is not under its temporary home {home}")
        built = bench_precompute.build_lake(cfg, users, n_items=items, model=model, plays=plays, history=history)
        client = redis.Redis.from_url(serving.url)
        before = int(client.info("memory")["used_memory"])
        if runs > 1 and jobs == PATH_JOBS:
            raise ValueError("repeated runs are for single steps (the whole path's bytes are of one publication)")
        steps: dict[str, Any] = {}
        for i in range(runs):
            run = RunInfo(dag_id=f"precompute_recommendations_{model}_recommended_for_you_v1", run_id=f"plan-{i}",
                          task_id="plan", logical_date=dt.datetime(2026, 3, 1, 12, tzinfo=dt.UTC) + dt.timedelta(hours=i))
            for job in jobs:
                c0, t0 = cpu(), time.perf_counter()
                code, payload = execute(job, config=cfg, run=run, params={"variant": "recommended_for_you"})
                if code != 0:
                    raise RuntimeError(f"calibration {job} ({encoding}) failed: {payload.get('error')}")
                used_cpu = cpu() - c0
                step: dict[str, Any] = {
                    "seconds": time.perf_counter() - t0, "process_cpu_seconds": used_cpu,
                    "summary": {k: v for k, v in payload["summary"].items() if isinstance(v, int | float)}}
                tried = [*steps.get(job, {}).get("cpu_seconds_runs", []), round(used_cpu, 3)]
                if job not in steps or used_cpu < steps[job]["process_cpu_seconds"]:
                    steps[job] = step
                steps[job]["cpu_seconds_runs"] = tried
        lake = Lake.from_config(cfg)
        pred = lake.latest(cfg, "predictions", variant="recommended_for_you", version="v1")
        if pred is None:
            raise RuntimeError("calibration: predictions not committed")
        run_out = {"users": users, "k": int(pred.meta.get("k", 50)), "encoding": encoding, "steps": steps,
                   "plays": plays, "history_items": cfg.publish.history_items if history else 0,
                   "hist_keys": int(pred.meta.get("hist_keys", 0)),
                   "candidates": int(steps["compute_predictions"]["summary"]["candidates"]),
                   "items_per_user": round(built["seen_nnz"] / users, 3), "neighbours": built.get("neighbours")}
        if jobs != PATH_JOBS:
            client.close()
            return run_out
        used = int(client.info("memory")["used_memory"]) - before
        # the publication's keys that do not grow with users (items hash with the item table, fallback, users
        # sample, pointers): MEMORY USAGE of every key that is not a user's list
        fixed = sum(int(client.memory_usage(key, samples=0) or 0) for key in client.scan_iter(count=10_000)
                    if b":rec:" not in key and b":hist:" not in key and b":also:" not in key)
        client.close()
        dump = lake.latest(cfg, "redis_dump", variant="recommended_for_you", version="v1")
        if dump is None:
            raise RuntimeError("calibration: redis_dump not committed")
        parquet = [f for f in pred.files if f.path.endswith(".parquet")]
        return {**run_out, "users_with_recs": int(pred.meta["users_with_recs"]),
                "redis_used_memory_delta": used, "redis_fixed_keys_bytes": fixed,
                "parquet_bytes": sum(f.size for f in parquet), "prediction_rows": sum(f.rows or 0 for f in parquet),
                "resp_bytes": sum(f.size for f in pred.files if f.path.endswith(".resp")),
                "rdb_bytes": sum(f.size for f in dump.files)}


def catalogue_sweep(items: tuple[int, ...] = (20_000, 100_000, 200_000), users: int = 500,
                    encoding: str = "packed", runs: int = 3) -> list[dict[str, Any]]:
    """The compute step's cost per rail that grows with the catalogue: ``compute_predictions`` on generated
    lakes (the precompute benchmark's ``build_lake``: a 64-factor ALS artefact, every item a candidate, no
    "more like this") of ``users`` users and each catalogue size, so that the users' work is small; its
    process CPU seconds and wall seconds per size, the least of ``runs`` runs (the first in a process also
    loads code: 0.2 vs 0.9 s at 20k items, measured). :func:`fit_catalogue` takes the users' kernel out."""
    return _compute_sweep(items, users, encoding, runs, model="als")


def _compute_sweep(items: tuple[int, ...], users: int, encoding: str, runs: int, *, model: str) -> list[dict[str, Any]]:
    """``compute_predictions`` on a generated lake of ``users`` users and each of ``items`` (every item a
    candidate, ``model``'s artefact), the least process CPU of ``runs`` runs; an item-kNN point also holds the
    artefact's played items per user and neighbours per item (what the plan of it needs)."""
    import tempfile

    points = []
    for n in items:
        with tempfile.TemporaryDirectory(prefix=f"skyrec-plan-{model}-catalogue-") as tmp:
            run = _precompute_run(Path(tmp), users, encoding, items=n, jobs=("compute_predictions",), runs=runs,
                                  model=model)
        step = run["steps"]["compute_predictions"]
        shape = {"plays": run["items_per_user"], "neighbours": run["neighbours"]} if model == "knn" else {}
        points.append({"items": n, "users": users, "k": run["k"], "candidates": run["candidates"], **shape,
                       "cpu_s": round(step["process_cpu_seconds"], 3), "seconds": round(step["seconds"], 3),
                       "cpu_s_runs": step["cpu_seconds_runs"]})
    return points


def fit_catalogue(coef: dict[str, Any], points: list[dict[str, Any]], level: float = 1.0) -> dict[str, float]:
    """Core-microseconds per model item of the compute step's per-rail cost: the slope of its CPU seconds over
    the catalogue sizes, less its users' kernel at each size (the coefficients' dense plane / ``level``, the
    points' session on the coefficients' level: see :func:`relevel_kernels`), put on the coefficients' level."""
    line = [(pt["items"], pt["cpu_s"] - pt["users"] * kernel_core_us(coef, pt["candidates"], pt["k"]) / level / 1e6)
            for pt in points]
    if len({n for n, _ in line}) < 2:
        raise CoefficientsError("the catalogue cost needs runs at two or more catalogue sizes")
    return {"per_item": round(_line(line)[1] * 1e6 * level, 4)}


def knn_catalogue_sweep(items: tuple[int, ...] = (20_000, 100_000, 200_000), users: int = 20_000,
                        runs: int = 2) -> list[dict[str, Any]]:
    """item-kNN's compute per user as the candidates grow, measured on the job itself: ``compute_predictions`` on
    generated lakes (the precompute benchmark's ``build_lake`` with its item-kNN artefact: ~20 played items per
    user, 70 neighbours per item, every item a candidate, no "more like this") of ``users`` users at each
    catalogue size, the least process CPU of ``runs`` runs. The synthetic kernel sweep misses part of this
    growth (on the job, the item side and the accumulator leave the caches; the predictions' Parquet carries a
    dictionary of the candidates): :func:`fit_knn_catalogue` keeps what the plan does not already count."""
    return _compute_sweep(items, users, "packed", runs, model="knn")


def fit_knn_catalogue(coef: dict[str, Any], points: list[dict[str, Any]], level: float = 1.0) -> dict[str, float]:
    """Core-microseconds per user per 1,000 candidates that item-kNN's compute costs beyond what the plan of
    ``coef`` (without this term) counts: at each point, the job's CPU (x ``level``: the coefficients' level,
    see :func:`relevel_kernels`) less the plan's compute core-seconds and fixed seconds of the same inputs, per
    user; the slope of that over the candidates (least squares, floored at 0)."""
    import numpy as np

    if len({pt["candidates"] for pt in points}) < 2:
        raise CoefficientsError("item-kNN's growth with the candidates needs runs at two or more catalogue sizes")
    base = {key: v for key, v in coef.items() if key != "knn_catalogue"}
    xs, ys = [], []
    for pt in points:
        inputs = PlanInputs(users=pt["users"], candidates=pt["candidates"], k=pt["k"], plays_per_user=pt["plays"],
                            items_per_user=pt["plays"], model="knn", kernel="neighbours", neighbours=pt["neighbours"])
        f = plan(inputs, base)["figures"]
        xs.append(pt["candidates"] / 1000.0)
        ys.append((pt["cpu_s"] * level - f["compute_core_s"] - f["compute_fixed_core_s"]) * 1e6 / pt["users"])
    slope = float(np.polyfit(np.array(xs), np.array(ys), 1)[0])
    return {"per_user_per_1k_candidates": round(max(0.0, slope), 4)}


def activity_bytes_per_play(home: Path, users: int = 20_000, events_per_user: float = 20.0) -> dict[str, Any]:
    """Committed activity snapshot bytes per row: ``skyrec generate``'s activity for one day through the
    ``backfill_activity`` job (the ingest path's output)."""
    import datetime as dt

    import pyarrow.parquet as pq

    from skyrec.config import load_config
    from skyrec.data.generate import generate
    from skyrec.data.lakeio import write_parquet
    from skyrec.data.schemas import CATALOGUE
    from skyrec.jobs.base import RunInfo, execute
    from skyrec.storage import Lake, Producer

    end = dt.datetime(2026, 3, 1, tzinfo=dt.UTC)
    cfg = load_config("local", overrides={"storage": {"lake": f"{home}/lake", "state": f"{home}/state"},
                                          "source": {"url": f"{home}/source"}},
                      environ={**os.environ, "SKYREC_HOME": str(home)})
    generate(cfg, users=users, items=20_000, days=1, events_per_user=events_per_user, seed=11, end=end.isoformat(),
             progress=False, metadata=False)
    truth = pq.read_table(f"{cfg.source_url}/_truth/catalogue.parquet").select(CATALOGUE.names)
    lake = Lake.from_config(cfg)
    with lake.stage("catalogue", cfg.dataset_path("catalogue", run_key="20260301T000000"), Producer()) as stage:
        write_parquet(stage, "catalogue.parquet", truth)
        stage.commit({})
    code, payload = execute("backfill_activity", config=cfg, overrides=("volume",),
                            params={"start": (end - dt.timedelta(days=1)).isoformat(), "end": end.isoformat()},
                            run=RunInfo(dag_id="plan", run_id="plan", task_id="backfill_activity", logical_date=end,
                                        interval_start=end - dt.timedelta(hours=1), interval_end=end))
    if code != 0:
        raise RuntimeError(f"calibration backfill_activity failed: {payload.get('error')}")
    snap = lake.latest(cfg, "activity_snapshot")
    if snap is None or not snap.rows:
        raise RuntimeError("calibration: no activity snapshot committed")
    size = sum(f.size for f in snap.files if f.path.endswith(".parquet"))
    return {"rows": snap.rows, "bytes": size, "bytes_per_play": round(size / snap.rows, 2)}


def history_sweep(users: int = 200_000, plays: tuple[int, ...] = (20, 40), history_items: tuple[int, ...] = (5, 10),
                  repeat: int = 2, progress: Any = print) -> dict[str, Any]:
    """What the history step costs, measured on the path: the precompute path (packed, the ALS artefact, 20k
    items) on the same generated lake with and without its activity snapshot, at each of ``plays`` per user
    (``publish.history_items`` = the larger of ``history_items``) and at the smaller ``history_items`` (the
    value's bytes per play), after a warm-up run, each case ``repeat`` times in turn; per case its bytes (Redis,
    RESP, RDB), ``hist`` keys and per step the least seconds (the compute step: the least CPU seconds).
    Then the older plays found in "more like this" lists (``also_played``), the history benchmark's shard
    (``benchmarks/bench_history.py``: 20 items a list) at each of ``plays``: its CPU over the plain step's."""
    import tempfile

    from skyrec.config import project_root

    bench_dir = project_root() / "benchmarks"
    if str(bench_dir) not in sys.path:
        sys.path.insert(0, str(bench_dir))
    import bench_history

    top, low = max(history_items), min(history_items)
    progress("history: a warm-up run (code loading and compilation are not the step's cost)")
    with tempfile.TemporaryDirectory(prefix="skyrec-plan-history-") as tmp:
        _precompute_run(Path(tmp), min(users, 5_000), "packed", plays=min(plays), history=True)
    cases = [(n, h, top) for n in plays for h in (False, True)] + [(min(plays), True, low)]
    best: dict[tuple[int, bool, int], dict[str, Any]] = {}
    for i in range(repeat):  # alternating cases, so that background load hits each alike; the least of each
        for n, h, items in cases:
            progress(f"history ({i + 1}/{repeat}): precompute path, {users:,} users, {n} plays each, "
                     + (f"history_items {items}" if h else "no history"))
            with tempfile.TemporaryDirectory(prefix="skyrec-plan-history-") as tmp:
                run = _precompute_run(Path(tmp), users, "packed", plays=n, history=h, history_items=items)
            kept = best.setdefault((n, h, items), run)
            for job, step in run["steps"].items():
                key = "process_cpu_seconds" if job == "compute_predictions" else "seconds"
                if step[key] < kept["steps"][job][key]:
                    kept["steps"][job] = step
    runs = list(best.values())
    also = []
    for n in plays:
        progress(f"history: also_played on one shard, {users:,} users, {n} plays each")
        m = bench_history.measure(users=users, items=20_000, plays=n)
        also.append({"plays": n, "users": users, "cpu_seconds": m["cpu_seconds"], "value_bytes": m["value_bytes"],
                     "redis_bytes": m["redis_bytes"], "users_named": m["users_with_older_plays_named"]})
    return {"runs": runs, "also_played": also}


def fit_history(sweep: dict[str, Any], encodings: dict[str, Any]) -> dict[str, Any]:
    """The ``history`` section from :func:`history_sweep`: per ``hist`` key, the compute step's extra CPU (a line
    over plays per user), its Redis, RESP and RDB bytes (a line over the plays in a value), the dump's and the
    publication's extra seconds as a multiple of a user's list's in the same run (their levels stay those of
    the coefficients' ``encodings``, which come from a reference-scale run); ``also_played``'s extra CPU per
    user (a line over plays) and the growth of the values it names."""
    runs = sweep["runs"]
    fixed = {"create_redis_dump": encodings["packed"].get("dump_fixed_s", 0.0),
             "publish_predictions": encodings["packed"].get("publish_fixed_s", 0.0)}

    def pair(plays: int) -> tuple[dict[str, Any], dict[str, Any]]:
        top = max(r["history_items"] for r in runs)
        plain = next(r for r in runs if r["plays"] == plays and not r["history_items"])
        hist = next(r for r in runs if r["plays"] == plays and r["history_items"] == top)
        return plain, hist

    plays = sorted({r["plays"] for r in runs})
    cpu, points = [], []
    for n in plays:
        plain, hist = pair(n)
        keys = max(1, hist["hist_keys"])
        extra = (hist["steps"]["compute_predictions"]["process_cpu_seconds"]
                 - plain["steps"]["compute_predictions"]["process_cpu_seconds"]) / keys * 1e6
        cpu.append((float(n), extra))
        points.append({"plays": n, "users": hist["users"], "hist_keys": hist["hist_keys"],
                       "history_items": hist["history_items"], "compute_core_us_per_key": round(extra, 3)})
    line = _line(cpu)
    plain, hist = pair(plays[0])
    keys = max(1, hist["hist_keys"])
    ratios = {}
    for job, name in (("create_redis_dump", "dump_ratio"), ("publish_predictions", "publish_ratio")):
        per_user = max(1e-9, plain["steps"][job]["seconds"] - fixed[job]) / plain["users_with_recs"]
        extra = max(0.0, hist["steps"][job]["seconds"] - plain["steps"][job]["seconds"]) / keys
        ratios[name] = round(extra / per_user, 3)
    small = next(r for r in runs if r["history_items"] and r["history_items"] < hist["history_items"])
    sizes: dict[str, dict[str, float]] = {}
    for name, key in (("resp", "resp_bytes"), ("redis", "redis_used_memory_delta"), ("rdb", "rdb_bytes")):
        pts = [(float(r["history_items"]), (r[key] - plain[key]) / max(1, r["hist_keys"])) for r in (small, hist)]
        a, b = _line(pts)
        sizes[name] = {"per_key": round(a, 2), "per_play": round(b, 3)}
    also = sweep["also_played"]
    also_line = _line([(float(m["plays"]), (m["cpu_seconds"]["also_played"] - m["cpu_seconds"]["plain"])
                             / m["users"] * 1e6) for m in also])
    grow = [m["value_bytes"]["also_played"] / m["value_bytes"]["plain"] for m in also]
    grow_json = [m["value_bytes"]["also_played_json"] / m["value_bytes"]["plain"] for m in also
                 if "also_played_json" in m["value_bytes"]]
    held = [m["redis_bytes"] for m in also if m.get("redis_bytes")]  # what Redis holds, where measured
    redis_ratios = {f"also_played_redis_bytes_ratio{suffix}": round(sum(r[name] / r["plain"] for r in held)
                                                                    / len(held), 3)
                    for suffix, name in (("", "also_played"), ("_json", "also_played_json")) if held}
    named = [m["users_named"] / m["users"] for m in also if m.get("users_named") is not None]
    return {
        "measured_at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()), "machine": machine(),
        "core_us": {"per_user": round(line[0], 3), "per_play": round(line[1], 4)},
        # the step's extra CPU was within the noise of the compute step's (too few users measured): planned as 0
        **({"core_us_below_noise": True} if line == (0.0, 0.0) else {}),
        "also_played_core_us": {"per_user": round(also_line[0], 3), "per_play": round(also_line[1], 4)},
        # the growth with packed also ids (the default encoding), and with json ids
        "also_played_bytes_ratio": round(sum(grow) / len(grow), 3),
        **({"also_played_bytes_ratio_json": round(sum(grow_json) / len(grow_json), 3)} if grow_json else {}),
        **redis_ratios,
        # the share of users with older plays named in that measurement: the ratio holds at that share
        "also_played_users_share": round(sum(named) / len(named), 4) if named else 1.0,
        "bytes": sizes, **ratios,
        "basis": {"history_items": hist["history_items"], "users": hist["users"], "encoding": "packed"},
        "points": points, "also_played_points": also,
        "runs": [{key: r.get(key) for key in ("users", "plays", "history_items", "hist_keys", "users_with_recs",
                                              "redis_used_memory_delta", "resp_bytes", "rdb_bytes")}
                 | {"steps": {j: {"seconds": round(st["seconds"], 3),
                                  "process_cpu_seconds": round(st["process_cpu_seconds"], 3)}
                              for j, st in r["steps"].items()}} for r in runs],
    }


#: users of the history step's calibration runs (its dump and publish figures are a few tenths of a second below)
HISTORY_USERS = 200_000


def calibrate_history(users: int = HISTORY_USERS, path: str | Path | None = None, out: Path | None = None,
                      progress: Any = print) -> tuple[dict[str, Any], Path]:
    """Measure the history step (:func:`history_sweep`, :func:`fit_history`) and write it into the
    coefficients of ``path`` (default: those the plan reads), saved to ``out`` (default ``.bench/coefficients.json``);
    every other figure stays as it was."""
    coef, source = load_coefficients(path)
    coef = json.loads(json.dumps(coef))
    coef["history"] = fit_history(history_sweep(users, progress=progress), coef["encodings"])
    coef["history"]["how"] = f"skyrec plan --calibrate-history --calibrate-users {users}"
    target = out or bench_path()
    target.parent.mkdir(parents=True, exist_ok=True)
    target.write_text(json.dumps(_validate(coef, str(target)), indent=1) + "\n")
    return coef, target


def _line(points: list[tuple[float, float]]) -> tuple[float, float]:
    """(fixed, per unit) of a line through (n, y) points, least squares; fixed clamped at >= 0 (then the
    line through the origin and the largest point). Each is a cost, so never below 0: a difference that the
    measurement's noise put below 0 gives (0, 0)."""
    if len({n for n, _ in points}) < 2:
        n, y = max(points)
        return 0.0, max(0.0, y / n)
    import numpy as np

    a = np.array([[1.0, n] for n, _ in points])
    sol, *_ = np.linalg.lstsq(a, np.array([y for _, y in points]), rcond=None)
    if sol[0] < 0 or sol[1] <= 0:
        n, y = max(points)
        return 0.0, max(0.0, y / n)
    return float(sol[0]), float(sol[1])


def derive(*, kernel_points: list[dict[str, Any]], runs: dict[str, list[dict[str, Any]]],
           encoder: dict[str, Any], activity: dict[str, Any], cores: int, reference: dict[str, Any] | None = None,
           how: str = "", knn_points: list[dict[str, Any]] | None = None,
           ease_points: list[dict[str, Any]] | None = None,
           catalogue_points: list[dict[str, Any]] | None = None,
           knn_catalogue_points: list[dict[str, Any]] | None = None) -> dict[str, Any]:
    """Coefficients from measurements: the kernel sweep, precompute runs of each encoding at two or more user
    counts (same session; each step = fixed seconds per rail + seconds per user, least squares), bytes per list
    item, the activity snapshot's bytes per play; item-kNN's growth with the candidates beyond what those
    coefficients plan (with the item-kNN kernel's points only)."""
    core = fit_kernel(kernel_points)
    if any(p.get("factors", BASE_FACTORS) != BASE_FACTORS for p in kernel_points):
        core["per_1k_candidates_per_factor"] = fit_factors_term(kernel_points)
    enc: dict[str, Any] = {}
    flat = [r for rs in runs.values() for r in rs]
    basis_k, basis_c = {r["k"] for r in flat}, {r["candidates"] for r in flat}
    if len(basis_k) != 1 or len(basis_c) != 1 or set(runs) != set(ENCODINGS):
        raise CoefficientsError(f"need runs of each encoding at one k and one candidate count (got {sorted(runs)} "
                                f"at k {sorted(basis_k)}, candidates {sorted(basis_c)})")
    k, c = basis_k.pop(), basis_c.pop()
    kern = kernel_core_us({"kernel": {"core_us": core}}, c, k)
    row_bytes = []
    for name, rs in runs.items():
        fit = {job: _line([(r["users_with_recs"], r["steps"][job]["seconds"]) for r in rs])
               for job in ("compute_predictions", "create_redis_dump", "publish_predictions")}
        big = max(rs, key=lambda r: r["users_with_recs"])
        n = big["users_with_recs"]
        # compute: process CPU time (the kernel threads' and the writers'), which a busy machine does not
        # inflate as it does wall time; the wall time follows from it on cores of one's own
        cpu_fit = _line([(r["users_with_recs"], r["steps"]["compute_predictions"]["process_cpu_seconds"]) for r in rs])
        fit["compute_predictions"] = cpu_fit
        compute_core_us = cpu_fit[1] * 1e6
        enc[name] = {
            "compute_core_us": round(compute_core_us, 3),
            "compute_overhead_core_us": round(max(0.0, compute_core_us - kern), 3),
            "compute_fixed_s": round(fit["compute_predictions"][0], 3),
            "dump_wall_us": round(fit["create_redis_dump"][1] * 1e6, 3),
            "dump_fixed_s": round(fit["create_redis_dump"][0], 3),
            "publish_wall_us": round(fit["publish_predictions"][1] * 1e6, 3),
            "publish_fixed_s": round(fit["publish_predictions"][0], 3),
            "redis_bytes": round((big["redis_used_memory_delta"] - big["redis_fixed_keys_bytes"]) / n, 1),
            "redis_fixed_bytes_per_candidate": round(big["redis_fixed_keys_bytes"] / c, 2),
            "resp_bytes": round(big["resp_bytes"] / n, 1), "rdb_bytes": round(big["rdb_bytes"] / n, 1),
            "value_bytes_per_item": encoder["per_item"][name], "encode_us": encoder["encode_us"][name],
        }
        row_bytes.append(big["parquet_bytes"] / max(1, big["prediction_rows"]))
    knn = ({"kernel_knn": {"core_us": {key: round(v, 4) for key, v in fit_knn_kernel(knn_points).items()},
                           "points": knn_points}} if knn_points else {})
    if ease_points:
        knn["kernel_ease"] = {"core_us": {key: round(v, 4) for key, v in fit_ease_kernel(ease_points).items()},
                              "points": ease_points}
    if catalogue_points:
        knn["catalogue"] = {"core_us": fit_catalogue({"kernel": {"core_us": core}}, catalogue_points),
                            "points": catalogue_points}
    out = {
        "format": FORMAT, "version": VERSION,
        "measured_at": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()), "machine": machine(), "how": how,
        "kernel": {"core_us": {key: round(v, 4) for key, v in core.items()}, "points": kernel_points},
        **knn,
        "encodings": enc,
        "lake": {"activity_bytes_per_play": activity["bytes_per_play"],
                 "prediction_row_bytes": round(sum(row_bytes) / len(row_bytes), 2)},
        "basis": {"users": sorted({r["users"] for r in flat}), "candidates": c, "k": k, "cores": cores,
                  "runs": runs, "activity": activity},
        "reference_run": reference,
    }
    if knn_catalogue_points and knn_points:
        out["knn_catalogue"] = {"core_us": fit_knn_catalogue(out, knn_catalogue_points),
                                "points": knn_catalogue_points}
    return out

def _rebase(coef: dict[str, Any], enc: str, *, users: int, cores: int, candidates: int, k: int,
            seconds: dict[str, float], compute_cpu_s: float | None = None, redis_steps: bool = True) -> None:
    """Set ``enc``'s per-user step coefficients from one measured run (its fixed seconds per rail kept) and
    scale the other encoding's by the same factors (it keeps its measured ratio to ``enc``). With the compute
    step's process CPU time, its core-microseconds are CPU time and the run's utilisation of its cores (CPU
    time / (wall x cores)) is kept for the wall time. ``redis_steps=False`` leaves the dump and publish
    coefficients as they are (a run too small to rebase them on, see :func:`update_from_bench`). In place."""
    if k != coef["basis"]["k"]:
        raise CoefficientsError(f"a run at k {k} cannot rebase coefficients measured at k {coef['basis']['k']}")
    old = coef["encodings"][enc]
    new = dict(old)
    per = {job: max(0.0, seconds[job] - old.get(fixed, 0.0)) / users
           for job, fixed in (("compute_predictions", "compute_fixed_s"), ("create_redis_dump", "dump_fixed_s"),
                              ("publish_predictions", "publish_fixed_s"))}
    new["compute_core_us"] = per["compute_predictions"] * cores * 1e6
    coef["basis"]["compute_utilisation"] = 1.0
    if compute_cpu_s is not None:
        fixed = old.get("compute_fixed_s", 0.0)
        new["compute_core_us"] = max(0.0, compute_cpu_s - fixed) / users * 1e6
        busy = max(1e-9, (seconds["compute_predictions"] - fixed) * cores)
        coef["basis"]["compute_utilisation"] = min(1.0, max(0.01, (compute_cpu_s - fixed) / busy))
    new["compute_overhead_core_us"] = max(0.0, new["compute_core_us"] - kernel_core_us(coef, candidates, k))
    if redis_steps:
        new["dump_wall_us"] = per["create_redis_dump"] * 1e6
        new["publish_wall_us"] = per["publish_predictions"] * 1e6
    for other in ENCODINGS:
        if other == enc:
            continue
        o = dict(coef["encodings"][other])
        for key in ("dump_wall_us", "publish_wall_us"):
            o[key] = o[key] * new[key] / old[key] if old[key] else o[key]
        # compute_predictions differs between encodings only in the encoder: the same output overhead, plus
        # the difference of the encoders' measured cost (a ratio of two small, noisy overheads would not do)
        o["compute_overhead_core_us"] = max(0.0, new["compute_overhead_core_us"] + o.get("encode_us", 0.0)
                                            - new.get("encode_us", 0.0))
        o["compute_core_us"] = o["compute_overhead_core_us"] + kernel_core_us(coef, candidates, k)
        coef["encodings"][other] = {key: round(v, 3) if isinstance(v, float) else v for key, v in o.items()}
    coef["encodings"][enc] = {key: round(v, 3) if isinstance(v, float) else v for key, v in new.items()}


def _scale_kernels(coef: dict[str, Any], f: float) -> None:
    """Every kernel plane x ``f`` (a new level for this machine; the item-kNN and EASE kernels keep their
    measured ratios to the dense one)."""
    for name in ("kernel", *EXTRA_KERNELS):
        if coef.get(name):
            coef[name]["core_us"] = _scaled(coef[name]["core_us"], f)


def anchor(coef: dict[str, Any], reference: dict[str, Any],
           ratios: dict[str, float] | None = None) -> dict[str, Any]:
    """Coefficients whose absolute level is a recorded run's, keeping the calibration's shapes and ratios.

    ``reference``: ``inputs``/``measured`` of a precompute run (``compute_predictions_s``, ``create_redis_dump_s``,
    ``publish_predictions_s``) and ``kernel`` (users/s of the kernel benchmark of the same session at its
    candidates, k and threads). The kernel plane is rescaled to that users/s; the run's encoding gets its step
    coefficients from the run; the other encoding keeps the calibration's ratio to it. Bytes stay the
    calibration's. On a shared machine a short calibration's absolute times move with the load, its ratios
    much less: this puts the level of a quiet, long run under the calibration's shape. ``ratios`` (e.g.
    ``{"dump_wall_us": 0.7}``): the other encoding's step coefficients as these multiples of the reference
    encoding's, measured elsewhere (e.g. alternating runs of both encodings at a larger scale), instead of the
    calibration's."""
    out = json.loads(json.dumps(coef))
    kr = reference["kernel"]
    f = (kr["threads"] * 1e6 / kr["users_per_s"]) / kernel_core_us(coef, kr["candidates"], kr["k"])
    _scale_kernels(out, f)
    inp, m = reference["inputs"], reference["measured"]
    _rebase(out, inp["encoding"], users=inp["users"] * inp.get("rails", 1), cores=inp["cores"],
            candidates=inp["candidates"], k=inp["k"],
            seconds={job: m[f"{job}_s"] for job in ("compute_predictions", "create_redis_dump",
                                                    "publish_predictions")},
            compute_cpu_s=m.get("compute_cpu_s"))
    for key, ratio in (ratios or {}).items():
        for other in ENCODINGS:
            if other != inp["encoding"]:
                out["encodings"][other][key] = round(out["encodings"][inp["encoding"]][key] * ratio, 3)
    out["basis"] = {**out["basis"], "anchored_to": reference.get("source"), "kernel_level_factor": round(f, 4)}
    out["reference_run"] = reference
    return out


def calibrate(users: int = 60_000, out: Path | None = None, progress: Any = print,
              kernel_points: list[dict[str, Any]] | None = None,
              knn_points: list[dict[str, Any]] | None = None,
              ease_points: list[dict[str, Any]] | None = None,
              catalogue_points: list[dict[str, Any]] | None = None,
              knn_catalogue_points: list[dict[str, Any]] | None = None,
              history_users: int = 0) -> tuple[dict[str, Any], Path]:
    """Measure the coefficients on this machine (short runs, one at a time): the kernel sweep, precompute runs
    of ``users`` // 3 and ``users`` users per encoding (alternating encodings, so background load hits both
    alike), bytes per list item, the activity snapshot's bytes per play, the history step (:func:`history_sweep`
    of ``history_users``, default the larger of ``users`` and :data:`HISTORY_USERS`). Keeps the reference run
    recorded in the committed coefficients. Writes ``out`` (default ``.bench/coefficients.json``)."""
    import tempfile

    current = json.loads(DEFAULT_PATH.read_text()) if DEFAULT_PATH.is_file() else {}
    if kernel_points is None:
        progress("kernel sweep (candidates 5k/20k/50k x k 50/100 x 32/64/128 factors)")
        kernel_points = kernel_sweep(factors=(32, BASE_FACTORS, 128))
    points = kernel_points
    if knn_points is None:
        progress("item-kNN kernel sweep (candidates 5k/20k/50k x k 50/100 x played items x neighbours)")
        knn_points = knn_kernel_sweep()
    if ease_points is None:
        progress("EASE kernel sweep (candidates 2k-20k x k 50/100 x played items)")
        ease_points = ease_kernel_sweep()
    if catalogue_points is None:
        progress("the compute step's per-rail catalogue cost (20k/100k/200k items, 500 users)")
        catalogue_points = catalogue_sweep()
    if knn_catalogue_points is None:
        progress("item-kNN's compute per user as the candidates grow (20k/100k/200k items, 20,000 users)")
        knn_catalogue_points = knn_catalogue_sweep()
    runs: dict[str, list[dict[str, Any]]] = {enc: [] for enc in ENCODINGS}
    for n in (max(1_000, users // 3), users):
        for enc in ENCODINGS:
            progress(f"precompute path, {n:,} users, {enc}")
            with tempfile.TemporaryDirectory(prefix="skyrec-plan-") as tmp:
                runs[enc].append(_precompute_run(Path(tmp), n, enc))
    progress("activity snapshot bytes per play")
    with tempfile.TemporaryDirectory(prefix="skyrec-plan-activity-") as tmp:
        activity = activity_bytes_per_play(Path(tmp))
    coef = derive(kernel_points=points, runs=runs, encoder=encoders(), activity=activity,
                  cores=os.cpu_count() or 1, reference=current.get("reference_run"),
                  how=f"skyrec plan --calibrate --calibrate-users {users}", knn_points=knn_points,
                  ease_points=ease_points, catalogue_points=catalogue_points,
                  knn_catalogue_points=knn_catalogue_points)
    n = history_users or max(users, HISTORY_USERS)
    coef["history"] = fit_history(history_sweep(n, progress=progress), coef["encodings"])
    coef["history"]["how"] = f"skyrec plan --calibrate (history runs of {n:,} users)"
    # The Redis-bound steps cost more per key at millions of keys than these short runs measure (BENCHMARKS.md,
    # "Scale — capacity plan"): their per-user coefficients stay those of the committed, reference-scale file;
    # the calibration's are kept beside them for reference.
    for enc, e in coef["encodings"].items():
        base = (current.get("encodings") or {}).get(enc)
        if base:
            for key in ("dump_wall_us", "publish_wall_us"):
                e[f"{key}_calibration"] = e[key]
                e[key] = base[key]
    if current.get("encodings"):
        coef["how"] += "; dump and publish per-user costs kept from the committed (reference-scale) coefficients"
    target = out or bench_path()
    target.parent.mkdir(parents=True, exist_ok=True)
    target.write_text(json.dumps(coef, indent=1) + "\n")
    return coef, target


# ---- the benchmarks' hook -------------------------------------------------------------------------------------

def update_from_bench(out_dir: Path, scale: str, ran: list[str], encoding: str) -> Path | None:
    """After ``skyrec bench``: fold the fresh records of this run into ``.bench/coefficients.json``.

    * ``kernel``: the kernel plane is rescaled so that it equals the measured users/s at the record's
      (candidates, k) (the sweep's shape is kept; the level is this session's);
    * ``precompute``: the step coefficients of ``encoding`` (the one the benchmark published with) from its
      record — compute from its process CPU time, and Redis bytes per user-rail, at any scale; the dump and
      publish steps only from a ``reference``-scale record, because their per-user cost grows with the key
      count (200k-user runs predict 0.6x / 0.45x of the measured 3.5M-user figures); the other encoding keeps
      its ratio to this one from the previous coefficients;
    * ``encoding``: Redis bytes per user-rail of both encodings.
    Returns the file written, or None when nothing this run measured feeds the plan."""
    records = {}
    for name in ("kernel", "precompute", "encoding"):
        p = out_dir / f"{name}.{scale}.json"
        if name in ran and p.is_file():
            rec = json.loads(p.read_text())
            if rec.get("status") == "ok":
                records[name] = rec
    if not records:
        return None
    target = out_dir / "coefficients.json"
    coef, _ = load_coefficients(target if target.is_file() else DEFAULT_PATH)
    sources = dict(coef.get("source") or {})
    if "kernel" in records:
        res = records["kernel"]["result"]
        measured = res["threads"] * 1e6 / res["users_per_s"]["kernel"]
        planned = kernel_core_us(coef, res["candidates"], res["k"])
        f = measured / planned
        _scale_kernels(coef, f)
        sources["kernel"] = f"{records['kernel']['machine']['when']} kernel.{scale} (level x{f:.3f})"
    if "precompute" in records:
        res = records["precompute"]["result"]
        steps, n, cores = res["steps"], res["users"], res["cores"]
        _rebase(coef, encoding, users=n, cores=cores, candidates=res["candidates"], k=res["k"],
                seconds={job: steps[job]["seconds"] for job in ("compute_predictions", "create_redis_dump",
                                                                "publish_predictions")},
                compute_cpu_s=steps["compute_predictions"].get("process_cpu_seconds"),
                redis_steps=scale == "reference")
        mb = (steps.get("serving_redis") or {}).get("used_memory_mb")
        if mb:  # the serving Redis after one publication: the rec keys and the publication's fixed keys
            e = coef["encodings"][encoding]
            e["redis_bytes"] = round(max(0.0, mb * 1e6 - res["candidates"] * e.get(
                "redis_fixed_bytes_per_candidate", 0.0)) / n, 1)
        coef["basis"] = {**coef["basis"], "rebased_on": f"precompute.{scale}: {n:,} users, {cores} cores"}
        sources["precompute"] = (f"{records['precompute']['machine']['when']} precompute.{scale} ({encoding}): "
                                 + ("every step" if scale == "reference" else
                                    "compute and Redis bytes; dump and publish kept (per-user costs of the "
                                    "Redis-bound steps grow with scale: BENCHMARKS.md, 'Scale — capacity plan')"))
    if "encoding" in records:
        mem = records["encoding"]["result"]["memory"]
        for enc in ENCODINGS:
            if enc in mem:
                coef["encodings"][enc]["redis_bytes"] = mem[enc]["bytes_per_user_rail"]
        sources["encoding"] = f"{records['encoding']['machine']['when']} encoding.{scale}"
    coef["source"] = sources
    coef["measured_at"] = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())
    coef["machine"] = machine()
    target.write_text(json.dumps(_validate(coef, str(target)), indent=1) + "\n")
    return target


# ---- the command ---------------------------------------------------------------------------------------------

def model_kernel(config: Any, name: str) -> dict[str, Any]:
    """How precompute's kernel scores the configured model ``name``: ``{"model", "kernel", "neighbours" |
    "factors"}``. item-kNN: sparse rows of ``neighbours`` (+ ``series_depth`` when its series term is on)
    entries; EASE: its dense item-item weights (``weights_limit_gb``: its memory guard); every other model
    scores dense factors (``factors``, LightFM's ``no_components``)."""
    from skyrec.models import model_class
    from skyrec.models.ease import EASEModel
    from skyrec.models.knn import ItemKNNModel

    if name not in config.models:
        raise ValueError(f"model {name!r} is not configured (models: {', '.join(sorted(config.models))})")
    cls = model_class(config, name)
    params = {**getattr(cls, "defaults", {}), **config.models[name].params}
    if issubclass(cls, EASEModel):
        return {"model": name, "kernel": "item_weights", "weights_limit_gb": float(params["memory_limit_gb"])}
    if issubclass(cls, ItemKNNModel):
        width = int(params["neighbours"]) + (int(params["series_depth"]) if float(params["series_weight"]) > 0 else 0)
        return {"model": name, "kernel": "neighbours", "neighbours": width}
    # the representation's width, to within the bias columns BPR and LightFM add; popularity scores one column
    return {"model": name, "kernel": "factors", "factors": int(params.get("factors", params.get("no_components", 1)))}


def inputs_from_config(config: Any, **given: Any) -> PlanInputs:
    """PlanInputs from the options given (None: not given) with defaults from the configuration: rails = the
    configured variants, model = the rails' (with item-kNN's neighbours), k = ``precompute.k``, encoding =
    ``publish.encoding``, ``publish.keep_versions``, ``publish.history_items``, ``jobs.cost`` rates, ``jobs.dataflow`` machine type and max
    workers; cores and memory of this machine."""
    name = given.pop("model", None)
    if name is None:
        models = sorted({v.model for v in config.variants.values()})
        if len(models) != 1:
            raise ValueError(f"the rails use several models ({', '.join(models)}): plan them one at a time "
                             "with --model and --rails")
        name = models[0]
    df = config.jobs.dataflow
    size = machine_type_size(df.machine_type)
    mem = machine().get("memory_gib")
    values: dict[str, Any] = {
        "rails": len(config.variants), "k": config.precompute.k, "encoding": config.publish.encoding,
        "keep_versions": config.publish.keep_versions, "cores": os.cpu_count() or 1,
        "machine_memory_gb": round(mem * 2**30 / 1e9, 1) if mem else 24.0,
        "vcpu_hour": config.jobs.cost.vcpu_hour, "gb_hour": config.jobs.cost.gb_hour,
        "dataflow_max_workers": df.max_workers,
    }
    if size:
        values["dataflow_vcpus_per_worker"], values["dataflow_memory_gb_per_worker"] = size
    values["similar_k"] = config.precompute.similar_k  # each rail's (variants.<name>.similar_k may differ)
    values["history_items"] = config.publish.history_items
    values.update(model_kernel(config, name))
    values.update({k: v for k, v in given.items() if v is not None})
    return PlanInputs(**values)


def json_ready(value: Any) -> Any:
    if isinstance(value, float):
        return round(value, 3)
    if isinstance(value, dict):
        return {k: json_ready(v) for k, v in value.items()}
    if isinstance(value, list):
        return [json_ready(v) for v in value]
    return value


def cores_to_fit(inputs: PlanInputs, coef: dict[str, Any], max_cores: int = 4096) -> int | None:
    """The fewest cores (powers of two) whose whole path fits ``interval_hours``; None when even ``max_cores``
    do not (the serial publication into one Redis alone is longer than the interval)."""
    n = 1
    while n <= max_cores:
        f = plan(PlanInputs(**{**asdict(inputs), "cores": n}), coef)["figures"]
        if f["whole_path_s"] <= inputs.interval_hours * 3600:
            return n
        n *= 2
    return None


#: the shipped rails' model as :func:`model_kernel` reads ``config/base.yaml`` (a test keeps them equal)
SHIPPED_MODEL: dict[str, Any] = {"model": "knn", "kernel": "neighbours", "neighbours": 75}
FACTORS_MODEL: dict[str, Any] = {"model": "als", "kernel": "factors", "factors": 128}
#: precompute.similar_k as shipped: every rail precomputes "more like this" for every model item
SHIPPED_SIMILAR_K = 20
#: publish.history_items as shipped: every rail publishes each user's last 10 plays
SHIPPED_HISTORY_ITEMS = 10

SCENARIOS = ((3_500_000, 6), (3_500_000, 20), (10_000_000, 6), (10_000_000, 20), (100_000_000, 6),
             (100_000_000, 20))
#: the shipped rails' candidates as shares of the all-items rail's, as ``skyrec plan --from-lake`` read them
#: on ``make demo``'s lake (2026-12-01: 1,128 candidates for recommended_for_you; 130-214 for the genre rails)
SHIPPED_MIX = {"recommended_for_you": 1.0, "gripping_stories": 214 / 1128, "thought_provoking": 177 / 1128,
               "comedy_featured": 158 / 1128, "drama_featured": 152 / 1128, "music_mixes": 130 / 1128}


def mix_markdown(coef: dict[str, Any], *, items: int = 20_000, cores: int = 2) -> str:
    """A table of docs/scale.md: the six shipped rails as they differ (:data:`SHIPPED_MIX` of ``items``
    candidates, the model's items all ``items``), put together by :func:`plan_rails`, against the same six
    planned as if each scored every item (the scenario tables)."""
    lines = ["| listeners | compute, 2 cores | dump + publish | whole path | compute if every rail scored every item |",
             "|---|---:|---:|---:|---:|"]
    for users in sorted({u for u, _ in SCENARIOS}):
        base = PlanInputs(users=users, candidates=items, items=items, cores=cores, similar_k=SHIPPED_SIMILAR_K,
                          history_items=SHIPPED_HISTORY_ITEMS, **SHIPPED_MODEL)
        mixed = plan_rails([(name, replace(base, candidates=max(base.k + 1, round(items * share))))
                            for name, share in SHIPPED_MIX.items()], coef)["figures"]
        flat = plan(replace(base, rails=len(SHIPPED_MIX)), coef)["figures"]
        lines.append(f"| {users / 1e6:g}M | {_dur(mixed['compute_predictions_s'])} | "
                     f"{_dur(mixed['create_redis_dump_s'] + mixed['publish_predictions_s'])} | "
                     f"{_dur(mixed['whole_path_s'])} | {_dur(flat['compute_predictions_s'])} |")
    return "\n".join(lines)


def scenarios_markdown(coef: dict[str, Any], *, encoding: str = "packed", cores: int = 2,
                       interval_hours: float = 24.0, redis_node_gb: float = 100.0,
                       machine_memory_gb: float = 24.0, rails_model: dict[str, Any] | None = None) -> str:
    """A table of docs/scale.md: the plan of each (listeners, rails) of :data:`SCENARIOS`, the rails on
    ``rails_model`` (default: the shipped one)."""
    head = ("| listeners x rails | compute, 2 cores | dump + publish | whole path, 2 cores | cores for 24 h "
            "| Dataflow (compute) | Redis: one set / peak | lake per run | beyond one machine |\n"
            "|---|---:|---:|---:|---:|---:|---:|---:|---|")
    lines = [head]
    for users, rails in SCENARIOS:
        inp = PlanInputs(users=users, rails=rails, encoding=encoding, cores=cores, interval_hours=interval_hours,
                         redis_node_gb=redis_node_gb, machine_memory_gb=machine_memory_gb,
                         similar_k=SHIPPED_SIMILAR_K, history_items=SHIPPED_HISTORY_ITEMS,
                         **(rails_model or SHIPPED_MODEL))
        res = plan(inp, coef)
        f = res["figures"]
        fit = cores_to_fit(inp, coef)
        limits = "; ".join(lim["what"] for lim in res["limits"]) or "fits"
        lines.append(
            f"| {users / 1e6:g}M x {rails} | {_dur(f['compute_predictions_s'])} | "
            f"{_dur(f['create_redis_dump_s'] + f['publish_predictions_s'])} | {_dur(f['whole_path_s'])} | "
            f"{fit if fit else 'none (publish alone ' + _dur(f['publish_predictions_s']) + ')'} | "
            f"{f['dataflow_vcpu_s'] / 3600:,.1f} vCPU-h, {_dur(f['dataflow_wall_s'])}, {f['dataflow_cost']:,.2f} | "
            f"{_size(f['redis_publication_bytes'])} / {_size(f['redis_peak_bytes'])} | "
            f"{_size(f['lake_predictions_bytes_per_run'])} | {limits} |")
    return "\n".join(lines)
