"""``skyrec plan --from-lake``: the capacity plan's inputs read from a deployment's own lake, rail by rail.

For every configured rail (variant): its published model artefact gives the users, the model's items, how
precompute's kernel scores it (dense factors and their width; item-kNN's sparse rows and their mean entries
per item; EASE's dense item-item weights), the mean played items per user (the seen matrix, and the user rows
of the sparse models); the latest committed catalogue and availability, with the rail's candidate filter and
the age rule, give its candidates -- the same selection precompute makes (``select_candidates``), at the
planning time. Only headers and index arrays of the artefact are read, not its factors. A rail that has run
on that model gives its compute time beside the plan and the share of its users with older plays in the lists
of their recent ones (``also_share``: the rail's ``also`` keys, which the plan otherwise counts for about every
user, as measured).

A rail that cannot be planned (no published model yet, no candidates) is left out with the reason, so the
plan says what it covers. ``users`` scales every rail to another audience, keeping each rail's shape.
"""

from __future__ import annotations

import datetime as dt
import os
import zipfile
from dataclasses import dataclass, field, replace
from typing import Any

from skyrec.plan import PlanInputs, inputs_from_config


@dataclass
class RailShape:
    """What the lake says about one rail: its plan inputs, the facts they came from, or why it is left out."""

    name: str
    inputs: PlanInputs | None = None
    facts: dict[str, Any] = field(default_factory=dict)
    skipped: str | None = None


def _model_shape(lake: Any, manifest: Any) -> dict[str, Any]:
    """Users, items, kernel kind and width, played items per user of a committed model artefact (headers and
    index arrays only)."""
    from skyrec.models.artefact import npz_arrays, npz_shapes

    shapes = npz_shapes(lake, manifest, "factors.npz")
    seen = npz_arrays(lake, manifest, "seen.npz", ("indptr", "shape"))
    n_users, n_items = (int(v) for v in seen["shape"])
    facts: dict[str, Any] = {"users": n_users, "model_items": n_items,
                             "played_items_per_user": float(seen["indptr"][-1]) / max(1, n_users)}
    facts["items_per_user"] = facts["played_items_per_user"]
    user_sparse, item_sparse = "user_factors" not in shapes, "item_factors" not in shapes
    if item_sparse:  # item-kNN: each item's row of neighbours (and series entries)
        item = npz_arrays(lake, manifest, "factors.npz", ("item_factors_csr_indptr",))["item_factors_csr_indptr"]
        facts.update(kernel="neighbours", neighbours=max(1, round(float(item[-1]) / max(1, n_items))))
    elif user_sparse:  # EASE: a user's played rows of the dense item-item weights
        facts.update(kernel="item_weights")
    else:
        facts.update(kernel="factors", factors=int(shapes["item_factors"][1]))
    if user_sparse:  # item-kNN's and EASE's kernels read a user's row: its entries
        user = npz_arrays(lake, manifest, "factors.npz", ("user_factors_csr_indptr",))["user_factors_csr_indptr"]
        facts["items_per_user"] = float(user[-1]) / max(1, n_users)
    return facts


def _last_run(lake: Any, config: Any, name: str, v: Any, model_path: str) -> dict[str, Any]:
    """The rail's latest committed predictions on this same model: its compute step's seconds and users,
    beside the plan (nothing when the rail has not run on it)."""
    m = lake.latest(config, "predictions", variant=name, version=v.version)
    if m is None or m.meta.get("model_path") != model_path or m.meta.get("seconds") is None:
        return {}
    users = int(m.meta.get("users", 0))
    also = m.meta.get("also_played") or {}
    # the share of its users with older plays in the lists of their recent ones (an also key each), when the
    # run published histories with "more like this" lists: the plan's also term at this lake's share
    share = (round(int(also.get("users", 0)) / users, 4)
             if users and int(m.meta.get("hist_keys") or 0) and also.get("lists_entries") is not None else None)
    return {"last_run": {"compute_predictions_s": float(m.meta["seconds"]), "users": users,
                         "candidates": int((m.meta.get("candidates") or {}).get("candidates", 0)),
                         "at": m.meta.get("at"), "path": m.path, "also_share": share}}


