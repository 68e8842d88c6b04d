"""Python callables of the ``airflow_monitoring`` DAG (module-level, so the DAG serialises)."""

from __future__ import annotations

from typing import Any

from skyrec.airflow.notify import send_alert


def check_canary(max_age_seconds: float, **context: Any) -> dict[str, Any]:
    """Alert when the previous canary is older than expected: runs were not happening in between."""
    from skyrec.config import load_config

    config = load_config()
    result = context["ti"].xcom_pull(task_ids="canary") or {}
    age = (result.get("summary") or {}).get("previous_age_seconds")
    stale = age is not None and float(age) > max_age_seconds
    if age is not None and stale:
        send_alert(config, "canary_stale", f"the previous canary is {float(age):.0f}s old (expected at most "
                   f"{max_age_seconds:.0f}s): the scheduler or workers were not running jobs",
                   previous_age_seconds=age, max_age_seconds=max_age_seconds)
    return {"previous_age_seconds": age, "stale": stale}


def run_sweeper(**context: Any) -> list[dict[str, Any]]:
    from skyrec.airflow.sweeper import airflow_ti_state, sweep
    from skyrec.config import load_config
    from skyrec.storage import Lake

    config = load_config()
    swept = sweep(config, airflow_ti_state(context["ti"]))
    for entry in swept:
        print(f"swept {entry}")
    # Staging of attempts that died without committing (killed, cancelled, lost): unreferenced, past the
    # grace period (longer than any deadline) and with no live producer.
    collected = Lake.from_config(config).collect_all(config, grace_seconds=config.storage.gc_grace_hours * 3600.0)
    for path in collected:
        print(f"collected abandoned staging {path}")
    return swept + [{"collected": path} for path in collected]
