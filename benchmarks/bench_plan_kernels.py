"""``skyrec plan``'s kernels beyond the dense 64-factor plane: item-kNN's (the shipped rails'), EASE's and the
factors term, measured, put on the committed coefficients' level, and checked against precompute's kernel
scoring fitted models.

1. the dense kernel sweep of ``skyrec plan --calibrate`` (``plan.kernel_sweep``) at 32, 64 and 128 factors,
   before and after everything else: this session's level (its 64-factor points) and the factors term
   (``per_1k_candidates_per_factor``: the product's cost per candidate and factor beyond 64);
2. the item-kNN sweep (``plan.knn_kernel_sweep``: random sparse neighbour rows, 2k-200k candidates, k 50/100,
   4-50 played items x 50-200 entries per row) and the EASE sweep (``plan.ease_kernel_sweep``: dense
   item-item weights, 2k-20k candidates, k 50/100, 10-50 played items) and their planes; all put on the
   file's level by ``plan.relevel_kernels`` (x the file's dense plane / this session's 64-factor sweep);
3. the check, out of sample: the ALS default (128 factors), the item-kNN default (its series term and
   followed block, real overlapping neighbour lists) and, at 20k items, the EASE default fit on generated
   data (30,000 users, 20k and 100k items, and a genre rail's shape at 20k: an eighth of the brands' items
   as the candidates; ``bench_models.kernel_cost``) and scored by ``topk_threaded`` with
   the precompute's settings; their CPU microseconds per user (x the same level factor) against the plan at
   that point -- kNN from the exact multiply-adds, from the plan's own inputs (played items x ``neighbours +
   series_depth``) and from the product's actual result entries; ALS at its 128 factors and, for
   comparison, at the plane's 64; EASE from its inputs (played items x candidates);
4. the compute step's per-rail cost that grows with the catalogue (``plan.catalogue_sweep``: the job with 500
   users at 20k, 100k and 200k items, its users' kernel taken out): core-microseconds per model item, on the
   file's level like the kernels;
5. item-kNN's compute per user as the candidates grow, measured on the job (``plan.knn_catalogue_sweep``: 20,000
   users at 20k, 100k and 200k items, an item-kNN artefact, every item a candidate): what the plan of the
   terms above does not count, per user and 1,000 candidates beyond the basis run's (``knn_catalogue``).

``python benchmarks/bench_plan_kernels.py`` (also ``skyrec bench --only plan_kernels``) prints the figures as
JSON; ``python benchmarks/bench_plan_kernels.py --write [--keep-factors]`` also stores the releveled terms in
``src/skyrec/plan_coefficients.json`` (``--keep-factors``: all but the factors term, e.g. when only the
item-kNN or EASE kernel changed; ``--catalogue-only``: the dense sweep at 64 factors for the level and the
catalogue costs (4 and 5), nothing else measured or written; ``--knn-catalogue-only``: 5 alone).
"""
from __future__ import annotations

import json
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))

from bench_models import kernel_cost

from skyrec import plan as p

#: items per user x entries per row as ``skyrec plan`` derives them from the shipped kNN's parameters
SHIPPED_WIDTH = p.SHIPPED_MODEL["neighbours"]