def rails_from_lake(config: Any, *, users: int | None = None, at: dt.datetime | None = None,
                    cores: int | None = None) -> list[RailShape]:
    """Each configured rail's plan inputs from the lake of ``config`` (see the module doc)."""
    from skyrec.models.artefact import published_model_pointer, read_ids
    from skyrec.scoring.candidates import select_candidates
    from skyrec.scoring.engine import read_catalogue, read_table
    from skyrec.storage import Lake

    lake = Lake.from_config(config)
    at = at or dt.datetime.now(dt.UTC)
    catalogue_m = lake.latest(config, "catalogue")
    availability_m = lake.latest(config, "availability")
    catalogue = read_catalogue(lake, catalogue_m.path) if catalogue_m else None
    availability = read_table(lake, availability_m.path) if availability_m else None
    activity_m = lake.latest(config, "activity_snapshot")  # its rows: the plays the lake holds per user
    shapes: dict[tuple[str, str], tuple[dict[str, Any], Any]] = {}
    out = []
    for name in sorted(config.variants):
        v = config.variant(name)
        ptr = lake.read_pointer(published_model_pointer(v.model, v.version))
        if not ptr:
            out.append(RailShape(name, skipped=f"no published model ({v.model}, {v.version}): run train_model"))
            continue
        if catalogue is None:
            out.append(RailShape(name, skipped="no committed catalogue: run ingest_programme_metadata"))
            continue
        if (v.model, v.version) not in shapes:
            try:
                manifest = lake.require(ptr["path"])
                shapes[(v.model, v.version)] = (_model_shape(lake, manifest),
                                               read_ids(lake, manifest, "items.parquet", "item_id"))
            except (OSError, KeyError, ValueError, zipfile.BadZipFile) as exc:
                out.append(RailShape(name, skipped=f"the published model {ptr['path']} does not read: "
                                                   f"{type(exc).__name__}: {exc}"))
                continue
        model, item_ids = shapes[(v.model, v.version)]
        _, _, counts = select_candidates(model_item_ids=item_ids, catalogue=catalogue, candidate_filter=v.candidates,
                                         at=at, availability=availability,
                                         max_age_days=dict(config.precompute.rules.max_age_days))
        n = counts["candidates"]
        plays = model["played_items_per_user"]
        if activity_m is not None and activity_m.rows:
            plays = activity_m.rows / max(1, model["users"])
        facts = {**model, "plays_per_user": plays, "activity_snapshot": activity_m.path if activity_m else None,
                 "model": v.model, "version": v.version, "model_path": ptr["path"], "candidates": n,
                 "candidate_counts": counts, "at": at.isoformat(), **_last_run(lake, config, name, v, ptr["path"])}
        if n < 2:
            out.append(RailShape(name, facts=facts, skipped=f"{n} candidate(s) at {at:%Y-%m-%d %H:%M}Z: precompute "
                                 "would fail the rail (check its candidate filter and the catalogue)"))
            continue
        k = v.k or config.precompute.k
        if k >= n:
            facts["k_configured"] = k
            k = n - 1  # a list holds at most the candidates
        also_share = (facts.get("last_run") or {}).get("also_share")
        inputs = inputs_from_config(
            config, model=v.model, rails=1, users=users or model["users"], candidates=n, items=model["model_items"],
            k=k, plays_per_user=plays, items_per_user=model["items_per_user"],
            similar_k=v.similar_k if v.similar_k is not None else config.precompute.similar_k,
            # the job publishes histories only from a committed activity snapshot, as planned here
            history_items=config.publish.history_items if activity_m is not None else 0,
            cores=cores or os.cpu_count() or 1)
        inputs = replace(inputs, also_share=also_share)
        shape = {key: model[key] for key in ("kernel", "neighbours", "factors") if key in model}
        out.append(RailShape(name, inputs=replace(inputs, **shape), facts=facts))
    return out
