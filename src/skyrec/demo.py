"""``make demo``: the whole platform on the embedded default, end to end, on one machine.

1. start the local serving ``redis-server`` (config ``publish.redis_url``),
2. generate a small broadcaster-like dataset in raw form,
3. run every DAG through Airflow itself (``dag.test()`` on SQLite) in dependency order: one line per DAG
   run and per task on the terminal, Airflow's own logs in ``<home>/logs/airflow/`` (``verbose``: on the
   terminal instead); a failed task's error and the tail of its job log,
4. start the API, print its JSON answers for a few users of two variants, and the URL to query,
5. stop everything unless ``--keep-serving``.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import json
import os
import shutil
import subprocess
import sys
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any
from urllib.parse import urlparse

from skyrec.airflow.platform import proc_start  # pid + start time: one process, never a reused pid
from skyrec.config import Config, ConfigError, load_config
from skyrec.redis_local import LocalRedis, RedisUnavailable, ping, port_owner

DEMO_SCALE = {"users": 2000, "items": 3000, "days": 21, "events_per_user": 40.0}


def _say(msg: str) -> None:
    print(f"[demo {time.strftime('%H:%M:%S')}] {msg}", flush=True)


def serving_redis(config: Config) -> LocalRedis:
    u = urlparse(config.publish.redis_url)
    return LocalRedis(port=u.port or 6379, dir=Path(config.home) / "redis", host=u.hostname or "127.0.0.1")


def ensure_serving_redis(config: Config) -> tuple[LocalRedis, bool]:
    """Start the local serving Redis if nothing answers on its port. Returns (server, started_by_us)."""
    server = serving_redis(config)
    if ping(server.host, server.port):
        return server, False
    server.start(daemonize=True, persist=True)
    return server, True


def dag_order(config: Config) -> list[tuple[str, str | None]]:
    from skyrec.airflow.factory import dag_ids

    ids = dag_ids(config)
    precompute = sorted(d for d in ids if d.startswith("precompute_recommendations_"))
    return [
        ("ingest_programme_metadata", None),
        ("ingest_availability", None),
        ("backfill_user_activity", "backfill"),  # conf filled in by run_demo
        ("ingest_user_activity", None),
        ("ingest_cold_start", None),
        ("train_model", None),
        *[(d, None) for d in precompute],
        ("airflow_monitoring", None),
    ]


def _get(url: str, timeout: float = 5.0) -> tuple[int, Any]:
    try:
        with urllib.request.urlopen(url, timeout=timeout) as resp:
            return resp.status, json.loads(resp.read())
    except urllib.error.HTTPError as exc:
        body = exc.read()
        try:
            return exc.code, json.loads(body)
        except ValueError:
            return exc.code, body.decode(errors="replace")


def format_answer(body: Any) -> str:
    """The API's JSON, compact: the envelope on one line, then one line per item."""
    if not isinstance(body, dict) or not isinstance(body.get("items"), list):
        return json.dumps(body)
    head = {k: v for k, v in body.items() if k != "items"}
    lines = [json.dumps(head)[:-1] + ', "items": [']
    lines += [f"   {json.dumps(item)}," for item in body["items"]]
    if body["items"]:
        lines[-1] = lines[-1].rstrip(",")
    lines.append("]}")
    return "\n".join(lines)


def start_api(config: Config, port: int) -> subprocess.Popen:
    """`skyrec serve` in the background (it writes the home's ``api.pid`` itself: :func:`api_pidfile`)."""
    log = open(Path(config.home) / "api.log", "ab")
    return subprocess.Popen([sys.executable, "-m", "skyrec", "serve", "--port", str(port)],
                            stdout=log, stderr=subprocess.STDOUT, start_new_session=True, env=os.environ.copy())


@contextlib.contextmanager
def api_pidfile(config: Config, port: int) -> Iterator[None]:
    """While `skyrec serve` runs, the home's ``api.pid`` names it (pid, start, port), so that `skyrec stop` stops
    the API that `make serve` or `make demo KEEP_SERVING=1` left running, and never a process that was given
    the same pid later. Removed on a normal exit when it still names this process; after SIGTERM uvicorn ends
    the process by the signal itself and the file stays, which is why `stop` checks the start time."""
    path = Path(config.home) / "api.pid"
    path.parent.mkdir(parents=True, exist_ok=True)
    me = {"pid": os.getpid(), "start": proc_start(os.getpid()), "port": port}
    path.write_text(json.dumps(me))
    try:
        yield
    finally:
        try:
            if json.loads(path.read_text()) == me:
                path.unlink()
        except (OSError, ValueError):
            pass


