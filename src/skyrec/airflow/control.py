"""The job policy shared by the operator, the trigger and the sweeper (no Airflow imports).

* ``decide``: reattach to the live job of this task instance, skip when the outputs are committed,
  never reattach to a job of another run or of another deploy (cancel it, confirmed), never adopt a
  finished/failed job of an earlier attempt; otherwise submit -- all under the backend's per-key lock.
* ``preflight_disk``: refuse to start when the job cannot fit (estimated from input manifest sizes).
* ``verify_outputs``: the post-condition -- the job's result names outputs; each has a committed
  manifest that ``lake.verify`` accepts, each declared dataset is among them, and output-specific checks
  (a model's factor shapes match its id lists) pass. A task never reports success on a missing artefact.
* ``estimate_cost``: config rates x runtime x resources.
"""

from __future__ import annotations

import contextlib
import logging
import zipfile
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from typing import Any

from skyrec.airflow.backends import (
    RUNNING,
    SUCCEEDED,
    JobBackend,
    JobError,
    JobHandle,
    JobSpec,
    SettingsDrift,
    check_drift,
    deploy_order,
)
from skyrec.config import Config, ConfigError
from skyrec.gates import disk_preflight
from skyrec.storage import Lake, Manifest

log = logging.getLogger(__name__)


@dataclass
class Decision:
    action: str  # "reattach" | "done" | "skip" | "submit"
    handle: JobHandle | None = None
    notes: list[str] = field(default_factory=list)


@contextlib.contextmanager
def key_lock(backend: JobBackend, job_key: str) -> Iterator[None]:
    lock = getattr(backend, "lock", None)
    if lock is None:
        yield
    else:
        with lock(job_key):
            yield


def decide(backend: JobBackend, spec: JobSpec, *, stored: JobHandle | None = None,
           outputs_committed: bool = False, cancel_timeout: float | None = None) -> Decision:
    """What to do for this attempt, looking jobs up by key (``stored`` is only a hint: the key decides)."""
    notes: list[str] = []
    candidates = backend.find(spec.job_key)
    ids = {_ident(h) for h in candidates}
    if stored and stored.get("backend") == backend.kind and _ident(stored) not in ids:
        candidates.append(stored)
    live: list[JobHandle] = []
    succeeded: JobHandle | None = None
    for h in candidates:
        status = backend.status(h)
        same_run = h.get("run_id") == spec.run.run_id
        same_deploy = h.get("deploy") == spec.deploy
        if status == RUNNING:
            if not same_run:
                why = f"job {_ident(h)} belongs to run {h.get('run_id')!r}, not {spec.run.run_id!r}"
            elif not same_deploy:
                why = f"job {_ident(h)} was submitted by deploy {h.get('deploy')!r}, this is {spec.deploy!r}"
                if deploy_order(spec.deploy, h.get("deploy")) != 1:
                    # Only a newer deploy replaces another deploy's job: an attempt of an older (or not
                    # comparable) deploy -- a worker not yet upgraded -- must not cancel the newer one's job.
                    raise JobError(f"{why}, which is not older than this deploy: not cancelling it and not "
                                   "starting a second job (this attempt stands down; the sweeper or its "
                                   "deadline ends that job if nobody owns it)")
            else:
                live.append(h)
                continue
            confirmed = backend.cancel(h, cancel_timeout)
            notes.append(f"not reattaching: {why}; cancelled (confirmed={confirmed})")
            if not confirmed:
                raise JobError(f"{why}; it could not be cancelled -- refusing to start a second job")
        elif status == SUCCEEDED and same_run and same_deploy:
            succeeded = h
    if live:
        keep = live[0]  # the earliest (backends list oldest first): the rule every submitter applies too
        for extra in live[1:]:  # cannot happen under a lock; without one (Beam clusters) keep exactly one
            backend.cancel(extra, cancel_timeout)
            notes.append(f"cancelled duplicate live job {_ident(extra)}")
        notes.append(f"reattaching to live job {_ident(keep)} (started by try {keep.get('try_number')})")
        return Decision("reattach", keep, notes)
    if succeeded is not None:
        notes.append(f"job {_ident(succeeded)} of this run already succeeded: checking its outputs")
        return Decision("done", succeeded, notes)
    if outputs_committed and not spec.force:
        notes.append("outputs already committed: skipping the job")
        return Decision("skip", None, notes)
    return Decision("submit", None, notes)


def _ident(h: JobHandle) -> str:
    return str(h.get("launch_id") or h.get("pod_name") or h.get("job_id") or h.get("job_key"))


def check_settings(backend: JobBackend, spec: JobSpec, handle: JobHandle) -> None:
    """Read the submitted job's settings back; on drift cancel it (confirmed) and raise SettingsDrift."""
    effective = backend.effective_settings(handle)
    if not effective:
        return
    drift = check_drift(backend.pinned_settings(spec, handle), effective)
    if drift:
        confirmed = backend.cancel(handle)
        raise SettingsDrift(f"job {spec.job} ({spec.job_key}) does not run with the pinned settings: "
                            + "; ".join(drift) + f" -- cancelled (confirmed={confirmed}), nothing committed")


# ---- outputs -------------------------------------------------------------------------------------


def _fields(config: Config, spec: JobSpec) -> dict[str, str]:
    f = {"run_key": spec.run.run_key, "interval_key": spec.run.interval_key}
    variant = spec.params.get("variant")
    if variant:
        v = config.variant(variant)
        f.update(variant=variant, model=v.model, version=v.version)
    if spec.params.get("model"):
        f["model"] = spec.params["model"]
    if spec.params.get("version"):
        f["version"] = spec.params["version"]
    if spec.params.get("dataset_id"):
        f["dataset_id"] = spec.params["dataset_id"]
    elif f.get("model") in config.models:  # the training dataset a model's train/evaluate reads
        f["dataset_id"] = config.training.dataset_id(f["model"])
    return f


