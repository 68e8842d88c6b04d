"""``python -m skyrec.chaos.worker PLAN.json``: a worker process, as an Airflow worker runs task attempts.

It builds the real DAGs from configuration (``skyrec.airflow.factory.build_dags``) and, for each task
attempt of the plan in order, calls the task's own ``SkyrecJobOperator.execute`` with the attempt's
context (dag, run, task, try number, logical date and data interval): the operator looks the job up by
its key, launches it through the configured backend (local: ``python -m skyrec.jobs.base NAME ...`` in
its own process group), waits, and proves the outputs. There is no Airflow metadata database and no
``task_state_store``: the job key alone must make a retry reattach (which is the product's claim).

Plan: ``{"events": PATH, "go": PATH|null, "attempts": [{"dag_id", "task_id", "run_id", "try_number",
"logical_date", "interval_start", "interval_end"}, ...]}``. With ``go`` the worker imports everything,
then waits for that file to exist before its first attempt (two attempts started at the same moment).
Each attempt appends ``start`` and then ``success`` or ``failed`` (with ``retryable``) to the events
file (JSON lines). Exit 0 when every attempt succeeded, 1 at the first retryable failure, 2 at a
non-retryable one (gate, bad input).
"""

from __future__ import annotations

import datetime as dt
import json
import logging
import os
import sys
import time
from pathlib import Path
from typing import Any


class _TI:
    """The attributes of a task instance the operator reads."""

    def __init__(self, dag_id: str, run_id: str, task_id: str, try_number: int) -> None:
        self.dag_id, self.run_id, self.task_id, self.try_number = dag_id, run_id, task_id, try_number
        self.stats_tags: dict[str, str] = {}


# Gates judge data, not faults: the tiny generated data is below their evidence thresholds, so every run
# carries the documented one-run override (dag_run.conf "overrides"), as an operator would give it.
GATE_OVERRIDES = ["quality", "volume", "predictions_volume"]


class _DagRun:
    def __init__(self, run_id: str, run_after: dt.datetime) -> None:
        self.run_id, self.run_after = run_id, run_after
        self.conf: dict[str, Any] = {"overrides": list(GATE_OVERRIDES)}


def _ts(value: str | None) -> dt.datetime | None:
    return dt.datetime.fromisoformat(value) if value else None


def _emit(path: Path, **event: Any) -> None:
    with open(path, "a") as fh:
        fh.write(json.dumps({"at": time.time(), "pid": os.getpid(), **event}, default=str) + "\n")
        fh.flush()
        os.fsync(fh.fileno())


def run_plan(plan: dict[str, Any]) -> int:
    from airflow.sdk.exceptions import AirflowFailException

    from skyrec.airflow.factory import build_dags
    from skyrec.config import load_config

    events = Path(plan["events"])
    dags = build_dags(load_config())
    go = plan.get("go")
    if go:
        _emit(events, event="ready")
        while not Path(go).exists():
            time.sleep(0.01)
    for a in plan["attempts"]:
        op = dags[a["dag_id"]].get_task(a["task_id"])
        logical = _ts(a["logical_date"])
        assert logical is not None
        context: dict[str, Any] = {
            "ti": _TI(a["dag_id"], a["run_id"], a["task_id"], int(a["try_number"])),
            "dag_run": _DagRun(a["run_id"], logical), "logical_date": logical,
            "data_interval_start": _ts(a.get("interval_start")), "data_interval_end": _ts(a.get("interval_end")),
        }
        _emit(events, event="start", **a)
        try:
            result = op.execute(context)
        except AirflowFailException as exc:
            _emit(events, event="failed", retryable=False, error=f"{type(exc).__name__}: {exc}", **a)
            return 2
        except Exception as exc:  # noqa: BLE001 - the attempt failed; the harness retries it like Airflow
            _emit(events, event="failed", retryable=True, error=f"{type(exc).__name__}: {exc}", **a)
            return 1
        _emit(events, event="success", result=result, **a)
    return 0


def main(argv: list[str] | None = None) -> int:
    args = sys.argv[1:] if argv is None else argv
    if len(args) != 1:
        print("usage: python -m skyrec.chaos.worker PLAN.json", file=sys.stderr)
        return 4
    plan = json.loads(Path(args[0]).read_text())
    logging.basicConfig(level=logging.WARNING, stream=sys.stderr)
    return run_plan(plan)


if __name__ == "__main__":
    sys.exit(main())