def stop_api(config: Config, timeout: float = 15.0) -> str:
    """Stop the API the home's ``api.pid`` names (SIGTERM: a graceful shutdown), when that process is still the
    one that wrote it."""
    import signal

    path = Path(config.home) / "api.pid"
    if not path.exists():
        return "the API was not running"
    try:
        info = json.loads(path.read_text())
        pid, start, port = int(info["pid"]), info.get("start"), info.get("port")
    except (OSError, ValueError, TypeError, KeyError):
        path.unlink(missing_ok=True)
        return f"the API was not running (unreadable pidfile {path} removed)"
    if start is None or proc_start(pid) != start:
        path.unlink(missing_ok=True)
        return f"the API was not running (pid {pid} has exited; its pidfile removed)"
    try:
        os.kill(pid, signal.SIGTERM)
    except ProcessLookupError:
        path.unlink(missing_ok=True)
        return "the API was not running"
    deadline = time.monotonic() + timeout
    while proc_start(pid) == start and time.monotonic() < deadline:
        time.sleep(0.1)
    if proc_start(pid) == start:
        return f"the API (pid {pid}, port {port}) did not stop within {timeout:g} s; it was sent SIGTERM"
    path.unlink(missing_ok=True)
    return f"stopped the API (pid {pid}, port {port})"


def wait_ready(base: str, proc: subprocess.Popen, timeout: float = 60.0) -> dict:
    deadline = time.monotonic() + timeout
    last: Any = None
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"the API exited with code {proc.returncode} (see api.log)")
        try:
            code, body = _get(f"{base}/readyz", timeout=1.0)
            last = body
            if code == 200:
                return body
        except (urllib.error.URLError, ConnectionError, TimeoutError):
            pass
        time.sleep(0.2)
    raise RuntimeError(f"the API did not become ready in {timeout:.0f}s: {last}")