def expected_outputs(config: Config, spec: JobSpec, datasets: Sequence[str]) -> list[str] | None:
    """Lake paths of the declared outputs for this run, or None when one cannot be resolved up front."""
    fields = _fields(config, spec)
    out = []
    for name in datasets:
        try:
            out.append(config.dataset_path(name, **fields))
        except ConfigError:
            return None
    return out


def outputs_committed(config: Config, lake: Lake, spec: JobSpec, datasets: Sequence[str]) -> bool:
    paths = expected_outputs(config, spec, datasets)
    return bool(paths) and all(lake.committed(p) for p in paths or [])


def preflight_disk(config: Config, lake: Lake, backend: JobBackend, inputs: Sequence[str],
                   overrides: Sequence[str] = (), headroom: float = 1.5) -> dict[str, Any]:
    """Estimate the space a job needs from its inputs' committed sizes; raise when it cannot fit."""
    free = backend.free_bytes()
    required = 0
    for name in inputs:
        m = lake.latest(config, name)
        if m is not None:
            required += sum(f.size for f in m.files)
    if free is None:
        return {"gate": "disk", "passed": True, "message": "backend cannot report free space"}
    result = disk_preflight(required, free, headroom=headroom)
    if not result.passed and "disk" not in overrides:
        raise JobError(f"disk preflight: {result.message} -- not starting the job (inputs {list(inputs)}); "
                       "override for one run with conf {\"overrides\": [\"disk\"]}")
    return result.as_dict()


def verify_outputs(config: Config, lake: Lake, spec: JobSpec, result: dict[str, Any] | None,
                   declared: Sequence[str] = ()) -> list[Manifest]:
    """The post-condition. Raises JobError naming the first missing or damaged output."""
    if result is None:
        raise JobError(f"job {spec.job} ({spec.job_key}) ended without a result file")
    if result.get("status") != "success":
        raise JobError(f"job {spec.job} failed: {result.get('error', 'no error recorded')}")
    summary = result.get("summary") or {}
    outputs = [str(p).rstrip("/") for p in summary.get("outputs") or []]
    manifests = []
    for rel in outputs:
        rel = _lake_relative(lake, rel)
        m = lake.manifest(rel)
        if m is None:
            raise JobError(f"job {spec.job} reported output {rel} but it has no committed manifest: "
                           "refusing to report success on a missing artefact")
        lake.verify(m)
        check = OUTPUT_CHECKS.get(m.dataset)
        if check is not None:
            check(lake, m)
        manifests.append(m)
    fields = _fields(config, spec)
    for name in declared:
        if name not in config.datasets:
            continue
        prefix = config.dataset_prefix(name, **fields)
        if not any(m.path.startswith(prefix.rstrip("/")) or m.dataset == name for m in manifests):
            raise JobError(f"job {spec.job} succeeded but committed no {name!r} output (expected under "
                           f"{prefix!r}; it reported {outputs})")
    return manifests


def _lake_relative(lake: Lake, path: str) -> str:
    root = lake.root.rstrip("/") + "/"
    return path[len(root):] if path.startswith(root) else path


def check_model(lake: Lake, m: Manifest) -> None:
    """A model output loads: factor matrices present, their rows match the id lists, same dimension."""
    import pyarrow.parquet as pq

    from skyrec.models.artefact import npz_shapes

    try:
        shapes = npz_shapes(lake, m, "factors.npz")
        with lake.open(m, "users.parquet") as fh:
            n_users = pq.read_metadata(fh).num_rows
        with lake.open(m, "items.parquet") as fh:
            n_items = pq.read_metadata(fh).num_rows
    except (KeyError, OSError, ValueError, zipfile.BadZipFile) as exc:
        raise JobError(f"model {m.path} does not load: {exc}") from exc
    uf, itf = shapes.get("user_factors"), shapes.get("item_factors")
    sparse = [n for n, got in (("user_factors", uf), ("item_factors", itf)) if got is None and f"{n}_csr_shape" in shapes]
    if sparse:  # a sparse side (EASE's and item-kNN's users, item-kNN's items): its stored shape
        import numpy as np

        try:
            with lake.open(m, "factors.npz") as fh, np.load(fh, allow_pickle=False) as npz:
                stored = {n: tuple(int(v) for v in npz[f"{n}_csr_shape"]) for n in sparse}
        except (KeyError, OSError, ValueError, zipfile.BadZipFile) as exc:
            raise JobError(f"model {m.path} does not load: {exc}") from exc
        uf, itf = stored.get("user_factors", uf), stored.get("item_factors", itf)
    if uf is None or itf is None:
        raise JobError(f"model {m.path}: factors.npz lacks user_factors/item_factors (has {sorted(shapes)})")
    if uf[0] != n_users or itf[0] != n_items or uf[1:] != itf[1:]:
        raise JobError(f"model {m.path}: factor shapes {uf}/{itf} do not match {n_users} users/{n_items} items")


OUTPUT_CHECKS = {"model": check_model}


# ---- cost ---------------------------------------------------------------------------------------


def estimate_cost(config: Config, resources: dict[str, float], runtime_seconds: float) -> float:
    hours = max(0.0, runtime_seconds) / 3600.0
    rates = config.jobs.cost
    return hours * (resources.get("vcpus", 0.0) * rates.vcpu_hour + resources.get("memory_gb", 0.0) * rates.gb_hour)
