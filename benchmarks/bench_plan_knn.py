"""``skyrec plan``'s item-kNN kernel: measured, put on the committed coefficients' level, and checked against
precompute's kernel scoring a fitted item-kNN.

1. this session's level: the dense kernel sweep of ``skyrec plan --calibrate`` (``plan.kernel_sweep``), before
   and after everything else;
2. the item-kNN sweep (``plan.knn_kernel_sweep``: random sparse neighbour rows, 5k-50k candidates, k 50/100,
   10-50 played items x 75-200 entries per row) and its plane, put on the file's level by
   ``plan.relevel_knn_kernel`` (x the file's dense plane / this session's dense sweep);
3. the check, out of sample: the item-kNN default fit on generated data (30,000 users, 20k and 100k items;
   ``bench_models.kernel_cost``: its series term and followed block, real overlapping neighbour lists) scored by
   ``topk_threaded`` with the precompute's settings; its CPU microseconds per user (x the same level factor)
   against the plane at that point: from the exact multiply-adds per user, from the plan's own inputs
   (played items x ``neighbours + series_depth``), and from the product's actual result entries (real
   neighbour lists overlap, so fewer than the random rows the plane assumes: how much of the gap that is).

``python benchmarks/bench_plan_knn.py`` (also ``skyrec bench --only plan_knn``) prints the figures as JSON;
``python benchmarks/bench_plan_knn.py --write`` also stores the releveled ``kernel_knn`` in
``src/skyrec/plan_coefficients.json``.
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
SHIPPED_WIDTH = 70 + 5


def main(scale: str = "small", write: bool = False) -> dict[str, Any]:
    """``scale`` (``skyrec bench`` passes it) does not change the sizes: the sweep and the check are minutes
    at any scale. ``write``: store the releveled ``kernel_knn`` in the committed coefficients."""
    out: dict[str, Any] = {"when": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
                           "uptime_before": subprocess.run(["uptime"], capture_output=True, text=True).stdout.strip()}
    coef, path = p.load_coefficients(p.DEFAULT_PATH)
    dense = p.kernel_sweep()
    knn = p.knn_kernel_sweep()
    real = [kernel_cost(30_000, items, models=("knn",)) for items in (20_000, 100_000)]
    dense += p.kernel_sweep()
    new = p.relevel_knn_kernel(coef, dense, knn, how="benchmarks/bench_plan_knn.py --write, " + out["when"])
    f = new["kernel_knn"]["level_factor"]
    out["kernel_knn"] = new["kernel_knn"]["core_us"]
    out["level_factor"] = f
    checks = []
    for r in real:
        m = r["models"]["knn"]
        measured = m["cpu_us_per_user"] * f
        exact = p.knn_kernel_core_us(new, r["candidates"], 50, m["products_per_user"])
        from_inputs = p.knn_kernel_core_us(new, r["candidates"], 50, m["played_items_per_user"] * SHIPPED_WIDTH)
        dense_plan = p.kernel_core_us(new, r["candidates"], 50)
        actual = p.knn_kernel_core_us(new, r["candidates"], 50, m["products_per_user"], m["outputs_per_user"])
        checks.append({"items": r["items"], "candidates": r["candidates"], "users": r["users"],
                       "played_items_per_user": m["played_items_per_user"],
                       "products_per_user": m["products_per_user"],
                       "measured_core_us": round(measured, 2),
                       "planned_core_us_exact_products": round(exact, 2),
                       "planned_core_us_from_inputs": round(from_inputs, 2),
                       "outputs_per_user": m["outputs_per_user"],
                       "random_outputs_per_user": round(p.knn_outputs(r["candidates"], m["products_per_user"]), 1),
                       "planned_core_us_actual_outputs": round(actual, 2),
                       "ratio_exact": round(exact / measured, 3), "ratio_from_inputs": round(from_inputs / measured, 3),
                       "ratio_actual_outputs": round(actual / measured, 3),
                       "dense_factors_plan_core_us": round(dense_plan, 2)})
    out["checks"] = checks
    out["uptime_after"] = subprocess.run(["uptime"], capture_output=True, text=True).stdout.strip()
    if write:
        path.write_text(json.dumps(new, indent=1) + "\n")
        out["written"] = str(path)
    return out


if __name__ == "__main__":
    print(json.dumps(main(write="--write" in sys.argv[1:]), indent=1))  # never written by `skyrec bench`
