"""Alerts: failures, duration anomalies, cost over budget, stale canaries, cancelled jobs.

Alerts go to a webhook (``alerts.webhook_url``: JSON POST, one alert per request) in every
environment where it is set -- pre-production included, because that is where a runaway job is
cheapest to notice -- and are always appended to ``<state>/alerts.jsonl`` so a local run keeps a trail.
Sending never raises: an unreachable webhook must not turn a successful task into a failed one; the
delivery result is logged and recorded with the alert.
"""

from __future__ import annotations

import datetime as dt
import json
import logging
import os
import socket
import statistics
import urllib.error
import urllib.request
from pathlib import Path
from typing import Any

from skyrec.config import Config

log = logging.getLogger(__name__)


def send_alert(config: Config, kind: str, summary: str, **details: Any) -> bool:
    """Record and deliver one alert. Returns True when the webhook accepted it (2xx)."""
    payload = {"kind": kind, "summary": summary, "env": config.env, "host": socket.gethostname(),
               "at": dt.datetime.now(dt.UTC).isoformat(timespec="seconds"), "details": details}
    delivered = False
    url = config.alerts.webhook_url
    if config.alerts.enabled and url:
        req = urllib.request.Request(url, data=json.dumps(payload, default=str).encode(), method="POST",
                                     headers={"Content-Type": "application/json", "User-Agent": "skyrec-alerts"})
        try:
            with urllib.request.urlopen(req, timeout=5) as resp:
                delivered = 200 <= resp.status < 300
        except (urllib.error.URLError, OSError, ValueError) as exc:
            log.warning("alert %s not delivered to %s: %s", kind, url, exc)
    log.warning("ALERT [%s] %s", kind, summary)
    try:
        path = Path(config.state_dir) / "alerts.jsonl"
        path.parent.mkdir(parents=True, exist_ok=True)
        with path.open("a") as fh:
            fh.write(json.dumps({**payload, "delivered": delivered}, default=str) + "\n")
    except OSError as exc:
        log.warning("could not record alert: %s", exc)
    return delivered


def deliver_alerts(config: Config, alerts: Any, *, default_kind: str, **context: Any) -> int:
    """Send the alerts a job asked for in its summary (``summary["alerts"]``: ``{"kind", "summary",
    "details"}``; a job cannot reach the notifier itself), each with ``context`` (the job key) beside its
    details. Used by whoever ran the job: the Airflow task (``SkyrecJobOperator``) and ``skyrec job`` run by
    hand. Returns how many the webhook accepted."""
    delivered = 0
    for alert in alerts or []:
        details = {**context, **((alert.get("details") or {}) if isinstance(alert, dict) else {})}
        kind = str((alert.get("kind") if isinstance(alert, dict) else None) or default_kind)
        summary = str((alert.get("summary") if isinstance(alert, dict) else None) or alert)
        delivered += send_alert(config, kind, summary, **details)
    return delivered


def read_alerts(config: Config) -> list[dict[str, Any]]:
    path = Path(config.state_dir) / "alerts.jsonl"
    if not path.exists():
        return []
    return [json.loads(line) for line in path.read_text().splitlines() if line.strip()]


def _durations_path(config: Config, dag_id: str, task_id: str) -> Path:
    return Path(config.state_dir) / "durations" / f"{dag_id}.{task_id}.json"


def check_duration(config: Config, dag_id: str, task_id: str, seconds: float, *, keep: int = 20,
                   min_history: int = 3) -> dict[str, Any] | None:
    """Record a successful job's duration; alert when it exceeds the recent median x the anomaly factor."""
    path = _durations_path(config, dag_id, task_id)
    try:
        history = [float(x) for x in json.loads(path.read_text())]
    except (OSError, ValueError):
        history = []
    anomaly = None
    if len(history) >= min_history:
        median = statistics.median(history)
        factor = config.alerts.duration_anomaly_factor
        if median > 0 and seconds > median * factor:
            anomaly = {"seconds": round(seconds, 3), "median": round(median, 3), "factor": factor,
                       "history": history[-keep:]}
            send_alert(config, "duration_anomaly",
                       f"{dag_id}.{task_id} took {seconds:.1f}s, {seconds / median:.1f}x the recent median "
                       f"{median:.1f}s (threshold x{factor})", dag_id=dag_id, task_id=task_id, **anomaly)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(f".tmp.{os.getpid()}")
    tmp.write_text(json.dumps((history + [round(seconds, 3)])[-keep:]))
    os.replace(tmp, path)
    return anomaly


def failure_callback(context: Any) -> None:
    """Airflow ``on_failure_callback``: alert with the task identity and the error."""
    from skyrec.config import load_config

    try:
        config = load_config()
    except Exception as exc:  # noqa: BLE001 - a callback must not raise
        log.warning("failure alert skipped, config does not load: %s", exc)
        return
    ti = context.get("ti") or context.get("task_instance")
    dag_id = getattr(ti, "dag_id", "?")
    task_id = getattr(ti, "task_id", "?")
    run_id = getattr(ti, "run_id", "?")
    error = context.get("exception")
    send_alert(config, "failure", f"{dag_id}.{task_id} failed (run {run_id}, try {getattr(ti, 'try_number', '?')})",
               dag_id=dag_id, task_id=task_id, run_id=run_id, try_number=getattr(ti, "try_number", None),
               error=str(error) if error else None)
