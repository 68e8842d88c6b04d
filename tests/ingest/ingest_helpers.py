"""Helpers for the ingestion tests: isolated configs and a job runner."""

from __future__ import annotations

import datetime as dt
import os
from pathlib import Path
from typing import Any

from skyrec.config import Config, load_config

ROOT = Path(__file__).resolve().parents[2]
END = dt.datetime(2026, 3, 1, tzinfo=dt.UTC)


def make_config(home: Path, overrides: dict[str, Any] | None = None) -> Config:
    """A local config whose lake, state and source all live under ``home`` (whatever SKYREC_HOME says)."""
    base: dict[str, Any] = {"storage": {"lake": f"{home}/lake", "state": f"{home}/state"},
                            "source": {"url": f"{home}/source"}}
    for key, value in (overrides or {}).items():
        base[key] = {**base.get(key, {}), **value} if isinstance(value, dict) else value
    return load_config("local", root=ROOT, overrides=base, environ={**os.environ, "SKYREC_HOME": str(home)})


def run_job(cfg: Config, name: str, logical: dt.datetime = END, *, params: dict[str, str] | None = None,
            overrides: tuple[str, ...] = (), force: bool = False, run_id: str | None = None,
            try_number: int = 1, hourly: bool = True) -> tuple[int, dict[str, Any]]:
    from skyrec.jobs.base import RunInfo, execute

    run = RunInfo(dag_id="test", run_id=run_id or f"run-{logical:%Y%m%dT%H%M}", task_id=name, try_number=try_number,
                  logical_date=logical, interval_start=logical - dt.timedelta(hours=1) if hourly else None,
                  interval_end=logical if hourly else None)
    return execute(name, config=cfg, run=run, params=params, overrides=overrides, force=force)


def ok(result: tuple[int, dict[str, Any]]) -> dict[str, Any]:
    code, payload = result
    assert code == 0, payload.get("error") or payload
    return payload["summary"]
