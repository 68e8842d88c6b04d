"""Helpers shared by the training tests."""

from __future__ import annotations

import datetime as dt

from skyrec.config import Config
from skyrec.jobs.base import RunInfo, execute

END = dt.datetime(2026, 3, 1, tzinfo=dt.UTC)
FAST = {"models": {"als": {"params": {"factors": 16, "iterations": 6}},
                   "hybrid": {"params": {"no_components": 16, "epochs": 8}}},
        "training": {"holdout_days": 3}}


def run_job(config: Config, job: str, *, hour: int = 1, params: dict | None = None, overrides: tuple = (),
            force: bool = False) -> tuple[int, dict]:
    run = RunInfo(dag_id="train_model", run_id=f"run{hour}", task_id=job,
                  logical_date=END + dt.timedelta(hours=hour))
    return execute(job, config=config, run=run, params={"model": "als", **(params or {})}, overrides=overrides,
                   force=force)


def train_all(config: Config, *, hour: int = 1, model: str = "als", upto: str = "publish_model") -> dict:
    out = {}
    for job in ("create_dataset", "train", "evaluate", "publish_model"):
        code, payload = run_job(config, job, hour=hour, params={"model": model})
        out[job] = (code, payload)
        if job == upto:
            break
    return out