def sample_users(config: Config, n: int = 3) -> list[str]:
    """A few users that have history (so personalised answers) from the published model artefact."""
    from skyrec.models.artefact import published_model_pointer, read_ids
    from skyrec.storage import Lake

    lake = Lake.from_config(config)
    variant = next(iter(config.variants.values()))
    ptr = lake.read_pointer(published_model_pointer(variant.model, variant.version))
    if not ptr:
        return []
    ids = read_ids(lake, lake.require(ptr["path"]), "users.parquet", "user_id")
    step = max(1, len(ids) // n)
    return [str(u) for u in ids[::step][:n]]


def run_demo(*, keep_serving: bool = False, serve_only: bool = False, fresh: bool = True,
             verbose: bool = False) -> int:
    t0 = time.monotonic()
    config = load_config(os.environ.get("SKYREC_ENV") or "local")
    home = Path(config.home)
    timings: dict[str, float] = {}

    if not serve_only and fresh:
        # the demo empties its home and runs the shipped rails on generated data: never a user's configuration
        # (a shell that exported SKYREC_CONFIG_DIR for its own data would lose that data's lake)
        chosen = os.environ.get("SKYREC_CONFIG_DIR")
        if chosen and Path(chosen).resolve() != (Path(config.project_root) / "config").resolve():
            _say(f"not running: the demo empties its home and runs the shipped configuration (config/) on sample "
                 f"data, but SKYREC_CONFIG_DIR={chosen} is set: its home {home} would be emptied. "
                 "Run it without (`unset SKYREC_CONFIG_DIR`).")
            return 2
        for sub in ("source", "lake", "state", "airflow", "redis", "logs"):
            shutil.rmtree(home / sub, ignore_errors=True)
    home.mkdir(parents=True, exist_ok=True)

    try:
        redis_server, started_redis = ensure_serving_redis(config)
    except RedisUnavailable as exc:
        _say(f"cannot start Redis: {exc}")
        return 2
    _say(f"serving Redis at {redis_server.url} ({'started' if started_redis else 'already running'})")

    api: subprocess.Popen | None = None
    ok = False
    try:
        if not serve_only:
            end = dt.datetime.now(dt.UTC).replace(minute=0, second=0, microsecond=0) - dt.timedelta(hours=1)
            t = time.monotonic()
            from skyrec.data.generate import generate

            summary = generate(config, end=end.isoformat(), **DEMO_SCALE)  # type: ignore[arg-type]
            timings["generate"] = time.monotonic() - t
            _say(f"generated sample data in {timings['generate']:.1f}s: "
                 + ", ".join(f"{k}={v}" for k, v in summary.items() if isinstance(v, int)))

            from skyrec.airflow.runner import NothingRan, RunInterrupted, TerminalReport, run, run_log_path

            # Activity covers [start, end). The backfill rebuilds every hour but the last; the hourly
            # ingest_user_activity run then takes the last hour, as it would in production.
            start = end - dt.timedelta(days=DEMO_SCALE["days"])
            logical = end - dt.timedelta(hours=1)
            order = dag_order(config)
            if not verbose:
                _say(f"running {len(order)} DAGs through Airflow; Airflow's and the tasks' logs go to "
                     f"{run_log_path(config, '<dag_id>', logical)}")
            report = TerminalReport(show_log_file=False)
            for dag_id, special in order:
                conf = None
                if special == "backfill":
                    conf = {"start": start.isoformat(), "end": logical.isoformat()}
                try:
                    result = run(dag_id, logical_date=logical.isoformat(), conf=conf, observer=report,
                                 quiet=not verbose)
                except (ConfigError, NothingRan) as exc:
                    _say(f"stopping: {dag_id}: {exc}")
                    return 1
                except RunInterrupted as exc:  # SIGTERM/Ctrl-C: the job cancelled, no further DAG
                    _say(f"stopping: {dag_id}: {exc}")
                    return exc.exit_code
                timings[dag_id] = result.seconds
                if dag_id == "train_model":  # the evaluation behind what is about to be published
                    from skyrec.jobs.base import RunInfo
                    from skyrec.status import train_run_lines

                    for line in train_run_lines(config, RunInfo(logical_date=logical).run_key):
                        print(f"  {line}", flush=True)
                if result.state != "success":
                    _say(f"stopping: {dag_id} ended {result.state}")
                    return 1

        port = config.serve.port
        base = f"http://{config.serve.host}:{port}"
        api = start_api(config, port)
        t = time.monotonic()
        ready = wait_ready(base, api)
        timings["api_ready"] = time.monotonic() - t
        _say(f"API ready at {base} ({ready.get('status', 'ready')})")

        users = sample_users(config, 3)
        preferred: tuple[str, ...] = ("recommended_for_you", "comedy_featured")
        variants = [v for v in preferred if v in config.variants][:2]
        variants = variants or list(config.variants)[:2]
        for variant in variants:
            for user in [*users, "new-listener-0001"]:
                url = f"{base}/v1/recommendations/{variant}/{user}?limit=5"
                code, body = _get(url)
                print(f"\nGET {url}  -> {code}")
                print(format_answer(body))
        code, body = _get(f"{base}/v1/recommendations/no_such_rail/{users[0] if users else 'u1'}")
        print(f"\nGET {base}/v1/recommendations/no_such_rail/...  -> {code}\n{json.dumps(body)}")
        ok = True
        total = time.monotonic() - t0
        print()
        _say(f"done in {total:.1f}s wall time. Query it: {base}/v1/recommendations/<variant>/<user_id>?limit=10 "
             f"- explorer: {base}/ - OpenAPI: {base}/docs")
        if keep_serving:
            _say(f"left running: API pid {api.pid}, Redis {redis_server.url}. Stop with: make stop")
        return 0
    finally:
        if not keep_serving or not ok:
            if api is not None and api.poll() is None:
                api.terminate()
                try:
                    api.wait(timeout=10)
                except subprocess.TimeoutExpired:
                    api.kill()
            if started_redis:
                redis_server.stop()


def stop_all(config: Config) -> list[str]:
    """Stop the API `skyrec serve` left running (by its pidfile) and the local serving Redis."""
    out = [stop_api(config)]
    server = serving_redis(config)
    if not ping(server.host, server.port):
        out.append("Redis was not running")
    elif server.stop():
        out.append(f"stopped Redis on port {server.port}")
    else:
        out.append(f"Redis on port {server.port} left running: {port_owner(server.port)}, "
                   + _started_from(config, server))
    return out


def _started_from(config: Config, server: LocalRedis) -> str:
    """Why ``stop`` did not stop the Redis on this home's port: which other home of this checkout started it
    (its pidfile names the port), or that none did."""
    mine = Path(config.home)
    root = Path(config.project_root)
    found = [*root.glob(f".skyrec/redis/{server.pidfile.name}"), *root.glob(f".skyrec/*/redis/{server.pidfile.name}")]
    others = sorted(p.parent.parent for p in found if p.parent.parent != mine)
    if server.pidfile.exists():
        return f"it did not stop within the timeout (pidfile {server.pidfile})"
    if others:
        return (f"started from another home ({others[0]}, not this one, {mine}); stop it from there: "
                f"SKYREC_HOME={others[0]} skyrec stop")
    return f"not started from this home ({mine}): stop it where it was started"