def main(scale: str = "small", write: bool = False, keep_factors: bool = False,
         catalogue_only: bool = False, knn_catalogue_only: bool = False) -> dict[str, Any]:
    """``scale`` (``skyrec bench`` passes it) does not change the sizes: the sweep and the check are minutes
    at any scale. ``write``: store the releveled terms in the committed coefficients (``keep_factors``: all but
    the dense kernel's factors term, which stays the file's; ``catalogue_only``: only the catalogue costs;
    ``knn_catalogue_only``: only item-kNN's per-user growth with the candidates)."""
    out: dict[str, Any] = {"when": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
                           "uptime_before": subprocess.run(["uptime"], capture_output=True, text=True).stdout.strip()}
    coef, path = p.load_coefficients(p.DEFAULT_PATH)
    if catalogue_only or knn_catalogue_only:
        return _catalogue_only(out, coef, path, write, ("catalogue", "knn_catalogue") if catalogue_only
                               else ("knn_catalogue",))
    sweep = {"factors": (32, p.BASE_FACTORS, 128)}
    dense = p.kernel_sweep(**sweep)
    knn = p.knn_kernel_sweep()
    ease = p.ease_kernel_sweep()
    catalogue = p.catalogue_sweep()
    knn_catalogue = p.knn_catalogue_sweep()
    # EASE only where its memory guard admits the catalogue (~16k items with plays; 63k are refused)
    # and a genre rail's shape: the candidates an eighth of the brands' items, most of a user's neighbours not
    # among them (``skyrec plan --items``: the model's items, of which the candidates are some)
    real = [kernel_cost(30_000, 20_000, models=("als", "knn", "ease")), kernel_cost(30_000, 100_000),
            kernel_cost(30_000, 20_000, brand_fraction=0.125)]
    dense += p.kernel_sweep(**sweep)
    how = "benchmarks/bench_plan_kernels.py --write" + (" --keep-factors" if keep_factors else "") + ", " + out["when"]
    new = p.relevel_kernels(coef, dense, knn, how=how, ease_points=ease, factors_term=not keep_factors,
                            catalogue_points=catalogue, knn_catalogue_points=knn_catalogue)
    f = new["kernel_knn"]["level_factor"]
    out["catalogue"] = new["catalogue"]["core_us"]
    out["knn_catalogue"] = new["knn_catalogue"]["core_us"]
    out["kernel_knn"] = new["kernel_knn"]["core_us"]
    out["kernel_ease"] = new["kernel_ease"]["core_us"]
    out["per_1k_candidates_per_factor"] = new["kernel"]["core_us"]["per_1k_candidates_per_factor"]
    out["level_factor"] = f
    checks = []
    for r in real:
        m, a = r["models"]["knn"], r["models"]["als"]
        measured = m["cpu_us_per_user"] * f
        exact = p.knn_kernel_core_us(new, r["candidates"], 50, m["products_per_user"])
        # the plan's products from its inputs: played items x a row's entries among the candidates
        among = r["candidates"] / m["model_items"]
        from_inputs = p.knn_kernel_core_us(new, r["candidates"], 50, m["played_items_per_user"] * SHIPPED_WIDTH * among)
        actual = p.knn_kernel_core_us(new, r["candidates"], 50, m["products_per_user"], m["outputs_per_user"])
        als_measured = a["cpu_us_per_user"] * f
        als_plan = p.kernel_core_us(new, r["candidates"], 50, a["d"])
        als_plan_64 = p.kernel_core_us(new, r["candidates"], 50)
        checks.append({"items": r["items"], "model_items": m["model_items"], "candidates": r["candidates"],
                       "users": r["users"],
                       "knn": {"played_items_per_user": m["played_items_per_user"],
                               "products_per_user": m["products_per_user"],
                               "outputs_per_user": m["outputs_per_user"],
                               "zero_fill_share": m["zero_fill_share"],
                               "random_outputs_per_user": round(p.knn_outputs(r["candidates"],
                                                                              m["products_per_user"]), 1),
                               "measured_core_us": round(measured, 2),
                               "planned_core_us_from_inputs": round(from_inputs, 2),
                               "planned_core_us_exact_products": round(exact, 2),
                               "planned_core_us_actual_outputs": round(actual, 2),
                               "ratio_from_inputs": round(from_inputs / measured, 3),
                               "ratio_exact": round(exact / measured, 3),
                               "ratio_actual_outputs": round(actual / measured, 3)},
                       "als": {"factors": a["d"], "measured_core_us": round(als_measured, 2),
                               "planned_core_us": round(als_plan, 2), "ratio": round(als_plan / als_measured, 3),
                               "planned_core_us_at_64_factors": round(als_plan_64, 2),
                               "ratio_at_64_factors": round(als_plan_64 / als_measured, 3)}})
        e = r["models"].get("ease")
        if e:  # EASE from its inputs: played items (the same users' as kNN's) x candidates
            ease_measured = e["cpu_us_per_user"] * f
            ease_plan = p.ease_kernel_core_us(new, r["candidates"], 50, m["played_items_per_user"])
            checks[-1]["ease"] = {"measured_core_us": round(ease_measured, 2), "planned_core_us": round(ease_plan, 2),
                                  "ratio": round(ease_plan / ease_measured, 3)}
    out["checks"] = checks
    out["uptime_after"] = subprocess.run(["uptime"], capture_output=True, text=True).stdout.strip()
    if write:
        path.write_text(json.dumps(new, indent=1) + "\n")
        out["written"] = str(path)
    return out


def _catalogue_only(out: dict[str, Any], coef: dict[str, Any], path: Path, write: bool,
                    which: tuple[str, ...] = ("catalogue", "knn_catalogue")) -> dict[str, Any]:
    """The catalogue costs alone (``which``: the per-rail one, item-kNN's per-user one, or both), between two
    dense sweeps at 64 factors (this session's level); the sections not measured stay the file's."""
    dense = p.kernel_sweep()
    catalogue = p.catalogue_sweep() if "catalogue" in which else None
    knn_catalogue = p.knn_catalogue_sweep() if "knn_catalogue" in which else None
    dense += p.kernel_sweep()
    option = "--catalogue-only" if len(which) == 2 else f"--{which[0].replace('_', '-')}-only"
    how = f"benchmarks/bench_plan_kernels.py --write {option}, " + out["when"]
    new = p.relevel_kernels(coef, dense, None, how=how, factors_term=False, catalogue_points=catalogue,
                            knn_catalogue_points=knn_catalogue)
    out.update({name: new[name] for name in which})
    out["uptime_after"] = subprocess.run(["uptime"], capture_output=True, text=True).stdout.strip()
    if write:
        path.write_text(json.dumps(new, indent=1) + "\n")
        out["written"] = str(path)
    return out


if __name__ == "__main__":
    import argparse

    parser = argparse.ArgumentParser(description="skyrec plan's kernel terms beyond the dense 64-factor plane, "
                                                 "measured on this machine and checked (the module's doc)")
    parser.add_argument("--write", action="store_true",
                        help="store the releveled terms in src/skyrec/plan_coefficients.json (never by `skyrec bench`)")
    parser.add_argument("--keep-factors", action="store_true", help="with --write: keep the file's factors term")
    only = parser.add_mutually_exclusive_group()
    only.add_argument("--catalogue-only", action="store_true",
                      help="the dense sweep for the level and the two catalogue costs, nothing else")
    only.add_argument("--knn-catalogue-only", action="store_true",
                      help="the dense sweep for the level and item-kNN's per-user growth with the candidates")
    args = parser.parse_args()
    print(json.dumps(main(write=args.write, keep_factors=args.keep_factors, catalogue_only=args.catalogue_only,
                          knn_catalogue_only=args.knn_catalogue_only), indent=1))
