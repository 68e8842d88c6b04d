"""Concurrent publishers (separate processes) never leave the pointer at a missing or partial model."""

from __future__ import annotations

import datetime as dt
import multiprocessing as mp
import os
import shutil
import time

import pytest
from _train_helpers import END, run_job, train_all

from skyrec.jobs.base import EXIT_OK
from skyrec.models.artefact import load_artefact, published_model_pointer
from skyrec.storage import Lake

HOURS = (1, 2, 3, 4)


def _publish(config, hour: int, queue) -> None:
    code, payload = run_job(config, "publish_model", hour=hour)
    queue.put((hour, code, payload.get("summary") or payload.get("error")))


def _watch(config, stop, queue) -> None:
    """Read the pointer in a loop: whenever it exists, it must name a committed model that loads."""
    lake = Lake.from_config(config)
    ptr_rel = published_model_pointer("als", "v1")
    seen, problems = set(), []
    while not stop.is_set():
        ptr = lake.read_pointer(ptr_rel)
        if ptr:
            seen.add(ptr["path"])
            try:
                load_artefact(lake, lake.require(ptr["path"]))
            except Exception as exc:  # noqa: BLE001 - report any failure to the test
                problems.append(f"{ptr['path']}: {exc}")
        time.sleep(0.002)
    queue.put((sorted(seen), problems))


@pytest.mark.integration
def test_concurrent_publishers_leave_the_newest_committed_model(seeded) -> None:
    config, lake, _ = seeded
    for hour in HOURS:
        steps = train_all(config, hour=hour, upto="evaluate")
        assert all(code == EXIT_OK for code, _ in steps.values()), steps
    # a fifth run whose model output is only staged, never committed (a crashed attempt)
    partial_rel = config.dataset_path("model", model="als", version="v1", run_key="20260301T050000")
    good = lake.require(config.dataset_path("model", model="als", version="v1", run_key="20260301T010000"))
    shutil.copytree(lake.abspath(f"{good.path}/_attempts"), lake.abspath(f"{partial_rel}/_attempts"))

    ctx = mp.get_context("fork")
    results, watch_q, stop = ctx.Queue(), ctx.Queue(), ctx.Event()
    watcher = ctx.Process(target=_watch, args=(config, stop, watch_q))
    watcher.start()
    procs = [ctx.Process(target=_publish, args=(config, h, results)) for h in (*HOURS, 5) for _ in range(2)]
    for p in procs:
        p.start()
    outcomes = [results.get(timeout=120) for _ in procs]
    for p in procs:
        p.join(timeout=60)
    stop.set()
    seen, problems = watch_q.get(timeout=60)
    watcher.join(timeout=30)

    assert not problems, problems
    by_hour = {}
    for hour, code, detail in outcomes:
        by_hour.setdefault(hour, []).append((code, detail))
    assert all(code != EXIT_OK for code, _ in by_hour[5]), "published an uncommitted model"
    assert all(code == EXIT_OK for h in HOURS for code, _ in by_hour[h])
    ptr = lake.read_pointer(published_model_pointer("als", "v1"))
    newest = f"v1.{(END + dt.timedelta(hours=max(HOURS))).strftime('%Y%m%dT%H%M%S')}"
    assert ptr["model_version"] == newest  # an older run never replaced a newer one
    assert seen, "the watcher never saw a published pointer: its checks judged nothing"
    assert all(path.startswith("models/als/v1/run=") and path != partial_rel for path in seen)
    assert not [n for n in os.listdir(os.path.dirname(lake.abspath(published_model_pointer("als", "v1"))))
                if ".tmp." in n]
